"""BYOL (Grill et al. 2020): an online network with a predictor regresses a slowly moving
average of itself, the target network; no negatives, no covariance term.

Online: h = backbone(v), y = projector(h), p = predictor(y). Target: t = the target's
projector(backbone(v)), with no gradient. The target's parameters ξ follow the online
parameters θ after every optimizer step k of K:

    ξ ← τ_k ξ + (1 − τ_k) θ,   τ_k = 1 − (1 − τ₀)(cos(πk/K) + 1)/2,

so τ rises from τ₀ to 1. The loss is the normalised MSE between the online prediction of
one view and the target projection of the other, symmetrised:

    ℓ(p, t) = ‖p/‖p‖ − t/‖t‖‖² = 2 − 2 cos(p, t),
    L = (1/N) Σ_i [ℓ(p1_i, t2_i) + ℓ(p2_i, t1_i)],

as in the official `byol_experiment.py` (τ₀ = 0.996 there for ImageNet). The step's z are
the online predictions p, so the spectra are of what the loss compares.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.output import LossOutput, check_views
from sslkit.methods.siamese import StepOutput
from sslkit.models import Projector


class BYOL(nn.Module):
    """The online network (backbone, projector, predictor) and its moving-average target.

    The target is a submodule, so `state_dict()` (and with it every checkpoint) holds it;
    its parameters take no gradient and no optimizer step. Each network normalises each
    view with that view's batch statistics (BatchNorm in train mode), as in the official
    code. The predictor is `Projector(embed_dim, hidden_dims, out_dim)` with embed_dim the
    projector's output size (the backbone's with `projector=identity`).

    Args:
        hidden_dims: Hidden sizes of the predictor.
        tau: τ₀, the target's moving-average rate at the first step; it rises to 1 on a cosine.
    """

    extra_inputs = ("t1", "t2")

    def __init__(self, backbone: nn.Module, projector: nn.Module, hidden_dims: list[int],
                 tau: float = 0.996) -> None:
        super().__init__()
        if not 0 <= tau <= 1:
            raise ValueError(f"tau must be in [0, 1], got {tau}.")
        self.backbone, self.projector, self.tau = backbone, projector, tau
        embed_dim = projector.out_dim if hasattr(projector, "out_dim") else backbone.out_dim
        self.predictor = Projector(embed_dim, list(hidden_dims), embed_dim)
        self.target = copy.deepcopy(nn.Sequential(backbone, projector)).requires_grad_(False)

    def forward(self, v1: Tensor, v2: Tensor) -> StepOutput:
        h1, h2 = self.backbone(v1), self.backbone(v2)
        with torch.no_grad():
            t1, t2 = self.target(v1), self.target(v2)
        return StepOutput(h1, h2, self.predictor(self.projector(h1)), self.predictor(self.projector(h2)),
                          {"t1": t1, "t2": t2})

    def tau_at(self, step: int, total_steps: int) -> float:
        """τ_k = 1 − (1 − τ₀)(cos(πk/K) + 1)/2 for step k of K."""
        return 1 - (1 - self.tau) * (math.cos(math.pi * step / total_steps) + 1) / 2

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, applied: Tensor) -> None:
        """ξ ← τ_k ξ + (1 − τ_k) θ for the parameters, as ξ + w(θ − ξ) with w = 1 − τ_k where
        the step was `applied` (a 0-d bool on the device) and w = 0 (ξ unchanged) where it
        was skipped; the target's BatchNorm statistics are its own (updated by its forward
        passes)."""
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        target = list(self.target.parameters())
        delta = torch._foreach_sub(online, target)
        torch._foreach_mul_(delta, applied * (1 - self.tau_at(step, total_steps)))
        torch._foreach_add_(target, delta)


class BYOLLoss(nn.Module):
    """L = (1/N) Σ_i [(2 − 2 cos(z1_i, t2_i)) + (2 − 2 cos(z2_i, t1_i))] for the online
    predictions z and the target projections t of the two views (see the module's doc).

    ℓ(p, t) is computed as ‖p/‖p‖ − t/‖t‖‖², each norm at least 10⁻⁶, as the official
    `l2_normalize` (x·rsqrt(max(Σx², 10⁻¹²))) does. The targets take no gradient.

    Terms: ``"view1"`` = mean_i ℓ(z1_i, t2_i), ``"view2"`` = mean_i ℓ(z2_i, t1_i)."""

    def forward(self, z1: Tensor, z2: Tensor, *, t1: Tensor, t2: Tensor) -> LossOutput:
        check_views(z1, z2)
        check_views(t1, t2)
        view1, view2 = _regression(z1, t2), _regression(z2, t1)
        return LossOutput(view1 + view2, {"view1": view1, "view2": view2})


def _regression(p: Tensor, t: Tensor) -> Tensor:
    """mean_i ‖p_i/‖p_i‖ − t_i/‖t_i‖‖²."""
    return (F.normalize(p, dim=1, eps=1e-6) - F.normalize(t.detach(), dim=1, eps=1e-6)).pow(2).sum(1).mean()
