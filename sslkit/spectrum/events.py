"""Stepwise events: when each eigen-mode is learned."""

import json
from pathlib import Path

import numpy as np

from sslkit import layout


def crossing_steps(steps: np.ndarray, eigvals: np.ndarray, level: float = 0.5) -> np.ndarray:
    """For (T,) steps and (T, D) descending eigenvalues, the first step at which the k-th
    eigenvalue reaches `level`, for each k; -1 where it never does.

    For the cross-correlation C of the simplified Barlow Twins loss, whose eigenvalues rise
    from ≈ 0 to 1, level ½ marks the half-time t_k of mode k (docs/theory.md)."""
    reached = eigvals >= level
    if not len(steps):
        return np.full(eigvals.shape[1], -1)
    first = reached.argmax(axis=0)
    return np.where(reached.any(axis=0), steps[first], -1)


class CrossingLog:
    """Appends `{"step", "series", "mode", "value"}` to `run_dir/spectrum/events.jsonl` the
    first time the `mode`-th largest eigenvalue (1 = largest) of a series reaches `level`:
    the same steps `crossing_steps` finds in the stored spectra, written as they happen.

    `start_bytes` (from a checkpoint) cuts the file back to that size on resume; the modes
    already crossed are read back from what remains. `bytes` is the current size."""

    def __init__(self, run_dir: str | Path, level: float = 0.5, start_bytes: int = 0) -> None:
        self.path = Path(run_dir) / layout.EVENTS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.level = level
        self.file = open(self.path, "ab")
        self.file.truncate(start_bytes)
        self.file.seek(start_bytes)
        self.crossed = {(e["series"], e["mode"]) for e in load_events(self.path.parents[1])}

    @property
    def bytes(self) -> int:
        return self.file.tell()

    def update(self, step: int, series: str, eigvals: np.ndarray) -> list[dict]:
        """Record the modes of `series` that reach the level for the first time at `step`."""
        new = [
            {"step": step, "series": series, "mode": k + 1, "value": float(v)}
            for k, v in enumerate(eigvals)
            if v >= self.level and (series, k + 1) not in self.crossed
        ]
        for event in new:
            self.crossed.add((series, event["mode"]))
            self.file.write((json.dumps(event) + "\n").encode())
        if new:
            self.file.flush()
        return new

    def close(self) -> None:
        self.file.close()


def load_events(run_dir: str | Path) -> list[dict]:
    """The complete lines of `run_dir/spectrum/events.jsonl` (none if it does not exist)."""
    path = Path(run_dir) / layout.EVENTS
    if not path.exists():
        return []
    text = path.read_bytes()
    return [json.loads(line) for line in text[: text.rfind(b"\n") + 1].splitlines()]
