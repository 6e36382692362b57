"""docs/extending.md, followed step by step: its files are written as the document shows
them (Python modules into their sslkit package, YAML files into a copy of configs/), then
composed, built and, for the loss and the method, trained for three steps."""

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from sslkit.config import CONFIG_DIR, register_configs
from sslkit.errors import ConfigError
from sslkit.spectrum import load
from sslkit.train import check, train

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "extending.md"
CONTRACT = ["tests/test_configs.py", "tests/test_methods.py", "tests/test_backbones.py", "tests/test_losses.py"]


def doc_files() -> dict[str, str]:
    """{path: text} of the code blocks whose first line is `# <path>`."""
    blocks = re.findall(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", DOC.read_text(), re.S)
    return {path: text for path, text in blocks}


@pytest.fixture
def extended(tmp_path, monkeypatch):
    """The document's files in place: a copy of configs/ with its YAML files, its modules
    found in their sslkit packages, and the schemas registered from that copy."""
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    for path, text in doc_files().items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if path.startswith("sslkit/"):
            package = importlib.import_module(".".join(Path(path).parent.parts))
            monkeypatch.setattr(package, "__path__", [*package.__path__, str(target.parent)])
    register_configs(configs)

    def config(*overrides):
        with initialize_config_dir(str(configs), version_base="1.3"):
            return compose("train", overrides=[*overrides, "trainer.progress=false", "trainer.report=false"])

    return config


def test_the_documents_files_are_a_loss_a_backbone_a_recipe_a_source_and_a_method():
    assert set(doc_files()) == {"sslkit/losses/align_uniform.py", "configs/loss/align_uniform.yaml",
                                "sslkit/models/lenet.py", "configs/backbone/lenet.yaml",
                                "configs/augment/light.yaml", "sslkit/data/moons.py", "configs/data/moons.yaml",
                                "configs/augment/moons.yaml",
                                "sslkit/methods/simsiam.py", "configs/method/simsiam.yaml"}


def test_the_new_loss_trains_and_its_keys_are_checked(extended, tmp_path):
    """Three files (module, YAML, README row) and `loss=align_uniform` trains; its
    schema, read from the constructor, refuses a misspelled key before training."""
    cfg = extended("loss=align_uniform", "loss.t=3", "trainer.max_steps=3")
    assert cfg.loss.lam == 1.0 and cfg.loss.t == 3.0
    last = train(cfg, tmp_path / "run")
    assert last["step"] == 2 and torch.isfinite(torch.tensor(last["loss"]))
    assert last["loss"] == pytest.approx(last["align"] + last["uniform"], rel=1e-5)
    with pytest.raises(Exception, match="Could not override 'loss.tt'"):
        extended("loss=align_uniform", "loss.tt=3")


def test_the_new_losss_optional_hooks_are_called(extended, tmp_path):
    """spectrum_view: xcorr is C of ẑ = z/‖z‖, whose trace (the sum of its eigenvalues, all
    of them recorded at D = 64) is the mean cosine of the pairs, at most 1, where the raw
    embeddings' C (xcorr_raw) has a trace far above 1 once training has grown them from
the small initialisation of the default experiment. check_batch: a batch of one is
    refused before training, where the loss would be nan."""
    cfg = extended("loss=align_uniform", "trainer.max_steps=3", "spectrum.matrices=[xcorr,xcorr_raw]")
    train(cfg, tmp_path / "run")
    spectra = load(tmp_path / "run")
    assert spectra["xcorr"].shape[1] == spectra["xcorr_raw"].shape[1] == 64
    assert (spectra["xcorr"].sum(1) <= 1 + 1e-5).all() and spectra["xcorr_raw"].sum(1).max() > 100
    with pytest.raises(ConfigError, match="data.batch_size=1 is too small for loss=align_uniform"):
        check(extended("loss=align_uniform", "data.batch_size=1"))


def test_the_new_backbone_recipe_and_source_build(extended):
    cfg = extended("~experiment", "backbone=lenet", "backbone.width=4", "augment=light", "augment.mean=[0.5]", "augment.std=[0.25]")
    backbone = instantiate(cfg.backbone, in_shape=(1, 8, 8))
    assert backbone(torch.zeros(2, 1, 8, 8)).shape == (2, 84) and backbone.net[0].out_channels == 4
    linearized = instantiate(extended("~experiment", "backbone=lenet", "backbone.linearized=true").backbone, in_shape=(1, 8, 8))
    assert linearized(torch.zeros(2, 1, 8, 8)).shape == (2, 84)
    v1, v2 = instantiate(cfg.augment)(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == (4, 1, 8, 8)
    data = instantiate(extended("~experiment", "data=moons", "data.n=64", "data.batch_size=32").data)
    assert data.x.shape == (64, 2) and set(data.y.tolist()) == {0, 1}


def test_the_new_source_trains_with_its_default_views(extended, tmp_path):
    """`data=moons` alone picks its views, configs/augment/moons.yaml (Gaussian noise)."""
    cfg = extended("~experiment", "data=moons", "backbone=mlp", "data.n=64", "data.batch_size=32",
                   "trainer.max_steps=3")
    assert cfg.augment._target_ == "sslkit.augment.GaussianNoise"
    assert train(cfg, tmp_path / "run")["step"] == 2


def test_the_new_method_trains_with_its_loss(extended, tmp_path):
    """`method=simsiam` picks BYOL's loss, gives it the detached projections t1, t2, and
    trains; its predictor's size is a config key read from the constructor."""
    cfg = extended("~experiment", "method=simsiam", "method.hidden_dims=[16]", "trainer.max_steps=3")
    assert cfg.loss._target_ == "sslkit.methods.BYOLLoss" and list(cfg.method.hidden_dims) == [16]
    last = train(cfg, tmp_path / "run")
    assert last["step"] == 2 and last["loss"] == pytest.approx(last["view1"] + last["view2"], rel=1e-5)
    net = instantiate(cfg.method, backbone=instantiate(cfg.backbone, in_shape=(1, 8, 8)),
                      projector=instantiate(cfg.projector, in_dim=64))
    v = torch.randn(4, 1, 8, 8)
    out = net(v, v.flip(0))
    assert not out.extra["t1"].requires_grad and out.z1.requires_grad
    torch.testing.assert_close(out.extra["t2"], net.projector(net.backbone(v.flip(0))))


def contract_tests(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest on the contract tests of a copy of the repository (sslkit/, configs/, tests/,
    pyproject.toml) with the document's files added where it says; the copy's sslkit is
    the one imported (the working directory comes first on sys.path)."""
    repo = tmp_path / "repo"
    for part in ("sslkit", "configs", "tests"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", repo)
    for path, text in doc_files().items():
        (repo / path).write_text(text)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, *CONTRACT],
                          cwd=repo, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_the_contract_tests_pick_up_the_documents_options_and_pass(tmp_path):
    """With no edit to the tests, every new option is a case of the contract tests, and
    they all pass (every method with every loss, no new default repeated in a file)."""
    run = contract_tests(tmp_path, "-rA")  # a line "PASSED <test id>" per test
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for case in ("test_every_option_composes_and_builds[loss=align_uniform]",
                 "test_every_option_composes_and_builds[method=simsiam]",
                 "test_every_option_composes_and_builds[backbone=lenet]",
                 "test_every_option_composes_and_builds[data=moons]",
                 "test_every_option_composes_and_builds[augment=moons]",
                 "test_every_option_composes_and_builds[augment=light]",
                 "test_a_method_and_loss_that_do_not_fit_name_the_options_that_do[simsiam]",
                 "test_every_backbone_option_builds_for_digits[lenet]",
                 "test_gradcheck[shape0-AlignUniformLoss()]"):
        assert re.search(rf"^PASSED \S+::{re.escape(case)}$", run.stdout, re.M), case
