"""BYOL: the loss against the official definition computed element by element, the
target's moving average and τ schedule, and training end to end with exact resume."""

import json
import math

import numpy as np
import pytest
import torch

from sslkit.errors import ConfigError
from sslkit.methods import BYOL, BYOLLoss
from sslkit.models import MLP, Projector
from sslkit.report import stepwise_figure
from sslkit.spectrum import load
from sslkit.train import train


def official_regression_loss(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """byol/utils/helpers.py: l2_normalize(x) = x·rsqrt(max(Σx², 1e-12)), then
    Σ_d (x̂_d − ŷ_d)², one value per sample, written out row by row."""
    out = []
    for a, b in zip(x, y):
        a = a / math.sqrt(max(sum(v * v for v in a), 1e-12))
        b = b / math.sqrt(max(sum(v * v for v in b), 1e-12))
        out.append(sum((u - v) ** 2 for u, v in zip(a, b)))
    return np.array(out)


def test_loss_is_the_official_symmetrised_regression_loss():
    torch.manual_seed(0)
    p1, p2, t1, t2 = (torch.randn(16, 8, dtype=torch.float64) for _ in range(4))
    p1[3] = 0.0  # a zero prediction: the official normalisation's floor applies
    p1.requires_grad_(True)
    t2.requires_grad_(True)
    out = BYOLLoss()(p1, p2, t1=t1, t2=t2)
    a, b, c, d = (x.detach().numpy() for x in (p1, p2, t1, t2))
    # byol_experiment.py: mean(regression_loss(p1, sg(t2)) + regression_loss(p2, sg(t1)))
    expected = np.mean(official_regression_loss(a, d) + official_regression_loss(b, c))
    np.testing.assert_allclose(out.loss.item(), expected, rtol=1e-12)
    np.testing.assert_allclose(out.terms["view1"].item(), official_regression_loss(a, d).mean(), rtol=1e-12)
    # away from zero it is 2 − 2 cos
    cos = torch.nn.functional.cosine_similarity(p2, t1, dim=1)
    torch.testing.assert_close(out.terms["view2"], (2 - 2 * cos).mean())
    out.loss.backward()
    assert t2.grad is None, "the targets take no gradient"


def test_tau_follows_the_cosine_schedule_and_the_target_its_moving_average():
    torch.manual_seed(0)
    net = BYOL(MLP((6,), width=5, depth=1, out_dim=5), Projector(5, [7], 4), hidden_dims=[9], tau=0.99)
    assert net.predictor[0].in_features == 4 and net.predictor[-1].out_features == 4
    # τ_0 = τ₀, τ_{K/2} = (1 + τ₀)/2, τ_K = 1
    assert math.isclose(net.tau_at(0, 100), 0.99)
    assert math.isclose(net.tau_at(50, 100), 0.995)
    assert math.isclose(net.tau_at(100, 100), 1.0)
    with torch.no_grad():
        for p in [*net.backbone.parameters(), *net.projector.parameters()]:
            p.add_(torch.randn_like(p))
    online = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith(("target.", "predictor."))}
    before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("target.")}
    target = [p.clone() for p in net.target.parameters()]
    net.after_step(30, 100, torch.tensor(False))  # a skipped step leaves the target as it is
    assert all(torch.equal(p, q) for p, q in zip(net.target.parameters(), target))
    net.after_step(30, 100, torch.tensor(True))
    tau = 1 - 0.01 * (math.cos(math.pi * 0.3) + 1) / 2
    after = net.state_dict()
    params = {n for n, _ in net.target.named_parameters()}
    for key, old in before.items():
        name = key.removeprefix("target.")
        source = ("backbone." if name.startswith("0.") else "projector.") + name[2:]
        if name in params:
            torch.testing.assert_close(after[key], tau * old + (1 - tau) * online[source])
        else:  # BatchNorm statistics: the target's own
            assert torch.equal(after[key], old), key
    assert not any(p.requires_grad for p in net.target.parameters())


def test_byol_trains_on_digits_records_spectra_and_resumes_exactly(config, tmp_path):
    """method=byol with augment=byol on digits (one channel: mean/std overridden). Resuming
    from the step-4 checkpoint gives the uninterrupted run's weights, target included: the
    target is part of the checkpoint, not rebuilt from the online network."""
    base = ("method=byol", "augment=byol", "augment.mean=[0.5]", "augment.std=[0.25]", "backbone=mlp",
            "backbone.width=32", "projector=mlp", "projector.hidden_dims=[32]", "projector.out_dim=16",
            "method.hidden_dims=[32]", "method.tau=0.9", "data.batch_size=64", "trainer.max_steps=8",
            "trainer.checkpoint_every=4")
    train(config(*base), tmp_path / "full")
    ckpt = tmp_path / "full" / "checkpoints" / "step_00000004.pt"
    train(config(*base, f"trainer.resume={ckpt}"), tmp_path / "resumed")
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"view1", "view2", "cov/rankme", "xcorr/learned"} <= set(rows[0])
    assert rows[-1]["loss"] < rows[0]["loss"]
    full, resumed = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["model"]
                     for d in ("full", "resumed"))
    assert any(k.startswith("target.") for k in full)
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    assert not torch.equal(full["target.0.net.0.weight"], full["backbone.net.0.weight"])
    spectra = load(tmp_path / "full")
    assert list(spectra["step"]) == list(range(8)) and spectra["cov"].shape == (8, 16)
    assert stepwise_figure(tmp_path / "full").exists()


def test_byol_needs_its_loss(config, tmp_path):
    with pytest.raises(ConfigError, match=r"BYOL gives the loss \(z1, z2, t1, t2\), but the loss VICRegLoss"):
        train(config("method=byol", "loss=vicreg", "trainer.max_steps=1"), tmp_path)
    with pytest.raises(ConfigError, match=r"Siamese gives the loss \(z1, z2\), but the loss BYOLLoss takes"):
        train(config("loss=byol", "trainer.max_steps=1"), tmp_path / "b")


def test_method_byol_alone_trains_byol_with_its_loss_on_the_default_experiment(config, tmp_path):
    """`sslkit-train method=byol`: the loss that configs/method/byol.yaml picks wins over the
    default experiment's (barlow_twins_simplified); a loss= on the command line still wins
    over both (test_byol_needs_its_loss)."""
    cfg = config("experiment=stepwise_digits", "method=byol", "trainer.max_steps=3")
    assert cfg.method._target_ == "sslkit.methods.BYOL" and cfg.loss._target_ == "sslkit.methods.BYOLLoss"
    assert cfg.backbone.init_scale == 1e-3  # the rest is the default experiment's
    train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and {"view1", "view2"} <= set(rows[0])
    assert all(0 <= r["loss"] <= 8 for r in rows)  # 2 − 2 cos per view, two views
    assert config("experiment=stepwise_digits", "method=byol", "loss=simclr").loss._target_.endswith("NTXentLoss")
