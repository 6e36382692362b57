"""sslkit.theory.stepwise against closed forms and against training runs (docs/theory.md).

Conventions: C = (Z1ᵀZ2 + Z2ᵀZ1)/(2N), L = ‖C − I‖²_F, t = η·step/(1 − β), W₀ entries
N(0, α²/m). Measured half-times are the interpolated steps at which the k-th eigenvalue of
C in spectrum/ first reaches ½ (`crossing_times`)."""

import json
import math

import numpy as np
import pytest
import torch

from sslkit.models import build_backbone
from sslkit.report import draw_stepwise, theory_table
from sslkit.spectrum import load
from sslkit.theory import stepwise as S
from sslkit.theory.kernels import dense_ntk, empirical_ntk
from sslkit.theory.pairs import train_pairs
from sslkit.theory.predict import predict
from sslkit.train import train


def random_pairs(n=40, m=6, seed=0, decay=0.5):
    """Paired noisy views of x ~ N(0, diag(2^(−2·decay·k)))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, generator=g, dtype=torch.float64) * 2.0 ** (-decay * torch.arange(m))
    return x + 0.1 * torch.randn(n, m, generator=g, dtype=torch.float64), \
        x + 0.1 * torch.randn(n, m, generator=g, dtype=torch.float64)


def test_kernel_operator_has_the_eigenvalues_of_gamma():
    """Non-zero spectrum of K^{1/2}PK^{1/2}/2N = spectrum of Γ, and vₖ = Φᵀ K^{+1/2} uₖ."""
    x1, x2 = random_pairs()
    gamma, v = S.linear_modes(S.cross_covariance(x1, x2))
    phi = torch.cat([x1, x2])
    kg, u = S.kernel_modes(phi @ phi.T)
    np.testing.assert_allclose(kg[:6], gamma, rtol=1e-9, atol=1e-12)
    v_from_u = phi.T @ S._sqrt_psd(phi @ phi.T, inverse=True) @ u[:, :6]
    np.testing.assert_allclose((v_from_u * v).sum(0).abs(), torch.ones(6), atol=1e-8)


def test_logistic_solves_its_ode_and_crosses_half_at_the_half_time():
    gamma, c0 = torch.tensor([1.0, 0.3]), torch.tensor([1e-6, 3e-7])
    t = torch.linspace(0, 80, 8001, dtype=torch.float64)
    c = S.logistic(t, gamma, c0)
    dc = torch.gradient(c, spacing=(t,), dim=0)[0]
    np.testing.assert_allclose(dc[1:-1], (8 * gamma * c * (1 - c))[1:-1], rtol=5e-3, atol=1e-9)
    np.testing.assert_allclose(S.crossing_times(t.numpy(), c.numpy()), S.half_times(gamma, c0), rtol=1e-4)


def test_matrix_ode_from_aligned_init_is_the_logistic():
    """W₀ = Σ sₖ eₖ vₖᵀ: every mode evolves alone, cₖ(0) = γₖ sₖ²."""
    x1, x2 = random_pairs()
    g = S.cross_covariance(x1, x2)
    gamma, v = S.linear_modes(g)
    s = torch.tensor([1e-3, 2e-3, 1e-3, 3e-3, 1e-3, 1e-3], dtype=torch.float64)
    w0 = torch.diag(s) @ v.T
    t = torch.linspace(0, 3 * float(S.half_times(gamma, gamma * s**2).max()), 400, dtype=torch.float64)
    # the solver's tolerance two orders below the assertion's: at its default (1e-8) the global
    # error of a mode saturating at 1 reached 1.3e-4 on one CPU (its rounding picks other steps)
    ode = S.integrate_weights(w0, g, t, rtol=1e-10)
    closed = S.logistic(t, gamma, S.initial_levels(gamma, w0 @ v)).sort(1, descending=True).values
    np.testing.assert_allclose(ode, closed, rtol=1e-4, atol=1e-9)


def test_function_space_ode_of_a_linear_model_is_its_weight_ode():
    """Z = ΦWᵀ with Θ = ΦΦᵀ ⊗ I: two integrators, one trajectory of C."""
    x1, x2 = random_pairs()
    phi = torch.cat([x1, x2])
    w0 = 1e-3 * torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.linspace(0, 40, 200, dtype=torch.float64)
    theta = (phi @ phi.T)[:, :, None, None] * torch.eye(4, dtype=torch.float64)
    by_weights = S.integrate_weights(w0, S.cross_covariance(x1, x2), t)
    by_outputs = S.integrate_outputs(phi @ w0.T, theta, t)
    np.testing.assert_allclose(by_outputs, by_weights, rtol=1e-4, atol=1e-9)


def test_initial_levels_average_to_the_free_dimensions():
    """E R²ₖₖ = α²(D − k + 1)/m for W₀ entries N(0, α²/m) (Monte Carlo over 4000 draws)."""
    gamma = torch.ones(5, dtype=torch.float64)
    w0 = torch.randn(4000, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1 / math.sqrt(5)
    mean = S.initial_levels(gamma, w0).mean(0)
    np.testing.assert_allclose(mean, S.expected_levels(gamma, 0.1, 5, 3), rtol=0.05)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_dense_ntk_equals_empirical_ntk(parameterization):
    torch.manual_seed(0)
    net = build_backbone("sslkit.models.MLP", (1, 4, 4), width=24, depth=2, out_dim=3,
                         parameterization=parameterization, bias_scale=0.1).double()
    x, y = torch.randn(5, 1, 4, 4, dtype=torch.float64), torch.randn(4, 1, 4, 4, dtype=torch.float64)
    np.testing.assert_allclose(dense_ntk(net, x, y), empirical_ntk(net, x, y), rtol=1e-10, atol=1e-12)


def test_final_embedding_of_a_linear_model_spans_what_training_learns():
    """γⱼ^{-1/2} uⱼᵀK^{+1/2}k_X(x) = γⱼ^{-1/2} vⱼᵀx, and the ODE's W(t→∞) spans the top-D
    modes on new points (γₖ about 4× apart, so that the top 3 are learned before the 4th)."""
    x1, x2 = random_pairs(decay=1.0)
    phi = torch.cat([x1, x2])
    new = torch.randn(30, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gamma, v = S.linear_modes(S.cross_covariance(x1, x2))
    kg, u = S.kernel_modes(phi @ phi.T)
    f = S.final_embedding(phi @ phi.T, u[:, :3], kg[:3], phi @ new.T)
    np.testing.assert_allclose(f.abs(), (new @ v[:, :3] / gamma[:3].sqrt()).abs(), rtol=1e-7)

    w0 = 1e-4 * torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    theta = (phi @ phi.T)[:, :, None, None] * torch.eye(3, dtype=torch.float64)
    new_theta = (new @ phi.T)[:, :, None, None] * torch.eye(3, dtype=torch.float64)
    t = torch.tensor([0.0, 3 * float(S.half_times(kg[:3], S.expected_levels(kg, 1e-4, 6, 3)).max())])
    eig, out = S.integrate_outputs(phi @ w0.T, theta, t, new_ntk=new_theta, new_z0=new @ w0.T)
    np.testing.assert_allclose(eig[-1], torch.ones(3), atol=1e-6)
    assert S.principal_cosines(out, f).min() > 0.999


class Tangent(torch.nn.Module):
    """The linearized network as the linear map it is in its offsets: z = J·δ, with J the
    Jacobian of an `sslkit.models.Linearized` module's output with respect to its offsets
    (torch.func.jacrev); it is defined on the inputs J was taken at only."""

    def __init__(self, net, views):
        super().__init__()
        names = [name for name, _ in net.named_parameters() if name.startswith("offset.")]
        offsets = {name: p.detach() for name, p in net.named_parameters() if name.startswith("offset.")}
        jac = torch.func.jacrev(lambda o: torch.func.functional_call(net, o, (views,)))(offsets)
        self.jacobian = torch.cat([jac[n].flatten(2) for n in names], 2)  # (n, D, P)
        self.delta = torch.nn.Parameter(torch.cat([offsets[n].flatten() for n in names]))
        self.views = views

    def forward(self, x):
        assert x is self.views, "Tangent is J·δ at the inputs it was built on"
        return self.jacobian @ self.delta


def test_full_entk_ode_reproduces_a_linearized_network_on_fixed_pairs():
    """Linearized ReLU MLP 64 → 32 → 32 → 6 (NTK parameterization, β = 0.1, centred,
    α = 1e-3) on 24 fixed pairs of digit views, full-batch GD at ηγ₁ = 0.01: the
    function-space ODE with the full output-coupled eNTK (`dense_ntk`, from forward hooks)
    crosses ½ within 3 % of the network's steps for the first 5 modes. The network is
    trained as z = J·δ with J from torch.func.jacrev of the Linearized module (the same
    function: it is linear in δ), which makes its 3000 steps cheap."""
    torch.manual_seed(0)
    from sslkit.augment import ShiftNoise
    from sslkit.data import digits

    v1, v2 = ShiftNoise(1, 0.1, 0.3053)(digits(24).x[:24], torch.Generator().manual_seed(0))
    views = torch.cat([v1, v2]).double()
    net = build_backbone("sslkit.models.MLP", (1, 8, 8), linearized=True, center=True,
                         offset_scale=1e-3, width=32, depth=2, out_dim=6,
                         parameterization="ntk", bias_scale=0.1).double()
    theta = dense_ntk(net.network, views)
    tangent = Tangent(net, views)
    with torch.no_grad():
        z0 = net(views)
        np.testing.assert_allclose(tangent(views), z0, rtol=1e-9, atol=1e-15)
    gamma, _ = S.kernel_modes(theta.diagonal(dim1=2, dim2=3).mean(-1))
    lr, steps = 0.01 / float(gamma[0]), 3000
    measured, _ = train_pairs(tangent, views, lr, steps)
    ode = S.integrate_outputs(z0, theta, torch.arange(steps + 1, dtype=torch.float64) * lr)
    grid = np.arange(steps + 1, dtype=float)
    m, p = S.crossing_times(grid, measured.numpy())[:5], S.crossing_times(grid, ode.numpy())[:5]
    assert np.isfinite(m).all(), f"the first 5 modes were not all learned: {m}"
    np.testing.assert_allclose(p, m, rtol=0.03)


def test_predicted_half_times_ode_and_staircase_match_the_run(config, tmp_path):
    """experiment=stepwise_synthetic (linear 16 → 16, variances 2^(−k/2), α = 1e-4,
    η = 0.00625, full batch, 1500 steps): sslkit-theory's closed form (cₖ(0) from the run's
    W₀) is within 5 % of the measured half-times of the first 4 modes; the matrix ODE from
    W₀ crosses 0.1, ½ and 0.9 within 2 % of the measured steps; the loss on the plateau
    after k modes (midway between the k-th and (k+1)-th half-times) is D − k within 2 %.
    The 8-mode and init-scale checks are the slow tests below."""
    cfg = config("experiment=stepwise_synthetic")
    train(cfg, tmp_path)
    predict(cfg, tmp_path)
    theory = json.loads((tmp_path / "theory" / "modes.json").read_text())
    curves = np.load(tmp_path / "theory" / "curves.npz")
    check_run(tmp_path, theory, curves, modes=4, out_dim=cfg.backbone.out_dim)
    table = theory_table(tmp_path).splitlines()
    assert table[0].split()[:3] == ["mode", "gamma", "predicted"] and [r.split()[0] for r in table[1:5]] == ["1", "2", "3", "4"]
    dashed = [line for line in draw_stepwise(tmp_path).axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 12 and np.allclose(dashed[0].get_ydata(), curves["ode"][:, 0])


def check_run(run_dir, theory, curves, modes, out_dim):
    """The first `modes` measured half-times within 5 % of the closed form; the ODE's
    crossings of 0.1, ½ and 0.9 within 2 % of the measured ones; the loss halfway between
    two half-times within 2 % of the ODE's loss, and of the plateau D − k where the steps are
    separated (mode k has crossed 0.9 before mode k + 1 crosses 0.1; where they overlap
    there is no plateau: theory_linear_synthetic's modes 4 and 5 do, and its loss there is
    2.2 % below D − 4, as the ODE's is)."""
    spectra = load(run_dir)
    steps, eig = spectra["step"].astype(float), spectra["xcorr"]
    measured = S.crossing_times(steps, eig)[:modes]
    assert np.isfinite(measured).all(), f"not all of the first {modes} modes were learned: {measured}"
    np.testing.assert_allclose(measured, theory["half_time_steps"][:modes], rtol=0.05)
    for level in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(S.crossing_times(curves["step"].astype(float), curves["ode"], level)[:modes],
                                   S.crossing_times(steps, eig, level)[:modes], rtol=0.02)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loss_steps = np.array([m["step"] for m in metrics])
    loss = np.array([m["loss"] for m in metrics])
    starts, ends = S.crossing_times(steps, eig, 0.1)[:modes], S.crossing_times(steps, eig, 0.9)[:modes]
    plateaus = 0
    for k in range(1, modes):
        middle = (measured[k - 1] + measured[k]) / 2
        at_middle = np.interp(middle, loss_steps, loss)
        np.testing.assert_allclose(at_middle, np.interp(middle, curves["step"], curves["loss"]), rtol=0.02)
        if ends[k - 1] < starts[k]:  # mode k done before mode k + 1 starts: a plateau, k modes learned
            np.testing.assert_allclose(at_middle, out_dim - k, rtol=0.02)
            plateaus += 1
    assert plateaus >= modes // 2, f"only {plateaus} separated steps: starts {starts}, ends {ends}"


@pytest.mark.slow
def test_eight_modes_of_the_theory_experiment(config, tmp_path):
    """experiment=theory_linear_synthetic (α = 1e-3, η = 0.005, 6000 steps): the first 8
    modes, as in the test above."""
    cfg = config("experiment=theory_linear_synthetic")
    train(cfg, tmp_path)
    predict(cfg, tmp_path)
    theory = json.loads((tmp_path / "theory" / "modes.json").read_text())
    check_run(tmp_path, theory, np.load(tmp_path / "theory" / "curves.npz"), modes=8,
              out_dim=cfg.backbone.out_dim)


@pytest.mark.slow
def test_half_times_grow_with_ln_one_over_alpha_at_slope_one_over_four_gamma(config, tmp_path):
    """Init-scale law: runs at α ∈ {1e-2, 1e-3, 1e-4} (same seed, so the same W₀ up to
    scale); the least-squares slope of the measured half-time (steps) against ln(1/α) is
    1/(4ηγₖ) within 5 % for the first 4 modes."""
    alphas = (1e-2, 1e-3, 1e-4)
    half = []
    for alpha in alphas:
        cfg = config("experiment=theory_linear_synthetic", f"backbone.init_scale={alpha}",
                     "trainer.max_steps=1600")
        train(cfg, tmp_path / str(alpha))
        spectra = load(tmp_path / str(alpha))
        half.append(S.crossing_times(spectra["step"].astype(float), spectra["xcorr"])[:4])
    predicted = json.loads((predict(cfg, tmp_path / "theory") / "modes.json").read_text())
    slopes = np.polyfit(np.log(1 / np.array(alphas)), np.array(half), 1)[0]
    print("half-times", np.array(half).round(1).tolist(), "slopes", slopes.round(2).tolist(),
          "predicted", np.round(predicted["init_scale_slope_steps"][:4], 2).tolist())
    np.testing.assert_allclose(slopes, predicted["init_scale_slope_steps"][:4], rtol=0.05)


def test_kernel_regime_optima_on_a_full_rank_kernel():
    """K of full rank (n ≤ feature dim): the contrastive optimum's ZᵀZ is the top-d positive
    eigen-part of A (Eckart–Young), the non-contrastive one's rows span the bottom-d
    eigenvectors of L = D − A, and the induced kernel on the training points is ZᵀZ."""
    from sslkit.theory.induced import contrastive_optimum, induced_kernel, noncontrastive_optimum

    g = torch.Generator().manual_seed(0)
    phi = torch.randn(10, 30, generator=g, dtype=torch.float64)
    a = torch.rand(10, 10, generator=g, dtype=torch.float64)
    a = (a + a.T) / 2
    gram = phi @ phi.T
    w, q = torch.linalg.eigh(a)
    z = contrastive_optimum(gram, a, 3)
    np.testing.assert_allclose(z.T @ z, (q[:, -3:] * w[-3:]) @ q[:, -3:].T, atol=1e-9)
    np.testing.assert_allclose(induced_kernel(gram, z, gram), z.T @ z, atol=1e-8)
    laplacian = torch.diag(a.sum(1)) - a
    zn = noncontrastive_optimum(gram, a, 3)
    np.testing.assert_allclose(zn @ zn.T, torch.eye(3, dtype=torch.float64), atol=1e-9)
    assert S.principal_cosines(zn.T, torch.linalg.eigh(laplacian).eigenvectors[:, :3]).min() > 1 - 1e-9


def test_kernel_regime_optima_of_view_pairs_break_ties_by_rkhs_norm():
    """A = P (view pairs) is degenerate; both optima take, among the pair-symmetric
    vectors, the d of least RKHS norm tr(Z K⁺ Zᵀ), so they span one subspace, and no
    other symmetric subspace has a smaller norm (checked against 200 random ones)."""
    from sslkit.theory.induced import contrastive_optimum, noncontrastive_optimum

    x1, x2 = random_pairs(n=12, m=30)
    phi = torch.cat([x1, x2])
    gram, p = phi @ phi.T, S.swap(12)
    zc, zn = contrastive_optimum(gram, p, 3), noncontrastive_optimum(gram, p, 3)
    assert S.principal_cosines(zc.T, zn.T).min() > 1 - 1e-9
    np.testing.assert_allclose(p @ zn.T, zn.T, atol=1e-9)  # invariant on the pairs
    inverse = torch.linalg.pinv(gram, hermitian=True)
    best = torch.trace(zn @ inverse @ zn.T)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        half = torch.linalg.qr(torch.randn(12, 3, generator=g, dtype=torch.float64)).Q
        other = torch.cat([half, half]) / math.sqrt(2)  # orthonormal, pair-symmetric
        assert torch.trace(other.T @ inverse @ other) >= best - 1e-9


def test_sslkit_theory_refuses_what_it_cannot_predict(config, tmp_path):
    from sslkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"backbone=linear or mlp \(standard parameterization\), projector=identity"):
        predict(config("experiment=stepwise_digits", "loss=vicreg"), tmp_path)
    with pytest.raises(ConfigError, match="optim.schedule=constant"):
        predict(config("experiment=stepwise_digits", "optim.schedule=cosine"), tmp_path)
    with pytest.raises(ConfigError, match=r"^seed=-1 is not allowed"):  # seeded as training seeds
        predict(config("experiment=stepwise_digits", "seed=-1"), tmp_path)


def test_race_margin_with_a_scalar_kernel_is_the_closed_form_growth():
    """`race_margin` with Θ = K ⊗ I, from Z₀ = K^{1/2} U A (mode k's amplitude the row aₖ of
    A): each mode grows by (1 + 4ηγₖ) per step, C = Σₖ γₖ aₖ(t) aₖ(t)ᵀ, so t₁ is the first
    t with λ_max(C) ≥ ½ and the levels are cₖ = γₖ (aₖ(t₁)·v)², v C's other eigenvector;
    the margin is (min_{k≥3} τₖ − τ₂)/τ₂ with τₖ = ln(1/cₖ)/γₖ. Negating one output's
    start (a symmetry of the loss and of K ⊗ I) leaves all of it unchanged."""
    x1, x2 = random_pairs(n=6, m=12, seed=3, decay=0.2)
    gram = torch.cat([x1, x2]) @ torch.cat([x1, x2]).T
    gamma, u = S.kernel_modes(gram)
    amplitudes = 1e-6 * torch.randn(12, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    z0 = S._sqrt_psd(gram) @ u @ amplitudes
    ntk = gram[:, :, None, None] * torch.eye(2, dtype=torch.float64)
    lr = 0.05 / float(gamma[0])
    growth = 1 + 4 * lr * gamma
    t = 0
    while torch.linalg.eigvalsh((gamma[:, None, None] * torch.einsum("ki,kj->kij", growth[:, None] ** t * amplitudes,
                                                                     growth[:, None] ** t * amplitudes)).sum(0))[-1] < 0.5:
        t += 1
    a = growth[:, None] ** t * amplitudes
    v = torch.linalg.eigh((gamma[:, None, None] * torch.einsum("ki,kj->kij", a, a)).sum(0))[1][:, 0]
    levels = gamma * (a @ v) ** 2
    positive = gamma > 1e-12 * gamma[0]
    tau = torch.log(1 / levels[positive]) / gamma[positive]
    for start in (z0, z0 * torch.tensor([1.0, -1.0], dtype=torch.float64)):
        race = S.race_margin(ntk, start, gram, lr)
        assert race["step"] == t
        torch.testing.assert_close(race["levels"][positive], levels[positive], rtol=1e-7, atol=0)
        assert race["margin"] == pytest.approx(float((tau[2:].min() - tau[1]) / tau[1]), rel=1e-9)
