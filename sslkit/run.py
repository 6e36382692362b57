"""What a run needs around the loop: device, step budget, run-directory records, guards."""

import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import torch
from omegaconf import DictConfig, OmegaConf
from submitit import JobEnvironment

import sslkit
from sslkit import layout
from sslkit.distributed import Dist, host_max
from sslkit.errors import ConfigError, NonFiniteLossError

log = logging.getLogger(__name__)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` → cuda when available, else cpu; with CUDA, this process's local GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA device is available; "
                          "use device=auto or device=cpu.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def check_cadences(trainer: DictConfig) -> None:
    """trainer.log_every, checkpoint_every and keep_checkpoints are counts ≥ 1."""
    for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
        if trainer[key] < 1:
            raise ConfigError(f"trainer.{key}={trainer[key]} is not allowed: use an integer >= 1"
                              + (" (a checkpoint is also written at the end of the run)." if key == "checkpoint_every"
                                 else "."))


def total_steps(trainer: DictConfig, steps_per_epoch: int) -> int:
    """The smaller of trainer.max_steps and trainer.max_epochs × steps per epoch."""
    budgets = [trainer.max_steps, None if trainer.max_epochs is None else trainer.max_epochs * steps_per_epoch]
    budgets = [b for b in budgets if b is not None]
    if not budgets or min(budgets) < 1:
        raise ConfigError(
            f"The run has no steps: trainer.max_steps={trainer.max_steps}, "
            f"trainer.max_epochs={trainer.max_epochs}. Set at least one of them to a positive "
            f"number, e.g. trainer.max_steps=1000."
        )
    return min(budgets)


def check_run_dir(run_dir: Path, checkpoint_bytes: int) -> None:
    """Before training: the directory is writable and has room for two checkpoints."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"The run directory {run_dir} is not writable ({exc}); "
                          f"choose another with hydra.run.dir=...") from exc
    free = shutil.disk_usage(run_dir).free
    if free < 2 * checkpoint_bytes:
        raise ConfigError(
            f"Only {free / 2**20:.0f} MiB are free under {run_dir}, but two checkpoints need "
            f"about {2 * checkpoint_bytes / 2**20:.0f} MiB. Free space or choose another hydra.run.dir."
        )


class StopSignal:
    """SIGINT (Ctrl-C), SIGUSR1, SIGTERM and the preemption signal of submitit (SIGUSR2)
    set `received`; the loop finishes its step, checkpoints and raises Preempted, whose
    `exit_code` is 130 after SIGINT (128 + 2, as a shell reports Ctrl-C) and 255 after the
    others (as submitit's preemption handler does). A second Ctrl-C interrupts at once
    (KeyboardInterrupt). Handlers are restored on exit.

    Hydra's submitit launchers have SLURM send `PREEMPT` `signal_delay_s` seconds before
    the time limit (`#SBATCH --signal=USR2@120`; submitit's `JobEnvironment.USR_SIG`, set
    by $SUBMITIT_PREEMPT_SIGNAL, which names the signal for both), and submitit installs a
    handler for it that requeues the job. `hand_on` gives the signal to that handler after
    the checkpoint (sslkit-train calls it after its line), so the requeued job resumes
    from the step that finished: any handler Python had for the signal before training
    runs then, once, on every rank (submitit's requeues from rank 0 only).

    Under several processes a signal may reach some ranks only, or reach them during
    different steps: the loop asks `agreed` after every step, which all-reduces the
    signals received so far, so every rank stops after the same step. Where ranks
    received different ones, the later in SIGNALS names the stop: the preemption signal,
    whose handler requeues, before SIGTERM, SIGUSR1 and SIGINT."""

    PREEMPT = signal.Signals["SIG" + JobEnvironment.USR_SIG]
    # each once, in rising precedence: the preemption signal last
    SIGNALS = tuple(reversed(dict.fromkeys((PREEMPT, signal.SIGTERM, signal.SIGUSR1, signal.SIGINT))))

    def __init__(self, rank: Dist = Dist()) -> None:
        self.rank = rank
        self.received: str | None = None

    def agreed(self) -> bool:
        """Whether any rank has received a stop signal; sets `received` to the agreed one."""
        local = self.SIGNALS.index(signal.Signals[self.received]) + 1 if self.received else 0
        agreed = host_max(local, self.rank)
        if agreed:
            self.received = self.SIGNALS[agreed - 1].name
        return bool(agreed)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is not None:  # already stopping (e.g. torchrun's SIGTERM after a Ctrl-C)
            return
        self.received = signal.Signals(signum).name
        if self.rank.is_main:
            log.warning("received %s: stopping after this step with a checkpoint%s", self.received,
                        " (Ctrl-C again stops at once, without one)" if signum == signal.SIGINT else "")

    def __enter__(self) -> "StopSignal":
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    @staticmethod
    def hand_on(name: str) -> None:
        """Call the handler that the signal `name` had before training (restored on exit)
        if Python had one, as if the signal arrived now: submitit's requeue. Python's own
        Ctrl-C handler (KeyboardInterrupt) is not called: the stop is the answer to it."""
        signum = signal.Signals[name]
        handler = signal.getsignal(signum)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signum, None)


def non_finite_message(values: dict[str, float], step: int, last_checkpoint: Path | None) -> str:
    """What happened at a non-finite loss (`values`: the loss and its terms), and what to change."""
    terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "loss")
    where = f"The last good checkpoint is {last_checkpoint}. " if last_checkpoint else "No checkpoint was written yet. "
    return (
        f"The loss became non-finite at step {step}: loss={values['loss']} ({terms}). {where}"
        f"The usual causes are a learning rate too high for the loss scale or a missing "
        f"warm-up: lower optim.lr, use optim.schedule=warmup_cosine with optim.warmup_steps>0, "
        f"or for VICReg use optim=lars; trainer.on_nan=skip drops such steps instead."
    )


class SkippedSteps:
    """trainer.on_nan=skip: the first step with a non-finite loss is explained in full,
    later ones are counted (`summary` at the end); `IN_A_ROW` of them in a row stop the run,
    which has then diverged: without updates the weights keep giving a non-finite loss."""

    IN_A_ROW = 10

    def __init__(self) -> None:
        self.count, self.row, self.first = 0, 0, None

    def skip(self, step: int, message: str) -> None:
        self.count, self.row = self.count + 1, self.row + 1
        if self.first is None:
            self.first = step
            log.warning("%s Skipped (trainer.on_nan=skip); further such steps are counted, and %d in a row "
                        "stop the run.", message, self.IN_A_ROW)
        if self.row >= self.IN_A_ROW:
            raise NonFiniteLossError(f"{self.row} steps in a row had a non-finite loss, up to step {step}: the run "
                                     f"has diverged and trainer.on_nan=skip cannot continue it. {message}")

    def ok(self) -> None:
        self.row = 0

    def summary(self, steps: int) -> str:
        return (f"trainer.on_nan=skip dropped the update of {self.count} of {steps} steps (the first at step "
                f"{self.first}): their loss was not finite.")


def save_run_info(cfg: DictConfig, run_dir: Path, device: torch.device) -> None:
    """config.yaml (resolved) and env.json (git commit, versions, device) in `run_dir`."""
    (run_dir / layout.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    env = {
        "sslkit": sslkit.__version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "seed": cfg.seed,
        "command": sys.argv,
    }
    (run_dir / layout.ENV).write_text(json.dumps(env, indent=2))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
