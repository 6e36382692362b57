"""Batched view generation: every sample of a batch draws its own random parameters,
from a dedicated generator, on the device where the batch lives.

An augmentation is called as `aug(x, generator) -> view` on a whole batch; the trainer
calls it twice per step for the two views.
"""

from sslkit.augment.basic import GaussianNoise, ShiftNoise

__all__ = ["GaussianNoise", "ShiftNoise"]
