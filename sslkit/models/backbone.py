"""The `_target_` of every backbone option: build the network, then linearize it on request."""

from typing import Any

from hydra.utils import get_object
from torch import nn

from sslkit.errors import ConfigError
from sslkit.models.linearized import linearize


def build_backbone(
    network: str,
    in_shape: tuple[int, ...],
    linearized: bool = False,
    center: bool = False,
    offset_scale: float = 0.0,
    **kwargs: Any,
) -> nn.Module:
    """`network(in_shape=in_shape, **kwargs)`, wrapped in `sslkit.models.Linearized` when
    `linearized` (see there for `center` and `offset_scale`).

    `network` is the import path of a class or function that takes `in_shape` and returns
    a module with `.out_dim`; each configs/backbone/*.yaml names one, so adding a backbone
    adds no code here.

    Args:
        network: Import path of the network's class or function (set by each backbone option).
        linearized: Train the network's first-order Taylor expansion around its initialisation instead.
        center: Subtract the initial output f(x; θ₀), so the linearized network starts at 0 plus its offset.
        offset_scale: Standard deviation of the linearized network's initial parameter offsets.
    """
    for key in ("out_dim", "width"):
        if kwargs.get(key) is not None and kwargs[key] < 1:
            raise ConfigError(f"backbone.{key}={kwargs[key]} is not allowed: use an integer >= 1.")
    if not linearized:
        unused = ["backbone.center=true"] if center else []
        if offset_scale:
            unused.append(f"backbone.offset_scale={offset_scale}")
        if unused:
            raise ConfigError(
                f"{' and '.join(unused)}: only the linearized network uses these keys, and "
                f"backbone.linearized=false. Set backbone.linearized=true, or leave "
                f"backbone.center=false and backbone.offset_scale=0."
            )
        return get_object(network)(in_shape=in_shape, **kwargs)
    if center and not offset_scale:
        raise ConfigError(
            "backbone.center=true with backbone.offset_scale=0 makes the output exactly 0 for "
            "every input, a point where Barlow Twins and VICReg have zero gradient, so training "
            "would never move. Set backbone.offset_scale>0 (e.g. 1e-3, the small initialisation "
            "of the stepwise analysis) or backbone.center=false."
        )
    return linearize(get_object(network)(in_shape=in_shape, **kwargs), in_shape, center, offset_scale)
