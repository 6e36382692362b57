"""A data set held as two tensors, shuffled and batched where it lives (CPU or GPU).

`on_device` says where a data set lives during training: true moves it to the training
device once; false keeps it in host memory and moves each batch; auto moves it when it
takes at most half of the device's free memory (always, for the CPU).
"""

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from sslkit.errors import ConfigError
from sslkit.rng import DATA_ORDER, generator


@dataclass
class InMemoryData:
    x: Tensor  # uint8 (N, C, H, W) images or float32 (N, dim) vectors
    y: Tensor  # int64 (N,) labels
    batch_size: int
    name: str = "data"
    on_device: bool | str = "auto"  # true | false | auto
    device: torch.device | None = None  # where batches go; None: where x lives

    def __post_init__(self) -> None:
        if self.on_device not in (True, False, "auto"):
            raise ConfigError(f"data.on_device={self.on_device} is not allowed: use auto, true or false.")
        n = len(self.x)
        if len(self.y) != n:
            raise ConfigError(f"{self.name}: {n} samples but {len(self.y)} labels.")
        if not 1 <= self.batch_size <= n:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is not possible for {self.name} with {n} "
                f"samples: choose 1 <= data.batch_size <= {n}."
            )

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per pass; the incomplete last batch is dropped, as in SSL practice."""
        return len(self.x) // self.batch_size

    def to(self, device: torch.device) -> "InMemoryData":
        """The data set with batches on `device`; held there too unless `on_device` says no."""
        device = torch.device(device)
        if self.on_device is False or (self.on_device == "auto" and not fits(self.x.nbytes, device)):
            return replace(self, device=device)
        return replace(self, x=self.x.to(device), y=self.y.to(device), device=device)

    def batches(self, seed: int, start: int = 0) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(epoch, x, y) for the global steps start, start + 1, … without end.

        Epoch e visits the samples in the order of a permutation drawn from the generator
        of (seed, e) (sslkit.rng): the order does not depend on the steps before, so a
        resumed run reaches step `start` without replaying them, and every rank draws the
        same one. The permutation is drawn where the data set lives (CPU or GPU)."""
        epoch, first = divmod(start, self.steps_per_epoch)
        while True:
            g = generator(self.x.device, seed, DATA_ORDER, epoch)
            order = torch.randperm(len(self.x), generator=g, device=self.x.device)
            for i in range(first, self.steps_per_epoch):
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                x, y = self.x[idx], self.y[idx]
                if self.device is not None:  # a no-op when the data set lives there
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                yield epoch, x, y
            epoch, first = epoch + 1, 0


def fits(nbytes: int, device: torch.device) -> bool:
    """Whether nbytes take at most half of the free memory of a CUDA `device`; True for
    any other device (the CPU holds the data already)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 2
