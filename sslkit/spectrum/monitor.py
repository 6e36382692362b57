"""The per-step spectrum monitor: eigenvalues of the chosen matrices, their summaries and
½-crossings, appended to `run_dir/spectrum/`.

Matrices, for two (N, D) views a, b of either the projector embeddings z (names without a
prefix) or the backbone features h (prefix `feat_`): "cov" and "cov2", the covariance of
view 1 and of view 2; "xcorr", the symmetrised cross-correlation C = (aᵀb + bᵀa)/2N of the
embeddings *as the loss sees them* (`view`, the loss's `spectrum_view`: batch-normalised
for Barlow Twins, on the unit sphere for SimCLR, centred per view for VICReg, raw for the
simplified Barlow Twins loss), so that ½ means half learned for every loss; "xcorr_raw",
the same of the raw embeddings; "feat_xcorr", of the raw features. The view is applied to
detached copies.

The work is split in two, so that the training step never waits:

- The products: per matrix one r×r symmetric matrix carrying its eigenvalues, r =
  min(m, D) (sslkit.spectrum.compute.Factored.small; m = N for a covariance, 2N for C):
  a product for a covariance, a Householder QR of the D×2N factor and a product for C;
  or, when r > `exact_max`, `iters` products of warm-started subspace iteration that
  leave three p×p products (sslkit.spectrum.tracker, p = top_k + oversample). On CUDA
  `observe` launches them in the training thread (on a side stream) into a ring of
  `chunk` steps on the device; when it is full, one non-blocking copy takes it to
  (pinned) host memory. No host synchronisation, no `.cpu()` per matrix per step. On a
  CPU the products would take the step's own cores, so `observe` only keeps a copy of
  the embeddings and `record` computes them.
- `record` (the observer's thread): float64 eigenvalues of the chunk's small matrices in
  one batched LAPACK call, Rayleigh–Ritz for the tracked ones, summaries, ½-crossing
  events, rows on disk.

Precision of what is stored: products and small matrices in float64 (the embeddings are
float32 or lower; on a GPU the products take microseconds, C's QR more: not yet
measured, `scripts/gpu_checks.sh`). Exact matrices: every
eigenvalue to float64 rounding, ≈ 10⁻¹⁵·|λ₁| (LAPACK `syevd`; the rows on disk are
float32, 10⁻⁷ relative). The default `exact_max` = 512 decomposes C exactly every step up
to batch 256 (2N = 512), the CIFAR recipes' size: there, with a new batch every step and
the flat spectrum of a network at initialisation, the top eigenvectors of C are redrawn
by every batch, so a warm start carries little; two subspace iterations were off by
0.17–0.2·|λ₁|, 32 by 8·10⁻⁴·|λ₁| at 6.5× the cost of the exact path (`python
scripts/bench_spectrum.py methods`). Tracked matrices (r > `exact_max`): the top `top_k`
Ritz values, each within its residual rᵢ of an eigenvalue and below the i-th eigenvalue;
the largest rᵢ/|θ₁| is stored per step as "<series>/residual", and every `full_every`
steps an exact decomposition gives the whole spectrum and "<series>/track_err" =
max|θᵢ − λᵢ|/|λ₁| (a warning is logged above `tol`).

Summaries per step (sslkit.spectrum.metrics): effective rank, RankMe, the log-det on the
span and the Hadamard gap for covariances; effective rank and the number of learned modes
(eigenvalues ≥ `level`) for cross-correlations. For a tracked matrix the whole-spectrum
summaries are computed at the exact steps only (NaN in between), and between those its
learned modes are counted among the top `top_k`. Complete spectra of matrices with more
than `top_k` eigenvalues go to the `spectrum/full` table every `full_every` steps.

Storage per matrix at D = 2048, top_k = 64, full_every = 100: 64·4 B + its summaries per
step and 2048·4 B every 100 steps, ≈ 35 MB per 100 000 steps: ≈ 110 MB for the default
three matrices, ≈ 210 MB for all six (then raise full_every).
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sslkit import layout
from sslkit.errors import ConfigError
from sslkit.spectrum import metrics
from sslkit.spectrum.compute import factored, small_eigenvalues
from sslkit.spectrum.events import CrossingLog
from sslkit.spectrum.store import SpectrumWriter
from sslkit.spectrum.tracker import SubspaceTracker, ritz

log = logging.getLogger(__name__)

# series name → (views it reads: embeddings z or backbone features h, matrix kind, as the loss sees them)
MATRICES = {
    "cov": ("z", "cov", False), "cov2": ("z", "cov2", False), "xcorr": ("z", "xcorr", True),
    "xcorr_raw": ("z", "xcorr", False),
    "feat_cov": ("h", "cov", False), "feat_cov2": ("h", "cov2", False), "feat_xcorr": ("h", "xcorr", False),
}
SpectrumMatrix = Enum("SpectrumMatrix", {name: name for name in MATRICES}, type=str)


def reads_features(spectrum: Any) -> bool:
    """Whether the `spectrum` config records backbone-feature (feat_*) matrices."""
    names = [str(getattr(m, "value", m)) for m in spectrum.matrices]
    return bool(spectrum.enabled) and any(MATRICES[n][0] == "h" for n in names)


@dataclass
class Chunk:
    """Observed steps on their way to the host: per computation, a (steps, ...) tensor;
    `full`: the small matrices of tracked computations at exact steps; `ready`: a CUDA
    event after the copies (None on the CPU); `inputs`: on a CPU, each step's embeddings
    and features instead, for `record` to compute the rest from."""

    steps: list[int]
    rows: dict[str, Tensor]
    full: dict[int, dict[str, Tensor]] = field(default_factory=dict)
    ready: Any = None
    inputs: list[tuple[Tensor, ...]] = field(default_factory=list)


@dataclass
class _Plan:
    """How one distinct matrix is computed: its key, size, and whether it is tracked."""

    key: str
    source: str
    kind: str
    viewed: bool
    rows: int
    dim: int
    tracked: bool
    names: list[str] = field(default_factory=list)


class SpectrumMonitor:
    """The eigenvalues of the `matrices`, their summaries and ½-crossings every `every`
    steps, appended to run_dir/spectrum/ (how they are computed: the module's doc).

    Args:
        matrices: The matrices: cov, cov2, xcorr, xcorr_raw of the embeddings, feat_cov, feat_cov2, feat_xcorr of the features.
        every: Steps between two recorded spectra.
        top_k: Eigenvalues kept per step of a tracked matrix (and learned modes counted among them).
        full_every: Steps between two exact decompositions of a tracked matrix (the whole spectrum stored).
        exact_max: Largest size r of a matrix decomposed exactly every step; larger ones are tracked.
        oversample: Extra vectors of the tracked subspace, p = top_k + oversample.
        tol: Relative error of a tracked spectrum above which a warning is logged.
        iters: Subspace-iteration products per step of a tracked matrix.
        rankme_eps: ε added to the normalised eigenvalues in RankMe.
        level: Eigenvalue of a cross-correlation at which a mode counts as learned (the ½-crossing).
        flush_every: Steps between two writes of the spectrum files.
        chunk: Steps whose products are gathered on the device before one copy to the host.
    """

    def __init__(self, run_dir: str | Path,
                 matrices: Sequence[SpectrumMatrix] = (SpectrumMatrix.cov, SpectrumMatrix.xcorr, SpectrumMatrix.feat_cov),
                 every: int = 1, top_k: int = 64,
                 full_every: int = 100, exact_max: int = 512, oversample: int = 16, tol: float = 1e-3,
                 iters: int = 2, rankme_eps: float = 1e-7, level: float = 0.5, flush_every: int = 100,
                 chunk: int = 32, view: Callable[[Tensor], Tensor] | None = None,
                 state: dict[str, Any] | None = None) -> None:
        for key, value, low in (("every", every, 1), ("top_k", top_k, 1), ("full_every", full_every, 1),
                                ("exact_max", exact_max, 0), ("oversample", oversample, 0),
                                ("iters", iters, 1), ("flush_every", flush_every, 1), ("chunk", chunk, 1)):
            if value < low:
                raise ConfigError(f"spectrum.{key}={value} is not allowed: use an integer >= {low}.")
        if not tol > 0:
            raise ConfigError(f"spectrum.tol={tol} is not allowed: use a positive number, e.g. 1e-3.")
        names = [str(getattr(m, "value", m)) for m in matrices]
        unknown = [m for m in names if m not in MATRICES]
        if unknown:
            raise ConfigError(f"spectrum.matrices={names}: {unknown} unknown; allowed: {list(MATRICES)}.")
        self.run_dir, self.matrices = Path(run_dir), names
        self.every, self.top_k, self.full_every, self.exact_max = every, top_k, full_every, exact_max
        self.oversample, self.tol, self.iters, self.chunk = oversample, tol, iters, chunk
        self.rankme_eps, self.level, self.flush_every = rankme_eps, level, flush_every
        self.view = view
        self.start = state or {"rows": 0, "full_rows": 0, "event_bytes": 0, "bases": {}}
        self.events = CrossingLog(run_dir, level, self.start["event_bytes"])
        self.plans: dict[str, _Plan] = {}  # series name → its computation (shared when identical)
        self.trackers: dict[str, SubspaceTracker] = {}  # by computation key
        self.shift: dict[str, float] = {}  # by computation key, set from the host's results
        self.columns: dict[str, list[str]] = {}  # summary metrics of each matrix
        self.summary: list[str] = []  # "<series>/<metric>" columns of the summary series
        self.writer: SpectrumWriter | None = None
        self.full: SpectrumWriter | None = None
        self.full_names: list[str] = []  # matrices with more than top_k eigenvalues
        self.latest: dict[str, np.ndarray] = {}  # top eigenvalues at the last recorded step
        self.ring: dict[str, Tensor] = {}
        self.steps: list[int] = []
        self.inputs: list[tuple[Tensor, ...]] = []  # on a CPU: the observed steps' views, for `record`
        self.pending_full: dict[int, dict[str, Tensor]] = {}

    def wants(self, step: int) -> bool:
        return step % self.every == 0

    # ---------------------------------------------------------------- training thread

    @torch.no_grad()
    def observe(self, step: int, z1: Tensor, z2: Tensor, h1: Tensor, h2: Tensor) -> Chunk | None:
        """Queue this step's small matrices in the device ring (on a CPU: a copy of its
        views); returns a `Chunk` for `record` when the ring is full. Call it on the stream
        the work should run on."""
        if z1.is_cuda:
            for key, value in self._small(step, z1, z2, h1, h2).items():
                if key not in self.ring:
                    self.ring[key] = value.new_empty((self.chunk, *value.shape))
                self.ring[key][len(self.steps)].copy_(value)
        else:
            self.inputs.append(_each_once(Tensor.clone, z1, z2, h1, h2))
        self.steps.append(step)
        return self.flush() if len(self.steps) == self.chunk else None

    def flush(self) -> Chunk | None:
        """The steps observed since the last chunk, on their way to the host."""
        if not self.steps:
            return None
        n, steps, self.steps = len(self.steps), self.steps, []
        if self.inputs:  # a CPU's: `record` computes the rest (and owns `pending_full`)
            inputs, self.inputs = self.inputs, []
            return Chunk(steps, {}, inputs=inputs)
        full, self.pending_full = self.pending_full, {}
        rows = {key: _to_host(ring[:n]) for key, ring in self.ring.items()}  # a CUDA ring (`observe`)
        ready = torch.cuda.Event()
        ready.record()
        return Chunk(steps, rows, full, ready)

    def _small(self, step: int, z1: Tensor, z2: Tensor, h1: Tensor, h2: Tensor) -> dict[str, Tensor]:
        """This step's small matrices by computation key (and "<key>/diag", the diagonal of
        each covariance); the exact small matrices of tracked computations at
        `full_every` steps go to `pending_full`."""
        views = self._views(z1, z2, h1, h2)
        if not self.plans:
            self._plan(views)
        full_step = step % self.full_every == 0
        done: dict[str, Tensor] = {}
        for plan in {p.key: p for p in self.plans.values()}.values():
            a, b = views[(plan.source, plan.viewed)]
            m = factored(plan.kind, a, b)
            if plan.tracked:
                done[plan.key] = self.trackers[plan.key].step(m, self.shift.get(plan.key, 0.0))
                if full_step:
                    self.pending_full.setdefault(step, {})[plan.key] = _to_host(m.small())
            else:
                done[plan.key] = m.small()
            if plan.kind != "xcorr":
                formed = m.formed and not plan.tracked  # then done[plan.key] is M itself
                done[plan.key + "/diag"] = done[plan.key].diagonal() if formed else m.f.square().sum(dim=0) * m.scale
        return done

    def _views(self, z1: Tensor, z2: Tensor, h1: Tensor, h2: Tensor) -> dict[tuple[str, bool], tuple]:
        """(source, as the loss sees it) → the two views in float64, each distinct tensor once."""
        z1, z2, h1, h2 = _each_once(lambda t: t.detach().double(), z1, z2, h1, h2)
        viewed = (z1, z2) if self.view is None else (self.view(z1), self.view(z2))  # z itself if raw
        return {("z", False): (z1, z2), ("z", True): viewed, ("h", False): (h1, h2), ("h", True): (h1, h2)}

    def _plan(self, views: dict[tuple[str, bool], tuple]) -> None:
        """At the first step, when the sizes are known: one computation per distinct
        (tensors, kind), which of them are tracked, the summary columns, the writers (cut
        back to the checkpoint's rows on resume)."""
        by_key: dict[str, _Plan] = {}
        for name in self.matrices:
            source, kind, viewed = MATRICES[name]
            a, b = views[(source, viewed)]
            key = f"{id(a)}-{id(b)}-{kind}"
            rows, dim = a.shape[0] * (2 if kind == "xcorr" else 1), a.shape[1]
            plan = by_key.setdefault(key, _Plan(f"{name}", source, kind, viewed, rows, dim,
                                                min(rows, dim) > self.exact_max))
            plan.names.append(name)
            self.plans[name] = plan
            base = ["effective_rank", "learned"] if kind == "xcorr" else \
                ["effective_rank", "rankme", "logdet", "hadamard_gap"]
            self.columns[name] = base + (["residual", "track_err"] if plan.tracked else [])
        for plan in by_key.values():
            if plan.tracked:
                tracker = SubspaceTracker(plan.dim, min(self.top_k, plan.dim), self.oversample, self.iters,
                                          views[(plan.source, plan.viewed)][0].device, seed=len(self.trackers))
                if plan.key in self.start["bases"]:
                    tracker.basis = self.start["bases"][plan.key].to(views[(plan.source, plan.viewed)][0])
                self.trackers[plan.key] = tracker
        self.full_names = [n for n in self.matrices if self.plans[n].dim > self.top_k]
        self.summary = [f"{n}/{c}" for n in self.matrices for c in self.columns[n]]
        meta = {"top_k": self.top_k, "full_every": self.full_every, "level": self.level, "tol": self.tol,
                "tracked": [n for n in self.matrices if self.plans[n].tracked], "summary": self.summary}
        self.writer = SpectrumWriter(self.run_dir, self.flush_every, self.start["rows"], meta=meta)
        if self.full_names:
            self.full = SpectrumWriter(self.run_dir, max(1, self.flush_every // self.full_every),
                                       self.start["full_rows"], table=layout.FULL_SPECTRUM)

    # ------------------------------------------------------------------- host thread

    def record(self, chunk: Chunk) -> dict[int, tuple[dict[str, float], dict[str, np.ndarray]]]:
        """Decompose, store and summarise a chunk's steps; returns for each step its finite
        summaries {"<series>/<metric>": value} and top eigenvalues {series: (≤ top_k,)}."""
        if chunk.ready is not None:
            chunk.ready.synchronize()
        if chunk.inputs:  # a CPU's chunk: the products first
            small = [self._small(step, *views) for step, views in zip(chunk.steps, chunk.inputs)]
            chunk = Chunk(chunk.steps, {k: torch.stack([s[k] for s in small]) for k in small[0]},
                          self.pending_full)
            self.pending_full = {}
        rows = {k: v.numpy() for k, v in chunk.rows.items()}
        spectra = {}  # computation key → (top (T, k), all eigenvalues (T, D) or None, extra columns)
        for plan in {p.key: p for p in self.plans.values()}.values():
            spectra[plan.key] = self._spectra(plan, chunk, rows)
        out = {}
        for t, step in enumerate(chunk.steps):
            row, full_row, summary = {}, {}, {}
            for name in self.matrices:
                plan = self.plans[name]
                top, eig, extra = spectra[plan.key]
                row[name] = top[t]
                if eig[t] is not None and step % self.full_every == 0 and name in self.full_names:
                    full_row[name] = eig[t]
                values = {k: v[t] for k, v in extra.items()}
                if plan.kind == "xcorr":
                    values["learned"] = float(metrics.learned_modes(eig[t] if eig[t] is not None else top[t],
                                                                    self.level))
                    self.events.update(step, name, eig[t] if eig[t] is not None else top[t])
                summary.update({f"{name}/{k}": float(v) for k, v in values.items()})
            self.latest = row
            self.writer.append(step, {**row, "summary": np.array([summary.get(c, np.nan) for c in self.summary])})
            if full_row:
                self.full.append(step, full_row)
            out[step] = {k: v for k, v in summary.items() if np.isfinite(v)}, row
        return out

    def _spectra(self, plan: _Plan, chunk: Chunk, rows: dict[str, np.ndarray]):
        """For one computation over a chunk: top eigenvalues (T, top_k), all eigenvalues
        per step (None where a tracked matrix has only its top), and summary columns."""
        steps, n = chunk.steps, len(chunk.steps)
        eig: list[np.ndarray | None] = [None] * n
        extra: dict[str, np.ndarray] = {}
        if not plan.tracked:
            values = small_eigenvalues(rows[plan.key], plan.dim)
            eig = list(values)
            top = values[:, : self.top_k]
        else:
            k = min(self.top_k, plan.dim)
            ritzes = [ritz(p, k) for p in rows[plan.key]]
            top = np.stack([theta for theta, _ in ritzes])
            extra["residual"] = np.array([r.max() / max(abs(theta[0]), np.finfo(float).tiny) for theta, r in ritzes])
            extra["track_err"] = np.full(n, np.nan)
            low = top.min()
            for t, step in enumerate(steps):
                if step in chunk.full:
                    exact = small_eigenvalues(chunk.full[step][plan.key].numpy(), plan.dim)
                    eig[t], low = exact, min(low, exact[-1])
                    err = float(np.abs(top[t] - exact[:k]).max() / max(abs(exact[0]), np.finfo(float).tiny))
                    extra["track_err"][t] = err
                    if err > self.tol:
                        log.warning("spectrum: tracked eigenvalues of %s deviate from the exact ones by %.2g·|λ₁| "
                                    "(spectrum.tol=%g) at step %d; raise spectrum.iters or spectrum.oversample",
                                    "/".join(plan.names), err, self.tol, step)
            self.shift[plan.key] = 1.25 * max(0.0, -low)
        whole = [t for t in range(n) if eig[t] is not None]
        for column in ("effective_rank", "rankme", "logdet", "hadamard_gap"):
            extra[column] = np.full(n, np.nan)
        for t in whole:
            extra["effective_rank"][t] = metrics.effective_rank(eig[t])
        if plan.kind != "xcorr" and whole:
            bound = min(plan.rows - 1, plan.dim)
            ranks = np.array([metrics.span_rank(eig[t], bound) for t in whole])
            for t, r in zip(whole, ranks):
                extra["rankme"][t] = metrics.rankme(eig[t], self.rankme_eps)
                extra["logdet"][t] = metrics.gaussian_logdet(eig[t], r)
            extra["hadamard_gap"][whole] = metrics.hadamard_gap(rows[plan.key + "/diag"][whole],
                                                                np.stack([eig[t] for t in whole]), ranks)
        return top, eig, extra

    # ---------------------------------------------------------------------- both

    def __call__(self, step: int, z1: Tensor, z2: Tensor, h1: Tensor, h2: Tensor) -> dict[str, float]:
        """`observe`, then `record` at once: this step's summaries (tests, scripts)."""
        chunk = self.observe(step, z1, z2, h1, h2) or self.flush()  # observe's own when the ring is full
        return self.record(chunk)[step][0]

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue the files and the tracking exactly:
        rows written per table, the events file's size, the tracking bases. Flushes the
        files; every chunk must have been recorded."""
        if self.writer is None:
            return self.start
        self.writer.flush()
        if self.full is not None:
            self.full.flush()
        return {"rows": self.writer.rows, "full_rows": self.full.rows if self.full else 0,
                "event_bytes": self.events.bytes,
                "bases": {key: t.basis.cpu() for key, t in self.trackers.items()}}

    def close(self) -> None:
        for writer in (self.writer, self.full):
            if writer is not None:
                writer.close()
        self.events.close()


def _each_once(fn: Callable[[Tensor], Tensor], *tensors: Tensor) -> tuple[Tensor, ...]:
    """fn of each tensor, computed once per distinct tensor, so that `h is z` stays true."""
    done: dict[int, Tensor] = {}
    for t in tensors:
        if id(t) not in done:
            done[id(t)] = fn(t)
    return tuple(done[id(t)] for t in tensors)


def _to_host(x: Tensor) -> Tensor:
    """A host copy of x; from CUDA non-blocking into pinned memory (valid once the chunk's
    event has completed)."""
    if not x.is_cuda:
        return x.clone()
    out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    return out.copy_(x, non_blocking=True)
