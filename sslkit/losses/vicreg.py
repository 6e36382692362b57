"""VICReg loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslkit.errors import ConfigError
from sslkit.losses.output import LossOutput, check_views, off_diagonal


class VICRegLoss(nn.Module):
    r"""Variance-invariance-covariance regularisation (Bardes et al., 2022, eqs. 1-6).

    Follows the official ``main_vicreg.py``. With z̄ a view centred over the batch,
    std_d = sqrt(unbiased var_d + eps) and cov = z̄ᵀz̄ / (N − 1)::

        s(z1, z2) = (1/ND) Σ_nd (z1_nd − z2_nd)²                     (invariance)
        v(z)      = (1/D) Σ_d max(0, 1 − std_d)                     (variance)
        c(z)      = (1/D) Σ_{i≠j} cov_ij²                           (covariance)
        L = sim_coeff · s(z1, z2) + std_coeff · (v(z1) + v(z2)) / 2
            + cov_coeff · (c(z1) + c(z2))

    The paper's eq. 6 sums v(z1) + v(z2); the official code averages them, and some
    libraries drop that /2. sslkit follows the official code.

    Args:
        sim_coeff: Weight of the invariance term (λ in the paper).
        std_coeff: Weight of the variance term (μ).
        cov_coeff: Weight of the covariance term (ν).
        eps: Added to the variance before the square root.

    Terms (coefficient-weighted): ``"invariance"``, ``"variance"``, ``"covariance"``.
    Needs N ≥ 2 samples per view.
    """

    def __init__(
        self,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if min(sim_coeff, std_coeff, cov_coeff) < 0 or not eps > 0:
            raise ValueError(f"sim_coeff, std_coeff and cov_coeff must be >= 0 and eps > 0 (a negative weight "
                             f"rewards what its term penalises), got {sim_coeff}, {std_coeff}, {cov_coeff}, {eps}.")
        self.sim_coeff = sim_coeff
        self.std_coeff = std_coeff
        self.cov_coeff = cov_coeff
        self.eps = eps

    def extra_repr(self) -> str:
        return (
            f"sim_coeff={self.sim_coeff}, std_coeff={self.std_coeff}, "
            f"cov_coeff={self.cov_coeff}, eps={self.eps}"
        )

    def spectrum_view(self, z: torch.Tensor) -> torch.Tensor:
        """The embeddings as this loss sees them: centred over the batch (its variance and
        covariance terms are those of z̄; the mean is free), so the spectrum monitor's
        ``xcorr`` is C = (z̄1ᵀz̄2 + z̄2ᵀz̄1)/2N, and ``xcorr_raw`` keeps the mean's part."""
        return z - z.mean(0)

    def check_batch(self, n: int) -> None:
        """The unbiased variance and covariance divide by N − 1."""
        if n < 2:
            raise ConfigError(f"data.batch_size={n} is too small for VICReg: its variance and covariance divide "
                              f"by N - 1 = 0. Use data.batch_size>=2.")

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_views(z1, z2)
        n, d = z1.shape
        if n < 2:
            raise ValueError(
                "VICRegLoss needs at least 2 samples per view (its variance is unbiased), "
                f"got N={n}."
            )
        repr_loss = F.mse_loss(z1, z2)
        z1 = z1 - z1.mean(0)
        z2 = z2 - z2.mean(0)
        std1 = torch.sqrt(z1.var(0) + self.eps)
        std2 = torch.sqrt(z2.var(0) + self.eps)
        std_loss = F.relu(1 - std1).mean() / 2 + F.relu(1 - std2).mean() / 2
        cov1 = z1.T @ z1 / (n - 1)
        cov2 = z2.T @ z2 / (n - 1)
        cov_loss = off_diagonal(cov1).pow(2).sum() / d + off_diagonal(cov2).pow(2).sum() / d
        invariance = self.sim_coeff * repr_loss
        variance = self.std_coeff * std_loss
        covariance = self.cov_coeff * cov_loss
        return LossOutput(
            invariance + variance + covariance,
            {"invariance": invariance, "variance": variance, "covariance": covariance},
        )
