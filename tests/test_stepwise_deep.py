"""Stepwise learning in a deep network (configs/experiment/stepwise_deep_digits.yaml,
docs/deep.md): a ReLU MLP whose every layer trains, from a small read-out, and
sslkit-theory's prediction for it from its features at initialisation."""

import json

import numpy as np
import pytest
import torch

from conftest import assert_separated_steps
from sslkit import layout
from sslkit.report import theory_table
from sslkit.spectrum import load
from sslkit.theory import stepwise as S
from sslkit.theory.predict import predict
from sslkit.train import train

QUICK = ("eval=none", "spectrum.matrices=[xcorr]")


def test_iteration_is_torch_sgd_with_momentum_on_the_linear_model():
    """`iterate_weights` against torch.optim.SGD (momentum β) on L = ‖WΓWᵀ − I‖²_F with
    autograd's gradient: the same eigenvalues of C at every recorded step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) * 2.0 ** (-0.5 * torch.arange(6))
    gamma_matrix = S.cross_covariance(x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64),
                                      x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64))
    w0 = 1e-3 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    steps = np.array([0, 5, 50, 199, 400])
    predicted = S.iterate_weights(w0, gamma_matrix, lr=0.05, momentum=0.8, steps=steps)
    w = w0.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([w], lr=0.05, momentum=0.8)
    measured = []
    for step in range(steps[-1] + 1):
        c = w @ gamma_matrix @ w.T
        if step in steps:
            measured.append(torch.linalg.eigvalsh(c.detach()).flip(-1))
        optimizer.zero_grad()
        ((c - torch.eye(4, dtype=torch.float64)) ** 2).sum().backward()
        optimizer.step()
    measured = torch.stack(measured)
    assert measured[-1, 0] > 0.9, "the first mode should be learned by the last step"
    np.testing.assert_allclose(predicted, measured, rtol=1e-9, atol=1e-14)


def test_step_growth_is_the_iteration_rate_and_the_flow_its_small_step_limit():
    """One aligned mode near C = 0 grows by ρ per step (the root of ρ² − (1 + β + 4ηγ)ρ + β):
    the ratio of its amplitude over the iteration's last steps; for 4ηγ ≪ (1 − β)² ln ρ tends
    to the flow's 4γη/(1 − β), for 4ηγ ≳ (1 − β)² it is far below it."""
    gamma_matrix = torch.diag(torch.tensor([2.0, 0.002], dtype=torch.float64))
    w0 = torch.tensor([[1e-12, 0.0], [0.0, 1e-12]], dtype=torch.float64)
    lr, momentum = 0.01, 0.9
    c = S.iterate_weights(w0, gamma_matrix, lr, momentum, np.array([60, 61]))  # mode 1 still ≪ 1
    rho = S.step_growth(torch.tensor([2.0, 0.002], dtype=torch.float64), lr, momentum)
    np.testing.assert_allclose(torch.sqrt(c[1] / c[0]), rho, rtol=1e-3)  # c ∝ amplitude²
    flow = 4 * torch.tensor([2.0, 0.002], dtype=torch.float64) * lr / (1 - momentum)
    assert abs(float(torch.log(rho[1]) / flow[1]) - 1) < 0.01  # 4ηγ = 8e-5 ≪ (1 - β)² = 0.01
    assert float(torch.log(rho[0]) / flow[0]) < 0.5  # 4ηγ = 0.08 > 0.01


def test_theory_of_the_deep_network_is_its_readout_on_the_initial_features(config, tmp_path):
    """sslkit-theory on a narrow version of the deep experiment: the empirical NTK at
    initialisation is φφᵀ ⊗ I up to the hidden layers' share, which is O(α²) (≤ 1e-6 at the
    experiment's α = 1e-6, ≥ 0.1 at α = 1, where the prediction does not apply); the predicted
    final embedding on the clean digits is whitened along the views' modes: its covariance
    between the two views' features is I on the learned modes (γⱼ^{-1/2} vⱼᵀφ)."""
    small = ("experiment=stepwise_deep_digits", "backbone.width=64", "trainer.max_steps=20")
    theory = json.loads((predict(config(*small), tmp_path / "small") / "modes.json").read_text())
    assert theory["model"] == "mlp features at initialisation" and theory["ntk_rest"] < 1e-6
    assert len(theory["gamma"]) == 64 and len(theory["iterated_half_time_steps"]) == 64
    large = json.loads((predict(config(*small, "backbone.init_scale=1"), tmp_path / "large")
                        / "modes.json").read_text())
    assert large["ntk_rest"] > 0.1
    curves = np.load(tmp_path / "small" / layout.THEORY / "curves.npz")
    assert curves["embedding"].shape == (1797, 64) and curves["iterated"].shape[1] == 64


def test_sslkit_theory_refuses_a_network_it_cannot_linearise(config, tmp_path):
    from sslkit.errors import ConfigError

    with pytest.raises(ConfigError, match="standard parameterization"):
        predict(config("experiment=stepwise_deep_digits", "backbone.parameterization=ntk"), tmp_path)
    with pytest.raises(ConfigError, match="backbone=linear or mlp"):
        predict(config("experiment=stepwise_deep_digits", "backbone=cnn"), tmp_path)


@pytest.mark.slow
def test_deep_experiment_learns_five_separated_steps_with_a_staircase_loss(config, tmp_path):
    """experiment=stepwise_deep_digits as committed (evaluation off: it never changes the
    trajectory): every layer of the MLP moves (each hidden layer's weights by ≥ 1 % of their
    initial norm); ≥ 5 modes of C rise from ≈ 0 to 0.8 one after another, mode k reaching 0.8
    before mode k + 1 reaches 0.2; the loss midway between the k-th and (k + 1)-th ½-crossings
    is D − k within 1 % (the staircase); the first 5 measured half-times lie within 15 % of
    sslkit-theory's iteration of the linearised model, and the table prints them."""
    cfg = config("experiment=stepwise_deep_digits", *QUICK)
    train(cfg, tmp_path)
    assert_separated_steps(tmp_path, 5)
    spectra = load(tmp_path)
    half = S.crossing_times(spectra["step"].astype(float), spectra["xcorr"])[:5]
    metrics = [json.loads(line) for line in (tmp_path / layout.METRICS).read_text().splitlines()]
    loss_steps, loss = np.array([m["step"] for m in metrics]), np.array([m["loss"] for m in metrics])
    d = cfg.backbone.out_dim
    for k in range(1, 5):
        np.testing.assert_allclose(np.interp((half[k - 1] + half[k]) / 2, loss_steps, loss), d - k, rtol=0.01)
    last = torch.load(tmp_path / layout.CHECKPOINTS / "last.pt", weights_only=False)["model"]
    predict(cfg, tmp_path)
    theory = json.loads((tmp_path / layout.THEORY / "modes.json").read_text())
    np.testing.assert_allclose(half, theory["iterated_half_time_steps"][:5], rtol=0.15)
    assert theory_table(tmp_path).splitlines()[0].split()[-1] == "iter."
    for name, w0 in initial_hidden_weights(cfg).items():
        moved = float((last[name] - w0).norm() / w0.norm())
        assert moved > 0.01, f"{name} moved by {moved:.2%} only"


def initial_hidden_weights(cfg) -> dict[str, torch.Tensor]:
    """The hidden layers' weights at initialisation, built as sslkit.train builds them."""
    from hydra.utils import instantiate

    from sslkit.rng import seed_globals

    seed_globals(cfg.seed)
    data, augment = instantiate(cfg.data), instantiate(cfg.augment)
    backbone = instantiate(cfg.backbone, in_shape=augment.view_shape(tuple(data.x.shape[1:])))
    return {f"backbone.net.{i}.weight": m.weight.detach() for i, m in enumerate(backbone.net[:-1])
            if isinstance(m, torch.nn.Linear)}
