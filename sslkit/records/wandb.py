"""Weights & Biases: the resolved config as the run config, scalars every logged step;
every `spectrum_every` steps the spectrum heat-maps and the eigenvalue trajectories so far
as one line-series chart per matrix (λ₁ ≥ λ₂ ≥ … over steps; W&B shows the latest), so the
chart grows while the run trains; at the end the stepwise figure.

`mode=online` without an API key (WANDB_API_KEY, or `wandb login`'s ~/.netrc entry) logs
offline instead and says how to upload the run later with `wandb sync`. The run id is kept
in `RUN_DIR/wandb-run-id`, so a resumed run continues the same W&B run.
"""

import logging
import netrc
import os
import uuid
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import wandb

from sslkit import layout
from sslkit.records.heatmap import SpectrumHistory

log = logging.getLogger(__name__)

CHART_STEPS = 100  # the most steps an eigenvalue chart draws per mode


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbMode(str, Enum):
    online = "online"  # falls back to offline without an API key
    offline = "offline"
    disabled = "disabled"


class WandbSink:
    """logger=wandb: the metrics, the figures and every `spectrum_every` steps a heat-map of
    each matrix's top `modes` eigenvalues and their line chart over the steps so far, in a
    Weights & Biases run that a resumed run continues (its id is kept in the run directory).

    Args:
        mode: online (offline when no API key is configured), offline or disabled.
        project: The W&B project.
        entity: The W&B team or user (null: the account's default).
        name: The run's name (null: the run directory's name).
        tags: The run's tags.
        spectrum_every: Steps between two spectrum logs (eigenvalue charts, heat-maps, histograms).
        modes: Number of top eigenvalues charted and drawn per matrix.
    """

    def __init__(self, run_dir: str | Path, run_config: dict[str, Any], start_step: int = 0,
                 mode: WandbMode = WandbMode.online, project: str = "sslkit", entity: str | None = None,
                 name: str | None = None, tags: list[str] | None = None,
                 spectrum_every: int = 100, modes: int = 32) -> None:
        self.history = SpectrumHistory("wandb", spectrum_every, modes)
        run_dir = Path(run_dir)
        offline_fallback = mode == "online" and not has_api_key()
        id_file = run_dir / layout.WANDB_RUN_ID
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        self.run = wandb.init(
            mode="offline" if offline_fallback else mode, dir=run_dir, project=project, entity=entity,
            name=name or run_dir.name, tags=tags, config=run_config, id=run_id, resume="allow",
        )
        if offline_fallback:
            log.warning("wandb: no API key configured, logging offline; upload later with "
                        "`wandb sync %s`", Path(self.run.dir).parent)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def log_spectrum(self, step: int, spectra: dict[str, np.ndarray]) -> None:
        if not self.history.due(step):
            return
        self.history.add(step, spectra)
        payload: dict[str, Any] = {}
        for name in spectra:
            payload[f"spectrum/{name}"] = wandb.Image(self.history.image(name),
                                                      caption=f"log10 eigenvalues of {name}: modes × steps")
            payload[f"trajectories/{name}"] = self.trajectories(name)
        self.run.log(payload, step=step)

    def trajectories(self, name: str) -> Any:
        """The line series of `name`'s eigenvalues at the logged steps so far, one line per
        mode, drawn from a table of one row per mode and step. W&B type-checks every row of
        a table as it is built (≈ 20 µs of CPU time each, in the observer's thread) and
        drops the rows past `wandb.Table.MAX_ROWS`: a history longer than `CHART_STEPS` (or
        than the row limit allows) is thinned to evenly spread steps, the first and the
        latest among them."""
        trajectories = self.history.matrix(name)
        modes, steps = trajectories.shape
        kept = np.linspace(0, steps - 1, min(steps, CHART_STEPS, wandb.Table.MAX_ROWS // modes))
        kept = np.unique(kept.round().astype(int))
        return wandb.plot.line_series(
            xs=np.asarray(self.history.steps)[kept].tolist(), ys=trajectories[:, kept].tolist(),
            keys=[f"λ{k + 1}" for k in range(modes)], title=f"eigenvalues of {name}", xname="step")

    def log_figure(self, step: int, name: str, png: Path) -> None:
        self.run.log({f"figures/{name}": wandb.Image(str(png))}, step=step)

    def close(self) -> None:
        self.run.finish()
