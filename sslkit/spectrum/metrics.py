"""Scalar summaries of one spectrum (eigenvalues λ₁ ≥ … ≥ λ_D of a symmetric D×D matrix).

H(p) = −Σ pₖ log pₖ is the Shannon entropy of a probability vector p (0·log 0 = 0).

- effective rank (Roy & Vetterli 2007, eq. 6): exp H(p), pₖ = σₖ / Σσ, with σₖ = |λₖ| the
  singular values of the matrix itself. The identity gives D, a rank-r projector r.
- RankMe (Garrido et al. 2023, eq. 1): exp H(p), pₖ = σₖ / ‖σ‖₁ + ε, with σₖ the singular
  values of the embedding matrix Z whose Gram matrix the spectrum belongs to: for a
  covariance Σ = Z̄ᵀZ̄/(N − 1), σₖ ∝ √λₖ (the factor cancels in pₖ).
- Gaussian log-det entropy (Shwartz-Ziv et al. 2023, §4): ½ log det(Σ + εI) = ½ Σ log(λₖ + ε),
  the differential entropy of N(0, Σ + εI) less the constant (D/2) log 2πe.
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


def gaussian_logdet(eigvals: np.ndarray, eps: float = 1e-4) -> float:
    lam = np.clip(np.asarray(eigvals, dtype=np.float64), 0, None)  # rounding makes some λ ≈ −1e-17
    return float(0.5 * np.log(lam + eps).sum())


def learned_modes(eigvals: np.ndarray, level: float = 0.5) -> int:
    return int((np.asarray(eigvals) >= level).sum())
