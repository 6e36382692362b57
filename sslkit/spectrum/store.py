"""On-disk spectra: one raw little-endian file per series under `run_dir/spectrum/`.

    meta.json    {"dim": D, "series": ["cov", "xcorr"]}
    step.i8      int64, one value per recorded step
    cov.f4       float32, D values per recorded step
    xcorr.f4     float32, D values per recorded step

Rows are buffered in memory (at most `flush_every`) and appended; nothing is rewritten.
`load` keeps only the rows complete in every file, so it can read a run that is still
being written or that stopped mid-append.
"""

import json
from pathlib import Path

import numpy as np
from torch import Tensor

SERIES = ("cov", "xcorr")


class SpectrumWriter:
    """Appends rows; `rows` counts every row appended so far (on disk or buffered).

    A resumed run passes `start_rows`, the `rows` its checkpoint recorded: the files are
    cut back to that many rows, dropping what was written after the checkpoint."""

    def __init__(self, run_dir: str | Path, flush_every: int = 100, start_rows: int = 0) -> None:
        self.dir = Path(run_dir) / "spectrum"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self.dim: int | None = None
        self.buffer: list[tuple[int, dict[str, np.ndarray]]] = []
        self.rows = start_rows
        if (self.dir / "meta.json").exists():
            self.dim = json.loads((self.dir / "meta.json").read_text())["dim"]
            _truncate(self.dir / "step.i8", start_rows * 8)
            for name in SERIES:
                _truncate(self.dir / f"{name}.f4", start_rows * self.dim * 4)

    def append(self, step: int, spectra: dict[str, Tensor]) -> None:
        row = {k: spectra[k].float().cpu().numpy() for k in SERIES}
        if self.dim is None:
            self.dim = len(row["cov"])
            (self.dir / "meta.json").write_text(json.dumps({"dim": self.dim, "series": list(SERIES)}))
        self.buffer.append((step, row))
        self.rows += 1
        if len(self.buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        with open(self.dir / "step.i8", "ab") as f:
            np.array([s for s, _ in self.buffer], dtype="<i8").tofile(f)
        for name in SERIES:
            with open(self.dir / f"{name}.f4", "ab") as f:
                np.stack([r[name] for _, r in self.buffer]).astype("<f4").tofile(f)
        self.buffer.clear()

    def close(self) -> None:
        self.flush()


def load(run_dir: str | Path) -> dict[str, np.ndarray]:
    """{"step": (T,) int64, "cov": (T, D), "xcorr": (T, D) float32}, eigenvalues descending."""
    d = Path(run_dir) / "spectrum"
    if not (d / "meta.json").exists():
        raise FileNotFoundError(f"{run_dir} holds no spectra ({d / 'meta.json'} is missing); "
                                f"was it trained with spectrum.enabled=false?")
    dim = json.loads((d / "meta.json").read_text())["dim"]
    out = {"step": _read(d / "step.i8", "<i8")}
    out.update({k: _read(d / f"{k}.f4", "<f4") for k in SERIES})
    rows = min(len(out["step"]), *(len(out[k]) // dim for k in SERIES))
    out["step"] = out["step"][:rows]
    out.update({k: out[k][: rows * dim].reshape(rows, dim) for k in SERIES})
    return out


def _read(path: Path, dtype: str) -> np.ndarray:
    return np.fromfile(path, dtype=dtype) if path.exists() else np.empty(0, dtype=dtype)


def _truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)
