"""The cost of the per-step spectrum monitor: the same training with spectrum=off and with
spectrum=every_step, alternated in one process, several times; or (`monitor`) the monitor
alone on random embeddings.

    python scripts/bench_spectrum.py [CASE] [--steps N] [--repeats R] [--observer WHERE] [-- OVERRIDES...]
    python scripts/bench_spectrum.py monitor [--batch 256] [--dim 2048] [--feat-dim 512]
                                             [--device cuda] [--step-ms 12.5] [--exact-max R]

CASE is `digits` (the default experiment), `resnet18` (ResNet-18, CIFAR stem, 2048-d
projector, batch 32, on 32×32 random images written in the CIFAR-10 format: the step costs
what a CIFAR step costs), `mlp2048` (an MLP of width 2048 with a 2048-d projector, batch 32)
or `tracked` (as mlp2048 at batch 256: C has rank ≤ 512; with spectrum.exact_max=256
its top eigenvalues are tracked by subspace iteration, with the default 512 decomposed
exactly).

`--observer thread|training` puts the recording in its background thread or in the
training thread whatever the cores (`auto`, the default, lets sslkit choose:
sslkit.records.observer.core_to_spare).

`monitor` times `SpectrumMonitor` with the default matrices (cov, xcorr with Barlow Twins'
batch-normalised view, feat_cov) on random float32 embeddings (batch × dim) and features
(batch × feat-dim) of two correlated views, on the given device, as the observer runs it:
per step, the host time of `observe` in the calling thread (launches only on CUDA, on a
side stream), the device time of its work (CUDA events), and the host time of `record`
(the observer thread's share: eigenvalues, summaries, files). It prints each as a median
over steps (warm-up excluded) and the fraction of a training step of `--step-ms` ms (the
tuned BT ResNet-18 step at batch 256 on an H100, 256/20 525 pairs/s, by default); the last
line is

    monitor_fraction: F     (host time in the training thread / step)

A step's time is the loop's own measurement (batch size / images_per_s in metrics.jsonl at
trainer.log_every=1): with the monitor on it includes any wait for the background thread,
whose queue holds at most 8 steps. Per repeat the script prints the median and mean
step time of each mode, their ratios, and the ratio of the process's CPU time for the
whole run (the extra work, whichever core did it; on a shared machine it is steadier than
the wall clock). The last line is the median over repeats of the ratio of median step
times:

    spectrum_overhead: R

`methods` compares the ways to get the top `--top-k` eigenvalues of C = (aᵀb + bᵀa)/2N
(Barlow Twins' batch-normalised views) on a stream of embeddings with a new batch every
step: the monitor's warm-started subspace iteration (`--iters`), block Krylov with warm
starts (`--blocks`), and the monitor's exact path (the 2N×2N form from a QR, as used when
2N ≤ spectrum.exact_max). The stream is `flat` (`flat_stream`: the flat spectrum of a
network at initialisation, at `--batch`, `--dim`) or an .npy file of a training run
written by `capture`. For each method it prints the largest error max_i|θ_i − λ_i|/|λ₁|
over the steps, against torch.linalg.eigvalsh of each step's D×D matrix, and its median
time per step (in this process, after the first step):

    python scripts/bench_spectrum.py methods [--stream flat|PATH.npy] [--steps 20] [--batch 256]
                                             [--dim 2048] [--top-k 64] [--iters 2 8 32] [--blocks 2 4]
    python scripts/bench_spectrum.py capture CASE --steps 300 --batch 32 --out PATH.npy [OVERRIDES...]

`capture` trains CASE at `--batch` with the monitor on and writes the embeddings z1, z2 it
observed at each step to PATH.npy (steps, 2, batch, D), float32, as training goes; its run
directory is PATH without the suffix. `stored` then checks what that run's monitor stored:
every value of `xcorr` at every step against torch.linalg.eigvalsh of that step's D×D C
(float64, from the stream through the run's own loss's `spectrum_view`), and prints the
largest error over the steps relative to |λ₁|:

    python scripts/bench_spectrum.py stored PATH.npy
"""

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs
from sslkit.records import observer, read_metrics
from sslkit.train import train

CASES = {
    "digits": ["experiment=stepwise_digits"],
    "resnet18": ["~experiment", "backbone=resnet18", "projector=mlp", "projector.hidden_dims=[2048]", "projector.out_dim=2048",
                 "data=cifar10", "data.split=test", "data.batch_size=32", "augment=cifar", "loss=barlow_twins"],
    "mlp2048": ["~experiment", "backbone=mlp", "backbone.width=2048", "projector=mlp", "projector.hidden_dims=[2048]",
                "projector.out_dim=2048", "data.batch_size=32", "loss=barlow_twins"],
    "tracked": ["~experiment", "backbone=mlp", "backbone.width=2048", "projector=mlp", "projector.hidden_dims=[2048]",
                "projector.out_dim=2048", "data.batch_size=256", "loss=barlow_twins"],
}
QUIET = ["trainer.log_every=1", "trainer.progress=false", "trainer.report=false", "trainer.checkpoint_every=1000000"]


def fake_cifar(root: Path, n: int = 512) -> None:
    """`root/test_batch`: n random 32×32 RGB images in the CIFAR-10 pickle format."""
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
    (root / "test_batch").write_bytes(pickle.dumps(batch))


def step_times(run_dir: Path, batch_size: int, skip: int) -> np.ndarray:
    """Seconds per step as the loop measured them, without the first `skip` steps."""
    rows = read_metrics(run_dir)
    return np.array([batch_size / r["images_per_s"] for r in rows[skip:]])


def bench_monitor(batch: int, dim: int, feat_dim: int, device: str, step_ms: float, steps: int,
                  exact_max: int | None = None) -> None:
    """The monitor alone (module docstring, `monitor`)."""
    from sslkit.losses import BarlowTwinsLoss
    from sslkit.spectrum import SpectrumMonitor

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    g = torch.Generator(dev).manual_seed(0)
    mix = torch.randn(dim, dim, generator=g, device=dev) * torch.logspace(0, -3, dim, device=dev)
    feats = torch.randn(feat_dim, feat_dim, generator=g, device=dev) * torch.logspace(0, -3, feat_dim, device=dev)
    batches = []
    for _ in range(8):  # a few distinct batches in turn
        x = torch.randn(batch, dim, generator=g, device=dev)
        y = torch.randn(batch, feat_dim, generator=g, device=dev)
        noise = lambda t: 0.3 * torch.randn(t.shape, generator=g, device=dev)  # noqa: E731
        batches.append((x @ mix, (x + noise(x)) @ mix, y @ feats, (y + noise(y)) @ feats))
    stream = torch.cuda.Stream(dev) if cuda else None
    host, device_ms, record_ms = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        more = {} if exact_max is None else {"exact_max": exact_max}
        monitor = SpectrumMonitor(tmp, ["cov", "xcorr", "feat_cov"], view=BarlowTwinsLoss().spectrum_view, **more)
        for step in range(steps):
            z1, z2, h1, h2 = batches[step % len(batches)]
            if cuda:
                stream.wait_stream(torch.cuda.current_stream(dev))
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            tick = time.perf_counter()
            if cuda:
                with torch.cuda.stream(stream):
                    start.record()
                    chunk = monitor.observe(step, z1, z2, h1, h2)
                    end.record()
            else:
                chunk = monitor.observe(step, z1, z2, h1, h2)
            host.append(time.perf_counter() - tick)
            if cuda:
                end.synchronize()
                device_ms.append(start.elapsed_time(end) / 1e3)
            if chunk is not None:
                tick = time.perf_counter()
                monitor.record(chunk)
                record_ms.append((time.perf_counter() - tick) / len(chunk.steps))
        monitor.close()
        print(f"tracked: {[n for n, p in monitor.plans.items() if p.tracked]}; chunk {monitor.chunk} steps")
    skip = steps // 4
    med = lambda xs: 1e3 * float(np.median(xs[skip:] if len(xs) > 2 * skip else xs))  # noqa: E731
    print(f"monitor on {dev} ({torch.cuda.get_device_name(dev) if cuda else 'CPU'}), batch {batch}, dim {dim}, "
          f"feat_dim {feat_dim}, {steps} steps (first {skip} left out)")
    print(f"training thread, host: {med(host):.3f} ms/step")
    if cuda:
        print(f"device (side stream): {med(device_ms):.3f} ms/step")
    print(f"observer thread, host (record): {med(record_ms):.3f} ms/step")
    print(f"monitor_fraction: {med(host) / step_ms:.4f}")


def capture(case: str, steps: int, batch: int, out: Path, overrides: list[str]) -> None:
    """Train `case` for `steps` steps at `batch` with the monitor on, as configured by
    `overrides`, and write the embeddings the monitor observes each step, z1 and z2
    (float32, as the projector gives them), to `out`, an .npy array (steps, 2, batch, D)
    filled as training goes (a stopped run keeps its steps)."""
    from sslkit.spectrum import SpectrumMonitor

    register_configs()
    stream = None
    observe = SpectrumMonitor.observe

    def observe_and_keep(self, step, z1, z2, h1, h2):
        nonlocal stream
        if stream is None:
            stream = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(steps, 2, *z1.shape))
        stream[step, 0], stream[step, 1] = z1.float().cpu().numpy(), z2.float().cpu().numpy()
        return observe(self, step, z1, z2, h1, h2)

    SpectrumMonitor.observe = observe_and_keep
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*CASES[case], *QUIET, f"trainer.max_steps={steps}", f"data.batch_size={batch}",
                     "spectrum=every_step", *overrides]
        if case == "resnet18":
            fake_cifar(Path(tmp))
            overrides.append(f"data.root={tmp}")
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        run_dir = out.with_suffix("")
        print(f"case {case}: {' '.join(overrides)}; run directory {run_dir}", flush=True)
        train(cfg, run_dir)
    stream.flush()


def stored_errors(stream_path: Path) -> None:
    """max_i |stored_i − λ_i| / |λ₁| per step of a `capture` run, λ the eigenvalues of
    C = (ẑ₁ᵀẑ₂ + ẑ₂ᵀẑ₁)/2N of that step's captured embeddings, ẑ the loss's spectrum_view."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sslkit import layout
    from sslkit.spectrum.store import load

    stream, run_dir = np.load(stream_path, mmap_mode="r"), stream_path.with_suffix("")
    view = instantiate(OmegaConf.load(run_dir / layout.CONFIG).loss).spectrum_view
    spectra = load(run_dir)
    errors = []
    for step, stored in zip(spectra["step"], spectra["xcorr"]):
        z1, z2 = (view(torch.from_numpy(np.array(stream[step, v])).double()) for v in (0, 1))
        exact = torch.linalg.eigvalsh((z1.T @ z2 + z2.T @ z1) / (2 * len(z1))).flip(0).numpy()
        k = int(np.isfinite(stored).sum())
        errors.append(np.abs(stored[:k] - exact[:k]).max() / abs(exact[0]))
    worst = int(np.argmax(errors))
    print(f"{len(errors)} steps, {k} values per step: largest error {errors[worst]:.3g}·|λ₁| "
          f"(step {spectra['step'][worst]}), median {np.median(errors):.3g}·|λ₁|")
    print(f"stored_error: {errors[worst]:.3g}")


def flat_stream(steps: int, batch: int, dim: int, seed: int = 0, decay: float = 0.5, noise: float = 0.3):
    """(z1, z2) float32 pairs of two views, a new batch every step: z1 = xΛ, z2 = (x + εn)Λ
    with x, n standard normal (batch × dim), ε = `noise` and Λ = diag(k^−decay): after
    Barlow Twins' batch normalisation a flat spectrum whose top eigenvectors are redrawn by
    every batch (at batch 256, dim 2048: λ₆₄ ≈ 0.7·λ₁), as a ResNet-18's at initialisation."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.arange(1, dim + 1, dtype=torch.float32) ** -decay
    for _ in range(steps):
        x = torch.randn(batch, dim, generator=g)
        yield x * scales, (x + noise * torch.randn(batch, dim, generator=g)) * scales


REFERENCE = "exact, D×D (the reference)"


def method_errors(stream, candidates: dict, top_k: int) -> dict[str, tuple[float, float]]:
    """For each candidate (a name → function (step, a, b) → top eigenvalues of the
    symmetrised cross-correlation of the batch-normalised views a, b), its largest error
    max_i |θ_i − λ_i|/|λ₁| over the stream against torch.linalg.eigvalsh of the D×D matrix
    written out, and its median time per step (after the first), the reference's too."""
    from sslkit.losses import BarlowTwinsLoss

    view = BarlowTwinsLoss().spectrum_view
    errors = {name: [] for name in [*candidates, REFERENCE]}
    times = {name: [] for name in [*candidates, REFERENCE]}
    for step, (z1, z2) in enumerate(stream):
        tick = time.perf_counter()
        a, b = view(z1.double()), view(z2.double())
        cross = a.T @ b / len(a)
        exact = torch.linalg.eigvalsh((cross + cross.T) / 2).flip(0)[:top_k].numpy()
        times[REFERENCE].append(time.perf_counter() - tick)
        errors[REFERENCE].append(0.0)
        for name, method in candidates.items():
            tick = time.perf_counter()
            top = np.asarray(method(step, z1, z2))[:top_k]
            times[name].append(time.perf_counter() - tick)
            errors[name].append(float(np.abs(top - exact).max() / abs(exact[0])))
        print(f"step {step}: " + ", ".join(f"{n} {e[-1]:.2g}" for n, e in errors.items()), flush=True)
    return {name: (max(errors[name]), float(np.median(times[name][1:] or times[name]))) for name in times}


def bench_methods(stream_name: str, steps: int, batch: int, dim: int, top_k: int, iters: list[int],
                  blocks: list[int]) -> None:
    """`methods`: the monitor's tracked and exact paths, and block Krylov, on one stream
    (module docstring)."""
    from sslkit.losses import BarlowTwinsLoss
    from sslkit.spectrum import SpectrumMonitor, load

    if stream_name == "flat":
        stream = list(flat_stream(steps, batch, dim))
    else:
        saved = np.load(stream_name, mmap_mode="r")[:steps]
        stream = [(torch.from_numpy(np.array(s[0])), torch.from_numpy(np.array(s[1]))) for s in saved]
    batch, dim = stream[0][0].shape
    rank = 2 * batch
    view = BarlowTwinsLoss().spectrum_view
    with tempfile.TemporaryDirectory() as tmp:
        def monitored(name: str, **kwargs):
            """The monitor's stored xcorr row: exact_max < 2N tracks, ≥ 2N decomposes exactly."""
            monitor = SpectrumMonitor(Path(tmp) / name, ["xcorr"], top_k=top_k, full_every=10 ** 9, chunk=1,
                                      view=view, **kwargs)
            return lambda step, z1, z2: (monitor(step, z1, z2, z1, z2), monitor.latest["xcorr"])[1]

        candidates = {f"subspace, {q} iterations": monitored(f"s{q}", exact_max=0, iters=q) for q in iters}
        candidates.update({f"block Krylov, {q} blocks": block_krylov(top_k, 16, q, view) for q in blocks})
        candidates[f"exact, {rank}×{rank} form (QR)"] = monitored("exact", exact_max=rank)
        result = method_errors(stream, candidates, top_k)
    print(f"stream {stream_name}: {len(stream)} steps, batch {batch}, dim {dim}, top_k {top_k}; "
          f"{torch.get_num_threads()} intra-op threads")
    print("| method | largest error / λ₁ | time per step |")
    print("|---|---|---|")
    for name, (err, seconds) in result.items():
        print(f"| {name} | {err:.2g} | {seconds * 1e3:.1f} ms |")


def block_krylov(top_k: int, oversample: int, blocks: int, view):
    """Warm-started block Krylov with Rayleigh–Ritz: the basis of [V, CV, …, C^q V] (V the
    last step's top k + oversample Ritz vectors, orthonormalised by QR), C's top Ritz values
    in it."""
    from sslkit.spectrum import factored

    basis = None

    def top(step, z1, z2):
        nonlocal basis
        m = factored("xcorr", view(z1.double()), view(z2.double()))
        if basis is None:
            basis = m.eigh()[1][:, : top_k + oversample]
        krylov = [basis]
        for _ in range(blocks):
            krylov.append(m.matmul(krylov[-1]))
            krylov[-1] = torch.linalg.qr(krylov[-1]).Q
        q = torch.linalg.qr(torch.cat(krylov, dim=1)).Q
        theta, u = torch.linalg.eigh(q.T @ m.matmul(q))
        basis = (q @ u.flip(1))[:, : top_k + oversample]
        return theta.flip(0).numpy()

    return top


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "methods":
        parser = argparse.ArgumentParser(description="accuracy and cost of the ways to get C's top eigenvalues")
        parser.add_argument("mode", choices=["methods"])
        parser.add_argument("--stream", default="flat", help="flat, or an .npy file written by `capture`")
        parser.add_argument("--steps", type=int, default=20)
        parser.add_argument("--batch", type=int, default=256)
        parser.add_argument("--dim", type=int, default=2048)
        parser.add_argument("--top-k", type=int, default=64)
        parser.add_argument("--iters", type=int, nargs="*", default=[2, 8, 32])
        parser.add_argument("--blocks", type=int, nargs="*", default=[2, 4])
        a = parser.parse_args()
        return bench_methods(a.stream, a.steps, a.batch, a.dim, a.top_k, a.iters, a.blocks)
    if len(sys.argv) > 1 and sys.argv[1] == "capture":
        parser = argparse.ArgumentParser(description="embeddings of a training run, step by step")
        parser.add_argument("mode", choices=["capture"])
        parser.add_argument("case", choices=sorted(CASES))
        parser.add_argument("--steps", type=int, default=300)
        parser.add_argument("--batch", type=int, default=64)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("overrides", nargs="*")
        a = parser.parse_intermixed_args()
        return capture(a.case, a.steps, a.batch, a.out, a.overrides)
    if len(sys.argv) > 1 and sys.argv[1] == "stored":
        parser = argparse.ArgumentParser(description="the values a captured run's monitor stored against the exact ones")
        parser.add_argument("mode", choices=["stored"])
        parser.add_argument("stream", type=Path, help="the .npy file written by `capture`")
        return stored_errors(parser.parse_args().stream)
    if len(sys.argv) > 1 and sys.argv[1] == "monitor":
        parser = argparse.ArgumentParser(description="the spectrum monitor alone on random embeddings")
        parser.add_argument("mode", choices=["monitor"])
        parser.add_argument("--batch", type=int, default=256)
        parser.add_argument("--dim", type=int, default=2048)
        parser.add_argument("--feat-dim", type=int, default=512)
        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        parser.add_argument("--step-ms", type=float, default=1e3 * 256 / 20525)
        parser.add_argument("--steps", type=int, default=200)
        parser.add_argument("--exact-max", type=int, default=None, help="spectrum.exact_max (default: the monitor's)")
        a = parser.parse_args()
        return bench_monitor(a.batch, a.dim, a.feat_dim, a.device, a.step_ms, a.steps, a.exact_max)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", nargs="?", default="digits", choices=sorted(CASES))
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: per case)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--observer", choices=["auto", "thread", "training"], default="auto",
                        help="where the recording runs (module docstring)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for both modes")
    args = parser.parse_args()
    if args.observer != "auto":
        observer.core_to_spare = lambda device: args.observer == "thread"
    steps = args.steps or {"digits": 600, "resnet18": 40, "mlp2048": 60, "tracked": 30}[args.case]
    skip = max(2, steps // 10)  # warm-up steps left out of the statistics

    register_configs()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*CASES[args.case], *QUIET, f"trainer.max_steps={steps}", *args.overrides]
        if args.case == "resnet18":
            fake_cifar(Path(tmp))
            overrides.append(f"data.root={tmp}")
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            configs = {mode: compose("train", overrides=[*overrides, f"spectrum={mode}"])
                       for mode in ("off", "every_step")}
        print(f"case {args.case}: {' '.join(overrides)}; {steps} steps per run, first {skip} left out; "
              f"{torch.get_num_threads()} intra-op threads, observer {args.observer}")
        for repeat in range(args.repeats):
            order = ("off", "every_step") if repeat % 2 == 0 else ("every_step", "off")
            result = {}
            for mode in order:
                run_dir = Path(tmp) / f"{repeat}-{mode}"
                start, cpu = time.perf_counter(), time.process_time()
                train(configs[mode], run_dir)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                times = step_times(run_dir, configs[mode].data.batch_size, skip)
                result[mode] = (float(np.median(times)), float(times.mean()), wall, cpu)
            (off_med, off_mean, off_wall, off_cpu), (on_med, on_mean, on_wall, on_cpu) = \
                result["off"], result["every_step"]
            ratios.append(on_med / off_med)
            print(f"repeat {repeat}: step median off {off_med * 1e3:.2f} ms, on {on_med * 1e3:.2f} ms "
                  f"(ratio {on_med / off_med:.3f}); mean ratio {on_mean / off_mean:.3f}; whole run: "
                  f"wall ratio {on_wall / off_wall:.3f}, CPU-time ratio {on_cpu / off_cpu:.3f}", flush=True)
    print(f"ratios over repeats: min {min(ratios):.3f}, median {statistics.median(ratios):.3f}, max {max(ratios):.3f}")
    print(f"spectrum_overhead: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    sys.exit(main())
