"""The per-step spectrum monitor: eigenvalues of the chosen matrices, their summaries and
½-crossings, appended to `run_dir/spectrum/`.

Matrices, for two (N, D) views a, b of either the projector embeddings z (names without a
prefix) or the backbone features h (prefix `feat_`): "cov" and "cov2", the covariance of
view 1 and of view 2; "xcorr", the symmetrised cross-correlation C = (aᵀb + bᵀa)/2N.

How each matrix is decomposed: it has rank ≤ m (m = N for a covariance, 2N for C) and size
D. When min(m, D) ≤ `exact_max` every step gets its exact eigenvalues from the smaller side
(sslkit.spectrum.compute.Factored, O(m·D·min(m, D))). Otherwise the top `top_k` are tracked
by warm-started subspace iteration (sslkit.spectrum.tracker) until each is within
`tol`·|λ₁| of an eigenvalue (residual bound, stored per step as "<series>/residual"), and
every `full_every` steps an exact decomposition gives the whole spectrum and the largest
deviation of the tracked values, "<series>/track_err" = max|θᵢ − λᵢ|/|λ₁| (a warning is
logged above `tol`).

Per step, the table holds the top `top_k` eigenvalues of each matrix and the summaries
(sslkit.spectrum.metrics): effective rank, RankMe and Gaussian log-det for covariances;
effective rank and the number of learned modes (eigenvalues ≥ `level`) for
cross-correlations. Entropy-type summaries need the whole spectrum, so for a tracked
matrix they are computed at the exact steps only (NaN in between), and between those its
learned modes are counted among the top `top_k`. Complete spectra of
matrices with more than `top_k` eigenvalues go to the `spectrum/full` table every
`full_every` steps.

Storage per matrix at D = 2048, top_k = 64, full_every = 100: 64·4 B + its summaries per
step and 2048·4 B every 100 steps, ≈ 35 MB per 100 000 steps: ≈ 110 MB for the default
three matrices, ≈ 210 MB for all six (then raise full_every).
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sslkit.errors import ConfigError
from sslkit.spectrum import metrics
from sslkit.spectrum.compute import Factored, factored
from sslkit.spectrum.events import CrossingLog
from sslkit.spectrum.store import SpectrumWriter
from sslkit.spectrum.tracker import SubspaceTracker
from sslkit.tensors import map_distinct

log = logging.getLogger(__name__)

# series name → (views it reads: embeddings z or backbone features h, matrix kind)
MATRICES = {
    "cov": ("z", "cov"), "cov2": ("z", "cov2"), "xcorr": ("z", "xcorr"),
    "feat_cov": ("h", "cov"), "feat_cov2": ("h", "cov2"), "feat_xcorr": ("h", "xcorr"),
}


def reads_features(spectrum: Any) -> bool:
    """Whether the `spectrum` config records backbone-feature (feat_*) matrices."""
    names = [str(getattr(m, "value", m)) for m in spectrum.matrices]
    return bool(spectrum.enabled) and any(MATRICES[n][0] == "h" for n in names)


class SpectrumMonitor:
    def __init__(self, run_dir: str | Path, matrices: list[str], every: int = 1, top_k: int = 64,
                 full_every: int = 100, exact_max: int = 256, oversample: int = 16, tol: float = 1e-3,
                 max_iters: int = 10, rankme_eps: float = 1e-7, logdet_eps: float = 1e-4,
                 level: float = 0.5, flush_every: int = 100, state: dict[str, Any] | None = None) -> None:
        for key, value, low in (("every", every, 1), ("top_k", top_k, 1), ("full_every", full_every, 1),
                                ("exact_max", exact_max, 0), ("oversample", oversample, 0),
                                ("max_iters", max_iters, 1), ("flush_every", flush_every, 1)):
            if value < low:
                raise ConfigError(f"spectrum.{key}={value} is not allowed: use an integer >= {low}.")
        if not tol > 0:
            raise ConfigError(f"spectrum.tol={tol} is not allowed: use a positive number, e.g. 1e-3.")
        self.run_dir, self.matrices = Path(run_dir), list(matrices)
        self.every, self.top_k, self.full_every, self.exact_max = every, top_k, full_every, exact_max
        self.oversample, self.tol, self.max_iters = oversample, tol, max_iters
        self.rankme_eps, self.logdet_eps, self.level, self.flush_every = rankme_eps, logdet_eps, level, flush_every
        self.start = state or {"rows": 0, "full_rows": 0, "event_bytes": 0, "bases": {}}
        self.events = CrossingLog(run_dir, level, self.start["event_bytes"])
        self.trackers: dict[str, SubspaceTracker] = {}
        self.columns: dict[str, list[str]] = {}  # summary metrics of each matrix
        self.summary: list[str] = []  # "<series>/<metric>" columns of the summary series
        self.writer: SpectrumWriter | None = None
        self.full: SpectrumWriter | None = None
        self.full_names: list[str] = []  # matrices with more than top_k eigenvalues
        self.latest: dict[str, np.ndarray] = {}  # top eigenvalues at the last observed step

    def wants(self, step: int) -> bool:
        return step % self.every == 0

    @torch.no_grad()
    def observe(self, step: int, z1: Tensor, z2: Tensor, h1: Tensor, h2: Tensor) -> dict[str, float]:
        """Decompose, store and summarise the matrices of this step; returns the finite
        summaries as {"<series>/<metric>": value}."""
        z1, z2, h1, h2 = map_distinct(Tensor.double, (z1, z2, h1, h2))  # one float64 copy per tensor
        views = {"z": (z1, z2), "h": (h1, h2)}
        if self.writer is None:
            self._open(views)
        full_step = step % self.full_every == 0
        row, full_row, summary = {}, {}, {}
        done: dict[tuple[int, int, str], tuple] = {}
        for name in self.matrices:
            source, kind = MATRICES[name]
            a, b = views[source]
            key = (id(a), id(b), kind)
            if key not in done or name in self.trackers:
                done[key] = self._spectrum(name, factored(kind, a, b), full_step)
            top, eig, extra = done[key]
            row[name] = top
            if full_step and name in self.full_names:
                full_row[name] = eig
            values = self._summaries(kind, eig, top, extra)
            summary.update({f"{name}/{k}": v for k, v in values.items()})
            if kind == "xcorr":
                self.events.update(step, name, eig if eig is not None else top)
        self.latest = row
        self.writer.append(step, {**row, "summary": np.array([summary.get(c, np.nan) for c in self.summary])})
        if full_row:
            self.full.append(step, full_row)
        return {k: v for k, v in summary.items() if np.isfinite(v)}

    def _open(self, views: dict[str, tuple[Tensor, Tensor]]) -> None:
        """At the first step, when the sizes are known: which matrices are tracked, the
        summary columns, the writers (cut back to the checkpoint's rows on resume)."""
        tracked, dims = [], {}
        for name in self.matrices:
            source, kind = MATRICES[name]
            a = views[source][0]
            rows, dims[name] = a.shape[0] * (2 if kind == "xcorr" else 1), a.shape[1]
            base = ["effective_rank", "learned"] if kind == "xcorr" else ["effective_rank", "rankme", "logdet"]
            if min(rows, dims[name]) > self.exact_max:
                tracked.append(name)
                tracker = SubspaceTracker(dims[name], min(self.top_k, dims[name]), self.oversample,
                                          self.tol, self.max_iters, a.device, seed=len(self.trackers))
                if name in self.start["bases"]:
                    tracker.basis = self.start["bases"][name].to(a.device)
                self.trackers[name] = tracker
                base += ["residual", "track_err"]
            self.columns[name] = base
        self.full_names = [n for n in self.matrices if dims[n] > self.top_k]
        self.summary = [f"{n}/{c}" for n in self.matrices for c in self.columns[n]]
        meta = {"top_k": self.top_k, "full_every": self.full_every, "tracked": tracked, "level": self.level,
                "tol": self.tol, "summary": self.summary}
        self.writer = SpectrumWriter(self.run_dir, self.flush_every, self.start["rows"], meta=meta)
        if self.full_names:
            self.full = SpectrumWriter(self.run_dir, max(1, self.flush_every // self.full_every),
                                       self.start["full_rows"], table="spectrum/full")

    def _spectrum(self, name: str, m: Factored, full_step: bool) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """(top eigenvalues, all eigenvalues or None, tracking diagnostics) as float64 numpy."""
        tracker = self.trackers.get(name)
        if tracker is None:
            eig = m.eigvalsh().cpu().numpy()
            return eig[: self.top_k], eig, {}
        theta, bound, _ = tracker.update(m)
        top = theta.cpu().numpy()
        extra = {"residual": bound}
        if not full_step:
            return top, None, extra
        eig = m.eigvalsh().cpu().numpy()
        err = float(np.abs(top - eig[: len(top)]).max() / max(abs(eig[0]), np.finfo(float).tiny))
        if err > self.tol:
            log.warning("spectrum: tracked eigenvalues of %s deviate from the exact ones by %.2g·|λ₁| "
                        "(spectrum.tol=%g); raise spectrum.max_iters or spectrum.oversample", name, err, self.tol)
        return top, eig, {**extra, "track_err": err}

    def _summaries(self, kind: str, eig: np.ndarray | None, top: np.ndarray, extra: dict) -> dict[str, float]:
        out = {"learned": float(metrics.learned_modes(eig if eig is not None else top, self.level))} \
            if kind == "xcorr" else {}
        if eig is not None:
            out["effective_rank"] = metrics.effective_rank(eig)
            if kind != "xcorr":
                out["rankme"] = metrics.rankme(eig, self.rankme_eps)
                out["logdet"] = metrics.gaussian_logdet(eig, self.logdet_eps)
        return {**out, **extra}

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue the files and the tracking exactly:
        rows written per table, the events file's size, the tracking bases. Flushes."""
        if self.writer is None:
            return self.start
        self.writer.flush()
        if self.full is not None:
            self.full.flush()
        return {"rows": self.writer.rows, "full_rows": self.full.rows if self.full else 0,
                "event_bytes": self.events.bytes,
                "bases": {name: t.basis.cpu() for name, t in self.trackers.items()}}

    def close(self) -> None:
        for writer in (self.writer, self.full):
            if writer is not None:
                writer.close()
        self.events.close()
