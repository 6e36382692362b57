"""A data set held as two tensors, shuffled and batched where it lives (CPU or GPU)."""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sslkit.errors import ConfigError


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

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass in a random order drawn from `generator` (on the data's device)."""
        order = torch.randperm(len(self.x), generator=generator, device=self.x.device)
        for i in range(self.steps_per_epoch):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]
