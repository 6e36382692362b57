"""What every dashboard implements, and the run directory's own metrics log."""

import json
import math
from pathlib import Path
from typing import Protocol

import numpy as np

from sslkit import layout


class Sink(Protocol):
    """A dashboard a run reports to (configs/logger/). Built with the run directory, the
    resolved config as a dict (`run_config`) and the first step (> 0 when the run resumes); called from
    the observer's thread."""

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_spectrum(self, step: int, spectra: dict[str, np.ndarray]) -> None:
        """Called at every observed step with the top eigenvalues of each matrix; the sink
        keeps its own cadence."""

    def log_figure(self, step: int, name: str, png: Path) -> None: ...

    def close(self) -> None: ...


class MetricsFile:
    """`run_dir/metrics.jsonl` (`layout.METRICS`), one JSON line per logged step; a
    non-finite value (a step skipped with trainer.on_nan=skip) is written as null, so every
    line is strict JSON. A resumed run passes the size its checkpoint recorded (`bytes`):
    what was written after it is cut off."""

    def __init__(self, path: Path, start_bytes: int = 0) -> None:
        self.file = open(path, "ab")
        self.file.truncate(start_bytes)
        self.file.seek(start_bytes)

    @property
    def bytes(self) -> int:
        return self.file.tell()

    def write(self, record: dict[str, float]) -> None:
        finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self.file.write((json.dumps(finite, allow_nan=False) + "\n").encode())

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of run_dir/metrics.jsonl as `MetricsFile` wrote them; null (a non-finite
    value) is read back as NaN."""
    path = Path(run_dir) / layout.METRICS
    if Path(run_dir).is_dir() and not path.exists():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl, which sslkit-train writes: train the run into it "
                                f"(sslkit-train <its overrides> hydra.run.dir={run_dir}); sslkit-theory alone writes "
                                f"only theory/.")
    with open(path) as f:
        return [{k: np.nan if v is None else v for k, v in json.loads(line).items()} for line in f if line.strip()]
