"""Everything a run records besides checkpoints — metrics.jsonl, the spectrum monitor, the
dashboards — done in a background thread, so that the training step never waits for it.

The loop hands over what it already has: `spectrum(step, out)` queues detached
references to the step's tensors (on CUDA with an event marking when they are ready; the
thread computes on its own stream), `log(record)` queues the step's metrics. Items are
handled in order, so a record is completed with the spectrum summaries of its own step
before it is written to metrics.jsonl and sent to the dashboards. The queue is bounded:
if the thread falls behind by `MAX_PENDING` items the loop waits for it.

`state()` waits until everything queued is written and returns the files' positions for a
checkpoint; a resumed run passes them back to cut the files to that point.
"""

import logging
import queue
import threading
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from sslkit.methods import StepOutput
from sslkit.records.sink import MetricsFile, Sink
from sslkit.spectrum import SpectrumMonitor

log = logging.getLogger(__name__)

MAX_PENDING = 8


class Observer:
    def __init__(self, run_dir: str | Path, cfg: DictConfig, device: torch.device, start_step: int = 0,
                 state: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        state = state or {"metrics_bytes": 0, "spectrum": None}
        spectrum = OmegaConf.to_container(cfg.spectrum, resolve=True, enum_to_str=True)
        self.monitor: SpectrumMonitor | None = (
            instantiate(spectrum, _partial_=True, _convert_="all")(run_dir=self.run_dir, state=state["spectrum"])
            if spectrum.pop("enabled") else None
        )
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        self.sinks: list[Sink] = [
            instantiate(c, _partial_=True, _convert_="all")(run_dir=self.run_dir, run_config=resolved,
                                                            start_step=start_step)
            for c in cfg.logger.values()
        ]
        self.metrics = MetricsFile(self.run_dir / "metrics.jsonl", state["metrics_bytes"])
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.queue: queue.Queue = queue.Queue(MAX_PENDING)
        self.error: BaseException | None = None
        self.summary_step, self.summary, self.last_step = -1, {}, start_step
        self.thread = threading.Thread(target=self._work, name="sslkit-observer", daemon=True)
        self.thread.start()

    def spectrum(self, step: int, out: StepOutput) -> None:
        """Queue the spectra of the step's embeddings and features (if the monitor observes
        this step); never syncs."""
        if self.monitor is None or not self.monitor.wants(step):
            return
        out = out.map(Tensor.detach)  # keeps `h is z` visible to the monitor
        views = (out.z1, out.z2, out.h1, out.h2)
        ready = None
        if self.stream is not None:
            ready = torch.cuda.Event()
            ready.record()
        self._put(("spectrum", step, views, ready))

    def log(self, record: dict[str, float]) -> None:
        """Queue a metrics record; it is completed in place with the spectrum summaries of
        its step, written to metrics.jsonl and sent to the dashboards."""
        self._put(("record", record))

    def state(self) -> dict[str, Any]:
        """Wait for everything queued, flush, and return the positions for a checkpoint."""
        self.queue.join()
        self._raise()
        self.metrics.flush()
        return {"metrics_bytes": self.metrics.bytes,
                "spectrum": self.monitor.state() if self.monitor else None}

    def close(self) -> None:
        """Finish the queue, close the files, send the stepwise figure to the dashboards."""
        self.queue.put(None)
        self.thread.join()
        self.metrics.close()
        if self.monitor is not None:
            self.monitor.close()
        try:
            if self.sinks and self.monitor is not None and self.monitor.latest and self.error is None:
                from sslkit.report import stepwise_figure

                png = stepwise_figure(self.run_dir)
                for sink in self.sinks:
                    sink.log_figure(self.last_step, "stepwise", png)
        finally:
            for sink in self.sinks:
                sink.close()
        self._raise()

    def _put(self, item: tuple) -> None:
        self._raise()
        self.queue.put(item)

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"recording the run failed: {self.error!r}") from self.error

    def _work(self) -> None:
        if self.stream is None:
            torch.set_num_threads(1)  # this thread's own: the training keeps its threads
        while (item := self.queue.get()) is not None:
            try:
                if self.error is None:  # after a failure, only drain the queue
                    self._handle(item)
            except BaseException as exc:  # re-raised in the training thread
                self.error = exc
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def _handle(self, item: tuple) -> None:
        if item[0] == "spectrum":
            _, step, views, ready = item
            if ready is None:
                self.summary = self.monitor.observe(step, *views)
            else:
                with torch.cuda.stream(self.stream):
                    self.stream.wait_event(ready)
                    for t in views:
                        t.record_stream(self.stream)
                    self.summary = self.monitor.observe(step, *views)
            self.summary_step = step
            for sink in self.sinks:
                sink.log_spectrum(step, self.monitor.latest)
        else:
            record = item[1]
            if record["step"] == self.summary_step:
                record.update(self.summary)
            self.metrics.write(record)
            self.last_step = record["step"]
            scalars = {k: v for k, v in record.items() if k != "step"}
            for sink in self.sinks:
                sink.log_scalars(record["step"], scalars)
