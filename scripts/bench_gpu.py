"""The sslkit step against a plain, tuned loop of the same model and loss, in one process
on one device.

    python scripts/bench_gpu.py [--experiment NAME] [--batch-size B] [--steps N] [--warmup W]
                                [--tiny] [-- OVERRIDES...]

On random images in the CIFAR-10 format (`data.root` of a temporary folder):

(a) sslkit: `sslkit.train.train` for W + N steps of `experiment=NAME` (default
    barlow_cifar10_resnet18), with views made on the device, once with spectrum=every_step
    and once with spectrum=off. Pairs/s = B / median step time over the last N steps, as
    the loop measures them (metrics.jsonl at trainer.log_every=1).
(b) where the time goes (spectrum off): the stages of `sslkit.step.Step` run one after
    another for N steps, each timed by CUDA events (the wall clock on the CPU): views,
    forward (method and loss), backward, optimizer; the spectrum is (a)'s on − off.
(c) reference: the same backbone and projector and the same loss module in a hand-written
    loop: bfloat16 autocast, channels_last, one `torch.compile` of model and loss, fused
    SGD (momentum 0.9), views made before timing. On the CPU: float32, not compiled.

FLOPs per step are counted by `torch.utils.flop_counter.FlopCounterMode` over one forward
and backward of (c); achieved TFLOP/s = FLOPs per step × steps/s, MFU = that over the
device's dense bfloat16 peak (PEAK_BF16, by device name). Every warm-up (compilation
included) is outside the timings. Peak memory is torch.cuda.max_memory_allocated per part.
`--tiny` (the default on the CPU) makes 8×8 views, a 64-wide projector and batch 16 for
a few steps, so that a test can call the script. The last line is the ratio of (a) with spectra to (c):

    ratio_vs_reference: X
"""

import argparse
import pickle
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs
from sslkit.records import read_metrics
from sslkit.run import resolve_device
from sslkit.step import Step
from sslkit.train import train

# dense bfloat16 tensor-core peak in FLOP/s, first match in the device name
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12}
TINY = ["augment.size=8", "projector.hidden_dims=[64]", "projector.out_dim=64"]  # 8×8 views, small head
QUIET = ["trainer.log_every=1", "trainer.progress=false", "trainer.report=false",
         "trainer.checkpoint_every=1000000", "trainer.max_epochs=null"]


def fake_cifar(root: Path, n: int) -> None:
    """`root/test_batch`: n random 32×32 RGB images in the CIFAR-10 pickle format."""
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
    (root / "test_batch").write_bytes(pickle.dumps(batch))


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def sslkit_pairs_per_s(cfg, run_dir: Path, warmup: int) -> float:
    """(a): train, then B / the median of the loop's own step times after the warm-up."""
    train(cfg, run_dir)
    rows = read_metrics(run_dir)
    return statistics.median(r["images_per_s"] for r in rows[warmup:])


class StageTimer:
    """Per-stage time: CUDA events on the device (read after one synchronisation at the
    end), the wall clock with a synchronisation per stage elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = []

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((name, event))
        else:
            self.marks.append((name, time.perf_counter()))

    def totals(self) -> dict[str, float]:
        """Seconds spent between each mark and the one before, summed by the later mark's name."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for (_, a), (name, b) in zip(self.marks, self.marks[1:]):
            if name != "start":
                out[name] = out.get(name, 0.0) + (a.elapsed_time(b) / 1e3 if self.cuda else b - a)
        return out


def breakdown(cfg, steps: int, warmup: int) -> dict[str, float]:
    """(b): seconds per step of each stage of sslkit's step, spectrum off."""
    device = resolve_device(cfg.device.value)
    step = Step.build(cfg, device)
    batches = step.data.batches(cfg.seed)
    timer = StageTimer(device)
    for t in range(warmup + steps):
        _, x, _ = next(batches)
        if t == warmup:
            timer = StageTimer(device)
        timer.mark("start")
        v1, v2 = step.views(x, t)
        timer.mark("views")
        _, out = step.forward(v1, v2)
        timer.mark("forward")
        finite = step.backward(out)
        timer.mark("backward")
        step.update(t, finite)
        timer.mark("optimizer")
        if device.type != "cuda":
            sync(device)
    return {k: v / steps for k, v in timer.totals().items()}


def reference(cfg, steps: int, warmup: int) -> tuple[float, float, float]:
    """(c): pairs/s, FLOPs per step and peak GiB of a plain tuned loop of the same model
    and loss (the modules `Step.build` makes, none of its machinery)."""
    device = resolve_device(cfg.device.value)
    step = Step.build(cfg, device)
    cuda = device.type == "cuda"
    net, loss_fn, b = step.net, step.loss_fn, step.data.batch_size
    if cuda:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, fused=True)
    x = next(step.data.batches(cfg.seed))[1]
    views = [step.augment(x, torch.Generator(device).manual_seed(i)) for i in range(4)]  # pre-made
    if cuda:
        views = [tuple(v.contiguous(memory_format=torch.channels_last) for v in pair) for pair in views]

    def loss_of(v1, v2):
        with torch.autocast("cuda", torch.bfloat16) if cuda else nullcontext():
            s = net(v1, v2)
        return loss_fn(s.z1.float(), s.z2.float(), **s.extra).loss

    with FlopCounterMode(display=False) as counter:
        loss_of(*views[0]).backward()
    flops = counter.get_total_flops()
    compiled = torch.compile(loss_of) if cuda else loss_of

    def one(i):
        optimizer.zero_grad(set_to_none=True)
        compiled(*views[i % len(views)]).backward()
        optimizer.step()

    for i in range(warmup):
        one(i)
    sync(device)
    reset_memory(device)
    start = time.perf_counter()
    for i in range(steps):
        one(i)
    sync(device)
    return b * steps / (time.perf_counter() - start), flops, peak_memory(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="barlow_cifar10_resnet18")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help="8x8 views, batch 16 (the default on the CPU)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    tiny = args.tiny or not torch.cuda.is_available()
    batch = args.batch_size or (16 if tiny else 256)
    steps, warmup = args.steps or (3 if tiny else 50), args.warmup or (2 if tiny else 15)

    register_configs()
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        measure(args, Path(tmp), tiny, batch, steps, warmup)


def measure(args: argparse.Namespace, root: Path, tiny: bool, batch: int, steps: int, warmup: int) -> None:
    """Write fake CIFAR under root, run the timings there and print the report."""
    fake_cifar(root, max(4 * batch, 64 if tiny else 8192))
    overrides = [f"experiment={args.experiment}", f"data.root={root}", "data.split=test",
                 f"data.batch_size={batch}", f"trainer.max_steps={warmup + steps}", *QUIET,
                 *(TINY if tiny else []), *args.overrides]
    def config(*extra: str):
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=[*overrides, *extra])

    device = resolve_device(config().device.value)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"config: {' '.join(overrides[:4])} {' '.join(args.overrides)}; {warmup} warm-up + {steps} timed steps")

    results = {}
    for spectrum in ("every_step", "off"):
        reset_memory(device)
        pairs = sslkit_pairs_per_s(config(f"spectrum={spectrum}"), root / f"run-{spectrum}", warmup)
        results[spectrum] = (pairs, peak_memory(device))
    off_cfg = config("spectrum=off")
    parts = breakdown(off_cfg, steps, warmup)
    ref_pairs, flops, ref_mem = reference(off_cfg, steps, warmup)

    peak = peak_flops(device)
    step_flops = flops  # per step of B pairs

    def line(label: str, pairs: float, mem: float) -> str:
        tflops = step_flops * pairs / batch / 1e12
        mfu = f", MFU {100 * tflops * 1e12 / peak:.1f} %" if peak else ""
        return (f"{label}: {pairs:,.5g} pairs/s ({1e3 * batch / pairs:.2f} ms/step), {tflops:.3g} TFLOP/s{mfu}, "
                f"peak memory {mem:.2f} GiB")

    print(line("sslkit, spectrum=every_step", *results["every_step"]))
    print(line("sslkit, spectrum=off", *results["off"]))
    print(line("reference (bf16, channels_last, compiled, fused SGD, pre-made views)"
               if device.type == "cuda" else "reference (fp32, eager, fused SGD, pre-made views)", ref_pairs, ref_mem))
    spectrum_ms = 1e3 * batch * (1 / results["every_step"][0] - 1 / results["off"][0])
    print("breakdown (ms per step, spectrum off): "
          + ", ".join(f"{k} {1e3 * v:.2f}" for k, v in parts.items())
          + f", sum {1e3 * sum(parts.values()):.2f}; spectrum (on - off) {spectrum_ms:.2f}")
    print(f"flops_per_step: {step_flops:.4g}")
    print(f"spectrum_on_off_ratio: {results['off'][0] / results['every_step'][0]:.3f}")
    print(f"ratio_vs_reference: {results['every_step'][0] / ref_pairs:.4f}")


if __name__ == "__main__":
    main()
