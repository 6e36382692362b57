"""The two matrices whose spectra show stepwise learning (Simon et al. 2023, §3)."""

import torch
from torch import Tensor


@torch.no_grad()
def eigenvalues(z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
    """Descending eigenvalues of, for (N, D) embeddings z1, z2 of two views:

    - "cov":   the covariance of view 1, Σ = z̄1ᵀ z̄1 / (N − 1), z̄1 centred per dimension;
    - "xcorr": the symmetrised cross-correlation C = (z1ᵀ z2 + z2ᵀ z1) / 2N, uncentred and
      unnormalised: the C of the simplified Barlow Twins loss ‖C − I‖²_F, whose
      eigenvalues rise from ≈ 0 to 1 one at a time under small initialisation.

    Computed in float64 on the embeddings' device from detached copies."""
    z1, z2 = z1.detach().double(), z2.detach().double()
    n = z1.shape[0]
    centred = z1 - z1.mean(dim=0)
    cov = centred.T @ centred / max(n - 1, 1)
    cross = z1.T @ z2 / n
    xcorr = (cross + cross.T) / 2
    return {
        "cov": torch.linalg.eigvalsh(cov).flip(0),
        "xcorr": torch.linalg.eigvalsh(xcorr).flip(0),
    }
