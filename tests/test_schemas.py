"""The seams of the schemas that sslkit.config reads from the code: an option file extends
the schema named after itself (a copied file that names another option's is refused), and
the arguments the run passes itself are left out per group, so a parameter of the same name
in another group's target stays a config key."""

import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from torch import nn

from sslkit.config import BUILT_WITH, CONFIG_DIR, derive, derived_options, register_configs
from sslkit.errors import ConfigError


class ViewNet(nn.Module):
    """A backbone network whose parameters share their names with arguments the run passes
    to other groups' targets (`dims`, `view`: the online probe's, the spectrum monitor's)."""

    def __init__(self, in_shape: tuple[int, ...], dims: int = 3, view: str = "flat") -> None:
        super().__init__()
        self.dims, self.view, self.out_dim = dims, view, dims
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(in_shape).prod()), dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def configs(tmp_path):
    """A copy of configs/ to add option files to; the schemas of configs/ registered again after."""
    copy = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, copy)
    yield copy
    register_configs()


def test_a_file_that_names_another_options_schema_is_refused_in_one_line(configs):
    """configs/loss/foo.yaml copied from barlow_twins.yaml, its target changed and its
    defaults line not: registered as it was, it would replace barlow_twins' schema with
    NTXentLoss's (loss=barlow_twins would lose `lambd`). Refused, naming both files."""
    text = (configs / "loss" / "barlow_twins.yaml").read_text()
    (configs / "loss" / "foo.yaml").write_text(text.replace("sslkit.losses.BarlowTwinsLoss", "sslkit.losses.NTXentLoss"))
    with pytest.raises(ConfigError) as refused:
        register_configs(configs)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("configs/loss/foo.yaml extends /schema/loss/barlow_twins, the schema of "
                              "configs/loss/barlow_twins.yaml")
    assert "/schema/loss/foo@_here_" in message
    (configs / "loss" / "foo.yaml").write_text(text.replace("/schema/loss/barlow_twins@", "/schema/loss/views@"))
    with pytest.raises(ConfigError, match=r"^configs/loss/foo.yaml extends /schema/loss/views, no option's schema"):
        derived_options(configs)


def test_sslkit_train_refuses_the_copied_file_before_training(configs, monkeypatch, capsys):
    """The command line: one line on stderr, exit status 2, nothing run."""
    import sslkit.cli

    text = (configs / "loss" / "simclr.yaml").read_text()
    (configs / "loss" / "foo.yaml").write_text(text)
    monkeypatch.setattr(sslkit.cli, "register_configs", lambda: register_configs(configs))
    monkeypatch.setattr("sys.argv", ["sslkit-train", "loss=foo"])
    with pytest.raises(SystemExit) as stopped:
        sslkit.cli.train_main()
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1
    assert err.startswith("sslkit-train: error: configs/loss/foo.yaml extends /schema/loss/simclr, the schema of "
                          "configs/loss/simclr.yaml")


def test_every_option_file_extends_its_own_schema():
    """The rule holds for the shipped files: each schema name is its file's name, and each
    file's schema has the keys of its own targets (the four view recipes each their own)."""
    for group, options in derived_options().items():
        for name in options:
            assert (Path(CONFIG_DIR) / group / f"{name}.yaml").exists(), (group, name)


def test_a_backbone_parameter_named_like_another_groups_argument_stays_a_key(configs):
    """`dims` and `view` are passed by the run to the online probe and the spectrum monitor,
    not to a backbone: a backbone network with such parameters keeps them in its schema,
    they compose, and they reach the network; `in_shape`, which the run passes to every
    backbone, is not a key."""
    (configs / "backbone" / "viewnet.yaml").write_text(
        "defaults:\n  - /schema/backbone/viewnet@_here_\n  - _self_\n\n"
        "_target_: sslkit.models.build_backbone\nnetwork: test_schemas.ViewNet\n")
    register_configs(configs)
    keys = [f.name for f in fields(derive("sslkit.models.build_backbone", "test_schemas.ViewNet", group="backbone"))]
    assert {"dims", "view"} <= set(keys) and "in_shape" not in keys
    with initialize_config_dir(str(configs), version_base="1.3"):
        cfg = compose("train", overrides=["~experiment", "backbone=viewnet", "backbone.dims=5", "backbone.view=patches"])
    assert cfg.backbone.dims == 5 and cfg.backbone.view == "patches" and "in_shape" not in cfg.backbone
    net = instantiate(cfg.backbone, in_shape=(1, 8, 8))
    assert (net.dims, net.view) == (5, "patches") and net(torch.zeros(2, 1, 8, 8)).shape == (2, 5)
    # the groups whose targets do receive them leave them out
    assert "dims" in BUILT_WITH["eval"] and "view" in BUILT_WITH["spectrum"]
    probe = [f.name for f in fields(derive("sslkit.eval.OnlineProbe"))]
    monitor = [f.name for f in fields(derive("sslkit.spectrum.SpectrumMonitor", "sslkit.config.Switch"))]
    assert "dims" not in probe and "classes" not in probe and "view" not in monitor and "run_dir" not in monitor


def test_derive_without_a_group_gives_the_registered_schema():
    """`derive(*targets)` (a reference of the options, built from derived_options()) finds the
    group of its targets in configs/ and gives the schema that Hydra composes with."""
    store = ConfigStore.instance()
    for group, options in derived_options().items():
        for name, targets in options.items():
            registered = store.load(f"schema/{group}/{name}.yaml").node
            assert [f.name for f in fields(derive(*targets))] == list(registered), (group, name)
