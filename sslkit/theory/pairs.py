"""The measurement that the function-space theory predicts exactly: full-batch gradient
descent with the simplified Barlow Twins loss on one fixed set of view pairs.

sslkit-train redraws the views at every step; the kernel form of docs/theory.md is about a
fixed set of 2N views, so its check trains on fixed pairs here, with the same loss class
and optimizer as the training loop (`train_pairs`), or, for a linearized network, with the
same iterates computed in output space (`train_outputs`)."""

import numpy as np
import torch
from torch import Tensor, nn

from sslkit.losses.barlow_twins import BarlowTwinsLoss
from sslkit.theory.stepwise import output_matrix, pair_gradient


def train_pairs(model: nn.Module, views: Tensor, lr: float, steps: int,
                new: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Train `model` in place for `steps` steps of plain SGD (rate `lr`, no momentum) on
    L = ‖C − I‖²_F of the stacked pairs `views` = [views 1; views 2]. Returns the descending eigenvalues of C before
    each step and after the last, (steps + 1, D), and the outputs on `new` at the end."""
    loss_fn = BarlowTwinsLoss(lambd=1.0, scale=1.0, normalize="none", symmetric=True)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    eigenvalues = []
    for step in range(steps + 1):
        z1, z2 = model(views).chunk(2)
        out = loss_fn(z1, z2)
        c = (z1.T @ z2 + z2.T @ z1).detach() / (2 * len(z1))
        eigenvalues.append(torch.linalg.eigvalsh(c).flip(0))
        if step < steps:
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
    with torch.no_grad():
        outputs = None if new is None else model(new)
    return torch.stack(eigenvalues), outputs


def train_outputs(z0: Tensor, ntk: Tensor, lr: float, max_steps: int, tol: float = 0.0,
                  new_z0: Tensor | None = None, new_ntk: Tensor | None = None) -> tuple[Tensor, Tensor | None, int]:
    """`train_pairs` for a linearized network, in output space. Its outputs are
    f(x) = f₀(x) + J(x)·δ, and an SGD step δ ← δ − η J(X)ᵀ ∂L/∂Z moves them by

        Z ← Z − η Θ·∂L/∂Z,   f(x_new) ← f(x_new) − η Θ(x_new, X)·∂L/∂Z,

    with Θ = J Jᵀ the full output-coupled eNTK (`ntk` (2N, 2N, D, D) on the stacked views,
    `new_ntk` (n, 2N, D, D) from new points to them) and ∂L/∂Z from `stepwise.pair_gradient`:
    the same iterates as training the network, up to rounding, at the cost of a (2N·D)²
    product per step. Runs until L ≤ `tol` or `max_steps` steps. Returns the outputs on the
    views (2N, D) and on the new points (n, D) or None, and the number of steps taken."""
    n2, d = z0.shape
    theta = torch.from_numpy(output_matrix(ntk, n2, d))
    new = None if new_ntk is None else torch.from_numpy(output_matrix(new_ntk, n2, d, rows=len(new_ntk)))
    z = z0.double().flatten()
    f = None if new is None else new_z0.double().flatten()
    for step in range(max_steps + 1):
        zz = z.reshape(n2, d).numpy()
        c = (zz[: n2 // 2].T @ zz[n2 // 2:] + zz[n2 // 2:].T @ zz[: n2 // 2]) / n2
        if step == max_steps or ((c - np.eye(d)) ** 2).sum() <= tol:
            break
        grad = torch.from_numpy(pair_gradient(zz)).flatten()
        z = z - lr * (theta @ grad)
        if new is not None:
            f = f - lr * (new @ grad)
    return z.reshape(n2, d), None if f is None else f.reshape(-1, d), step
