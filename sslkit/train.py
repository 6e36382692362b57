"""The training loop: data → two views → method (backbone → projector) → loss → optimizer step.

The spectrum and the metrics log only read what the step already computed (the loss
terms and the detached embeddings); switching them off leaves the trajectory unchanged.
A checkpoint every `trainer.checkpoint_every` steps (and on SIGTERM / SIGUSR1) lets a
relaunch in the same run directory continue exactly where the run stopped.
"""

import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from sslkit import checkpoint, distributed
from sslkit.errors import ConfigError, NonFiniteLossError, Preempted
from sslkit.eval import Evaluation
from sslkit.records import Observer
from sslkit.losses import LossOutput
from sslkit.methods import StepOutput, check_loss
from sslkit.optim import build_optimizer
from sslkit.rng import VIEWS, generator
from sslkit.run import StopSignal, check_run_dir, non_finite_message, resolve_device, save_run_info, total_steps
from sslkit.spectrum import reads_features

log = logging.getLogger(__name__)


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train the model `cfg` describes in `run_dir` (config.yaml, env.json, metrics.jsonl,
    spectrum/, checkpoints/), resuming from its last checkpoint if there is one.
    Returns the last logged metrics."""
    run_dir, ckpt_dir = Path(run_dir), Path(run_dir) / "checkpoints"
    rank = distributed.init(cfg.device.value)
    device = resolve_device(cfg.device.value, rank.local_rank)

    torch.manual_seed(cfg.seed)  # initial weights; batch order and views use sslkit.rng
    data = instantiate(cfg.data).to(device)
    if data.batch_size % rank.world_size:
        raise ConfigError(f"data.batch_size={data.batch_size} is the global batch and must divide "
                          f"by the number of processes, {rank.world_size}.")
    augment = instantiate(cfg.augment)
    backbone = instantiate(cfg.backbone, in_shape=tuple(data.x.shape[1:]))
    projector = instantiate(cfg.projector, in_dim=backbone.out_dim)
    net = instantiate(cfg.method, backbone=backbone, projector=projector).to(device)
    loss_fn = instantiate(cfg.loss)
    check_loss(net, loss_fn)  # the loss takes what the method gives it
    steps = total_steps(cfg.trainer, data.steps_per_epoch)
    optimizer, scheduler = build_optimizer(cfg.optim, net, steps)
    model = distributed.wrap(net, rank, device)
    evaluation = Evaluation.build(cfg, data, augment, net, device, steps) if rank.is_main else None

    if rank.is_main:
        check_run_dir(run_dir, cfg.trainer.resume, checkpoint_bytes=3 * sum(p.nbytes for p in net.parameters()))
    start, logs, last_ckpt = 0, None, None  # logs: the record files' positions (None: new files)
    if (found := find_checkpoint(cfg, ckpt_dir, device)) is not None:
        state, last_ckpt = found
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"], {})
        if evaluation is not None:
            evaluation.load_state_dict(state["eval"])
        start = state["step"]
        if last_ckpt.parent.resolve() == ckpt_dir.resolve():  # this run's own logs continue
            logs = state["logs"]
        log.info("resuming from %s at step %d", last_ckpt, start)

    observe = rank.is_main  # logs, spectra and checkpoints come from rank 0 only
    gather_features = rank.enabled and reads_features(cfg.spectrum)  # every rank joins the gather
    if observe:
        save_run_info(cfg, run_dir, device)
        # metrics.jsonl, spectra and dashboards, in a background thread; files cut back to `logs`
        observer = Observer(run_dir, cfg, device, start, logs)

    def save_checkpoint(step: int) -> None:
        nonlocal last_ckpt
        last_ckpt = checkpoint.save({
            "step": step,
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": checkpoint.rng_state({}),
            "config": checkpoint.config_yaml(cfg),
            "logs": observer.state(),  # waits until everything logged so far is written
            "eval": evaluation.state_dict() if evaluation is not None else None,
        }, ckpt_dir, step, cfg.trainer.keep_checkpoints)

    record: dict[str, float] = {}
    log_every, ckpt_every = cfg.trainer.log_every, cfg.trainer.checkpoint_every
    progress = tqdm(total=steps, initial=start, disable=not (observe and cfg.trainer.progress),
                    desc="train", unit="step")
    logged, tick = start, time.perf_counter()
    with StopSignal() as stop, progress:
        try:
            batches = data.batches(cfg.seed, start)
            for step, (epoch, x, y) in zip(range(start, steps), batches):
                x = distributed.shard(x, rank)
                v1, v2 = augment(x, generator(device, cfg.seed, VIEWS, rank.rank, step))
                s: StepOutput = distributed.gather(model(v1, v2), rank, gather_features)
                out: LossOutput = loss_fn(s.z1, s.z2, **s.extra)
                lr = scheduler.get_last_lr()[0]
                if torch.isfinite(out.loss):
                    optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    optimizer.step()
                    net.after_step(step, steps)  # e.g. a target network's moving average
                elif cfg.trainer.on_nan == "stop":
                    raise NonFiniteLossError(non_finite_message(out, step, last_ckpt))
                else:
                    log.warning(non_finite_message(out, step, last_ckpt) + " Skipped (trainer.on_nan=skip).")
                scheduler.step()

                if observe:
                    observer.spectrum(step, s)  # queued, detached: no sync
                accuracy = evaluation.after_step(step, s, y) if evaluation is not None else {}
                done = step + 1
                if observe and (done % log_every == 0 or done == steps or accuracy):
                    now = time.perf_counter()
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "loss": out.loss.item(),
                        **{k: v.item() for k, v in out.terms.items()},
                        "lr": lr,
                        "images_per_s": data.batch_size * (done - logged) / (now - tick),
                        **accuracy,
                    }
                    observer.log(record)  # completed with the step's spectrum summaries
                    progress.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
                    progress.update(done - progress.n)
                    logged, tick = done, now
                if observe and (done % ckpt_every == 0 or done == steps or stop.received):
                    save_checkpoint(done)
                if stop.received:
                    raise Preempted(f"stopped by {stop.received} after step {step}; checkpoint "
                                    f"{last_ckpt}. Relaunch the same command to resume.")
        finally:
            if observe:
                observer.close()
    return record


def find_checkpoint(cfg: DictConfig, ckpt_dir: Path, device: torch.device):
    """The checkpoint to resume from, per trainer.resume (auto | never | a path), checked
    against the current config; None to start from step 0."""
    resume = cfg.trainer.resume
    if resume == "never":
        return None
    if resume == "auto":
        found = checkpoint.load_latest(ckpt_dir, device)
    elif Path(resume).is_file():
        found = checkpoint.load(Path(resume), device), Path(resume)
    else:
        raise ConfigError(f"trainer.resume={resume!r} is neither auto, never, nor an existing "
                          f"checkpoint file.")
    if found is not None:
        checkpoint.check_same_config(found[0]["config"], cfg, found[1])
    return found
