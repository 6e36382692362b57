"""One training step, built from the config: views → method (backbone → projector) →
loss → update, with the precision, layout and compilation of `sslkit.accel`.

`Step` holds what the step runs; `train` calls its stages in order, and
scripts/bench_gpu.py times them one by one. Nothing in a stage makes the host wait for
the device: the loss's finiteness is a device tensor that gates the optimizer there
(`sslkit.optim.guarded_step`), and the host reads it a step later (`HostValues`).
"""

from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from sslkit import distributed
from sslkit.accel import Accel
from sslkit.data import InMemoryData
from sslkit.errors import ConfigError
from sslkit.losses import LossOutput
from sslkit.methods import Backbone, Loss, Method, StepOutput, check_loss, check_part
from sslkit.optim import build_optimizer, guarded_step
from sslkit.rng import VIEWS, generator, seed_globals
from sslkit.run import check_cadences, total_steps
from sslkit.spectrum import reads_features


@dataclass
class Step:
    cfg: DictConfig
    rank: distributed.Dist
    accel: Accel
    data: InMemoryData
    augment: object
    net: nn.Module  # the method's module itself: its state_dict is the checkpoint's
    model: nn.Module  # net, wrapped for several processes and compiled as configured
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps: int  # the run's total number of steps

    @classmethod
    def build(cls, cfg: DictConfig, device: torch.device, rank: distributed.Dist = distributed.Dist()) -> "Step":
        accel = Accel.resolve(cfg.trainer, device)
        seed_globals(cfg.seed)  # initial weights; batch order and views use sslkit.rng
        data = instantiate(cfg.data).to(device)
        if data.batch_size < rank.world_size:
            raise ConfigError(f"data.batch_size={data.batch_size} is the global batch, split over {rank.world_size} "
                              f"processes: each needs a sample. Use data.batch_size>={rank.world_size} or fewer "
                              f"processes.")
        augment = instantiate(cfg.augment)
        backbone = instantiate(cfg.backbone, in_shape=augment.view_shape(tuple(data.x.shape[1:])))
        check_part(backbone, Backbone, "backbone")
        projector = instantiate(cfg.projector, in_dim=backbone.out_dim)
        net = accel.prepare(instantiate(cfg.method, backbone=backbone, projector=projector).to(device))
        loss_fn = instantiate(cfg.loss)
        check_part(net, Method, "method")  # every hook the loop calls is there
        check_part(loss_fn, Loss, "loss")
        check_loss(net, loss_fn)  # the loss takes what the method gives it
        if hasattr(loss_fn, "check_batch"):  # a loss that needs more than one sample says so
            loss_fn.check_batch(data.batch_size)
        check_cadences(cfg.trainer)
        steps = total_steps(cfg.trainer, data.steps_per_epoch)
        optimizer, scheduler = build_optimizer(cfg.optim, net, steps)
        model = accel.compiled(distributed.wrap(net, rank, device))
        return cls(cfg, rank, accel, data, augment, net, model, accel.compiled(loss_fn), optimizer, scheduler, steps)

    def views(self, x: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """This rank's two views of the global batch x at `step`, in the model's layout: its
        rows of the views one process would make (the parameters of the whole batch are drawn)."""
        v1, v2 = self.augment(x, generator(x.device, self.cfg.seed, VIEWS, step), distributed.rows(len(x), self.rank))
        return self.accel.layout(v1), self.accel.layout(v2)

    def forward(self, v1: Tensor, v2: Tensor) -> tuple[StepOutput, LossOutput]:
        """The method's outputs of the global batch, in float32, and the loss on them."""
        with self.accel.autocast():
            s: StepOutput = self.model(v1, v2)
        s = distributed.gather(s.map(Tensor.float), self.rank, self.data.batch_size,
                               self.rank.enabled and reads_features(self.cfg.spectrum))
        return s, self.loss_fn(s.z1, s.z2, **s.extra)

    def backward(self, out: LossOutput) -> Tensor:
        """Gradients of the loss; returns whether it is finite (a 0-d bool on the device)."""
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        return torch.isfinite(out.loss)

    def update(self, step: int, finite: Tensor) -> None:
        """The optimizer step where `finite` (else nothing, decided on the device), the
        method's after-step hook, the learning-rate schedule."""
        guarded_step(self.optimizer, finite)
        self.net.after_step(step, self.steps, finite)
        self.scheduler.step()


class HostValues:
    """Device scalars copied to the host without waiting for the device: the copy into
    pinned memory is queued behind the work that computes them, and `get()` waits for
    that copy alone, not for the work queued after it (the next step)."""

    def __init__(self, values: list[Tensor]) -> None:
        t = torch.stack([v.detach().float() for v in values])
        self.event = None
        if t.is_cuda:
            self.host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self.host.copy_(t, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = t

    def get(self) -> list[float]:
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()
