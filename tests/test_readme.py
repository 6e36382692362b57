"""Every shell command of README.md's ```bash blocks works as written: each composes (fast
test), and each runs to completion (slow test), shortened with trainer.max_steps, with
fake data files where the command reads `~/data/...`.

Skipped, each with its reason in SKIPPED: `make test` (the suite that holds this test),
`tensorboard` (serves until stopped), `wandb sync` (network), the 4-GPU `torchrun` example
(tests/test_distributed.py runs torchrun with 2 CPU processes) and the SLURM sweep (a
cluster)."""

import os
import pickle
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from torchvision.io import write_png

from sslkit.cli import CONFIG_DIR, _HOME, _known_override
from test_sources import write_cifar10, write_stl_images

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SKIPPED = {
    "make test": "runs the fast test suite, which holds this test",
    "tensorboard --logdir": "serves a web page until stopped",
    "wandb sync": "uploads to the W&B servers (network)",
    "torchrun --nproc_per_node=4": "needs 4 GPUs; tests/test_distributed.py runs torchrun with 2 CPU processes",
    "hydra/launcher=submitit_slurm": "needs a SLURM cluster",
}


def readme_commands() -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.join(shlex.split(line, comments=True)) for line in lines if shlex.split(line, comments=True)]


def skip_reason(command: str) -> str | None:
    return next((why for key, why in SKIPPED.items() if key in command), None)


def shortened(command: str, steps: int = 2) -> str:
    """The command with trainer.max_steps=`steps` (replacing a value it gives); a checkpoint
    it names, `step_<N>.pt`, becomes that of the shortened run's last step."""
    command = re.sub(r"step_\d{8}\.pt", f"step_{steps:08d}.pt", command)
    words = shlex.split(command)
    if words[0] == "make" and words[1] == "train":  # -o: never reinstall the shared .venv from a test
        return shlex.join(["make", "-o", ".venv/.installed-stamp", "train", f"ARGS=trainer.max_steps={steps}"])
    if words[0] != "sslkit-train" or "--cfg" in words:
        return command
    return shlex.join([w for w in words if not w.startswith("trainer.max_steps=")] + [f"trainer.max_steps={steps}"])


def test_the_readme_has_the_commands_this_test_knows():
    commands = readme_commands()
    assert len(commands) >= 15
    assert all(any(key in c for c in commands) for key in SKIPPED), "a skipped command left the README"


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith("sslkit-train")])
def test_every_readme_command_composes(command, tmp_path, monkeypatch):
    """What sslkit-train does before Hydra (`~` expansion, unknown keys), then Hydra's
    composition of every job of the command."""
    if skip_reason(command):
        pytest.skip(skip_reason(command))
    monkeypatch.setenv("HOME", str(tmp_path))
    args = [_HOME.sub(lambda m: m.group(1) + str(tmp_path), a) for a in shlex.split(command)[1:]]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    assert not [m for a in overrides if (m := _known_override(a))]
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        for job in jobs:
            compose("train", overrides=[o for o in job if not o.startswith("hydra.")])


def fake_data(home: Path) -> None:
    """The data folders the README names under ~/data, as the official archives extract
    them, each with at least 1797 images (the default experiment's batch), and flowers/val,
    the image folder's held-out images."""
    rng = np.random.default_rng(0)
    write_cifar10(home / "data" / "cifar-10-batches-py", n=360)
    c100 = home / "data" / "cifar-100-python"
    c100.mkdir(parents=True)
    for name, n in (("train", 1800), ("test", 1800)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": [0] * n}
        (c100 / name).write_bytes(pickle.dumps(batch, protocol=2))
    stl = home / "data" / "stl10_binary"
    stl.mkdir(parents=True)
    for name, n in (("train", 900), ("test", 4), ("unlabeled", 900)):
        write_stl_images(stl / f"{name}_X.bin", rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8))
        if name != "unlabeled":
            (stl / f"{name}_y.bin").write_bytes(rng.integers(1, 11, n, dtype=np.uint8).tobytes())
    for split, n in (("train", 1800), ("val", 30)):
        flowers = home / "data" / "flowers" / split
        for i in range(n):
            (flowers / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
            write_png(__import__("torch").from_numpy(rng.integers(0, 256, (3, 12, 10), dtype=np.uint8)),
                      str(flowers / f"class{i % 3}" / f"{i}.png"))


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    """In one working directory, in README order (the sweep's runs feed sslkit-report)."""
    home, work = tmp_path / "home", tmp_path / "work"
    fake_data(home)
    work.mkdir()
    os.symlink(ROOT / "Makefile", work / "Makefile")
    os.symlink(ROOT / ".venv", work / ".venv")
    os.symlink(ROOT / "pyproject.toml", work / "pyproject.toml")
    env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}", "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    failures = []
    for command in readme_commands():
        if skip_reason(command):
            continue
        done = subprocess.run(["bash", "-c", shortened(command)], cwd=work, env=env, capture_output=True,
                              text=True, timeout=900)
        if done.returncode != 0:
            failures.append(f"$ {shortened(command)}\n{done.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
