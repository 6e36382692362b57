"""A data set held as two tensors, shuffled and batched where it lives (CPU or GPU)."""

from collections.abc import Iterator
from dataclasses import dataclass

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

    def __post_init__(self) -> None:
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
        return InMemoryData(self.x.to(device), self.y.to(device), self.batch_size, self.name)

    def batches(self, seed: int, start: int = 0) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(epoch, x, y) for the global steps start, start + 1, … without end.

        Epoch e visits the samples in the order of a permutation drawn from the generator
        of (seed, e) (sslkit.rng): the order does not depend on the steps before, so a
        resumed run reaches step `start` without replaying them, and every rank draws the
        same one."""
        epoch, first = divmod(start, self.steps_per_epoch)
        while True:
            g = generator(self.x.device, seed, DATA_ORDER, epoch)
            order = torch.randperm(len(self.x), generator=g, device=self.x.device)
            for i in range(first, self.steps_per_epoch):
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield epoch, self.x[idx], self.y[idx]
            epoch, first = epoch + 1, 0
