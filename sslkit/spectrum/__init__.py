"""Per-step eigenvalue spectra of the embeddings, stored append-only in the run directory.

`load(run_dir)` returns {"step": (T,), "cov": (T, D), "xcorr": (T, D)} numpy arrays.
"""

from sslkit.spectrum.compute import eigenvalues
from sslkit.spectrum.events import crossing_steps
from sslkit.spectrum.store import SpectrumWriter, load

__all__ = ["crossing_steps", "eigenvalues", "SpectrumWriter", "load"]
