"""Batched view generation: every sample of a batch draws its own random parameters,
from a dedicated generator, on the device where the batch lives.

An augmentation is called on a whole batch, `aug(x, generator) -> (view1, view2)`; the
views are float tensors ready for the backbone.
"""

from sslkit.augment.basic import GaussianNoise, ShiftNoise, TwoViews

__all__ = ["GaussianNoise", "ShiftNoise", "TwoViews"]
