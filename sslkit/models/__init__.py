"""Backbones (input → features) and projectors (features → embeddings).

Backbones are built with the shape of one input sample, `in_shape`, taken from the data,
and expose `out_dim` so that the projector sizes itself. Every backbone option is built
by `build_backbone`, which wraps the network in `Linearized` when the config asks.
"""

from sslkit.models.backbone import build_backbone
from sslkit.models.cnn import CNN
from sslkit.models.linearized import Linearized, linearize
from sslkit.models.mlp import MLP, Linear, Projector, linear_projector
from sslkit.models.resnet import resnet

__all__ = ["CNN", "Linear", "Linearized", "MLP", "Projector", "build_backbone", "linear_projector",
           "linearize", "resnet"]
