"""The training loop: data → two views → method (backbone → projector) → loss → optimizer step.

The spectrum and the metrics log only read what the step already computed (the loss
terms and the detached embeddings); switching them off leaves the trajectory unchanged.
A checkpoint every `trainer.checkpoint_every` steps (and after the step in which a stop
signal arrived: Ctrl-C, SIGTERM, SIGUSR1, submitit's SIGUSR2; `sslkit.run.StopSignal`) lets a
relaunch in the same run directory, or submitit's requeue, continue exactly where the run
stopped.

The host never waits for the device inside a step (sslkit.step): the loss's finiteness
gates the update on the device, and the host reads it with the logged values one step
later, while the device computes the next step. A non-finite loss then stops the run
(`trainer.on_nan=stop`: its update was never applied, nothing after it is logged or
saved) or is reported and skipped (`skip`), as if it had been read at once: before a
checkpoint and at the end the loop reads the current step first.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from sslkit import checkpoint, distributed, layout, runlock
from sslkit.errors import NonFiniteLossError, Preempted
from sslkit.eval import Evaluation
from sslkit.methods import StepOutput
from sslkit.records import Observer, check_records
from sslkit.run import SkippedSteps, StopSignal, check_run_dir, non_finite_message, resolve_device, save_run_info
from sslkit.step import HostValues, Step

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A step whose host side (NaN check, spectra, metrics) is still to do."""

    step: int
    epoch: int
    lr: float
    out: StepOutput
    terms: list[str]
    values: HostValues  # finite, loss, terms
    accuracy: dict[str, float]  # held-out accuracies of the weights after this step's update


def check(cfg: DictConfig) -> None:
    """The checks `train` makes before its first step, without a run directory and without
    training (for every job of a sweep before the first trains): build on the CPU, then
    views, embeddings and loss of two samples of the first batch."""
    resolve_device(cfg.device.value)
    run = Step.build(cfg, torch.device("cpu"))
    _, x, _ = next(run.data.batches(cfg.seed))
    with torch.no_grad():
        run.forward(*run.views(x[:2], 0))


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train the model `cfg` describes in `run_dir` (config.yaml, env.json, metrics.jsonl,
    spectrum/, checkpoints/), resuming from its last checkpoint if there is one; refused
    while another process trains there (sslkit.runlock). Returns the last logged metrics."""
    with runlock.held(Path(run_dir)):
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    run_dir, ckpt_dir = Path(run_dir), Path(run_dir) / layout.CHECKPOINTS
    rank = distributed.init(cfg.device.value)
    device = resolve_device(cfg.device.value, rank.local_rank)
    run = Step.build(cfg, device, rank)
    net, optimizer, scheduler, steps = run.net, run.optimizer, run.scheduler, run.steps
    evaluation = Evaluation.build(cfg, run.data, run.augment, net, device, steps) if rank.is_main else None

    check_run_dir(run_dir, checkpoint_bytes=3 * sum(p.nbytes for p in net.parameters()))
    start, logs, last_ckpt = 0, None, None  # logs: the record files' positions (None: new files)
    found = checkpoint.find(cfg, run_dir, device, rank.is_main)
    distributed.barrier(rank)  # every rank has read the run directory before rank 0 writes to it
    if found is not None:
        state, last_ckpt = found
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.warn_if_schedule_moved(scheduler, steps)
        checkpoint.set_rng_state(state["rng"])
        if evaluation is not None:
            evaluation.load_state_dict(state["eval"])
        start = state["step"]
        if last_ckpt.parent.resolve() == ckpt_dir.resolve():  # this run's own logs continue
            logs = state["logs"]
        log.info("resuming from %s at step %d", last_ckpt, start)
        if start >= steps:  # config.yaml and the logs stay as they are
            log.warning("%s already holds %d steps, trainer.max_steps=%s / max_epochs=%s ask for %d: nothing to "
                        "train. Raise trainer.max_steps above %d to continue the run.", run_dir, start,
                        cfg.trainer.max_steps, cfg.trainer.max_epochs, steps, start)
            return {}
        if logs is not None:
            check_records(run_dir, logs, last_ckpt)

    observe = rank.is_main  # logs, spectra and checkpoints come from rank 0 only
    if observe:
        save_run_info(cfg, run_dir, device)
        # metrics.jsonl, spectra and dashboards, in a background thread where a core is free; files cut back to `logs`
        observer = Observer(run_dir, cfg, device, start, logs,
                            view=getattr(run.loss_fn, "spectrum_view", None))  # xcorr is the loss's own C

    def save_checkpoint(step: int) -> None:
        nonlocal last_ckpt
        last_ckpt = checkpoint.save({
            "step": step,
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": checkpoint.rng_state(),
            "config": checkpoint.config_yaml(cfg),
            "logs": observer.state(),  # waits until everything logged so far is written
            "eval": evaluation.state_dict() if evaluation is not None else None,
        }, ckpt_dir, step, cfg.trainer.keep_checkpoints)

    record: dict[str, float] = {}
    log_every, ckpt_every = cfg.trainer.log_every, cfg.trainer.checkpoint_every
    progress = tqdm(total=steps, initial=start, disable=not (observe and cfg.trainer.progress),
                    desc="train", unit="step")
    logged, tick = start, time.perf_counter()

    def finish(p: Pending) -> None:
        """The host's part of step p: stop or skip on a non-finite loss, spectra, metrics."""
        nonlocal record, logged, tick
        finite, *values = p.values.get()
        values = dict(zip(["loss", *p.terms], values))
        if not finite:
            message = non_finite_message(values, p.step, last_ckpt)
            if cfg.trainer.on_nan == "stop":
                raise NonFiniteLossError(message)
            skipped.skip(p.step, message)
        else:
            skipped.ok()
        if not observe:
            return
        observer.spectrum(p.step, p.out)  # queued, detached: no sync
        done = p.step + 1
        if done % log_every == 0 or done == steps or p.accuracy:
            now = time.perf_counter()
            record = {"step": p.step, "epoch": p.epoch, **values, "lr": p.lr,
                      "images_per_s": run.data.batch_size * (done - logged) / (now - tick), **p.accuracy}
            observer.log(record)  # completed with the step's spectrum summaries
            progress.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            progress.update(done - progress.n)
            logged, tick = done, now

    skipped = SkippedSteps()
    pending: Pending | None = None
    with run.accel.matmul_precision(), StopSignal(rank) as stop, progress:
        try:
            for step, (epoch, x, y) in zip(range(start, steps), run.data.batches(cfg.seed, start)):
                s, out = run.forward(*run.views(x, step))
                finite = run.backward(out)
                lr = scheduler.get_last_lr()[0]
                run.update(step, finite)
                # the probes see these weights now, before the next step changes them
                accuracy = evaluation.after_step(step, s, x, y) if evaluation is not None else {}
                if pending is not None:  # the previous step, while the device computes this one
                    finish(pending)
                pending = Pending(step, epoch, lr, s, list(out.terms),
                                  HostValues([finite, out.loss, *out.terms.values()]), accuracy)
                done = step + 1
                stopping = stop.agreed()  # any rank's signal stops all ranks after this step
                if done % ckpt_every == 0 or done == steps or stopping:
                    finish(pending)
                    pending = None
                    if observe:
                        save_checkpoint(done)
                if stopping and done < steps:  # after the last step the run is complete: nothing to resume
                    raise Preempted(f"stopped by {stop.received} after {done} steps; checkpoint {last_ckpt}.",
                                    stop.received)
        finally:
            if observe:
                observer.close()
    if skipped.count:
        log.warning(skipped.summary(steps - start))
    return record

