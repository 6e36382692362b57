"""SimCLR NT-Xent loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslkit.errors import ConfigError
from sslkit.losses.output import LossOutput, check_views


class NTXentLoss(nn.Module):
    r"""SimCLR normalised-temperature cross entropy, NT-Xent (Chen et al., 2020, eq. 1).

    The 2N embeddings z = cat(z1, z2) are L2-normalised (``normalize=True``, SimCLR's
    cosine similarity; ``False`` keeps them raw) and s_ij = z_iᵀz_j / τ. Anchor i's
    positive is p(i) = i ± N (the other view of the same sample), and::

        ℓ_i = −log( exp(s_{i,p(i)}) / Σ_{k≠i} exp(s_ik) )
        L   = (1/2N) Σ_i ℓ_i

    i.e. a cross entropy of the positive against the other 2N − 1 embeddings
    (the positive and 2N − 2 negatives).

    With ``normalize=False`` and small embeddings (s ≈ 0), a second-order expansion of the
    log-sum-exp gives, for N ≫ 1, L ≈ log(2N − 1) − tr(C̄)/τ + tr(Σ S)/(2τ²): C̄ is the
    symmetrised cross-correlation of the embeddings centred by their mean over both views
    (the mean cancels between the positive and the average negative), Σ and S are the
    covariance and second moment of all 2N embeddings.
    Near 0 it grows the modes of C̄ exponentially, as the simplified Barlow Twins loss does
    those of C. To this order a mode learned alone stops at C̄ = ρ²τ, ρ ≤ 1 the correlation of
    its two views (docs/theory.md, other losses).
    With ``normalize=True`` the loss depends on the directions z/‖z‖ only: scaling the
    embeddings (or the last linear layer) changes nothing but the gradient's size.

    Args:
        temperature: τ > 0.
        normalize: Cosine similarity (True, SimCLR) or the dot product of raw embeddings.

    Terms: ``"alignment"`` = mean_i (−s_{i,p(i)}),
    ``"uniformity"`` = mean_i log Σ_{k≠i} exp(s_ik).
    """

    def __init__(self, temperature: float = 0.5, normalize: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = temperature
        self.normalize = normalize

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}"

    def spectrum_view(self, z: torch.Tensor) -> torch.Tensor:
        """The embeddings as this loss sees them. ``normalize=True``: on the unit sphere,
        z/‖z‖ per sample; the spectrum monitor's ``xcorr`` is C = (ẑ1ᵀẑ2 + ẑ2ᵀẑ1)/2N of
        these, whose trace is the mean cosine similarity of the positive pairs (≤ 1, so at
        most one eigenvalue reaches ½). ``False``: centred over the batch and divided by
        √τ, so ``xcorr`` is C̄/τ (each view centred by its own mean, which differs from the
        mean over both by sampling noise), whose eigenvalues rise from ≈ 0 and a mode learned
        alone stops near ρ² ≤ 1 (the class docstring)."""
        if self.normalize:
            return F.normalize(z, dim=1)
        return (z - z.mean(0)) / self.temperature ** 0.5

    def check_batch(self, n: int) -> None:
        """At N = 1 there are 2N − 2 = 0 negatives and the loss is exactly 0."""
        if n < 2:
            raise ConfigError(f"data.batch_size={n} is too small for SimCLR (NT-Xent): with one sample there are "
                              f"no negatives and the loss is exactly 0. Use data.batch_size>=2.")

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_views(z1, z2)
        n = z1.shape[0]
        z = torch.cat([z1, z2])
        if self.normalize:
            z = F.normalize(z, dim=1)
        s = z @ z.T / self.temperature
        idx = torch.arange(2 * n, device=z.device)
        alignment = -s[idx, (idx + n) % (2 * n)].mean()
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        uniformity = torch.logsumexp(s.masked_fill(self_mask, float("-inf")), dim=1).mean()
        return LossOutput(
            alignment + uniformity, {"alignment": alignment, "uniformity": uniformity}
        )
