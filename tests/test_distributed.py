"""Data-parallel training: 2 processes (torchrun, gloo on CPU) against 1 process with the
same global batch and random views, for all three losses, the digits views and the image
views, BatchNorm (GlobalBatchNorm on the CPU); a global batch that does not divide by the
number of processes; a stop signal that reaches one rank, the preemption signal too."""

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslkit.augment import GaussianNoise, ImageViews, ShiftNoise, ViewSpec
from sslkit.distributed import Dist, GlobalBatchNorm, global_batchnorm, rows
from sslkit.spectrum import load

from conftest import lines, on_cpu, wait_for_lines

BIN = Path(sys.executable).parent
# Random views (noise std 0.1), no BatchNorm (it has a test of its own). The global batch of
# 255 splits into 127 + 128.
RUN = ("~experiment", "data=synthetic", "augment=gaussian_noise", "backbone=mlp", "backbone.width=64",
       "projector=identity", "data.batch_size=255", "trainer.max_steps=20", "trainer.progress=false",
       "trainer.report=false")


def run(run_dir: Path, processes: int, *overrides: str) -> subprocess.CompletedProcess:
    launcher = [BIN / "torchrun", f"--nproc_per_node={processes}", BIN / "sslkit-train"] if processes > 1 \
        else [BIN / "sslkit-train"]
    done = subprocess.run([*launcher, *on_cpu(*overrides), f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["barlow_twins", "simclr", "vicreg"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, loss):
    run(tmp_path / "one", 1, f"loss={loss}", *RUN)
    two = run(tmp_path / "two", 2, f"loss={loss}", *RUN)
    assert two.stdout.count("run directory:") == 1, "only rank 0 reports"
    assert_same_training(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
@pytest.mark.parametrize("views", ["digits", "simclr"])
def test_two_processes_match_one_with_random_image_views(tmp_path, views):
    """augment=digits (shifts and pixel noise) on digits; augment=simclr (crops, flips,
    jitter, grayscale, blur) on CIFAR files. Global batch 63 = 31 + 32. On CIFAR pixels at
    lr 0.1 the embeddings' largest variance grows to 3e7 within 20 steps, and float32
    round-off with it, to 1e-5 of the largest eigenvalue (in float64 the two runs still
    agree to 1e-13): the CIFAR run takes lr 0.01, where round-off stays near 1e-6."""
    from test_sources import write_cifar10

    data = ("data=digits",) if views == "digits" else \
        ("data=cifar10", f"data.root={tmp_path / 'cifar'}", "optim.lr=0.01")
    if views == "simclr":
        write_cifar10(tmp_path / "cifar", n=20)
    overrides = ("~experiment", *data, f"augment={views}", "backbone=mlp", "backbone.width=64",
                 "projector=identity", "data.batch_size=63", "trainer.max_steps=20", "trainer.progress=false",
                 "trainer.report=false")
    run(tmp_path / "one", 1, *overrides)
    run(tmp_path / "two", 2, *overrides)
    assert_same_training(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_two_processes_match_one_with_batchnorm_on_the_cpu(tmp_path):
    """projector=mlp (Linear–BatchNorm–ReLU–Linear): on the CPU, where SyncBatchNorm does
    not run, GlobalBatchNorm normalises with the statistics of the global batch of 63 =
    31 + 32, so 2 processes give the 1-process run, running statistics included. At lr 0.1
    float32 round-off grows to 6e-5 of the largest weight in 20 steps (in float64 the two
    runs agree to 2e-13); at lr 0.01 it stays below 1e-6."""
    overrides = ("~experiment", "data=digits", "augment=digits", "backbone=mlp", "backbone.width=64",
                 "projector=mlp", "projector.hidden_dims=[64]", "projector.out_dim=64", "data.batch_size=63",
                 "optim.lr=0.01", "trainer.max_steps=20", "trainer.progress=false", "trainer.report=false")
    run(tmp_path / "one", 1, *overrides)
    run(tmp_path / "two", 2, *overrides)
    assert_same_training(tmp_path / "one", tmp_path / "two")


@pytest.mark.parametrize("momentum", [0.1, None])
def test_global_batchnorm_is_batchnorm_in_one_process(momentum):
    """With a 1-rank process group GlobalBatchNorm is torch's BatchNorm2d: outputs, input and
    parameter gradients, running statistics in train mode, outputs in eval mode."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ref = torch.nn.BatchNorm2d(3, momentum=momentum)
        torch.nn.init.uniform_(ref.weight)
        torch.nn.init.uniform_(ref.bias)
        ours = global_batchnorm(torch.nn.Sequential(copy.deepcopy(ref)))[0]
        assert isinstance(ours, GlobalBatchNorm)
        x, upstream = torch.randn(2, 5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        x = x * 3 + 1
        for _ in range(2):
            outputs = []
            for bn in (ref, ours):
                bn.zero_grad()
                xi = x.clone().requires_grad_()
                y = bn(xi)
                (y * upstream).sum().backward()
                outputs.append((y, xi.grad, bn.weight.grad, bn.bias.grad))
            for a, b in zip(*outputs):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
            x = x * 0.5 - 2
        for key, value in ref.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[key], value, msg=key)
        ref.eval(), ours.eval()
        torch.testing.assert_close(ours(x), ref(x))
    finally:
        dist.destroy_process_group()


def assert_same_training(one_dir: Path, two_dir: Path) -> None:
    """Loss curve within 1e-5 relative, step by step; every weight within 1e-5 of its
    tensor's largest magnitude, or 1e-5 relative where it is larger. Float32 round-off
    differs between the runs (rank sums of 31 and 32 rows added by the all-reduce, against
    one sum of 63), and a sum's round-off scales with its terms, not with its result, so a
    weight near 0 can differ by much more than 1e-5 of itself (digits, after 20 steps:
    1.0e-7 on a weight of -2.1e-4, 5e-4 of it; the tensor's largest is 0.52). In float64
    the two runs agree to 1e-15 of each tensor's norm: the difference is round-off alone."""
    curves = [[json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (one_dir, two_dir)]
    assert len(curves[0]) == len(curves[1]) == 20
    torch.testing.assert_close(torch.tensor(curves[1]), torch.tensor(curves[0]), rtol=1e-5, atol=0)
    one, two = (torch.load(d / "checkpoints" / "last.pt", weights_only=True)["model"] for d in (one_dir, two_dir))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-5 * one[key].abs().max().item(), msg=key)
    # rank 0 records the spectra of the global batch, backbone features (feat_cov) included;
    # each step's eigenvalues within 1e-5 of its largest, as the weights
    spectra = [load(d) for d in (one_dir, two_dir)]
    for name in ("cov", "xcorr", "feat_cov"):
        one_s, two_s = (torch.from_numpy(s[name]) for s in spectra)
        scale = one_s.abs().amax(1, keepdim=True)
        torch.testing.assert_close(two_s / scale, one_s / scale, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.slow
def test_submitit_local_sweep_runs_to_completion(tmp_path):
    done = subprocess.run([BIN / "sslkit-train", "-m", "hydra/launcher=local", "device=cpu", "loss=barlow_twins,vicreg",
                           "seed=0,1", "trainer.max_steps=3", "trainer.progress=false", "trainer.report=false",
                           f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(tmp_path.glob("*/metrics.jsonl"))
    assert len(runs) == 4 and all(len(r.read_text().splitlines()) == 3 for r in runs)
    # Hydra's warning for a config file named like a ConfigStore node (automatic schema
    # matching), once per composition: in the sweep and in each job's log
    logs = sorted(tmp_path.glob(".submitit/*/*_log.out"))
    assert len(logs) == 4 and not [text for text in (done.stderr, *(log.read_text() for log in logs))
                                   if "validated against ConfigStore schema" in text]
    configs = {(r.parent / "config.yaml").read_text().split("seed: ")[1].split("\n")[0] for r in runs}
    assert configs == {"0", "1"}


@pytest.mark.parametrize("world_size, batch", [(2, 255), (3, 64), (4, 4)])
def test_rank_rows_cover_the_global_batch_in_order(world_size, batch):
    parts = [range(batch)[rows(batch, Dist(r, world_size))] for r in range(world_size)]
    assert [i for part in parts for i in part] == list(range(batch))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("augment", [
    GaussianNoise(0.1),
    ShiftNoise(max_shift=2, std=0.1, mean=0.3),
    ImageViews(ViewSpec(blur_p=0.5, solarize_p=0.3), ViewSpec(crop_scale=None, flip_p=0.5), size=16,
               mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2]),
])
def test_views_of_a_rank_are_its_rows_of_the_one_process_views(augment):
    """Each rank's views, from the step's generator, are exactly its rows of the views one
    process makes of the whole global batch (here 3 ranks, batch 7 = 2 + 2 + 3)."""
    shape = (7, 5) if isinstance(augment, GaussianNoise) else (7, 3, 20, 20)
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = augment(x, torch.Generator().manual_seed(1))
    for r in range(3):
        part = augment(x, torch.Generator().manual_seed(1), rows(len(x), Dist(r, 3)))
        for view, ref in zip(part, whole):
            assert torch.equal(view, ref[rows(len(x), Dist(r, 3))])


def rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The process id of torchrun's worker of `rank` (from the workers' environment)."""
    for child in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        if f"\0RANK={rank}\0" in Path(f"/proc/{child}/environ").read_text():
            return int(child)
    raise LookupError(f"no worker of rank {rank}")


def signal_rank_1(command: list, run_dir: Path, sig: signal.Signals) -> tuple[int, str]:
    """Launch `command` (torchrun) in a session of its own, send `sig` to rank 1 alone once
    run_dir has logged 5 steps, wait for the end; (exit status, stderr)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for_lines(proc, run_dir)
        os.kill(rank_pid(proc, 1), sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a rank left waiting for the other: end the whole launch
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stderr


@pytest.mark.slow
def test_a_stop_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """SIGTERM to rank 1 alone (a signal can reach the ranks during different steps, or
    reach some only): both ranks stop after the same step, rank 0 checkpoints exactly the
    logged steps and reports it in one line, and the relaunch continues the run."""
    run_dir = tmp_path / "run"
    command = [BIN / "torchrun", "--nproc_per_node=2", BIN / "sslkit-train", *on_cpu(*RUN),
               "trainer.checkpoint_every=100000", f"hydra.run.dir={run_dir}"]
    returncode, stderr = signal_rank_1([*command, "trainer.max_steps=100000"], run_dir, signal.SIGTERM)
    stopped_after = lines(run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == stopped_after
    assert returncode != 0 and stderr.count("sslkit-train: stopped by") == 1, stderr[-3000:]
    assert f"sslkit-train: stopped by SIGTERM after {stopped_after} steps;" in stderr
    done = subprocess.run([*command, f"trainer.max_steps={stopped_after + 2}"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert lines(run_dir) == stopped_after + 2


@pytest.mark.slow
def test_a_preemption_signal_to_one_rank_is_handed_on_by_rank_0_after_the_checkpoint(tmp_path):
    """SIGUSR2 to rank 1 alone, in processes where a handler for it (standing for
    submitit's, which requeues from rank 0 only) was installed before training: both
    ranks stop after the same step, and rank 0, which never received the signal, calls
    its handler after the checkpoint of that step and its line."""
    from test_resume import WITH_PREVIOUS_HANDLER

    script, run_dir = tmp_path / "previous.py", tmp_path / "run"
    script.write_text(WITH_PREVIOUS_HANDLER)
    _, stderr = signal_rank_1([BIN / "torchrun", "--nproc_per_node=2", script, run_dir, *on_cpu(*RUN),
                               "trainer.checkpoint_every=100000", "trainer.max_steps=100000"], run_dir, signal.SIGUSR2)
    stopped_after = lines(run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == stopped_after
    line = f"sslkit-train: stopped by SIGUSR2 after {stopped_after} steps;"
    handed = f"previous handler, rank 0: SIGUSR2, checkpoint at step {stopped_after}"
    assert stderr.count("sslkit-train: stopped by") == 1 and stderr.count(handed) == 1, stderr[-3000:]
    assert stderr.index(line) < stderr.index(handed)


@pytest.mark.slow
def test_torchrun_reports_once_from_rank_0(tmp_path):
    """A config error: one message, from rank 0; the default experiment's global batch of
    1797 (not divisible by 2) trains, and only rank 0 reports its figure and directory."""
    launcher = [BIN / "torchrun", "--nproc_per_node=2", BIN / "sslkit-train", "device=cpu", "trainer.progress=false"]
    done = subprocess.run([*launcher, "optim.lr=0", f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 0 and done.stderr.count("sslkit-train: error: optim.lr=0.0") == 1, done.stderr
    done = subprocess.run([*launcher, "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("figure:") == 1 and done.stdout.count("run directory:") == 1
