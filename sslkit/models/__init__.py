"""Backbones (input → features) and projectors (features → embeddings).

Backbones are built with the shape of one input sample, `in_shape`, taken from the data,
and expose `out_dim` so that the projector sizes itself.
"""

from sslkit.models.mlp import MLP, Linear, Projector

__all__ = ["Linear", "MLP", "Projector"]
