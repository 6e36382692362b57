"""What a run records besides checkpoints: metrics.jsonl, the spectrum monitor and the
dashboards (configs/logger/: sslkit.logging.wandb, sslkit.logging.tensorboard, imported
only when chosen), driven from a background thread."""

from sslkit.logging.observer import Observer
from sslkit.logging.sink import MetricsFile, Sink

__all__ = ["MetricsFile", "Observer", "Sink"]
