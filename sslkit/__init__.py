"""sslkit: joint-embedding self-supervised learning with per-step eigenvalue spectra."""

__version__ = "0.1.0"
