"""Views per second of the `augment=simclr` preset on 32×32 images, in one process.

    python scripts/bench_augment.py [--rounds 5] [--seconds 3] [--batch 512]

Pipelines (both views of each image count):
  torchvision  the same recipe as a torchvision.transforms.v2 pipeline applied image by
               image in a DataLoader with one worker per CPU core (what SSL libraries do),
               and, for reference, in this process on one thread without a DataLoader
  sslkit       ImageViews on whole batches: eager and torch.compile'd, on the CPU with
               1 thread and with one per core, and on the GPU when there is one
  kornia       kornia.augmentation's batched pipeline, when kornia is installed

The pipelines take turns for --rounds rounds of about --seconds each, so that a slow
spell of a shared machine hits all of them. Each line gives the median views/s over the
rounds and the range; the last line is the median over rounds of the best sslkit CPU
pipeline's views/s divided by the torchvision DataLoader's in the same round.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from sslkit.augment import ImageViews, ViewSpec
from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs

SIZE = 32


def simclr_views() -> ImageViews:
    register_configs()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return instantiate(compose("train", overrides=["augment=simclr"]).augment)


def torchvision_pipeline(spec: ViewSpec, mean: list[float], std: list[float]) -> v2.Compose:
    """The recipe of `spec` as torchvision.transforms.v2, on uint8 (3, H, W) tensors."""
    k = spec.kernel_size(SIZE)
    return v2.Compose([
        v2.RandomResizedCrop(SIZE, scale=spec.crop_scale, ratio=spec.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(spec.flip_p),
        v2.RandomApply([v2.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)], p=spec.jitter_p),
        v2.RandomGrayscale(spec.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(k, sigma=spec.blur_sigma)], p=spec.blur_p),
        v2.RandomSolarize(round(255 * spec.solarize_threshold), p=spec.solarize_p),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


class TwoViewDataset(Dataset):
    def __init__(self, x: torch.Tensor, transforms: tuple[Callable, Callable]) -> None:
        self.x, self.transforms = x, transforms

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transforms[0](self.x[i]), self.transforms[1](self.x[i])


def time_loader(loader: DataLoader, batches: int) -> float:
    """views/s of `batches` batches, after the workers have started and delivered one."""
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _, (a, b) in zip(range(batches), it):
        n += len(a) + len(b)
    rate = n / (time.perf_counter() - start)
    del it  # stops the workers: they must not compete with the next pipeline
    return rate


def time_batched(fn: Callable, x: torch.Tensor, seconds: float, sync: Callable = lambda: None) -> float:
    g = torch.Generator(x.device).manual_seed(0)
    fn(x, g)
    sync()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a, b = fn(x, g)
        n += len(a) + len(b)
    sync()
    return n / (time.perf_counter() - start)


def time_per_image(transforms: tuple[Callable, Callable], x: torch.Tensor, seconds: float) -> float:
    """views/s of the torchvision pipeline image by image in this process, on one thread."""
    torch.set_num_threads(1)
    try:
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            img = x[n % len(x)]
            transforms[0](img), transforms[1](img)
            n += 1
        return 2 * n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)


def kornia_pipeline(spec: ViewSpec, mean: list[float], std: list[float]) -> Callable | None:
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    k = spec.kernel_size(SIZE)
    aug = torch.nn.Sequential(
        K.RandomResizedCrop((SIZE, SIZE), scale=spec.crop_scale, ratio=spec.crop_ratio),
        K.RandomHorizontalFlip(p=spec.flip_p),
        K.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue, p=spec.jitter_p),
        K.RandomGrayscale(p=spec.grayscale_p),
        K.RandomGaussianBlur((k, k), spec.blur_sigma, p=spec.blur_p),
        K.Normalize(torch.tensor(mean), torch.tensor(std)),
    )
    return lambda x, g: (aug(x.float() / 255), aug(x.float() / 255))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    views = simclr_views()
    mean, std = views.mean.tolist(), views.std.tolist()
    x = torch.randint(0, 256, (8192, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = x[: args.batch]

    tv = [torchvision_pipeline(s, mean, std) for s in views.views]
    loader = DataLoader(TwoViewDataset(x, tuple(tv)), batch_size=args.batch, shuffle=True, num_workers=cores,
                        drop_last=True)
    tv_batches = max(2, round(args.seconds * 2000 / args.batch))  # ≈ --seconds at ~1000 views/s per core

    compiled = ImageViews(*views.views, mean=mean, std=std, compile=True)
    start = time.perf_counter()
    compiled(batch, torch.Generator().manual_seed(0))
    compile_s = time.perf_counter() - start

    def on_threads(fn: Callable, n: int) -> Callable:
        def run(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            torch.set_num_threads(n)
            try:
                return fn(x, g)
            finally:
                torch.set_num_threads(cores)
        return run

    pipelines: dict[str, Callable[[], float]] = {
        f"torchvision v2 per image, DataLoader, {cores} workers": lambda: time_loader(loader, tv_batches),
        "torchvision v2 per image, in process, 1 thread": lambda: time_per_image(tuple(tv), x, args.seconds),
    }
    for n in sorted({1, cores}):
        pipelines[f"sslkit eager, cpu, {n} thread(s)"] = lambda n=n: time_batched(on_threads(views, n), batch, args.seconds)
        pipelines[f"sslkit compiled, cpu, {n} thread(s)"] = lambda n=n: time_batched(on_threads(compiled, n), batch,
                                                                                       args.seconds)
    if torch.cuda.is_available():
        gpu_batch = batch.cuda()
        gpu_compiled = ImageViews(*views.views, mean=mean, std=std, compile=True)
        for name, fn in [("eager", views), ("compiled", gpu_compiled)]:
            pipelines[f"sslkit {name}, {torch.cuda.get_device_name()}"] = \
                lambda fn=fn: time_batched(fn, gpu_batch, args.seconds, torch.cuda.synchronize)
    if (kornia := kornia_pipeline(views.views[0], mean, std)) is not None:
        pipelines["kornia.augmentation, cpu (no solarize)"] = lambda: time_batched(kornia, batch, args.seconds)

    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for name, measure in pipelines.items():
            rates[name].append(measure())

    print(f"augment=simclr, {SIZE}x{SIZE} uint8 images, batches of {args.batch}, {args.rounds} rounds; "
          f"torch.compile took {compile_s:.0f} s before the first batch")
    for name, r in rates.items():
        print(f"{name:55s} {statistics.median(r):9.0f} views/s  (range {min(r):.0f}-{max(r):.0f})")
    tv_name = next(iter(rates))
    cpu = [name for name in rates if name.startswith("sslkit") and ", cpu," in name]
    best = max(cpu, key=lambda name: statistics.median(rates[name]))
    ratios = [a / b for a, b in zip(rates[best], rates[tv_name])]
    one = [a / b for a, b in zip(rates[best], rates["torchvision v2 per image, in process, 1 thread"])]
    print(f"best sslkit cpu pipeline: {best}; per-round speedups {', '.join(f'{r:.1f}' for r in ratios)} "
          f"(against torchvision in process on 1 thread: median {statistics.median(one):.1f})")
    print(f"speedup_vs_torchvision: {statistics.median(ratios):.1f}")


if __name__ == "__main__":
    main()
