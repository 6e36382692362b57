"""Record the online probe's inputs during a run, then replay sslkit.eval.OnlineProbe on them.

    python scripts/probe_replay.py record RUN_DIR OVERRIDE...   # sslkit-train OVERRIDE... hydra.run.dir=RUN_DIR
    python scripts/probe_replay.py check RUN_DIR...              # replay == the run's logged accuracies?

The probe never changes the SSL trajectory, so one run fixes everything the probe sees: the
features of each training batch (with its labels), and the held-out features at every
evaluation. `record` trains as `sslkit-train` does (in this process, the same code) and
saves them in RUN_DIR/probe_record.pt, with the final network's features of the same
batches (`final`: the trajectory's batch order on features held fixed) and the sslkit-eval
cache of the final checkpoint (all labelled training samples). `replay` trains a fresh
OnlineProbe on a recording in seconds, with any constructor arguments; `check` replays the
run's own settings and compares with its metrics.jsonl, which must agree exactly before a
replayed number means anything.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs
from sslkit.eval import Evaluation, OnlineProbe, extract, topk_accuracy
from sslkit.eval.offline import features as offline_features
from sslkit.eval.offline import load_model


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
    ckpt = run_dir / "checkpoints" / "last.pt"
    _, _, augment, net, _ = load_model(ckpt, torch.device("cpu"))
    kinds = list(rec["features"][0])
    rec["final"] = [{k: v for k, v in extract(net, x, augment.clean, 1024, torch.device("cpu"),
                                              "projector" in kinds).items() if k in kinds} for x in rec["x"]]
    rec["offline"] = {k: offline_features(ckpt, run_dir, k, 0, torch.device("cpu"), 1024) for k in kinds}
    rec["probe"] = OmegaConf.to_container(cfg.eval.online_probe, resolve=True)
    rec["overrides"] = overrides
    del rec["x"]
    torch.save(rec, run_dir / "probe_record.pt")


def replay(rec: dict, inputs: str = "features", score_features: dict | None = None, **probe) -> dict[int, dict]:
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
            test = rec["test"][last if inputs == "final" else step]
            out[step] = {k: topk_accuracy(s, setup["test_y"])[1] for k, s in p.scores(test).items()}
    return out


def check(run_dir: Path) -> bool:
    rec = torch.load(run_dir / "probe_record.pt", weights_only=False)
    replayed = replay(rec)
    ok = True
    for step, logged in rec["logged"].items():
        for kind, top1 in replayed[step].items():
            if top1 != logged[f"eval/probe/{kind}/top1"]:
                ok = False
                print(f"{run_dir} step {step} {kind}: replay {top1} != logged {logged[f'eval/probe/{kind}/top1']}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    on_file = {r["step"]: r["eval/probe/backbone/top1"] for r in rows if "eval/probe/backbone/top1" in r}
    ok &= all(on_file[s] == rec["logged"][s]["eval/probe/backbone/top1"] for s in rec["logged"])
    print(f"{run_dir}: {'replay == logged' if ok else 'MISMATCH'} at {len(rec['logged'])} evaluations "
          f"(last {replayed[max(replayed)]})")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("run_dir", type=Path)
    r.add_argument("overrides", nargs="*")
    c = sub.add_parser("check")
    c.add_argument("run_dirs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "record":
        record(args.run_dir, args.overrides)
    else:
        sys.exit(0 if all(check(d) for d in args.run_dirs) else 1)


if __name__ == "__main__":
    main()
