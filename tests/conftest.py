"""Shared fixtures: compose the real configs/ with Hydra's compose API, as the CLI does."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs

register_configs()


def compose_config(*overrides: str) -> DictConfig:
    """The config `sslkit-train <overrides>` would run, with the progress bar off."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, "trainer.progress=false", "trainer.report=false"])


@pytest.fixture
def config():
    return compose_config
