"""torchvision ResNets as backbones: optional CIFAR stem, input channels from the data,
the classifier removed so the output is the globally pooled feature vector."""

from enum import Enum

from torch import nn

from sslkit.errors import ConfigError
from sslkit.models.images import image_channels


class ResNetArch(str, Enum):
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"
    wide_resnet50_2 = "wide_resnet50_2"


def resnet(
    in_shape: tuple[int, ...],
    arch: ResNetArch,
    cifar_stem: bool = True,
    zero_init_residual: bool = False,
    width_multiplier: int = 1,
    in_channels: int | None = None,
) -> nn.Module:
    """`torchvision.models.<arch>(weights=None)` with `fc` replaced by Identity; `.out_dim`
    is the feature size (512 for resnet18/34, 2048 for resnet50 and wide_resnet50_2).

    With `cifar_stem` the first convolution becomes 3×3, stride 1, padding 1, and the
    max-pool is removed, as in the CIFAR ResNets of He et al. (2016, §4.2) and the SimCLR
    CIFAR experiments, so a 32×32 image keeps its resolution into layer1. Otherwise the
    ImageNet stem (7×7 stride-2 convolution, 3×3 stride-2 max-pool) is kept. The first
    convolution takes the data's channels (1 for digits) and is initialised like
    torchvision's (Kaiming normal, fan_out). `zero_init_residual` is torchvision's own
    option (Goyal et al. 2017). With `width_multiplier` k, torchvision's `width_per_group`
    becomes k times the architecture's own (64 for resnet50, 128 for wide_resnet50_2),
    widening the 3×3 convolution of every bottleneck; resnet50 with k = 2 is
    wide_resnet50_2. The output size does not change. torchvision's BasicBlock
    (resnet18/34) has a fixed width, so k must be 1 there.

    Args:
        arch: The torchvision architecture (set by each resnet option).
        cifar_stem: 3×3 stride-1 first convolution and no max-pool, for 32×32 images.
        zero_init_residual: Start the last BatchNorm of every residual branch at γ = 0.
        width_multiplier: k, the factor of the bottleneck width (resnet50 and wide_resnet50 only).
        in_channels: Input channels, checked against the data's (null: the data's).
    """
    arch = ResNetArch(arch)
    channels = image_channels(in_shape, in_channels, arch.value)
    width = {ResNetArch.resnet50: 64, ResNetArch.wide_resnet50_2: 128}.get(arch)
    if width is None and width_multiplier != 1:
        raise ConfigError(f"backbone.width_multiplier={width_multiplier} is not possible for {arch.value}: "
                          f"torchvision's BasicBlock has a fixed width. Use width_multiplier=1, or "
                          f"backbone=resnet50 / backbone=wide_resnet50, whose bottleneck width it scales.")
    if width_multiplier < 1:
        raise ConfigError(f"backbone.width_multiplier={width_multiplier} is not allowed: use an integer >= 1.")
    import torchvision  # here, not at the top: importing it takes ≈ 1 s (its ops import torch's compiler)

    if width:  # wide_resnet50_2 is torchvision's resnet50 with width_per_group=128
        net = torchvision.models.resnet50(weights=None, zero_init_residual=zero_init_residual,
                                          width_per_group=width * width_multiplier)
    else:
        net = torchvision.models.get_model(arch.value, weights=None, zero_init_residual=zero_init_residual)
    if cifar_stem:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif channels != net.conv1.in_channels:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net
