"""Features for evaluation: the frozen network on the un-augmented inputs, in eval mode."""

from collections.abc import Callable, Sequence
from enum import Enum

import torch
from torch import Tensor, nn
from tqdm import tqdm


class ProbeFeatures(str, Enum):
    backbone = "backbone"  # h, the backbone's output
    projector = "projector"  # z, the embedding the method's step returns


class ProbeInput(str, Enum):
    clean = "clean"  # features of the batch's un-augmented images (one more forward pass, eval mode)
    view = "view"  # the step's own view-1 features (free; augmented, in train mode)


def kinds(features: Sequence[ProbeFeatures | str] | None) -> list[str]:
    """The names of the feature kinds `features` lists; None: every kind."""
    return [str(getattr(k, "value", k)) for k in (ProbeFeatures if features is None else features)]


@torch.no_grad()
def extract(net: nn.Module, x: Tensor, clean: Callable[[Tensor], Tensor], batch_size: int,
            device: torch.device, projector: bool = False, progress: str | None = None) -> dict[str, Tensor]:
    """{"backbone": h (N, D_h)[, "projector": z (N, D_z)]} of every sample of x, on `device`:
    h = net.backbone(v), and z the embedding the method's step returns (StepOutput.z1: the
    projector's output; BYOL's predictor's), which the online probe trains on too.

    Each chunk of `batch_size` samples is moved to `device`, made into its evaluation view
    by `clean` (the augmentation's view without randomness) and passed through `net` in eval
    mode: BatchNorm uses its running statistics and does not update them. Every module's
    train/eval mode is restored afterwards. `progress`: a progress bar with that name."""
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        out: dict[str, list[Tensor]] = {"backbone": [], "projector": []}
        for chunk in tqdm(x.split(batch_size), desc=progress, unit="batch", disable=progress is None, leave=False):
            v = clean(chunk.to(device))
            if projector:  # z as the method's step computes it, from the same view twice
                step = net(v, v)
                out["backbone"].append(step.h1.float())
                out["projector"].append(step.z1.float())
            else:
                out["backbone"].append(net.backbone(v).float())
    finally:
        for m, training in modes.items():
            m.training = training
    return {k: torch.cat(v) for k, v in out.items() if v}


def labelled(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The samples whose label is known (≥ 0; −1 marks unlabeled or held-out samples)."""
    keep = y >= 0
    return (x, y) if bool(keep.all()) else (x[keep], y[keep])
