"""Dense and 3×3 convolutional layers in standard or NTK parameterization.

Both draw the same function at initialisation; they differ in how a gradient step moves it.

- standard: y = W x + b, W ~ N(0, (gain·init_scale)² / fan_in), b = 0 (He initialisation
  for gain = √2).
- ntk (Jacot et al. 2018, eq. 1): y = (gain / √fan_in)·W x + β·b, W ~ N(0, init_scale²),
  b ~ N(0, 1). The 1/√fan_in lives in the forward pass, so every weight moves by
  O(1/√width) per step and a wide network stays close to its linearisation; the neural
  tangent kernel then converges to the deterministic limit of `sslkit.theory.kernels`.

fan_in is the number of inputs of one output unit (in_channels·k² for a convolution).
"""

import math
from enum import Enum

from torch import Tensor, nn
from torch.nn import functional as F


class Parameterization(str, Enum):
    standard = "standard"
    ntk = "ntk"


class NTKLinear(nn.Linear):
    """y = (gain / √in_features)·W x + bias_scale·b, W ~ N(0, init_scale²), b ~ N(0, 1)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, gain: float,
                 init_scale: float, bias_scale: float) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.weight_gain, self.bias_scale = gain / math.sqrt(in_features), bias_scale
        _init_ntk(self, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias_scale * self.bias
        return F.linear(x, self.weight_gain * self.weight, bias)


class NTKConv2d(nn.Conv2d):
    """y = (gain / √(in_channels·k²))·(W ⋆ x) + bias_scale·b, W ~ N(0, init_scale²), b ~ N(0, 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int,
                 gain: float, init_scale: float, bias_scale: float) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding)
        self.weight_gain = gain / math.sqrt(in_channels * kernel_size**2)
        self.bias_scale = bias_scale
        _init_ntk(self, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight_gain * self.weight, self.bias_scale * self.bias)


def _init_ntk(layer: nn.Module, init_scale: float) -> None:
    nn.init.normal_(layer.weight, std=init_scale)
    if layer.bias is not None:
        nn.init.normal_(layer.bias)


def _init_standard(layer: nn.Linear | nn.Conv2d, gain: float, init_scale: float) -> None:
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, std=gain * init_scale / math.sqrt(fan_in))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def dense(fan_in: int, fan_out: int, parameterization: Parameterization, *, gain: float,
          init_scale: float = 1.0, bias: bool = True, bias_scale: float = 1.0) -> nn.Linear:
    """A fully connected layer; `bias_scale` is β of the ntk parameterization."""
    if Parameterization(parameterization) == Parameterization.ntk:
        return NTKLinear(fan_in, fan_out, bias, gain, init_scale, bias_scale)
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    _init_standard(layer, gain, init_scale)
    return layer


def conv3x3(in_channels: int, out_channels: int, parameterization: Parameterization, *,
            gain: float, bias_scale: float = 1.0) -> nn.Conv2d:
    """A 3×3 convolution with zero padding 1 (keeps H × W) and a bias."""
    if Parameterization(parameterization) == Parameterization.ntk:
        return NTKConv2d(in_channels, out_channels, 3, 1, gain, 1.0, bias_scale)
    layer = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    _init_standard(layer, gain, 1.0)
    return layer
