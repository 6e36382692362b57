"""Barlow Twins loss."""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn

from sslkit.errors import ConfigError
from sslkit.losses.output import LossOutput, check_views, off_diagonal



class Normalize(str, Enum):
    batchnorm = "batchnorm"  # per view and dimension, over the batch
    none = "none"


class BarlowTwinsLoss(nn.Module):
    r"""Barlow Twins redundancy-reduction loss (Zbontar et al., 2021, eq. 1).

    With ``normalize="batchnorm"`` each view is standardised per dimension over the
    batch, as ``BatchNorm1d(affine=False)`` does in training mode:
    ẑ = (z − mean) / sqrt(biased var + 1e-5); with ``"none"`` it is used as is. Then,
    as in the official ``main.py``::

        C_ij = (1/N) Σ_n ẑ1_ni ẑ2_nj
        L    = scale · ( Σ_i (1 − C_ii)²  +  λ Σ_i Σ_{j≠i} C_ij² )

    With ``symmetric=True``, C is replaced by (C + Cᵀ)/2 first. The setting
    ``normalize="none", lambd=1, symmetric=True`` gives ‖C − I‖²_F with
    C = (z1ᵀz2 + z2ᵀz1) / (2N), the simplified loss of the stepwise analysis of
    Simon et al. (2023), "On the stepwise nature of self-supervised learning".

    Args:
        lambd: Weight λ of the redundancy (off-diagonal) term.
        scale: Factor multiplying the whole loss.
        normalize: batchnorm (each view standardised per dimension over the batch) or none.
        symmetric: Symmetrise C before computing the loss.

    Terms: ``"invariance"`` = scale · Σ_i (1 − C_ii)²,
    ``"redundancy"`` = scale · λ · Σ_{i≠j} C_ij².
    """

    def __init__(
        self,
        lambd: float = 0.0051,
        scale: float = 1.0,
        normalize: Normalize = Normalize.batchnorm,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        if normalize not in tuple(Normalize):
            raise ValueError(f"normalize must be one of {tuple(m.value for m in Normalize)}, got {normalize!r}.")
        if lambd < 0 or not scale > 0:
            raise ValueError(f"lambd must be >= 0 and scale > 0 (a negative weight rewards what the term "
                             f"penalises), got lambd={lambd}, scale={scale}.")
        self.lambd = lambd
        self.scale = scale
        self.normalize = normalize
        self.symmetric = symmetric

    def extra_repr(self) -> str:
        return (
            f"lambd={self.lambd}, scale={self.scale}, "
            f"normalize={self.normalize!r}, symmetric={self.symmetric}"
        )

    def _normalize(self, z: torch.Tensor) -> torch.Tensor:
        if self.normalize == "none":
            return z
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)

    def spectrum_view(self, z: torch.Tensor) -> torch.Tensor:
        """The embeddings as this loss sees them before forming C: ẑ (batch-normalised,
        or z itself with ``normalize="none"``). The spectrum monitor's ``xcorr`` is the
        symmetrised C of these views, so its eigenvalues are those the loss drives to 1."""
        return self._normalize(z)

    def check_batch(self, n: int) -> None:
        """Batch normalisation needs two samples: one is standardised to 0, C = 0 and the
        loss is the constant D."""
        if n < 2 and self.normalize == "batchnorm":
            raise ConfigError(f"data.batch_size={n} is too small for Barlow Twins with loss.normalize=batchnorm: "
                              f"one sample standardises to 0, so C = 0 and the loss is a constant. Use "
                              f"data.batch_size>=2 (or loss=barlow_twins_simplified, which does not normalise).")

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_views(z1, z2)
        c = self._normalize(z1).T @ self._normalize(z2) / z1.shape[0]
        if self.symmetric:
            c = (c + c.T) / 2
        invariance = self.scale * (1 - torch.diagonal(c)).pow(2).sum()
        redundancy = self.scale * self.lambd * off_diagonal(c).pow(2).sum()
        return LossOutput(
            invariance + redundancy, {"invariance": invariance, "redundancy": redundancy}
        )
