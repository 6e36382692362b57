"""Every option of every config group composes and builds as a run builds it, found from
the files in configs/ (a new YAML file is covered with no edit here), after the
lightning-hydra-template's test_configs.py."""

import pickle
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.io import write_png

from conftest import compose_config
from sslkit.config import derive, option_targets
from sslkit.eval import Evaluation
from sslkit.losses.barlow_twins import Normalize
from sslkit.methods import check_loss
from sslkit.optim import build_optimizer
from sslkit.records import Observer
from test_sources import write_cifar10, write_stl_images

CONFIGS = Path(__file__).parents[1] / "configs"
GROUPS = sorted(d.name for d in CONFIGS.iterdir() if d.is_dir() and d.name not in ("experiment", "hydra"))
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((CONFIGS / group).glob("*.yaml"))]
BUILT = {"data", "backbone", "projector", "method", "augment", "loss", "optim", "eval", "spectrum", "logger"}
RNG = np.random.default_rng(0)


def write_files(root: Path, option: str) -> None:
    """A few images in the official layout of each file-based data set."""
    if option == "cifar10":
        write_cifar10(root, n=2)
    elif option == "cifar100":
        for name in ("train", "test"):
            data = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
            (root / name).write_bytes(pickle.dumps({b"data": data, b"fine_labels": [0, 1, 2, 3]}, protocol=2))
    elif option == "stl10":
        for name in ("train", "test", "unlabeled"):
            write_stl_images(root / f"{name}_X.bin", RNG.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8))
            if name != "unlabeled":
                (root / f"{name}_y.bin").write_bytes(bytes([1, 2]))
    elif option == "imagefolder":
        for cls in ("a", "b"):
            (root / cls).mkdir()
            write_png(torch.from_numpy(RNG.integers(0, 256, (3, 20, 20), dtype=np.uint8)), str(root / cls / "x.png"))


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option, tmp_path):
    """Each option on top of the defaults, built with the arguments train.py and the
    Observer give it: the data (for the data group), the model, loss, views and optimizer,
    and (for the spectrum and logger groups) the spectrum monitor and dashboards."""
    overrides = [f"{group}={option}"]
    if group == "data" and option not in ("digits", "synthetic"):
        write_files(tmp_path, option)
        overrides += [f"data.root={tmp_path}", "data.batch_size=2"]
        overrides += [f"data.cache_dir={tmp_path / 'cache'}"] if option == "imagefolder" else []
    overrides += {"loss=byol": ["method=byol"], "logger=wandb": ["logger.wandb.mode=disabled"]}.get(overrides[0], [])
    cfg = compose_config(*overrides)
    assert group in BUILT, f"tests/test_configs.py does not build the new group {group} yet"
    data = instantiate(cfg.data) if group in ("data", "eval") else None
    backbone = instantiate(cfg.backbone, in_shape=(1, 8, 8))  # a digit
    projector = instantiate(cfg.projector, in_dim=backbone.out_dim)
    net = instantiate(cfg.method, backbone=backbone, projector=projector)
    check_loss(net, instantiate(cfg.loss))
    augment = instantiate(cfg.augment)
    build_optimizer(cfg.optim, net, 10)
    if group == "eval":
        Evaluation.build(cfg, data, augment, net, torch.device("cpu"), 10)
    if group in ("spectrum", "logger"):
        (tmp_path / "run").mkdir()
        Observer(tmp_path / "run", cfg, torch.device("cpu")).close()


def test_option_files_do_not_repeat_the_constructors_defaults():
    """A file whose schema is read from its `_target_` holds only what differs from that
    callable's defaults: each default is written once, in the code."""
    repeated = []
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        node = OmegaConf.load(path)
        if "_target_" not in node:
            continue
        schema = derive(*option_targets(node))
        defaults = {f.name: f.default for f in fields(schema) if f.default is not MISSING}
        for key, value in node.items():
            if key in defaults and key != "_target_" and value == getattr(defaults[key], "value", defaults[key]):
                repeated.append(f"{path.relative_to(CONFIGS)}: {key}: {value}")
    assert not repeated, f"values equal to the constructor's default: {repeated}"


def test_derived_schemas_type_and_default_every_parameter():
    """The schema of a target is its signature: BarlowTwinsLoss's keys, enum and defaults."""
    schema = {f.name: f for f in fields(derive("sslkit.losses.BarlowTwinsLoss"))}
    assert list(schema) == ["_target_", "lambd", "scale", "normalize", "symmetric"]
    assert schema["normalize"].type is Normalize and schema["lambd"].default == 0.0051
    assert [f.name for f in fields(derive("sslkit.models.Projector"))] == ["_target_", "hidden_dims", "out_dim", "init_scale"]
