"""What the run calls on a backbone, a method and a loss, as `typing.Protocol`s, and the
check that refuses, before training, a part that lacks a required member.

Protocols, not base classes: a part is any `nn.Module` that has the members (the built-in
ones and a new one alike), with nothing of sslkit's to inherit, and a base class with a
do-nothing `after_step` would let a forgotten hook pass unnoticed instead of being named.
Each protocol holds the required members only; the optional hooks, called only where a
part has them, are in the docstrings (and docs/extending.md, "Hooks").
"""

import inspect
from typing import Protocol

from torch import Tensor, nn

from sslkit.errors import ConfigError
from sslkit.losses.output import LossOutput
from sslkit.methods.siamese import StepOutput


class Backbone(Protocol):
    """Built with `in_shape`, the shape of one sample."""

    out_dim: int  # the size of its output: the projector sizes itself from it

    def forward(self, x: Tensor) -> Tensor:
        """Maps a batch of samples to (N, out_dim) features h."""


class Method(Protocol):
    """Built with `backbone` and `projector`. Optional: `extra_inputs`, a tuple of the
    keys of StepOutput.extra, which its loss takes as keyword inputs (absent: none)."""

    backbone: nn.Module  # the backbone it was built with: evaluation reads h = backbone(v)

    def forward(self, v1: Tensor, v2: Tensor) -> StepOutput:
        """Maps the two views to StepOutput(h1, h2, z1, z2, extra), once per step."""

    def after_step(self, step: int, total_steps: int, applied: Tensor) -> None:
        """Is called after every optimizer step (`applied`: a 0-d bool tensor, false for a skipped step); a method
        with nothing to update does nothing in it."""


class Loss(Protocol):
    """Optional hooks: `check_batch(n)`, called once before training with data.batch_size
    (raise ConfigError for a batch the loss cannot use; absent: any size), and
    `spectrum_view(z)`, the (N, D) embeddings as the loss sees them before forming its
    cross-correlation, which the spectrum's `xcorr` is computed from (absent: z itself)."""

    def forward(self, z1: Tensor, z2: Tensor, **extra: Tensor) -> LossOutput:
        """Maps the embeddings of the two views (and the method's extra inputs) to a LossOutput."""


SECTIONS = {Backbone: "A backbone", Method: "A method", Loss: "A loss"}  # of docs/extending.md


def required(protocol: type) -> dict[str, str]:
    """{member: how it reads} of the members `protocol` declares: `out_dim`,
    `after_step(step, total_steps, applied)`."""
    members = {name: name for name in protocol.__annotations__}
    for name, fn in vars(protocol).items():
        if inspect.isfunction(fn) and not name.startswith("_"):
            params = list(inspect.signature(fn).parameters.values())[1:]
            members[name] = f"{name}({', '.join(str(p.replace(annotation=p.empty)) for p in params)})"
    return members


def has(part: object, name: str) -> bool:
    """Whether `part` has `name` of its own: nn.Module's placeholder `forward`, which only
    raises NotImplementedError, does not count."""
    placeholder = getattr(nn.Module, name, None)
    return hasattr(part, name) and not (placeholder is not None and getattr(type(part), name, None) is placeholder)


def check_part(part: object, protocol: type, group: str) -> None:
    """Raise ConfigError, in one line, unless `part` (what `group`'s `_target_` built) has
    every member `protocol` requires; it names the class, the first missing member and the
    section of docs/extending.md that describes the part."""
    missing = [(name, reads) for name, reads in required(protocol).items() if not has(part, name)]
    if missing:
        name, reads = missing[0]
        fn = vars(protocol).get(name)
        purpose = f" It {inspect.getdoc(fn)[0].lower()}{inspect.getdoc(fn)[1:]}".replace("\n", " ") if fn else ""
        cls = type(part)
        raise ConfigError(f"{group}: {cls.__name__} ({cls.__module__}.{cls.__qualname__}) has no {reads}, which every "
                          f"{group} has.{purpose} Define it; docs/extending.md, \"{SECTIONS[protocol]}\", lists what "
                          f"a {group} has.")
