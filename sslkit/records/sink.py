"""What every dashboard implements, and the run directory's own metrics log."""

import json
import math
from pathlib import Path
from typing import Protocol

import numpy as np


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
    """`run_dir/metrics.jsonl`, one JSON line per logged step; a non-finite value (a step
    skipped with trainer.on_nan=skip) is written as null, so every line is strict JSON. A
    resumed run passes the size its checkpoint recorded (`bytes`): what was written after
    it is cut off."""

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
