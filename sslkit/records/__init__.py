"""What a run records besides checkpoints: metrics.jsonl, the spectrum monitor and the
dashboards (configs/logger/: sslkit.records.wandb, sslkit.records.tensorboard, imported
only when chosen), driven from a background thread."""

from sslkit.records.observer import Observer, check_records
from sslkit.records.sink import MetricsFile, Sink, read_metrics

__all__ = ["MetricsFile", "Observer", "Sink", "check_records", "read_metrics"]
