"""Everything a run records besides checkpoints — metrics.jsonl, the spectrum monitor, the
dashboards — done so that the training step waits for it as little as the hardware allows.

`spectrum(step, out)` runs the monitor's device part in the training thread:
a few products per matrix, launched (on CUDA on the observer's own stream, after the
step's work) into a ring on the device, copied to the host in bulk every
`spectrum.chunk` steps (sslkit.spectrum.monitor). Launching there costs less host time
than from a second Python thread, which would hold the interpreter lock while it launches.
Everything else — eigenvalues of the small matrices, summaries, files, dashboards, and on
a CPU the products too — runs in a background thread where a core is free for it: beside
a GPU (the step's host work is launches), and on a CPU when the step's thread pool leaves
a core (`torch.get_num_threads()` below the cores the process may use). That thread takes
only what the step leaves of the CPU: it runs at the lowest scheduling priority (nice 19,
Linux sets it per thread) and on one core (its own OpenMP setting, which is per thread).

Where the step's pool holds every core (a CPU run at its default thread count), the
background thread gets a core only when the pool leaves one idle; beside any other busy
process it starves at its low priority, and the loop waits on it at the queue's bound.
There the work runs in the training thread instead, a chunk at a time, on the step's own
pool (600 steps of the default experiment at 2 threads on 2 cores beside one busy process:
the whole run took 3.7–4.0× its time with the monitor off with the thread, 1.24–1.40× in
the training thread; on the idle machine 1.1–1.9× and 1.26–1.60×; docs/benchmarks.md).
The training's thread settings are never touched.

`log(record)` queues the step's metrics. A record waits until the spectrum summaries of
its own step are known, then it is written to metrics.jsonl and sent to the dashboards.
The queue is bounded: if the thread falls behind by `MAX_PENDING` items the loop waits
for it.

`state()` waits until everything queued is written and returns the files' positions for a
checkpoint; a resumed run passes them back to cut the files to that point.
"""

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import ThreadpoolController
from torch import Tensor

from sslkit import layout
from sslkit.methods import StepOutput
from sslkit.errors import ConfigError
from sslkit.records.sink import MetricsFile, Sink
from sslkit.spectrum import SpectrumMonitor
from sslkit.spectrum.store import sizes

log = logging.getLogger(__name__)

MAX_PENDING = 8


class Observer:
    def __init__(self, run_dir: str | Path, cfg: DictConfig, device: torch.device, start_step: int = 0,
                 state: dict[str, Any] | None = None, view: Callable[[Tensor], Tensor] | None = None) -> None:
        """`view`: how the loss maps embeddings before its C (the loss's `spectrum_view`)."""
        self.run_dir = Path(run_dir)
        state = state or {"metrics_bytes": 0, "spectrum": None}
        spectrum = OmegaConf.to_container(cfg.spectrum, resolve=True, enum_to_str=True)
        self.monitor: SpectrumMonitor | None = (
            instantiate(spectrum, _partial_=True, _convert_="all")(run_dir=self.run_dir, state=state["spectrum"],
                                                             view=view)
            if spectrum.pop("enabled") else None
        )
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        self.sinks: list[Sink] = [
            instantiate(c, _partial_=True, _convert_="all")(run_dir=self.run_dir, run_config=resolved,
                                                            start_step=start_step)
            for c in cfg.logger.values()
        ]
        self.metrics = MetricsFile(self.run_dir / layout.METRICS, state["metrics_bytes"])
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.queue: queue.Queue = queue.Queue(MAX_PENDING)
        self.error: BaseException | None = None
        self.recorded: dict[int, tuple] = {}  # step → (summaries, top eigenvalues), until sent on
        self.summaries: dict[int, dict[str, float]] = {}
        self.recorded_through = -1  # the last step whose spectrum is recorded
        self.held: list[tuple[dict, int]] = []  # records waiting for the spectra observed before them
        self.observed = -1  # the last step handed to the monitor
        self.last_step = start_step
        self.thread: threading.Thread | None = None
        if core_to_spare(device):
            self.thread = threading.Thread(target=self._work, name="sslkit-observer", daemon=True)
            self.thread.start()

    def spectrum(self, step: int, out: StepOutput) -> None:
        """This step's spectra (if the monitor observes this step): the device part now,
        without waiting for the device; the rest in the thread."""
        if self.monitor is None or not self.monitor.wants(step):
            return
        out = out.map(Tensor.detach)  # keeps `h is z` visible to the monitor
        views = (out.z1, out.z2, out.h1, out.h2)
        if self.stream is None:
            chunk = self.monitor.observe(step, *views)
        else:
            self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
            with torch.cuda.stream(self.stream):
                for t in views:
                    t.record_stream(self.stream)
                chunk = self.monitor.observe(step, *views)
        self.observed = step
        if chunk is not None:
            self._put(("spectrum", chunk))

    def _flush_spectrum(self) -> None:
        """Send the steps still in the monitor's ring to the thread."""
        if self.monitor is None:
            return
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            chunk = self.monitor.flush()
        if chunk is not None:
            self._put(("spectrum", chunk))

    def log(self, record: dict[str, float]) -> None:
        """Queue a metrics record; it is completed in place with the spectrum summaries of
        its step, written to metrics.jsonl and sent to the dashboards."""
        self._put(("record", record, self.observed))

    def state(self) -> dict[str, Any]:
        """Wait for everything queued, flush, and return the positions for a checkpoint."""
        self._flush_spectrum()
        if self.thread is not None:
            self.queue.join()
        self._raise()
        self.metrics.flush()
        return {"metrics_bytes": self.metrics.bytes,
                "spectrum": self.monitor.state() if self.monitor else None}

    def close(self) -> None:
        """Finish the queue, close the files, send the stepwise figure to the dashboards."""
        if self.error is None:
            self._flush_spectrum()
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
        if self.error is None:
            self._send_spectra(float("inf"))
        self.metrics.close()
        if self.monitor is not None:
            self.monitor.close()
        try:
            if self.sinks and self.monitor is not None and self.monitor.latest and self.error is None:
                from sslkit.report import stepwise_figure

                png = stepwise_figure(self.run_dir, pdf=False)
                for sink in self.sinks:
                    sink.log_figure(self.last_step, layout.FIGURE, png)
        finally:
            for sink in self.sinks:
                sink.close()
        self._raise()

    def _put(self, item: tuple) -> None:
        self._raise()
        if self.thread is not None:
            self.queue.put(item)
            return
        try:  # in the training thread: a failure is reported as the thread's would be
            self._handle(item)
        except Exception as exc:
            self.error = exc
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"recording the run failed: {self.error!r}") from self.error

    def _work(self) -> None:
        _yield_to_training()
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
            chunk = item[1]
            self.recorded.update(self.monitor.record(chunk))
            self.recorded_through = chunk.steps[-1]
        else:
            self.held.append(item[1:])
        while self.held and self.held[0][1] <= self.recorded_through:  # every spectrum before it recorded
            self._write(self.held.pop(0)[0])

    def _write(self, record: dict) -> None:
        """Send the recorded spectra up to the record's step to the dashboards, in step
        order, then the record, completed with its step's summaries."""
        self._send_spectra(record["step"])
        record.update(self.summaries.pop(record["step"], {}))
        self.summaries.clear()
        self.metrics.write(record)
        self.last_step = record["step"]
        scalars = {k: v for k, v in record.items() if k != "step"}
        for sink in self.sinks:
            sink.log_scalars(record["step"], scalars)

    def _send_spectra(self, through: float) -> None:
        for step in [s for s in self.recorded if s <= through]:
            summaries, rows = self.recorded.pop(step)
            self.summaries[step] = summaries
            for sink in self.sinks:
                sink.log_spectrum(step, rows)


def check_records(run_dir: Path, logs: dict[str, Any], checkpoint: Path) -> None:
    """Before a resume continues the record files from the positions its checkpoint holds
    (`logs`, from `Observer.state`): each file is at least that long. A file deleted or cut
    shorter since would be continued after a gap (metrics.jsonl padded with NUL bytes, the
    spectrum tables shifted), so it is a ConfigError saying which files and what to do."""
    spectrum = logs["spectrum"] or {"rows": 0, "full_rows": 0, "event_bytes": 0}
    expected = {run_dir / layout.METRICS: logs["metrics_bytes"],
                run_dir / layout.EVENTS: spectrum["event_bytes"],
                **sizes(run_dir, layout.SPECTRUM, spectrum["rows"]),
                **sizes(run_dir, layout.FULL_SPECTRUM, spectrum["full_rows"])}
    short = [f"{path.relative_to(run_dir)} ({path.stat().st_size if path.exists() else 'missing'}, "
             f"{size} bytes at the checkpoint)" for path, size in expected.items()
             if size and (not path.exists() or path.stat().st_size < size)]
    if short:
        raise ConfigError(
            f"{run_dir} lost records that {checkpoint} continues: {', '.join(short)}; appending to them would "
            f"leave a gap. Restore the files, or continue from the checkpoint with new records in a new directory: "
            f"trainer.resume={checkpoint} hydra.run.dir=NEW_DIR (or start again: trainer.resume=overwrite).")


def core_to_spare(device: torch.device) -> bool:
    """Whether a background thread would have a core of its own: beside a GPU always, on a
    CPU when the step's intra-op pool is smaller than the cores this process may use."""
    if device.type != "cpu":
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return torch.get_num_threads() < cores


def _yield_to_training() -> None:
    """Make the calling thread a background one: lowest priority, one OpenMP thread. Both
    settings belong to this thread alone; the process's are unchanged."""
    with contextlib.suppress(OSError, AttributeError):  # where threads have no priority of their own
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    ThreadpoolController().limit(limits=1, user_api="openmp")
