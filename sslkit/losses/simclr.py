"""SimCLR NT-Xent loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslkit.errors import ConfigError
from sslkit.losses.output import LossOutput, check_views


class NTXentLoss(nn.Module):
    r"""SimCLR normalised-temperature cross entropy, NT-Xent (Chen et al., 2020, eq. 1).

    The 2N embeddings z = cat(z1, z2) are L2-normalised and s_ij = z_iᵀz_j / τ. Anchor
    i's positive is p(i) = i ± N (the other view of the same sample), and::

        ℓ_i = −log( exp(s_{i,p(i)}) / Σ_{k≠i} exp(s_ik) )
        L   = (1/2N) Σ_i ℓ_i

    i.e. a cross entropy of the positive against the other 2N − 1 embeddings
    (the positive and 2N − 2 negatives).

    Args:
        temperature: τ > 0.

    Terms: ``"alignment"`` = mean_i (−s_{i,p(i)}),
    ``"uniformity"`` = mean_i log Σ_{k≠i} exp(s_ik).
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def spectrum_view(self, z: torch.Tensor) -> torch.Tensor:
        """The embeddings as this loss sees them: on the unit sphere, z/‖z‖ per sample. The
        spectrum monitor's ``xcorr`` is C = (ẑ1ᵀẑ2 + ẑ2ᵀẑ1)/2N of these, whose trace is the
        mean cosine similarity of the positive pairs (the alignment term up to −1/τ)."""
        return F.normalize(z, dim=1)

    def check_batch(self, n: int) -> None:
        """At N = 1 there are 2N − 2 = 0 negatives and the loss is exactly 0."""
        if n < 2:
            raise ConfigError(f"data.batch_size={n} is too small for SimCLR (NT-Xent): with one sample there are "
                              f"no negatives and the loss is exactly 0. Use data.batch_size>=2.")

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_views(z1, z2)
        n = z1.shape[0]
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        s = z @ z.T / self.temperature
        idx = torch.arange(2 * n, device=z.device)
        alignment = -s[idx, (idx + n) % (2 * n)].mean()
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        uniformity = torch.logsumexp(s.masked_fill(self_mask, float("-inf")), dim=1).mean()
        return LossOutput(
            alignment + uniformity, {"alignment": alignment, "uniformity": uniformity}
        )
