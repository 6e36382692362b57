"""The spectrum monitor: exact small-side eigenvalues, tracked eigenvalues against exact
eigvalsh, the summaries against closed forms, ½-crossing events, storage size, resume."""

import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sslkit.losses import BarlowTwinsLoss
from sslkit.spectrum import (SpectrumMonitor, SubspaceTracker, crossing_steps, factored, load,
                             load_events)
from sslkit.spectrum.metrics import effective_rank, gaussian_logdet, hadamard_gap, learned_modes, rankme, span_rank
from sslkit.spectrum.tracker import ritz


def views(n: int, d: int, seed: int, rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated float64 views with a decaying spectrum (and rank ≤ `rank`)."""
    g = torch.Generator().manual_seed(seed)
    r = rank or d
    basis = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64)).Q
    x = torch.randn(n, r, generator=g, dtype=torch.float64) * 2.0 ** (-torch.arange(r) / 8) @ basis.T
    return x + 0.3, 0.8 * x + 0.1 * torch.randn(n, r, generator=g, dtype=torch.float64) @ basis.T


def dense_reference(kind: str, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """numpy's eigvalsh of the D×D matrix written out from its definition, descending."""
    a, b = a.numpy(), b.numpy()
    if kind == "xcorr":
        m = (a.T @ b + b.T @ a) / (2 * len(a))
    else:
        m = np.cov(a if kind == "cov" else b, rowvar=False)
    return np.linalg.eigvalsh(m)[::-1]


# ------------------------------------------------------------------------- exact paths


@pytest.mark.parametrize("kind", ["cov", "cov2", "xcorr"])
@pytest.mark.parametrize("n, d", [(12, 40), (40, 12), (9, 9), (30, 61)])  # both sides, square, 2n < D
def test_factored_eigenvalues_match_numpy(kind, n, d):
    a, b = views(n, d, seed=n * d)
    m = factored(kind, a, b)
    ref = dense_reference(kind, a, b)
    np.testing.assert_allclose(m.eigvalsh().numpy(), ref, rtol=0, atol=1e-12 * abs(ref).max())
    np.testing.assert_allclose(m.dense().numpy(), m.matmul(torch.eye(d, dtype=torch.float64)).numpy(),
                               atol=1e-12 * abs(ref).max())
    values, vectors = m.eigh()  # eigenpairs of the range: M v = λ v, orthonormal
    dense = m.dense()
    assert torch.allclose(dense @ vectors, vectors * values, atol=1e-10 * abs(ref).max())
    assert torch.allclose(vectors.T @ vectors, torch.eye(vectors.shape[1], dtype=torch.float64), atol=1e-10)


# ------------------------------------------------------------------------------- tracking


def drifting_views(steps: int, n: int = 160, d: int = 200):
    """A training-like sequence: a slowly rotating low-rank signal seen through a new random
    batch every step, the second view noisier (C is indefinite)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, d, generator=g, dtype=torch.float64)
    for _ in range(steps):
        w = w + 0.02 * torch.randn(40, d, generator=g, dtype=torch.float64)
        x = torch.randn(n, 40, generator=g, dtype=torch.float64) * 2.0 ** (-torch.arange(40) / 6)
        yield x @ w, x @ w + 0.05 * torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["cov", "xcorr"])
def test_tracked_eigenvalues_agree_with_eigvalsh(tmp_path, kind):
    """The default two subspace iterations per step, no early stop: on a training-like
    sequence the stored (tracked) top-k stay within tol·|λ₁| of eigvalsh at every step, and
    so does the residual bound."""
    k, tol = 16, 1e-3
    monitor = SpectrumMonitor(tmp_path, [kind], top_k=k, full_every=1, exact_max=0, tol=tol, chunk=5)
    exact = []
    for step, (z1, z2) in enumerate(drifting_views(12)):
        chunk = monitor.observe(step, z1, z2, z1, z2)
        if chunk:
            monitor.record(chunk)
        exact.append(dense_reference(kind, z1, z2)[:k])
    monitor.record(monitor.flush())
    monitor.close()
    stored, exact = load(tmp_path), np.array(exact)
    assert (np.abs(stored[kind] - exact).max(axis=1) <= tol * np.abs(exact[:, 0])).all()
    assert (stored[f"{kind}/track_err"] <= tol).all() and (stored[f"{kind}/residual"] <= tol).all()


def flat_stream(steps: int, batch: int, dim: int):
    """scripts/bench_spectrum.py's stream of embeddings with the flat spectrum of a ResNet-18
    at initialisation, a new batch every step."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_spectrum.py"
    spec = importlib.util.spec_from_file_location("bench_spectrum", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.flat_stream(steps, batch, dim)


def test_every_stored_value_of_c_is_exact_enough_at_d_2048_batch_256(tmp_path):
    """At the CIFAR recipes' size (D = 2048, batch 256: C has rank ≤ 2N = 512) on a flat
    spectrum with a new batch every step, where two warm-started subspace iterations were
    off by ≈ 0.2·|λ₁| from the second step on: with the default settings every value the
    monitor stores for C (Barlow Twins' view), at every step, is within 10⁻³·|λ₁| of
    torch.linalg.eigvalsh of that step's D×D matrix written out."""
    view = BarlowTwinsLoss().spectrum_view
    monitor = SpectrumMonitor(tmp_path, ["xcorr"], view=view)
    exact = []
    for step, (z1, z2) in enumerate(flat_stream(3, 256, 2048)):
        monitor.observe(step, z1, z2, z1, z2)
        a, b = view(z1.double()), view(z2.double())
        exact.append(torch.linalg.eigvalsh((a.T @ b + b.T @ a) / (2 * len(a))).flip(0)[:monitor.top_k].numpy())
    monitor.record(monitor.flush())
    monitor.close()
    stored, exact = load(tmp_path)["xcorr"], np.array(exact)
    assert stored.shape == exact.shape == (3, 64)
    assert (np.abs(stored - exact).max(axis=1) <= 1e-3 * np.abs(exact[:, 0])).all()


def test_tracker_finds_the_largest_eigenvalues_of_an_indefinite_matrix():
    """C = QΛQᵀ with negative eigenvalues larger in magnitude than the 4th positive one:
    without a shift, subspace iteration (p = 6) converges to the 6 largest |λ|; with the
    shift σ > |λ_min| the 4 largest Ritz values are the 4 largest λ."""
    lam = torch.tensor([1.0, 0.8, 0.6, 0.4, -0.9, -0.85, -0.7, -0.65, 0.1, 0.05], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    q = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64)).Q
    n = 10  # xcorr of A = √n·I and B = √n·QΛQᵀ is (AᵀB + BᵀA)/2n = QΛQᵀ
    m = factored("xcorr", n ** 0.5 * torch.eye(n, dtype=torch.float64), n ** 0.5 * (q * lam) @ q.T)
    start = torch.linalg.qr(torch.randn(10, 6, dtype=torch.float64, generator=g)).Q
    for shift, converges in ((0.0, False), (1.1, True)):
        tracker = SubspaceTracker(10, 4, oversample=2, iters=60, device=torch.device("cpu"))
        tracker.basis = start
        theta, residual = ritz(tracker.step(m, shift).numpy(), 4)
        assert np.allclose(theta, [1.0, 0.8, 0.6, 0.4], atol=1e-8) == converges, theta
    assert residual.max() < 1e-6  # (uᵀH₂u − θ²)^½ resolves residuals down to ≈ √ε₆₄·|θ|


def test_monitor_tracked_rows_and_full_rows_against_eigvalsh(tmp_path):
    """exact_max=0 forces tracking; per-step rows match eigvalsh to tol·|λ₁|, full rows
    (every full_every steps) are exact, and track_err is recorded there."""
    tol, top_k, full_every = 1e-3, 8, 4
    monitor = SpectrumMonitor(tmp_path, ["cov", "xcorr"], top_k=top_k, full_every=full_every,
                              exact_max=0, tol=tol, iters=30, flush_every=3, chunk=3)
    exact = {"cov": [], "xcorr": []}
    for step in range(10):
        a, b = views(50, 30, seed=step % 3)  # three batches in turn: the matrix keeps changing
        monitor(step, a.float(), b.float(), a.float(), b.float())
        for kind in exact:
            exact[kind].append(dense_reference(kind, a.float().double(), b.float().double()))
    monitor.close()
    per_step, full = load(tmp_path), load(tmp_path, "spectrum/full")
    assert list(per_step["step"]) == list(range(10)) and list(full["step"]) == [0, 4, 8]
    for kind in exact:
        ref = np.array(exact[kind])
        scale = np.abs(ref[:, :1])
        assert (np.abs(per_step[kind] - ref[:, :top_k]) <= tol * scale + 1e-6 * scale).all()
        np.testing.assert_allclose(full[kind], ref[::full_every], rtol=1e-6, atol=1e-6 * scale.max())
        err = per_step[f"{kind}/track_err"]
        assert np.isfinite(err[::full_every]).all() and (err[::full_every] <= tol).all()
        assert np.isnan(np.delete(err, np.arange(0, 10, full_every))).all()
        assert (per_step[f"{kind}/residual"] <= tol).all()


# ------------------------------------------------------------------------------ summaries


def test_summaries_of_closed_forms():
    d, eps = 50, 1e-7
    identity = np.ones(d)
    assert effective_rank(identity) == pytest.approx(d, rel=1e-12)
    p = 1 / d + eps  # RankMe adds ε to every normalised singular value
    assert rankme(identity, eps) == pytest.approx(math.exp(-d * p * math.log(p)), rel=1e-12)
    for r in (1, 3, 17):  # a rank-r projector: r ones, the rest zero
        projector = np.r_[np.ones(r), np.zeros(d - r)]
        assert effective_rank(projector) == pytest.approx(r, rel=1e-12)
        assert rankme(projector, eps=0.0) == pytest.approx(r, rel=1e-12)
    diag = np.array([4.0, 1.0, 0.25, 1e-3, 0.0])
    assert span_rank(diag, bound=5) == 4 and span_rank(diag, bound=3) == 3
    assert gaussian_logdet(diag, 4) == pytest.approx(0.5 * np.log(diag[:4]).sum(), rel=1e-12)
    # with full rank, the same as ½ log det of the matrix itself, via slogdet
    assert gaussian_logdet(diag[:4], 4) == pytest.approx(0.5 * np.linalg.slogdet(np.diag(diag[:4]))[1])
    assert learned_modes(np.array([1.2, 0.5, 0.4999, -0.7]), 0.5) == 2


def test_monitor_summaries_match_definitions_on_embeddings(tmp_path):
    """RankMe from the singular values of the centred embedding matrix (numpy SVD), the
    effective rank and log-det from numpy's eigenvalues, learned modes of C."""
    a, b = views(80, 24, seed=3, rank=10)
    monitor = SpectrumMonitor(tmp_path, ["cov", "xcorr"], rankme_eps=1e-7)
    out = monitor(0, a.float(), b.float(), a.float(), b.float())
    monitor.close()
    z = a.float().double().numpy()
    sigma = np.linalg.svd(z - z.mean(0), compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    # √λ of the rank-deficient part (λ ≈ 1e-16 from rounding) is ≈ 1e-8, not the SVD's ≈ 1e-15
    assert out["cov/rankme"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    lam = dense_reference("cov", a.float().double(), b.float().double())
    q = np.abs(lam) / np.abs(lam).sum()  # normalised singular values of Σ
    q = q[q > 0]
    assert out["cov/effective_rank"] == pytest.approx(np.exp(-(q * np.log(q)).sum()), rel=1e-9)
    assert out["cov/logdet"] == pytest.approx(0.5 * np.log(lam[:10]).sum(), rel=1e-9)  # rank 10 < D
    c = dense_reference("xcorr", a.float().double(), b.float().double())
    assert out["xcorr/learned"] == (c >= 0.5).sum()
    stored = load(tmp_path)
    assert stored["cov/rankme"][0] == pytest.approx(out["cov/rankme"], rel=1e-6)


def test_logdet_on_the_span_of_a_small_batch(tmp_path):
    """Batch 16, D = 512 (rank ≤ 15): ½ Σ log of the 15 non-zero eigenvalues, from numpy's
    eigenvalues of the 16×16 Gram matrix; ½ log det(Σ + εI) differs from it by ≈ ½(D − 15) log ε."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 512, generator=g, dtype=torch.float64) @ torch.diag(torch.linspace(0.1, 2, 512, dtype=torch.float64))
    monitor = SpectrumMonitor(tmp_path, ["cov"])
    out = monitor(0, z, z, z, z)
    monitor.close()
    zc = (z - z.mean(0)).numpy()
    gram = np.linalg.eigvalsh(zc @ zc.T / 15)[::-1]  # the non-zero eigenvalues of Σ, and one ≈ 0
    assert out["cov/logdet"] == pytest.approx(0.5 * np.log(gram[:15]).sum(), rel=1e-10)
    lam = np.r_[gram[:15], np.zeros(512 - 15)]
    regularised = 0.5 * np.log(lam + 1e-4).sum()
    assert regularised - out["cov/logdet"] == pytest.approx(0.5 * (512 - 15) * np.log(1e-4), rel=1e-3)
    assert 0.5 * (512 - 15) * np.log(1e-4) == pytest.approx(-2289, abs=1)  # the README's figure


def test_hadamard_gap_against_numpy_and_the_inequality(tmp_path):
    """Full rank: Σ log Σₖₖ − log det Σ with numpy's slogdet. Rank r < D: log e_r(diag Σ) −
    log pdet Σ with e_r summed over all r-subsets, and pdet Σ = Σ_S det Σ_SS (Cauchy–Binet).
    Both ≥ 0, and 0 for a diagonal covariance."""
    from itertools import combinations

    g = torch.Generator().manual_seed(0)
    for n, d in ((200, 6), (4, 6)):  # r = 6 = D; r = 3 < D
        z = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
        monitor = SpectrumMonitor(tmp_path / f"{n}", ["cov"])
        gap = monitor(0, z, z, z, z)["cov/hadamard_gap"]
        monitor.close()
        sigma = np.cov(z.numpy(), rowvar=False)
        r = min(n - 1, d)
        subsets = list(combinations(range(d), r))
        e_r = sum(np.prod(np.diag(sigma)[list(s)]) for s in subsets)
        pdet = sum(np.linalg.det(sigma[np.ix_(s, s)]) for s in subsets)
        assert pdet == pytest.approx(np.prod(np.linalg.eigvalsh(sigma)[::-1][:r]), rel=1e-8)
        assert gap == pytest.approx(np.log(e_r) - np.log(pdet), rel=1e-8) and gap > 0
        if r == d:
            assert gap == pytest.approx(np.log(np.diag(sigma)).sum() - np.linalg.slogdet(sigma)[1], rel=1e-10)
    diagonal = np.array([3.0, 1.0, 0.5, 0.2])
    assert hadamard_gap(diagonal, diagonal, [4])[0] == pytest.approx(0, abs=1e-12)
    assert hadamard_gap(np.r_[diagonal, 0, 0], np.r_[diagonal, 0, 0], [4])[0] == pytest.approx(0, abs=1e-12)


def test_metrics_of_a_one_sample_batch_are_zero_without_warnings(tmp_path):
    """A batch of one sample has a zero covariance (rank 0): effective rank, RankMe, the
    log-det and the Hadamard gap are 0 (exp H of an empty distribution taken as 0; e₀ = 1
    and an empty sum), and no numpy warning is raised (warnings are errors here)."""
    z = torch.randn(1, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    monitor = SpectrumMonitor(tmp_path, ["cov"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = monitor(0, z, z, z, z)
        assert hadamard_gap(np.zeros((2, 5)), np.zeros((2, 5)), [0, 0]).tolist() == [0.0, 0.0]
    monitor.close()
    assert {k: metrics[k] for k in ("cov/effective_rank", "cov/rankme", "cov/logdet", "cov/hadamard_gap")} == {
        "cov/effective_rank": 0.0, "cov/rankme": 0.0, "cov/logdet": 0.0, "cov/hadamard_gap": 0.0}


# --------------------------------------------------------------------------------- events


def test_crossing_events_are_appended_as_they_happen(tmp_path):
    """C = diag(c) with c rising at different rates: one event per mode, at the step
    crossing_steps finds in the stored rows, on disk right after the step that made it."""
    n, d = 400, 6
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64)).Q * math.sqrt(n)
    rates = torch.tensor([0.9, 0.52, 0.3, 0.21, 0.19, 0.0], dtype=torch.float64)  # ½ at t = 3, 4, 7, 10, 11, never
    monitor = SpectrumMonitor(tmp_path, ["xcorr"], flush_every=1000)
    seen = []
    for step in range(12):
        z = basis * torch.sqrt((rates * step / 4).clamp(max=1.0))  # C = zᵀz/n = diag(min(rate·t/4, 1))
        monitor(step, z, z, z, z)
        seen.append(len(load_events(tmp_path)))
    monitor.close()
    events = load_events(tmp_path)
    stored = load(tmp_path)
    expected = crossing_steps(stored["step"], stored["xcorr"])
    assert [e["mode"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["step"] for e in events] == list(expected[:5]) == [3, 4, 7, 10, 11] and expected[5] == -1
    assert seen == [sum(e["step"] <= s for e in events) for s in range(12)]  # no wait for a flush
    assert stored["xcorr/learned"].tolist() == [sum(e["step"] <= s for e in events) for s in range(12)]


# ------------------------------------------------------------------------------- storage


def test_storage_stays_under_200_mb_for_100k_steps_at_d_2048(config, tmp_path):
    """Default matrices at D = 2048 (batch 32: exact via the small side): the bytes the
    files grow by per step and per full row, extrapolated to 100 000 steps."""
    spectrum = config().spectrum
    assert spectrum.every == 1 and spectrum.top_k == 64
    monitor = SpectrumMonitor(tmp_path, [m.value for m in spectrum.matrices], top_k=spectrum.top_k,
                              full_every=spectrum.full_every, flush_every=1)
    g = torch.Generator().manual_seed(0)
    sizes = []
    for step in range(spectrum.full_every + 1):
        z1, z2 = torch.randn(32, 2048, generator=g), torch.randn(32, 2048, generator=g)
        monitor(step, z1, z2, z1 + 1, z2 + 1)
        sizes.append(sum(p.stat().st_size for p in (tmp_path / "spectrum").rglob("*") if p.is_file()))
    monitor.close()
    per_step = sizes[2] - sizes[1]
    per_full = (sizes[spectrum.full_every] - sizes[spectrum.full_every - 1]) - per_step
    assert per_full >= 2048 * 4  # the full rows are really written
    total = 100_000 * per_step + (100_000 // spectrum.full_every) * per_full
    assert total <= 200e6, f"{total / 1e6:.0f} MB"


def test_load_while_writing_returns_complete_rows_only(tmp_path):
    monitor = SpectrumMonitor(tmp_path, ["cov", "xcorr"], flush_every=4)
    for step in range(10):
        a, b = views(30, 5, seed=step)
        monitor(step, a, b, a, b)
        assert len(load(tmp_path)["step"]) == (step + 1) // 4 * 4
    monitor.close()
    summary = tmp_path / "spectrum" / "summary.f4"
    summary.write_bytes(summary.read_bytes()[:-3])  # a torn last row of the summaries
    out = load(tmp_path)
    assert len(out["step"]) == 9 and out["cov"].shape == (9, 5) and out["cov/rankme"].shape == (9,)


# -------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("exact_max", [256, 0])
def test_resume_from_state_continues_the_files_exactly(tmp_path, exact_max):
    """A monitor stopped after a checkpoint's state(), with more rows written after it, and
    a new monitor built from that state produce the same files as one uninterrupted run."""
    kwargs = dict(matrices=["cov", "xcorr"], top_k=4, full_every=3, exact_max=exact_max, flush_every=2)
    batches = [views(40, 12, seed=s) for s in range(9)]

    def run(monitor, steps):
        for s in steps:
            a, b = batches[s]
            monitor(s, (a * (1 + s)).float(), b.float(), a.float(), b.float())

    reference = SpectrumMonitor(tmp_path / "ref", **kwargs)
    run(reference, range(9))
    reference.close()

    first = SpectrumMonitor(tmp_path / "run", **kwargs)
    run(first, range(5))
    state = json.loads(json.dumps({k: v for k, v in first.state().items() if k != "bases"}))
    state["bases"] = {k: v.clone() for k, v in first.state()["bases"].items()}
    run(first, range(5, 7))  # written after the checkpoint, then lost to a crash
    first.close()
    resumed = SpectrumMonitor(tmp_path / "run", **kwargs, state=state)
    run(resumed, range(5, 9))
    resumed.close()

    for table in ("spectrum", "spectrum/full"):
        ref, got = load(tmp_path / "ref", table), load(tmp_path / "run", table)
        assert ref.keys() == got.keys()
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{table}: {key}")
    assert load_events(tmp_path / "run") == load_events(tmp_path / "ref")


def test_every_kth_step_through_the_training_loop(config, tmp_path):
    """spectrum.every=3: rows at steps 0, 3, 6, 9, and the metrics.jsonl records of those
    steps (only) carry the summaries."""
    from sslkit.train import train

    train(config("data.batch_size=128", "trainer.max_steps=11", "spectrum.every=3"), tmp_path)
    assert list(load(tmp_path)["step"]) == [0, 3, 6, 9]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "cov/rankme" in r] == [0, 3, 6, 9] and len(rows) == 11
    assert rows[6]["xcorr/learned"] == (load(tmp_path)["xcorr"][2] >= 0.5).sum()


def test_map_distinct_keeps_a_repeated_tensor_one_object():
    """An identity projector passes h = z: each distinct tensor is converted once, and the
    results keep `h is z`, which lets the monitor decompose the shared matrices once."""
    from sslkit.tensors import map_distinct

    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    calls = []
    out = map_distinct(lambda t: calls.append(t) or t.double(), (z1, z2, z1, z2))
    assert len(calls) == 2 and out[0] is out[2] and out[1] is out[3]
    assert out[0].dtype == torch.float64 and torch.equal(out[1], z2.double())


@pytest.mark.parametrize("loss", ["barlow_twins", "simclr"])
def test_xcorr_is_the_loss_own_c(config, tmp_path, monkeypatch, loss):
    """Training on digits: the stored `xcorr` eigenvalues are those of the loss's own C from
    its reference formula — for Barlow Twins the official main.py's BatchNorm1d(affine=False)
    views, C = ẑ1ᵀẑ2/N, symmetrised; for SimCLR the unit-sphere views — and `xcorr_raw` those
    of the raw embeddings. The embeddings are captured as the loss received them."""
    from sslkit.losses import BarlowTwinsLoss, NTXentLoss
    from sslkit.train import train

    cls = BarlowTwinsLoss if loss == "barlow_twins" else NTXentLoss
    seen, forward = [], cls.forward
    monkeypatch.setattr(cls, "forward", lambda self, z1, z2: seen.append((z1.detach().clone(), z2.detach().clone()))
                        or forward(self, z1, z2))
    train(config(f"loss={loss}", "device=cpu", "data.batch_size=128", "trainer.max_steps=3",
                 "spectrum.matrices=[xcorr,xcorr_raw]"), tmp_path)
    stored = load(tmp_path)
    for step, (z1, z2) in enumerate(seen):
        a, b = z1.double().numpy(), z2.double().numpy()
        if loss == "barlow_twins":
            bn = torch.nn.BatchNorm1d(a.shape[1], affine=False, dtype=torch.float64)  # training mode
            x, y = bn(torch.from_numpy(a)).detach().numpy(), bn(torch.from_numpy(b)).detach().numpy()
        else:
            x, y = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (a, b))
        for name, (p, q) in (("xcorr", (x, y)), ("xcorr_raw", (a, b))):
            c = p.T @ q / len(p)
            ref = np.linalg.eigvalsh((c + c.T) / 2)[::-1][: stored[name].shape[1]]
            np.testing.assert_allclose(stored[name][step], ref, rtol=1e-5, atol=1e-6 * abs(ref[0]))
    assert len(seen) == 3 and not np.allclose(stored["xcorr"], stored["xcorr_raw"])  # the views matter


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("exact_max", [100, 512])
def test_on_cuda_observe_never_synchronises_and_matches_the_cpu(tmp_path, exact_max):
    """After the first step (which seeds a tracker once), `observe` and `flush` run under
    torch.cuda.set_sync_debug_mode("error"): no host synchronisation, whether C (2N = 192 <
    D = 200) is tracked (exact_max=100) or its small matrix is formed from a QR on the
    device (exact_max=512). The stored spectra equal the CPU monitor's (exact paths to
    float64 rounding, tracked within tol)."""
    kwargs = dict(matrices=["cov", "xcorr", "feat_cov"], top_k=16, full_every=4, exact_max=exact_max, chunk=3)
    runs = {}
    for device in ("cpu", "cuda"):
        monitor = SpectrumMonitor(tmp_path / device, **kwargs)
        for step, (z1, z2) in enumerate(drifting_views(9, n=96, d=200)):
            z1, z2 = z1.float().to(device), z2.float().to(device)
            h1, h2 = z1[:, :48], z2[:, :48]
            if device == "cuda" and step > 0:
                torch.cuda.set_sync_debug_mode("error")
            try:
                chunk = monitor.observe(step, z1, z2, h1, h2)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            if chunk is not None:
                monitor.record(chunk)
        if (chunk := monitor.flush()) is not None:
            monitor.record(chunk)
        monitor.close()
        runs[device] = load(tmp_path / device)
    cpu, cuda = runs["cpu"], runs["cuda"]
    tracked = exact_max < 192
    assert ("xcorr/residual" in cpu) == tracked
    exact = ("cov", "feat_cov") if tracked else ("cov", "feat_cov", "xcorr")
    for name in exact:
        np.testing.assert_allclose(cuda[name], cpu[name], rtol=1e-5, atol=1e-6 * np.abs(cpu[name]).max())
    if tracked:
        assert cpu["xcorr/track_err"][0] < 1e-12
        assert np.abs(cuda["xcorr"] - cpu["xcorr"]).max() <= 2e-3 * np.abs(cpu["xcorr"][:, 0]).max()
