"""Fully connected backbones and the standard SSL projector head."""

import math

import torch
from torch import Tensor, nn

from sslkit.errors import ConfigError
from sslkit.models.layers import Parameterization, dense


def _features(in_shape: tuple[int, ...]) -> int:
    return math.prod(in_shape)


class Linear(nn.Module):
    """f(x) = W·flatten(x), no bias, W_ij ~ N(0, init_scale² / in_features).

    The linear model of the stepwise analysis (Simon et al. 2023, §4): `init_scale` is α,
    so small initialisation is one override (`backbone.init_scale=1e-3`).

    Args:
        out_dim: Size of the output.
        init_scale: α, the scale of the initial weights.
    """

    def __init__(self, in_shape: tuple[int, ...], out_dim: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.layer = nn.Linear(_features(in_shape), out_dim, bias=False)
        nn.init.normal_(self.layer.weight, std=init_scale / math.sqrt(self.layer.in_features))

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x.flatten(1))


class MLP(nn.Module):
    """`depth` hidden ReLU layers of `width` units, then a bias-free linear read-out to `out_dim`.

    Hidden layers have ReLU gain √2 (He): N(0, 2/fan_in) weights and zero biases in the
    standard parameterization; in the ntk one, h = √2/√fan_in·W x + β·b with W, b ~ N(0, 1)
    (β = `bias_scale`, see `sslkit.models.layers`). The read-out weights are drawn with an
    extra factor `init_scale`, which therefore multiplies the output at initialisation.

    Args:
        width: Units of every hidden layer.
        depth: Number of hidden layers.
        out_dim: Size of the output features.
        init_scale: Extra factor of the read-out weights at initialisation.
        parameterization: standard (He initialisation) or ntk (the neural-tangent-kernel parameterization).
        bias_scale: β, the factor of the biases in the ntk parameterization.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        width: int,
        depth: int,
        out_dim: int,
        init_scale: float = 1.0,
        parameterization: Parameterization = Parameterization.standard,
        bias_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        dims = [_features(in_shape)] + [width] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            hidden = dense(fan_in, fan_out, parameterization, gain=math.sqrt(2), bias_scale=bias_scale)
            layers += [hidden, nn.ReLU()]
        readout = dense(dims[-1], out_dim, parameterization, gain=1.0, init_scale=init_scale, bias=False)
        self.net = nn.Sequential(*layers, readout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class Projector(nn.Sequential):
    """The SSL head of SimCLR / Barlow Twins / VICReg: (Linear–BatchNorm–ReLU) for each
    hidden size, then a final Linear to `out_dim`. With no hidden sizes it is one Linear
    (`projector=linear`). `init_scale` multiplies the final Linear's initial weights
    (PyTorch's default, U(±1/√fan_in)), hence the embeddings at initialisation: a small
    value starts an image network's embeddings near 0 (the small initialisation of the
    stepwise analysis), whatever BatchNorm does inside the backbone.

    Args:
        hidden_dims: Sizes of the hidden (Linear–BatchNorm–ReLU) layers; [] for none.
        out_dim: Size of the embeddings.
        init_scale: Factor of the final Linear's initial weights.
    """

    def __init__(self, in_dim: int, hidden_dims: list[int], out_dim: int, init_scale: float = 1.0) -> None:
        if out_dim < 1 or any(d < 1 for d in hidden_dims):
            raise ConfigError(f"projector.out_dim={out_dim}, projector.hidden_dims={list(hidden_dims)}: every size "
                              f"must be an integer >= 1 (hidden_dims=[] for none).")
        dims = [in_dim, *hidden_dims]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(fan_in, fan_out, bias=False), nn.BatchNorm1d(fan_out), nn.ReLU()]
        super().__init__(*layers, nn.Linear(dims[-1], out_dim, bias=False))
        with torch.no_grad():
            self[-1].weight.mul_(init_scale)
        self.out_dim = out_dim


def linear_projector(in_dim: int, out_dim: int, init_scale: float = 1.0) -> Projector:
    """z = W h, a bias-free Linear from the backbone features to `out_dim`.

    Args:
        out_dim: Size of the embeddings.
        init_scale: Factor of the initial weights (PyTorch's default, U(±1/√fan_in)).
    """
    return Projector(in_dim, [], out_dim, init_scale)
