"""Eigenvalue trajectories kept at a dashboard's cadence and drawn as heat-map images."""

import numpy as np
from matplotlib import colormaps

from sslkit.errors import ConfigError


class SpectrumHistory:
    """The top `modes` eigenvalues of each matrix at every `every`-th step (`due`), for the
    dashboard `sink` (the name its options have under logger.)."""

    def __init__(self, sink: str, every: int, modes: int) -> None:
        for key, value in (("spectrum_every", every), ("modes", modes)):
            if value < 1:
                raise ConfigError(f"logger.{sink}.{key}={value} is not allowed: use an integer >= 1.")
        self.every, self.modes = every, modes
        self.steps: list[int] = []
        self.values: dict[str, list[np.ndarray]] = {}

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def add(self, step: int, spectra: dict[str, np.ndarray]) -> None:
        self.steps.append(step)
        for name, eig in spectra.items():
            self.values.setdefault(name, []).append(np.asarray(eig[: self.modes], dtype=np.float64))

    def matrix(self, name: str) -> np.ndarray:
        """(modes, steps): one row per mode, largest first."""
        return np.stack(self.values[name], axis=1)

    def image(self, name: str, floor: float = 1e-8, scale: int = 6) -> np.ndarray:
        """uint8 (H, W, 3): rows are modes (largest on top), columns logged steps, colour
        log₁₀ λ (viridis; λ ≤ `floor`, including negative values, at the bottom of the scale);
        each cell is `scale` pixels tall and at least one pixel wide."""
        log_values = np.log10(np.clip(self.matrix(name), floor, None))
        low, high = log_values.min(), log_values.max()
        unit = (log_values - low) / (high - low) if high > low else np.zeros_like(log_values)
        rgb = (colormaps["viridis"](unit)[..., :3] * 255).astype(np.uint8)
        width = max(1, 256 // rgb.shape[1])
        return rgb.repeat(scale, axis=0).repeat(width, axis=1)
