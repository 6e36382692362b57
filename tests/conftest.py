"""Shared fixtures: compose the real configs/ with Hydra's compose API, as the CLI does."""

import importlib.util
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs
from sslkit.spectrum import crossing_steps, load

register_configs()

# sslkit-train and the scripts that tests start run on one OpenMP thread too (see one_thread)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one intra-op thread. The tests' tensors are small, and on 2 cores a
    second OpenMP thread only contends (with a parallel run, and before the spectrum's work
    moved into the training thread where the step's pool holds every core, with its
    background thread: the 60 first steps of experiment=stepwise_digits_vicreg took 31.8 s
    on 2 threads and 1.3 s on 1; batch 1797, d = 64, 2-core machine). A test about thread
    settings sets its own inside."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# wandb is a dependency, but an image may lack it (e.g. a GPU machine's own PyTorch image)
HAS_WANDB = importlib.util.find_spec("wandb") is not None
needs_wandb = pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed")


def on_cpu(*overrides: str) -> list[str]:
    """`overrides` with device=cpu at the end unless they name a device: the tests check the
    CPU path, also on a machine with a GPU (the CUDA paths have tests of their own). At the
    end, because Hydra's command line takes no override between flags such as `-m` and the
    overrides after them."""
    return list(overrides) if any(o.startswith("device=") for o in overrides) else [*overrides, "device=cpu"]


def lines(run_dir: Path) -> int:
    """The lines of run_dir's metrics.jsonl so far (one per logged step; 0 before it exists)."""
    path = run_dir / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for_lines(proc: subprocess.Popen, run_dir: Path, n: int = 5) -> None:
    """Wait until the running `proc` has logged `n` lines in run_dir (it must not end before)."""
    while lines(run_dir) < n:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)


def compose_config(*overrides: str) -> DictConfig:
    """The config `sslkit-train <overrides>` would run, on the CPU unless `overrides` name a
    device, with the progress bar off; without an `experiment=` override, that of
    `sslkit-train ~experiment <overrides>` (the bare defaults of configs/train.yaml rather
    than the default experiment)."""
    preset = [] if any(o.startswith("experiment=") for o in overrides) else ["~experiment"]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*preset, *on_cpu(*overrides), "trainer.progress=false",
                                           "trainer.report=false"])


@pytest.fixture
def config():
    return compose_config


def options(group: str) -> list[str]:
    """The options of a config group, from the files of configs/<group>/: a new file is
    covered by every test that iterates over them, with no list to edit."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def write_image(img: torch.Tensor, path: str | Path, **options) -> None:
    """A uint8 (C, H, W) image (C = 1 or 3) saved by Pillow in the format of the path's
    suffix: PNG losslessly, JPEG with Pillow's `options` (quality=75 unless given)."""
    arr = img.permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path, **options)


def assert_separated_steps(run_dir: Path, modes: int) -> None:
    """The first `modes` eigenvalues of C rise from ≈ 0 to ≈ 1 one after another: each has
    finished its rise (crossed 0.8) before the next one starts it (crosses 0.2)."""
    spectra = load(run_dir)
    steps, xcorr = spectra["step"], spectra["xcorr"][:, :modes]
    assert xcorr[0].max() < 1e-3, "a small initialisation should start every mode near 0"
    start, half, end = (crossing_steps(steps, xcorr, level) for level in (0.2, 0.5, 0.8))
    assert (end > 0).all(), f"first {modes} modes did not all reach 0.8: {end}"
    assert (start <= half).all() and (half <= end).all()
    assert (end[:-1] < start[1:]).all(), f"steps overlap: starts {start}, ends {end}"
