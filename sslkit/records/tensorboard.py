"""TensorBoard: scalars every logged step; every `spectrum_every` steps the top `modes`
eigenvalues of each matrix as scalars, drawn together in one multi-line chart per matrix
(the custom scalars dashboard: λ₁ ≥ λ₂ ≥ … of C over steps), their histogram and the
spectrum heat-map; the stepwise figure at the end; the resolved config as text.

    tensorboard --logdir RUN_DIR/tensorboard
"""

from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import yaml
from torch.utils.tensorboard import SummaryWriter

from sslkit import layout
from sslkit.records.heatmap import SpectrumHistory

CHARTS = "eigenvalues"  # the custom scalars category that holds one multi-line chart per matrix


def eigenvalue_tag(matrix: str, k: int, modes: int) -> str:
    """The scalar tag of the (k+1)-th largest eigenvalue, numbered from 1 and zero-padded to
    the width of `modes` so that tags sort in mode order: eigenvalues/xcorr/λ01."""
    return f"{CHARTS}/{matrix}/λ{k + 1:0{len(str(modes))}d}"


def chart_layout(counts: dict[str, int]) -> dict[str, dict[str, list]]:
    """One "Multiline" chart per matrix, given how many of its eigenvalues are charted: its
    series are the tags `eigenvalue_tag` writes for it (a regular expression, which
    TensorBoard matches from the tag's start)."""
    return {CHARTS: {f"top {n} eigenvalues of {matrix}": ["Multiline", [rf"{CHARTS}/{matrix}/λ\d+$"]]
                     for matrix, n in counts.items()}}


class TensorBoardSink:
    """logger=tensorboard: the metrics as TensorBoard scalars, and every `spectrum_every`
    steps a histogram of each matrix's eigenvalues, a heat-map of its top `modes`, and those
    top eigenvalues as scalars drawn together in one Custom Scalars chart per matrix.

    Args:
        log_dir: Folder of the event files (null: RUN_DIR/tensorboard).
        spectrum_every: Steps between two spectrum logs (eigenvalue charts, heat-maps, histograms).
        modes: Number of top eigenvalues charted and drawn per matrix.
    """

    def __init__(self, run_dir: str | Path, run_config: dict[str, Any], start_step: int = 0,
                 log_dir: str | None = None, spectrum_every: int = 100, modes: int = 32) -> None:
        self.history = SpectrumHistory("tensorboard", spectrum_every, modes)
        # purge_step hides what an interrupted run logged after its last checkpoint
        self.writer = SummaryWriter(log_dir or str(Path(run_dir) / layout.TENSORBOARD),
                                    purge_step=start_step or None)
        self.charted = False  # the chart layout, written with the first spectra (by each session of a run)
        if not start_step:
            self.writer.add_text("config", "```\n" + yaml.safe_dump(run_config, sort_keys=False) + "```", 0)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def log_spectrum(self, step: int, spectra: dict[str, np.ndarray]) -> None:
        if not self.history.due(step):
            return
        self.history.add(step, spectra)
        modes = self.history.modes
        if not self.charted:
            self.writer.add_custom_scalars(chart_layout({name: len(eig[:modes]) for name, eig in spectra.items()}))
            self.charted = True
        for name, eig in spectra.items():
            for k, value in enumerate(eig[:modes]):
                self.writer.add_scalar(eigenvalue_tag(name, k, modes), value, step)
            self.writer.add_histogram(f"eigenvalues/{name}", eig, step)
            self.writer.add_image(f"spectrum/{name}", self.history.image(name), step, dataformats="HWC")

    def log_figure(self, step: int, name: str, png: Path) -> None:
        image = matplotlib.image.imread(png)[..., :3]  # float RGB(A) in [0, 1]
        self.writer.add_image(f"figures/{name}", image, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
