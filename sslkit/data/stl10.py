"""STL-10 from the official binary files (stl10_binary.tar.gz).

An X file is a raw sequence of uint8 images of 3·96·96 = 27 648 bytes; each image holds
its red, green and blue planes, and each plane is stored column by column (column-major,
as in the official MATLAB-style reader, which reshapes to (N, 3, 96, 96) and transposes),
so a plane read as (96, 96) is transposed. A y file holds one uint8 label 1–10 per image;
sslkit uses 0–9, and −1 for the unlabeled images.
"""

from enum import Enum
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sslkit.data.files import locate, malformed
from sslkit.data.memory import InMemoryData
from sslkit.errors import ConfigError

IMAGE_BYTES = 3 * 96 * 96
SPLITS = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"), "unlabeled": ("unlabeled_X.bin", None)}
STL10Split = Enum("STL10Split", {s: s for s in ("train+unlabeled", "train", "test", "unlabeled")}, type=str)
HINT = ("Download stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ and point data.root at "
        "the extracted folder.")


def _count(path: Path) -> int:
    """The number of images in an X file, checked against its size."""
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise malformed(path, f"its size, {size} bytes, is not a positive multiple of 3·96·96 = {IMAGE_BYTES} "
                              f"bytes (a truncated download?)", HINT)
    return size // IMAGE_BYTES


def _read_images(path: Path, out: torch.Tensor) -> None:
    """Fill out (n, 3, 96, 96) from an X file, transposing each plane to row-major."""
    n = len(out)
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, 96, 96))
    chunk = 4096  # chunk by chunk: the peak memory stays one copy of the images
    for i in tqdm(range(0, n, chunk), desc=f"data=stl10: {path.name}", unit="chunk", disable=n <= chunk):
        out[i : i + chunk] = torch.from_numpy(np.ascontiguousarray(raw[i : i + chunk].transpose(0, 1, 3, 2)))


def _labels(path: Path, n: int) -> torch.Tensor:
    y = np.fromfile(path, dtype=np.uint8)
    if len(y) != n:
        raise malformed(path, f"it holds {len(y)} labels for {n} images", HINT)
    if n and not 1 <= y.min() <= y.max() <= 10:
        raise malformed(path, f"labels must lie in 1..10, found {y.min()}..{y.max()}", HINT)
    return torch.from_numpy(y.astype(np.int64) - 1)


def stl10(root: str | None, batch_size: int, split: STL10Split = STL10Split["train+unlabeled"],
          on_device: bool | str = "auto") -> InMemoryData:
    """STL-10, uint8 (N, 3, 96, 96): split=train (5000 labelled images), test (8000),
    unlabeled (100 000, label −1) or train+unlabeled (105 000, the usual SSL set).

    Args:
        root: The folder that holds the extracted files, or the folder the archive extracts to.
        batch_size: Images per training step.
        split: Which images: train, test, unlabeled or train+unlabeled.
        on_device: Hold the whole set on the training device (auto: when it takes at most half of the free GPU memory).
    """
    split = str(getattr(split, "value", split))
    parts = split.split("+")
    if not parts or any(p not in SPLITS for p in parts):
        raise ConfigError(f"data.split={split} is not allowed for data=stl10: use one of train, test, "
                          f"unlabeled, train+unlabeled.")
    names = [n for p in parts for n in SPLITS[p] if n is not None]
    layout = f"DIR/{{{', '.join(names)}}} or DIR/stl10_binary/..., the files of stl10_binary.tar.gz"
    where = locate(root, "stl10", names, "stl10_binary", layout, HINT)
    counts = [_count(where / SPLITS[p][0]) for p in parts]
    x = torch.empty(sum(counts), 3, 96, 96, dtype=torch.uint8)
    ys, start = [], 0
    for p, n in zip(parts, counts):
        x_name, y_name = SPLITS[p]
        _read_images(where / x_name, x[start : start + n])
        ys.append(_labels(where / y_name, n) if y_name else torch.full((n,), -1, dtype=torch.long))
        start += n
    return InMemoryData(x, torch.cat(ys), batch_size, name=f"data=stl10 (split={split})", on_device=on_device)
