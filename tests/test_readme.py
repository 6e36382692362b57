"""Every shell command of the ```bash blocks of README.md and of the docs site's pages
(docs/**/*.md) works as written.

Fast: each command that runs `sslkit-train` (also the one torchrun starts) composes as
sslkit-train composes it: `~` expanded, every override naming a group or a key, and
Hydra's composition of every job of the command, its `hydra.*` overrides included. The
SLURM sweep's launcher is built from its composed config, as Hydra builds it, and asks for
what the README promises.

Slow, one test per ```bash block: the block's commands in their order in one working
directory (later commands read the runs of earlier ones), HOME holding fake data files
where a command reads ~/data/... . Each command runs as written, except:
- sslkit-train, torchrun and `make train` get trainer.max_steps=2, and so does
  sslkit-theory, which refuses a config other than that of the run it predicts for; a
  checkpoint named step_<N>.pt becomes the shortened run's step_00000002.pt; torchrun's 4 processes train
  on the CPU with gloo, the device being `auto`, and rank 0 alone reports;
- tensorboard gets `--port <a free port>`, and serves until stopped: the test waits until
  it serves the run of the command before, compares its scalar, histogram and image tags
  with that run's metrics.jsonl and spectrum.matrices and its loss curve with
  metrics.jsonl, and stops it;
- wandb sync gets `--dry-run` (an upload needs the network and an account): wandb must
  name the one run file the README's glob matches, the offline run of the command before,
  whose history holds the steps of that run's metrics.jsonl;
- the SLURM sweep must stop, as on any machine without SLURM, with sslkit's message after
  checking all 6 jobs (on a machine with SLURM this part is skipped, as it would submit);
  the same sweep then runs with hydra/launcher=local instead of slurm
  and without the two keys only SLURM has (hydra.launcher.partition, .account);
- `make test` is not run: it runs the fast suite, which holds this test.
"""

import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from sslkit.cli import CONFIG_DIR, _HOME, _known_override
from sslkit.records.tensorboard import eigenvalue_tag
from sslkit.spectrum import load
from test_loggers import free_port, wandb_records
from test_sources import write_cifar10, write_stl_images

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SKIPPED = {"make test": "runs the fast test suite, which holds this test"}
STEPS = 2
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def readme_blocks() -> list[tuple[str, list[str]]]:
    """The ```bash blocks of every document as ("path:line", commands): continuation lines
    joined, a `#` that follows a space or starts a line begins a comment (no command quotes one)."""
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text()
        for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
            lines = block.group(1).replace("\\\n", " ").splitlines()
            commands = [c for line in lines if (c := " ".join(re.sub(r"(^|\s)#.*", "", line).split()))]
            line = text.count("\n", 0, block.start()) + 1
            blocks.append((f"{document.relative_to(ROOT)}:{line}", commands))
    return blocks


def readme_commands() -> list[str]:
    return [command for _, commands in readme_blocks() for command in commands]


def train_args(command: str) -> list[str] | None:
    """The arguments `command` gives sslkit-train (directly or through torchrun), else None."""
    words = shlex.split(command.replace("$(which sslkit-train)", "sslkit-train"))
    return words[words.index("sslkit-train") + 1:] if "sslkit-train" in words else None


def shortened(command: str) -> str:
    """The command with trainer.max_steps=STEPS (replacing a value it gives); a checkpoint
    it names, `step_<N>.pt`, becomes that of the shortened run's last step."""
    command = re.sub(r"step_\d{8}\.pt", f"step_{STEPS:08d}.pt", command)
    if command.startswith("make train"):  # -o: never reinstall the shared .venv from a test
        return f"make -o .venv/.installed-stamp train ARGS=trainer.max_steps={STEPS}"
    if (train_args(command) is None and not command.startswith("sslkit-theory")) or "--cfg" in command:
        return command
    return re.sub(r" trainer\.max_steps=\S+", "", command) + f" trainer.max_steps={STEPS}"


def composed_jobs(args: list[str], home: Path) -> list[DictConfig]:
    """What sslkit-train does with `args` before Hydra (`~` expansion, unknown keys), then
    Hydra's composition of every job, with its hydra.* config."""
    args = [_HOME.sub(lambda m: m.group(1) + str(home), a) for a in args]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    assert not [m for a in overrides if (m := _known_override(a))]
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return [compose("train", overrides=list(job), return_hydra_config=True) for job in jobs]


def test_the_readme_has_the_commands_this_test_knows():
    commands = readme_commands()
    assert len(commands) >= 25
    for key in (*SKIPPED, "torchrun --nproc_per_node=4", "tensorboard --logdir", "wandb sync",
                "hydra/launcher=slurm"):
        assert any(key in c for c in commands), f"{key} left the README and docs; update this test"


@pytest.mark.parametrize("command", [c for c in readme_commands() if train_args(c) is not None])
def test_every_readme_command_composes(command, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert composed_jobs(train_args(command), tmp_path)


@pytest.mark.parametrize("command", sorted({c for c in readme_commands() if "hydra/launcher=slurm" in c}))
def test_the_slurm_sweep_asks_for_what_the_readme_promises(command, tmp_path):
    """The README and docs: 6 jobs (loss × seed), each on 4 GPUs of partition gpu, account myproj;
    hydra/launcher=slurm: one task per GPU, 24 h, requeue on time-out or preemption. Checked on
    the launcher built from each job's composed config (nothing is submitted: no cluster)."""
    jobs = composed_jobs(train_args(command), tmp_path)
    assert sorted((job.loss._target_.rsplit(".", 1)[1], job.seed) for job in jobs) == [
        (loss, seed) for loss in ("BarlowTwinsLoss", "NTXentLoss", "VICRegLoss") for seed in (0, 1)]
    for job in jobs:
        launcher = instantiate(job.hydra.launcher)
        assert type(launcher).__name__ == "SlurmLauncher"  # Hydra's plugin scan imports its own copy
        p = launcher.params
        assert (p["partition"], p["account"], p["nodes"], p["gpus_per_node"]) == ("gpu", "myproj", 1, 4)
        assert p["tasks_per_node"] == p["gpus_per_node"]
        assert p["timeout_min"] == 24 * 60 and p["max_num_timeout"] >= 1 and p["signal_delay_s"] > 0


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
            folder = flowers / f"class{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    fake_data(home)
    return home


def run(command: str, work: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)


def succeeds(command: str, work: Path, env: dict) -> subprocess.CompletedProcess:
    done = run(command, work, env)
    assert done.returncode == 0, f"exit status {done.returncode}\n{done.stderr[-1500:]}"
    return done


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def serves_the_run(command: str, work: Path, env: dict) -> None:
    """`tensorboard --logdir RUN_DIR/tensorboard --port <free>` serves RUN_DIR: a scalar for
    every key of its metrics.jsonl (the loss at every logged step) and for each of the top
    eigenvalues of each recorded matrix, a histogram and a heat-map per matrix, the
    stepwise figure, and in the Custom Scalars tab one chart per matrix of its eigenvalues."""
    words = shlex.split(command)
    run_dir = (work / words[words.index("--logdir") + 1]).parent
    rows = metrics(run_dir)
    run_config = OmegaConf.load(run_dir / "config.yaml")
    matrices, spectra = run_config.spectrum.matrices, load(run_dir)
    eigenvalues = {eigenvalue_tag(m, k, run_config.logger.tensorboard.modes) for m in matrices
                   for k in range(min(run_config.logger.tensorboard.modes, spectra[m].shape[1]))}
    expected = {"scalars": {key for row in rows for key in row} - {"step"} | eigenvalues,
                "histograms": {f"eigenvalues/{m}" for m in matrices},
                "images": {f"spectrum/{m}" for m in matrices} | {"figures/stepwise"}}
    port = free_port()
    with open(work / "tensorboard.log", "w") as log:
        server = subprocess.Popen(["bash", "-c", f"exec {command} --port {port}"], cwd=work, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}/data/plugin"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (work / "tensorboard.log").read_text()
            try:  # not listening yet, or still loading the event file
                served = {plugin: set(fetch(f"{url}/{plugin}/tags").get(".", {})) for plugin in expected}
            except OSError:
                served = {}
            if served == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert served == expected
        loss = fetch(f"{url}/scalars/scalars?run=.&tag=loss")
        (category,) = fetch(f"{url}/custom_scalars/layout")["category"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    # the Custom Scalars tab: one multi-line chart per matrix, of that matrix's eigenvalues
    charted = [{tag for tag in eigenvalues if re.match(chart["multiline"]["tag"][0], tag)}
               for chart in category["chart"]]
    assert charted == [{tag for tag in eigenvalues if tag.startswith(f"eigenvalues/{m}/")} for m in matrices]
    assert [step for _, step, _ in loss] == [row["step"] for row in rows]
    np.testing.assert_allclose([value for _, _, value in loss], [row["loss"] for row in rows], rtol=1e-6)


def would_sync_the_offline_run(command: str, work: Path, env: dict) -> None:
    """`wandb sync --dry-run <the README's glob>` names the run file it would upload: that
    of the one offline run the glob matches, whose history holds the run's logged steps."""
    done = succeeds(command.replace("wandb sync ", "wandb sync --dry-run ", 1), work, env)
    (offline,) = work.glob(shlex.split(command)[-1])
    (upload,) = offline.glob("run-*.wandb")
    assert "Would sync 1 run(s)" in done.stderr and str(upload.relative_to(work)) in done.stderr, done.stderr
    run_dir = offline.parents[1]
    steps = {json.loads(item.value_json) for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "history"
             for item in r.history.item if (item.key or "/".join(item.nested_key)) == "_step"}
    assert sorted(steps) == [row["step"] for row in metrics(run_dir)]


def sweep_runs(work: Path) -> set[Path]:
    return set(work.glob("runs/multirun/*/*/*/metrics.jsonl"))


def slurm_sweep(command: str, work: Path, env: dict) -> None:
    """Without SLURM, the README's sweep stops with one message once its 6 jobs are checked;
    the same sweep with hydra/launcher=local (no partition, account) trains all 6."""
    if not (shutil.which("sbatch") or shutil.which("srun")):
        done = run(command, work, env)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
        assert ("sslkit-train: error: hydra/launcher=slurm submits the 6 jobs to SLURM, and this machine "
                "has no SLURM (sbatch and srun not on PATH).") in done.stderr, done.stderr[-1500:]
    before = sweep_runs(work)
    local = re.sub(r" hydra\.launcher\.(partition|account)=\S+", "", command)
    succeeds(shortened(local.replace("hydra/launcher=slurm", "hydra/launcher=local")), work, env)
    runs = [path.parent for path in sweep_runs(work) - before]
    assert sorted((OmegaConf.load(r / "config.yaml").loss._target_.rsplit(".", 1)[1],
                   OmegaConf.load(r / "config.yaml").seed, len(metrics(r))) for r in runs) == [
        (loss, seed, STEPS) for loss in ("BarlowTwinsLoss", "NTXentLoss", "VICRegLoss") for seed in (0, 1)]


def runs_shortened(command: str, work: Path, env: dict) -> None:
    done = succeeds(shortened(command), work, env)
    if command.startswith("torchrun"):  # rank 0 alone reports
        assert done.stdout.count("run directory:") == 1, done.stdout


RUNNERS = {"tensorboard --logdir": serves_the_run, "wandb sync": would_sync_the_offline_run,
           "hydra/launcher=slurm": slurm_sweep}


@pytest.mark.slow
@pytest.mark.parametrize("where, commands", readme_blocks(), ids=[where for where, _ in readme_blocks()])
def test_every_readme_command_runs_as_written(where, commands, home, tmp_path):
    """The block's commands in their document's order, in one working directory."""
    for name in ("Makefile", ".venv", "pyproject.toml"):
        os.symlink(ROOT / name, tmp_path / name)
    env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("WANDB_API_KEY", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    failures = []
    for command in commands:
        if any(key in command for key in SKIPPED):
            continue
        runner = next((f for key, f in RUNNERS.items() if key in command), runs_shortened)
        try:
            runner(command, tmp_path, env)
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            failures.append(f"$ {command}\n{exc}")
    assert not failures, "\n\n".join(failures)
