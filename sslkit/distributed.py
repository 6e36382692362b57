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
from dataclasses import dataclass

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
    return Dist(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


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


def gather(out: StepOutput, d: Dist, features: bool = False) -> StepOutput:
    """The step's global batch: each tensor's (n, ·) slices of the ranks concatenated in
    rank order into (W·n, ·), the features h only if `features` (the feat_* spectra need
    them); gradients flow back to each rank's own slice. A tensor held twice is gathered
    once and stays one object (an identity projector's h is its z)."""
    if not d.enabled:
        return out
    return out.map(lambda t: torch.cat(all_gather(t), dim=0), features)


def shard(batch: Tensor, d: Dist) -> Tensor:
    """Rank r's contiguous slice of a global batch (its size must divide by the world size)."""
    n = len(batch) // d.world_size
    return batch[d.rank * n : (d.rank + 1) * n]
