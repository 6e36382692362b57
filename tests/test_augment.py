"""Tests for sslkit.augment: Gaussian noise views and shifted, noisy image views.

Shifts are checked against an independent reference built by explicit slicing: for an
offset (dy, dx), out[i, j] = x[i + dy, j + dx] where that pixel exists, else 0."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sslkit.augment import GaussianNoise, ShiftNoise

# ------------------------------------------------------------------------ GaussianNoise


def test_gaussian_noise_difference_has_zero_mean_and_given_std():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 8, generator=g) * 3 + 1
    std = 0.3
    view = GaussianNoise(std=std).view(x, torch.Generator().manual_seed(1))
    assert view.shape == x.shape and view.dtype == torch.float32
    diff = (view - x).double()
    # 160k draws: sd of the mean ≈ 0.3/400 = 7.5e-4; sd of the std estimate ≈ 0.18 %
    assert abs(diff.mean().item()) < 4e-3
    assert diff.std().item() == pytest.approx(std, rel=0.01)
    # per coordinate too (20k draws each)
    torch.testing.assert_close(diff.std(0), torch.full((8,), std, dtype=torch.float64), rtol=0.03, atol=0)
    # noise does not depend on x: uncorrelated with it
    corr = torch.corrcoef(torch.stack([diff.flatten(), x.double().flatten()]))[0, 1]
    assert abs(corr.item()) < 0.015


def test_gaussian_noise_scales_uint8_to_unit_interval():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4000, 1, 8, 8), generator=g, dtype=torch.uint8)
    expected = x.double() / 255
    clean = GaussianNoise(std=0.0).view(x, torch.Generator().manual_seed(0))
    assert clean.dtype == torch.float32
    torch.testing.assert_close(clean.double(), expected, rtol=0, atol=1e-7)
    assert 0.0 <= clean.min().item() and clean.max().item() <= 1.0
    noisy = GaussianNoise(std=0.05).view(x, torch.Generator().manual_seed(0))
    diff = noisy.double() - expected
    assert abs(diff.mean().item()) < 2e-3
    assert diff.std().item() == pytest.approx(0.05, rel=0.01)


def test_gaussian_noise_two_views_are_independent_and_reproducible():
    x = torch.randn(10_000, 4, generator=torch.Generator().manual_seed(0))
    aug = GaussianNoise(std=0.2)
    v1, v2 = aug(x, torch.Generator().manual_seed(7))  # one call: the pair of views
    assert v1.shape == v2.shape == x.shape
    assert not torch.equal(v1, v2)
    n1, n2 = (v1 - x).flatten().double(), (v2 - x).flatten().double()
    assert abs(torch.corrcoef(torch.stack([n1, n2]))[0, 1].item()) < 0.02
    assert n2.std().item() == pytest.approx(0.2, rel=0.02)
    w1, w2 = aug(x, torch.Generator().manual_seed(7))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    # the pair is two successive single views drawn from the generator
    g = torch.Generator().manual_seed(7)
    assert torch.equal(aug.view(x, g), v1) and torch.equal(aug.view(x, g), v2)
    w3, _ = aug(x, torch.Generator().manual_seed(8))
    assert not torch.equal(v1, w3)


# --------------------------------------------------------------------------- ShiftNoise


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., i, j] = x[..., i + dy, j + dx] where 0 ≤ i + dy < H and 0 ≤ j + dx < W, else 0.

    Works on torch tensors and on numpy arrays."""
    h, w = x.shape[-2:]
    out = x * 0
    rows_out = slice(max(0, -dy), min(h, h - dy))
    rows_in = slice(max(0, dy), min(h, h + dy))
    cols_out = slice(max(0, -dx), min(w, w - dx))
    cols_in = slice(max(0, dx), min(w, w + dx))
    out[..., rows_out, cols_out] = x[..., rows_in, cols_in]
    return out


def shifted_by_roll(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The same shift, a second way: torch.roll, then zero the rows/cols that wrapped."""
    h, w = x.shape[-2:]
    out = torch.roll(x, shifts=(-dy, -dx), dims=(-2, -1)).clone()
    if dy > 0:
        out[..., h - dy :, :] = 0
    elif dy < 0:
        out[..., : -dy, :] = 0
    if dx > 0:
        out[..., :, w - dx :] = 0
    elif dx < 0:
        out[..., :, : -dx] = 0
    return out


def test_reference_shifts_agree():
    x = torch.arange(1, 2 * 3 * 5 * 7 + 1, dtype=torch.float32).reshape(2, 3, 5, 7)
    for dy, dx in itertools.product(range(-3, 4), repeat=2):
        assert torch.equal(shifted(x, dy, dx), shifted_by_roll(x, dy, dx)), (dy, dx)
        assert np.array_equal(shifted(x.numpy(), dy, dx), shifted_by_roll(x, dy, dx).numpy()), (dy, dx)
    # one hand-checked case: shift by (1, -1)
    img = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert torch.equal(shifted(img, 1, -1), torch.tensor([[0.0, 4, 5], [0, 7, 8], [0, 0, 0]]))


def match_offsets(out: torch.Tensor, centred: torch.Tensor, s: int) -> tuple[torch.Tensor, list]:
    """(B, K) bool: does sample b equal the reference shift by offset k, exactly.

    Compared in numpy, on float32 values computed by torch (so exact equality holds)."""
    offsets = list(itertools.product(range(-s, s + 1), repeat=2))
    out_np, centred_np = out.numpy(), centred.numpy()
    b = len(out_np)
    hits = np.stack(
        [(out_np == shifted(centred_np, dy, dx)).reshape(b, -1).all(1) for dy, dx in offsets], axis=1
    )
    return torch.from_numpy(hits), offsets


def positive_images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """uint8 images with no zero pixel, so the zero-filled border identifies the shift."""
    return torch.randint(1, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("s, shape", [(1, (500, 1, 8, 8)), (2, (500, 3, 5, 7)), (3, (300, 2, 8, 8))])
def test_shift_is_one_integer_offset_with_zero_fill(s, shape):
    x = positive_images(shape, seed=s)
    out = ShiftNoise(max_shift=s, std=0.0, mean=0.0).view(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    hits, _ = match_offsets(out, x.float() / 255, s)
    assert bool((hits.sum(1) == 1).all()), "every sample must equal exactly one shifted input"


def test_zero_max_shift_is_identity():
    x = positive_images((50, 1, 8, 8), seed=0)
    out = ShiftNoise(max_shift=0, std=0.0, mean=0.0).view(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x.float() / 255)


@pytest.mark.parametrize("s, n", [(1, 9000), (2, 10_000)])
def test_all_offsets_occur_uniformly(s, n):
    x = positive_images((n, 1, 8, 8), seed=10 + s)
    out = ShiftNoise(max_shift=s, std=0.0, mean=0.0).view(x, torch.Generator().manual_seed(s))
    hits, offsets = match_offsets(out, x.float() / 255, s)
    assert bool((hits.sum(1) == 1).all())
    counts = hits.sum(0).double()
    k = len(offsets)
    assert k == (2 * s + 1) ** 2 and bool((counts > 0).all())
    expected = n / k
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    # 99.9 % quantiles of chi-square with k - 1 degrees of freedom
    limit = {9: 26.12, 25: 51.18}[k]
    assert chi2 < limit, (chi2, counts.tolist())


def test_mean_is_subtracted_before_zero_fill():
    s, mean = 2, 0.3
    x = positive_images((400, 1, 8, 8), seed=3)
    out = ShiftNoise(max_shift=s, std=0.0, mean=mean).view(x, torch.Generator().manual_seed(0))
    centred = x.float() / 255 - mean
    hits, offsets = match_offsets(out, centred, s)
    assert bool((hits.sum(1) == 1).all())
    # the fill is 0 in centred units, i.e. a pixel value of `mean`, not 0 − mean
    shifted_samples = hits[:, offsets.index((0, 0))].logical_not()
    assert bool(shifted_samples.any())
    assert bool((out[shifted_samples] == 0).flatten(1).any(1).all())
    assert not bool((out == -mean).any())
    assert out.min().item() < 0  # centred values below the mean are negative


def test_shift_noise_std_and_mean():
    std, mean = 0.2, 0.25
    x = positive_images((4000, 1, 8, 8), seed=4)
    out = ShiftNoise(max_shift=0, std=std, mean=mean).view(x, torch.Generator().manual_seed(0))
    noise = (out - (x.float() / 255 - mean)).double()
    assert abs(noise.mean().item()) < 3e-3  # 256k draws: sd of the mean ≈ 4e-4
    assert noise.std().item() == pytest.approx(std, rel=0.01)
    # with shifts, on black images the output is pure noise (zero fill, zero content)
    zeros = torch.zeros(4000, 1, 8, 8, dtype=torch.uint8)
    pure = ShiftNoise(max_shift=2, std=std, mean=0.0).view(zeros, torch.Generator().manual_seed(1))
    pure = pure.double()
    assert abs(pure.mean().item()) < 3e-3
    assert pure.std().item() == pytest.approx(std, rel=0.01)


def test_shift_noise_views_differ_and_reproduce():
    x = positive_images((64, 1, 8, 8), seed=5)
    aug = ShiftNoise(max_shift=1, std=0.1, mean=0.3)
    v1, v2 = aug(x, torch.Generator().manual_seed(9))
    assert v1.shape == v2.shape == x.shape
    assert not torch.equal(v1, v2)
    w1, w2 = aug(x, torch.Generator().manual_seed(9))
    assert torch.equal(w1, v1) and torch.equal(w2, v2)
    g = torch.Generator().manual_seed(9)
    assert torch.equal(aug.view(x, g), v1) and torch.equal(aug.view(x, g), v2)


def test_shift_noise_two_views_shift_independently():
    s, n = 1, 2000
    x = positive_images((n, 1, 8, 8), seed=6)
    v1, v2 = ShiftNoise(max_shift=s, std=0.0, mean=0.0)(x, torch.Generator().manual_seed(2))
    hits1, _ = match_offsets(v1, x.float() / 255, s)
    hits2, _ = match_offsets(v2, x.float() / 255, s)
    assert bool((hits1.sum(1) == 1).all()) and bool((hits2.sum(1) == 1).all())
    same = (hits1.int().argmax(1) == hits2.int().argmax(1)).double().mean().item()
    assert same == pytest.approx(1 / 9, abs=0.04)  # independent offsets agree 1/9 of the time


@pytest.mark.parametrize("shape", [(16, 64), (16, 8, 8)])
def test_shift_noise_rejects_non_image_batches(shape):
    with pytest.raises(ValueError, match="augment=gaussian_noise"):
        ShiftNoise()(torch.zeros(shape), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="augment=gaussian_noise"):
        ShiftNoise().view(torch.zeros(shape), torch.Generator().manual_seed(0))


def test_a_flat_backbone_is_built_for_the_views_size(config, tmp_path):
    """augment.size=6 resizes the 8×8 digits: the linear backbone takes the 1×6×6 views
    (36 inputs), and trains and evaluates (kNN on the held-out digits' clean views) on them."""
    from sslkit.step import Step
    from sslkit.train import train

    cfg = config("augment=simclr", "augment.size=6", "augment.mean=[0.3]", "augment.std=[0.4]", "backbone=linear",
                 "eval=[knn]", "eval.every=1", "trainer.max_steps=1")
    assert Step.build(cfg, torch.device("cpu")).net.backbone.layer.in_features == 36
    assert 0 <= train(cfg, tmp_path)["eval/knn20/backbone/top1"] <= 100
