"""`sslkit-report`: the per-run figure (eigenvalues of C on a log scale with the ½-crossings
marked, ranks and entropies, loss terms), the overlay of several runs, PNG and PDF."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.colors import to_hex

from sslkit.cli import report_main
from sslkit.report import draw_compare, draw_side_by_side, draw_stepwise, run_labels, shown
from sslkit.spectrum import SpectrumMonitor, crossing_steps, load

BIN = Path(sys.executable).parent


CONFIG = {"seed": 0, "loss": {"_target_": "sslkit.losses.BarlowTwinsLoss", "lambd": 1.0, "normalize": "none"},
          "backbone": {"network": "sslkit.models.Linear", "out_dim": 6},
          "projector": {"_target_": "sslkit.models.Projector", "hidden_dims": [32], "out_dim": 6},
          "optim": {"_target_": "torch.optim.SGD", "lr": 0.1}, "data": {"_target_": "sslkit.data.digits", "batch_size": 120}}


def fake_run(run_dir: Path, speed: float = 1.0, init_scale: float = 1e-3, steps: int = 30,
             skipped: tuple[int, ...] = (), evaluated: bool = False) -> None:
    """A run directory as sslkit-train writes it, with known spectra: C = diag(c(t)), the
    k-th entry rising linearly at rate speed/(k + 1) per step, capped at 1; the last mode is
    exactly 0 for the first 5 steps. Steps in `skipped` have no spectrum (as after a
    non-finite loss). With `evaluated`, a probe's and a kNN's top-1 every 10 steps:
    accuracy(step) = 10·speed + step, and half that for the kNN."""
    run_dir.mkdir(parents=True)
    config = {**CONFIG, "backbone": {**CONFIG["backbone"], "init_scale": init_scale}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    n, d = 120, 6
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64)).Q * math.sqrt(n)
    rates = speed * 0.11 / torch.arange(1, d + 1, dtype=torch.float64)
    monitor = SpectrumMonitor(run_dir, ["cov", "xcorr", "feat_cov"], flush_every=7)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(steps):
            c = (rates * (step + 0.5)).clamp(1e-6, 1.0)
            c[-1] = 0.0 if step < 5 else c[-1]
            z = basis * c.sqrt()  # zᵀz/n = diag(c)
            if step not in skipped:
                monitor(step, z, z, z, z)
            loss = float(((c - 1) ** 2).sum())
            row = {"step": step, "epoch": 0, "loss": loss, "invariance": loss, "redundancy": 0.0, "lr": 0.1,
                   "images_per_s": 1e4}
            if evaluated and step % 10 == 9:
                row.update({"eval/probe/backbone/top1": accuracy(step, speed),
                            "eval/knn20/backbone/top1": accuracy(step, speed) / 2})
            f.write(json.dumps(row) + "\n")
    monitor.close()


def accuracy(step: int, speed: float) -> float:
    return 10 * speed + step


def test_stepwise_figure_marks_each_half_crossing_on_a_log_and_a_linear_scale(tmp_path):
    """The eigenvalues of C twice, on a log scale and (as in Simon et al.'s figures) a linear one,
    with a dot where each first reaches ½; on the linear panel and the loss below it, a
    vertical line at each crossing, so the loss's steps line up with the modes'."""
    fake_run(tmp_path / "run")
    spectra = load(tmp_path / "run")
    fig = draw_stepwise(tmp_path / "run", modes=6)
    eig, ranks, entropy, loss, linear, colorbar = fig.axes
    assert eig.get_yscale() == "log" and linear.get_yscale() == "linear"
    crossed = crossing_steps(spectra["step"], spectra["xcorr"])
    for ax in (eig, linear):
        dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert sorted(float(d.get_xdata()[0]) for d in dots) == sorted(crossed[crossed >= 0].tolist())
        assert all(d.get_ydata()[0] == 0.5 for d in dots) and (crossed >= 0).sum() >= 3
    for ax in (linear, loss):
        vertical = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1 and line.get_marker() != "o"]
        assert sorted(float(v.get_xdata()[0]) for v in vertical) == sorted(crossed[crossed >= 0].tolist())
    np.testing.assert_allclose(linear.get_xlim(), eig.get_xlim())
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
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == run_labels(runs)
    assert run_labels(runs[:1]) == [runs[0].name]


def test_a_group_switched_off_in_one_run_is_one_key_in_the_labels(config):
    """eval=none against the default experiment's probes: eval.knn and eval.online_probe
    (null under eval=none) each label the runs once, by class, instead of by every key
    below them; keys of an option that both runs have stay separate. The progress bar and
    the checkpoint cadence change nothing drawn and label nothing."""
    from omegaconf import OmegaConf

    from sslkit.config import flatten
    from sslkit.report import differences

    on = flatten(OmegaConf.to_container(config("experiment=stepwise_digits")))
    off = flatten(OmegaConf.to_container(config("experiment=stepwise_digits", "eval=none", "seed=3",
                                                "trainer.progress=true", "trainer.checkpoint_every=7")))
    assert differences([on, off]) == [{"eval.knn": "KNN", "eval.online_probe": "OnlineProbe", "seed": 0},
                                      {"eval.knn": None, "eval.online_probe": None, "seed": 3}]
    mlp = flatten(OmegaConf.to_container(config("experiment=stepwise_digits", "projector=mlp")))
    assert differences([on, mlp])[1] == {"projector._target_": "sslkit.models.Projector", "projector.hidden_dims": [256],
                                         "projector.init_scale": 1.0, "projector.out_dim": 256}
    assert differences([on, mlp])[0]["projector._target_"] == "torch.nn.Identity"


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
    """--out names the figure; its folder is made when missing, and one that cannot be made
    (below a file) stops before any figure is drawn."""
    fake_run(tmp_path / "a", init_scale=1e-2)
    fake_run(tmp_path / "b", init_scale=1e-3)
    report_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "new" / "alpha")])
    assert capsys.readouterr().out.split()[-1] == str(tmp_path / "new" / "alpha.png")
    assert (tmp_path / "new" / "alpha.pdf").read_bytes()[:5] == b"%PDF-"
    (tmp_path / "a" / "stepwise.png").unlink()
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "a" / "config.yaml" / "x")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"sslkit-report: error: --out {tmp_path / 'a' / 'config.yaml' / 'x'}: "
                                              f"its folder cannot be made (")
    assert not (tmp_path / "a" / "stepwise.png").exists()


def spectrum_off_run(run_dir: Path, evaluated: bool) -> list[dict]:
    """A run directory as `sslkit-train spectrum=off` writes it: config and metrics, no
    spectra; with `evaluated`, a probe's and a kNN's accuracy every 10 steps."""
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    rows = [{"step": step, "epoch": 0, "loss": 10.0 / (step + 1), "invariance": 9.0 / (step + 1), "lr": 0.1}
            for step in range(40)]
    for row in rows[9::10] if evaluated else ():
        row.update({"eval/probe/backbone/top1": 50.0 + row["step"], "eval/knn20/backbone/top1": 40.0 + row["step"] / 2,
                    "eval/probe/backbone/top5": 99.0})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


@pytest.mark.parametrize("evaluated", [True, False])
def test_a_run_without_spectra_gets_its_loss_and_accuracy_drawn(tmp_path, evaluated):
    """spectrum=off: panel (d), and (e) when the run was evaluated, each line the values of
    metrics.jsonl; the title says why there are no eigenvalues."""
    rows = spectrum_off_run(tmp_path / "off", evaluated)
    fig = draw_stepwise(tmp_path / "off")
    loss_axis, *accuracy_axis = fig.axes
    lines = {line.get_label(): line for line in loss_axis.get_lines()}
    assert sorted(lines) == ["invariance", "loss"]
    for key, line in lines.items():
        assert list(line.get_xdata()) == [r["step"] for r in rows] and list(line.get_ydata()) == [r[key] for r in rows]
    assert len(accuracy_axis) == evaluated and "spectrum=off" in fig._suptitle.get_text()
    if evaluated:
        curves = {line.get_label(): line for line in accuracy_axis[0].get_lines()}
        assert sorted(curves) == ["knn20/backbone", "probe/backbone"]
        for label, line in curves.items():
            evaluated_rows = [r for r in rows if f"eval/{label}/top1" in r]
            assert list(line.get_xdata()) == [9, 19, 29, 39]
            assert list(line.get_ydata()) == [r[f"eval/{label}/top1"] for r in evaluated_rows]


def test_a_run_without_spectra_or_logged_steps_draws_empty_panels(tmp_path):
    """spectrum=off and an empty metrics.jsonl (stopped before its first line): the loss panel
    spans the one step 0 to 1, as `_finish` does for a run with spectra."""
    spectrum_off_run(tmp_path / "off", evaluated=False)
    (tmp_path / "off" / "metrics.jsonl").write_text("")
    fig = draw_stepwise(tmp_path / "off")
    assert fig.axes[0].get_xlim() == (0.0, 1.0) and fig.axes[0].get_title() == "Loss and its terms"


def test_a_run_without_spectra_or_metrics_is_explained(tmp_path, capsys):
    """Without metrics.jsonl there is nothing to draw; a run without spectra gets its own
    figure but is not overlaid on runs with spectra, and the error says so."""
    fake_run(tmp_path / "lost")
    (tmp_path / "lost" / "metrics.jsonl").unlink()
    spectrum_off_run(tmp_path / "off", evaluated=False)
    fake_run(tmp_path / "on")
    for runs, reason in ((["lost"], "lost has no metrics.jsonl, which sslkit-train writes"),
                         (["on", "off"], "off holds no spectra (spectrum=off) but the other runs do")):
        with pytest.raises(SystemExit) as exit_:
            report_main([str(tmp_path / run) for run in runs])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("sslkit-report: error:") and reason in err
    assert (tmp_path / "off" / "stepwise.png").exists() and (tmp_path / "on" / "stepwise.png").exists()


def test_a_path_that_is_no_directory_is_named_as_such(tmp_path, capsys):
    """A mistyped run directory (nothing there) or a file is "not a directory", not a run
    that was trained without spectra."""
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n")
    for path in (tmp_path / "no_such_run", tmp_path / "metrics.jsonl"):
        with pytest.raises(SystemExit) as exit_:
            report_main([str(path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith(f"sslkit-report: error: {path} is not a directory")
        assert "spectrum.enabled" not in err


def test_stepwise_figure_says_what_ran_and_tells_every_mode_apart(tmp_path):
    """Title: loss, backbone, init scale, projector, lr, batch. Modes: one colour each, from a colour
    bar with a tick per mode. A zero eigenvalue (mode 6, steps 0-4) is drawn as ▾ at the
    axis floor and said so. After skipped spectrum steps all panels span the same steps."""
    fake_run(tmp_path / "run", skipped=tuple(range(20, 30)))
    fig = draw_stepwise(tmp_path / "run", modes=6)
    title = fig._suptitle.get_text()
    for text in ("BarlowTwins", "lambd=1.0", "Linear", "init_scale=0.001",
                 "projector Projector (hidden_dims=[32], out_dim=6)", "lr=0.1", "batch 120"):
        assert text in title, (text, title)
    eig, *_, colorbar = fig.axes
    lines = [line for line in eig.get_lines() if hasattr(line, "non_positive")]  # one per mode
    colours = {tuple(line.get_color()) for line in lines}
    assert len(lines) == 6 and len(colours) == 6
    assert [t.get_text() for t in colorbar.get_yticklabels()] == [str(k) for k in range(1, 7)]
    floor = [line for line in eig.get_lines() if line.get_marker() == "v"]
    assert len(floor) == 1 and list(floor[0].get_xdata()) == [0, 1, 2, 3, 4]
    assert np.all(floor[0].get_ydata() == eig.get_ylim()[0])
    assert any("≤ 0" in t.get_text() for t in eig.texts)
    assert {ax.get_xlim() for ax in fig.axes[:4]} == {(0.0, 29.0)}, "panels must span the same steps"


def test_titles_show_a_run_directory_relative_to_the_working_directory(tmp_path, monkeypatch):
    """A figure made in one checkout names its run as the user typed it, not the checkout's path."""
    monkeypatch.chdir(tmp_path / "..")
    assert shown(tmp_path / "runs" / "a") == str(Path(tmp_path.name) / "runs" / "a")
    assert shown(Path("runs") / "a") == str(Path("runs") / "a")
    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path.parent / "b") == str(tmp_path.parent / "b"), "outside: the absolute path"


def test_comparison_shows_rankme_loss_terms_and_a_title_of_what_differs(tmp_path):
    for scale in (1e-2, 1e-3):
        fake_run(tmp_path / f"alpha{scale}", init_scale=scale)
    runs = sorted(tmp_path.iterdir())
    fig = draw_compare(runs)
    title = fig._suptitle.get_text()
    assert "2 runs of" in title and "BarlowTwins" in title and "differ in backbone.init_scale" in title
    ranks, loss = fig.axes[1], fig.axes[3]
    assert "cov/rankme" in [t.get_text() for t in ranks.get_legend().get_texts()]
    assert {"loss", "invariance", "redundancy"} <= {t.get_text() for t in loss.get_legend().get_texts()}
    rankme = load(runs[0])["cov/rankme"]
    assert any(np.allclose(line.get_ydata(), rankme) for line in ranks.get_lines() if len(line.get_ydata()))
    fig.savefig(tmp_path / "c.png")  # drawn: every label inside the figure
    box = fig.get_window_extent()
    for text in fig.legends[0].get_texts():
        extent = text.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, text.get_text()


@pytest.mark.parametrize("spectra", [True, False])
def test_comparison_of_evaluated_runs_draws_each_runs_accuracy_in_its_colour(tmp_path, spectra):
    """(e): each run's accuracies vs step, in the run's colour, one line style per probe;
    (f): the same accuracies against the number of learned modes of C at those steps (the
    spectrum's xcorr/learned, interpolated). Runs trained with spectrum=off: (d) and (e)
    alone."""
    speeds = (1.0, 2.0)
    for speed in speeds:
        fake_run(tmp_path / f"speed{speed}", speed=speed, evaluated=True)
        if not spectra:
            shutil.rmtree(tmp_path / f"speed{speed}" / "spectrum")
    runs = sorted(tmp_path.iterdir())
    fig = draw_compare(runs)
    axes = fig.axes
    acc = next(ax for ax in axes if ax.get_title() == "Held-out accuracy")
    assert len(axes) == (6 if spectra else 2)
    colors = [to_hex(line.get_color()) for line in fig.legends[0].get_lines()]
    styles = {t.get_text(): line.get_linestyle() for t, line in zip(acc.get_legend().get_texts(),
                                                                      acc.get_legend().get_lines())}
    assert set(styles) == {"probe/backbone", "knn20/backbone"}
    for run, speed, color in zip(runs, speeds, colors):
        drawn = {line.get_linestyle(): line for line in acc.get_lines() if to_hex(line.get_color()) == color}
        probe, knn = drawn[styles["probe/backbone"]], drawn[styles["knn20/backbone"]]
        assert list(probe.get_xdata()) == [9, 19, 29]
        assert list(probe.get_ydata()) == [accuracy(s, speed) for s in (9, 19, 29)]
        assert list(knn.get_ydata()) == [accuracy(s, speed) / 2 for s in (9, 19, 29)]
        if spectra:
            modes = next(ax for ax in axes if ax.get_title() == "Accuracy vs learned modes")
            learned = load(run)["xcorr/learned"][[9, 19, 29]]  # recorded at every step
            points = [line for line in modes.get_lines() if to_hex(line.get_color()) == color]
            assert len(points) == 2 and all(list(p.get_xdata()) == list(learned) for p in points)
    if not spectra:
        assert "spectrum=off" in fig._suptitle.get_text() and axes[0].get_title() == "Loss and its terms"


def test_side_by_side_gives_each_run_its_own_column_and_step_axis(tmp_path, capsys):
    """--side-by-side: one column per run (eigenvalues of C over the loss), each spanning its
    own steps, with a dot at every ½-crossing and their count in the title."""
    fake_run(tmp_path / "fast", speed=2.0, steps=20)
    fake_run(tmp_path / "slow", speed=0.5, steps=60)
    fig = draw_side_by_side([tmp_path / "fast", tmp_path / "slow"], modes=6)
    (fast, slow), (fast_loss, slow_loss) = np.array(fig.axes).reshape(2, 2)
    for ax, run, steps in ((fast, "fast", 20), (slow, "slow", 60)):
        spectra = load(tmp_path / run)
        crossed = crossing_steps(spectra["step"], spectra["xcorr"])
        dots = sorted(float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_marker() == "o")
        assert dots == sorted(crossed[crossed >= 0].tolist())
        assert ax.get_xlim() == (0, steps - 1) and ax.get_yscale() == "log"
        assert ax.get_title().endswith(f"{(crossed >= 0).sum()} modes cross ½")
    assert fast_loss.get_xlim() == (0, 19)
    report_main([str(tmp_path / "fast"), str(tmp_path / "slow"), "--side-by-side", "--out", str(tmp_path / "cols")])
    assert capsys.readouterr().out.split()[-1] == str(tmp_path / "cols.png")


def test_out_with_one_run_and_a_sweep_directory_are_one_line(tmp_path, capsys):
    """--out with one run draws no comparison: refused before its folder is made (it was
    ignored, and its folder made). A sweep's directory (runs in its sub-folders, none of
    its own) is refused with the runs inside and the command that draws them, which works."""
    fake_run(tmp_path / "sweep" / "0", init_scale=1e-2)
    fake_run(tmp_path / "sweep" / "1", init_scale=1e-3)
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}")
    one = tmp_path / "sweep" / "0"
    with pytest.raises(SystemExit) as exit_:
        report_main([str(one), "--out", str(tmp_path / "D" / "x")])
    assert exit_.value.code == 2 and not (tmp_path / "D").exists() and not (one / "stepwise.png").exists()
    assert capsys.readouterr().err == (f"sslkit-report: error: --out {tmp_path / 'D' / 'x'} names the figure that "
                                       f"compares several runs, and {one} is one; its own figure is "
                                       f"{one / 'stepwise'}.png (and .pdf). Leave --out out, or pass the runs to "
                                       f"compare.\n")
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"sslkit-report: error: {tmp_path / 'sweep'} holds 2 runs (0, 1), a sweep's, and is not "
                          f"one itself; draw them with: sslkit-report "), err
    command = err.split("draw them with: ")[1].split()
    report_main(command[1:])
    assert capsys.readouterr().out.split()[-1] == str(tmp_path / "sweep" / "compare.png")
