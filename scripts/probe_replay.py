"""Record the online probe's inputs during a run, then replay sslkit.eval.OnlineProbe on them.

    python scripts/probe_replay.py record RUN_DIR OVERRIDE...   # sslkit-train OVERRIDE... hydra.run.dir=RUN_DIR
    python scripts/probe_replay.py check RUN_DIR...              # replay == the run's logged accuracies?
    python scripts/probe_replay.py compare RUN_DIR... --setting "steps_per_batch=1 weight_decay=0" [--fixed]
    python scripts/probe_replay.py drift RUN_DIR                 # how fast a fitted head goes stale

The probe never changes the SSL trajectory, so one run fixes everything the probe sees: the
features of each training batch (with its labels), and the held-out features at every
evaluation. `record` trains as `sslkit-train` does (in this process, the same code) and
saves them in RUN_DIR/probe_record.pt, with the final network's features of the same
batches (`final`: the trajectory's batch order on features held fixed) and the sslkit-eval
cache of the final checkpoint (all labelled training samples). `replay` trains a fresh
OnlineProbe on a recording in seconds, with any constructor arguments; `check` replays the
run's own settings and compares with its metrics.jsonl, which must agree exactly before a
replayed number means anything. `compare` replays each `--setting` (OnlineProbe arguments
over the run's own; `--fixed`: on the final features) and prints its last top-1 minus
sslkit-eval's (L-BFGS at the setting's λ, the one constant both fits share;
`--weight-decay`: a λ of sslkit-eval's own), the held-out digits on which the two
classifiers disagree, McNemar's exact test of equal accuracy on those digits, and both
accuracies, per run and summed up over the runs, with the number of runs in which two equally
accurate fits with those disagreements would be more than 1 point apart by chance alone.
`drift` needs no recording, only a run's checkpoints (`trainer.checkpoint_every` small):
sslkit-eval's fit at each checkpoint, scored on that checkpoint's held-out features and on
those of later ones, which says how fast the features move under a fixed head.
"""

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import Tensor

from sslkit import checkpoint, layout
from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs
from sslkit.eval import Evaluation, OnlineProbe, extract, fit_linear, topk_accuracy
from sslkit.eval.evaluation import classes_of
from sslkit.eval.offline import features as offline_features
from sslkit.eval.offline import load_model
from sslkit.records import read_metrics


def record(run_dir: Path, overrides: list[str]) -> None:
    """Train `sslkit-train OVERRIDES` in run_dir and save the probe's inputs."""
    from sslkit.train import train

    register_configs()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "trainer.progress=false", "trainer.report=false"])
    rec = {"x": [], "y": [], "features": [], "test": {}, "logged": {}}
    after_step, train_step = Evaluation.after_step, OnlineProbe.train_step

    def recording_train_step(self, features, labels):
        rec["features"].append({k: v.detach().clone().cpu() for k, v in features.items()})
        return train_step(self, features, labels)

    def recording_after_step(self, step, out, x, y):
        result = after_step(self, step, out, x, y)
        rec["x"].append(x.clone().cpu())
        rec["y"].append(y.clone().cpu())
        if result:  # the held-out features this evaluation scored
            rec["test"][step] = {k: v.cpu() for k, v in self._features(self.test_x, set(self.probe.heads)).items()}
            rec["logged"][step] = result
            rec["setup"] = {"dims": {k: v.shape[1] for k, v in rec["test"][step].items()},
                            "classes": self.classes, "total_steps": self.steps, "test_y": self.test_y.cpu()}
        return result

    Evaluation.after_step, OnlineProbe.train_step = recording_after_step, recording_train_step
    try:
        train(cfg, run_dir)
    finally:
        Evaluation.after_step, OnlineProbe.train_step = after_step, train_step
    ckpt = run_dir / layout.CHECKPOINTS / checkpoint.LAST
    _, _, augment, net, _ = load_model(ckpt, torch.device("cpu"))
    kinds = list(rec["features"][0])
    rec["final"] = [{k: v for k, v in extract(net, x, augment.clean, 1024, torch.device("cpu"),
                                              "projector" in kinds).items() if k in kinds} for x in rec["x"]]
    rec["offline"] = {k: offline_features(ckpt, run_dir, k, 0, torch.device("cpu"), 1024) for k in kinds}
    rec["probe"] = OmegaConf.to_container(cfg.eval.online_probe, resolve=True)
    rec["overrides"] = overrides
    del rec["x"]
    torch.save(rec, run_dir / "probe_record.pt")


def replay(rec: dict, inputs: str = "features", **probe) -> dict[int, dict]:
    """{eval step: {kind: top-1 %}} of an OnlineProbe with the run's arguments updated by
    `probe`, trained on rec[inputs] ("features": the trajectory; "final": the final
    network's features of the same batches) and scored on the recorded held-out features
    (inputs="final": the last evaluation's, at every evaluation step)."""
    args = {k: v for k, v in rec["probe"].items() if k != "_target_"}
    args.update(probe)
    setup = rec["setup"]
    p = OnlineProbe(setup["dims"], setup["classes"], setup["total_steps"], **args)
    last = max(rec["test"])
    out = {}
    for step, (f, y) in enumerate(zip(rec[inputs], rec["y"])):
        p.train_step(f, y)
        if step in rec["test"]:
            out[step] = p.scores(rec["test"][last if inputs == "final" else step])
    return out


def _value(text: str) -> int | float | str:
    """A --setting value as OnlineProbe takes it: 4 → int, 1e-4 → float, cosine → str."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def mcnemar(a_right: Tensor, b_right: Tensor) -> float:
    """Exact two-sided p-value of McNemar's test that classifiers a and b are equally
    accurate on these samples: of the n samples exactly one of them gets right, a gets k;
    under equal accuracy k ~ Binomial(n, ½), p = min(1, 2·P(K ≤ min(k, n − k)))."""
    k, n = int((a_right & ~b_right).sum()), int((a_right ^ b_right).sum())
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n)


def chance_of_a_gap(a_right: Tensor, b_right: Tensor, points: float = 1.0) -> float:
    """Probability that two equally accurate classifiers, disagreeing about right and wrong on
    as many samples as a and b do, differ in accuracy by more than `points`: of those n
    samples a gets K ~ Binomial(n, ½), and the gap is 100·|2K − n|/N on N samples."""
    n, total = int((a_right ^ b_right).sum()), a_right.numel()
    return sum(math.comb(n, k) for k in range(n + 1) if 100 * abs(2 * k - n) / total > points + 1e-9) / 2**n


class Comparison(NamedTuple):
    """One run and setting: the probe's last top-1 against sslkit-eval's."""
    gap: float  # probe − sslkit-eval, points
    differ: int  # held-out samples the two classify differently
    p: float  # McNemar's exact test of equal accuracy
    chance: float  # probability of a gap over 1 point if both were equally accurate
    probe: float
    offline: float


def compare(run_dirs: list[Path], settings: list[str], fixed: bool, weight_decay: float | None) -> None:
    """Per run and setting: last top-1 − sslkit-eval's at the setting's λ (or `weight_decay`),
    the disagreeing held-out digits, and both top-1s."""
    rows: dict[str, list[Comparison]] = {s: [] for s in settings}
    for run_dir in run_dirs:
        rec = torch.load(run_dir / "probe_record.pt", weights_only=False)
        o = rec["offline"]["backbone"]
        offline: dict[float, tuple[Tensor, float]] = {}  # λ: sslkit-eval's predictions, top-1
        line = f"{run_dir.name}:"
        for setting in settings:
            args = {k: _value(v) for k, v in (kv.split("=") for kv in setting.split())}
            lam = args.get("weight_decay", rec["probe"]["weight_decay"]) if weight_decay is None else weight_decay
            if lam not in offline:
                fit = fit_linear(o["train_x"], o["train_y"], rec["setup"]["classes"], lam).eval()
                scores = fit(o["test_x"]).detach()
                offline[lam] = scores.argmax(1), topk_accuracy(scores, o["test_y"])[1]
            reference, offline_top1 = offline[lam]
            replayed = replay(rec, "final" if fixed else "features", **args)
            scores = replayed[max(replayed)]["backbone"]
            top1 = topk_accuracy(scores, o["test_y"])[1]
            right, reference_right = scores.argmax(1) == o["test_y"], reference == o["test_y"]
            row = Comparison(top1 - offline_top1, int((scores.argmax(1) != reference).sum()),
                             mcnemar(right, reference_right), chance_of_a_gap(right, reference_right), top1,
                             offline_top1)
            rows[setting].append(row)
            line += (f" | {setting or 'recorded'}: {row.gap:+.2f} ({row.differ} differ, "
                     f"McNemar p = {row.p:.2f}; probe {top1:.2f}, sslkit-eval λ={lam:g} {offline_top1:.2f})")
        print(line, flush=True)
    for setting, r in rows.items():
        print(f"{setting or 'recorded'}{' (final features)' if fixed else ''}: within 1 point in "
              f"{sum(abs(c.gap) <= 1 + 1e-6 for c in r)}/{len(r)}, mean |gap| "
              f"{statistics.mean(abs(c.gap) for c in r):.2f}, mean gap {statistics.mean(c.gap for c in r):+.2f}, "
              f"mean disagreeing samples {statistics.mean(c.differ for c in r):.1f}, McNemar p < 0.05 in "
              f"{sum(c.p < 0.05 for c in r)}/{len(r)}, more than 1 point apart by chance alone in "
              f"{sum(c.chance for c in r):.1f} if equally accurate, mean top-1: probe "
              f"{statistics.mean(c.probe for c in r):.2f}, sslkit-eval {statistics.mean(c.offline for c in r):.2f}")


def check(run_dir: Path) -> bool:
    rec = torch.load(run_dir / "probe_record.pt", weights_only=False)
    replayed = {step: {k: topk_accuracy(s, rec["setup"]["test_y"])[1] for k, s in scores.items()}
                for step, scores in replay(rec).items()}
    ok = True
    for step, logged in rec["logged"].items():
        for kind, top1 in replayed[step].items():
            if top1 != logged[f"eval/probe/{kind}/top1"]:
                ok = False
                print(f"{run_dir} step {step} {kind}: replay {top1} != logged {logged[f'eval/probe/{kind}/top1']}")
    rows = read_metrics(run_dir)
    on_file = {r["step"]: r["eval/probe/backbone/top1"] for r in rows if "eval/probe/backbone/top1" in r}
    ok &= all(on_file[s] == rec["logged"][s]["eval/probe/backbone/top1"] for s in rec["logged"])
    print(f"{run_dir}: {'replay == logged' if ok else 'MISMATCH'} at {len(rec['logged'])} evaluations "
          f"(last {replayed[max(replayed)]})")
    return ok


def drift(run_dir: Path) -> tuple[dict[int, float], dict[int, list[float]]]:
    """({step: sslkit-eval's top-1 at that checkpoint}, {d: [change]}): for each distance d
    between checkpoints, the change in top-1 when the fit of step s scores the held-out
    features of step s + d instead of the fit of step s + d, one per such pair."""
    cache = {f["step"]: f for f in (offline_features(c, run_dir, "backbone", 0, torch.device("cpu"), 1024)
                                    for c in checkpoint.step_files(run_dir / layout.CHECKPOINTS))}
    steps = sorted(cache)
    classes = classes_of(*(cache[s]["train_y"] for s in steps))
    fits = {s: fit_linear(cache[s]["train_x"], cache[s]["train_y"], classes).eval() for s in steps}

    def top1(fit_step: int, step: int) -> float:
        return topk_accuracy(fits[fit_step](cache[step]["test_x"]).detach(), cache[step]["test_y"])[1]

    own = {s: top1(s, s) for s in steps}
    distances = sorted({t - s for s in steps for t in steps if t > s})
    return own, {d: [top1(s, s + d) - own[s + d] for s in steps if s + d in fits] for d in distances}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("run_dir", type=Path)
    r.add_argument("overrides", nargs="*")
    c = sub.add_parser("check")
    c.add_argument("run_dirs", type=Path, nargs="+")
    m = sub.add_parser("compare")
    m.add_argument("run_dirs", type=Path, nargs="+")
    m.add_argument("--setting", action="append", default=None,
                   help='OnlineProbe arguments, e.g. "steps_per_batch=4 weight_decay=1e-4"; "" the recorded ones')
    m.add_argument("--fixed", action="store_true", help="replay on the final network's features of the same batches")
    m.add_argument("--weight-decay", type=float, default=None,
                   help="sslkit-eval's λ (default: the setting's, the probe's λ)")
    d = sub.add_parser("drift")
    d.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if args.command == "drift":
        accuracy, change = drift(args.run_dir)
        print(f"{args.run_dir}: sslkit-eval top-1 at step " + ", ".join(f"{s}: {a:.2f}" for s, a in accuracy.items()))
        for distance, c in change.items():
            print(f"  the fit of step s on the features of step s + {distance}: {statistics.mean(c):+.2f} points "
                  f"(from {min(c):+.2f} to {max(c):+.2f}, {len(c)} pairs)")
    elif args.command == "record":
        record(args.run_dir, args.overrides)
    elif args.command == "compare":
        compare(args.run_dirs, args.setting or [""], args.fixed, args.weight_decay)
    else:
        sys.exit(0 if all(check(d) for d in args.run_dirs) else 1)


if __name__ == "__main__":
    main()
