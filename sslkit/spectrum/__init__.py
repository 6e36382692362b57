"""Per-step eigenvalue spectra of the embeddings, stored append-only in the run directory.

`load(run_dir)` returns {"step": (T,), "cov": (T, D), "xcorr": (T, D), …} numpy arrays
(eigenvalues descending; D capped at spectrum.top_k), plus "<series>/<metric>" summaries.
"""

from sslkit.spectrum.compute import Factored, eigenvalues, factored
from sslkit.spectrum.events import CrossingLog, crossing_steps, load_events
from sslkit.spectrum.monitor import MATRICES, SpectrumMonitor, reads_features
from sslkit.spectrum.store import NoSpectra, SpectrumWriter, load
from sslkit.spectrum.tracker import SubspaceTracker

__all__ = ["MATRICES", "CrossingLog", "Factored", "NoSpectra", "SpectrumMonitor", "SpectrumWriter", "SubspaceTracker",
           "crossing_steps", "eigenvalues", "factored", "load", "load_events",
           "reads_features"]
