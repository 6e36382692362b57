"""Tensor groups that may hold one tensor twice: under an identity projector the backbone
features h *are* the embeddings z, and code that copies or gathers both must keep it so
(the spectrum monitor then decomposes their matrices once)."""

from collections.abc import Callable

from torch import Tensor


def map_distinct(fn: Callable[[Tensor], Tensor], tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """`fn` applied once per distinct tensor object, in order; a tensor that appears twice
    maps to one result object, so `h is z` still holds afterwards."""
    done: dict[int, Tensor] = {}
    for t in tensors:
        if id(t) not in done:
            done[id(t)] = fn(t)
    return tuple(done[id(t)] for t in tensors)
