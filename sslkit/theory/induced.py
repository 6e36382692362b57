"""Kernel-regime optima of joint-embedding losses and the kernels they induce, after
Kiani et al. (2022), "Joint embedding self-supervised learning in the kernel regime";
derived here in the form sslkit implements (docs/theory.md, "Kernel-regime optima").
The derivation is ours from the paper's setting; the tie-break below is not in its summary.

Setting: n training points (the 2N stacked views) with kernel matrix K (feature map φ,
K = ΦΦᵀ), an augmentation graph A (n, n) (for view pairs, A = P: each view is adjacent
to its partner), and representations f(x) = W φ(x) ∈ Rᵈ with outputs Z = f(X) (d, n).
Every Z reachable this way has rows in range(K), and the representation of minimum
RKHS norm ‖W‖²_F with outputs Z is f(x) = Z K⁺ k_X(x), of norm tr(Z K⁺ Zᵀ). Its
induced kernel on any points is

    k*(x, x') = f(x)ᵀ f(x') = k_X(x)ᵀ K⁺ ZᵀZ K⁺ k_X(x').

- Contrastive, L = ‖ZᵀZ − A‖²_F: ZᵀZ ranges over the PSD matrices of rank ≤ d with range
  in range(K), so the optimum is ZᵀZ = the best rank-d PSD approximation of
  Π A Π (Π the projector on range(K)): its top-d positive eigenpairs.
- Non-contrastive, invariance Σ_{ij} A_ij ‖zᵢ − zⱼ‖²/2 = tr(Z L Zᵀ), L = D − A, with
  whitening Z Zᵀ = I: the rows of Z are the bottom-d eigenvectors of Π L Π on range(K).

Where this differs from the one-line summary "bottom-d eigenvectors of L" and "best rank-d
approximation of A": (i) both act on range(K) (they coincide with the plain statements
when K has full rank); (ii) for the view-pair graph both optima are degenerate — A = P
has eigenvalue +1 on all N pair-symmetric vectors, and L = I − P is 0 there — so the loss
alone does not fix the subspace. The minimum-RKHS-norm solution does: among the tied
eigenvectors E it takes the d' directions minimising tr(Z K⁺ Zᵀ), the bottom eigenvectors
of EᵀK⁺E (`_choose`). With this tie-break the two optima span the same subspace for view
pairs. The Barlow Twins dynamics (`stepwise.final_embedding`) maximises the Rayleigh
quotient yᵀPy / yᵀK⁺y over y = f(X) instead of constraining y to Py = y first, so the
subspaces are close, not equal.
"""

import torch
from torch import Tensor

from sslkit.theory.stepwise import _descending_eigh, output_matrix


def _range_basis(gram: Tensor, rtol: float = 1e-10) -> Tensor:
    w, q = torch.linalg.eigh(gram.double())
    return q[:, w > rtol * w.max()]


def _choose(values: Tensor, vectors: Tensor, d: int, gram: Tensor, tol: float) -> Tensor:
    """d columns of `vectors` (sorted best first by `values`): those strictly better than
    the d-th, then, among the columns tied with it (|Δ| ≤ tol), the combinations of least
    RKHS norm, the bottom eigenvectors of EᵀK⁺E. Returns (n, d)."""
    tied = (values - values[d - 1]).abs() <= tol
    better = vectors[:, :d][:, ~tied[:d]]
    inverse = torch.linalg.pinv(gram.double(), hermitian=True)
    _, mix = torch.linalg.eigh(vectors[:, tied].T @ inverse @ vectors[:, tied])
    return torch.cat([better, vectors[:, tied] @ mix[:, : d - better.shape[1]]], 1)


def contrastive_optimum(gram: Tensor, adjacency: Tensor, d: int, tol: float = 1e-8) -> Tensor:
    """Z (d, n) with ZᵀZ the best rank-d PSD approximation of ΠAΠ, min-norm among ties:
    Z = diag(√λ) Qᵀ for its chosen top eigenpairs (λ > 0 only)."""
    basis = _range_basis(gram)
    projected = basis @ (basis.T @ adjacency.double() @ basis) @ basis.T
    values, vectors = _descending_eigh(projected)
    chosen = _choose(values, vectors, d, gram, tol)
    lam = torch.einsum("nd,nm,md->d", chosen, projected, chosen).clamp(min=0)
    return lam.sqrt()[:, None] * chosen.T


def noncontrastive_optimum(gram: Tensor, adjacency: Tensor, d: int, tol: float = 1e-8) -> Tensor:
    """Z (d, n), Z Zᵀ = I, rows the bottom-d eigenvectors of L = D − A within range(K),
    min-norm among ties."""
    a = adjacency.double()
    laplacian = torch.diag(a.sum(1)) - a
    basis = _range_basis(gram)
    values, vectors = torch.linalg.eigh(basis.T @ laplacian @ basis)  # ascending: best first
    return _choose(values, basis @ vectors, d, gram, tol).T


def representation(gram: Tensor, z: Tensor, k_new: Tensor) -> Tensor:
    """The minimum-norm f(x) = Z K⁺ k_X(x) on new points, k_new = k_X (n, n_new): (n_new, d)."""
    return (z.double() @ torch.linalg.pinv(gram.double(), hermitian=True) @ k_new.double()).T


def coupled_representation(ntk: Tensor, new_ntk: Tensor, z: Tensor) -> Tensor:
    """`representation` for an output-coupled kernel Θ (the eNTK of a finite-width network,
    (n, n, D, D), `new_ntk` (n_new, n, D, D)): f(x) = Θ(x, X) Θ⁺ vec Z for outputs Z (n, D)
    on the training points, the least-norm W with W φ(X) = Z when Θ = J Jᵀ (W ↦ J·δ, norm
    ‖δ‖). For Θ = K ⊗ I it is Z K⁺ k_X(x). A linearized network trained by gradient descent
    from δ₀ moves δ only within the row space of J(X), so its outputs on new points are this
    f plus J(x)(I − Π)δ₀ (Π the projector on that row space): equal up to the init scale.
    Returns (n_new, D)."""
    n, d = z.shape
    rows = torch.from_numpy(output_matrix(new_ntk, n, d, rows=len(new_ntk)))
    full = torch.from_numpy(output_matrix(ntk, n, d))
    return (rows @ torch.linalg.pinv(full, hermitian=True) @ z.double().flatten()).reshape(-1, d)


def induced_kernel(gram: Tensor, z: Tensor, k_new: Tensor, k_other: Tensor | None = None) -> Tensor:
    """k*(x, x') = k_X(x)ᵀ K⁺ ZᵀZ K⁺ k_X(x') between the columns of k_new and k_other."""
    f = representation(gram, z, k_new)
    g = f if k_other is None else representation(gram, z, k_other)
    return f @ g.T

