"""How the step runs on its device: number format, memory layout, compilation
(`trainer.precision`, `trainer.channels_last`, `trainer.compile`, `trainer.compile_mode`).

`auto` picks the fast setting on CUDA and the plain one on the CPU:

| key | CUDA (`auto`) | CPU (`auto`) |
|---|---|---|
| precision | bf16 | fp32 |
| channels_last | true | false |
| compile | true | false |

precision: `fp32` computes in IEEE float32; `tf32` lets CUDA matrix products and
convolutions round their inputs to TensorFloat-32 (10-bit mantissa; on the CPU it is
fp32); `bf16` runs backbone and projector under `torch.autocast(dtype=bfloat16)` (matrix
products and convolutions in bfloat16, 8-bit mantissa, with float32 accumulation;
BatchNorm and reductions in float32) and hands their outputs on as float32, so the loss,
its normalisation and the spectra are computed in float32 (TF32 stays off).
channels_last stores images and convolution weights as NHWC, the layout of the GPU's
convolution kernels. compile passes the model and the loss through `torch.compile` with
`compile_mode` (default | max-autotune-no-cudagraphs; the CUDA-graph modes are not
offered: they overwrite a step's outputs at the next step, while the spectrum monitor
still reads them). None of these changes the computation beyond rounding.
"""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sslkit.errors import ConfigError

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


def _switch(key: str, value: bool | str, cuda: bool) -> bool:
    if value == "auto":
        return cuda
    if not isinstance(value, bool):
        raise ConfigError(f"trainer.{key}={value} is not allowed: use auto, true or false.")
    return value


@dataclass(frozen=True)
class Accel:
    device: torch.device
    precision: str = "fp32"  # fp32 | tf32 | bf16, resolved
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"

    @classmethod
    def resolve(cls, trainer, device: torch.device) -> "Accel":
        """The settings of `trainer` (the config's trainer node) for `device`, `auto`
        resolved; a ConfigError names a value that is not allowed."""
        cuda = device.type == "cuda"
        precision = str(getattr(trainer.precision, "value", trainer.precision))
        if precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision={precision} is not allowed: use one of {', '.join(PRECISIONS)}.")
        mode = str(getattr(trainer.compile_mode, "value", trainer.compile_mode))
        if mode not in COMPILE_MODES:
            raise ConfigError(f"trainer.compile_mode={mode} is not allowed: use one of {', '.join(COMPILE_MODES)} "
                              f"(the CUDA-graph modes would overwrite the outputs the spectrum monitor reads).")
        return cls(device, ("bf16" if cuda else "fp32") if precision == "auto" else precision,
                   _switch("channels_last", trainer.channels_last, cuda), _switch("compile", trainer.compile, cuda),
                   mode)

    def prepare(self, module: nn.Module) -> nn.Module:
        """`module` in the chosen layout (in place: its 4-d weights become NHWC)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def compiled(self, fn: Callable) -> Callable:
        """`torch.compile(fn, mode=compile_mode)` when compiling, else `fn`."""
        return torch.compile(fn, mode=self.compile_mode) if self.compile else fn

    def layout(self, x: Tensor) -> Tensor:
        """A batch of images (4-d) in the chosen layout; other tensors as they are."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of the forward pass through backbone and projector."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @contextlib.contextmanager
    def matmul_precision(self) -> Iterator[None]:
        """TF32 for CUDA float32 matrix products and convolutions under precision=tf32,
        IEEE float32 otherwise; the process's previous settings are restored on exit."""
        if self.device.type != "cuda":
            yield
            return
        flags = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
        before = [f.fp32_precision for f in flags]
        for f in flags:
            f.fp32_precision = "tf32" if self.precision == "tf32" else "ieee"
        try:
            yield
        finally:
            for f, value in zip(flags, before):
                f.fp32_precision = value
