"""The two matrices whose spectra show stepwise learning (Simon et al. 2023, §3)."""

import numpy as np
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


class Factored:
    """A symmetric D×D matrix M = s·FᵀJF kept as its (m, D) factor F, never formed unless
    D ≤ m (then forming it is the cheaper route).

    - J = I: a Gram matrix, e.g. the covariance Σ = Z̄ᵀZ̄/(N − 1) (F = Z̄, s = 1/(N − 1)).
    - J = swap of the two halves of F = [A; B]: M = s(AᵀB + BᵀA), e.g. the symmetrised
      cross-correlation C = (Z₁ᵀZ₂ + Z₂ᵀZ₁)/2N (s = 1/2N).

    M has rank ≤ m. When m < D its non-zero eigenvalues are those of an m×m matrix: s·FFᵀ
    for J = I; for the swap, with the thin QR Fᵀ = QR (Q: D×m with orthonormal columns, R:
    m×m, any rank), M = Q(s·RJRᵀ)Qᵀ, so they are the eigenvalues of the symmetric s·RJRᵀ
    = s(R₁R₂ᵀ + R₂R₁ᵀ), R = [R₁ R₂] split as F = [A; B]. Either way the cost is O(m²D), not
    O(D³), and the eigenvalues are exact to float64 rounding."""

    def __init__(self, parts: tuple[Tensor, ...], scale: float) -> None:
        """`parts`: (F,) for J = I, or (A, B) for the swap."""
        self.parts, self.scale, self.swap = parts, scale, len(parts) == 2
        self.rows, self.dim = sum(p.shape[0] for p in parts), parts[0].shape[1]

    @property
    def formed(self) -> bool:
        """Whether M is formed (D ≤ m): `small` is then M itself."""
        return self.dim <= self.rows

    @property
    def f(self) -> Tensor:
        return torch.cat(self.parts) if self.swap else self.parts[0]

    def matmul(self, v: Tensor) -> Tensor:
        """M @ v for a (D, p) block v, in O(mDp)."""
        if not self.swap:
            return self.scale * (self.f.T @ (self.f @ v))
        a, b = self.parts
        return self.scale * (a.T @ (b @ v) + b.T @ (a @ v))

    def dense(self) -> Tensor:
        if not self.swap:
            return self.scale * (self.f.T @ self.f)
        cross = self.parts[0].T @ self.parts[1]
        return self.scale * (cross + cross.T)

    def eigh(self) -> tuple[Tensor, Tensor]:
        """Eigenvalues (descending) and orthonormal eigenvectors, (D, r), of M restricted to
        its range, r = min(m, D): with Fᵀ = QR, the eigenvectors of s·RJRᵀ mapped by Q."""
        if self.formed:
            values, vectors = torch.linalg.eigh(self.dense())
        else:
            q, r = torch.linalg.qr(self.f.T)
            values, w = torch.linalg.eigh(self._core(r))
            vectors = q @ w
        return values.flip(0), vectors.flip(1)

    def eigvalsh(self) -> Tensor:
        """All D eigenvalues, descending, from the smaller of the two sides (`small`)."""
        values = torch.linalg.eigvalsh(self.small())
        zeros = values.new_zeros(self.dim - values.shape[0])
        return torch.cat([values, zeros]).sort(descending=True).values

    def small(self) -> Tensor:
        """The r×r symmetric matrix, r = min(m, D), whose eigenvalues are all of M's non-zero
        ones (`small_eigenvalues` adds the D − r zeros): M itself when D ≤ m; else the Gram
        matrix s·FFᵀ (J = I) or, for the swap, s·RJRᵀ from the Householder QR Fᵀ = QR
        (exact whatever the rank of F: batch-normalised views are centred, so FFᵀ is
        singular and has no Cholesky factor). A product, or a QR and a product: no error
        check and no eigenvalue solver, so it can be formed on the device every step, without
        waiting for it, and decomposed later, in bulk, on the host. Cost O(m²D)."""
        if self.formed:
            return self.dense()
        if self.swap:
            return self._core(torch.linalg.qr(self.f.T, mode="r").R)
        return self.scale * (self.f @ self.f.T)

    def _core(self, r: Tensor) -> Tensor:
        """s·RJRᵀ, symmetrised against rounding."""
        core = self.scale * ((r.roll(self.rows // 2, dims=1) if self.swap else r) @ r.T)
        return (core + core.T) / 2


def factored(kind: str, a: Tensor, b: Tensor) -> Factored:
    """The matrix `kind` of two (N, D) views a, b, as in `eigenvalues`, in the views' dtype
    (the monitor passes float64): "cov" (of a), "cov2" (of b), or "xcorr" (their
    symmetrised cross-correlation)."""
    n = a.shape[0]
    if kind == "xcorr":
        return Factored((a, b), 1 / (2 * n))
    x = a if kind == "cov" else b
    return Factored((x - x.mean(dim=0),), 1 / max(n - 1, 1))


def small_eigenvalues(small: np.ndarray, dim: int) -> np.ndarray:
    """All `dim` eigenvalues (descending, float64) of each matrix M whose `Factored.small`
    is `small`, (..., r, r): those of `small` (LAPACK `syevd`, one batched call), then
    dim − r zeros."""
    small = np.asarray(small, dtype=np.float64)
    r = small.shape[-1]
    values = np.linalg.eigvalsh((small + np.swapaxes(small, -1, -2)) / 2)[..., ::-1]
    if r < dim:
        values = np.concatenate([values, np.zeros((*values.shape[:-1], dim - r))], axis=-1)
        values = -np.sort(-values, axis=-1)
    return values
