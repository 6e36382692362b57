"""CIFAR-10 and CIFAR-100 from the official "python version" archives.

Each batch file is a pickled dict: b"data" is a uint8 array (n, 3072) holding each image's
red, green and blue 32×32 planes row by row; the labels are b"labels" (CIFAR-10, 0–9) or
b"fine_labels" (CIFAR-100, 0–99). The unpickler only accepts the NumPy array classes these
files contain, so a file from elsewhere cannot run code when it is read.
"""

import pickle
from enum import Enum
from pathlib import Path

import numpy as np
import torch

from sslkit.data.files import locate, malformed
from sslkit.data.memory import InMemoryData
from sslkit.errors import ConfigError

_NUMPY_GLOBALS = {
    (module, name)
    for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
    for name in ("ndarray", "dtype", "_reconstruct", "scalar", "_frombuffer")
} | {("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 store bytes


class CifarSplit(str, Enum):
    train = "train"
    test = "test"


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path, label_key: bytes, classes: int, hint: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # any failure to unpickle: truncated, not a pickle, wrong objects
        raise malformed(path, f"it is truncated or not a CIFAR pickle ({type(exc).__name__}: {exc})", hint) from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise malformed(path, f"expected a dict with b'data' and {label_key!r}, found {keys}", hint)
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise malformed(path, f"b'data' must be uint8 (n, 3072) with n labels, found {data.dtype} "
                              f"{data.shape} and {labels.shape[0] if labels.ndim else 0} labels", hint)
    if len(labels) and not 0 <= labels.min() <= labels.max() < classes:
        raise malformed(path, f"labels must lie in 0..{classes - 1}, found {labels.min()}..{labels.max()}", hint)
    return data, labels


def _cifar(root: str | None, split: CifarSplit, batch_size: int, on_device: bool | str, option: str, files: dict,
           folder: str, archive: str, label_key: bytes, classes: int) -> InMemoryData:
    split = str(getattr(split, "value", split))
    if split not in files:
        raise ConfigError(f"data.split={split} is not allowed for data={option}: use one of {', '.join(files)}.")
    names = files[split]
    layout = f"DIR/{{{', '.join(names)}}} or DIR/{folder}/..., the files of {archive}"
    hint = f"Download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html and point data.root at the extracted folder."
    where = locate(root, option, names, folder, layout, hint)
    parts = [_read_batch(where / n, label_key, classes, hint) for n in names]
    x = torch.from_numpy(np.concatenate([d for d, _ in parts])).reshape(-1, 3, 32, 32)
    y = torch.from_numpy(np.concatenate([l for _, l in parts]).astype(np.int64))
    return InMemoryData(x, y, batch_size, name=f"data={option} (split={split})", on_device=on_device)


def cifar10(root: str | None, batch_size: int, split: CifarSplit = CifarSplit.train,
            on_device: bool | str = "auto") -> InMemoryData:
    """CIFAR-10, uint8 (N, 3, 32, 32): split=train reads data_batch_1 … data_batch_5
    (50 000 images), split=test reads test_batch (10 000).

    Args:
        root: The folder that holds the extracted files, or the folder the archive extracts to.
        batch_size: Images per training step.
        split: Which images: train (50 000) or test (10 000).
        on_device: Hold the whole set on the training device (auto: when it takes at most half of the free GPU memory).
    """
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    return _cifar(root, split, batch_size, on_device, "cifar10", files, "cifar-10-batches-py",
                  "cifar-10-python.tar.gz", b"labels", 10)


def cifar100(root: str | None, batch_size: int, split: CifarSplit = CifarSplit.train,
             on_device: bool | str = "auto") -> InMemoryData:
    """CIFAR-100 with its 100 fine labels, uint8 (N, 3, 32, 32): split=train reads `train`
    (50 000 images), split=test reads `test` (10 000).

    Args:
        root: The folder that holds the extracted files, or the folder the archive extracts to.
        batch_size: Images per training step.
        split: Which images: train (50 000) or test (10 000).
        on_device: Hold the whole set on the training device (auto: when it takes at most half of the free GPU memory).
    """
    files = {"train": ["train"], "test": ["test"]}
    return _cifar(root, split, batch_size, on_device, "cifar100", files, "cifar-100-python",
                  "cifar-100-python.tar.gz", b"fine_labels", 100)
