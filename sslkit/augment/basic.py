"""Views for the embedded data sets: additive noise (vectors) and pixel shifts (images)."""

import torch
from torch import Tensor

from sslkit.errors import ConfigError


def as_float(x: Tensor) -> Tensor:
    """uint8 images → float32 in [0, 1]; float data unchanged."""
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


class TwoViews:
    """Two views drawn independently from the same random transformation `view`.

    `view(x, generator, rows)` makes the views of `x[rows]` only, with the random values
    every sample of the whole batch x would draw: a process holding a slice of the global
    batch gets exactly the rows one process would make (sslkit.distributed.rows)."""

    def view(self, x: Tensor, generator: torch.Generator, rows: slice) -> Tensor:
        raise NotImplementedError

    def clean(self, x: Tensor) -> Tensor:
        """The input as the backbone sees it, without the random part (for evaluation)."""
        return as_float(x)

    def view_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of a sample's views (the backbone's input), given the sample's: the same."""
        return shape

    def __call__(self, x: Tensor, generator: torch.Generator, rows: slice = slice(None)) -> tuple[Tensor, Tensor]:
        return self.view(x, generator, rows), self.view(x, generator, rows)


class GaussianNoise(TwoViews):
    """x' = x + std·ε, ε ~ N(0, I) drawn per sample and per coordinate.

    With two such views of x ~ N(0, Σ) the expected cross-covariance between the views is
    Σ itself, so the data spectrum is the γ_k of the stepwise theory (docs/theory.md).

    Args:
        std: Standard deviation of the added noise.
    """

    def __init__(self, std: float = 0.1) -> None:
        self.std = std

    def view(self, x: Tensor, generator: torch.Generator, rows: slice = slice(None)) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device)[rows]
        return as_float(x[rows]) + self.std * noise


class ShiftNoise(TwoViews):
    """Image views: subtract `mean`, shift each image by its own random integer offset
    (dy, dx) ∈ [−max_shift, max_shift]² with zero fill, then add N(0, std²) noise.

    Args:
        max_shift: Largest shift in pixels, in each direction.
        std: Standard deviation of the added noise.
        mean: Value subtracted from every pixel first.
    """

    def __init__(self, max_shift: int = 1, std: float = 0.1, mean: float = 0.0) -> None:
        self.max_shift, self.std, self.mean = max_shift, std, mean

    def clean(self, x: Tensor) -> Tensor:
        """Unshifted and noise-free: x − mean."""
        return as_float(x) - self.mean

    def view(self, x: Tensor, generator: torch.Generator, rows: slice = slice(None)) -> Tensor:
        if x.ndim != 4:
            raise ConfigError(
                f"augment=digits shifts images and expects batches of shape (B, C, H, W), "
                f"got {tuple(x.shape)}. For vector data (e.g. data=synthetic) use "
                f"augment=gaussian_noise."
            )
        s = self.max_shift
        dy, dx = torch.randint(0, 2 * s + 1, (2, len(x), 1), generator=generator, device=x.device)[:, rows]
        noise = torch.randn(x.shape, generator=generator, device=x.device)[rows]
        x = x[rows]
        b, c, h, w = x.shape
        padded = torch.nn.functional.pad(as_float(x) - self.mean, (s, s, s, s))
        rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        shifted = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)
        return shifted + self.std * noise
