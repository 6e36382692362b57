"""The embedded sources: scikit-learn's digits, MNIST-1D and a Gaussian with a chosen spectrum."""

import importlib.util
import random
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sslkit.data.memory import InMemoryData
from sslkit.errors import ConfigError


HELD_OUT = 297  # the last 297 digits: the held-out split of every evaluation (sslkit.eval)


class Split(str, Enum):
    all = "all"  # every sample, the labels of the held-out ones hidden (−1)
    train = "train"  # the samples before the held-out ones
    test = "test"  # the last samples: the held-out split of every evaluation (sslkit.eval)


def _split(x: Tensor, y: Tensor, held_out: int, split: Split | str, batch_size: int, name: str) -> InMemoryData:
    """data=`name` with the samples of `split`, the last `held_out` of (x, y) being the
    held-out ones."""
    split, cut = str(getattr(split, "value", split)), len(x) - held_out
    if split == "train":
        x, y = x[:cut], y[:cut]
    elif split == "test":
        x, y = x[cut:], y[cut:]
    elif split == "all":
        y = torch.cat([y[:cut], torch.full((held_out,), -1)])
    else:
        raise ConfigError(f"data.split={split} is not allowed for data={name}: use all ({len(x)} samples, the "
                          f"held-out labels hidden), train (the first {cut}) or test (the last {held_out}).")
    return InMemoryData(x, y, batch_size, name=f"data={name} (split={split})")


def digits(batch_size: int, split: Split = Split.all, size: int = 8, channels: int = 1) -> InMemoryData:
    """scikit-learn's 1797 handwritten digits, 8×8 grey levels 0–16, as uint8 (N, 1, 8, 8)
    scaled to 0–255 (level·255/16, rounded). Ships with scikit-learn: nothing is downloaded.

    The last 297 digits are the held-out split on which every evaluation tests
    (split=test); split=train is the first 1500. split=all holds all 1797 images, with the
    labels of the held-out 297 hidden (−1, as STL-10's unlabeled images): self-supervised
    training may see those images, but no probe trains on their labels.

    `size` > 8 resizes them (bilinear, align_corners=False) to size × size and `channels`
    = 3 repeats the grey level in R, G and B: `size=32 channels=3` is a CIFAR-shaped set
    for the image networks.

    Args:
        batch_size: Images per training step (1797: the whole set every step).
        split: all (1797, held-out labels hidden), train (the first 1500) or test (the last 297).
        size: Side in pixels (≥ 8); larger sizes are resized bilinearly.
        channels: 1 (grey) or 3 (the grey level repeated in R, G and B).
    """
    if size < 8 or channels not in (1, 3):
        raise ConfigError(f"data.size={size}, data.channels={channels} is not allowed: use a size >= 8 "
                          f"(pixels) and 1 or 3 channels.")
    images, target = digits_arrays()
    x = torch.from_numpy(images * (255 / 16)).float().unsqueeze(1)
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.round().to(torch.uint8).expand(-1, channels, -1, -1).contiguous()
    y = torch.from_numpy(target).long()
    return _split(x, y, HELD_OUT, split, batch_size, "digits")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The images (1797, 8, 8) and labels of `sklearn.datasets.load_digits`, read from the
    file it reads (sklearn/datasets/data/digits.csv.gz: one row per image, 64 grey levels
    then the label), found without importing scikit-learn (≈ 1 s of a run's start)."""
    package = importlib.util.find_spec("sklearn").submodule_search_locations[0]
    rows = np.loadtxt(Path(package) / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(int)


@lru_cache(maxsize=2)
def _mnist1d(train: int, test: int, seed: int) -> tuple[Tensor, Tensor]:
    """mnist1d.data.make_dataset's (x, y), training samples first, generated once per process.
    It draws from numpy's and Python's global generators: their states are restored after."""
    from mnist1d.data import get_dataset_args, make_dataset  # imports scipy: ~1 s

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = train + test, train / (train + test), seed
    states = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
    x = torch.from_numpy(np.concatenate([d["x"], d["x_test"]])).float()
    return x, torch.from_numpy(np.concatenate([d["y"], d["y_test"]])).long()


def mnist1d(batch_size: int, split: Split = Split.all, train: int = 4000, test: int = 1000,
            seed: int = 42) -> InMemoryData:
    """MNIST-1D (Greydanus 2020, the `mnist1d` package): 1-D signals of 40 points, float32
    (N, 40), made from ten digit templates by random padding, scaling, translation, shear and
    noise, then standardised over the whole set; ten balanced classes. Generated here
    (`mnist1d.data.make_dataset`, ~0.6 ms a sample), nothing is downloaded. The defaults
    are the package's own arguments (4000 + 1000 samples, seed 42); `test` can be as large
    as a held-out accuracy needs (one sample is 100/test points: 0.01 at 10 000).

    The last `test` samples are the held-out split (split=test), the first `train` are
    split=train, and split=all holds both with the held-out labels hidden (−1), as for
    data=digits.

    Args:
        batch_size: Signals per training step.
        split: all (held-out labels hidden), train (the first `train`) or test (the last `test`).
        train: Number of training samples generated (≥ 10).
        test: Number of held-out samples generated (≥ 10).
        seed: Seed of the generator of the data set (the package's own default, 42).
    """
    if train < 10 or test < 10:
        raise ConfigError(f"data.train={train}, data.test={test} is not allowed: MNIST-1D draws the same "
                          f"number of samples of each of its 10 classes; use at least 10 of each split.")
    return _split(*(t.clone() for t in _mnist1d(train, test, seed)), test, split, batch_size, "mnist1d")


def synthetic(
    batch_size: int,
    n: int,
    dim: int,
    spectrum: list[float] | None = None,
    decay: float = 0.5,
    seed: int = 0,
) -> InMemoryData:
    """x ~ N(0, diag(σ²)), float32 (n, dim), for theory checks.

    σ² is `spectrum` when given (length `dim`, all > 0), else the power law
    σ²_k = 2^(−decay·k), k = 0 … dim−1 (decay = 0.5 gives γ_k = 2^(−k/2) of docs/theory.md).
    Labels are all zero: the source has no classes.

    Args:
        batch_size: Samples per training step.
        n: Number of samples drawn.
        dim: Dimension of each sample.
        spectrum: The `dim` variances σ²_k (null: the power law of `decay`).
        decay: Exponent of the power law σ²_k = 2^(−decay·k) used when `spectrum` is null.
        seed: Seed of the draw of the samples.
    """
    if spectrum is None:
        variances = 2.0 ** (-decay * torch.arange(dim, dtype=torch.float64))
    else:
        variances = torch.tensor(list(spectrum), dtype=torch.float64)
        if variances.shape != (dim,) or not bool((variances > 0).all()):
            raise ConfigError(
                f"data.spectrum must list data.dim={dim} positive variances, got "
                f"{list(spectrum)} ({len(variances)} values). Set data.dim={len(variances)}, "
                f"or fix data.spectrum, or drop it to use the power law data.decay."
            )
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * variances.sqrt()
    return InMemoryData(x.float(), torch.zeros(n, dtype=torch.long), batch_size, name="data=synthetic")
