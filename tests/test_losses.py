"""Tests for sslkit.losses against independent float64 references.

The small-shape references below are written per element with explicit Python loops
over indices (math.sqrt, math.exp, math.log), deliberately unlike the vectorised
module code. For large D, references built from different torch primitives
(F.batch_norm, torch.einsum, torch.cov, F.cross_entropy) are used instead.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from conftest import compose_config
from sslkit.losses import BarlowTwinsLoss, LossOutput, NTXentLoss, VICRegLoss

SMALL_SHAPES = [(2, 1), (2, 3), (5, 1), (7, 4), (16, 8)]
LARGE_SHAPES = [(8, 256), (32, 512)]
BT_MODES = [(nz, sym) for nz in ("batchnorm", "none") for sym in (False, True)]
BT_COEFFS = [(0.0051, 1.0), (0.5, 0.024), (1.0, 3.0)]


def views(
    n: int, d: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated views with per-dimension scales spread around 1."""
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = 0.7 * z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    col_scale = torch.linspace(0.3, 2.5, d, dtype=torch.float64)
    return (z1 * col_scale).to(dtype), (z2 * col_scale + 0.2).to(dtype)


def as_lists(z: torch.Tensor) -> list[list[float]]:
    return z.detach().to(torch.float64).tolist()


# --------------------------------------------------------------------------- references


def ref_barlow_loops(z1, z2, lambd, scale, normalize, symmetric) -> tuple[float, float, float]:
    """Barlow Twins per element: returns (loss, invariance, redundancy)."""
    a, b = as_lists(z1), as_lists(z2)
    n, d = len(a), len(a[0])

    def standardise(z):
        if normalize == "none":
            return z
        out = [[0.0] * d for _ in range(n)]
        for k in range(d):
            mean = 0.0
            for r in range(n):
                mean += z[r][k]
            mean /= n
            var = 0.0
            for r in range(n):
                var += (z[r][k] - mean) ** 2
            var /= n
            for r in range(n):
                out[r][k] = (z[r][k] - mean) / math.sqrt(var + 1e-5)
        return out

    a, b = standardise(a), standardise(b)
    c = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(d):
            acc = 0.0
            for r in range(n):
                acc += a[r][i] * b[r][j]
            c[i][j] = acc / n
    if symmetric:
        c = [[(c[i][j] + c[j][i]) / 2 for j in range(d)] for i in range(d)]
    on_diag = 0.0
    off_diag = 0.0
    for i in range(d):
        for j in range(d):
            if i == j:
                on_diag += (1.0 - c[i][i]) ** 2
            else:
                off_diag += c[i][j] ** 2
    inv, red = scale * on_diag, scale * lambd * off_diag
    return inv + red, inv, red


def ref_barlow_torch(z1, z2, lambd, scale, normalize, symmetric) -> tuple[float, float, float]:
    """Barlow Twins via F.batch_norm, einsum and a Frobenius-norm split (for large D)."""
    z1, z2 = z1.detach().double(), z2.detach().double()
    if normalize == "batchnorm":
        z1 = F.batch_norm(z1, None, None, training=True, eps=1e-5)
        z2 = F.batch_norm(z2, None, None, training=True, eps=1e-5)
    c = torch.einsum("ni,nj->ij", z1, z2) / z1.shape[0]
    if symmetric:
        c = 0.5 * (c + c.transpose(0, 1))
    eye = torch.eye(c.shape[0], dtype=torch.float64)
    on_diag = torch.linalg.matrix_norm(eye * (c - eye)) ** 2
    off_diag = torch.linalg.matrix_norm((1 - eye) * c) ** 2
    inv, red = scale * on_diag.item(), scale * lambd * off_diag.item()
    return inv + red, inv, red


def ref_ntxent_loops(z1, z2, temperature, normalize=True) -> tuple[float, float, float]:
    """NT-Xent per element: returns (loss, alignment, uniformity); on the raw embeddings
    (dot-product similarity) when not `normalize`."""
    z = as_lists(z1) + as_lists(z2)
    m, n = len(z), len(z) // 2
    unit = []
    for row in z:
        norm = math.sqrt(sum(x * x for x in row)) if normalize else 1.0
        unit.append([x / norm for x in row])
    sim = [[0.0] * m for _ in range(m)]
    for i in range(m):
        for j in range(m):
            sim[i][j] = sum(p * q for p, q in zip(unit[i], unit[j])) / temperature
    align, unif = 0.0, 0.0
    for i in range(m):
        pos = i + n if i < n else i - n
        others = [sim[i][j] for j in range(m) if j != i]
        top = max(others)
        lse = top + math.log(sum(math.exp(s - top) for s in others))
        align += -sim[i][pos]
        unif += lse
    align, unif = align / m, unif / m
    return align + unif, align, unif


def ref_ntxent_cross_entropy(z1, z2, temperature) -> float:
    """NT-Xent as F.cross_entropy on the 2N x 2N logits with the self-similarities masked."""
    n = z1.shape[0]
    z = torch.cat([z1, z2]).detach().double()
    z = z / z.norm(dim=1, keepdim=True)
    logits = (z @ z.T) / temperature
    logits[torch.arange(2 * n), torch.arange(2 * n)] = float("-inf")
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets).item()


def ref_vicreg_loops(z1, z2, sim_coeff, std_coeff, cov_coeff, eps) -> tuple[float, ...]:
    """VICReg per element: returns (loss, invariance, variance, covariance)."""
    a, b = as_lists(z1), as_lists(z2)
    n, d = len(a), len(a[0])
    mse = 0.0
    for r in range(n):
        for k in range(d):
            mse += (a[r][k] - b[r][k]) ** 2
    mse /= n * d

    def var_and_cov_terms(z):
        means = [sum(z[r][k] for r in range(n)) / n for k in range(d)]
        zc = [[z[r][k] - means[k] for k in range(d)] for r in range(n)]
        hinge = 0.0
        for k in range(d):
            var = sum(zc[r][k] ** 2 for r in range(n)) / (n - 1)
            hinge += max(0.0, 1.0 - math.sqrt(var + eps))
        cov_sq = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov_sq += (sum(zc[r][i] * zc[r][j] for r in range(n)) / (n - 1)) ** 2
        return hinge / d, cov_sq / d

    v1, c1 = var_and_cov_terms(a)
    v2, c2 = var_and_cov_terms(b)
    inv = sim_coeff * mse
    var = std_coeff * (v1 + v2) / 2
    cov = cov_coeff * (c1 + c2)
    return inv + var + cov, inv, var, cov


def ref_vicreg_torch(z1, z2, sim_coeff, std_coeff, cov_coeff, eps) -> tuple[float, ...]:
    """VICReg via torch.cov (unbiased) for large D."""
    z1, z2 = z1.detach().double(), z2.detach().double()
    d = z1.shape[1]
    inv = sim_coeff * ((z1 - z2) ** 2).mean().item()
    var, cov = 0.0, 0.0
    for z in (z1, z2):
        c = torch.cov(z.T)
        hinge = torch.clamp(1 - torch.sqrt(torch.diag(c) + eps), min=0)
        var += std_coeff * hinge.mean().item() / 2
        cov += cov_coeff * ((c**2).sum() - (torch.diag(c) ** 2).sum()).item() / d
    return inv + var + cov, inv, var, cov


def check_output(
    out: LossOutput, expected: tuple[float, ...], names: tuple[str, ...], rtol=1e-10, atol=1e-12
):
    assert isinstance(out, LossOutput)
    assert out.loss.shape == ()
    assert list(out.terms) == list(names)
    assert out.loss.item() == pytest.approx(expected[0], rel=rtol, abs=atol)
    for name, value in zip(names, expected[1:]):
        assert out.terms[name].item() == pytest.approx(value, rel=rtol, abs=atol), name


# --------------------------------------------------------------------------- Barlow Twins


@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("normalize,symmetric", BT_MODES)
@pytest.mark.parametrize("lambd,scale", BT_COEFFS)
def test_barlow_twins_matches_loop_reference(shape, normalize, symmetric, lambd, scale):
    z1, z2 = views(*shape, seed=1)
    loss = BarlowTwinsLoss(lambd=lambd, scale=scale, normalize=normalize, symmetric=symmetric)
    out = loss(z1, z2)
    expected = ref_barlow_loops(z1, z2, lambd, scale, normalize, symmetric)
    check_output(out, expected, ("invariance", "redundancy"))


@pytest.mark.parametrize("shape", LARGE_SHAPES + SMALL_SHAPES[-2:])
@pytest.mark.parametrize("normalize,symmetric", BT_MODES)
def test_barlow_twins_matches_torch_reference(shape, normalize, symmetric):
    z1, z2 = views(*shape, seed=2)
    out = BarlowTwinsLoss(lambd=0.01, scale=0.5, normalize=normalize, symmetric=symmetric)(z1, z2)
    expected = ref_barlow_torch(z1, z2, 0.01, 0.5, normalize, symmetric)
    check_output(out, expected, ("invariance", "redundancy"), rtol=1e-9)


def test_barlow_twins_default_is_official_setting():
    loss = BarlowTwinsLoss()
    settings = (loss.lambd, loss.scale, loss.normalize, loss.symmetric)
    assert settings == (0.0051, 1.0, "batchnorm", False)


@pytest.mark.parametrize("shape", SMALL_SHAPES + [(8, 256)])
def test_simplified_barlow_twins_is_frobenius_distance_to_identity(shape):
    z1, z2 = views(*shape, seed=3)
    n, d = shape
    c = (z1.T @ z2 + z2.T @ z1) / (2 * n)
    identity = torch.eye(d, dtype=torch.float64)
    expected = (torch.linalg.matrix_norm(c - identity, ord="fro") ** 2).item()
    out = BarlowTwinsLoss(lambd=1.0, normalize="none", symmetric=True)(z1, z2)
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("symmetric", [False, True])
def test_barlow_twins_batchnorm_invariant_to_per_dimension_affine_map(symmetric):
    z1, z2 = views(16, 8, seed=4)
    g = torch.Generator().manual_seed(5)
    a = torch.rand(8, generator=g, dtype=torch.float64) * 3.5 + 0.5  # positive scales in [0.5, 4)
    b = torch.randn(8, generator=g, dtype=torch.float64) * 10
    loss = BarlowTwinsLoss(symmetric=symmetric)
    base = loss(z1, z2).loss.item()
    # The eps of 1e-5 under the square root makes the invariance hold only up to ~1e-5.
    assert loss(z1 * a + b, z2).loss.item() == pytest.approx(base, rel=1e-4)
    assert loss(z1, z2 * a + b).loss.item() == pytest.approx(base, rel=1e-4)
    # Without standardisation the same map changes the loss.
    raw = BarlowTwinsLoss(normalize="none", symmetric=symmetric)
    assert raw(z1 * a + b, z2).loss.item() != pytest.approx(raw(z1, z2).loss.item(), rel=1e-2)


# --------------------------------------------------------------------------- NT-Xent


@pytest.mark.parametrize("shape", SMALL_SHAPES + [(8, 256)])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_ntxent_matches_loop_reference(shape, temperature):
    z1, z2 = views(*shape, seed=6)
    out = NTXentLoss(temperature)(z1, z2)
    check_output(out, ref_ntxent_loops(z1, z2, temperature), ("alignment", "uniformity"))


@pytest.mark.parametrize("shape", SMALL_SHAPES + LARGE_SHAPES)
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_ntxent_matches_masked_cross_entropy(shape, temperature):
    z1, z2 = views(*shape, seed=7)
    out = NTXentLoss(temperature)(z1, z2)
    expected = ref_ntxent_cross_entropy(z1, z2, temperature)
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("temperature", [0.1, 2.0])
def test_ntxent_on_raw_embeddings_matches_loop_reference(shape, temperature):
    z1, z2 = views(*shape, seed=6)
    out = NTXentLoss(temperature, normalize=False)(z1, z2)
    check_output(out, ref_ntxent_loops(z1, z2, temperature, normalize=False), ("alignment", "uniformity"))


def test_ntxent_on_raw_embeddings_near_zero_is_its_second_order_expansion():
    """normalize=False at small embeddings. (1) Exactly: L = log(2N − 1) + mean_i(−s_ip + m_i
    + v_i/2) + O(s³), with m_i, v_i the mean and variance of s_ik over k ≠ i (the Taylor
    series of the log-sum-exp): s scales as the square of the embeddings, so the remainder
    falls as their sixth power.
    (2) For large N, the class docstring's form log(2N − 1) − tr(C̄)/τ + tr(ΣS)/(2τ²), with
    C̄ of the embeddings centred by their mean over both views (the mean cancels between the
    positive and the average negative). (3) The spectrum view's C is C̄/τ, each view centred
    by its own mean."""
    tau = 0.3
    loss = NTXentLoss(tau, normalize=False)

    def taylor(a, b):
        z = torch.cat([a, b])
        m = len(z)
        s = z @ z.T / tau
        others = ~torch.eye(m, dtype=torch.bool)
        rows = s[others].view(m, m - 1)
        pos = s[torch.arange(m), (torch.arange(m) + m // 2) % m]
        return math.log(m - 1) + (-pos + rows.mean(1) + rows.var(1, unbiased=False) / 2).mean()

    def centred(a, b):
        z, n = torch.cat([a, b]), len(a)
        zc, za, zb = z - z.mean(0), a - z.mean(0), b - z.mean(0)  # both views centred by the mean of all 2N
        c = (za.T @ zb + zb.T @ za) / (2 * n)
        return math.log(2 * n - 1) - torch.trace(c) / tau + torch.trace(zc.T @ zc @ z.T @ z) / (2 * n) ** 2 / (2 * tau ** 2)

    z1, z2 = views(64, 8, seed=11)
    rest = [abs(loss(e * z1, e * z2).loss - taylor(e * z1, e * z2)).item() for e in (1e-2, 5e-3)]
    assert 50 < rest[0] / rest[1] < 80  # O(s³) = O(e⁶): halving the scale divides it by ≈ 64
    big1, big2 = views(4096, 4, seed=12)
    big1 = big1 + 0.5  # a mean that the centring must remove
    big2 = big2 + 0.5
    e, log_m = 0.01, math.log(2 * 4096 - 1)
    exact, form = loss(e * big1, e * big2).loss - log_m, centred(e * big1, e * big2) - log_m
    assert form.item() == pytest.approx(exact.item(), rel=2e-3)
    v1, v2 = loss.spectrum_view(z1), loss.spectrum_view(z2)
    za, zb = z1 - z1.mean(0), z2 - z2.mean(0)
    assert torch.allclose((v1.T @ v2 + v2.T @ v1) / 128, (za.T @ zb + zb.T @ za) / (128 * tau))


def test_ntxent_single_pair_is_zero():
    # With N = 1 each anchor's only other embedding is its positive: log(1) = 0.
    z1, z2 = views(1, 4, seed=8)
    assert NTXentLoss()(z1, z2).loss.item() == pytest.approx(0.0, abs=1e-12)


def test_ntxent_invariant_to_positive_per_sample_rescaling():
    z1, z2 = views(8, 16, seed=9)
    g = torch.Generator().manual_seed(10)
    c1 = torch.rand(8, 1, generator=g, dtype=torch.float64) * 20 + 0.05
    c2 = torch.rand(8, 1, generator=g, dtype=torch.float64) * 20 + 0.05
    loss = NTXentLoss(0.2)
    base = loss(z1, z2)
    scaled = loss(z1 * c1, z2 * c2)
    assert scaled.loss.item() == pytest.approx(base.loss.item(), rel=1e-12)
    for name in base.terms:
        assert scaled.terms[name].item() == pytest.approx(base.terms[name].item(), rel=1e-12)


# --------------------------------------------------------------------------- VICReg


VICREG_COEFFS = [(25.0, 25.0, 1.0, 1e-4), (1.0, 3.0, 0.5, 1e-2)]


@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("coeffs", VICREG_COEFFS)
def test_vicreg_matches_loop_reference(shape, coeffs):
    z1, z2 = views(*shape, seed=11)
    out = VICRegLoss(*coeffs)(z1, z2)
    check_output(out, ref_vicreg_loops(z1, z2, *coeffs), ("invariance", "variance", "covariance"))


@pytest.mark.parametrize("shape", LARGE_SHAPES + SMALL_SHAPES[-2:])
def test_vicreg_matches_torch_reference(shape):
    z1, z2 = views(*shape, seed=12)
    coeffs = VICREG_COEFFS[1]
    out = VICRegLoss(*coeffs)(z1, z2)
    expected = ref_vicreg_torch(z1, z2, *coeffs)
    check_output(out, expected, ("invariance", "variance", "covariance"), rtol=1e-9)


def test_vicreg_variance_hinge_is_active_on_some_dimensions_only():
    # Guards the references above: the test views must exercise both sides of the hinge.
    z1, _ = views(16, 8, seed=11)
    std = z1.std(0)
    assert (std < 1).any() and (std > 1).any()


# --------------------------------------------------------------------------- shared


def all_losses() -> list[torch.nn.Module]:
    """Every option of configs/loss/ (a new file is covered with no edit here), and
    non-default settings of Barlow Twins' four modes, NT-Xent and VICReg."""
    options = sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "loss").glob("*.yaml"))
    return [
        *(instantiate(compose_config(f"loss={name}").loss) for name in options),
        *(BarlowTwinsLoss(0.3, 2.0, normalize=nz, symmetric=sym) for nz, sym in BT_MODES),
        NTXentLoss(0.3),
        VICRegLoss(2.0, 3.0, 0.7),
    ]


LOSSES = all_losses()


def call(loss: torch.nn.Module, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
    """loss(z1, z2, **extra): a loss written for a method with extra inputs (BYOL's target
    projections t1, t2) gets, for each, a fixed seeded tensor of z1's shape and dtype."""
    names = [p.name for p in inspect.signature(loss.forward).parameters.values() if p.kind == p.KEYWORD_ONLY]
    return loss(z1, z2, **{name: torch.randn(z1.shape, generator=torch.Generator().manual_seed(i),
                                             dtype=torch.float64).to(z1.dtype) for i, name in enumerate(names)})


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_terms_sum_to_loss(loss, dtype):
    z1, z2 = views(9, 6, seed=13, dtype=dtype)
    out = call(loss, z1, z2)
    assert out.loss.dtype == dtype
    atol = 1e-6 if dtype == torch.float32 else 1e-14
    assert torch.allclose(sum(out.terms.values()), out.loss, rtol=0, atol=atol)


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_float32_agrees_with_float64(loss):
    z1, z2 = views(9, 6, seed=14)
    out64 = call(loss, z1, z2)
    out32 = call(loss, z1.float(), z2.float())
    assert out32.loss.item() == pytest.approx(out64.loss.item(), rel=1e-5)


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
@pytest.mark.parametrize("shape", [(4, 3), (3, 1)])
def test_gradcheck(loss, shape):
    z1, z2 = views(*shape, seed=15)
    z1.requires_grad_(True)
    z2.requires_grad_(True)

    def fn(a, b):
        out = call(loss, a, b)
        return (out.loss, *out.terms.values())

    assert torch.autograd.gradcheck(fn, (z1, z2))


# --------------------------------------------------------------------------- errors


def re_shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
@pytest.mark.parametrize(
    "shape1,shape2",
    [((4, 3), (4, 5)), ((4, 3), (5, 3)), ((4,), (4,)), ((2, 4, 3), (2, 4, 3))],
)
def test_rejects_inputs_that_are_not_matching_2d(loss, shape1, shape2):
    z1, z2 = torch.zeros(shape1), torch.zeros(shape2)
    message = (
        rf"z1 has shape {re_shape(shape1)} and z2 has shape {re_shape(shape2)}, "
        r"but the losses expect \(N, D\) embeddings of two views of the same N samples\."
    )
    with pytest.raises(ValueError, match=message):
        call(loss, z1, z2)


@pytest.mark.parametrize("normalize", ["layernorm", "BatchNorm", ""])
def test_barlow_twins_rejects_unknown_normalize(normalize):
    with pytest.raises(ValueError, match=rf"normalize.*'batchnorm', 'none'.*got '{normalize}'"):
        BarlowTwinsLoss(normalize=normalize)


def test_vicreg_spectrum_view_is_what_its_variance_and_covariance_terms_see():
    """VICReg's variance and covariance terms see the views centred over the batch, and a
    common shift of both views changes none of its terms (the invariance term sees only
    z1 − z2): its spectrum view is each view centred, so `xcorr` has no part from the
    mean. The covariance term, recomputed from the views (cov = vᵀv/(N − 1)), is the loss's."""
    z1, z2 = views(64, 8, seed=21)
    loss = VICRegLoss()
    v1, v2 = loss.spectrum_view(z1), loss.spectrum_view(z2)
    off = ~torch.eye(8, dtype=torch.bool)
    cov_term = sum((v.T @ v / 63)[off].square().sum() / 8 for v in (v1, v2))
    assert loss(z1, z2).terms["covariance"].item() == pytest.approx(cov_term.item(), rel=1e-12)
    shift = torch.linspace(-3, 5, 8, dtype=torch.float64)
    shifted = loss(z1 + shift, z2 + shift)
    for name, value in loss(z1, z2).terms.items():
        assert shifted.terms[name].item() == pytest.approx(value.item(), rel=1e-9, abs=1e-12), name
    assert torch.allclose(loss.spectrum_view(z1 + shift), v1, atol=1e-12)
    assert torch.allclose(v1.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-12)


def test_vicreg_rejects_a_single_sample():
    z1, z2 = views(1, 4, seed=16)
    with pytest.raises(ValueError, match=r"VICRegLoss needs at least 2 samples.*got N=1"):
        VICRegLoss()(z1, z2)


@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan")])
def test_ntxent_rejects_non_positive_temperature(temperature):
    with pytest.raises(ValueError, match=r"temperature must be > 0"):
        NTXentLoss(temperature)
