"""What a run needs around the loop: device, step budget, run-directory records, guards."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import sslkit
from sslkit.errors import ConfigError, NonFiniteLossError
from sslkit.losses import LossOutput


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA device is available; "
                           "use device=auto or device=cpu.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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


def check_new_run_dir(run_dir: Path) -> None:
    if (run_dir / "metrics.jsonl").exists():
        raise ConfigError(
            f"{run_dir} already holds a run (metrics.jsonl exists). Pick a new directory "
            f"with hydra.run.dir=..., or delete the old run."
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def check_finite(out: LossOutput, step: int) -> None:
    """Stop at the first non-finite loss, naming the step and the value of every term."""
    if torch.isfinite(out.loss):
        return
    terms = ", ".join(f"{k}={v.item():.4g}" for k, v in out.terms.items())
    raise NonFiniteLossError(
        f"The loss became non-finite at step {step}: loss={out.loss.item()} ({terms}). "
        f"The usual causes are a learning rate too high for the loss scale or a missing "
        f"warm-up: lower optim.lr, use optim.schedule=warmup_cosine with optim.warmup_steps>0, "
        f"or for VICReg use optim=lars."
    )


def save_run_info(cfg: DictConfig, run_dir: Path, device: torch.device) -> None:
    """config.yaml (resolved) and env.json (git commit, versions, device) in `run_dir`."""
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
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
    (run_dir / "env.json").write_text(json.dumps(env, indent=2))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
