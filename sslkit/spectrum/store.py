"""On-disk spectra: tables of raw little-endian rows under `run_dir/spectrum/`, append-only.

    spectrum/meta.json      {"dim": D, "series": [...], "widths": {...}, ...}
    spectrum/step.i8        int64, one value per recorded step
    spectrum/<series>.f4    float32, widths[series] values per recorded step
    spectrum/full/...       the same layout: complete spectra every spectrum.full_every steps
    spectrum/events.jsonl   one line per ½-crossing (sslkit.spectrum.events)

The monitor writes the top `spectrum.top_k` eigenvalues of every matrix each step (all of
them when D ≤ top_k) and a "summary" series whose columns (meta "summary") are the scalar
metrics, NaN where a step has none.

Rows are buffered in memory (at most `flush_every`) and appended; nothing is rewritten.
`load` keeps only the rows complete in every file, so it can read a run that is still
being written or that stopped mid-append.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from sslkit import layout


class NoSpectra(FileNotFoundError):
    """The run directory exists but holds no spectra: it was trained with spectrum.enabled=false."""


class SpectrumWriter:
    """Appends rows of named 1-D series to the table `run_dir/<table>`; each series keeps the
    width of its first row. `rows` counts every row appended so far (on disk or buffered).

    A resumed run passes `start_rows`, the `rows` its checkpoint recorded: the files are
    cut back to that many rows, dropping what was written after the checkpoint. `meta`
    adds keys to meta.json (written with the first row)."""

    def __init__(self, run_dir: str | Path, flush_every: int = 100, start_rows: int = 0,
                 table: str = layout.SPECTRUM, meta: dict[str, Any] | None = None) -> None:
        self.dir = Path(run_dir) / table
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self.meta = meta or {}
        self.widths: dict[str, int] | None = None
        self.buffer: list[tuple[int, dict[str, np.ndarray]]] = []
        self.rows = start_rows
        if (self.dir / "meta.json").exists():
            self.widths = _widths(json.loads((self.dir / "meta.json").read_text()))
            for path, size in sizes(run_dir, table, start_rows).items():
                _truncate(path, size)

    def append(self, step: int, row: dict[str, Tensor | np.ndarray]) -> None:
        """Buffer one row; a value beyond float32's range (a diverging run) is stored as ±inf."""
        with np.errstate(over="ignore"):
            row = {k: np.asarray(v.float().cpu() if isinstance(v, Tensor) else v, dtype="<f4") for k, v in row.items()}
        if self.widths is None:
            self.widths = {k: len(v) for k, v in row.items()}
            first = next(iter(self.widths.values()))
            meta = {"dim": first, "series": list(self.widths), "widths": self.widths, **self.meta}
            (self.dir / "meta.json").write_text(json.dumps(meta))
        self.buffer.append((step, row))
        self.rows += 1
        if len(self.buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        with open(self.dir / "step.i8", "ab") as f:
            np.array([s for s, _ in self.buffer], dtype="<i8").tofile(f)
        for name in self.widths:
            with open(self.dir / f"{name}.f4", "ab") as f:
                np.stack([r[name] for _, r in self.buffer]).tofile(f)
        self.buffer.clear()

    def close(self) -> None:
        self.flush()


def load(run_dir: str | Path, table: str = layout.SPECTRUM) -> dict[str, np.ndarray]:
    """{"step": (T,) int64, "<series>": (T, width) float32 for each series (eigenvalues
    descending), and "<series>/<metric>": (T,) float32 for each summary column}.

    `table="spectrum/full"` reads the complete spectra written every spectrum.full_every
    steps for the matrices with more than spectrum.top_k eigenvalues."""
    d = Path(run_dir) / table
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir} is not a directory: pass a run directory written by sslkit-train "
                                f"(its last line, 'run directory: ...', names it).")
    if not (d / "meta.json").exists():
        if table != layout.SPECTRUM and (Path(run_dir) / layout.SPECTRUM / "meta.json").exists():
            raise FileNotFoundError(f"{run_dir} has no {table} table: every matrix has at most "
                                    f"spectrum.top_k eigenvalues, so load(run_dir) holds them all.")
        raise NoSpectra(f"{run_dir} holds no spectra ({d / 'meta.json'} is missing); "
                                f"was it trained with spectrum.enabled=false?")
    meta = json.loads((d / "meta.json").read_text())
    widths = _widths(meta)
    out = {"step": _read(d / "step.i8", "<i8")}
    out.update({k: _read(d / f"{k}.f4", "<f4") for k in widths})
    rows = min(len(out["step"]), *(len(out[k]) // w for k, w in widths.items()))
    out["step"] = out["step"][:rows]
    out.update({k: out[k][: rows * w].reshape(rows, w) for k, w in widths.items()})
    if "summary" in widths:
        out.update({name: column for name, column in zip(meta["summary"], out.pop("summary").T)})
    return out


def sizes(run_dir: str | Path, table: str, rows: int) -> dict[Path, int]:
    """The bytes each file of the table `run_dir/<table>` holds with `rows` rows, from its
    meta.json (8 per row of step.i8, 4 × width of <series>.f4); with rows > 0 and no
    meta.json, meta.json itself (1 byte: it must exist)."""
    d = Path(run_dir) / table
    if not (d / "meta.json").exists():
        return {d / "meta.json": 1} if rows else {}
    widths = _widths(json.loads((d / "meta.json").read_text()))
    return {d / "step.i8": rows * 8, **{d / f"{name}.f4": rows * width * 4 for name, width in widths.items()}}


def _widths(meta: dict[str, Any]) -> dict[str, int]:
    return meta.get("widths") or {k: meta["dim"] for k in meta["series"]}


def _read(path: Path, dtype: str) -> np.ndarray:
    return np.fromfile(path, dtype=dtype) if path.exists() else np.empty(0, dtype=dtype)


def _truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)
