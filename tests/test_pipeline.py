"""The batched image views against torchvision.transforms.v2, image by image.

Each batched op gets per-sample parameters and must match the torchvision v2 kernel
applied to each image alone with that sample's parameters (max abs error ≤ 1/255 on
[0, 1] images with uint8 levels; hue ≤ 2/255). Parameter sampling must match the
distributions of torchvision's transforms (two-sample KS tests on 10k draws)."""

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy.stats import chisquare, ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from conftest import compose_config
from sslkit.augment import ImageViews, ViewSpec
from sslkit.augment.blur import gaussian_blur, gaussian_kernels
from sslkit.augment.color import (adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, color_jitter,
                                  grayscale, solarize)
from sslkit.augment.geometry import Crops, resized_crop, sample_crops
from sslkit.augment.pipeline import apply_view, sample_view
from sslkit.errors import ConfigError

TOL, HUE_TOL = 1 / 255, 2 / 255
PRESETS = ["simclr", "byol", "barlow_twins", "vicreg", "cifar", "none"]


def images(n: int, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 RGB images with smooth structure, flat patches and saturated pixels."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, h // 4 + 1, w // 4 + 1, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    x = x + 0.15 * torch.randn(n, 3, h, w, generator=g)
    x[:, :, : h // 4, : w // 4] = torch.rand(n, 1, 1, 1, generator=g)  # a grey patch (hue undefined)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def max_err(ours: torch.Tensor, reference: list[torch.Tensor]) -> float:
    return (ours - torch.stack(reference)).abs().max().item()


# ------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("in_hw, out_hw, scale", [((32, 32), (32, 32), (0.08, 1.0)),  # enlarge
                                                  ((96, 80), (40, 24), (0.3, 1.0)),  # shrink: antialiasing
                                                  ((50, 70), (64, 64), (0.02, 1.0))])
def test_resized_crop_and_flip_match_torchvision(in_hw, out_hw, scale):
    x = images(64, *in_hw, seed=1)
    g = torch.Generator().manual_seed(0)
    crops = sample_crops(64, *in_hw, scale, (3 / 4, 4 / 3), 0.5, g)
    ours = resized_crop(x, crops, out_hw, gain=1 / 255)
    ref = []
    for i in range(64):
        img = F.resized_crop(x[i].float() / 255, int(crops.top[i]), int(crops.left[i]), int(crops.height[i]),
                             int(crops.width[i]), list(out_hw), antialias=True)
        ref.append(F.horizontal_flip(img) if crops.flip[i] else img)
    assert crops.flip.any() and not crops.flip.all()
    assert max_err(ours, ref) <= TOL


def test_a_crop_of_the_whole_image_without_flip_is_the_identity():
    x = images(4)
    full = torch.full((4,), 32)
    crops = Crops(0 * full, 0 * full, full, full, torch.zeros(4, dtype=torch.bool))
    torch.testing.assert_close(resized_crop(x, crops, (32, 32)), x.float(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("hw, ratio", [((32, 32), (3 / 4, 4 / 3)), ((40, 200), (3 / 4, 4 / 3)), ((30, 20), (0.2, 5.0))])
def test_crop_boxes_follow_torchvision_distribution(hw, ratio):
    n, scale = 10_000, (0.08, 1.0)
    torch.manual_seed(0)
    tv = v2.RandomResizedCrop(8, scale=scale, ratio=ratio)
    img = torch.zeros(1, *hw)
    ref = np.array([[p["top"], p["left"], p["height"], p["width"]] for p in (tv.make_params([img]) for _ in range(n))])
    c = sample_crops(n, *hw, scale, ratio, 0.5, torch.Generator().manual_seed(1))
    ours = torch.stack([c.top, c.left, c.height, c.width], 1).numpy()
    for name, a, b in [("area", ours[:, 2] * ours[:, 3], ref[:, 2] * ref[:, 3]), ("ratio", ours[:, 3] / ours[:, 2],
                       ref[:, 3] / ref[:, 2]), ("top", ours[:, 0], ref[:, 0]), ("left", ours[:, 1], ref[:, 1])]:
        assert ks_2samp(a, b).pvalue > 1e-3, name
    assert (ours[:, 0] + ours[:, 2] <= hw[0]).all() and (ours[:, 1] + ours[:, 3] <= hw[1]).all()
    assert (ours >= 0).all() and (ours[:, 2:] > 0).all()


def test_crop_fallback_is_torchvision_central_crop():
    # a 10x100 image with ratios near 1 never fits: every box is the central 10x13 crop
    c = sample_crops(50, 10, 100, (0.9, 1.0), (0.8, 1.3), 0.0, torch.Generator().manual_seed(0))
    p = v2.RandomResizedCrop(8, scale=(0.9, 1.0), ratio=(0.8, 1.3)).make_params([torch.zeros(1, 10, 100)])
    assert set(c.top.tolist()) == {p["top"]} and set(c.left.tolist()) == {p["left"]}
    assert set(c.height.tolist()) == {p["height"]} and set(c.width.tolist()) == {p["width"]}


# --------------------------------------------------------------------------- colour


def factors(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ours, theirs, lo, hi, tol", [
    (adjust_brightness, F.adjust_brightness, 0.0, 2.0, TOL),
    (adjust_contrast, F.adjust_contrast, 0.0, 2.0, TOL),
    (adjust_saturation, F.adjust_saturation, 0.0, 2.0, TOL),
    (adjust_hue, F.adjust_hue, -0.5, 0.5, HUE_TOL),
])
def test_colour_ops_match_torchvision(ours, theirs, lo, hi, tol):
    x = images(128, seed=2).float() / 255
    f = factors(128, lo, hi, seed=3)
    out = ours(x, f)
    assert max_err(out, [theirs(x[i], float(f[i])) for i in range(128)]) <= tol
    assert out.min() >= 0 and out.max() <= 1


def test_hue_of_pure_colours_and_greys():
    # the six sector corners and greys, every shift a multiple of 1/12 turn
    corners = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [0.5, 0.5, 0.5], [0, 0, 0]])
    x = corners.T.reshape(1, 3, 1, 8).expand(13, 3, 1, 8).contiguous()
    shifts = torch.arange(-6, 7) / 12
    assert max_err(adjust_hue(x, shifts), [F.adjust_hue(x[i], float(shifts[i])) for i in range(13)]) <= 1e-6


def test_grayscale_and_solarize_match_torchvision():
    x = images(32, seed=4).float() / 255
    active = torch.arange(32) % 3 == 0
    ref = [F.rgb_to_grayscale(x[i], num_output_channels=3) if active[i] else x[i] for i in range(32)]
    assert max_err(grayscale(x, active), ref) <= 1e-6
    ref = [F.solarize(x[i], 0.5) if active[i] else x[i] for i in range(32)]
    assert max_err(solarize(x, 0.5, active), ref) == 0


@pytest.mark.parametrize("size", [3, 5, 23])
def test_gaussian_blur_matches_torchvision_per_sample_sigma(size):
    x = images(24, seed=5).float() / 255
    sigma = factors(24, 0.1, 2.0, seed=6)
    active = torch.arange(24) % 4 != 0
    out = gaussian_blur(x, gaussian_kernels(sigma, size, active))
    ref = [F.gaussian_blur(x[i], [size, size], [float(sigma[i])] * 2) if active[i] else x[i] for i in range(24)]
    assert max_err(out, ref) <= TOL


def torchvision_jitter(img: torch.Tensor, f: torch.Tensor, order: list[int]) -> torch.Tensor:
    ops = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    for op in order:
        if op < 4:
            img = ops[op](img, float(f[op]))
    return img


def test_color_jitter_applies_each_samples_own_order():
    n = 96
    x = images(n, seed=7).float() / 255
    g = torch.Generator().manual_seed(8)
    f = torch.stack([factors(n, 0.2, 1.8, 9), factors(n, 0.2, 1.8, 10), factors(n, 0.2, 1.8, 11),
                     factors(n, -0.2, 0.2, 12)], 1)
    order = torch.rand(n, 4, generator=g).argsort(1)
    order[::5] = 4  # not jittered
    out = color_jitter(x, f, order)
    assert max_err(out, [torchvision_jitter(x[i], f[i], order[i].tolist()) for i in range(n)]) <= HUE_TOL
    torch.testing.assert_close(out[::5], x[::5], rtol=0, atol=0)


def test_one_channel_images_pass_saturation_hue_and_grayscale():
    x = images(8, seed=13)[:, :1].float() / 255
    f = factors(8, 0.2, 1.8, 14)
    assert torch.equal(adjust_saturation(x, f), x) and torch.equal(adjust_hue(x, f - 1), x)
    assert torch.equal(grayscale(x, torch.ones(8, dtype=torch.bool)), x)
    assert max_err(adjust_contrast(x, f), [F.adjust_contrast(x[i], float(f[i])) for i in range(8)]) <= TOL


# ------------------------------------------------------------------------- pipeline


def torchvision_view(img: torch.Tensor, p, i: int, spec: ViewSpec, size: int, mean, std) -> torch.Tensor:
    """The torchvision v2 functional chain for sample i with the parameters p drew."""
    c = p.crops
    out = F.resized_crop(img.float() / 255, int(c.top[i]), int(c.left[i]), int(c.height[i]), int(c.width[i]),
                         [size, size], antialias=True)
    out = F.horizontal_flip(out) if c.flip[i] else out
    out = torchvision_jitter(out, p.jitter[i], p.order[i].tolist())
    out = F.rgb_to_grayscale(out, num_output_channels=3) if p.grayscale[i] else out
    if spec.blur_p > 0 and p.blurred[i]:
        k = spec.kernel_size(size)
        out = F.gaussian_blur(out, [k, k], [float(p.sigma[i])] * 2)
    out = F.solarize(out, spec.solarize_threshold) if p.solarize[i] else out
    return F.normalize(out, mean, std)


@pytest.mark.parametrize("preset", ["simclr", "barlow_twins", "cifar"])
def test_whole_view_matches_the_torchvision_chain(preset):
    aug = instantiate(compose_config(f"augment={preset}").augment)
    x = images(48, 40, 40, seed=15)
    mean, std = aug.mean.tolist(), aug.std.tolist()
    for spec in aug.views:
        p = sample_view(spec, 48, 40, 40, torch.Generator().manual_seed(16))
        ours = apply_view(x, p, spec, (32, 32), aug.mean.reshape(1, 3, 1, 1), aug.std.reshape(1, 3, 1, 1))
        ref = [torchvision_view(x[i], p, i, spec, 32, mean, std) for i in range(48)]
        # errors in [0, 1] grow by 1/std after normalisation
        assert max_err(ours, ref) <= HUE_TOL / min(std)


def test_parameters_follow_torchvision_distributions():
    n = 10_000
    spec = ViewSpec(brightness=0.8, contrast=0.4, saturation=0.2, hue=0.1, jitter_p=0.8, grayscale_p=0.2,
                    blur_p=0.5, solarize_p=0.2, flip_p=0.5)
    p = sample_view(spec, n, 32, 32, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    jitter = v2.ColorJitter(0.8, 0.4, 0.2, 0.1)
    ref = [jitter.make_params([]) for _ in range(n)]
    for k, key in enumerate(["brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"]):
        assert ks_2samp(p.jitter[:, k].numpy(), [r[key] for r in ref]).pvalue > 1e-3, key
    # ColorJitter's order is torch.randperm(4): all 24 permutations equally likely
    jittered = p.order[:, 0] < 4
    codes = (p.order[jittered] * torch.tensor([64, 16, 4, 1])).sum(1)
    _, counts = torch.unique(codes, return_counts=True)
    assert len(counts) == 24 and chisquare(counts.numpy()).pvalue > 1e-3
    blur = v2.GaussianBlur(23, sigma=(0.1, 2.0))
    ref_sigma = [blur.make_params([])["sigma"][0] for _ in range(n)]
    assert ks_2samp(p.sigma.numpy(), ref_sigma).pvalue > 1e-3
    for name, flags, prob in [("jitter", jittered, 0.8), ("grayscale", p.grayscale, 0.2), ("blur", p.blurred, 0.5),
                              ("solarize", p.solarize, 0.2), ("flip", p.crops.flip, 0.5)]:
        assert abs(flags.float().mean().item() - prob) < 4 * math.sqrt(prob * (1 - prob) / n), name


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_make_two_reproducible_views(preset):
    aug = instantiate(compose_config(f"augment={preset}").augment)
    x = images(16)
    v1, v2_ = aug(x, torch.Generator().manual_seed(0))
    assert v1.shape == v2_.shape == (16, 3, 32, 32) and v1.dtype == torch.float32
    w1, w2 = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(v1, w1) and torch.equal(v2_, w2)
    if preset == "none":
        assert torch.equal(v1, v2_)
        torch.testing.assert_close(v1, x.float() / 255, rtol=0, atol=1e-7)
    else:
        assert not torch.equal(v1, v2_)
        assert not torch.equal(v1, aug(x, torch.Generator().manual_seed(1))[0])


@pytest.mark.parametrize("preset", PRESETS)
def test_an_override_changes_only_the_view_it_names(preset):
    base = instantiate(compose_config(f"augment={preset}").augment).views
    for i in (1, 2):
        views = instantiate(compose_config(f"augment={preset}", f"augment.view{i}.hue=0.45").augment).views
        assert views[i - 1].hue == 0.45 and views[2 - i] == base[2 - i]


def test_asymmetric_presets_blur_and_solarize_each_view_as_configured():
    aug = instantiate(compose_config("augment=barlow_twins").augment)
    n = 4000
    rates = []
    for spec in aug.views:
        p = sample_view(spec, n, 32, 32, torch.Generator().manual_seed(3))
        rates.append((p.blurred.float().mean().item(), p.solarize.float().mean().item()))
    assert rates[0] == (1.0, 0.0)
    assert abs(rates[1][0] - 0.1) < 0.02 and abs(rates[1][1] - 0.2) < 0.03


def test_output_size_and_one_channel_input():
    aug = ImageViews(ViewSpec(blur_p=0.5, solarize_p=0.5), size=24, mean=[0.5], std=[0.25])
    v1, v2_ = aug(images(8, 64, 48)[:, :1], torch.Generator().manual_seed(0))
    assert v1.shape == v2_.shape == (8, 1, 24, 24)


@pytest.mark.parametrize("kwargs, message", [
    ({"view1": ViewSpec(blur_p=1.5)}, r"augment\.view1\.blur_p=1\.5 .*\[0, 1\]"),
    ({"view1": ViewSpec(), "view2": ViewSpec(hue=0.7)}, r"augment\.view2\.hue=0\.7 .*\[0, 0\.5\]"),
    ({"view1": ViewSpec(crop_scale=(0.5, 0.2))}, r"augment\.view1\.crop_scale=\[0\.5, 0\.2\]"),
    ({"view1": ViewSpec(), "std": [0.0]}, r"augment\.std=\[0\.0\] .*> 0"),
])
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ImageViews(**kwargs)


def test_bad_inputs_are_explained():
    aug = ImageViews(ViewSpec(), mean=[0.5, 0.5], std=[0.2, 0.2])
    with pytest.raises(ConfigError, match=r"augment\.mean=.*1 or 3 values"):
        aug(images(2), torch.Generator())
    with pytest.raises(ConfigError, match=r"\(B, C, H, W\).*augment=gaussian_noise"):
        aug(torch.zeros(4, 16), torch.Generator())


@pytest.mark.slow
def test_compiled_stages_give_the_eager_views():
    spec = ViewSpec(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_p=0.5, solarize_p=0.2)
    x = images(64)
    eager = ImageViews(spec, mean=[0.5], std=[0.25])(x, torch.Generator().manual_seed(0))
    compiled = ImageViews(spec, mean=[0.5], std=[0.25], compile=True)(x, torch.Generator().manual_seed(0))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
