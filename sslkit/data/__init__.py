"""Data sources: whole data sets as tensors, batched on the training device.

A source returns an `InMemoryData`: images as uint8 (N, C, H, W), or feature vectors as
float32 (N, dim), with integer labels. Views are made later, by `sslkit.augment`.
"""

from sslkit.data.cifar import cifar10, cifar100
from sslkit.data.imagefolder import imagefolder
from sslkit.data.memory import InMemoryData
from sslkit.data.sources import digits, mnist1d, synthetic
from sslkit.data.stl10 import stl10

__all__ = ["InMemoryData", "cifar10", "cifar100", "digits", "imagefolder", "mnist1d", "stl10", "synthetic"]
