"""The measurement that the function-space ODE predicts exactly: full-batch gradient
descent with the simplified Barlow Twins loss on one fixed set of view pairs.

sslkit-train redraws the views at every step; the kernel form of docs/theory.md is about a
fixed set of 2N views, so its check trains on fixed pairs here, with the same loss class
and optimizer as the training loop."""

import torch
from torch import Tensor, nn

from sslkit.losses.barlow_twins import BarlowTwinsLoss


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
