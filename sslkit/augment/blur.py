"""Gaussian blur with its own σ for every sample of a batch.

torchvision's `gaussian_blur` uses the kernel g_t ∝ exp(−t² / (2σ²)) at the k offsets
t = −(k−1)/2 … (k−1)/2, normalised to sum 1, pads by reflection and filters rows and
columns. The filter is separable: out = Σ_t g_t · x shifted by t, along rows, then along
columns, with each sample's own g: as two depthwise convolutions, or, for small kernels
in code that torch.compile fuses, as k shifted multiply-adds. Compiled code passes the
convolutions as `torch.compiler.disable(depthwise)` (sslkit.augment.pipeline.Stages), so
that importing this module does not import torch's compiler stack (≈ 1.5 s).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

SMALL_KERNEL = 5  # in compiled code, up to this size k fused multiply-adds beat a convolution


def gaussian_kernels(sigma: Tensor, size: int, active: Tensor) -> Tensor:
    """(B, size) 1-d Gaussian kernels for σ (B,); the identity kernel where not `active`."""
    t = torch.arange(size, device=sigma.device, dtype=torch.float32) - (size - 1) / 2
    kernels = torch.softmax(-0.5 * (t / sigma[:, None]) ** 2, dim=1)
    identity = (t == 0).float().expand_as(kernels)
    return torch.where(active[:, None], kernels, identity)


def depthwise(padded: Tensor, kernels: Tensor) -> Tensor:
    """Rows then columns as two depthwise convolutions, one kernel per (sample, channel)."""
    b, c, hp, wp = padded.shape
    weights = kernels.repeat_interleave(c, 0)[:, None]  # (B·C, 1, k)
    planes = F.conv2d(padded.reshape(1, b * c, hp, wp), weights[..., None], groups=b * c)
    return F.conv2d(planes, weights[:, :, None], groups=b * c)


def gaussian_blur(x: Tensor, kernels: Tensor, convolve: Callable[[Tensor, Tensor], Tensor] = depthwise) -> Tensor:
    """Blur each image of x (B, C, H, W) with the separable kernel kernels[b] (B, k), k odd;
    `convolve`: `depthwise`, or in compiled code its uncompiled version."""
    b, c, h, w = x.shape
    k = kernels.shape[1]
    padded = F.pad(x, (k // 2,) * 4, mode="reflect")
    if k > SMALL_KERNEL or not torch.compiler.is_compiling():
        return convolve(padded, kernels).reshape(b, c, h, w)
    g = kernels.T.reshape(k, b, 1, 1, 1)
    rows = sum(g[t] * padded[:, :, t : t + h] for t in range(k))
    return sum(g[t] * rows[..., t : t + w] for t in range(k))

