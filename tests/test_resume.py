"""Checkpoints and exact resume: SIGKILL at random steps, SIGINT / SIGTERM / SIGUSR1, the
preemption signal of submitit (SIGUSR2) handed on to its requeue, a corrupt last
checkpoint, a checkpoint from another config."""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sslkit.errors import ConfigError, Preempted
from sslkit.run import StopSignal
from sslkit.spectrum import load
from sslkit.train import train

from conftest import lines, on_cpu, wait_for_lines

BIN = Path(sys.executable).parent
# An MLP large enough (≈ 4 MB of weights) that a checkpoint write takes a noticeable time.
RUN = ("~experiment", "backbone=mlp", "backbone.width=1024", "backbone.depth=1", "data.batch_size=256",
       "optim.momentum=0.9", "trainer.max_steps=40", "trainer.checkpoint_every=2",
       "trainer.keep_checkpoints=2", "trainer.progress=false", "trainer.report=false")


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock throughput, the one field that differs between runs."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """Weights, optimizer state, RNG states (Python, NumPy, torch), logs and spectra."""
    sa, sb = final_state(a), final_state(b)
    assert sa["step"] == sb["step"]
    ra, rb = sa["rng"], sb["rng"]
    assert ra["python"] == rb["python"] and torch.equal(ra["torch"], rb["torch"])
    assert torch.equal(ra["numpy"]["keys"], rb["numpy"]["keys"]) and ra["numpy"]["pos"] == rb["numpy"]["pos"]
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    for p, q in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert all(torch.equal(p[k], q[k]) for k in p)
    assert metrics(a) == metrics(b)
    spec_a, spec_b = load(a), load(b)
    assert list(spec_b["step"]) == list(range(sa["step"])), "spectrum has gaps or duplicates"
    np.testing.assert_array_equal(spec_a["xcorr"], spec_b["xcorr"])


def launch(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([BIN / "sslkit-train", *on_cpu(*RUN, *extra), f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("random_kills", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_sigkill_at_random_steps_then_resume_is_bit_identical(tmp_path, random_kills):
    """SIGKILL at `random_kills` random steps and once while a checkpoint is being written
    (in the middle of the random ones), each time relaunched with resume: the run ends
    bit-identical to one never killed. Each kill costs a process start (~10 s on 2 cores), so
    the fast suite kills once at random and the slow one four times."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert launch(reference).wait(timeout=300) == 0
    rng = random.Random(0)
    targets = sorted(rng.sample(range(3, 36), random_kills))
    half = (random_kills + 1) // 2
    mid_write = 0
    for target in [*targets[:half], None, *targets[half:]]:
        proc = launch(killed)
        while proc.poll() is None:
            if target is None:  # the moment a checkpoint is being written
                if any((killed / "checkpoints").glob("*.tmp")):
                    break
            elif lines(killed) >= target:
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        mid_write += any((killed / "checkpoints").glob("*.tmp"))
    assert mid_write >= 1, "no kill landed inside a checkpoint write"
    assert launch(killed).wait(timeout=300) == 0
    assert_same_run(reference, killed)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 255), (signal.SIGUSR1, 255)])
def test_stop_signal_checkpoints_within_one_step_and_resumes(tmp_path, sig, status):
    """Ctrl-C like a preemption: the step finishes, a checkpoint, one line naming the command
    that resumes, and that command continues the run."""
    run = tmp_path / "run"
    proc = launch(run, "trainer.max_steps=100000", "trainer.checkpoint_every=100000")
    wait_for_lines(proc, run)
    proc.send_signal(sig)
    sent = time.perf_counter()
    assert proc.wait(timeout=60) == status
    stopped_after = lines(run)
    state = final_state(run)
    assert state["step"] == stopped_after, "the checkpoint must hold exactly the logged steps"
    last = proc.stderr.read().strip().splitlines()[-1]
    assert last.startswith(f"sslkit-train: stopped by {signal.Signals(sig).name} after {stopped_after} steps;")
    # one step of this model takes milliseconds; allow for process teardown on a busy machine
    assert time.perf_counter() - sent < 30
    if sig == signal.SIGINT:
        command = last.split("Resume with: ")[1].replace("trainer.max_steps=100000", f"trainer.max_steps={stopped_after + 2}")
        done = subprocess.run(command.replace("sslkit-train", str(BIN / "sslkit-train"), 1), shell=True,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert lines(run) == stopped_after + 2 and final_state(run)["step"] == stopped_after + 2


def test_the_stop_signals_include_the_one_submitit_asks_slurm_for():
    """The job script that submitit writes for configs/hydra/launcher/slurm.yaml
    asks for `--signal=<SIG>@<signal_delay_s>`: sslkit stops on that signal, and it wins
    over the others when ranks receive different ones."""
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import _make_sbatch_string

    from sslkit.cli import CONFIG_DIR

    delay = OmegaConf.load(Path(CONFIG_DIR) / "hydra" / "launcher" / "slurm.yaml").signal_delay_s
    script = _make_sbatch_string(command="true", folder="/tmp", signal_delay_s=delay)
    [asked] = [line.split("=")[1] for line in script.splitlines() if line.startswith("#SBATCH --signal=")]
    name, at = asked.split("@")
    assert int(at) == delay and StopSignal.PREEMPT == signal.Signals["SIG" + name]  # SIGUSR2 by default
    assert StopSignal.SIGNALS[-1] == StopSignal.PREEMPT
    assert set(StopSignal.SIGNALS) == {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, StopSignal.PREEMPT}


def test_stop_signal_hands_the_signal_on_to_the_previous_handler():
    """In one process: while training, the preemption signal (USR2) only sets `received`
    (the handler installed before, here a recorder standing for submitit's requeue, is not
    called); on exit that handler is back, and `hand_on` calls it once with the signal.
    Python's Ctrl-C handler is not called (it would raise KeyboardInterrupt)."""
    calls, preempt = [], StopSignal.PREEMPT
    before = signal.signal(preempt, lambda signum, frame: calls.append(signum))
    try:
        with StopSignal() as stop:
            os.kill(os.getpid(), preempt)
            assert stop.received == preempt.name and stop.agreed() and calls == []
        StopSignal.hand_on(stop.received)
        assert calls == [preempt]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        StopSignal.hand_on("SIGINT")  # no KeyboardInterrupt
    finally:
        signal.signal(preempt, before)


# sslkit-train in a process whose SIGUSR2 handler, installed before training, does what
# submitit's does (JobEnvironment._handle_signals): requeue (here: note the step of the
# checkpoint it finds) and exit (144 is submitit's local executor's requeue status).
WITH_PREVIOUS_HANDLER = """
import os, signal, sys
from pathlib import Path
import torch
from sslkit.cli import train_main

run_dir = Path(sys.argv[1])

def requeue(signum, frame):
    last = run_dir / "checkpoints" / "last.pt"
    step = torch.load(last, weights_only=True)["step"] if last.exists() else None
    print(f"previous handler, rank {os.environ.get('RANK', '0')}: {signal.Signals(signum).name}, "
          f"checkpoint at step {step}", file=sys.stderr, flush=True)
    sys.exit(144)

signal.signal(signal.SIGUSR2, requeue)
sys.argv = ["sslkit-train", *sys.argv[2:], f"hydra.run.dir={run_dir}"]
train_main()
"""


@pytest.mark.slow
def test_preemption_signal_checkpoints_then_requeues_and_the_relaunch_resumes(config, tmp_path):
    """SIGUSR2 under a handler installed before training (submitit's requeue): the step
    finishes, the checkpoint and sslkit's line are written, and only then the previous
    handler runs, once, and ends the process with its own status; relaunched, the run
    continues from that checkpoint and equals an uninterrupted run (weights, optimizer,
    RNG states, metrics, spectra)."""
    run, overrides = tmp_path / "run", (*RUN, "backbone.width=64", "trainer.checkpoint_every=100000")
    proc = subprocess.Popen([sys.executable, "-c", WITH_PREVIOUS_HANDLER, run,
                             *on_cpu(*overrides, "trainer.max_steps=100000")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_lines(proc, run)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=60) == 144
    stopped_after = lines(run)
    assert final_state(run)["step"] == stopped_after
    stderr = proc.stderr.read().strip().splitlines()
    assert stderr[-2].startswith(f"sslkit-train: stopped by SIGUSR2 after {stopped_after} steps;")
    assert stderr[-1] == f"previous handler, rank 0: SIGUSR2, checkpoint at step {stopped_after}"
    assert sum("previous handler" in line for line in stderr) == 1
    more = f"trainer.max_steps={stopped_after + 3}"
    train(config(*overrides, more), tmp_path / "reference")
    train(config(*overrides, more), run)
    assert_same_run(tmp_path / "reference", run)


def submitit_task(folder: Path) -> int:
    """The process id of the job task that submitit's local executor runs for `folder`."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"submitit.core._submit" in cmdline and any(str(folder).encode() in part for part in cmdline):
            return int(proc.name)
    raise LookupError(f"no submitit task for {folder}")


@pytest.mark.slow
def test_submitit_requeues_a_preempted_job_that_resumes_from_its_stop(tmp_path):
    """hydra/launcher=local, the SLURM path without a cluster: SIGUSR2 to the job
    (what SLURM sends before the time limit, and what submitit's own `_interrupt` sends)
    stops it after a step with a checkpoint; submitit's handler then requeues it, and the
    requeued job resumes from that step and finishes the run, equal to a run that was
    never interrupted."""
    overrides = on_cpu(*RUN, "backbone.width=64", "trainer.max_steps=100", "trainer.checkpoint_every=100000")
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([BIN / "sslkit-train", "-m", "hydra/launcher=local", *overrides,
                             f"hydra.sweep.dir={sweep}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(proc, sweep / "0")
        os.kill(submitit_task(sweep), signal.SIGUSR2)
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    [log] = (sweep / ".submitit").glob("*/*_log.out")
    text = log.read_text()
    stop = text.split("sslkit-train: stopped by SIGUSR2 after ")[1].split(" steps;")[0]
    requeued = text.split("Requeued job", 1)
    assert len(requeued) == 2 and f"resuming from {sweep / '0'}" in requeued[1], text[-3000:]
    assert f"at step {stop}\n" in requeued[1], text[-3000:]
    assert launch(tmp_path / "reference", *overrides[len(RUN):]).wait(timeout=600) == 0
    assert_same_run(tmp_path / "reference", sweep / "0")


@pytest.mark.parametrize("signal_step, stops", [(1, True), (2, False)])
def test_a_stop_in_the_last_step_completes_the_run(config, tmp_path, monkeypatch, signal_step, stops):
    """A stop signal agreed after step 1 of 3 stops with a checkpoint (Preempted, so submitit
    requeues); agreed after the last step it completes the run as if none had come: no
    Preempted, no requeue of a finished run. (The signal itself is replaced by its
    all-reduced outcome, `StopSignal.agreed`; the signal path has its own tests above.)"""
    calls = []

    def agreed(self):
        calls.append(len(calls))
        if calls[-1] == signal_step:
            self.received = "SIGTERM"
        return self.received is not None

    monkeypatch.setattr(StopSignal, "agreed", agreed)
    cfg = config("trainer.max_steps=3", "spectrum=off")
    if stops:
        with pytest.raises(Preempted, match="after 2 steps;"):
            train(cfg, tmp_path)
    else:
        train(cfg, tmp_path)
    step = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert step == signal_step + 1


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(config, tmp_path, caplog):
    overrides = ("data.batch_size=256", "trainer.checkpoint_every=3", "trainer.keep_checkpoints=3")
    train(config(*overrides, "trainer.max_steps=12"), tmp_path / "reference")
    run = tmp_path / "run"
    train(config(*overrides, "trainer.max_steps=10"), run)
    (run / "checkpoints" / "last.pt").write_bytes(b"\x00garbage")  # also step_10: a hard link
    with caplog.at_level(logging.INFO):
        train(config(*overrides, "trainer.max_steps=12"), run)
    assert "unreadable" in caplog.text and "step_00000010.pt" in caplog.text
    assert "resuming from" in caplog.text and "step_00000009.pt" in caplog.text
    assert metrics(run) == metrics(tmp_path / "reference")
    assert list(load(run)["step"]) == list(range(12))


def test_resume_from_a_path_that_is_no_checkpoint_names_it(config, tmp_path):
    """trainer.resume=PATH on a file torch cannot read as a checkpoint (a run's
    metrics.jsonl) is a ConfigError naming the file, before any step."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n')
    with pytest.raises(ConfigError, match=f"{path} is not a readable checkpoint.*checkpoints/last.pt"):
        train(config("trainer.max_steps=2", f"trainer.resume={path}"), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_checkpoint_from_another_config_lists_the_differences(config, tmp_path):
    """... and the fix it suggests, trainer.resume=overwrite, starts the new run."""
    train(config("trainer.max_steps=4", "data.batch_size=256"), tmp_path)
    changed = ("trainer.max_steps=3", "data.batch_size=256", "optim.lr=0.2", "seed=3")
    with pytest.raises(ConfigError, match=r"different config(.|\n)*optim.lr: checkpoint 0.1, now 0.2"
                                          r"(.|\n)*seed: checkpoint 0, now 3(.|\n)*trainer.resume=overwrite"):
        train(config(*changed), tmp_path)
    train(config(*changed, "trainer.resume=overwrite"), tmp_path)
    assert len(metrics(tmp_path)) == 3 and final_state(tmp_path)["step"] == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "step_00000003.pt"]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_a_longer_resume_warns_when_the_schedule_depends_on_the_length(config, tmp_path, caplog, schedule):
    """4 steps, resumed to 8: a cosine's lr at step 4 moves from ½(1 + cos π) = 0 to
    ½(1 + cos π/2) = ½ of 0.1 (said with both values); a constant rate does not move (silent)."""
    overrides = ("data.batch_size=256", f"optim.schedule={schedule}")
    train(config("trainer.max_steps=4", *overrides), tmp_path)
    with caplog.at_level(logging.WARNING):
        train(config("trainer.max_steps=8", *overrides), tmp_path)
    moved = [r.getMessage() for r in caplog.records if "schedule" in r.getMessage()]
    if schedule == "constant":
        assert moved == []
    else:
        assert len(moved) == 1 and "at step 4" in moved[0] and "lr 0, the new one 0.05" in moved[0], moved


def test_finished_run_relaunched_does_nothing(config, tmp_path, caplog):
    """Not even with fewer steps: config.yaml keeps the steps the run holds, and a warning says so."""
    train(config("trainer.max_steps=4", "data.batch_size=256"), tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("metrics.jsonl", "config.yaml")}
    train(config("trainer.max_steps=4", "data.batch_size=256"), tmp_path)
    with caplog.at_level(logging.WARNING):
        train(config("trainer.max_steps=2", "data.batch_size=256"), tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert "already holds 4 steps" in caplog.text and "nothing to train" in caplog.text


def test_a_run_without_a_readable_checkpoint_is_not_written_over(config, tmp_path, caplog):
    """Every checkpoint unreadable: refused, naming trainer.resume=overwrite; that option
    then starts again from step 0, with a warning."""
    overrides = ("data.batch_size=256", "trainer.max_steps=4", "trainer.checkpoint_every=2")
    train(config(*overrides), tmp_path)
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        path.write_bytes(b"\x00garbage")
    before = (tmp_path / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run but no readable checkpoint.*trainer.resume=overwrite"):
        train(config(*overrides), tmp_path)
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    with caplog.at_level(logging.WARNING):
        train(config(*overrides, "trainer.resume=overwrite"), tmp_path)
    assert "trainer.resume=overwrite: deleting the run" in caplog.text
    assert (tmp_path / "metrics.jsonl").read_bytes().count(b"\n") == 4 and final_state(tmp_path)["step"] == 4


def test_unwritable_run_directory_fails_before_training(config, tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"  # root ignores permissions: use a path under a regular file
        blocker.write_text("")
        run_dir = blocker / "run"
    else:
        tmp_path.chmod(0o500)
        run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="run directory .* is not writable .* hydra.run.dir"):
        train(config("trainer.max_steps=2"), run_dir)


def test_full_disk_leaves_no_torn_checkpoint(config, tmp_path, monkeypatch):
    """A write that fails (ENOSPC) raises a clear error and leaves earlier checkpoints intact."""
    cfg = config("trainer.max_steps=6", "trainer.checkpoint_every=2", "data.batch_size=256")
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if obj["step"] == 4:
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(ConfigError, match=r"No space left on device.*step_00000002.pt is intact"):
        train(cfg, tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_00000002.pt"]
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 2


def test_on_nan_skip_drops_the_update_and_continues(config, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        train(config("experiment=stepwise_digits", "optim.lr=1e9", "trainer.max_steps=6",
                     "trainer.on_nan=skip"), tmp_path)
    assert "non-finite" in caplog.text and "Skipped (trainer.on_nan=skip)" in caplog.text
    assert len(metrics(tmp_path)) == 6


def test_resume_from_a_path_starts_new_logs_at_that_step(config, tmp_path):
    overrides = ("data.batch_size=256", "trainer.checkpoint_every=4")
    train(config(*overrides, "trainer.max_steps=8"), tmp_path / "reference")
    train(config(*overrides, "trainer.max_steps=4"), tmp_path / "first")
    ckpt = tmp_path / "first" / "checkpoints" / "step_00000004.pt"
    train(config(*overrides, "trainer.max_steps=8", f"trainer.resume={ckpt}"), tmp_path / "second")
    assert metrics(tmp_path / "second") == metrics(tmp_path / "reference")[4:]
    assert list(load(tmp_path / "second")["step"]) == [4, 5, 6, 7]
    with pytest.raises(ConfigError, match="trainer.resume='nope.pt' is neither auto, never, overwrite, nor an existing"):
        train(config(*overrides, "trainer.resume=nope.pt"), tmp_path / "third")


@pytest.mark.parametrize("lose, name", [
    (lambda p: p.unlink(), "metrics.jsonl"),
    (lambda p: p.write_bytes(p.read_bytes().splitlines(keepends=True)[0]), "metrics.jsonl"),
    (lambda p: p.unlink(), "spectrum/step.i8"),
    (lambda p: p.write_bytes(p.read_bytes()[:4]), "spectrum/cov.f4"),
    (lambda p: p.unlink(), "spectrum/meta.json"),
])
def test_a_record_file_lost_since_the_checkpoint_is_refused_not_padded(config, tmp_path, lose, name):
    """A record file deleted or cut below the size the checkpoint recorded: resuming would
    continue it after a gap (metrics.jsonl began with thousands of NUL bytes, and every
    reader failed on it). Refused, naming the file and a command that continues the run
    with new records, which does: its records start at the checkpoint's step."""
    overrides = ("trainer.max_steps=6", "trainer.checkpoint_every=3", "spectrum.flush_every=1")
    run = tmp_path / "run"
    train(config(*overrides), run)
    ckpt = run / "checkpoints" / "step_00000003.pt"
    lose(run / name)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".pt"}
    with pytest.raises(ConfigError, match=rf"lost records that .*step_00000003.pt continues: {name} \(") as error:
        train(config(*overrides, f"trainer.resume={ckpt}"), run)
    assert f"trainer.resume={ckpt} hydra.run.dir=NEW_DIR" in str(error.value)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".pt"} == before
    train(config(*overrides, f"trainer.resume={ckpt}"), tmp_path / "new")
    assert [r["step"] for r in metrics(tmp_path / "new")] == [3, 4, 5]
    assert list(load(tmp_path / "new")["step"]) == [3, 4, 5]
