"""Top eigenvalues of a slowly changing sequence of symmetric matrices, by warm-started
subspace iteration with Rayleigh–Ritz (Saad, *Numerical Methods for Large Eigenvalue
Problems*, 2011, Alg. 5.3), split so that the device never waits for the host.

The tracker keeps a D×p basis V (p = k + oversampling) from one step to the next; the
first matrix seeds it with its exact top-p eigenvectors. At each step, with M the new
matrix and σ ≥ 0 a shift (below):

    device, `iters` times:  W = MV;  V ← orth(W + σV)     (the last W is of the V in use)
    device, once:           H = VᵀW,  H₂ = WᵀW,  G = VᵀV    (p×p each, `SubspaceTracker.step`)
    host, later, in bulk:   Rayleigh–Ritz `ritz(H, H₂, G)`: Hu = θGu (θ descending),
                            rᵢ = ‖MXᵢ − θᵢXᵢ‖ = (uᵢᵀH₂uᵢ − θᵢ²)^½ for Xᵢ = Vuᵢ, uᵢᵀGuᵢ = 1.

The iteration count is fixed, so nothing on the device depends on a value the host would
have to read. orth is Cholesky QR, twice, in float64 (no LAPACK error check, hence no
synchronisation); a direction W lost to rounding or to rank deficiency is replaced by a
random one, which also lets a newly rising mode enter the basis.

Precision: for symmetric M every Ritz value θᵢ lies within rᵢ of an eigenvalue of M
(Parlett, *The Symmetric Eigenvalue Problem*, Thm 4.5.1), and θᵢ ≤ λᵢ (Cauchy interlacing).
The error of θᵢ falls as (|λ_{p+1}|/|λᵢ|)^{2·iters} from a start whose span is close to
the top eigenvectors: it suits a matrix that changes little from step to step. With a
new batch every step and a flat spectrum (a network at initialisation, 2N ≫ p) the
eigenvectors are redrawn by every batch: at D = 2048, batch 256, two iterations were off
by 0.2·|λ₁| and 32 by 8·10⁻⁴·|λ₁| (`python scripts/bench_spectrum.py methods`), which is
why the monitor decomposes such a matrix exactly up to `spectrum.exact_max` (512). On a
ResNet-18 at batch 32 (p = 32 of 2N = 64) two iterations stayed within 10⁻⁴·|λ₁| except
right after the first update, 0.63·|λ₁|: a start is only as good as the last step's matrix.
Subspace iteration favours the eigenvalues largest in *magnitude*; the shift σ, set from
the most negative eigenvalue seen so far (`SpectrumMonitor` updates it from the host's
results), makes M + σI positive semi-definite, so that the k largest eigenvalues of an
indefinite matrix (a cross-correlation) are those it converges to. The monitor's periodic
exact decomposition checks the result (`track_err`).
"""

import numpy as np
import torch
from torch import Tensor

from sslkit.spectrum.compute import Factored


class SubspaceTracker:
    def __init__(self, dim: int, k: int, oversample: int, iters: int, device: torch.device,
                 dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        self.k, self.iters = k, iters
        self.width = min(dim, k + oversample)
        self.generator = torch.Generator(device).manual_seed(seed)
        self.basis: Tensor | None = None

    def seed(self, m: Factored) -> None:
        """Start from the exact top-p eigenvectors of `m` (random directions fill the basis
        when `m` has fewer than p). On CUDA the decomposition waits for the device, once."""
        vectors = m.eigh()[1][:, : self.width]
        self.basis = self._orth(torch.cat([vectors, self._random(m.dim, self.width - vectors.shape[1],
                                                                  vectors)], dim=1))

    def step(self, m: Factored, shift: float = 0.0) -> Tensor:
        """(3, p, p): H = VᵀMV, H₂ = (MV)ᵀ(MV), G = VᵀV of this step's basis V, for `ritz`;
        the basis moves on to orth((M + σI)V)."""
        if self.basis is None:
            self.seed(m)
        v = self.basis
        for it in range(self.iters):
            w = m.matmul(v)
            if it == self.iters - 1:
                out = torch.stack([v.T @ w, w.T @ w, v.T @ v])
            v = self._orth(w + shift * v if shift else w)
        self.basis = v
        return out

    def _orth(self, w: Tensor) -> Tensor:
        """An orthonormal basis of w's range (Cholesky QR twice); columns that vanish are
        replaced by random directions, orthonormalised with the rest the next time."""
        eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
        for _ in range(2):
            g = w.T @ w
            jitter = g.diagonal().mean() * 1e-12 + torch.finfo(w.dtype).tiny
            chol = torch.linalg.cholesky_ex(g + jitter * eye).L
            w = torch.linalg.solve_triangular(chol.T, w, upper=True, left=False)
        lost = (w.norm(dim=0) < 0.5) | ~torch.isfinite(w).all(dim=0)
        return torch.where(lost, self._random(*w.shape, w), w)

    def _random(self, rows: int, cols: int, like: Tensor) -> Tensor:
        x = torch.randn(rows, cols, generator=self.generator, device=like.device, dtype=like.dtype)
        return x / x.norm(dim=0).clamp_min(1)


def ritz(products: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From `SubspaceTracker.step`'s (3, p, p) products: the k largest Ritz values
    (descending) and their residual norms rᵢ (float64)."""
    h, h2, g = (np.asarray(x, dtype=np.float64) for x in products)
    mu, q = np.linalg.eigh((g + g.T) / 2)
    keep = mu > 1e-10 * max(mu.max(), np.finfo(float).tiny)  # directions V really spans
    t = q[:, keep] / np.sqrt(mu[keep])  # G-orthonormal coordinates
    theta, y = np.linalg.eigh(t.T @ ((h + h.T) / 2) @ t)
    theta, u = theta[::-1][:k], (t @ y)[:, ::-1][:, :k]
    residual = np.sqrt(np.clip(np.einsum("pi,pq,qi->i", u, (h2 + h2.T) / 2, u) - theta ** 2, 0, None))
    return theta, residual
