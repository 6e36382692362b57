"""Colour operations on float batches in [0, 1], one parameter per sample.

Each follows the `torchvision.transforms.v2.functional` kernel of the same name, with a
(B,) tensor where torchvision takes one float per call:

- grey level Y = 0.2989 R + 0.587 G + 0.114 B (ITU-R 601-2 luma);
- brightness, contrast and saturation blend the image with a reference, clamped to
  [0, 1]: x' = clamp(f·x + (1 − f)·r) with r = 0, the image's mean grey level, or the
  pixel's grey level (computed as r + f·(x − r), equal up to rounding);
- hue rotates H in HSV space by δ (in turns); V = max(R, G, B) and the chroma
  C = max − min are kept, so channel n ∈ {R: 5, G: 3, B: 1} becomes
  V − C·clamp(min(k, 4 − k), 0, 1) with k = (n + 6·(H + δ)) mod 6;
- solarize inverts the pixels at or above a threshold, x' = 1 − x.

One-channel images pass through saturation, hue and grayscale unchanged, as in torchvision.
"""

from collections.abc import Callable

import torch
from torch import Tensor

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # torchvision's ColorJitter op ids


def _per_sample(v: Tensor) -> Tensor:
    return v.reshape(-1, 1, 1, 1)


def grey(x: Tensor) -> Tensor:
    """(B, 1, H, W) luma of RGB images; one-channel images are returned as they are."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def blend(x: Tensor, ref: Tensor | float, factor: Tensor) -> Tensor:
    """clamp(f·x + (1 − f)·ref, 0, 1) with f (B,) per sample, computed as ref + f·(x − ref)
    by torch.lerp: one pass, and exactly x where f = 1."""
    ref = torch.as_tensor(ref, dtype=x.dtype, device=x.device)
    return torch.lerp(ref, x, _per_sample(factor)).clamp_(0, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return blend(x, 0.0, factor)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    return blend(x, grey(x).mean((1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    return x if x.shape[1] == 1 else blend(x, grey(x), factor)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each RGB image by shift (B,) turns, shift ∈ [−½, ½]."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)
    inv_c = 1 / torch.where(c > 0, c, 1.0)
    # 6·H in (−1, 5]; torchvision's _rgb_to_hsv picks the sector by the maximum channel
    h = torch.where(v == r, (g - b) * inv_c, torch.where(v == g, 2 + (b - r) * inv_c, 4 + (r - g) * inv_c))
    h = h + 6 * shift.reshape(-1, 1, 1)  # in (−4, 8]: bring it to [0, 6) without a division
    h = torch.where(h < 0, h + 6, torch.where(h >= 6, h - 6, h))
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = n + h
        k = torch.where(k >= 6, k - 6, k)
        channels.append(v - c * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(channels, 1)


def grayscale(x: Tensor, active: Tensor) -> Tensor:
    """Y in every channel where `active` (B,) is set."""
    return torch.where(_per_sample(active), grey(x).expand_as(x), x)


def solarize(x: Tensor, threshold: float, active: Tensor) -> Tensor:
    return torch.where(_per_sample(active) & (x >= threshold), 1 - x, x)


def blend_step(x: Tensor, op: Tensor, factors: Tensor) -> Tensor:
    """The blend ops of one of ColorJitter's four steps, for a whole batch: sample i
    applies op id op[i] (0 brightness, 1 contrast, 2 saturation; other ids: nothing) with
    factor factors[i, op[i]], as one blend (f = 1 leaves a sample unchanged)."""
    f = torch.where(op < HUE, factors.gather(1, op.clamp(max=SATURATION)[:, None])[:, 0], 1.0)
    y = grey(x)
    ref = torch.where(_per_sample(op == CONTRAST), y.mean((1, 2, 3), keepdim=True), 0.0)
    return blend(x, torch.where(_per_sample(op == SATURATION), y, ref), f)


def color_jitter(
    x: Tensor, factors: Tensor, order: Tensor, hue: bool = True,
    blend_fn: Callable = blend_step, hue_fn: Callable = adjust_hue,
) -> Tensor:
    """torchvision's ColorJitter with its own parameters for each sample.

    factors (B, 4): brightness, contrast and saturation factors and the hue shift;
    order (B, 4): a permutation of the op ids 0–3 per sample, applied left to right (an id
    ≥ 4 is skipped, e.g. for samples that are not jittered). `hue=False` skips the hue
    (recipes without it): the four slots are four blend steps.

    With the hue, sample i's order is split at its hue, at position k_i: its k_i ops
    before the hue run as three blend steps (slots past k_i blend with factor 1, which
    leaves an image exactly as it is), then the hue of the whole batch, kept where the
    sample is jittered, then its 3 − k_i ops after the hue as three more blend steps. Six
    cheap blends and one hue pass (the costly op) over fixed shapes, with no step that
    waits for the device to say which samples to pick. `blend_fn` and `hue_fn` replace
    `blend_step` and `adjust_hue` (e.g. by compiled versions)."""
    if not hue:
        for slot in range(4):
            x = blend_fn(x, order[:, slot], factors)  # the hue id blends with factor 1
        return x
    k = (order == HUE).int().argmax(1, keepdim=True)  # (B, 1); 0 for samples not jittered
    slots = torch.arange(3, device=order.device)
    before = torch.where(slots < k, order[:, :3], 4)
    after = k + 1 + slots
    after = torch.where(after < 4, order.gather(1, after.clamp(max=3)), 4)
    for slot in range(3):
        x = blend_fn(x, before[:, slot], factors)
    x = torch.where(_per_sample(order[:, 0] < 4), hue_fn(x, factors[:, HUE]), x)
    for slot in range(3):
        x = blend_fn(x, after[:, slot], factors)
    return x
