"""`sslkit-report`: the per-run figure (eigenvalues of C on a log scale with the ½-crossings
marked, ranks and entropies, loss terms), the overlay of several runs, PNG and PDF."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sslkit.cli import report_main
from sslkit.report import draw_compare, draw_stepwise, run_labels
from sslkit.spectrum import SpectrumMonitor, crossing_steps, load

BIN = Path(sys.executable).parent


def fake_run(run_dir: Path, speed: float = 1.0, init_scale: float = 1e-3, steps: int = 30) -> None:
    """A run directory as sslkit-train writes it, with known spectra: C = diag(c(t)), the
    k-th entry rising linearly at rate speed/(k + 1) per step, capped at 1."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"seed": 0, "backbone": {"init_scale": init_scale, "out_dim": 6}, "optim": {"lr": 0.1}}))
    n, d = 120, 6
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64)).Q * math.sqrt(n)
    rates = speed * 0.11 / torch.arange(1, d + 1, dtype=torch.float64)
    monitor = SpectrumMonitor(run_dir, ["cov", "xcorr", "feat_cov"], flush_every=7)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(steps):
            c = (rates * (step + 0.5)).clamp(1e-6, 1.0)
            z = basis * c.sqrt()  # zᵀz/n = diag(c)
            monitor(step, z, z, z, z)
            loss = float(((c - 1) ** 2).sum())
            f.write(json.dumps({"step": step, "epoch": 0, "loss": loss, "invariance": loss, "redundancy": 0.0,
                                "lr": 0.1, "images_per_s": 1e4}) + "\n")
    monitor.close()


def test_stepwise_figure_marks_each_half_crossing_on_a_log_scale(tmp_path):
    fake_run(tmp_path / "run")
    spectra = load(tmp_path / "run")
    fig = draw_stepwise(tmp_path / "run", modes=6)
    eig, ranks, entropy, loss = fig.axes
    assert eig.get_yscale() == "log"
    crossed = crossing_steps(spectra["step"], spectra["xcorr"])
    dots = [line for line in eig.get_lines() if line.get_marker() == "o"]
    assert sorted(float(d.get_xdata()[0]) for d in dots) == sorted(crossed[crossed >= 0].tolist())
    assert all(d.get_ydata()[0] == 0.5 for d in dots) and (crossed >= 0).sum() >= 3
    by_label = {line.get_label(): line for ax in (ranks, entropy) for line in ax.get_lines()}
    for key in ("cov/effective_rank", "cov/rankme", "xcorr/learned", "cov/logdet", "feat_cov/logdet"):
        np.testing.assert_allclose(by_label[key].get_ydata(), spectra[key])
    assert {line.get_label() for line in loss.get_lines()} >= {"loss", "invariance", "redundancy"}


def test_runs_are_labelled_by_the_config_keys_that_differ(tmp_path):
    for scale in (1e-2, 1e-3, 1e-4):
        fake_run(tmp_path / f"alpha{scale}", speed=1 / (1 - math.log10(scale)), init_scale=scale)
    runs = sorted(tmp_path.iterdir())
    assert run_labels(runs) == [f"backbone.init_scale={s}" for s in (0.0001, 0.001, 0.01)]
    fig = draw_compare(runs)
    legend = [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    assert legend == run_labels(runs)
    assert run_labels(runs[:1]) == [runs[0].name]


def test_sslkit_report_writes_png_and_pdf_for_each_run_and_the_comparison(tmp_path):
    for scale in (1e-2, 1e-3):
        fake_run(tmp_path / "sweep" / f"{scale}", init_scale=scale)
    runs = sorted((tmp_path / "sweep").iterdir())
    done = subprocess.run([BIN / "sslkit-report", *map(str, runs)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(r / "stepwise.png") for r in runs] + [str(tmp_path / "sweep" / "compare.png")]
    for stem in [r / "stepwise" for r in runs] + [tmp_path / "sweep" / "compare"]:
        assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert stem.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_comparison_goes_where_out_says(tmp_path, capsys):
    fake_run(tmp_path / "a", init_scale=1e-2)
    fake_run(tmp_path / "b", init_scale=1e-3)
    report_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "alpha")])
    assert capsys.readouterr().out.split()[-1] == str(tmp_path / "alpha.png")
    assert (tmp_path / "alpha.pdf").read_bytes()[:5] == b"%PDF-"


def test_a_run_without_spectra_or_metrics_is_explained(tmp_path, capsys):
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "metrics.jsonl").write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n")
    fake_run(tmp_path / "lost")
    (tmp_path / "lost" / "metrics.jsonl").unlink()
    for run, reason in (("off", "spectrum.enabled=false"), ("lost", "metrics.jsonl")):
        with pytest.raises(SystemExit) as exit_:
            report_main([str(tmp_path / run)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("sslkit-report: error:") and reason in err
