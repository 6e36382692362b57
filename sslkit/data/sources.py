"""The embedded sources: scikit-learn's digits and a Gaussian with a chosen spectrum."""

from enum import Enum

import torch

from sslkit.data.memory import InMemoryData
from sslkit.errors import ConfigError


HELD_OUT = 297  # the last 297 digits: the held-out split of every evaluation (sslkit.eval)


class DigitsSplit(str, Enum):
    all = "all"  # 1797 images, the held-out labels hidden (−1)
    train = "train"  # the first 1500
    test = "test"  # the last 297: the held-out split of every evaluation


def digits(batch_size: int, split: DigitsSplit = DigitsSplit.all, size: int = 8, channels: int = 1) -> InMemoryData:
    """scikit-learn's 1797 handwritten digits, 8×8 grey levels 0–16, as uint8 (N, 1, 8, 8)
    scaled to 0–255 (level·255/16, rounded). Ships with scikit-learn: nothing is downloaded.

    The last 297 digits are the held-out split on which every evaluation tests
    (split=test); split=train is the first 1500. split=all holds all 1797 images, with the
    labels of the held-out 297 hidden (−1, as STL-10's unlabeled images): self-supervised
    training may see those images, but no probe trains on their labels.

    `size` > 8 resizes them (bilinear, align_corners=False) to size × size and `channels`
    = 3 repeats the grey level in R, G and B: `size=32 channels=3` is a CIFAR-shaped set
    for the image networks."""
    split = str(getattr(split, "value", split))
    if size < 8 or channels not in (1, 3):
        raise ConfigError(f"data.size={size}, data.channels={channels} is not allowed: use a size >= 8 "
                          f"(pixels) and 1 or 3 channels.")
    from sklearn.datasets import load_digits  # here, not at the top: importing scikit-learn takes 2 s

    d = load_digits()
    x = torch.from_numpy(d.images * (255 / 16)).float().unsqueeze(1)
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.round().to(torch.uint8).expand(-1, channels, -1, -1).contiguous()
    y = torch.from_numpy(d.target).long()
    cut = len(x) - HELD_OUT
    if split == "train":
        x, y = x[:cut], y[:cut]
    elif split == "test":
        x, y = x[cut:], y[cut:]
    elif split == "all":
        y[cut:] = -1
    else:
        raise ConfigError(f"data.split={split} is not allowed for data=digits: use all (1797 images, the "
                          f"held-out labels hidden), train (the first {cut}) or test (the last {HELD_OUT}).")
    return InMemoryData(x, y, batch_size, name=f"data=digits (split={split})")


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
