"""Scalar summaries of one spectrum (eigenvalues λ₁ ≥ … ≥ λ_D of a symmetric D×D matrix).

H(p) = −Σ pₖ log pₖ is the Shannon entropy of a probability vector p (0·log 0 = 0).

- effective rank (Roy & Vetterli 2007, eq. 6): exp H(p), pₖ = σₖ / Σσ, with σₖ = |λₖ| the
  singular values of the matrix itself. The identity gives D, a rank-r projector r.
- RankMe (Garrido et al. 2023, eq. 1): exp H(p), pₖ = σₖ / ‖σ‖₁ + ε, with σₖ the singular
  values of the embedding matrix Z whose Gram matrix the spectrum belongs to: for a
  covariance Σ = Z̄ᵀZ̄/(N − 1), σₖ ∝ √λₖ (the factor cancels in pₖ).
- Gaussian log-det entropy on the span of the batch (Shwartz-Ziv et al. 2023, §4):
  ½ Σ_{k ≤ r} log λₖ over the r non-zero eigenvalues of a covariance of N samples in D
  dimensions (r ≤ min(N − 1, D)): the differential entropy, less (r/2) log 2πe, of the
  Gaussian N(0, Σ) restricted to the subspace the batch spans. With r = D it is
  ½ log det Σ. The regularised ½ log det(Σ + εI) = ½ Σₖ log(λₖ + ε) adds about
  ½ (D − r) log ε for the D − r zero eigenvalues: at N = 16, D = 512, ε = 10⁻⁴ that is
  −2289 of it, whatever the embeddings.
- Hadamard gap Σₖ log Σₖₖ − log det Σ ≥ 0 (Hadamard's inequality; 0 iff Σ is diagonal):
  twice the total correlation of the Gaussian N(0, Σ), what VICReg's variance and
  covariance terms push down. On the span, with pdet Σ = Π_{k ≤ r} λₖ = e_r(λ), the same
  bound reads log e_r(Σ₁₁, …, Σ_DD) − log pdet Σ ≥ 0: by Cauchy–Binet e_r(λ) is the sum of
  the r×r principal minors of Σ, each at most the product of its diagonal (Hadamard), so
  the gap is ≥ 0, 0 iff Σ is diagonal, and for r = D it is Σₖ log Σₖₖ − log det Σ. e_r is
  the r-th elementary symmetric polynomial.
- learned modes: the number of eigenvalues that reached `level` (½ for the cross-correlation
  C of Barlow Twins, whose eigenvalues rise from ≈ 0 to 1 as modes are learned).
"""

import numpy as np


def _exp_entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def effective_rank(eigvals: np.ndarray) -> float:
    sigma = np.abs(np.asarray(eigvals, dtype=np.float64))
    total = sigma.sum()
    return _exp_entropy(sigma / total) if total > 0 else 0.0


def rankme(eigvals: np.ndarray, eps: float = 1e-7) -> float:
    sigma = np.sqrt(np.clip(np.asarray(eigvals, dtype=np.float64), 0, None))
    total = sigma.sum()
    return _exp_entropy(sigma / total + eps) if total > 0 else 0.0


def span_rank(eigvals: np.ndarray, bound: int) -> int:
    """The number of non-zero eigenvalues of a PSD matrix whose rank is at most `bound`:
    those above D·ε₆₄·λ₁ (numpy.linalg.matrix_rank's threshold), at most `bound`."""
    lam = np.asarray(eigvals, dtype=np.float64)
    return int(min(bound, (lam > len(lam) * np.finfo(np.float64).eps * max(lam[0], 0)).sum()))


def gaussian_logdet(eigvals: np.ndarray, rank: int) -> float:
    """½ Σ log λₖ over the `rank` largest eigenvalues (descending input)."""
    return float(0.5 * np.log(np.asarray(eigvals, dtype=np.float64)[:rank]).sum()) if rank else 0.0


def log_elementary_symmetric(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """log e_r(x) for each row of x (T, D) ≥ 0 and its r (T,), r ≤ the number of x > 0.

    With t > 0 and pₖ = xₖt/(1 + xₖt), Π(1 + xₖtz) / Π(1 + xₖt) = Π(1 − pₖ + pₖz) is the
    generating function of a Poisson-binomial count, so log e_r(x) = log P[r] + Σ log(1 + xₖt)
    − r log t. t is chosen (bisection) so that the count's mean Σpₖ is r: P[r] is then near
    the mode, and the recursion P ← (1 − pₖ)P + pₖ·(P shifted by one), all in [0, 1], loses
    nothing to overflow or cancellation. O(D·max r)."""
    x, r = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.asarray(r).reshape(-1)
    with np.errstate(divide="ignore"):
        logx = np.log(x)
    lo = np.full(len(x), -np.log(x.max(axis=1)) - 60)
    hi = np.full(len(x), -np.log(np.where(x > 0, x, np.inf).min(axis=1)) + 60)
    for _ in range(100):  # bisection on u = log t: Σ sigmoid(log x + u) = r
        mid = (lo + hi) / 2
        above = (0.5 * (1 + np.tanh((logx + mid[:, None]) / 2))).sum(axis=1) > r
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    u = (lo + hi) / 2
    p = 0.5 * (1 + np.tanh((logx + u[:, None]) / 2))
    prob = np.zeros((len(x), int(r.max()) + 1))
    prob[:, 0] = 1.0
    for k in range(x.shape[1]):
        top = min(k + 1, prob.shape[1] - 1)
        prob[:, 1: top + 1] = prob[:, 1: top + 1] * (1 - p[:, k: k + 1]) + prob[:, :top] * p[:, k: k + 1]
        prob[:, 0] *= 1 - p[:, k]
    return np.log(prob[np.arange(len(x)), r]) + np.logaddexp(0, logx + u[:, None]).sum(axis=1) - r * u


def hadamard_gap(diagonals: np.ndarray, eigvals: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """log e_r(diag Σ) − Σ_{k ≤ r} log λₖ (module docstring) for each row: diagonals and
    descending eigenvalues (T, D) of T covariances, ranks (T,); 0 at rank 0 (e₀ = 1, an
    empty sum: a batch of one sample)."""
    diagonals, eigvals = np.atleast_2d(diagonals).astype(np.float64), np.atleast_2d(eigvals).astype(np.float64)
    ranks = np.asarray(ranks).reshape(-1)
    full, partial = ranks == diagonals.shape[1], (ranks > 0) & (ranks < diagonals.shape[1])
    head = np.zeros(len(ranks))
    head[full] = np.log(diagonals[full]).sum(axis=1)
    if partial.any():
        head[partial] = log_elementary_symmetric(diagonals[partial], ranks[partial])
    return head - np.array([np.log(lam[:r]).sum() for lam, r in zip(eigvals, ranks)])


def learned_modes(eigvals: np.ndarray, level: float = 0.5) -> int:
    return int((np.asarray(eigvals) >= level).sum())
