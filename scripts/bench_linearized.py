"""Cost of the linearized network against the plain one: time and memory of forward +
backward on the same batch, in one process, printed as ratios. The last line is the
ResNet-18's time ratio (linearized / plain):

    linearized_time_ratio: X

    python scripts/bench_linearized.py [--device cpu|cuda] [--repeats N]

Two models: a CIFAR-stem ResNet-18 on a batch of 3×32×32 images, and the NTK-parameterized
MLP 64 → 128 → 128 → 8 of `experiment=stepwise_ntk_digits` on all 1797 digits. Plain and
linearized runs alternate, so machine load affects both alike; the median is reported.
Memory is the peak allocated on CUDA; on CPU, where PyTorch keeps no allocator
statistics, it is the bytes of the tensors saved for backward (the activations), the part
of the memory that grows with the batch.
"""

import argparse
import statistics
import time

import torch
from torch import nn

from sslkit.models import MLP, Linearized, resnet


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).square().mean().backward()
    return total


def peak_bytes(model: nn.Module, x: torch.Tensor) -> int:
    if x.device.type != "cuda":
        return saved_bytes(model, x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model(x).square().mean().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def step_seconds(model: nn.Module, x: torch.Tensor) -> float:
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x).square().mean().backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(name: str, plain: nn.Module, linear: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Print the timings and memory of the pair; return the time ratio linearized / plain."""
    for model in (plain, linear):  # warm-up
        step_seconds(model, x)
    times: dict[str, list[float]] = {"plain": [], "linearized": []}
    for _ in range(repeats):
        times["plain"].append(step_seconds(plain, x))
        times["linearized"].append(step_seconds(linear, x))
    t_plain, t_lin = (statistics.median(times[k]) for k in ("plain", "linearized"))
    m_plain, m_lin = peak_bytes(plain, x), peak_bytes(linear, x)
    memory = "peak allocated" if x.device.type == "cuda" else "saved for backward"
    print(f"{name}: forward+backward {t_plain * 1e3:.1f} ms plain, {t_lin * 1e3:.1f} ms linearized "
          f"-> time ratio {t_lin / t_plain:.2f}x; {memory} {m_plain / 2**20:.1f} MiB plain, "
          f"{m_lin / 2**20:.1f} MiB linearized -> memory ratio {m_lin / m_plain:.2f}x")
    return t_lin / t_plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="ResNet-18 batch size")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    def pair(build) -> tuple[nn.Module, nn.Module]:
        return build().to(device), Linearized(build(), center=True, offset_scale=1e-3).to(device)

    x = torch.randn(args.batch, 3, 32, 32, device=device)
    ratio = compare(f"resnet18 (CIFAR stem), batch {args.batch}", *pair(lambda: resnet((3, 32, 32), "resnet18")),
                    x, args.repeats)
    x = torch.randn(1797, 64, device=device)
    compare("mlp ntk 64-128-128-8, batch 1797",
            *pair(lambda: MLP((64,), 128, 2, 8, parameterization="ntk", bias_scale=0.1)), x,
            20 * args.repeats)  # milliseconds per step: more repeats for a stable median
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"linearized_time_ratio: {ratio:.2f}")  # the ResNet-18's, the model of the <= 3x target


if __name__ == "__main__":
    main()
