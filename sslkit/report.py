"""Figures from a run directory: the stepwise picture of Simon et al. (2023), Fig. 1."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sslkit.spectrum import crossing_steps, load  # noqa: E402


def read_metrics(run_dir: str | Path) -> list[dict]:
    with open(Path(run_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def stepwise_figure(run_dir: str | Path, modes: int = 12) -> Path:
    """Write `run_dir/stepwise.png`: the top eigenvalues of the symmetrised cross-correlation
    C vs step, with the step where each crosses ½ marked, and the loss and its terms."""
    run_dir = Path(run_dir)
    spectra, metrics = load(run_dir), read_metrics(run_dir)
    steps, xcorr = spectra["step"], spectra["xcorr"][:, :modes]
    crossed = crossing_steps(steps, xcorr)

    fig, (ax_eig, ax_loss) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, xcorr.shape[1]))
    for k in range(xcorr.shape[1]):
        ax_eig.plot(steps, xcorr[:, k], color=colors[k], lw=0.8, alpha=0.9, label=f"λ{k + 1}" if k < 8 else None)
        if crossed[k] >= 0:
            ax_eig.plot(crossed[k], 0.5, "o", color=colors[k], ms=4)
    ax_eig.axhline(0.5, color="grey", lw=0.5, ls=":")
    ax_eig.set(xlabel="step", ylabel="eigenvalue of C", title="Eigenvalues of the cross-correlation C")
    ax_eig.legend(fontsize=7, ncol=2, loc="lower right")

    mstep = [m["step"] for m in metrics]
    ax_loss.plot(mstep, [m["loss"] for m in metrics], color="black", lw=1.5, label="loss")
    for key in metrics[0]:
        if key not in ("step", "epoch", "loss", "lr", "images_per_s"):
            ax_loss.plot(mstep, [m[key] for m in metrics], lw=1, label=key)
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss and its terms")
    ax_loss.legend(fontsize=7)
    fig.suptitle(run_dir.name, fontsize=9)
    path = run_dir / "stepwise.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
