"""Batched view generation: every sample of a batch draws its own random parameters,
from a dedicated generator, on the device where the batch lives.

An augmentation is called on a whole batch, `aug(x, generator, rows) -> (view1, view2)`:
the views of x[rows] (default: all), each sample with the parameters it draws as a sample
of the whole batch, so the views do not depend on how the batch is split over processes;
the views are float tensors ready for the backbone. `ImageViews` is the image pipeline of
SimCLR, BYOL, Barlow Twins and VICReg (configs/augment/ holds the recipes).
"""

from sslkit.augment.basic import GaussianNoise, ShiftNoise, TwoViews
from sslkit.augment.pipeline import ImageViews, ViewSpec

__all__ = ["GaussianNoise", "ImageViews", "ShiftNoise", "TwoViews", "ViewSpec"]
