"""Optimizers and learning-rate schedules.

Parameters with `ndim == 1` (biases, BatchNorm weights) get no weight decay and no LARS
adaptation, as in the official Barlow Twins and VICReg code.

Every optimizer `build_optimizer` returns takes a device-side skip flag, so the step of a
non-finite loss is dropped without the host reading the loss (`guarded_step`): torch's
SGD and AdamW are built with `fused=True`, whose kernels read PyTorch's AMP flag
`found_inf` on the device, and `LARS` ends in the same fused SGD kernel.
"""

import inspect
import math
from enum import Enum

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.optim.sgd import sgd

from sslkit.errors import ConfigError


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"
    warmup_cosine = "warmup_cosine"


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as in the official Barlow Twins `main.py`.

    For each parameter p with gradient g: d = g + wd·p; d ← d · η‖p‖/‖d‖ (when both norms
    are non-zero); μ ← momentum·μ + d; p ← p − lr·μ. Groups with `exclude=True` skip the
    weight decay and the trust ratio.

    One step is a few multi-tensor kernels per group, whatever the number of parameters:
    d and the norms by `torch._foreach_*`, the trust ratios as one (P,) tensor, and the
    momentum update by PyTorch's fused SGD kernel (dampening 0; μ starts at 0, so its
    first step μ = d is the rule above). That kernel skips the update on the device when
    the optimizer's `found_inf` flag is set (see `guarded_step`).

    Args:
        lr: Learning rate.
        weight_decay: wd, the weight decay added to the gradient.
        momentum: Momentum factor.
        eta: η, the trust coefficient.
    """

    _step_supports_amp_scaling = True  # reads self.found_inf, as torch's fused optimizers do

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            d = [p.grad for p in params]
            if not group["exclude"]:
                d = torch._foreach_add(d, params, alpha=group["weight_decay"])
                p_norm, d_norm = (torch.stack(torch._foreach_norm(t)) for t in (params, d))
                trust = torch.where((p_norm > 0) & (d_norm > 0), group["eta"] * p_norm / d_norm, 1.0)
                torch._foreach_mul_(d, list(trust.unbind()))
            mu = [self.state[p].setdefault("mu", torch.zeros_like(p)) for p in params]
            sgd(params, d, mu, fused=True, found_inf=found_inf, weight_decay=0.0, momentum=group["momentum"],
                lr=group["lr"], dampening=0.0, nesterov=False, maximize=False)


def guarded_step(optimizer: torch.optim.Optimizer, finite: Tensor) -> None:
    """`optimizer.step()` if the 0-d bool tensor `finite` is true, else nothing (parameters
    and optimizer state unchanged), decided on the device: the host never reads `finite`.
    The flag goes in as `found_inf`, the attribute through which torch.amp.GradScaler
    hands it to optimizers whose kernels check it (`_step_supports_amp_scaling`)."""
    optimizer.found_inf = (~finite).float()
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf


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


def lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int, schedule: Schedule = Schedule.constant,
                warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate lr · lr_factor(step, schedule, warmup_steps, total_steps).

    Args:
        schedule: constant, cosine (to 0 at the last step) or warmup_cosine.
        warmup_steps: Steps of the linear warm-up of warmup_cosine.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, schedule, warmup_steps, total_steps))


def build_optimizer(
    cfg: DictConfig, model: nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer named by `cfg._target_` over two parameter groups, and its schedule:
    the keys of `cfg` that are parameters of `lr_schedule` go there, the others to the
    optimizer.

    torch optimizers get `fused=True` (the device-side skip of `guarded_step`); SGD's
    momentum buffers start at zero rather than at the first gradient (the same for
    dampening 0), so that a skipped first step leaves no uninitialised buffer behind."""
    if not cfg.lr > 0:
        raise ConfigError(f"optim.lr={cfg.lr} would not train: the learning rate must be > 0, e.g. optim.lr=0.1 "
                          f"(sgd, lars) or optim.lr=1e-3 (adamw).")
    if not 0 <= cfg.get("momentum", 0) < 1:
        raise ConfigError(f"optim.momentum={cfg.momentum} is not allowed: use 0 <= momentum < 1 (at 1 and beyond "
                          f"the velocity never decays, and the steps grow without bound).")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "exclude": True},
    ]
    groups = [g for g in groups if g["params"]]
    schedule = {k: v for k, v in cfg.items() if k in inspect.signature(lr_schedule).parameters}
    fused = {"fused": True} if "fused" in inspect.signature(get_class(cfg._target_)).parameters else {}
    optimizer = instantiate({k: v for k, v in cfg.items() if k not in schedule}, params=groups,
                            **fused, _convert_="all")
    if isinstance(optimizer, torch.optim.SGD) and cfg.get("momentum", 0):
        for p in params:
            optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return optimizer, lr_schedule(optimizer, total_steps, **schedule)
