"""Checks shared by the convolutional backbones: the data must be images whose channel
count matches the backbone's."""

from sslkit.errors import ConfigError


def image_channels(in_shape: tuple[int, ...], in_channels: int | None, backbone: str) -> int:
    """The number of input channels: `in_channels` when given, else the data's C.

    Raises ConfigError when the samples are not (C, H, W) images, or when an explicit
    `backbone.in_channels` differs from the data's C."""
    if len(in_shape) != 3:
        raise ConfigError(
            f"The {backbone} backbone takes images of shape (C, H, W), but the data's samples have "
            f"shape {tuple(in_shape)}. Use image data (e.g. data=digits) or a backbone for vectors "
            f"(backbone=linear or backbone=mlp)."
        )
    if in_channels is not None and in_channels != in_shape[0]:
        raise ConfigError(
            f"backbone.in_channels={in_channels} does not match the data: its images have "
            f"{in_shape[0]} channel(s) (sample shape {tuple(in_shape)}). Set "
            f"backbone.in_channels={in_shape[0]}, or backbone.in_channels=null to follow the data."
        )
    return in_shape[0]
