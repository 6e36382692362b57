"""Tests for sslkit.optim: LARS against the official Barlow Twins update rule, the
learning-rate schedules against their closed forms, and build_optimizer's parameter groups
for each optimizer config in configs/optim/."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sslkit.models import Projector
from sslkit.optim import LARS, Schedule, build_optimizer, guarded_step, lr_factor

from conftest import compose_config

# -------------------------------------------------------------------------------- LARS


def exclude_bias_and_norm(p: torch.Tensor) -> bool:
    return p.ndim == 1


class ReferenceLARS:
    """The LARS of facebookresearch/barlowtwins main.py, written out on plain tensors.

    for p: dp = grad; unless weight_decay_filter(p): dp += wd·p;
           unless lars_adaptation_filter(p):
               q = η‖p‖/‖dp‖ if ‖p‖ > 0 and ‖dp‖ > 0 else 1;  dp *= q
           mu = momentum·mu + dp;  p -= lr·mu
    """

    def __init__(
        self, params, lr, weight_decay, momentum, eta, weight_decay_filter=None, lars_adaptation_filter=None
    ):
        self.params = params
        self.lr, self.wd, self.momentum, self.eta = lr, weight_decay, momentum, eta
        self.wd_filter, self.lars_filter = weight_decay_filter, lars_adaptation_filter
        self.mu = [torch.zeros_like(p) for p in params]

    def step(self, grads):
        for i, (p, dp) in enumerate(zip(self.params, grads)):
            if self.wd_filter is None or not self.wd_filter(p):
                dp = dp + self.wd * p
            if self.lars_filter is None or not self.lars_filter(p):
                param_norm = math.sqrt(float((p * p).sum()))
                update_norm = math.sqrt(float((dp * dp).sum()))
                q = self.eta * param_norm / update_norm if param_norm > 0 and update_norm > 0 else 1.0
                dp = dp * q
            self.mu[i] = self.momentum * self.mu[i] + dp
            self.params[i] = p - self.lr * self.mu[i]


def make_params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(6, 5, generator=g, dtype=torch.float64),
        torch.randn(3, 2, 2, generator=g, dtype=torch.float64) * 0.1,
        torch.zeros(4, 3, dtype=torch.float64),  # ‖p‖ = 0 at the first step: trust ratio 1
        torch.randn(5, generator=g, dtype=torch.float64),  # 1-d: excluded
        torch.randn(7, generator=g, dtype=torch.float64) + 2,  # 1-d: excluded
    ]


@pytest.mark.parametrize(
    "lr, wd, momentum, eta", [(0.3, 1e-4, 0.9, 0.02), (0.05, 0.1, 0.5, 0.001), (1.0, 0.0, 0.0, 0.02)]
)
def test_lars_matches_official_barlow_twins_rule(lr, wd, momentum, eta):
    init = make_params(0)
    ours = [nn.Parameter(p.clone()) for p in init]
    opt = LARS(
        [
            {"params": [p for p in ours if p.ndim > 1]},
            {"params": [p for p in ours if p.ndim <= 1], "exclude": True},
        ],
        lr=lr, weight_decay=wd, momentum=momentum, eta=eta,
    )
    ref = ReferenceLARS(
        [p.clone() for p in init], lr, wd, momentum, eta,
        weight_decay_filter=exclude_bias_and_norm, lars_adaptation_filter=exclude_bias_and_norm,
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in init]
        for p, gr in zip(ours, grads):
            p.grad = gr.clone()
        opt.step()
        ref.step(grads)
        for p, r in zip(ours, ref.params):
            torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)
    # the run moved the parameters: the comparison is not trivially of unchanged tensors
    assert all(not torch.equal(p.detach(), q) for p, q in zip(ours, init))


def test_lars_excluded_group_is_plain_momentum_sgd():
    """An `exclude` group ignores weight decay and the trust ratio, even with a non-zero
    weight_decay in the group: mu ← m·mu + g; p ← p − lr·mu."""
    lr, momentum = 0.1, 0.9
    bias = nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    opt = LARS(
        [{"params": [bias], "exclude": True}], lr=lr, weight_decay=0.5, momentum=momentum, eta=0.02
    )
    assert opt.param_groups[0]["weight_decay"] == 0.5
    grads = [torch.tensor([0.5, 0.0, -1.0]), torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, -2.0, 0.5])]
    expected, mu = [1.0, -2.0, 3.0], [0.0, 0.0, 0.0]
    for gr in grads:
        bias.grad = gr.double()
        opt.step()
        mu = [momentum * m + float(gi) for m, gi in zip(mu, gr)]
        expected = [e - lr * m for e, m in zip(expected, mu)]
        torch.testing.assert_close(
            bias.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-13, atol=1e-13
        )


def test_lars_trust_ratio_normalises_the_step():
    """Not excluded, momentum 0: ‖Δp‖ = lr·η·‖p‖ whatever the gradient's scale."""
    w = nn.Parameter(torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    before = w.detach().clone()
    opt = LARS([w], lr=0.5, weight_decay=0.0, momentum=0.0, eta=0.02)
    w.grad = 1e6 * torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    opt.step()
    step = torch.linalg.vector_norm(w.detach() - before).item()
    assert step == pytest.approx(0.5 * 0.02 * torch.linalg.vector_norm(before).item(), rel=1e-12)


def test_lars_skips_parameters_without_gradient():
    a, b = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 2))
    opt = LARS([a, b], lr=0.1)
    a.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2, 2))
    assert not torch.equal(a.detach(), torch.ones(2, 2))


# ---------------------------------------------------------------------------- schedules


def closed_form(schedule: str, t: int, warmup: int, total: int) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t / total))
    if t < warmup:
        return (t + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


@pytest.mark.parametrize("t", [0, 1, 17, 50, 99, 100, 250])
def test_constant_schedule_is_one(t):
    assert lr_factor(t, Schedule.constant, 0, 100) == 1.0
    assert lr_factor(t, Schedule.constant, 10, 100) == 1.0


def test_cosine_schedule_landmarks_and_closed_form():
    T = 100
    assert lr_factor(0, Schedule.cosine, 0, T) == pytest.approx(1.0, abs=1e-12)
    assert lr_factor(T // 2, Schedule.cosine, 0, T) == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(T, Schedule.cosine, 0, T) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(T // 4, Schedule.cosine, 0, T) == pytest.approx((1 + math.sqrt(0.5)) / 2, abs=1e-12)
    for t in range(T + 1):
        assert lr_factor(t, Schedule.cosine, 0, T) == pytest.approx(closed_form("cosine", t, 0, T), abs=1e-12)
    # decreasing
    values = [lr_factor(t, Schedule.cosine, 0, T) for t in range(T + 1)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_warmup_cosine_schedule():
    W, T = 10, 110
    for t in range(W):
        assert lr_factor(t, Schedule.warmup_cosine, W, T) == pytest.approx((t + 1) / W, abs=1e-12)
    assert lr_factor(W - 1, Schedule.warmup_cosine, W, T) == pytest.approx(1.0)
    assert lr_factor(W, Schedule.warmup_cosine, W, T) == pytest.approx(1.0, abs=1e-12)
    assert lr_factor(W + 50, Schedule.warmup_cosine, W, T) == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(T, Schedule.warmup_cosine, W, T) == pytest.approx(0.0, abs=1e-12)
    for t in range(T + 1):
        assert lr_factor(t, Schedule.warmup_cosine, W, T) == pytest.approx(
            closed_form("warmup_cosine", t, W, T), abs=1e-12
        )


# ---------------------------------------------------------------------- build_optimizer


def projector() -> Projector:
    torch.manual_seed(0)
    return Projector(8, [16, 12], 4)  # Linear-BN-ReLU-Linear-BN-ReLU-Linear: 3 matrices, 4 vectors


OPTIM_CASES = {
    "sgd": (["optim=sgd", "optim.weight_decay=0.05", "optim.schedule=cosine"], torch.optim.SGD),
    "lars": (["optim=lars"], LARS),
    "adamw": (
        ["optim=adamw", "optim.lr=0.01", "optim.weight_decay=0.5", "optim.schedule=warmup_cosine",
         "optim.warmup_steps=20"],
        torch.optim.AdamW,
    ),
}


@pytest.fixture(scope="module", params=list(OPTIM_CASES))
def optim_case(request):
    overrides, cls = OPTIM_CASES[request.param]
    return request.param, compose_config(*overrides).optim, cls


def test_build_optimizer_groups(optim_case):
    name, cfg, cls = optim_case
    model = projector()
    opt, _ = build_optimizer(cfg, model, total_steps=200)
    assert type(opt) is cls
    matrices = [p for p in model.parameters() if p.ndim > 1]
    vectors = [p for p in model.parameters() if p.ndim <= 1]
    assert len(matrices) == 3 and len(vectors) == 4
    assert len(opt.param_groups) == 2
    g0, g1 = opt.param_groups
    assert {id(p) for p in g0["params"]} == {id(p) for p in matrices}
    assert {id(p) for p in g1["params"]} == {id(p) for p in vectors}
    assert g0["weight_decay"] == pytest.approx(cfg.weight_decay) and cfg.weight_decay > 0
    assert g1["weight_decay"] == 0.0
    for g in opt.param_groups:
        assert g["initial_lr"] == pytest.approx(cfg.lr)
    if name == "lars":
        assert g1["exclude"] is True and g0["exclude"] is False
        assert g0["momentum"] == cfg.momentum and g0["eta"] == cfg.eta
    if name == "adamw":
        assert tuple(g0["betas"]) == (0.9, 0.999)


def test_build_optimizer_decays_only_matrices(optim_case):
    """One step with all gradients zero: only weight decay acts. Matrices shrink by a known
    factor; 1-d parameters (BatchNorm weight and bias) must not move."""
    name, cfg, _ = optim_case
    model = projector()
    opt, _ = build_optimizer(cfg, model, total_steps=200)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    lr = cfg.lr * closed_form(cfg.schedule.value, 0, cfg.warmup_steps, 200)
    # SGD: p − lr·wd·p; AdamW (decoupled): p·(1 − lr·wd);
    # LARS: d = wd·p, rescaled to norm η‖p‖, so p − lr·η·p
    shrink = 1 - lr * (cfg.eta if name == "lars" else cfg.weight_decay)
    assert shrink < 1 - 1e-5
    for n, p in model.named_parameters():
        if p.ndim > 1:
            torch.testing.assert_close(p.detach(), before[n] * shrink, rtol=1e-6, atol=1e-9)
        else:
            assert torch.equal(p.detach(), before[n]), n


def test_build_optimizer_schedule(optim_case):
    _, cfg, _ = optim_case
    total = 200
    model = projector()
    opt, sched = build_optimizer(cfg, model, total_steps=total)
    loss_input = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    for k in range(total + 1):
        expected = cfg.lr * closed_form(cfg.schedule.value, k, cfg.warmup_steps, total)
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15), k
        assert sched.get_last_lr() == pytest.approx([expected] * 2, rel=1e-9, abs=1e-15)
        if k % 50 == 0:  # a real step now and then: the optimizer runs at the scheduled lr
            opt.zero_grad()
            model(loss_input).pow(2).mean().backward()
        opt.step()
        sched.step()


# ------------------------------------------------------------------------- guarded_step


def test_guarded_step_skips_on_the_device_and_resumes_exactly(optim_case):
    """A step with finite=False leaves parameters and optimizer state as they were, also
    as the very first step (fused SGD would leave its momentum buffers uninitialised);
    the steps after it match an optimizer that never saw the skipped step."""
    name, cfg, _ = optim_case
    if name == "sgd":
        cfg = compose_config("optim=sgd", "optim.momentum=0.9", "optim.weight_decay=0.05").optim
    skipped, fresh = projector(), projector()
    opt_a, _ = build_optimizer(cfg, skipped, total_steps=200)
    opt_b, _ = build_optimizer(cfg, fresh, total_steps=200)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in skipped.parameters()]
    skipped(x).pow(2).mean().mul(float("nan")).backward()  # non-finite gradients
    guarded_step(opt_a, torch.tensor(False))
    assert all(torch.equal(p.detach(), b) for p, b in zip(skipped.parameters(), before))
    for k in range(3):
        for model, opt in ((skipped, opt_a), (fresh, opt_b)):
            opt.zero_grad()
            model(x * (k + 1)).pow(2).mean().backward()
            guarded_step(opt, torch.tensor(True))
    for p, q in zip(skipped.parameters(), fresh.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not all(torch.equal(p.detach(), b) for p, b in zip(skipped.parameters(), before))
