"""The image view pipeline of SimCLR, BYOL, Barlow Twins and VICReg, for whole batches.

Each view applies, in torchvision's order: random resized crop → horizontal flip →
colour jitter (with prob. jitter_p; its four ops in a random order) → grayscale →
Gaussian blur → solarize → (x − mean)/std. Every sample draws its own parameters, with
torchvision's distributions, from the generator passed in; the two views have their own
settings (`ViewSpec`), so the asymmetric recipes (BYOL, Barlow Twins, VICReg: blur and
solarize probabilities that differ between the views) are settings, not code.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from sslkit.augment.blur import depthwise, gaussian_blur, gaussian_kernels
from sslkit.augment.color import adjust_hue, blend_step, color_jitter, grayscale, solarize
from sslkit.augment.geometry import Crops, resized_crop, sample_crops
from sslkit.errors import ConfigError


@dataclass
class ViewSpec:
    """Settings of one view; a probability of 0 switches an op off (it is not computed).

    Attributes:
        crop_scale: Range of the crop's area as a fraction of the image (null: the whole image, no crop).
        crop_ratio: Range of the crop's aspect ratio w/h.
        flip_p: Probability of a horizontal flip.
        jitter_p: Probability of the colour jitter (brightness, contrast, saturation, hue).
        brightness: v of the brightness factor ~ U(max(0, 1 − v), 1 + v).
        contrast: v of the contrast factor ~ U(max(0, 1 − v), 1 + v).
        saturation: v of the saturation factor ~ U(max(0, 1 − v), 1 + v).
        hue: v of the hue shift ~ U(−v, v), in turns of the colour wheel (v ≤ ½).
        grayscale_p: Probability of turning the view grey.
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Range of the blur's σ in pixels.
        blur_kernel: Blur kernel size as a fraction of the view's height, made odd (SimCLR: 0.1, 3 px at 32 px).
        solarize_p: Probability of solarization (x → 1 − x for x at or above the threshold).
        solarize_threshold: Solarization threshold, on the [0, 1] scale.
    """

    crop_scale: tuple[float, float] | None = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: float = 0.1
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.crop_scale is not None:
            self.crop_scale = (float(self.crop_scale[0]), float(self.crop_scale[1]))
        self.crop_ratio = (float(self.crop_ratio[0]), float(self.crop_ratio[1]))
        self.blur_sigma = (float(self.blur_sigma[0]), float(self.blur_sigma[1]))

    def check(self, key: str) -> None:
        """Raise a ConfigError naming `key`.<field> for a value outside its range."""
        def bad(name: str, value: object, allowed: str) -> None:
            raise ConfigError(f"{key}.{name}={value} is not allowed: {allowed}.")

        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p", "solarize_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, getattr(self, name), "use a value in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                bad(name, getattr(self, name), "use a value >= 0 (0 switches it off)")
        if not 0 <= self.hue <= 0.5:
            bad("hue", self.hue, "use a value in [0, 0.5] (turns of the colour wheel)")
        if self.crop_scale is not None and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            bad("crop_scale", list(self.crop_scale), "use [lo, hi] with 0 < lo <= hi <= 1, or null")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            bad("crop_ratio", list(self.crop_ratio), "use [lo, hi] with 0 < lo <= hi")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            bad("blur_sigma", list(self.blur_sigma), "use [lo, hi] with 0 < lo <= hi")
        if not 0 < self.blur_kernel <= 1:
            bad("blur_kernel", self.blur_kernel, "use a fraction of the view size in (0, 1]")

    @property
    def jitters(self) -> bool:
        return self.jitter_p > 0 and max(self.brightness, self.contrast, self.saturation, self.hue) > 0

    def kernel_size(self, height: int) -> int:
        """2·⌊blur_kernel·height/2⌋ + 1: odd, e.g. 23 at 224 px and 3 at 32 px for 10 %."""
        return 2 * math.floor(self.blur_kernel * height / 2) + 1


@dataclass
class ViewParams:
    """Per-sample parameters of one view (see `sample_view`)."""

    crops: Crops
    jitter: Tensor  # (B, 4) brightness, contrast, saturation factors and hue shift
    order: Tensor  # (B, 4) jitter op order; 4 = skipped
    grayscale: Tensor  # (B,) bool
    blurred: Tensor  # (B,) bool
    sigma: Tensor  # (B,) blur σ in pixels
    solarize: Tensor  # (B,) bool

    def __getitem__(self, rows: slice) -> "ViewParams":
        """The parameters of the samples `rows`."""
        crops = Crops(*(getattr(self.crops, f.name)[rows] for f in fields(Crops)))
        return ViewParams(crops, *(getattr(self, f.name)[rows] for f in fields(self)[1:]))


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def sample_view(spec: ViewSpec, n: int, height: int, width: int, g: torch.Generator) -> ViewParams:
    """Draw the parameters of n views of height × width images."""
    if spec.crop_scale is None:
        full = torch.ones(n, dtype=torch.long, device=g.device)
        flip = torch.rand(n, generator=g, device=g.device) < spec.flip_p
        crops = Crops(0 * full, 0 * full, height * full, width * full, flip)
    else:
        crops = sample_crops(n, height, width, spec.crop_scale, spec.crop_ratio, spec.flip_p, g)
    jittered = torch.rand(n, generator=g, device=g.device) < spec.jitter_p
    jitter = torch.stack([
        _uniform(n, max(0.0, 1 - spec.brightness), 1 + spec.brightness, g),
        _uniform(n, max(0.0, 1 - spec.contrast), 1 + spec.contrast, g),
        _uniform(n, max(0.0, 1 - spec.saturation), 1 + spec.saturation, g),
        _uniform(n, -spec.hue, spec.hue, g),
    ], 1)
    order = torch.rand(n, 4, generator=g, device=g.device).argsort(1)  # uniform permutations
    order = torch.where(jittered[:, None], order, 4)
    gray = torch.rand(n, generator=g, device=g.device) < spec.grayscale_p
    blurred = torch.rand(n, generator=g, device=g.device) < spec.blur_p
    sigma = _uniform(n, *spec.blur_sigma, g)
    solar = torch.rand(n, generator=g, device=g.device) < spec.solarize_p
    return ViewParams(crops, jitter, order, gray, blurred, sigma, solar)


def finish(v: Tensor, p: ViewParams, spec: ViewSpec, mean: Tensor, std: Tensor,
           convolve: Callable[[Tensor, Tensor], Tensor] = depthwise) -> Tensor:
    """Grayscale → blur (its convolutions: `convolve`) → solarize → (v − mean)/std, skipping
    ops with probability 0."""
    if spec.grayscale_p > 0:
        v = grayscale(v, p.grayscale)
    if spec.blur_p > 0:
        v = gaussian_blur(v, gaussian_kernels(p.sigma, spec.kernel_size(v.shape[-2]), p.blurred), convolve)
    if spec.solarize_p > 0:
        v = solarize(v, spec.solarize_threshold, p.solarize)
    return (v - mean) / std


@dataclass(frozen=True)
class Stages:
    """The stages of a view, each compiled on its own with `compiled()`. The colour jitter
    steps stay separate calls: fused into one kernel, every step would recompute the steps
    before it for each of the three channels it reads. The blur's depthwise convolutions
    stay uncompiled (inductor's are slower than ATen's on the CPU)."""

    crop: Callable = resized_crop
    blend: Callable = blend_step
    hue: Callable = adjust_hue
    finish: Callable = finish
    convolve: Callable = depthwise

    @classmethod
    def compiled(cls) -> "Stages":
        return cls(*(torch.compile(f) for f in (resized_crop, blend_step, adjust_hue, finish)),
                   torch.compiler.disable(depthwise))


def apply_view(
    x: Tensor, p: ViewParams, spec: ViewSpec, size: tuple[int, int], mean: Tensor, std: Tensor,
    stages: Stages = Stages(),
) -> Tensor:
    """One view of the batch x (B, C, H, W; uint8 or float in [0, 1]) with parameters p."""
    gain = 1 / 255 if x.dtype == torch.uint8 else 1.0
    if spec.crop_scale is None and spec.flip_p == 0 and size == tuple(x.shape[-2:]):
        v = x.float() * gain
    else:
        v = stages.crop(x, p.crops, size, gain)
    if spec.jitters:
        v = color_jitter(v, p.jitter, p.order, spec.hue > 0, stages.blend, stages.hue)
    return stages.finish(v, p, spec, mean, std, stages.convolve)


class ImageViews:
    """Two views of a batch of images, `aug(x, generator) -> (view1, view2)`; view2=None
    gives the second view the settings of the first.

    x: uint8 (B, C, H, W) (or float in [0, 1]) with C = 1 or 3, on the generator's device;
    views: float32 (B, C, size, size), normalised per channel by `mean` and `std`. With
    `compile=True` the stages go through `torch.compile` (`Stages.compiled`; the first
    call for a batch shape compiles); `compile="auto"` compiles for batches on CUDA.

    Args:
        view1: Settings of view 1 (augment.view1.*).
        view2: Settings of view 2 (null: those of view 1).
        size: Side in pixels of the square views (null: the input's size).
        mean: Per-channel mean subtracted from the views (one value: every channel).
        std: Per-channel standard deviation the views are divided by.
        compile: Run the stages through torch.compile: true, false or auto (on CUDA).
    """

    def __init__(
        self,
        view1: ViewSpec,
        view2: ViewSpec | None = None,
        size: int | None = None,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        compile: bool | str = "auto",
    ) -> None:
        # a view's fields as a mapping: the config of a checkpoint (sslkit-eval), without the schema
        view1, view2 = (ViewSpec(**v) if isinstance(v, Mapping) else v for v in (view1, view2))
        view2 = view1 if view2 is None else view2
        for i, spec in enumerate((view1, view2), 1):
            spec.check(f"augment.view{i}")
        if size is not None and size < 1:
            raise ConfigError(f"augment.size={size} is not allowed: use a positive size in pixels, or null "
                              f"to keep the input size.")
        if min(std) <= 0:
            raise ConfigError(f"augment.std={list(std)} is not allowed: every value must be > 0.")
        if compile not in (True, False, "auto"):
            raise ConfigError(f"augment.compile={compile} is not allowed: use true, false or auto (on CUDA).")
        self.views, self.size, self.compile = (view1, view2), size, compile
        self.mean, self.std = torch.tensor(list(mean)), torch.tensor(list(std))
        self.stages: Stages | None = None  # chosen at the first batch, by its device

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ConfigError(
                f"The image views (augment=simclr, byol, barlow_twins, vicreg, cifar, none) expect batches of "
                f"shape (B, C, H, W) with C = 1 or 3, got "
                f"{tuple(x.shape)}. For vector data (e.g. data=synthetic) use augment=gaussian_noise."
            )
        c = x.shape[1]
        if len(self.mean) not in (1, c) or len(self.std) not in (1, c):
            values = x.float() / (255 if x.dtype == torch.uint8 else 1)
            mean, std = values.mean((0, 2, 3)).tolist(), values.std((0, 2, 3)).tolist()

            def show(t):
                return "[" + ",".join(f"{v:.3g}" for v in t) + "]"

            raise ConfigError(
                f"augment.mean={show(self.mean.tolist())} and augment.std={show(self.std.tolist())} are "
                f"per-channel statistics for {len(self.mean)}-channel images, but the data has {c}-channel "
                f"images. Give {'1 value' if c == 1 else f'1 or {c} values'} each, e.g. this batch's statistics: augment.mean={show(mean)} "
                f"augment.std={show(std)}."
            )

    def view_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of an image's views (the backbone's input): (C, size, size) when `size`
        is set, else the image's (C, H, W)."""
        return shape if self.size is None else (shape[0], self.size, self.size)

    def clean(self, x: Tensor) -> Tensor:
        """The whole image, resized to `size` (antialiased bilinear) when set, normalised:
        the evaluation view (no crop, flip, jitter, blur or solarization)."""
        self._check(x)
        v = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if self.size is not None and tuple(v.shape[-2:]) != (self.size, self.size):
            v = torch.nn.functional.interpolate(v, (self.size, self.size), mode="bilinear", antialias=True)
        return (v - self.mean.to(v.device).reshape(1, -1, 1, 1)) / self.std.to(v.device).reshape(1, -1, 1, 1)

    def __call__(self, x: Tensor, generator: torch.Generator, rows: slice = slice(None)) -> tuple[Tensor, Tensor]:
        """The two views of x[rows]; every sample's parameters are those it draws as a
        sample of the whole batch x (see TwoViews)."""
        self._check(x)
        b, c, h, w = x.shape
        size = (self.size, self.size) if self.size is not None else (h, w)
        if self.stages is None:
            compile = self.compile is True or (self.compile == "auto" and x.is_cuda)
            self.stages = Stages.compiled() if compile else Stages()
        if self.mean.device != x.device:  # moved once, not at every step
            self.mean, self.std = (t.to(x.device) for t in (self.mean, self.std))
        mean, std = (t.reshape(1, -1, 1, 1) for t in (self.mean, self.std))
        v1, v2 = (
            apply_view(x[rows], sample_view(spec, b, h, w, generator)[rows], spec, size, mean, std, self.stages)
            for spec in self.views
        )
        return v1, v2
