"""sslkit.eval: kNN against scikit-learn and a direct computation, the linear probes on
separable data, and evaluation as a pure observer of training."""

import inspect
import json
import logging
import shutil
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import KNeighborsClassifier

from conftest import write_image
from sslkit.data import digits
from sslkit.errors import ConfigError
from sslkit.eval import KNN, LinearProbe, OnlineProbe, extract, fit_linear, knn_scores, topk_accuracy
from sslkit.models import Projector, resnet
from sslkit.methods import Siamese
from sslkit.train import train


def clustered(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around random class means: continuous features, no exact ties."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return means[y] + 0.8 * torch.randn(n, dim, generator=g), y


@pytest.mark.parametrize("k", [1, 7, 20])
def test_unweighted_knn_equals_sklearn(k):
    """temperature=None: majority vote of the k nearest in cosine distance; ties between
    classes go to the lower class, as in scikit-learn."""
    bank, bank_y = clustered(400, 16, 6, seed=0)
    queries, _ = clustered(120, 16, 6, seed=1)
    scores = knn_scores(bank, bank_y, queries, k, 6, temperature=None)
    sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(bank.numpy(), bank_y.numpy())
    np.testing.assert_array_equal(scores.argmax(1).numpy(), sk.predict(queries.numpy()))
    np.testing.assert_allclose(scores / k, sk.predict_proba(queries.numpy()), atol=1e-6)


def test_weighted_knn_equals_direct_computation_and_chunking_changes_nothing():
    """Wu et al. 2018: score_c(q) = Σ_{i ∈ top-k(q), y_i = c} exp(cos(q, b_i)/T), computed
    here sample by sample in float64; the chunked version (3 queries per chunk) agrees to
    float32 rounding; the predictions equal scikit-learn's with weights exp(−d/T), d = 1 − cos."""
    bank, bank_y = clustered(300, 12, 5, seed=2)
    queries, _ = clustered(40, 12, 5, seed=3)
    k, t = 20, 0.07
    b = bank.double() / bank.double().norm(dim=1, keepdim=True)
    expected = np.zeros((len(queries), 5))
    for i, q in enumerate(queries.double()):
        sim = (b @ (q / q.norm())).numpy()
        for j in np.argsort(-sim)[:k]:
            expected[i, bank_y[j]] += np.exp(sim[j] / t)
    scores = knn_scores(bank, bank_y, queries, k, 5, temperature=t)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)
    chunked = knn_scores(bank, bank_y, queries, k, 5, temperature=t, chunk_elements=3 * len(bank))
    torch.testing.assert_close(chunked, scores, rtol=1e-5, atol=0)  # BLAS blocking: rounding only
    sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                              weights=lambda d: np.exp(-d / t)).fit(bank.numpy(), bank_y.numpy())
    np.testing.assert_array_equal(scores.argmax(1).numpy(), sk.predict(queries.numpy()))


def test_topk_accuracy_counts_ranks():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    labels = torch.tensor([1, 2, 1])  # ranks 1, 3, 2 (the tie 0.2 = 0.2 goes to class 0)
    assert topk_accuracy(scores, labels, (1, 2, 3)) == pytest.approx({1: 100 / 3, 2: 100 / 3, 3: 100.0})


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels argmax(Wx) of a random linear map, keeping the samples whose two largest
    logits differ by more than half a row norm of W: linearly separable with a margin;
    features scaled by 1e-3, as a small-initialised model's are."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(10, 32, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4 * n, 32, generator=g)  # about 44 % are kept
    logits = x @ w.T
    top2 = logits.topk(2, dim=1).values
    keep = top2[:, 0] - top2[:, 1] > 0.5 * w.norm(dim=1).mean()
    return 1e-3 * x[keep][:n], logits.argmax(1)[keep][:n]


def test_linear_probes_separate_separable_data():
    """Both fits reach ≥ 99 % on held-out samples of linearly separable 10-class data."""
    x, y = separable(3000, seed=1)
    xt, yt = separable(1000, seed=2)
    lbfgs = fit_linear(x, y, 10, weight_decay=1e-6)
    assert topk_accuracy(lbfgs.eval()(xt).detach(), yt)[1] >= 99
    online = OnlineProbe({"h": 32}, 10, total_steps=300)
    for step in range(300):
        idx = torch.randint(0, len(x), (256,), generator=torch.Generator().manual_seed(step))
        online.train_step({"h": x[idx]}, y[idx])
    assert topk_accuracy(online.scores({"h": xt})["h"], yt)[1] >= 99


def test_online_probe_scores_the_moving_average_of_its_heads():
    """θ̄₁ = θ₁, θ̄ₜ = ema·θ̄ₜ₋₁ + (1 − ema)·θₜ over the heads' weights and statistics, computed
    here from the iterates; scores are the averaged head's logits; ema = 0 scores the last
    iterate; a decay outside [0, 1) is a config error naming the key."""
    from sslkit.errors import ConfigError

    x, y = separable(512, seed=4)
    for ema in (0.0, 0.7):
        probe, average = OnlineProbe({"h": 32}, 10, 5, ema=ema), None
        for step in range(5):
            idx = torch.arange(step * 100, step * 100 + 100)
            probe.train_step({"h": x[idx]}, y[idx])
            now = {k: v.clone().double() for k, v in probe.heads["h"].state_dict().items() if v.is_floating_point()}
            average = now if average is None else {k: ema * average[k] + (1 - ema) * now[k] for k in now}
        head = LinearProbe(32, 10).double()
        head.load_state_dict(average, strict=False)
        expected = head.eval()(x.double())
        torch.testing.assert_close(probe.scores({"h": x})["h"].double(), expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(probe.scores({"h": x})["h"], probe.heads["h"].eval()(x))  # ema 0.7 ≠ last iterate
    with pytest.raises(ConfigError, match=r"eval.online_probe.ema=1.0 .*\[0, 1\)"):
        OnlineProbe({"h": 32}, 10, 5, ema=1.0)


def test_online_probe_minimises_sslkit_evals_objective():
    """On fixed features the probe converges to fit_linear's minimiser of mean cross-entropy
    + λ/2·‖W‖² (L-BFGS, the bias not penalised): the same λ gives the same classifier. Full
    batches, so SGD is exact gradient descent; λ = 10⁻², large enough to converge in 800
    steps (λ = 10⁻⁴ needs ~100 times more: the probe's docstring)."""
    x, y = separable(400, seed=5)
    x = x + 1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(6))  # not separable by a margin
    lbfgs = fit_linear(x, y, 10, weight_decay=1e-2)
    probe = OnlineProbe({"h": 32}, 10, 200, lr=0.5, weight_decay=1e-2, ema=0.0, steps_per_batch=4)
    for _ in range(200):
        probe.train_step({"h": x}, y)
    head = probe.heads["h"].linear
    xs = ((x - x.mean(0)) / x.var(0, unbiased=False).sqrt()).double()
    objective = lambda linear: (F.cross_entropy(xs @ linear.weight.double().T + linear.bias.double(), y)
                                + 1e-2 / 2 * linear.weight.double().square().sum()).item()
    assert objective(head) <= objective(lbfgs.linear) + 1e-6  # L-BFGS stops at its tolerance, 2e-7 above
    torch.testing.assert_close(head.weight, lbfgs.linear.weight, atol=1e-3, rtol=0)
    centred = lambda b: b - b.mean()  # softmax ignores a shift shared by every class's bias
    torch.testing.assert_close(centred(head.bias), centred(lbfgs.linear.bias), atol=5e-3, rtol=0)


@pytest.mark.parametrize("window, batches", [(1, 1), (200, 2), (250, 2)])
def test_online_probe_takes_steps_per_batch_sgd_steps_on_each_standardised_window(window, batches):
    """Against momentum SGD written out: for each batch of 100, the rows of it and of the
    batches before it that fit in `window` rows (window 1: the batch alone; 200 and 250: it
    and the one before, fewer at the start) standardised once by their mean and (biased) variance;
    k steps of buf ← μ·buf + ∇(CE) + λ·W (W only), θ ← θ − lr·buf; the average updated once
    per batch."""
    x, y = separable(300, seed=7)
    k, lr, mu, lam, ema = 3, 0.5, 0.9, 1e-2, 0.5
    probe = OnlineProbe({"h": 32}, 10, 3, lr=lr, momentum=mu, weight_decay=lam, ema=ema, steps_per_batch=k,
                        window=window)
    w, b = torch.zeros(10, 32, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    bw, bb, avg = torch.zeros_like(w), torch.zeros_like(b), None
    for step in range(3):
        probe.train_step({"h": x[step * 100:(step + 1) * 100]}, y[step * 100:(step + 1) * 100])
        rows = slice(max(0, step + 1 - batches) * 100, (step + 1) * 100)
        xb, yb = x[rows], y[rows]
        xs = ((xb - xb.mean(0)) / (xb.var(0, unbiased=False) + 1e-12).sqrt()).double()
        for _ in range(k):
            w_, b_ = w.clone().requires_grad_(), b.clone().requires_grad_()
            gw, gb = torch.autograd.grad(F.cross_entropy(xs @ w_.T + b_, yb), (w_, b_))
            bw, bb = mu * bw + gw + lam * w, mu * bb + gb
            w, b = w - lr * bw, b - lr * bb
        avg = w if avg is None else ema * avg + (1 - ema) * w
    torch.testing.assert_close(probe.heads["h"].linear.weight.double(), w, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probe.heads["h"].linear.bias.double(), b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probe.average.module["h"].linear.weight.double(), avg, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match=r"eval.online_probe.steps_per_batch=0 "):
        OnlineProbe({"h": 32}, 10, 5, steps_per_batch=0)
    with pytest.raises(ConfigError, match=r"eval.online_probe.window=0 "):
        OnlineProbe({"h": 32}, 10, 5, window=0)


def test_online_probe_skips_unlabelled_rows():
    """A batch labelled −1 throughout (STL-10's unlabeled images) leaves the classifier at
    its start, with no NaN; rows labelled −1 next to labelled ones change nothing but the
    standardisation's statistics."""
    x, y = separable(64, seed=3)
    probe = OnlineProbe({"h": 32}, 10, 10)
    probe.train_step({"h": x}, torch.full_like(y, -1))
    assert not probe.heads["h"].linear.weight.any() and not probe.heads["h"].linear.bias.any()
    labelled, mixed = OnlineProbe({"h": 32}, 10, 10), OnlineProbe({"h": 32}, 10, 10)
    labelled.train_step({"h": x}, y)
    mixed.train_step({"h": torch.cat([x, x])}, torch.cat([y, torch.full_like(y, -1)]))  # same statistics
    torch.testing.assert_close(mixed.heads["h"].linear.weight, labelled.heads["h"].linear.weight)


def test_digits_held_out_split_is_the_last_297(config):
    """split=test: the last 297 digits; train: the first 1500; all: 1797 with the held-out
    labels hidden (−1)."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    test, train_, all_ = (digits(batch_size=1, split=s) for s in ("test", "train", "all"))
    np.testing.assert_array_equal(test.y.numpy(), target[1500:])
    np.testing.assert_array_equal(train_.y.numpy(), target[:1500])
    assert torch.equal(all_.x, torch.cat([train_.x, test.x]))
    assert (all_.y[1500:] == -1).all() and torch.equal(all_.y[:1500], train_.y)


def test_features_in_eval_mode_leave_batchnorm_and_modes_unchanged():
    """Extraction runs BatchNorm on its running statistics: no buffer changes, and every
    module's train/eval mode is restored (a half-eval model stays half-eval)."""
    net = Siamese(resnet(in_shape=(1, 8, 8), arch="resnet18"), Projector(512, [32], 8))
    x = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    net.train()(x.float(), x.float())  # running statistics away from their initial values
    net.projector.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    out = extract(net, x, lambda t: t.float() / 255, batch_size=16, device=torch.device("cpu"), projector=True)
    assert out["backbone"].shape == (50, 512) and out["projector"].shape == (50, 8)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert [m.training for m in net.modules()] == modes
    # eval mode: each sample's features do not depend on the rest of its chunk
    single = extract(net, x[:1], lambda t: t.float() / 255, 1, torch.device("cpu"), True)
    torch.testing.assert_close(single["backbone"], out["backbone"][:1])


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def training_fields(run_dir) -> list[dict]:
    """Each row without the evaluation, the spectrum summaries and the measured speed."""
    return [{k: v for k, v in r.items() if not k.startswith("eval/") and k != "images_per_s"} for r in rows(run_dir)]


EVAL_BASE = ("loss=vicreg", "backbone=mlp", "backbone.width=32", "projector=mlp", "data.batch_size=128")


def test_evaluation_does_not_change_the_trajectory(config, tmp_path):
    """Same seed with and without eval=[online_probe,knn]: bit-identical parameters and
    BatchNorm statistics, and the same logged losses; accuracies after steps 4, 8 and the last."""
    base = (*EVAL_BASE, "trainer.max_steps=10")
    train(config(*base), tmp_path / "off")
    train(config(*base, "eval=[online_probe,knn]", "eval.every=4",
                 "eval.online_probe.features=[backbone,projector]", "eval.knn.features=[backbone,projector]"),
          tmp_path / "on")
    off, on = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True) for d in ("off", "on"))
    assert off["model"].keys() == on["model"].keys()
    assert all(torch.equal(off["model"][k], on["model"][k]) for k in off["model"])
    assert training_fields(tmp_path / "off") == training_fields(tmp_path / "on")
    evaluated = [r for r in rows(tmp_path / "on") if "eval/probe/backbone/top1" in r]
    assert [r["step"] for r in evaluated] == [3, 7, 9]
    assert {"eval/probe/projector/top5", "eval/knn20/backbone/top1", "eval/knn200/projector/top5"} <= set(evaluated[0])
    assert on["eval"]["probe"] is not None and off["eval"] is None


def test_resumed_run_continues_the_probe_exactly(config, tmp_path):
    """The probe's weights, optimizer and statistics are in the checkpoint: a run stopped
    at step 6 and resumed logs the accuracies of an uninterrupted run."""
    base = (*EVAL_BASE, "eval=[online_probe,knn]", "eval.every=3", "eval.online_probe.schedule=constant",
            "trainer.checkpoint_every=6")
    train(config(*base, "trainer.max_steps=12"), tmp_path / "whole")
    train(config(*base, "trainer.max_steps=6"), tmp_path / "split")
    train(config(*base, "trainer.max_steps=12"), tmp_path / "split")
    assert training_fields(tmp_path / "whole") == training_fields(tmp_path / "split")
    accuracy = [[{k: v for k, v in r.items() if k.startswith("eval/")} for r in rows(tmp_path / d)]
                for d in ("whole", "split")]
    assert accuracy[0] == accuracy[1] and any(accuracy[0])


def test_a_one_sample_batch_is_a_config_error_for_the_probe_only(config, tmp_path):
    """The probe standardises over the batch, which one sample cannot: a config error naming
    the key before training; kNN needs no batch statistics and runs."""
    base = ("loss=barlow_twins_simplified", "data.batch_size=1", "trainer.max_steps=2", "spectrum=off",
            "eval.every=1")  # a loss that does not standardise over the batch either
    with pytest.raises(ConfigError, match=r"data.batch_size=1 is too small for eval=online_probe.*eval=knn"):
        train(config(*base, "eval=online_probe"), tmp_path / "probe")
    assert not list((tmp_path / "probe").glob("checkpoints/*.pt"))
    train(config(*base, "eval=knn"), tmp_path / "knn")
    assert "eval/knn20/backbone/top1" in rows(tmp_path / "knn")[-1]


def test_label_free_data_skips_evaluation_with_a_notice(config, tmp_path, caplog):
    """data=synthetic has one class (all labels 0): one warning line, no accuracies."""
    with caplog.at_level(logging.WARNING, logger="sslkit.eval.evaluation"):
        train(config("data=synthetic", "augment=gaussian_noise", "data.n=256", "data.batch_size=64",
                     "trainer.max_steps=3", "eval=[online_probe,knn]"), tmp_path)
    notices = [r.getMessage() for r in caplog.records if r.name == "sslkit.eval.evaluation"]
    assert len(notices) == 1 and "has no class labels" in notices[0] and "\n" not in notices[0]
    assert not any(k.startswith("eval/") for r in rows(tmp_path) for k in r)


def test_mnist1d_runs_every_evaluation_on_its_held_out_split(config, tmp_path):
    """data=mnist1d (vectors, augment=gaussian_noise by default): the probes train on the
    labelled training samples and test on the last data.test ones, as sslkit-eval does; with
    100 held-out samples every accuracy is a whole number of percent."""
    from sslkit.eval.offline import main

    train(config("~experiment", "data=mnist1d", "data.train=200", "data.test=100", "data.batch_size=50",
                 "backbone=mlp", "trainer.max_steps=4", "spectrum=off", "eval=[online_probe,knn]", "eval.every=2"),
          tmp_path)
    last = rows(tmp_path)[-1]
    for key in ("eval/probe/backbone/top1", "eval/knn20/backbone/top1", "eval/knn200/backbone/top1"):
        assert last[key] == pytest.approx(round(last[key]), abs=1e-4), (key, last[key])
    main([str(tmp_path)])
    offline = json.loads((tmp_path / "linear_eval.json").read_text())
    assert offline["test_samples"] == 100 and offline["train_samples"] == 200


def test_data_without_a_held_out_split_is_a_config_error(config, tmp_path):
    """An image folder has no test split: evaluation asks for eval.test_root, before training."""
    from sslkit.errors import ConfigError

    for c in range(2):
        (tmp_path / "images" / f"class{c}").mkdir(parents=True)
        write_image(torch.full((3, 8, 8), 50 * c, dtype=torch.uint8), tmp_path / "images" / f"class{c}" / "a.png")
    with pytest.raises(ConfigError, match=r"no held-out split .* eval.test_root=DIR"):
        train(config("data=imagefolder", f"data.root={tmp_path / 'images'}", "data.image_size=8",
                      f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=2", "augment=none",
                      "eval=knn"), tmp_path / "run")


@pytest.mark.parametrize("override, message", [
    ("eval.test_split=tset", r"eval.test_split=tset is not a split of sslkit.data.digits: .*\[all, train, test\]\.$"),
    ("eval.batch_size=0", r"eval.batch_size=0 is not allowed: use a positive number"),
])
def test_a_held_out_split_or_batch_that_cannot_work_is_a_one_line_config_error(config, tmp_path, override, message):
    """A misspelt eval.test_split names that key (not data.split, where the value lands) and
    the splits there are; eval.batch_size=0 would fail inside torch's split. Both before any
    step is taken."""
    with pytest.raises(ConfigError, match=message) as error:
        train(config("~experiment", "data.split=train", "eval=knn", override), tmp_path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "metrics.jsonl").exists() or not rows(tmp_path)


def test_sslkit_eval_reproduces_the_online_probe_on_the_same_features(config, tmp_path):
    """`sslkit-eval RUN_DIR` (features cached from last.pt, L-BFGS) gives the online probe's
    final held-out accuracy within 1 point when both see the same features: the network is
    frozen in effect (optim.lr=1e-12; 0 is refused as a run that would not train), and the
    probe trains on the clean samples' features (input=clean) although the views are random.
    On MNIST-1D with 4000 held-out samples, where 1 point is 40 samples (on the 297 digits
    it is 3, about the chance difference of two fits: docs/benchmarks.md); 400 steps, 6400
    SGD steps of the probe. Seeds 0, 1, 2: +0.15, −0.35, −0.33 (on the batch alone, window=1:
    +0.10, −0.22, −0.60). This sidesteps features that move while the probe trains:
    `test_online_probe_estimates_sslkit_eval_on_a_real_run` has them."""
    from sslkit.eval.offline import main

    train(config("~experiment", "data=mnist1d", "data.train=4000", "data.test=4000", "data.split=train",
                 "backbone=mlp", "backbone.width=64", "projector=mlp", "trainer.max_steps=400", "optim.lr=1e-12",
                 "spectrum=off", "eval=online_probe", "eval.every=200"), tmp_path)
    online = rows(tmp_path)[-1]["eval/probe/backbone/top1"]
    main([str(tmp_path)])
    offline = json.loads((tmp_path / "linear_eval.json").read_text())
    assert offline["step"] == 400 and offline["test_samples"] == 4000 and offline["train_samples"] == 4000
    assert abs(offline["top1"] - online) <= 1, (online, offline)


def test_sslkit_eval_caches_the_features_and_fits_sgd_and_augmented_copies(config, tmp_path):
    """sslkit-eval on a digits run: the features are cached (a second call reads them), SGD
    (--optimizer sgd, 100 epochs) fits the same objective as L-BFGS to within 3 points, and
    --augment 1 adds one augmented copy of the 1500 training digits, of either kind."""
    from sslkit.eval.offline import main

    train(config("backbone=mlp", "backbone.width=64", "projector=mlp", "data.batch_size=256",
                 "trainer.max_steps=20", "spectrum=off", "eval=none"), tmp_path)
    main([str(tmp_path)])
    lbfgs = json.loads((tmp_path / "linear_eval.json").read_text())
    assert lbfgs["step"] == 20 and lbfgs["test_samples"] == 297 and lbfgs["train_samples"] == 1500
    assert list((tmp_path / "eval").glob("features-*.pt"))  # cached: a second call reads it
    main([str(tmp_path / "checkpoints" / "last.pt"), "--optimizer", "sgd"])
    assert abs(json.loads((tmp_path / "linear_eval.json").read_text())["top1"] - lbfgs["top1"]) <= 3
    for kind in ("standard", "views"):  # one augmented copy of the training set each
        main([str(tmp_path), "--augment", "1", "--augment-kind", kind])
        result = json.loads((tmp_path / "linear_eval.json").read_text())
        assert result["train_samples"] == 3000 and result["augment_kind"] == kind


@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd"])
def test_sslkit_eval_defaults_are_the_online_probes(optimizer, tmp_path, monkeypatch):
    """Without --weight-decay, sslkit-eval fits with the λ of OnlineProbe's signature (SGD
    and L-BFGS; fit_linear's default too), so that both estimate the online probe's
    objective. SGD's rate is its own (1: annealed to 0 by its cosine schedule, where the
    probe's constant 0.3 would converge more slowly; docs/benchmarks.md, "The online
    probe's settings"). The cached features are stubbed by clustered points: the arguments of
    the fit are checked, not its accuracy."""
    from sslkit.eval import offline

    x, y = clustered(64, 8, 3, seed=0)
    monkeypatch.setattr(offline, "find_checkpoint", lambda path: (path, tmp_path))
    monkeypatch.setattr(offline, "features", lambda *args: {"train_x": x, "train_y": y, "test_x": x, "test_y": y,
                                                            "step": 1})
    seen, fit_sgd = {}, offline.fit_sgd

    def recorded_fit_sgd(x, y, classes, epochs, batch_size, lr, weight_decay, seed):
        seen.update(lr=lr, weight_decay=weight_decay)
        return fit_sgd(x, y, classes, epochs, batch_size, lr, weight_decay, seed)

    def recorded_fit_linear(x, y, classes, weight_decay):
        seen.update(weight_decay=weight_decay)
        return fit_linear(x, y, classes, weight_decay)

    monkeypatch.setattr(offline, "fit_sgd", recorded_fit_sgd)
    monkeypatch.setattr(offline, "fit_linear", recorded_fit_linear)
    offline.main([str(tmp_path), "--optimizer", optimizer, "--epochs", "1", "--device", "cpu"])
    probe = {name: p.default for name, p in inspect.signature(OnlineProbe).parameters.items()}
    assert seen == ({"lr": 1.0, "weight_decay": probe["weight_decay"]} if optimizer == "sgd"
                    else {"weight_decay": probe["weight_decay"]})
    assert inspect.signature(fit_linear).parameters["weight_decay"].default == probe["weight_decay"]
    assert json.loads((tmp_path / "linear_eval.json").read_text())["weight_decay"] == probe["weight_decay"]


@pytest.mark.parametrize("content", ["text", "torch file"])
def test_sslkit_eval_of_a_file_that_is_no_checkpoint_is_one_message(content, tmp_path, capsys):
    """A run's metrics.jsonl passed by mistake (torch.load's weights-only unpickler
    rejects it, with advice to load it unsafely) and a torch file that is not a checkpoint
    (a tensor dict, as torch.save writes it): one line naming the file and what to pass,
    exit status 2, no traceback."""
    from sslkit.eval import offline

    path = tmp_path / ("metrics.jsonl" if content == "text" else "features.pt")
    if content == "text":
        path.write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n")
    else:
        torch.save({"x": torch.zeros(3)}, path)
    with pytest.raises(SystemExit) as stop:
        offline.main([str(path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"sslkit-eval: error: {path} is ")
    assert "checkpoints/last.pt" in err and "weights_only" not in err and len(err.splitlines()) == 1


def test_report_draws_accuracy_beside_the_eigenvalues_with_the_crossings_on_both(tmp_path):
    """A run with eval/… accuracies gets panels (e) accuracy vs step and (f) accuracy vs
    learned modes; each ½-crossing of C is a vertical line in (a) and in (e)."""
    from test_report import fake_run

    from sslkit.report import draw_stepwise
    from sslkit.spectrum import crossing_steps, load

    fake_run(tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for r in rows[4::5]:
        r["eval/knn20/backbone/top1"] = 10.0 + r["step"]
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spectra = load(tmp_path / "run")
    crossed = crossing_steps(spectra["step"], spectra["xcorr"][:, :6])
    fig = draw_stepwise(tmp_path / "run", modes=6)
    eig, accuracy, modes = (fig.axes[i] for i in (0, 4, 5))  # (a), (e), (f): made in panel order
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]  # and the modes' colour bar
    assert len(panels) == 7 and eig.get_yscale() == "log"  # (g): the eigenvalues on a linear scale
    curve = next(line for line in accuracy.get_lines() if line.get_label() == "knn20/backbone")
    np.testing.assert_array_equal(curve.get_xdata(), [r["step"] for r in rows[4::5]])
    np.testing.assert_array_equal(curve.get_ydata(), [10.0 + r["step"] for r in rows[4::5]])
    for ax in (eig, accuracy):
        vertical = sorted(float(x[0]) for x in (line.get_xdata() for line in ax.get_lines()
                                                if line.get_linestyle() == ":") if x[0] == x[1])
        assert vertical == sorted(crossed[crossed >= 0].tolist()) and len(vertical) >= 3
    learned = np.interp([r["step"] for r in rows[4::5]], spectra["step"], spectra["xcorr/learned"])
    np.testing.assert_allclose(modes.get_lines()[0].get_xdata(), learned)


def test_accuracy_is_of_the_step_it_is_logged_at(config, tmp_path):
    """The accuracies logged at step p are those of the weights after update p: a run stopped
    after 2 steps (whose last evaluation follows its last update) logs at step 1 what a
    longer run logs there. Constant learning rate, so both runs take the same first steps."""
    base = (*EVAL_BASE, "eval=[knn]", "eval.every=2", "eval.knn.features=[backbone,projector]",
            "optim.schedule=constant", "optim.lr=0.5")
    train(config(*base, "trainer.max_steps=2"), tmp_path / "short")
    train(config(*base, "trainer.max_steps=6"), tmp_path / "long")
    at_step_1 = [{k: v for k, v in r.items() if k.startswith("eval/")} for d in ("short", "long")
                 for r in rows(tmp_path / d) if r["step"] == 1]
    assert at_step_1[0] and at_step_1[0] == at_step_1[1]


@pytest.mark.slow
def test_online_probe_estimates_sslkit_eval_on_a_real_run(config, tmp_path):
    """The hard case of the test above: SimCLR with random views, features that move until
    the last step. The online probe at its defaults (input=clean: features of the
    un-augmented batch; lr 0.3, the training's schedule, ema 0.95, λ = 10⁻⁴, 16 steps per
    batch on the last 2048 samples) ends within 1.5 points of `sslkit-eval` on the final
    checkpoint (5 of the 297 held-out digits). Replayed on recorded runs of this command
    (docs/benchmarks.md, "The online probe's settings"; the per-seed tables: git show
    2c48a9d:scripts/RESULTS.md): 0.00, −1.01, −1.35 at seeds 0, 1, 2 (the batch alone:
    0.00, −0.34, −0.67; lr 1, ema 0.9, 4 steps per batch: −0.34, −0.67, −1.35; no weight
    decay and one step per batch: −0.67, −1.68, −2.69), so this guards one seed of the
    estimate, not its spread."""
    from sslkit.eval.offline import main

    train(config("loss=simclr", "backbone=mlp", "projector=mlp", "data.batch_size=256", "trainer.max_steps=300",
                 "spectrum=off", "eval=online_probe", "eval.every=100"), tmp_path)
    online = rows(tmp_path)[-1]["eval/probe/backbone/top1"]
    main([str(tmp_path)])
    offline = json.loads((tmp_path / "linear_eval.json").read_text())["top1"]
    assert abs(offline - online) <= 1.5, (online, offline)


@pytest.mark.slow
def test_probe_replay_reproduces_the_logged_accuracies(tmp_path):
    """scripts/probe_replay.py: `record` trains a run and saves the probe's inputs; `check`
    replays OnlineProbe on them and exits 0 only if every evaluation's top-1 equals the one
    in the run's metrics.jsonl (the truth a replayed setting is measured against)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "probe_replay.py"
    run = tmp_path / "run"
    subprocess.run([sys.executable, script, "record", run, "~experiment", "loss=simclr", "backbone=mlp",
                    "data.batch_size=256", "trainer.max_steps=30", "spectrum=off", "eval=online_probe",
                    "eval.every=10", "device=cpu"], check=True)
    done = subprocess.run([sys.executable, script, "check", run], capture_output=True, text=True)
    assert done.returncode == 0 and "replay == logged at 3 evaluations" in done.stdout, done.stdout


def replay_module_and_two_classifiers(a_only: int, b_only: int, both: int):
    """scripts/probe_replay.py as a module, and which samples two classifiers a and b get
    right: a only, b only, both, and 7 that neither gets."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "probe_replay.py"
    spec = importlib.util.spec_from_file_location("probe_replay", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a = torch.tensor([True] * a_only + [False] * b_only + [True] * both + [False] * 7)
    b = torch.tensor([False] * a_only + [True] * b_only + [True] * both + [False] * 7)
    return module, a, b


@pytest.mark.parametrize("a_only, b_only, both", [(0, 0, 5), (6, 1, 280), (1, 6, 280), (5, 5, 10), (11, 3, 0)])
def test_probe_replay_mcnemar_is_scipys_exact_binomial_test(a_only, b_only, both):
    """scripts/probe_replay.py's McNemar test: of the samples exactly one classifier gets
    right, classifier a gets k; its p-value is scipy's exact two-sided binomial test of k
    out of a_only + b_only at ½ (1 when the classifiers never disagree)."""
    from scipy.stats import binomtest

    module, a, b = replay_module_and_two_classifiers(a_only, b_only, both)
    n = a_only + b_only
    expected = 1.0 if n == 0 else binomtest(a_only, n, 0.5).pvalue
    assert module.mcnemar(a, b) == pytest.approx(expected, rel=1e-12)
    assert module.mcnemar(b, a) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("a_only, b_only, both, points", [(0, 0, 5, 1.0), (6, 1, 280, 1.0), (5, 4, 284, 1.0),
                                                          (8, 8, 0, 10.0), (3, 0, 97, 2.5)])
def test_probe_replay_chance_of_a_gap_is_the_binomial_tail(a_only, b_only, both, points):
    """scripts/probe_replay.py's chance that two equally accurate classifiers differ by more
    than `points`: with n samples on which exactly one is right, of N in all, a gets
    K ~ Binomial(n, ½) of them, and the gap exceeds `points` when |2K − n| > points·N/100 —
    scipy's binomial distribution summed over both tails."""
    import math

    from scipy.stats import binom

    module, a, b = replay_module_and_two_classifiers(a_only, b_only, both)
    n, total = a_only + b_only, a.numel()
    margin = points * total / 100  # |2K − n| must exceed this
    low, high = math.ceil((n - margin) / 2) - 1, math.floor((n + margin) / 2) + 1  # K ≤ low or K ≥ high
    expected = binom.cdf(low, n, 0.5) + binom.sf(high - 1, n, 0.5) if n else 0.0
    assert module.chance_of_a_gap(a, b, points) == pytest.approx(expected, abs=1e-12)
    assert module.chance_of_a_gap(b, a, points) == pytest.approx(expected, abs=1e-12)


def test_probe_replay_drift_is_zero_where_the_features_do_not_move_and_scores_as_sslkit_eval(config, tmp_path):
    """scripts/probe_replay.py's `drift`: its top-1 at a checkpoint is what `sslkit-eval` on
    that checkpoint reports, and where the network does not move (lr 10⁻³⁰, far below one
    float32 step of its weights; a linear backbone, without BatchNorm statistics) the fit of
    one checkpoint scores the features of every later one exactly as their own fit does:
    every change is 0. Where it moves (lr 0.05), they are not."""
    from sslkit.eval.offline import main

    module, _, _ = replay_module_and_two_classifiers(0, 0, 0)
    for run, lr in (("moving", "0.05"), ("frozen", "1e-30")):
        train(config("~experiment", "data.split=train", "data.batch_size=256", "trainer.max_steps=30",
                     "trainer.checkpoint_every=10", "trainer.keep_checkpoints=5", "spectrum=off", f"optim.lr={lr}"),
              tmp_path / run)
    accuracy, change = module.drift(tmp_path / "moving")
    main([str(tmp_path / "moving")])
    assert sorted(accuracy) == [10, 20, 30] and sorted(change) == [10, 20]
    assert accuracy[30] == json.loads((tmp_path / "moving" / "linear_eval.json").read_text())["top1"]
    assert len(change[10]) == 2 and len(change[20]) == 1 and any(c != 0 for c in change[10] + change[20])
    _, frozen = module.drift(tmp_path / "frozen")
    assert frozen == {10: [0.0, 0.0], 20: [0.0]}


@pytest.mark.parametrize("make, message", [
    (lambda: OnlineProbe({"h": 4}, 2, 5, lr=0), r"eval.online_probe.lr=0 .*positive"),
    (lambda: OnlineProbe({"h": 4}, 2, 5, lr=-1), r"eval.online_probe.lr=-1 "),
    (lambda: OnlineProbe({"h": 4}, 2, 5, momentum=1.0), r"eval.online_probe.momentum=1.0 .*\[0, 1\)"),
    (lambda: OnlineProbe({"h": 4}, 2, 5, momentum=-0.1), r"eval.online_probe.momentum=-0.1 "),
    (lambda: OnlineProbe({"h": 4}, 2, 5, weight_decay=-1e-4), r"eval.online_probe.weight_decay=-0.0001 .*>= 0"),
    (lambda: KNN(k=[20, 0]), r"eval.knn.k=\[20, 0\] .*>= 1"),
    (lambda: KNN(k=[]), r"eval.knn.k=\[\] "),
    (lambda: KNN(temperature=0.0), r"eval.knn.temperature=0.0 .*T > 0.*null"),
    (lambda: KNN(temperature=-0.07), r"eval.knn.temperature=-0.07 "),
    (lambda: KNN(chunk_elements=0), r"eval.knn.chunk_elements=0 "),
])
def test_probe_settings_that_cannot_work_are_config_errors_naming_the_key(make, message):
    """A non-positive learning rate, a momentum outside [0, 1), a negative λ, k < 1, T <= 0
    or an empty chunk would train a probe that diverges or score nonsense (k = 0: every class
    tied, T = 0: exp(s/0)); each is a one-line error naming the key and what is allowed."""
    with pytest.raises(ConfigError, match=message):
        make()


def test_the_edges_of_the_allowed_probe_settings_are_accepted():
    """momentum 0 (plain SGD), λ = 0, one neighbour and T = null (a plain vote) are allowed."""
    OnlineProbe({"h": 4}, 2, 5, momentum=0.0, weight_decay=0.0)
    KNN(k=[1], temperature=None)


@pytest.mark.parametrize("option, value, allowed", [("--lr", "0", "> 0"), ("--weight-decay", "-0.001", ">= 0"),
                                                    ("--epochs", "0", ">= 1"), ("--batch-size", "0", ">= 1"),
                                                    ("--augment", "-1", ">= 0")])
def test_sslkit_eval_refuses_options_that_cannot_work_before_reading_anything(option, value, allowed, tmp_path,
                                                                              capsys):
    """sslkit-eval exits with argparse's usage error naming the option, the value and what is
    allowed, before it looks for the checkpoint (the path does not exist): a negative λ or
    zero epochs would otherwise print a meaningless accuracy."""
    from sslkit.eval.offline import main

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "no_run"), option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: {value} is not allowed: use a number {allowed}" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [
    ("tpu", "not a device: use cpu or cuda"),
    ("cuda:99", "no CUDA device is available here" if not torch.cuda.is_available() else "this machine has"),
])
def test_sslkit_eval_refuses_a_device_this_machine_lacks_before_reading_anything(device, message, tmp_path, capsys):
    """A device torch does not know, or a GPU the machine lacks, is a usage error naming
    --device (was a traceback, or "not a readable checkpoint" from torch.load)."""
    from sslkit.eval.offline import main

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "no_run"), "--device", device])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument --device: {device}: {message}" in err, err


def test_sslkit_eval_interrupted_while_writing_its_cache_leaves_none(config, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the feature cache is written (after half its bytes): one line, status
    130, and no cache file, so the next `sslkit-eval` computes the features again and
    prints what an uninterrupted evaluation does (before: a traceback, and a truncated
    cache that every later call failed to load)."""
    from sslkit.eval.offline import main

    train(config("~experiment", "data.split=train", "data.batch_size=256", "spectrum=off", "trainer.max_steps=5"),
          tmp_path)
    save = torch.save

    def interrupted(obj, f):  # torch.save to a file object or a path, cut off halfway
        with nullcontext(f) if hasattr(f, "write") else open(f, "wb") as out:
            save(obj, out)
            out.seek(out.tell() // 2)
            out.truncate()
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]  # after the progress bars, which end with \r
    assert exit_.value.code == 130 and err.startswith("sslkit-eval: interrupted (Ctrl-C); "), err
    assert list((tmp_path / "eval").iterdir()) == []
    monkeypatch.setattr(torch, "save", save)
    main([str(tmp_path)])
    resumed = json.loads((tmp_path / "linear_eval.json").read_text())
    shutil.rmtree(tmp_path / "eval")
    main([str(tmp_path)])
    assert json.loads((tmp_path / "linear_eval.json").read_text()) == resumed


def test_sslkit_eval_of_a_run_evaluates_its_newest_checkpoint_after_the_run_is_continued(config, tmp_path):
    """`sslkit-eval RUN_DIR` caches the features of checkpoints/last.pt; when the run is then
    continued (resumed with more steps), last.pt is the newer checkpoint and the evaluation
    must be of it: the same step and accuracy as `sslkit-eval` on that step's own file."""
    from sslkit.eval.offline import main

    overrides = ("~experiment", "data.split=train", "data.batch_size=256", "spectrum=off", "trainer.checkpoint_every=10")
    train(config(*overrides, "trainer.max_steps=10"), tmp_path)
    main([str(tmp_path)])
    assert json.loads((tmp_path / "linear_eval.json").read_text())["step"] == 10
    train(config(*overrides, "trainer.max_steps=20"), tmp_path)
    main([str(tmp_path)])
    continued = json.loads((tmp_path / "linear_eval.json").read_text())
    main([str(tmp_path / "checkpoints" / "step_00000020.pt")])
    direct = json.loads((tmp_path / "linear_eval.json").read_text())
    assert continued["step"] == direct["step"] == 20 and continued["top1"] == direct["top1"]


def test_a_run_started_again_with_overwrite_is_not_evaluated_on_the_old_runs_features(config, tmp_path):
    """trainer.resume=overwrite starts a new run in the same directory; its step_<N>.pt have the
    old run's names, so sslkit-eval's caches and result of the old run go with it: the new run
    evaluates as the same run trained in a fresh directory does."""
    from sslkit.eval.offline import main

    overrides = ("~experiment", "data.split=train", "data.batch_size=256", "spectrum=off", "trainer.max_steps=10")
    train(config(*overrides), tmp_path / "run")
    main([str(tmp_path / "run")])
    train(config(*overrides, "seed=1", "trainer.resume=overwrite"), tmp_path / "run")
    assert not (tmp_path / "run" / "linear_eval.json").exists()
    main([str(tmp_path / "run")])
    train(config(*overrides, "seed=1"), tmp_path / "fresh")
    main([str(tmp_path / "fresh")])
    again, fresh = (json.loads((tmp_path / d / "linear_eval.json").read_text()) for d in ("run", "fresh"))
    assert again["top1"] == fresh["top1"] and again["top5"] == fresh["top5"]


def test_sslkit_eval_of_a_run_without_a_checkpoint_or_labels_says_why(config, tmp_path, capsys):
    """A run directory before its first checkpoint is named as what it is, with its
    checkpoint cadence (it was told to pass "a run directory written by sslkit-train"); a
    run on label-free data (synthetic) or on data without a held-out split is one line
    about sslkit-eval (it was given the training's keys, which sslkit-eval cannot set)."""
    from sslkit.eval import offline

    def refused(path) -> str:
        with pytest.raises(SystemExit) as stop:
            offline.main([str(path), "--device", "cpu"])
        lines = capsys.readouterr().err.split("\n")  # after a progress bar's lines (\r) when the data is decoded
        assert stop.value.code == 2 and lines[-1] == "" and lines[-2].startswith("sslkit-eval: error: "), lines
        return lines[-2]

    run = tmp_path / "synthetic"
    train(config("data=synthetic", "augment=gaussian_noise", "data.n=256", "data.batch_size=64",
                 "trainer.max_steps=3", "trainer.checkpoint_every=7"), run)
    assert refused(run) == (f"sslkit-eval: error: {run}/checkpoints/last.pt was trained on data=synthetic "
                            f"(sslkit.data.synthetic), which has no class labels: sslkit-eval measures a linear "
                            f"classifier's accuracy, so there is nothing to evaluate. sslkit-report {run} draws "
                            f"the run's spectra and metrics.")
    shutil.rmtree(run / "checkpoints")
    assert refused(run) == (f"sslkit-eval: error: {run} is a run of sslkit-train without a checkpoint yet: it "
                            f"writes checkpoints/last.pt every trainer.checkpoint_every=7 steps and at its end. "
                            f"Evaluate it once it has written one.")
    for c in range(2):
        (tmp_path / "images" / f"class{c}").mkdir(parents=True)
        write_image(torch.full((3, 8, 8), 50 * c, dtype=torch.uint8), tmp_path / "images" / f"class{c}" / "a.png")
    run = tmp_path / "folder"
    train(config("data=imagefolder", f"data.root={tmp_path / 'images'}", "data.image_size=8",
                 f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=2", "augment=digits", "trainer.max_steps=1"),
          run)
    assert "which has no held-out split (no data.split), and without eval.test_root: sslkit-eval has no " \
           "held-out samples" in refused(run)


def test_sslkit_eval_of_a_run_with_image_views(config, tmp_path):
    """A checkpoint's config is plain YAML: the views of augment=none (ImageViews) come back
    as mappings, which the views accept as their fields (an InstantiationException traceback
    before); the evaluation then scores the held-out split of digits."""
    from sslkit.eval import offline

    train(config("augment=none", "trainer.max_steps=2"), tmp_path)
    offline.main([str(tmp_path), "--device", "cpu"])
    result = json.loads((tmp_path / "linear_eval.json").read_text())
    assert result["test_samples"] == 297 and 0 <= result["top1"] <= result["top5"] <= 100
