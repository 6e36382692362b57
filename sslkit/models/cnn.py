"""A Myrtle-style all-convolutional network (Shankar et al. 2020, "Neural Kernels Without
Tangents", §3): 3×3 convolutions and ReLUs, average pooling between stages, a linear read-out."""

import math

from torch import Tensor, nn

from sslkit.errors import ConfigError
from sslkit.models.images import image_channels
from sslkit.models.layers import Parameterization, conv3x3, dense


class CNN(nn.Module):
    """stem conv → 3 stages of `depth` convs (2×2 average pool after the first two stages)
    → global average pool → bias-free linear read-out to `out_dim`.

    All convolutions are 3×3 with `width` channels, padding 1 and a ReLU; depth = 1 is
    Myrtle-5 (4 convolutions + read-out). Initialisation and the ntk parameterization are
    those of `sslkit.models.MLP`: ReLU gain √2, bias scale β for the ntk one, and the
    read-out weights drawn with the extra factor `init_scale`. Needs H, W ≥ 4.

    Args:
        width: Channels of every convolution.
        depth: Convolutions per stage.
        out_dim: Size of the output features.
        init_scale: Extra factor of the read-out weights at initialisation.
        parameterization: standard (He initialisation) or ntk (the neural-tangent-kernel parameterization).
        bias_scale: β, the factor of the biases in the ntk parameterization.
        in_channels: Input channels, checked against the data's (null: the data's).
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
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        channels = image_channels(in_shape, in_channels, "cnn")
        if min(in_shape[1:]) < 4:
            raise ConfigError(
                f"backbone=cnn halves the image twice and needs H, W >= 4; the data's images are "
                f"{in_shape[1]}x{in_shape[2]}. Use backbone=mlp for smaller inputs."
            )
        self.out_dim = out_dim

        def block(c_in: int) -> list[nn.Module]:
            return [conv3x3(c_in, width, parameterization, gain=math.sqrt(2), bias_scale=bias_scale), nn.ReLU()]

        layers = block(channels)
        for stage in range(3):
            for _ in range(depth):
                layers += block(width)
            layers.append(nn.AvgPool2d(2) if stage < 2 else nn.AdaptiveAvgPool2d(1))
        readout = dense(width, out_dim, parameterization, gain=1.0, init_scale=init_scale, bias=False)
        self.net = nn.Sequential(*layers, nn.Flatten(), readout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
