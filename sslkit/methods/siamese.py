"""The two-view model of Barlow Twins, SimCLR and VICReg, and what every method's step
returns.

A method is the `nn.Module` the loop calls once per step on the two views, chosen by the
`method` config group. It returns a `StepOutput`; the loop calls the loss as
`loss(out.z1, out.z2, **out.extra)`, steps the optimizer, then calls the method's
`after_step(step, total_steps, applied)` (a method with a target network updates it
there; `applied` is a 0-d bool tensor, false where the optimizer skipped the step on a
non-finite loss: the hook then leaves the method's state as it is, deciding on the
device).
A method names the keys of its `extra` in `extra_inputs` (none where it has no such
attribute); `check_loss` refuses, before training, a loss that does not take exactly those.
What every method and loss has is in sslkit.methods.protocol.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from hydra.utils import get_object
from torch import Tensor, nn

from sslkit.errors import ConfigError
from sslkit.tensors import map_distinct


@dataclass
class StepOutput:
    """One step's tensors, each (N, ·) with one row per sample.

    h1, h2: backbone features of view 1 and 2; z1, z2: the embeddings the loss compares
    (the spectra are of these); `extra`: further keyword inputs of the method's loss (BYOL:
    the target projections t1, t2). Under an identity projector h is z (the same object)."""

    h1: Tensor
    h2: Tensor
    z1: Tensor
    z2: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    def map(self, fn: Callable[[Tensor], Tensor], features: bool = True) -> "StepOutput":
        """`fn` applied to z1, z2, the extras and (if `features`) h1, h2, once per distinct
        tensor object, so that `h is z` still holds afterwards; the others are kept."""
        named = {"z1": self.z1, "z2": self.z2, **({"h1": self.h1, "h2": self.h2} if features else {}),
                 **{f"extra.{k}": v for k, v in self.extra.items()}}
        out = {**vars(self), **dict(zip(named, map_distinct(fn, tuple(named.values()))))}
        return StepOutput(out["h1"], out["h2"], out["z1"], out["z2"], {k: out[f"extra.{k}"] for k in self.extra})


class Siamese(nn.Module):
    """(v1, v2) ↦ h = backbone(v), z = projector(h) for each view, one network for both.

    Each view goes through the network in its own call, so BatchNorm layers normalise
    each view with its own batch statistics, as in the official Barlow Twins and VICReg
    code; one `forward` per step keeps DistributedDataParallel's bookkeeping simple."""

    extra_inputs: tuple[str, ...] = ()  # the keys of StepOutput.extra

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, v1: Tensor, v2: Tensor) -> StepOutput:
        h1, h2 = self.backbone(v1), self.backbone(v2)
        return StepOutput(h1, h2, self.projector(h1), self.projector(h2))

    def after_step(self, step: int, total_steps: int, applied: Tensor) -> None:
        """Called after each optimizer step (0-based `step` of `total_steps`); nothing to do."""


def check_loss(method: nn.Module, loss: nn.Module) -> None:
    """Raise ConfigError unless `loss.forward` takes (z1, z2) plus exactly the keyword
    inputs the method returns in StepOutput.extra; the message names the options of
    configs/loss/ that do."""
    if _keyword_inputs(type(loss)) != set(extra_inputs(method)):
        from sslkit.config import derived_options  # the loss options, read from configs/ only here

        params = inspect.signature(loss.forward).parameters.values()
        gives = ", ".join(["z1", "z2", *extra_inputs(method)])
        takes = ", ".join([p.name for p in params if p.kind != p.KEYWORD_ONLY]
                          + [p.name for p in params if p.kind == p.KEYWORD_ONLY])
        options = derived_options()
        losses = [f"loss={name}" for name, (target, *_) in options["loss"].items()
                  if _keyword_inputs(get_object(target)) == set(extra_inputs(method))]
        methods = [f"method={name}" for name, (target, *_) in options["method"].items()
                   if set(extra_inputs(get_object(target))) == _keyword_inputs(type(loss))]
        raise ConfigError(
            f"The method {type(method).__name__} gives the loss ({gives}), but the loss {type(loss).__name__} takes "
            f"({takes}). Choose a loss written for this method ({' or '.join(losses) or 'none in configs/loss/'}), "
            f"or a method that gives what this loss takes ({' or '.join(methods) or 'none in configs/method/'}). "
            f"A loss= override, or an experiment's, wins over the loss a method's config picks.")


def extra_inputs(method: object) -> tuple[str, ...]:
    """The keys of a method's (or method class's) StepOutput.extra: its `extra_inputs`, () if it has none."""
    return tuple(getattr(method, "extra_inputs", ()))


def _keyword_inputs(loss: type) -> set[str]:
    """The keyword-only inputs of a loss class's forward (a method's StepOutput.extra)."""
    return {p.name for p in inspect.signature(loss.forward).parameters.values() if p.kind == p.KEYWORD_ONLY}
