"""Neural tangent kernels: the analytic infinite-width NTK of a ReLU MLP, and the empirical
NTK of any module.

The NTK of a network f(x; θ) with D outputs is Θ(x, x')_ab = Σ_p ∂f_a(x)/∂θ_p · ∂f_b(x')/∂θ_p,
i.e. Θ = J(x) J(x')ᵀ. A linearized network trained by gradient flow on a loss L moves its
outputs by dZ/dt = −η Θ ∂L/∂Z, so Θ decides which modes it learns and when.
"""

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap


def _relu_expectations(s11: Tensor, s22: Tensor, s12: Tensor) -> tuple[Tensor, Tensor]:
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)] for (u, v) ~ N(0, [[s11, s12], [s12, s22]]),
    the arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009):

        E[relu(u) relu(v)]   = √(s11 s22) / (2π) · (sin φ + (π − φ) cos φ),
        E[relu'(u) relu'(v)] = (π − φ) / (2π),    φ = arccos(s12 / √(s11 s22)).

    s11 (n1, 1), s22 (1, n2), s12 (n1, n2)."""
    norm = torch.sqrt(s11 * s22)
    phi = torch.arccos(torch.clamp(s12 / norm, -1.0, 1.0))
    value = norm / (2 * math.pi) * (torch.sin(phi) + (math.pi - phi) * torch.cos(phi))
    derivative = (math.pi - phi) / (2 * math.pi)
    return value, derivative


def relu_ntk(x1: Tensor, x2: Tensor, depth: int, bias_scale: float) -> Tensor:
    """The infinite-width NTK of `sslkit.models.MLP(depth=depth, parameterization=ntk,
    bias_scale=β, init_scale=1)` between the rows of x1 (n1, d) and x2 (n2, d): an (n1, n2)
    matrix Θ∞, with Θ∞(x, x')·I_D the limit of the empirical NTK as the width grows
    (Jacot et al. 2018, Thm. 1; Arora et al. 2019, eq. 7–9).

    The network is h¹ = √(2/d)·W¹x + β b¹, hˡ⁺¹ = √(2/w)·Wˡ⁺¹ relu(hˡ) + β bˡ⁺¹ for
    l < depth, f = √(1/w)·W relu(h^depth), all weights and biases N(0, 1). With σ²_l the
    weight variance of layer l + 1 (2 for hidden layers, 1 for the read-out) and β_l its bias
    scale (β, or 0 for the read-out), the recursion is

        Σ¹(x, x') = 2·xᵀx'/d + β²,                      Θ¹ = Σ¹,
        Σˡ⁺¹ = σ²_l·E[relu(u) relu(v)] + β_l²,          (u, v) ~ N(0, Σˡ restricted to x, x')
        Σ̇ˡ⁺¹ = σ²_l·E[relu'(u) relu'(v)],
        Θˡ⁺¹ = Θˡ·Σ̇ˡ⁺¹ + Σˡ⁺¹,

    and Θ∞ = Θ^(depth+1): Σ is the covariance of the pre-activations (the NNGP kernel), and
    the term Θˡ·Σ̇ˡ⁺¹ carries the gradients of all earlier layers through layer l + 1."""
    d = x1.shape[1]
    s11 = 2 * (x1 * x1).sum(1, keepdim=True) / d + bias_scale**2
    s22 = 2 * (x2 * x2).sum(1, keepdim=True).T / d + bias_scale**2
    s12 = 2 * x1 @ x2.T / d + bias_scale**2
    theta = s12
    for layer in range(depth):
        readout = layer == depth - 1
        weight_var, bias_var = (1.0, 0.0) if readout else (2.0, bias_scale**2)
        value, derivative = _relu_expectations(s11, s22, s12)
        s12 = weight_var * value + bias_var
        theta = theta * weight_var * derivative + s12
        # E[relu(u)²] = s/2 on the diagonal
        s11, s22 = weight_var * s11 / 2 + bias_var, weight_var * s22 / 2 + bias_var
    return theta


def empirical_ntk(module: nn.Module, x1: Tensor, x2: Tensor | None = None,
                  chunk_size: int | None = None) -> Tensor:
    """Θ(x1, x2) of `module` at its current parameters: an (n1, n2, D, D) tensor with
    Θ[i, j, a, b] = Σ_p ∂f_a(x1_i)/∂θ_p · ∂f_b(x2_j)/∂θ_p (x2 = x1 when omitted).

    Computed column by column without forming J: for each output coordinate (j, b) of x2,
    g = J(x2)ᵀ e_(j,b) is one vector-Jacobian product, and J(x1)·g one Jacobian-vector
    product (torch.func.vjp, then torch.func.jvp, vmapped over the n2·D columns;
    `chunk_size` columns at a time bounds the memory to chunk_size parameter vectors).
    The module is called in its current mode, on copies of its buffers (they are not
    updated): call `.eval()` first for a network with BatchNorm to get a per-sample kernel."""
    x2 = x1 if x2 is None else x2
    params = {name: p.detach() for name, p in module.named_parameters()}

    def f(x: Tensor):
        return lambda p: functional_call(module, (p, {n: b.clone() for n, b in module.named_buffers()}), (x,))

    out2, pullback = vjp(f(x2), params)
    n2, dim = out2.shape
    basis = torch.eye(n2 * dim, dtype=out2.dtype, device=out2.device).reshape(n2 * dim, n2, dim)

    def column(cotangent: Tensor) -> Tensor:
        (g,) = pullback(cotangent)
        return jvp(f(x1), (params,), (g,))[1]

    columns = vmap(column, chunk_size=chunk_size)(basis)  # [(j, b), i, a]
    return columns.reshape(n2, dim, len(x1), dim).permute(2, 0, 3, 1)


def dense_ntk(module: nn.Module, x1: Tensor, x2: Tensor | None = None) -> Tensor:
    """The empirical NTK of a network whose parameters all sit in `nn.Linear` layers
    (`sslkit.models.MLP`, either parameterization), in `empirical_ntk`'s layout
    (n1, n2, D, D), at the cost of D backward passes and one contraction per layer.

    A layer y = g·W u + s·b (g = `weight_gain`, s = `bias_scale`, both 1 for nn.Linear) has
    ∂y_i/∂W_ij = g·u_j and ∂y_i/∂b_i = s, so with δᵃ = ∂f_a/∂y its share of the kernel is

        Θ_ab(x, x') += (g²·u(x)ᵀu(x') + s²·[bias]) · δᵃ(x)ᵀ δᵇ(x'),

    an (n·D)×(n'·D)×width product instead of empirical_ntk's n'·D Jacobian-vector products.
    It assumes samples do not interact (no BatchNorm in train mode)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    covered = sum(p.numel() for m in linears for p in m.parameters(recurse=False))
    if covered != sum(p.numel() for p in module.parameters()):
        raise ValueError(f"dense_ntk needs every parameter of {type(module).__name__} in an "
                         f"nn.Linear layer; use empirical_ntk.")
    x2 = x1 if x2 is None else x2
    both = [_layer_factors(module, linears, x) for x in (x1, x2)]
    theta = 0
    for layer, (u1, d1), (u2, d2) in zip(linears, *both):
        gain = getattr(layer, "weight_gain", 1.0)
        inner = gain**2 * u1 @ u2.T
        if layer.bias is not None:
            inner = inner + getattr(layer, "bias_scale", 1.0) ** 2
        theta = theta + inner[:, :, None, None] * torch.einsum("iaw,jbw->ijab", d1, d2)
    return theta


def _layer_factors(module: nn.Module, linears: list[nn.Linear], x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """For each layer: its input u (n, fan_in) and δ (n, D, fan_out) = ∂f_a/∂y per sample."""
    inputs, outputs = [], []

    def record(_, args, output) -> None:
        inputs.append(args[0].detach())
        outputs.append(output)

    hooks = [m.register_forward_hook(record) for m in linears]
    try:
        with torch.enable_grad():
            params = [p.requires_grad for p in module.parameters()]
            module.requires_grad_(False)
            x = x.detach().requires_grad_(True)  # a graph from the input to every layer output
            f = module(x)
            deltas = [torch.stack(grads, 1) for grads in zip(*(
                torch.autograd.grad(f[:, a].sum(), outputs, retain_graph=True) for a in range(f.shape[1])))]
    finally:
        for h in hooks:
            h.remove()
        for p, flag in zip(module.parameters(), params):
            p.requires_grad_(flag)
    return [(u.flatten(1), d.flatten(2)) for u, d in zip(inputs, deltas)]


def scalar_part(ntk: Tensor) -> tuple[Tensor, float]:
    """The scalar kernel K = mean_a Θ_aa of an output-coupled NTK (n1, n2, D, D), and the
    relative size ‖Θ − K ⊗ I‖_F / ‖Θ‖_F of what K leaves out: the cross-output blocks
    Θ_ab (a ≠ b) and the spread of the diagonal blocks around their mean. Both vanish as
    the width grows (Θ → Θ∞ ⊗ I); the kernel-regime formulas that take one scalar kernel
    are off by this much at finite width."""
    k = ntk.diagonal(dim1=2, dim2=3).mean(-1)
    eye = torch.eye(ntk.shape[2], dtype=ntk.dtype, device=ntk.device)
    return k, float((ntk - k[:, :, None, None] * eye).norm() / ntk.norm())
