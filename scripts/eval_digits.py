"""The README's digits table: raw-pixel baselines beside sslkit's representations.

    python scripts/eval_digits.py [--steps N] [--seed S]

Baselines on the 64 raw pixels (scaled to [0, 1]): the weighted kNN of `eval=knn`
(k = 20, cosine, T = 0.07) and logistic regression (sslkit.eval.fit_linear: standardised
pixels, L-BFGS, λ = 1e-4). Then, for Barlow Twins, SimCLR and VICReg with the MLP backbone
and projector, each trained from the shell on the first 1500 digits (data.split=train)
with eval=[online_probe,knn], it reads the final kNN and online-probe accuracies from
metrics.jsonl and runs `sslkit-eval RUN_DIR` (offline L-BFGS on the cached clean
features). Every accuracy is top-1 on the held-out last 297 digits. Prints a Markdown table.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sslkit import layout
from sslkit.data import digits
from sslkit.eval import fit_linear, knn_scores, topk_accuracy
from sslkit.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "Barlow Twins": ["loss=barlow_twins"],
    "SimCLR": ["loss=simclr"],
    "VICReg": ["loss=vicreg", "optim=lars"],
}
COMMON = ["~experiment", "backbone=mlp", "projector=mlp", "data.split=train", "eval=[online_probe,knn]", "spectrum=off",
          "trainer.progress=false", "trainer.report=false"]


def raw_pixels() -> dict[str, float]:
    train, test = digits(1, split="train"), digits(1, split="test")
    x, xt = (d.x.flatten(1).float() / 255 for d in (train, test))
    knn = knn_scores(x, train.y, xt, 20, 10, temperature=0.07)
    linear = fit_linear(x, train.y, 10, weight_decay=1e-4).eval()(xt).detach()
    return {"knn20": topk_accuracy(knn, test.y)[1], "linear": topk_accuracy(linear, test.y)[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    base = raw_pixels()
    lines = ["| representation | kNN (k = 20) | online probe | linear (sslkit-eval) |", "|---|---|---|---|",
             f"| raw pixels (64) | {base['knn20']:.1f} | — | {base['linear']:.1f} |"]
    for name, overrides in METHODS.items():
        run_dir = ROOT / "runs" / "eval_digits" / name.replace(" ", "_").lower()
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([bin_dir / "sslkit-train", *overrides, *COMMON, f"trainer.max_steps={args.steps}",
                        f"seed={args.seed}", f"hydra.run.dir={run_dir}"], check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        last = read_metrics(run_dir)[-1]
        subprocess.run([sys.executable, "-m", "sslkit.eval.offline", str(run_dir)], check=True, cwd=ROOT)
        offline = json.loads((run_dir / layout.LINEAR_EVAL).read_text())["top1"]
        lines.append(f"| {name}, MLP, {args.steps} steps | {last['eval/knn20/backbone/top1']:.1f} | "
                     f"{last['eval/probe/backbone/top1']:.1f} | {offline:.1f} |")
        print(f"{name}: {wall:.0f} s training", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
