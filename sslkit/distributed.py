"""Data-parallel training with torch.distributed: one process per device, started by
`torchrun` or by SLURM (`srun`, or submitit through Hydra's launcher).

Every rank sees a slice of the same global batch. The loop gathers the embeddings of all
ranks with an autograd-aware all-gather (torch's functional collectives: the all-gather's
backward is a sum-reduce-scatter) and evaluates the loss on the global batch, so
Barlow Twins' cross-correlation and batch statistics, NT-Xent's negatives and VICReg's
variance and covariance are global, exactly as in one process. Gradient check: every rank
computes the same loss L(Z); the all-gather's backward sums ∂L/∂z_r over the W ranks, so
rank r holds W·∂L/∂θ|_r, and DistributedDataParallel's gradient average (÷W) leaves
Σ_r ∂L/∂θ|_r = ∂L/∂θ, the single-process gradient. This holds for uneven slices too: no
rank averages a loss over its own rows, so no row count needs weighting. BatchNorm layers
normalise with the statistics of the global batch (SyncBatchNorm, or GlobalBatchNorm on
the CPU).
"""

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import Tensor, nn

from sslkit.methods import StepOutput


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    host_group: object = field(default=None, compare=False, repr=False)  # gloo, for host values

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _slurm_to_torchrun_env() -> None:
    """Under SLURM without torchrun (srun, submitit), export RANK / WORLD_SIZE /
    LOCAL_RANK / MASTER_ADDR / MASTER_PORT as torchrun would."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export()


def init(device_type: str) -> Dist:
    """Join the process group when launched with several processes; else a 1-rank Dist."""
    _slurm_to_torchrun_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    host = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return Dist(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")), host)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with the statistics of the global batch, for the devices SyncBatchNorm
    does not run on (CPU: torch 2.14's SyncBatchNorm takes CUDA, XPU and HPU tensors only).

    In training mode the ranks sum (all-reduce), per channel, their counts n_r and sums Σx,
    then their Σ(x − μ)² about the global mean μ = Σ_r Σx / N: the biased variance σ² of
    the N samples normalises, y = (x − μ)/√(σ² + ε)·γ + β, and the running statistics
    take μ and the unbiased N/(N − 1)·σ², as BatchNorm in one process on the whole batch.
    The all-reduce is autograd-aware (its backward all-reduces the gradients), so the
    gradient flows through μ and σ² to every rank's rows (`gather` explains the factor W
    that DistributedDataParallel's average removes). In eval mode it is BatchNorm with
    the running statistics. Three all-reduces per layer and call: a CPU's cost, where
    SyncBatchNorm is unavailable."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.track_running_stats:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        dims = [0, *range(2, x.dim())]  # every dimension but the channels
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1]
        count = all_reduce(torch.tensor([float(n)], device=x.device))
        mean = all_reduce(x.sum(dims)) / count
        var = all_reduce((x - mean.view(shape)).pow(2).sum(dims)) / count
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = 1 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1), momentum)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def global_batchnorm(model: nn.Module) -> nn.Module:
    """`model` with each BatchNorm layer replaced by a GlobalBatchNorm holding the same
    parameters and buffers (the same tensors: the optimizer and the state_dict keys stay)."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)
            replacement.weight, replacement.bias = child.weight, child.bias
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(replacement, buffer, getattr(child, buffer))
            replacement.train(child.training)
            setattr(model, name, replacement)
        else:
            global_batchnorm(child)
    return model


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """DistributedDataParallel when several ranks train, with the BatchNorm layers'
    statistics taken over the global batch: SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere."""
    if not d.enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(global_batchnorm(model))


def barrier(d: Dist) -> None:
    """Wait until every rank gets here."""
    if d.enabled:
        dist.barrier()


def host_max(value: int, d: Dist) -> int:
    """The largest of the ranks' `value`s, all-reduced between the processes on the host
    (gloo), without waiting for any device."""
    if not d.enabled:
        return value
    t = torch.tensor([value])
    dist.all_reduce(t, dist.ReduceOp.MAX, group=d.host_group)
    return int(t)


def all_reduce(t: Tensor) -> Tensor:
    """Σ_r t_r over the ranks, on every rank; the gradient of each t_r is Σ_r of the ranks'
    gradients of the sum (the backward is an all-reduce too)."""
    return funcol.all_reduce(t, "sum", dist.group.WORLD)


def rows(batch_size: int, d: Dist, rank: int | None = None) -> slice:
    """Rank r's contiguous rows of a global batch of B samples: [⌊rB/W⌋, ⌊(r+1)B/W⌋).
    The W slices cover the batch in rank order; their sizes differ by at most one when W
    does not divide B."""
    r = d.rank if rank is None else rank
    return slice(r * batch_size // d.world_size, (r + 1) * batch_size // d.world_size)


def gather(out: StepOutput, d: Dist, batch_size: int, features: bool = False) -> StepOutput:
    """The step's global batch of `batch_size` rows: each tensor's slices of the ranks
    (`rows`) concatenated in rank order, the features h only if `features` (the feat_*
    spectra need them); gradients flow back to each rank's own slice. Slices are
    zero-padded to the largest for the all-gather and the padding dropped. A tensor held
    twice is gathered once and stays one object (an identity projector's h is its z)."""
    if not d.enabled:
        return out
    sizes = [len(range(batch_size)[rows(batch_size, d, r)]) for r in range(d.world_size)]

    def gather_one(t: Tensor) -> Tensor:
        padded = torch.cat([t, t.new_zeros(max(sizes) - len(t), *t.shape[1:])])
        parts = funcol.all_gather_single(padded, 0, dist.group.WORLD).chunk(d.world_size)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    return out.map(gather_one, features)
