"""The training loop: data → two views → backbone → projector → loss → optimizer step.

The spectrum and the metrics log only read what the step already computed (the loss
terms and the detached embeddings); switching them off leaves the trajectory unchanged.
"""

import json
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from sslkit.losses import LossOutput
from sslkit.optim import build_optimizer
from sslkit.run import check_finite, check_new_run_dir, resolve_device, save_run_info, total_steps
from sslkit.spectrum import SpectrumWriter, eigenvalues


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train the model `cfg` describes; write config.yaml, env.json, metrics.jsonl and
    spectrum/ into `run_dir`. Returns the last logged metrics."""
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir)
    device = resolve_device(cfg.device.value)

    # Seeds: one for the model's initialisation, one stream each for batch order and views.
    torch.manual_seed(cfg.seed)
    data_rng = torch.Generator(device).manual_seed(cfg.seed)
    view_rng = torch.Generator(device).manual_seed(cfg.seed + 1)

    data = instantiate(cfg.data).to(device)
    augment = instantiate(cfg.augment)
    backbone = instantiate(cfg.backbone, in_shape=tuple(data.x.shape[1:]))
    projector = instantiate(cfg.projector, in_dim=backbone.out_dim)
    model = nn.ModuleDict({"backbone": backbone, "projector": projector}).to(device)
    loss_fn = instantiate(cfg.loss)
    steps = total_steps(cfg.trainer, data.steps_per_epoch)
    optimizer, scheduler = build_optimizer(cfg.optim, model, steps)

    save_run_info(cfg, run_dir, device)
    spectra = SpectrumWriter(run_dir, cfg.spectrum.flush_every) if cfg.spectrum.enabled else None
    log_every = cfg.trainer.log_every
    record: dict[str, float] = {}
    with open(run_dir / "metrics.jsonl", "a") as metrics, tqdm(
        total=steps, disable=not cfg.trainer.progress, desc="train", unit="step"
    ) as progress:
        step, epoch, logged, tick = 0, 0, 0, time.perf_counter()
        try:
            while step < steps:
                for x, _ in data.epoch(data_rng):
                    v1, v2 = augment(x, view_rng)
                    z1, z2 = projector(backbone(v1)), projector(backbone(v2))
                    out: LossOutput = loss_fn(z1, z2)
                    check_finite(out, step)
                    optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    optimizer.step()
                    lr = scheduler.get_last_lr()[0]
                    scheduler.step()

                    if spectra is not None:
                        spectra.append(step, eigenvalues(z1, z2))
                    step += 1
                    if step % log_every == 0 or step == steps:
                        now = time.perf_counter()
                        record = {
                            "step": step - 1,
                            "epoch": epoch,
                            "loss": out.loss.item(),
                            **{k: v.item() for k, v in out.terms.items()},
                            "lr": lr,
                            "images_per_s": data.batch_size * (step - logged) / (now - tick),
                        }
                        metrics.write(json.dumps(record) + "\n")
                        progress.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
                        progress.update(step - progress.n)
                        logged, tick = step, now
                    if step == steps:
                        break
                epoch += 1
        finally:
            if spectra is not None:
                spectra.close()
    return record
