"""Figures from run directories: the stepwise picture of Simon et al. (2023, Fig. 1) with the
rank and entropy summaries and the loss, for one run or several overlaid.

Four panels over the same steps: (a) the top eigenvalues of the cross-correlation C vs
step on a log scale, one colour per mode (colour bar), a dot where each first reaches ½,
and a ▾ at the bottom for a step where one is ≤ 0 (a log scale cannot draw it); (b)
effective rank and RankMe of the embedding covariance and the number of learned modes of
C; (c) the Gaussian log-det entropy ½ log det Σ on the span of the batch, of each covariance; (d) the loss and
its terms. The title names the loss, backbone, learning rate, init scale and batch. A run
with evaluation (`eval=...`) gets two more, next to (a): (e) held-out top-1 accuracy vs
step, and (f) accuracy vs the number of learned modes; the ½-crossings are vertical lines
in (a) and (e). A run trained with spectrum.enabled=false gets (d) and, when evaluated, (e)
without the crossings (`draw_curves`). Several runs overlaid (`draw_compare`) get the same
panels, one colour per run.
"""

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from sslkit import layout  # noqa: E402
from sslkit.checkpoint import RESUMABLE_CHANGES  # noqa: E402
from sslkit.config import flatten  # noqa: E402
from sslkit.records import read_metrics  # noqa: E402
from sslkit.spectrum import NoSpectra, crossing_steps, load  # noqa: E402
from sslkit.theory.stepwise import crossing_times  # noqa: E402

NOT_LOSS = ("step", "epoch", "lr", "images_per_s")
RANKS = ("cov/effective_rank", "cov/rankme", "xcorr/effective_rank", "xcorr/learned")  # panel (b)
COMPARED_RANKS = {"xcorr/learned": "-", "cov/effective_rank": ":", "cov/rankme": "--"}  # panel (b), several runs
TERM_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))  # panels (d), (e), several runs: series
MARKERS = ("o", "s", "^", "v", "D", "x")  # panel (f), several runs: accuracies
# config keys that change nothing a figure draws: the display, checkpointing and dashboards (the
# keys a resume may change, less the run's length)
NOT_DRAWN = (*(k for k in RESUMABLE_CHANGES if k not in ("trainer.max_steps", "trainer.max_epochs")), "logger")


def stepwise_figure(run_dir: str | Path, modes: int = 12, pdf: bool = True) -> Path:
    """Write `run_dir/stepwise.png` and, with `pdf`, `stepwise.pdf`; returns the PNG's path.
    The end of a training run writes the PNG alone (a second format lays out and draws the
    figure again); `sslkit-report` writes both."""
    return _save(draw_stepwise(run_dir, modes), Path(run_dir) / layout.FIGURE, pdf)


def compare_figure(run_dirs: list[Path], out: Path, modes: int = 8) -> Path:
    """Write the overlay of several runs to `out`.png and `out`.pdf; returns the PNG's path."""
    return _save(draw_compare(run_dirs, modes), Path(out))


def side_by_side_figure(run_dirs: list[Path], out: Path, modes: int = 8) -> Path:
    """Write the runs side by side to `out`.png and `out`.pdf; returns the PNG's path."""
    return _save(draw_side_by_side(run_dirs, modes), Path(out))


def draw_side_by_side(run_dirs: list[Path], modes: int = 8) -> Figure:
    """One column per run, each on its own step axis: (top) the top `modes` eigenvalues of
    the run's C as its loss sees it, coloured by mode, a dot where each first reaches ½,
    the number of ½-crossings in the title; (bottom) the loss and its terms. For runs of
    different losses, whose time scales differ."""
    fig, grid = plt.subplots(2, len(run_dirs), figsize=(6 * len(run_dirs), 7.5), layout="constrained",
                             squeeze=False, sharex="col")
    for (top, bottom), run_dir in zip(grid.T, run_dirs):
        spectra, metrics = load(run_dir), read_metrics(run_dir)
        name = _cross_correlation(spectra)
        eig = spectra[name][:, :modes]
        cmap = plt.get_cmap("viridis", eig.shape[1])
        for k in range(eig.shape[1]):
            _eigenvalue_line(top, spectra["step"], eig[:, k], cmap(k), f"λ{k + 1}")
        crossed = int((crossing_steps(spectra["step"], eig) >= 0).sum())
        top.set_yscale("log")
        _mark_non_positive(top)
        top.axhline(0.5, color="grey", lw=0.5, ls=":")
        top.set(ylabel=f"eigenvalues of {name} (log scale); ● first reaches ½",
                title=textwrap.fill(describe(read_config(run_dir)), 70) + f"\n{crossed} modes cross ½")
        top.title.set_fontsize(8)
        _loss_lines(bottom, metrics)
        bottom.set(xlabel="step", ylabel="loss")
        top.set_xlim(spectra["step"].min(), spectra["step"].max())
        for ax in (top, bottom):
            ax.legend(fontsize=6, ncol=2)
    return fig


def draw_stepwise(run_dir: str | Path, modes: int = 12) -> Figure:
    """The four panels for one run: the top `modes` eigenvalues of C, coloured by mode
    number (colour bar); the title gives the settings that shape the curves. A run without
    spectra gets `draw_curves`."""
    run_dir = Path(run_dir)
    try:
        spectra = load(run_dir)
    except NoSpectra:
        return draw_curves(run_dir)
    metrics = read_metrics(run_dir)
    fig, axes = _axes(accuracy=bool(accuracy_keys(metrics)), linear=True)
    name = _cross_correlation(spectra)
    eig = spectra[name][:, :modes]
    cmap = plt.get_cmap("viridis", eig.shape[1])
    colors = [cmap(k) for k in range(eig.shape[1])]
    for ax in (axes[0], axes[6]):
        for k in range(eig.shape[1]):
            _eigenvalue_line(ax, spectra["step"], eig[:, k], colors[k], None)
        theory_overlay(ax, run_dir, colors, flow=ax is axes[0])
    bar = fig.colorbar(ScalarMappable(BoundaryNorm(np.arange(eig.shape[1] + 1) + 0.5, eig.shape[1]), cmap),
                       ax=axes[0], pad=0.01, ticks=range(1, eig.shape[1] + 1))
    bar.set_label("mode k (λ_k, largest first)")
    crossed = crossing_steps(spectra["step"], eig)
    if axes[4] is not None:
        _accuracy_panels(axes[0], axes[4], axes[5], spectra, metrics, crossed, colors)
    title = f"eigenvalues of {name}" + (" (C)" if name == "xcorr" else "")
    axes[0].set_title(f"Top {eig.shape[1]} {title}, log scale")
    axes[6].set_title(f"Top {eig.shape[1]} {title}, linear scale; ⋮ ½ reached")
    for k, step in enumerate(crossed):
        if step >= 0:
            for ax in (axes[6], axes[3]):
                ax.axvline(step, color=colors[k], lw=0.6, ls=":")
    theory_loss(axes[3], run_dir)
    for key in [k for k in RANKS if k in spectra]:
        _summary_line(axes[1], spectra["step"], spectra[key], key, ls="--" if key.endswith("learned") else "-")
    for key in [k for k in spectra if k.endswith("/logdet")]:
        _summary_line(axes[2], spectra["step"], spectra[key], key)
    _loss_lines(axes[3], metrics)
    _finish(fig, axes, f"{describe(read_config(run_dir))}\n{shown(run_dir)}",
            [spectra["step"], [m["step"] for m in metrics]])
    axes[6].set_xlim(axes[0].get_xlim())
    axes[6].axhline(0.5, color="grey", lw=0.5, ls=":")
    axes[6].set(xlabel="step", ylabel="eigenvalue; ● first reaches ½")
    return fig


def draw_curves(run_dir: str | Path) -> Figure:
    """For a run trained with spectrum.enabled=false: (d) the loss and its terms vs step and,
    when the run was evaluated, (e) the held-out accuracy vs step beside it (without the
    ½-crossings, which need the spectra)."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    evaluated = bool(accuracy_keys(metrics))
    fig, axes = _axes(accuracy=evaluated, spectra=False)
    _loss_lines(axes[3], metrics)
    if evaluated:
        _accuracy_lines(axes[4], metrics)
    _finish_curves(fig, axes, f"{describe(read_config(run_dir))}\n{shown(run_dir)}", [[m["step"] for m in metrics]])
    return fig


def draw_compare(run_dirs: list[Path], modes: int = 8) -> Figure:
    """The four panels for several runs, one colour each, labelled (legend below the
    panels) by the config keys in which they differ; line styles tell the summaries, the
    loss terms and the accuracies apart. With evaluated runs, (e) each run's held-out
    accuracies vs step and (f) vs the number of learned modes of C. Runs trained without
    spectra get (d) and (e) alone; runs with and without spectra are not overlaid."""
    spectra_of, metrics_of = _spectra_of_all(run_dirs), [read_metrics(d) for d in run_dirs]
    fig, axes = _axes(accuracy=any(accuracy_keys(m) for m in metrics_of), spectra=spectra_of is not None)
    colors = plt.cm.tab10(np.arange(len(run_dirs)) % 10)
    steps, styles = [], {1: {}, 3: {}, 4: {}, 5: {}}  # panel: {series: line style, or marker in (f)}
    for spectra, metrics, color in zip(spectra_of or [None] * len(run_dirs), metrics_of, colors):
        curves = _compared_curves(axes, metrics, color, styles)
        steps.append([m["step"] for m in metrics])
        if spectra is not None:
            _compared_spectra(axes, spectra, curves, color, styles, modes)
            steps.append(spectra["step"])
    if spectra_of is None:
        _finish_curves(fig, axes, _compare_title(run_dirs), steps)
    else:
        axes[0].set_title(f"Top {modes} eigenvalues of C")
        _finish(fig, axes, _compare_title(run_dirs), steps)
        if len(axes) > 4:
            _label_accuracy(axes[0], axes[4], axes[5], "Held-out accuracy")
    for index, series in styles.items():  # colours: runs; styles: series, in black
        handles = [Line2D([], [], color="black", label=key, **({"ls": "none", "marker": style} if index == 5
                                                               else {"ls": style})) for key, style in series.items()]
        if handles and axes[index] is not None:
            axes[index].legend(handles=handles, fontsize=7, ncol=2)
    runs = [Line2D([], [], color=c, label=textwrap.fill(label, 60)) for c, label in zip(colors, run_labels(run_dirs))]
    fig.legend(handles=runs, loc="outside lower center", ncol=min(len(runs), 3), fontsize=7)
    return fig


def _compared_curves(axes, metrics: list[dict], color, styles: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """One run of `draw_compare`: (d) its loss and terms, (e) its accuracies, in `color`, one
    line style per series (recorded in `styles`); returns (name, steps, accuracies) of each."""
    steps = [m["step"] for m in metrics]
    for key, ls in zip(["loss", *_loss_terms(metrics)], TERM_STYLES):
        axes[3].plot(steps, [m.get(key, np.nan) for m in metrics], color=color, ls=styles[3].setdefault(key, ls),
                     lw=1.2 if key == "loss" else 0.8)
    curves = _accuracies(metrics)
    for (name, at, acc), ls in zip(curves, TERM_STYLES):
        axes[4].plot(at, acc, color=color, ls=styles[4].setdefault(name, ls), lw=1,
                     marker="." if len(at) < 50 else None)
    return curves


def _compared_spectra(axes, spectra: dict[str, np.ndarray], curves: list, color, styles: dict, modes: int) -> None:
    """One run of `draw_compare`: (a) its top `modes` eigenvalues of C, (b) its ranks, (c) its
    log-det entropy and (f) its accuracies against its learned modes, in `color`."""
    eig = spectra[_cross_correlation(spectra)][:, :modes]
    for k in range(eig.shape[1]):
        _eigenvalue_line(axes[0], spectra["step"], eig[:, k], color, None)
    for key, ls in COMPARED_RANKS.items():
        if key in spectra:
            _summary_line(axes[1], spectra["step"], spectra[key], None, color=color, ls=styles[1].setdefault(key, ls))
    if "cov/logdet" in spectra:
        _summary_line(axes[2], spectra["step"], spectra["cov/logdet"], None, color=color)
    for (name, at, acc), marker in zip(curves if "xcorr/learned" in spectra else [], MARKERS):
        learned = np.interp(at, spectra["step"], spectra["xcorr/learned"])
        axes[5].plot(learned, acc, ls="none", marker=styles[5].setdefault(name, marker), color=color, ms=3)


def _spectra_of_all(run_dirs: list[Path]) -> list[dict[str, np.ndarray]] | None:
    """Each run's spectra (`load`); None when no run has any. NoSpectra when some have and
    some do not: their panels would not match."""
    spectra = []
    for run_dir in run_dirs:
        try:
            spectra.append(load(run_dir))
        except NoSpectra:
            spectra.append(None)
    if all(s is None for s in spectra):
        return None
    if any(s is None for s in spectra):
        off = [str(d) for d, s in zip(run_dirs, spectra) if s is None]
        raise NoSpectra(f"{', '.join(off)} {'holds' if len(off) == 1 else 'hold'} no spectra (spectrum=off) but the "
                        f"other runs do: runs with and without spectra are not overlaid; compare each group alone.")
    return spectra


def _compare_title(run_dirs: list[Path]) -> str:
    """What the runs share, and the keys in which they differ."""
    configs = [read_config(d) for d in run_dirs]
    same = {k: v for k, v in configs[0].items() if all(c.get(k) == v for c in configs[1:])}
    differ = list(differences(configs)[0])
    return f"{len(run_dirs)} runs of {describe(same)}" + (f"\nthey differ in {', '.join(differ)}" if differ else "")


def theory_overlay(ax, run_dir: Path, colors, flow: bool = True) -> None:
    """The predicted eigenvalues of C from `run_dir/theory/curves.npz` (written by
    sslkit-theory), one per measured mode's colour: dashed, the ODE from the run's initial
    weights; dash-dotted, the optimizer's own iteration of the same model, with a × where it
    crosses ½ (its half-time, beside the measured ●). With `flow=False` the ODE only where
    there is no iteration. Nothing when the run has no prediction."""
    path = Path(run_dir) / layout.THEORY / "curves.npz"
    if not path.exists():
        return
    curves = np.load(path)
    if flow or "iterated" not in curves:
        for k, color in enumerate(colors[: curves["ode"].shape[1]]):
            ax.plot(curves["step"], curves["ode"][:, k], color=color, lw=0.8, ls="--",
                    label="predicted (ODE)" if k == 0 else None)
    if "iterated" not in curves:
        return
    steps, iterated = curves["step"], curves["iterated"][:, : len(colors)]
    half = crossing_times(steps.astype(float), iterated)
    for k, color in enumerate(colors[: iterated.shape[1]]):
        ax.plot(steps, iterated[:, k], color=color, lw=0.8, ls="-.",
                label="predicted (SGD on the linearised model), × at ½" if k == 0 else None)
        if np.isfinite(half[k]):
            ax.plot(half[k], 0.5, "x", color=color, ms=6)


def theory_loss(ax, run_dir: Path) -> None:
    """Dash-dotted in the loss panel: the predicted staircase Σᵢ (1 − cᵢ)² of the optimizer's
    iteration in `run_dir/theory/curves.npz`, when there is one."""
    path = Path(run_dir) / layout.THEORY / "curves.npz"
    if path.exists() and "iterated" in (curves := np.load(path)):
        ax.plot(curves["step"], ((1 - curves["iterated"]) ** 2).sum(1), color="grey", lw=1, ls="-.",
                label="predicted (SGD on the linearised model)")


def theory_table(run_dir: str | Path) -> str | None:
    """The table mode / γ / predicted half-time (closed form and ODE) / measured / relative
    error of the closed form, in steps, from `run_dir/theory/modes.json` and the run's
    spectra, for the modes predicted or measured to cross ½ within the run; None when the
    run has no prediction. A prediction that also iterated the optimizer adds its half-time
    (`iterated`) and the measured one's relative error against it."""
    path = Path(run_dir) / layout.THEORY / "modes.json"
    if not path.exists():
        return None
    theory = json.loads(path.read_text())
    spectra = load(run_dir)
    measured = crossing_times(spectra["step"].astype(float), spectra["xcorr"])
    iterated = theory.get("iterated_half_time_steps")
    extra = iterated is not None
    rows = [f"{'mode':>4} {'gamma':>9} {'predicted':>10} {'ODE':>10}" + (f" {'iterated':>10}" if extra else "")
            + f" {'measured':>10} {'rel. error':>10}" + (f" {'vs iter.':>10}" if extra else "")]
    for k, (g, pred, ode) in enumerate(zip(theory["gamma"], theory["half_time_steps"],
                                           theory["ode_half_time_steps"])):
        meas = measured[k] if k < len(measured) else np.nan
        ode = np.nan if ode is None else ode
        it = np.nan if not extra or k >= len(iterated) or iterated[k] is None else iterated[k]
        if np.isnan(meas) and min(pred, np.inf if np.isnan(it) else it) > spectra["step"][-1]:
            continue
        rows.append(f"{k + 1:>4} {g:>9.4g} {pred:>10.1f} {ode:>10.1f}" + (f" {it:>10.1f}" if extra else "")
                    + f" {meas:>10.1f} {meas / pred - 1:>+10.3f}" + (f" {meas / it - 1:>+10.3f}" if extra else ""))
    return "\n".join(rows)


def shown(run_dir: str | Path) -> str:
    """run_dir as a title shows it: relative to the working directory when inside it."""
    path = Path(run_dir).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def read_config(run_dir: str | Path) -> dict:
    """The run's config.yaml as {"dotted.key": value}; {} when it is missing."""
    path = Path(run_dir) / layout.CONFIG
    return flatten(yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def describe(config: dict) -> str:
    """The settings that shape the curves, from a flattened config: loss (and its
    settings), backbone (width, init scale), projector (and its sizes), optimizer and
    learning rate, data and batch."""
    def short(key: str) -> str:
        return str(config.get(key, "?")).rsplit(".", 1)[-1]

    def settings(group: str, skip: tuple[str, ...] = ()) -> str:
        items = [f"{k.split('.', 1)[1]}={v}" for k, v in config.items()
                 if k.startswith(group + ".") and k.count(".") == 1 and not k.endswith(("._target_", *skip))]
        return ", ".join(items)

    parts = []
    if "loss._target_" in config:
        parts.append(f"{short('loss._target_').removesuffix('Loss')} ({settings('loss')})")
    if "backbone.network" in config or "backbone.init_scale" in config:
        arch = config.get("backbone.arch") or short("backbone.network")
        keys = [k for k in ("out_dim", "width", "depth", "init_scale") if f"backbone.{k}" in config]
        parts.append(f"{arch} " + ", ".join(f"{k}={config[f'backbone.{k}']}" for k in keys))
    if "projector._target_" in config:
        sizes = settings("projector")
        parts.append(f"projector {short('projector._target_')}" + (f" ({sizes})" if sizes else ""))
    if "optim.lr" in config:
        parts.append(f"{short('optim._target_') if 'optim._target_' in config else 'optimizer'} "
                     f"lr={config['optim.lr']}")
    if "data.batch_size" in config:
        parts.append(f"{short('data._target_') if 'data._target_' in config else 'data'}, "
                     f"batch {config['data.batch_size']}")
    return " · ".join(parts) or "(no config.yaml)"


def run_labels(run_dirs: list[Path]) -> list[str]:
    """`key=value` for the config keys in which the runs differ (from each config.yaml,
    `differences`); the directory names when the configs are the same or missing."""
    differ = differences([read_config(d) for d in run_dirs])
    if not differ[0] or len(run_dirs) == 1:
        return [Path(d).name for d in run_dirs]
    return [", ".join(f"{k}={v}" for k, v in d.items()) for d in differ]


def differences(configs: list[dict]) -> list[dict]:
    """For each flattened config, {key: value} of the keys in which the configs differ,
    less those that change nothing drawn (`NOT_DRAWN`). A subtree that some config lacks
    (eval.knn under eval=none, null there) is one key, whose value is its class (the short
    name of its `_target_`), or None where it is missing."""
    keys = sorted({k for c in configs for k in c if len({repr(d.get(k)) for d in configs}) > 1
                   and not any(k == n or k.startswith(n + ".") for n in NOT_DRAWN)})

    def whole(key: str) -> str:  # the shortest prefix of key that some config has nothing under
        parts = key.split(".")
        prefixes = (".".join(parts[:n]) for n in range(1, len(parts)))
        return next((p for p in prefixes if any(not any(k.startswith(p + ".") for k in c) for c in configs)), key)

    def value(c: dict, key: str):
        if key in keys:
            return c.get(key)
        target = c.get(f"{key}._target_")
        if target:
            return str(target).rsplit(".", 1)[-1]
        return "{…}" if any(k.startswith(key + ".") for k in c) else None

    shown_keys = list(dict.fromkeys(whole(k) for k in keys))
    return [{k: value(c, k) for k in shown_keys} for c in configs]


def _cross_correlation(spectra: dict[str, np.ndarray]) -> str:
    """The series to draw in panel (a): C of the embeddings if recorded, else the first."""
    series = [k for k in spectra if k != "step" and "/" not in k]
    return "xcorr" if "xcorr" in series else ("feat_xcorr" if "feat_xcorr" in series else series[0])


def _loss_lines(ax, metrics: list[dict]) -> None:
    """The loss (black) and each of its terms vs step."""
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["loss"] for m in metrics], color="black", lw=1.5, label="loss")
    for key in _loss_terms(metrics):
        ax.plot(steps, [m.get(key, np.nan) for m in metrics], lw=1, label=key)


def _loss_terms(metrics: list[dict]) -> list[str]:
    keys = dict.fromkeys(k for m in metrics for k in m)
    return [k for k in keys if k not in NOT_LOSS and k != "loss" and "/" not in k]


def _eigenvalue_line(ax, steps: np.ndarray, values: np.ndarray, color, label: str | None) -> None:
    """The eigenvalue on the log scale; where it is ≤ 0 the line breaks and a ▾ at the
    bottom of the axis marks the step (`_mark_non_positive`, once the axis range is set)."""
    positive = np.where(values > 0, values, np.nan)
    line, = ax.plot(steps, positive, color=color, lw=0.8, alpha=0.9, label=label)
    line.non_positive = steps[values <= 0]
    crossed = crossing_steps(steps, values[:, None])[0]
    if crossed >= 0:
        ax.plot(crossed, 0.5, "o", color=color, ms=4)


def _summary_line(ax, steps: np.ndarray, values: np.ndarray, label: str | None, color=None, ls: str = "-") -> None:
    ok = np.isfinite(values)  # tracked matrices have entropy summaries at the exact steps only
    ax.plot(steps[ok], values[ok], ls=ls, lw=1, color=color, label=label, marker="." if ok.sum() < 50 else None)


def accuracy_keys(metrics: list[dict]) -> list[str]:
    """The held-out top-1 accuracies a run logged (`eval/<probe>/<features>/top1`)."""
    return [k for k in dict.fromkeys(k for m in metrics for k in m) if k.startswith("eval/") and k.endswith("/top1")]


def _accuracy_panels(ax_eig, ax_acc, ax_modes, spectra: dict[str, np.ndarray], metrics: list[dict],
                     crossed: np.ndarray, colors) -> None:
    """(e) each held-out accuracy vs step, the ½-crossings of the modes of C as vertical
    lines in their colours, also in (a); (f) accuracy vs the number of learned modes of C
    at the same step."""
    for label, steps, acc in _accuracy_lines(ax_acc, metrics):
        if "xcorr/learned" in spectra:
            learned = np.interp(steps, spectra["step"], spectra["xcorr/learned"])
            ax_modes.plot(learned, acc, ".", ms=4, label=label)
    for k, step in enumerate(crossed):
        if step >= 0:
            for ax in (ax_eig, ax_acc):
                ax.axvline(step, color=colors[k], lw=0.6, ls=":")
    _label_accuracy(ax_eig, ax_acc, ax_modes, "Held-out accuracy; ⋮ a mode of C reaches ½")


def _label_accuracy(ax_steps, ax_acc, ax_modes, title: str) -> None:
    """Axes of (e), on the steps of `ax_steps`, and of (f)."""
    ax_acc.sharex(ax_steps)
    ax_acc.set(xlabel="step", ylabel="top-1 accuracy (%)", title=title)
    if ax_modes is not None:
        ax_modes.set(xlabel="learned modes of C (eigenvalue ≥ ½)", ylabel="top-1 accuracy (%)",
                     title="Accuracy vs learned modes")


def _accuracy_lines(ax, metrics: list[dict]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Each held-out accuracy vs step, labelled `<probe>/<features>`; returns (label, steps,
    accuracies) for each."""
    curves = _accuracies(metrics)
    for label, steps, acc in curves:
        ax.plot(steps, acc, lw=1.2, marker="." if len(steps) < 50 else None, label=label)
    return curves


def _accuracies(metrics: list[dict]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(`<probe>/<features>`, steps, values) of each held-out top-1 accuracy, at the steps
    that logged it."""
    curves = []
    for key in accuracy_keys(metrics):
        rows = [m for m in metrics if key in m]
        curves.append((key.removeprefix("eval/").removesuffix("/top1"), np.array([m["step"] for m in rows]),
                       np.array([m[key] for m in rows])))
    return curves


def _axes(accuracy: bool = False, spectra: bool = True, linear: bool = False):
    """Panels (a)–(d) in a 2 × 2 grid; with `accuracy`, a 2 × 3 grid whose top row is (a), (e),
    (f). Without `spectra`, (d) and with `accuracy` (e) side by side, the others None: the
    list is always indexed (a), (b), (c), (d), (e), (f). With `linear`, a seventh panel (g),
    the eigenvalues on a linear scale, sits at the top left above the loss (d), and (a) beside
    it: a 2 × 3 grid, or 2 × 4 with `accuracy`; the axes are made in the order (a) … (g)."""
    if not spectra:
        fig, grid = plt.subplots(1, 1 + accuracy, figsize=(6 + 6 * accuracy, 5), layout="constrained", squeeze=False)
        return fig, [None, None, None, *grid.ravel(), *[None] * (2 - accuracy)]
    if linear:
        fig = plt.figure(figsize=(24 if accuracy else 18, 8.5), layout="constrained")
        grid = fig.add_gridspec(2, 4 if accuracy else 3)
        cells = [(0, 1), (1, 1), (1, 2), (1, 0)] + ([(0, 2), (0, 3)] if accuracy else [])
        axes = [fig.add_subplot(grid[cell]) for cell in cells]
        return fig, [*axes, *[None] * (2 - 2 * accuracy), fig.add_subplot(grid[0, 0])]
    if not accuracy:
        fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), layout="constrained")
        return fig, axes.ravel()
    fig, grid = plt.subplots(2, 3, figsize=(18, 8.5), layout="constrained")
    return fig, [grid[0, 0], grid[1, 0], grid[1, 1], grid[1, 2], grid[0, 1], grid[0, 2]]


def _mark_non_positive(ax) -> None:
    """A ▾ at the bottom of the log axis for every step at which an eigenvalue is ≤ 0
    (a log scale cannot draw it), and a note saying so."""
    bottom, count = ax.get_ylim()[0], 0
    for line in list(ax.get_lines()):
        steps = getattr(line, "non_positive", np.empty(0))
        if len(steps):
            ax.plot(steps, np.full(len(steps), bottom), "v", color=line.get_color(), ms=3, clip_on=False)
            count += len(steps)
    ax.set_ylim(bottom=bottom)
    if count:
        ax.text(0.01, 0.01, f"▾ eigenvalue ≤ 0 ({count} points), drawn at the axis floor", transform=ax.transAxes,
                fontsize=7, va="bottom")


def _finish(fig, axes, title: str, steps: list) -> None:
    """Axis labels and scales; every panel spans the same steps (those of all series)."""
    for ax in axes[:4]:
        ax.set_xlim(*_span(steps))
    axes[0].set_yscale("log")
    _mark_non_positive(axes[0])
    axes[0].axhline(0.5, color="grey", lw=0.5, ls=":")
    axes[0].set(xlabel="step", ylabel="eigenvalue (log scale); ● first reaches ½")
    axes[1].set(xlabel="step", ylabel="dimensions", title="Effective rank, RankMe, learned modes")
    axes[2].set(xlabel="step", ylabel="½ log det Σ (span of the batch)", title="Gaussian log-det entropy")
    _loss_axis(axes[3])
    for ax in axes:
        if ax is not None and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle(textwrap.fill(title, 150, replace_whitespace=False), fontsize=9)


def _finish_curves(fig, axes, title: str, steps: list) -> None:
    """`_finish` for a figure without spectra: (d) and (e) over the same steps, labelled."""
    _loss_axis(axes[3])
    axes[3].set_xlim(*_span(steps))
    if axes[4] is not None:
        _label_accuracy(axes[3], axes[4], None, "Held-out accuracy")
    for ax in axes[3:5]:
        if ax is not None and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    lines = [*title.split("\n"), "no spectra (trained with spectrum=off)"]
    fig.suptitle("\n".join(textwrap.fill(line, 70 if axes[4] is None else 150) for line in lines), fontsize=9)


def _span(steps: list) -> tuple[float, float]:
    """The x range of panels that share their steps: those of every series (at least one step wide)."""
    steps = np.concatenate([np.asarray(s, dtype=float) for s in steps if len(s)] or [[0.0]])
    return steps.min(), max(steps.max(), steps.min() + 1)


def _loss_axis(ax) -> None:
    """Labels of panel (d), on a log scale when the loss spans more than two orders of magnitude."""
    ax.set(xlabel="step", ylabel="loss", title="Loss and its terms")
    lines = [line for line in ax.get_lines() if len(line.get_ydata())]  # drawn lines; the total
    lines = [line for line in lines if line.get_label() == "loss"] or lines  # loss: labelled so, or every run
    loss = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in lines] or [[]])
    if np.isfinite(loss).any() and np.nanmin(loss) > 0 and np.nanmax(loss) > 100 * np.nanmin(loss):
        ax.set_yscale("log")  # the loss spans orders of magnitude


def _save(fig, stem: Path, pdf: bool = True) -> Path:
    """Write `fig` to `stem`.png and, with `pdf`, `stem`.pdf; returns the PNG's path."""
    png = stem.with_suffix(".png")
    fig.savefig(png, dpi=130)
    if pdf:
        fig.savefig(stem.with_suffix(".pdf"))
    plt.close(fig)
    return png
