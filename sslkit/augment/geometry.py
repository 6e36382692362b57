"""Random resized crop and horizontal flip for a whole batch, as one separable linear map.

Cropping rows [top, top + height) and resizing them to S rows with torchvision's
antialiased bilinear filter (`F.interpolate(..., antialias=True)`, align_corners=False) is
a linear map R ∈ ℝ^{S×H}. For output row i the filter is centred at c_i = s·(i + ½) in crop
coordinates, s = height/S, and input row k of the crop gets the weight

    R_ik ∝ max(0, 1 − |k + ½ − c_i| / max(s, 1)),   normalised so that Σ_k R_ik = 1

(a triangle stretched by the scale when shrinking, plain bilinear when enlarging). With
per-sample row and column maps R_y (B, S, H) and R_x (B, S, W) a batch is cropped and
resized by two batched matrix products, out = R_y · x · R_xᵀ; a horizontal flip reverses
the rows of R_x. This is the same computation torchvision does one image at a time.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Crops:
    """Per-sample crop boxes in pixels (int64 (B,) each) and flip flags (bool (B,))."""

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    flip: Tensor


def resize_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """(B, out_size, in_size): per sample, the antialiased bilinear map from input pixels
    [start, start + length) to out_size output pixels (the module docstring's R)."""
    start, length = start.float()[:, None, None], length.float()[:, None, None]
    scale = length / out_size
    support = scale.clamp(min=1.0)
    centre = scale * (torch.arange(out_size, device=start.device, dtype=torch.float32)[:, None] + 0.5)
    k = torch.arange(in_size, device=start.device, dtype=torch.float32) - start  # crop coordinates
    w = (1 - ((k + 0.5 - centre) / support).abs()).clamp(min=0)
    w = w * ((k >= 0) & (k < length))
    return w / w.sum(-1, keepdim=True)


def resized_crop(x: Tensor, crops: Crops, size: tuple[int, int], gain: float = 1.0) -> Tensor:
    """Crop each image of x (B, C, H, W) to its box, resize it to `size` (antialiased
    bilinear) and flip it where `crops.flip`; float32 (B, C, *size), multiplied by `gain`
    (1/255 turns uint8 values into [0, 1] at no extra cost)."""
    b, c, h, w = x.shape
    rows = resize_matrix(crops.top, crops.height, h, size[0]) * gain
    cols = resize_matrix(crops.left, crops.width, w, size[1])
    cols = torch.where(crops.flip[:, None, None], cols.flip(1), cols)
    # (B, C·H, W) @ (B, W, S_w) then (B, 1, S_h, H) @ (B, C, H, S_w): big batched products
    out = (x.float().reshape(b, c * h, w) @ cols.transpose(1, 2)).reshape(b, c, h, size[1])
    return rows[:, None] @ out


def sample_crops(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_p: float,
    generator: torch.Generator,
    attempts: int = 10,
) -> Crops:
    """Boxes drawn as torchvision's RandomResizedCrop.get_params draws them, for n images
    of height × width at once: up to `attempts` tries of area ~ U(scale)·H·W and aspect
    ratio w/h ~ exp U(log ratio), w = round(√(area·ratio)), h = round(√(area/ratio)); the
    first try that fits is placed uniformly at random. Samples where no try fits get the
    central crop with the ratio clamped to `ratio`. Each image is flipped with prob. flip_p."""
    dev = generator.device
    u = torch.rand(3, n, attempts, generator=generator, device=dev, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # index of the first try that fits
    w, h = w.gather(1, first)[:, 0].long(), h.gather(1, first)[:, 0].long()

    in_ratio = width / height  # fallback: torchvision's central crop
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    found = fits.any(1)
    w = torch.where(found, w, fw)
    h = torch.where(found, h, fh)
    pos = torch.rand(2, n, generator=generator, device=dev, dtype=torch.float64)
    top = torch.where(found, (pos[0] * (height - h + 1)).long(), (height - fh) // 2)
    left = torch.where(found, (pos[1] * (width - w + 1)).long(), (width - fw) // 2)
    flip = torch.rand(n, generator=generator, device=dev) < flip_p
    return Crops(top, left, h, w, flip)
