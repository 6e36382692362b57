"""Regenerate the README figures: run each experiment from the shell, exactly as a user
would, and copy its report figure to scripts/figures/<experiment>.png.

    python scripts/make_figures.py [experiment ...] [-- OVERRIDES...]    (default: the four stepwise experiments)

Prints the wall time and the step at which each of the first modes of C crossed ½. For the
experiments in WITH_THEORY it then runs `sslkit-theory` into the run and redraws the figure
with `sslkit-report`, which prints the predicted vs measured ½-crossings.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

from sslkit import layout
from sslkit.spectrum import crossing_steps, load

ROOT = Path(__file__).resolve().parents[1]
WITH_THEORY = ("stepwise_deep_digits",)  # figures drawn with sslkit-theory's prediction


def main(experiments: list[str], overrides: list[str]) -> None:
    for experiment in experiments:
        run_dir = ROOT / "runs" / "figures" / experiment
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([Path(sys.executable).parent / "sslkit-train", f"experiment={experiment}", *overrides,
                        f"hydra.run.dir={run_dir}"], check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        spectra = load(run_dir)
        crossed = crossing_steps(spectra["step"], spectra["xcorr"])
        print(f"{experiment}: wall {wall:.1f} s (whole command); modes of C crossing 1/2 at steps "
              f"{[int(s) for s in crossed if s >= 0]}")
        if experiment in WITH_THEORY:
            bin_dir = Path(sys.executable).parent
            subprocess.run([bin_dir / "sslkit-theory", f"experiment={experiment}", *overrides,
                            f"hydra.run.dir={run_dir}"], check=True, cwd=ROOT)
            subprocess.run([bin_dir / "sslkit-report", run_dir], check=True, cwd=ROOT)
        shutil.copy(run_dir / f"{layout.FIGURE}.png", ROOT / "scripts" / "figures" / f"{experiment}.png")


if __name__ == "__main__":
    args = sys.argv[1:]
    split = args.index("--") if "--" in args else len(args)
    main(args[:split] or ["stepwise_digits", "stepwise_synthetic", "stepwise_ntk_digits",
                                     "stepwise_deep_digits"], args[split + 1:])
