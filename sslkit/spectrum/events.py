"""Stepwise events: when each eigen-mode is learned."""

import numpy as np


def crossing_steps(steps: np.ndarray, eigvals: np.ndarray, level: float = 0.5) -> np.ndarray:
    """For (T,) steps and (T, D) descending eigenvalues, the first step at which the k-th
    eigenvalue reaches `level`, for each k; -1 where it never does.

    For the cross-correlation C of the simplified Barlow Twins loss, whose eigenvalues rise
    from ≈ 0 to 1, level ½ marks the half-time t_k of mode k (DESIGN §3)."""
    reached = eigvals >= level
    first = reached.argmax(axis=0)
    return np.where(reached.any(axis=0), steps[first], -1)
