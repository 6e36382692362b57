"""`sslkit-theory`: the prediction for a training config, written to `run_dir/theory/`.

For the linear model (`backbone=linear`, `projector=identity`) trained with the simplified
Barlow Twins loss, it rebuilds the run's data, views and initial weights W₀ exactly as
`sslkit.train` does (same seed, same order), estimates Γ as the mean cross-covariance of
the first `VIEW_DRAWS` steps' views of the whole data set (the views are redrawn every
step; Γ is linear in each view, so this mean converges to the operator the expected
gradient sees), and writes the files below.

The same holds for a deep ReLU network (`backbone=mlp`, standard parameterization, every
layer trained) whose read-out starts small: f(x) = W φ(x), φ the hidden layers at
initialisation, W₀ the read-out. Its empirical NTK at initialisation is
Θ(x, x') = φ(x)ᵀφ(x')·I + O(α²), the read-out's term plus the hidden layers' terms, which
carry two factors of the read-out (α its init scale; `ntk_rest` in modes.json measures the
second part on a sample of views), so the linearised dynamics are those of the linear model
on the features: Γ is the features' cross-covariance, W₀ the read-out, and the kernel-PCA
embedding fⱼ(x) = γⱼ^{-1/2} vⱼᵀ φ(x) (`stepwise.final_embedding` with K = ΦΦᵀ) is the
final one. It holds while the hidden layers have not moved (docs/deep.md says for how long).
The files:

- `theory/modes.json`: time unit η/(1 − β), γₖ, cₖ(0) from W₀, closed-form half-times
  and the ODE's ½-crossings (in steps), the half-times of heavy-ball SGD's own iteration
  (`step_half_time_steps` at its per-step growth, `iterated_half_time_steps` iterated from
  W₀), the init-scale slopes 1/(4ηγₖ) (steps per unit of ln(1/α)), the loss plateaus
  D − k, and for the deep network `ntk_rest`;
- `theory/curves.npz`: `step`, `closed` (T, K) logistic curves, `ode` (T, D) eigenvalues
  of C from the full matrix ODE started at W₀, `loss` (T,) the ODE's ‖C − I‖²_F,
  `iterated` (T, D) those of the iteration; for the deep network also `embedding` (n, D),
  the predicted final embedding of the n clean images.
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from hydra.utils import instantiate
from omegaconf import DictConfig

from sslkit import layout
from sslkit.errors import ConfigError
from sslkit.methods.siamese import Siamese
from sslkit.models.layers import Parameterization
from sslkit.models.mlp import MLP, Linear
from sslkit.rng import VIEWS, generator, seed_globals
from sslkit.theory import kernels, stepwise

VIEW_DRAWS = 32  # view pairs of the whole data set averaged into Γ
CURVE_POINTS = 2000  # at most this many steps on the predicted curves
NTK_SAMPLES = 32  # views on which the eNTK at initialisation is compared with the read-out's term


def features_and_readout(backbone) -> tuple[torch.nn.Module, Tensor] | None:
    """(φ, W₀) for a model f(x) = W φ(x) that sslkit-theory predicts: φ the identity and W the
    weights of `backbone=linear`; the hidden layers and the read-out of a standard-parameterized
    `backbone=mlp`. None for any other backbone."""
    if isinstance(backbone, Linear):
        return torch.nn.Flatten(), backbone.layer.weight.detach().double()
    if isinstance(backbone, MLP) and not any(hasattr(m, "weight_gain") for m in backbone.modules()):
        return torch.nn.Sequential(torch.nn.Flatten(), *backbone.net[:-1]), backbone.net[-1].weight.detach().double()
    return None


def check_supported(cfg: DictConfig, backbone, projector, method) -> None:
    loss = cfg.loss
    simplified = (loss.get("normalize") == "none" and loss.get("lambd") == 1.0
                  and loss.get("scale") == 1.0 and loss.get("symmetric"))
    if not (features_and_readout(backbone) is not None and isinstance(projector, torch.nn.Identity)
            and isinstance(method, Siamese) and simplified):
        raise ConfigError(
            "sslkit-theory predicts the linear model, or an MLP from its features at initialisation, "
            "trained with the simplified Barlow Twins loss: method=siamese, backbone=linear or "
            f"mlp ({Parameterization.standard.value} parameterization), projector=identity, "
            "loss=barlow_twins_simplified (got "
            f"method={type(method).__name__}, backbone={type(backbone).__name__}, "
            f"projector={type(projector).__name__}, "
            f"loss normalize={loss.get('normalize')} lambd={loss.get('lambd')} "
            f"scale={loss.get('scale')} symmetric={loss.get('symmetric')}). Linearized "
            "networks are predicted in function space by scripts/theory_ntk.py "
            "(sslkit.theory.stepwise.integrate_outputs).")
    if cfg.optim.get("schedule", "constant") != "constant" or cfg.optim.get("weight_decay", 0.0):
        raise ConfigError(
            f"sslkit-theory needs optim.schedule=constant and optim.weight_decay=0 (got "
            f"{cfg.optim.get('schedule')}, {cfg.optim.get('weight_decay')}): the time unit "
            f"η/(1 − β) assumes a constant rate and the loss alone.")


def ntk_rest(backbone, phi, views: tuple[Tensor, Tensor]) -> float:
    """‖Θ − φφᵀ ⊗ I‖_F / ‖Θ‖_F for the empirical NTK Θ of `backbone` on the stacked views:
    the share of the hidden layers' terms, which the prediction on φ leaves out."""
    x = torch.cat(views)
    theta = kernels.dense_ntk(backbone, x).double()
    with torch.no_grad():
        f = phi(x).double()
    eye = torch.eye(theta.shape[-1], dtype=torch.float64)
    return float((theta - (f @ f.T)[:, :, None, None] * eye).norm() / theta.norm())


def predict(cfg: DictConfig, run_dir: str | Path) -> Path:
    """Write `run_dir/theory/` for the run `cfg` describes; returns that directory."""
    seed_globals(cfg.seed)  # as sslkit.train: data, views, then the initial weights
    data = instantiate(cfg.data)
    augment = instantiate(cfg.augment)
    backbone = instantiate(cfg.backbone, in_shape=augment.view_shape(tuple(data.x.shape[1:])))
    projector = instantiate(cfg.projector, in_dim=backbone.out_dim)
    check_supported(cfg, backbone, projector, instantiate(cfg.method, backbone=backbone, projector=projector))

    phi, w0 = features_and_readout(backbone)
    with torch.no_grad():
        gamma_matrix = sum(stepwise.cross_covariance(*map(phi, augment(data.x, generator(torch.device("cpu"), cfg.seed,
                                                                                          VIEWS, 0, s))))
                           for s in range(VIEW_DRAWS)) / VIEW_DRAWS
    gamma, v = stepwise.linear_modes(gamma_matrix)
    c0 = stepwise.initial_levels(gamma, w0 @ v)
    momentum = cfg.optim.get("momentum", 0.0)
    tau = stepwise.time_unit(cfg.optim.lr, momentum)
    max_steps = cfg.trainer.max_steps or data.steps_per_epoch * cfg.trainer.max_epochs
    steps = np.unique(np.linspace(0, max_steps, min(CURVE_POINTS, max_steps + 1)).round()).astype(np.int64)
    t = torch.from_numpy(steps).double() * tau
    closed = stepwise.logistic(t, gamma, c0)
    ode = stepwise.integrate_weights(w0, gamma_matrix, t)
    iterated = stepwise.iterate_weights(w0, gamma_matrix, cfg.optim.lr, momentum, steps)
    d = w0.shape[0]

    out = Path(run_dir) / layout.THEORY
    out.mkdir(parents=True, exist_ok=True)
    deep = isinstance(backbone, MLP)
    extra = {}
    if deep:
        with torch.no_grad():
            extra["embedding"] = ((phi(augment.clean(data.x)).double() @ v[:, :d]) / gamma[:d].sqrt()).numpy()
    np.savez(out / "curves.npz", step=steps, closed=closed.numpy(), ode=ode.numpy(),
             loss=stepwise.staircase(ode, d).numpy(), iterated=iterated.numpy(), **extra)
    summary = {
        "model": "mlp features at initialisation" if deep else "linear",
        "time_unit": tau,
        "gamma": gamma.tolist(),
        "c0": c0.tolist(),
        "half_time_steps": (stepwise.half_times(gamma, c0) / tau).tolist(),
        "ode_half_time_steps": [None if np.isnan(x) else float(x)
                                for x in stepwise.crossing_times(steps.astype(float), ode.numpy())],
        "step_half_time_steps": stepwise.step_half_times(gamma, c0, cfg.optim.lr, momentum).tolist(),
        "iterated_half_time_steps": [None if np.isnan(x) else float(x) for x in
                                     stepwise.crossing_times(steps.astype(float), iterated.numpy())],
        "init_scale_slope_steps": (stepwise.init_scale_slope(gamma[: len(c0)]) / tau).tolist(),
        "plateau_loss": [d - k for k in range(len(c0) + 1)],
        "view_draws": VIEW_DRAWS,
    }
    if deep:
        summary["ntk_rest"] = ntk_rest(backbone, phi, augment(data.x[:NTK_SAMPLES // 2], generator(
            torch.device("cpu"), cfg.seed, VIEWS, 0, 0)))
    (out / "modes.json").write_text(json.dumps(summary, indent=1))
    return out
