"""Checkpoints: written atomically, the last k kept, read back for an exact resume.

`run_dir/checkpoints/step_<N>.pt` holds everything the run needs to continue: model,
optimizer, scheduler, step, every RNG state, the resolved config, and how far the
run-directory logs had got (so that they are cut back to that point on resume).
`last.pt` is a hard link to the newest. A file is written to `<name>.tmp`, fsynced and
renamed, so a crash or a full disk never leaves a truncated checkpoint under a real name;
an unreadable `last.pt` makes `load_latest` fall back to the previous file.
"""

import logging
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from sslkit import layout
from sslkit.config import flatten
from sslkit.errors import ConfigError

log = logging.getLogger(__name__)

LAST = "last.pt"  # the hard link to the newest step file

# Keys that may change between a run and its resume without changing the steps already taken
# (more steps, a different progress display or checkpoint cadence; a schedule over the run's
# length does change the later steps, and warn_if_schedule_moved says so).
RESUMABLE_CHANGES = ("trainer.max_steps", "trainer.max_epochs", "trainer.progress", "trainer.report",
                     "trainer.resume", "trainer.checkpoint_every", "trainer.keep_checkpoints")
START_OVER = ("trainer.resume=overwrite to discard it and start again from step 0, or a new directory "
              "with hydra.run.dir=...")


def find(cfg: DictConfig, run_dir: Path, device: torch.device, main: bool = True
         ) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint to resume from, per trainer.resume, checked against the current
    config; None to start from step 0. A run directory that already holds a run (its
    metrics.jsonl or a checkpoint) is never written over unless asked:

    auto       resume from its newest readable checkpoint; refuse if it has none;
    never      refuse;
    overwrite  delete its metrics, spectra, checkpoints and sslkit-eval's results and feature
               caches (the `main` process) and start again, with a warning;
    PATH       resume from that checkpoint file (new logs if it is another run's).

    Every process decides from the same files; nothing may write them until all have."""
    resume, ckpt_dir = cfg.trainer.resume, run_dir / layout.CHECKPOINTS
    metrics = run_dir / layout.METRICS
    held = (metrics.exists() and metrics.stat().st_size > 0) or any(ckpt_dir.glob("*.pt"))
    if resume == "overwrite":
        if held and main:
            log.warning("trainer.resume=overwrite: deleting the run in %s (metrics.jsonl, spectrum/, "
                        "checkpoints/, eval/, linear_eval.json) and starting again from step 0", run_dir)
            metrics.unlink(missing_ok=True)
            (run_dir / layout.LINEAR_EVAL).unlink(missing_ok=True)
            for d in (ckpt_dir, run_dir / layout.SPECTRUM, run_dir / layout.EVAL_CACHE):
                shutil.rmtree(d, ignore_errors=True)
        return None
    if resume == "never":
        if held:
            raise ConfigError(f"{run_dir} already holds a run and trainer.resume=never. Resume it with "
                              f"trainer.resume=auto, or use {START_OVER}.")
        return None
    if resume == "auto":
        found = load_latest(ckpt_dir, device)
        if found is None and held:
            raise ConfigError(
                f"{run_dir} already holds a run but no readable checkpoint in {ckpt_dir} (see the warnings "
                f"above, or none was written yet), so it cannot be resumed; starting again would write over "
                f"its logs. Use {START_OVER}.")
    elif Path(resume).is_file():
        found = load(Path(resume), device), Path(resume)
        if held and found[1].parent.resolve() != ckpt_dir.resolve():
            raise ConfigError(f"trainer.resume={resume} would start new logs in {run_dir}, which already "
                              f"holds a run. Choose a new directory with hydra.run.dir=....")
    else:
        raise ConfigError(f"trainer.resume={resume!r} is neither auto, never, overwrite, nor an existing "
                          f"checkpoint file.")
    if found is not None:
        check_same_config(found[0]["config"], cfg, found[1])
    return found


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states. (Batch order and views come from
    counter-based streams, sslkit.rng, which need no state.)"""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def write_atomically(obj: Any, path: Path) -> None:
    """`torch.save` to `<path>.tmp`, fsynced, then renamed to `path`: a crash, a full disk or
    Ctrl-C leaves the previous file or none, never a truncated one under the real name."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save(state: dict[str, Any], ckpt_dir: Path, step: int, keep: int) -> Path:
    """Write `step_<step>.pt` atomically, point `last.pt` at it, keep the newest `keep`."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{step:08d}.pt"
    try:
        write_atomically(state, path)
        link = ckpt_dir / f"{LAST}.tmp"
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, ckpt_dir / LAST)
        _fsync_dir(ckpt_dir)
    except OSError as exc:
        previous = step_files(ckpt_dir)
        raise ConfigError(
            f"Could not write the checkpoint {path}: {exc}. "
            + (f"The previous checkpoint {previous[0]} is intact; " if previous else "")
            + "free space in (or fix permissions of) the run directory and relaunch the same "
            "command to resume."
        ) from exc
    for old in step_files(ckpt_dir)[keep:]:
        old.unlink()
    return path


def load_latest(ckpt_dir: Path, map_location: torch.device) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint in `ckpt_dir` (last.pt, then step files newest first)."""
    candidates = [ckpt_dir / LAST, *step_files(ckpt_dir)]
    for path in candidates:
        if not path.exists():
            continue
        try:
            return load(path, map_location), path
        except ConfigError as exc:
            reason = (str(exc.__cause__ or exc).splitlines() or [type(exc.__cause__).__name__])[0]
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, reason)
    return None


def load(path: Path, map_location: torch.device) -> dict[str, Any]:
    """The state `save` wrote to `path`; a ConfigError naming the file when it holds none
    (torn, truncated, or another kind of file)."""
    hint = "Pass a checkpoint written by sslkit-train: RUN_DIR/checkpoints/last.pt or step_<N>.pt."
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types, with advice about weights_only that does not apply
        raise ConfigError(f"{path} is not a readable checkpoint (torch.load raised {type(exc).__name__}). "
                          f"{hint}") from exc
    if not (isinstance(state, dict) and {"step", "model", "config"} <= state.keys()):
        raise ConfigError(f"{path} is a torch file but not an sslkit checkpoint (no step, model and config). {hint}")
    return state


def config_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def check_same_config(saved_yaml: str, cfg: DictConfig, path: Path) -> None:
    """Refuse to resume a checkpoint made with a different config; list every difference."""
    diff = [f"  {key}: checkpoint {before!r}, now {now!r}"
            for key, (before, now) in differences(saved_yaml, cfg, RESUMABLE_CHANGES).items()]
    if diff:
        raise ConfigError(
            f"The checkpoint {path} was written with a different config; resuming it would not "
            f"continue the same run. Mismatching keys:\n" + "\n".join(diff)
            + f"\nUse the original overrides to resume it, or {START_OVER}."
        )


def differences(saved_yaml: str, cfg: DictConfig, ignore: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, value in `cfg`)} for each flattened key in which the resolved
    configs differ ('<absent>' where one lacks it), less the keys in or under `ignore`."""
    saved = flatten(yaml.safe_load(saved_yaml))
    current = flatten(yaml.safe_load(config_yaml(cfg)))
    return {key: (saved.get(key, "<absent>"), current.get(key, "<absent>"))
            for key in sorted(saved.keys() | current.keys())
            if saved.get(key) != current.get(key) and not any(key == k or key.startswith(f"{k}.") for k in ignore)}


def warn_if_schedule_moved(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> None:
    """Warn when the resumed schedule gives another learning rate at the resume step than
    the checkpoint's: a schedule over the run's length (cosine, warmup_cosine) after
    trainer.max_steps or max_epochs changed. From there the run follows the new schedule,
    so it equals neither the checkpoint's run continued nor a `steps`-step run from step 0."""
    step, saved = scheduler.last_epoch, scheduler.get_last_lr()
    now = [base * factor(step) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    if not all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(saved, now)):
        log.warning("The run's length changed on resume (now %d steps), and so did its learning-rate schedule: "
                    "at step %d the checkpoint's schedule gives lr %.4g, the new one %.4g. The run continues on "
                    "the new schedule, so it equals neither the checkpoint's run continued nor a %d-step run from "
                    "step 0.", steps, step, saved[0], now[0], steps)


def step_files(ckpt_dir: Path) -> list[Path]:
    """step_*.pt files, newest first."""
    return sorted(ckpt_dir.glob("step_*.pt"), reverse=True)


def step_file(path: Path) -> Path:
    """The step_<N>.pt file a checkpoint path is: last.pt is a hard link to the newest one
    (`save`), so it is that file; any other path is itself."""
    return next((f for f in step_files(path.parent) if f.samefile(path)), path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
