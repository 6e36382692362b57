"""Data-parallel training with torch.distributed: one process per device, started by
`torchrun` or by SLURM (`srun`, or submitit through Hydra's launcher).

Every rank sees a slice of the same global batch. The loop gathers the embeddings of all
ranks with an autograd-aware all-gather and evaluates the loss on the global batch, so
Barlow Twins' cross-correlation and batch statistics, NT-Xent's negatives and VICReg's
variance and covariance are global, exactly as in one process. Gradient check: every rank
computes the same loss L(Z); the all-gather's backward sums ∂L/∂z_r over the W ranks, so
rank r holds W·∂L/∂θ|_r, and DistributedDataParallel's gradient average (÷W) leaves
Σ_r ∂L/∂θ|_r = ∂L/∂θ, the single-process gradient.
"""

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.nn.functional import all_gather

from sslkit.methods import StepOutput

log = logging.getLogger(__name__)


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


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """BatchNorm → SyncBatchNorm and DistributedDataParallel when several ranks train.

    SyncBatchNorm runs on CUDA only: on CPU (gloo) BatchNorm layers keep per-process
    statistics, which a warning says."""
    if not d.enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.warning("SyncBatchNorm needs CUDA: on %s, BatchNorm statistics stay per process", device)
    return nn.parallel.DistributedDataParallel(model)


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
        return torch.cat([part[:n] for part, n in zip(all_gather(padded), sizes)])

    return out.map(gather_one, features)
