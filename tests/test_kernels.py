"""Neural tangent kernels: the empirical NTK against a materialised Jacobian, the analytic
ReLU NTK against its closed form on the diagonal, and the convergence of one to the other."""

import math

import pytest
import torch
from sklearn.datasets import load_digits
from torch.func import functional_call, jacrev

from sslkit.models import CNN, MLP
from sslkit.theory import empirical_ntk, relu_ntk


def digits(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(load_digits().data[:n], dtype=dtype) / 16


def jacobian_ntk(module, x1, x2):
    """Θ[i, j, a, b] = Σ_p J1[i, a, p] J2[j, b, p] with J materialised by jacrev."""
    params = {k: v.detach() for k, v in module.named_parameters()}

    def flat_jacobian(x):
        jac = jacrev(lambda p: functional_call(module, p, (x,)))(params)
        return torch.cat([j.reshape(len(x), -1, j[0, 0].numel()) for j in jac.values()], dim=-1)

    return torch.einsum("iap,jbp->ijab", flat_jacobian(x1), flat_jacobian(x2))


@pytest.mark.parametrize("network", ["mlp", "cnn"])
def test_empirical_ntk_equals_the_jacobian_product(network):
    torch.manual_seed(0)
    x1, x2 = digits(5).reshape(5, 1, 8, 8), digits(8)[5:].reshape(3, 1, 8, 8)
    model = {"mlp": lambda: MLP((1, 8, 8), 16, 2, 3, parameterization="ntk", bias_scale=0.1),
             "cnn": lambda: CNN((1, 8, 8), 4, 1, 3, parameterization="ntk", bias_scale=0.1)}[network]().double()
    theta = empirical_ntk(model, x1, x2, chunk_size=4)
    assert theta.shape == (5, 3, 3, 3)
    torch.testing.assert_close(theta, jacobian_ntk(model, x1, x2), rtol=1e-10, atol=1e-12)
    gram = empirical_ntk(model, x1).permute(0, 2, 1, 3).reshape(15, 15)
    torch.testing.assert_close(gram, gram.T)
    assert torch.linalg.eigvalsh(gram).min() > -1e-10


def test_relu_ntk_diagonal_closed_form():
    """On x = x' every angle is 0: E[relu(u)²] = Σ/2, E[relu'(u)²] = 1/2, so with
    q = 2‖x‖²/d + β²:  depth 1: Θ = (q + q)/2;  depth 2: Σ² = q + β², Θ² = q + Σ²,
    Θ = (Θ² + Σ²)/2."""
    x, beta = digits(6), 0.3
    q = 2 * (x * x).sum(1) / x.shape[1] + beta**2
    torch.testing.assert_close(torch.diagonal(relu_ntk(x, x, 1, beta)), q, rtol=1e-12, atol=0)
    s2 = q + beta**2
    torch.testing.assert_close(torch.diagonal(relu_ntk(x, x, 2, beta)), (q + s2 + s2) / 2, rtol=1e-12, atol=0)


def test_relu_ntk_of_orthogonal_inputs_without_bias():
    """Depth 1, β = 0, xᵀx' = 0: φ = π/2, so Θ = Σ¹(x, x')·Σ̇ + E[relu(u) relu(v)]
    = 0 + √(q q')/(2π) with q = 2‖x‖²/d."""
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    q = 2 * (x * x).sum(1) / 2
    assert relu_ntk(x, x, 1, 0.0)[0, 1].item() == pytest.approx(math.sqrt(q[0] * q[1]) / (2 * math.pi), rel=1e-12)


def ntk_error(depth: int, width: int, out_dim: int, x: torch.Tensor, seeds: int = 3) -> float:
    """Relative Frobenius error ‖Θ_w − Θ∞ ⊗ I‖ / ‖Θ∞ ⊗ I‖, root mean square over `seeds` draws."""
    limit = torch.kron(relu_ntk(x.double(), x.double(), depth, 0.1), torch.eye(out_dim, dtype=torch.float64))
    squared = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = MLP((x.shape[1],), width, depth, out_dim, parameterization="ntk", bias_scale=0.1)
        theta = empirical_ntk(model, x, chunk_size=8).permute(0, 2, 1, 3).reshape(len(x) * out_dim, -1)
        squared.append(((theta.double() - limit).norm() / limit.norm()).item() ** 2)
    return math.sqrt(sum(squared) / seeds)


def test_empirical_ntk_of_one_hidden_layer_converges_to_the_analytic_limit():
    """Two outputs, so the limit Θ∞ ⊗ I also checks that the cross-output blocks vanish.
    The fluctuations are O(1/√w): the error must fall with each 4× in width."""
    x = digits(32, torch.float32)
    errors = [ntk_error(1, width, 2, x) for width in (256, 1024, 4096)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.5 * errors[0], errors


@pytest.mark.slow
def test_empirical_ntk_of_a_wide_mlp_converges_to_the_analytic_limit():
    """Depth 2 on 32 digits: width 1024 → 4096 shrinks the error (≈ 0.09 → 0.03 here)."""
    x = digits(32, torch.float32)
    errors = {width: ntk_error(2, width, 1, x) for width in (1024, 4096)}
    assert errors[4096] < 0.7 * errors[1024] and errors[4096] < 0.05, errors
