"""The linearized network f_lin(x; θ) = f(x; θ₀) + J(θ − θ₀): agreement with the network
to second order, exact gradients, frozen buffers, and the configuration errors."""

import copy

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.func import functional_call, vjp

from conftest import assert_separated_steps, compose_config
from sslkit.errors import ConfigError
from sslkit.models import CNN, MLP, Linear, Linearized, build_backbone, resnet
from sslkit.optim import build_optimizer
from sslkit.train import train


def networks() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "mlp_ntk": MLP((1, 8, 8), 64, 2, 6, parameterization="ntk", bias_scale=0.1).double(),
        "cnn_ntk": CNN((1, 8, 8), 8, 1, 6, parameterization="ntk", bias_scale=0.1).double(),
        "resnet18": resnet((1, 8, 8), "resnet18", cifar_stem=False).double(),
    }


def x_batch() -> torch.Tensor:
    return torch.randn(8, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def shifted(network: nn.Module, delta: list[torch.Tensor]) -> nn.Module:
    """A copy of `network` with parameters θ₀ + δ."""
    moved = copy.deepcopy(network)
    with torch.no_grad():
        for p, d in zip(moved.parameters(), delta):
            p.add_(d)
    return moved


def set_offset(model: Linearized, delta: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, d in zip(model.offset, delta):
            p.copy_(d)


@pytest.mark.parametrize("name", ["mlp_ntk", "cnn_ntk", "resnet18"])
def test_at_theta0_equals_the_network_and_centred_is_zero(name):
    network, x = networks()[name], x_batch()
    expected = copy.deepcopy(network)(x)
    assert torch.equal(Linearized(network)(x), expected)
    assert torch.equal(Linearized(network, center=True)(x), torch.zeros_like(expected))


def smooth(network: nn.Module) -> nn.Module:
    """`network` with every ReLU replaced by GELU. The Taylor remainder is O(ε²) only for a
    twice-differentiable f: a ReLU whose input lies within O(ε) of its kink adds O(ε) to
    the error, and with many units such kinks are always present, giving O(ε^1.5) overall."""
    for module in list(network.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, nn.GELU())
    return network


@pytest.mark.parametrize("name", ["mlp_ntk", "cnn_ntk", "resnet18"])
def test_agrees_with_the_network_to_second_order(name):
    """‖f(θ₀ + εu) − f_lin(θ₀ + εu)‖ = O(ε²): halving ε divides the error by ≈ 4."""
    network, x = smooth(networks()[name]), x_batch()
    model = Linearized(copy.deepcopy(network))
    # a random direction with each tensor's own scale (BatchNorm's γ = 1, β = 0: scale 0.01)
    u = [torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(i))
         * p.detach().std().clamp(min=1e-2) for i, p in enumerate(network.parameters())]
    errors = []
    for eps in (1e-3, 5e-4, 2.5e-4):
        delta = [eps * d for d in u]
        set_offset(model, delta)
        errors.append((shifted(network, delta)(x) - model(x)).norm().item())
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(3.5 < r < 4.5 for r in ratios), (errors, ratios)
    assert errors[0] < 1e-3 * shifted(network, [1e-3 * d for d in u])(x).norm().item()


def test_linear_model_is_its_own_linearization():
    torch.manual_seed(0)
    network = Linear((64,), 10).double()
    model = Linearized(copy.deepcopy(network), offset_scale=0.3)
    theta = [p0 + d for p0, d in zip(network.parameters(), model.offset)]
    x = torch.randn(5, 64, dtype=torch.float64)
    torch.testing.assert_close(model(x), x @ theta[0].T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp_ntk", "cnn_ntk", "resnet18"])
@pytest.mark.parametrize("center", [False, True])
def test_gradient_is_jacobian_transpose_times_upstream(name, center):
    """∇_δ L(f_lin) = J(θ₀)ᵀ ∂L/∂f, with J(θ₀)ᵀ from torch.func.vjp of the plain network."""
    network, x = networks()[name], x_batch()
    model = Linearized(copy.deepcopy(network), center=center, offset_scale=1e-2)
    target = torch.randn(len(x), network.out_dim, dtype=torch.float64)
    out = model(x)
    (0.5 * (out - target).square().sum()).backward()
    upstream = (out - target).detach()

    def f(params):
        return functional_call(network, (params, {n: b.clone() for n, b in network.named_buffers()}), (x,))

    _, pullback = vjp(f, {n: p.detach() for n, p in network.named_parameters()})
    (expected,) = pullback(upstream)
    for (param_name, _), offset in zip(network.named_parameters(), model.offset):
        torch.testing.assert_close(offset.grad, expected[param_name], rtol=1e-7, atol=1e-10)


def test_buffers_stay_at_theta0_and_only_offsets_train():
    torch.manual_seed(0)
    network = resnet((1, 8, 8), "resnet18")
    before = {n: b.clone() for n, b in network.named_buffers()}
    model = Linearized(network, offset_scale=1e-3)
    model.train()
    model(torch.randn(4, 1, 8, 8) + 3.0).sum().backward()
    for n, b in network.named_buffers():
        assert torch.equal(b, before[n]), n
    assert all(not p.requires_grad and p.grad is None for p in network.parameters())
    optimizer, _ = build_optimizer(compose_config("optim=sgd").optim, model, total_steps=1)
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    offsets = {id(p) for p in model.offset}
    assert len(trained) == len(offsets) == len(list(network.parameters()))
    assert all(id(p) in offsets for p in trained)


def test_offsets_start_as_scaled_standard_normals():
    torch.manual_seed(0)
    model = Linearized(MLP((64,), 512, 1, 512, parameterization="ntk"), offset_scale=1e-3)
    big = max(model.offset, key=lambda p: p.numel())
    assert big.std().item() == pytest.approx(1e-3, rel=0.01) and abs(big.mean().item()) < 1e-5


# --------------------------------------------------------------------------- errors


class NumpyBranch(nn.Module):
    """Data-dependent control flow through .numpy(), which torch.func cannot transform."""

    def __init__(self, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.layer, self.out_dim = nn.Linear(in_shape[0], 4), 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer(x)
        return h / 2 if h.detach().numpy().max() > 1 else h


def test_data_dependent_control_flow_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        build_backbone(f"{__name__}.NumpyBranch", in_shape=(3,), linearized=True)
    message = str(info.value)
    assert "backbone.linearized=true" in message and "NumpyBranch" in message
    assert "data-dependent control flow" in message and "backbone.linearized=false" in message
    # the same network without linearization is fine
    assert build_backbone(f"{__name__}.NumpyBranch", in_shape=(3,))(torch.ones(2, 3)).shape == (2, 4)


def test_python_branches_on_values_are_linearized_along_the_branch_taken():
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer, self.out_dim = nn.Linear(3, 2), 2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.layer(x)
            return h.square() if h.sum() > -1e9 else h

    torch.manual_seed(0)
    network = Branch().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(Linearized(network)(x), network(x))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("backbone.center=true",), "backbone.center=true: only the linearized network uses"),
        (("backbone.offset_scale=0.01",), "backbone.offset_scale=0.01: only the linearized network uses"),
        (("backbone.linearized=true", "backbone.center=true"), "backbone.offset_scale>0"),
    ],
)
def test_inconsistent_linearization_keys(config, overrides, expected):
    cfg = config("backbone=mlp", *overrides)
    with pytest.raises(Exception) as info:
        instantiate(cfg.backbone, in_shape=(1, 8, 8))
    exc = info.value
    while not isinstance(exc, ConfigError):
        exc = exc.__cause__
    assert expected in str(exc)


def test_ntk_experiment_learns_four_separated_steps(config, tmp_path):
    """experiment=stepwise_ntk_digits: ≥ 4 eigenvalues of C rise from ≈ 0 to ≈ 1 one after
    another; each has crossed 0.8 before the next one crosses 0.2."""
    train(config("experiment=stepwise_ntk_digits"), tmp_path)
    assert_separated_steps(tmp_path, 4)
