"""The first-order Taylor expansion of a network around its initial parameters (the model
whose training the neural tangent kernel describes exactly; Lee et al. 2019, eq. 6)."""

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from sslkit.errors import ConfigError


class Linearized(nn.Module):
    """f_lin(x; θ) = f(x; θ₀) + J_θ f(x; θ₀)·(θ − θ₀), or J_θ f(x; θ₀)·(θ − θ₀) with `center`.

    θ₀ is `network`'s parameters when it is wrapped; they are frozen. The trainable
    parameters are the offsets δ = θ − θ₀ (`self.offset`, one per parameter of `network`,
    in the order of `network.named_parameters()`), not θ itself: a small offset is then
    represented exactly in float32 instead of as the rounded difference of two O(1)
    numbers, and weight decay pulls θ towards θ₀ (ridge regression in the tangent
    features). The optimizer therefore sees δ: LARS's trust ratio uses ‖δ‖.

    The offsets start at δ₀ = offset_scale·ξ, ξ ~ N(0, I). The output at the start is then
    a centred Gaussian process with covariance offset_scale²·Θ(x, x') around f(x; θ₀), where
    Θ = J Jᵀ is the empirical NTK at θ₀ (`sslkit.theory.kernels.empirical_ntk`); with
    offset_scale = 0, f_lin equals f exactly at the start.

    J·δ is one forward-mode product (`torch.func.jvp` through `torch.func.functional_call`),
    about the cost of two forward passes; J is never formed. Its gradient with respect to δ
    is Jᵀ·(upstream gradient), by the ordinary backward pass through the jvp.

    Buffers are frozen at θ₀: every call works on copies of `network`'s buffers, so
    BatchNorm's running statistics keep their initial values. In train mode BatchNorm
    normalises with the batch statistics (which are part of f and of J); in eval mode it
    uses the frozen statistics of θ₀."""

    def __init__(self, network: nn.Module, center: bool = False, offset_scale: float = 0.0) -> None:
        super().__init__()
        self.network = network.requires_grad_(False)
        self.names = [name for name, _ in network.named_parameters()]
        self.offset = nn.ParameterList(offset_scale * torch.randn_like(p) for p in network.parameters())
        self.center = center
        self.out_dim = network.out_dim

    def forward(self, x: Tensor) -> Tensor:
        def f(params: dict[str, Tensor]) -> Tensor:
            buffers = {name: b.clone() for name, b in self.network.named_buffers()}
            return functional_call(self.network, (params, buffers), (x,))

        theta0 = dict(self.network.named_parameters())
        f0, tangent = jvp(f, (theta0,), (dict(zip(self.names, self.offset)),))
        return tangent if self.center else f0 + tangent


def linearize(network: nn.Module, in_shape: tuple[int, ...], center: bool = False,
              offset_scale: float = 0.0) -> Linearized:
    """`Linearized(network, center, offset_scale)`, after checking on a random batch of two
    samples of shape `in_shape` that torch.func can take the jvp of `network`'s forward pass.

    Python branches on tensor values are fine (the jvp follows the branch taken at θ₀), but
    reading values outside PyTorch (`.numpy()`), updating tensors held by the module in
    place, or an autograd.Function without `setup_context` make torch.func fail; that
    failure becomes a ConfigError that names `backbone.linearized`."""
    model = Linearized(network, center, offset_scale)
    x = torch.randn(2, *in_shape, generator=torch.Generator().manual_seed(0), dtype=model.offset[0].dtype)
    with torch.no_grad():
        functional_call(network, {n: b.clone() for n, b in network.named_buffers()}, (x,))
        try:
            model(x)
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                f"backbone.linearized=true needs torch.func.jvp through the forward pass of "
                f"{type(network).__name__}, and it failed: {reason} torch.func cannot transform "
                f"data-dependent control flow that reads tensor values outside PyTorch (e.g. "
                f".numpy()), in-place updates of tensors held by the module, or an "
                f"autograd.Function without setup_context. Use backbone.linearized=false, or a "
                f"backbone whose forward pass avoids these."
            ) from exc
    return model
