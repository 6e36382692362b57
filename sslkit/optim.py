"""Optimizers and learning-rate schedules.

Parameters with `ndim == 1` (biases, BatchNorm weights) get no weight decay and no LARS
adaptation, as in the official Barlow Twins and VICReg code.
"""

import math

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from sslkit.config import Schedule


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as in the official Barlow Twins `main.py`.

    For each parameter p with gradient g: d = g + wd·p; d ← d · η‖p‖/‖d‖ (when both norms
    are non-zero); μ ← momentum·μ + d; p ← p − lr·μ. Groups with `exclude=True` skip the
    weight decay and the trust ratio."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["exclude"]:
                    d = d.add(p, alpha=group["weight_decay"])
                    p_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where((p_norm > 0) & (d_norm > 0), group["eta"] * p_norm / d_norm, 1.0)
                    d = d * trust
                mu = self.state[p].setdefault("mu", torch.zeros_like(p))
                mu.mul_(group["momentum"]).add_(d)
                p.add_(mu, alpha=-group["lr"])


def lr_factor(step: int, schedule: Schedule, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based).

    constant: 1. cosine: ½(1 + cos(π·t/T)). warmup_cosine: linear warm-up (t+1)/W over
    the first W steps, then the cosine over the remaining T − W steps."""
    if schedule == Schedule.constant:
        return 1.0
    if schedule == Schedule.warmup_cosine and step < warmup_steps:
        return (step + 1) / warmup_steps
    start = warmup_steps if schedule == Schedule.warmup_cosine else 0
    progress = (step - start) / max(1, total_steps - start)
    return 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(
    cfg: DictConfig, model: nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer named by `cfg._target_` over two parameter groups, and its schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "exclude": True},
    ]
    groups = [g for g in groups if g["params"]]
    schedule_keys = ("schedule", "warmup_steps")
    optimizer = instantiate({k: v for k, v in cfg.items() if k not in schedule_keys}, params=groups, _convert_="all")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.schedule, cfg.warmup_steps, total_steps)
    )
    return optimizer, scheduler
