"""The return type of the sslkit losses and the input checks they share."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossOutput:
    """What a loss's ``forward`` returns.

    Attributes:
        loss: The scalar loss to back-propagate.
        terms: The loss's additive parts by name, each already multiplied by its
            coefficient, so that ``sum(terms.values()) == loss``.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


def check_views(z1: torch.Tensor, z2: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``z1`` and ``z2`` are 2-D and of equal shape."""
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 has shape {tuple(z1.shape)} and z2 has shape {tuple(z2.shape)}, but the losses "
            "expect (N, D) embeddings of two views of the same N samples."
        )


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """Return the off-diagonal entries of the square matrix ``m`` as a 1-D tensor.

    As in the official Barlow Twins ``main.py``: dropping the last entry of the flattened
    n×n matrix and reading the rest as (n − 1)×(n + 1) puts the diagonal in column 0. A
    view, with no boolean mask (whose indexing would wait for the device)."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()
