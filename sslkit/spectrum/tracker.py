"""Top eigenvalues of a slowly changing sequence of symmetric matrices, by warm-started
subspace iteration with Rayleigh–Ritz (Saad, *Numerical Methods for Large Eigenvalue
Problems*, 2011, Alg. 5.3).

The tracker keeps an orthonormal D×p basis V (p = k + oversampling) from one step to the
next; the first matrix seeds it with its exact top-p eigenvectors. At each step, with M
the new matrix:

    H = Vᵀ(MV),  H = UΘUᵀ  (Ritz values θ, descending),  X = VU,  rᵢ = ‖MXᵢ − θᵢXᵢ‖
    stop when max_{i≤k} rᵢ ≤ tol·|θ₁|; else V ← orth(MX) and repeat (at most max_iters).

For symmetric M every Ritz value θᵢ lies within rᵢ of an eigenvalue of M (Parlett, *The
Symmetric Eigenvalue Problem*, Thm 4.5.1), so on convergence each of the k stored values
is within tol·|θ₁| of an eigenvalue. Because consecutive training steps change M little,
the previous basis is already close and one or two products with M usually suffice. The
iteration favours the eigenvalues largest in magnitude; for an indefinite matrix (the
cross-correlation) the monitor's periodic exact decomposition checks the result.
"""

import torch
from torch import Tensor

from sslkit.spectrum.compute import Factored


class SubspaceTracker:
    def __init__(self, dim: int, k: int, oversample: int, tol: float, max_iters: int,
                 device: torch.device, seed: int = 0) -> None:
        self.k, self.tol, self.max_iters = k, tol, max_iters
        self.width = min(dim, k + oversample)
        self.generator = torch.Generator(device).manual_seed(seed)
        self.basis: Tensor | None = None

    def seed(self, m: Factored) -> None:
        """Start from the exact top-p eigenvectors of `m` (random directions fill the basis
        when `m` has fewer than p)."""
        vectors = m.eigh()[1][:, : self.width]
        fill = torch.randn(m.dim, self.width - vectors.shape[1], generator=self.generator,
                           device=vectors.device, dtype=vectors.dtype)
        self.basis = torch.linalg.qr(torch.cat([vectors, fill], dim=1)).Q

    def update(self, m: Factored) -> tuple[Tensor, float, int]:
        """(the k largest Ritz values of `m`, descending; the residual bound max rᵢ/|θ₁| over
        them; the number of products with `m`). The basis moves to the Ritz vectors."""
        if self.basis is None:
            self.seed(m)
        v = self.basis
        for it in range(1, self.max_iters + 1):
            mv = m.matmul(v)
            h = v.T @ mv
            theta, u = torch.linalg.eigh((h + h.T) / 2)
            theta, u = theta.flip(0), u.flip(1)
            x, mx = v @ u, mv @ u
            residual = (mx - x * theta).norm(dim=0)[: self.k].max()
            bound = float(residual / theta.abs().max().clamp_min(torch.finfo(theta.dtype).tiny))
            if bound <= self.tol or it == self.max_iters:
                break
            v = torch.linalg.qr(mx).Q
        self.basis = x
        return theta[: self.k], bound, it
