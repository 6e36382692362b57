"""Structured configs: the typed schema that every YAML file in `configs/` is checked against.

Each option file in a config group starts with `defaults: [<schema>, _self_]`, so Hydra
merges it onto one of the dataclasses below. A misspelled key or a value of the wrong
type then fails at composition with OmegaConf's message, which names the full key
(e.g. `optim.lr`) and the value; an enum field lists its allowed values.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"
    warmup_cosine = "warmup_cosine"


class OnNaN(str, Enum):
    stop = "stop"
    skip = "skip"


class Normalize(str, Enum):
    batchnorm = "batchnorm"
    none = "none"


@dataclass
class TrainerConfig:
    max_steps: Optional[int] = None  # the run stops at whichever of max_steps / max_epochs comes first
    max_epochs: Optional[int] = None
    log_every: int = 1  # metrics.jsonl line and progress-bar update every k steps
    progress: bool = True
    report: bool = True  # write stepwise.png into the run directory when training ends
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto (from run_dir/checkpoints if there), never, or a checkpoint path
    on_nan: OnNaN = OnNaN.stop  # skip: drop the update of a step whose loss is not finite


# --- data -------------------------------------------------------------------------------
@dataclass
class DigitsConfig:
    _target_: str = "sslkit.data.digits"
    batch_size: int = 256


@dataclass
class SyntheticConfig:
    _target_: str = "sslkit.data.synthetic"
    batch_size: int = 1024
    n: int = 4096
    dim: int = 16
    spectrum: Optional[list[float]] = None  # variances σ², descending; overrides `decay`
    decay: float = 0.5  # power law σ²_k = 2^(-decay·k), k = 0 … dim-1
    seed: int = "${seed}"  # type: ignore[assignment]


# --- models -----------------------------------------------------------------------------
@dataclass
class LinearConfig:
    _target_: str = "sslkit.models.Linear"
    out_dim: int = 64
    init_scale: float = 1.0


@dataclass
class MLPConfig:
    _target_: str = "sslkit.models.MLP"
    width: int = 512
    depth: int = 2
    out_dim: int = 64
    init_scale: float = 1.0


@dataclass
class IdentityProjectorConfig:
    _target_: str = "torch.nn.Identity"


@dataclass
class MLPProjectorConfig:
    _target_: str = "sslkit.models.Projector"
    hidden_dims: list[int] = field(default_factory=lambda: [256])
    out_dim: int = 256


# --- augmentations ----------------------------------------------------------------------
@dataclass
class GaussianNoiseConfig:
    _target_: str = "sslkit.augment.GaussianNoise"
    std: float = 0.1


@dataclass
class ShiftNoiseConfig:
    _target_: str = "sslkit.augment.ShiftNoise"
    max_shift: int = 1
    std: float = 0.1
    mean: float = 0.0


# --- losses -----------------------------------------------------------------------------
@dataclass
class BarlowTwinsConfig:
    _target_: str = "sslkit.losses.BarlowTwinsLoss"
    lambd: float = 0.0051
    scale: float = 1.0
    normalize: Normalize = Normalize.batchnorm
    symmetric: bool = False


@dataclass
class NTXentConfig:
    _target_: str = "sslkit.losses.NTXentLoss"
    temperature: float = 0.5


@dataclass
class VICRegConfig:
    _target_: str = "sslkit.losses.VICRegLoss"
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    eps: float = 1e-4


# --- optimizers -------------------------------------------------------------------------
@dataclass
class OptimConfig:
    """Keys shared by every optimizer. `schedule` and `warmup_steps` shape the learning
    rate (sslkit.optim.lr_factor); every other key is an argument of `_target_`."""

    _target_: str = MISSING
    lr: float = 0.1
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.constant
    warmup_steps: int = 0


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0


@dataclass
class LARSConfig(OptimConfig):
    _target_: str = "sslkit.optim.LARS"
    momentum: float = 0.9
    eta: float = 0.02


@dataclass
class AdamWConfig(OptimConfig):
    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


# --- observers --------------------------------------------------------------------------
@dataclass
class SpectrumConfig:
    enabled: bool = True
    flush_every: int = 100  # rows buffered in memory before they are appended to disk


@dataclass
class LoggerConfig:
    """Run-directory files (config.yaml, metrics.jsonl, spectra) are always written."""


@dataclass
class TrainConfig:
    seed: int = 0
    device: Device = Device.auto
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: Any = MISSING
    backbone: Any = MISSING
    projector: Any = MISSING
    augment: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    spectrum: Any = MISSING
    logger: Any = MISSING


SCHEMAS = {
    "data": {"digits": DigitsConfig, "synthetic": SyntheticConfig},
    "backbone": {"linear": LinearConfig, "mlp": MLPConfig},
    "projector": {"identity": IdentityProjectorConfig, "mlp": MLPProjectorConfig},
    "augment": {"gaussian_noise": GaussianNoiseConfig, "digits": ShiftNoiseConfig},
    "loss": {"barlow_twins": BarlowTwinsConfig, "ntxent": NTXentConfig, "vicreg": VICRegConfig},
    "optim": {"sgd": SGDConfig, "lars": LARSConfig, "adamw": AdamWConfig},
    "spectrum": {"spectrum": SpectrumConfig},
    "logger": {"logger": LoggerConfig},
}


def register_configs() -> None:
    """Store the schemas under `schema/`: `schema/train`, and `schema/<group>/<name>` for
    the option files to extend (`defaults: [/schema/<group>/<name>@_here_, _self_]`)."""
    cs = ConfigStore.instance()
    cs.store(group="schema", name="train", node=TrainConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
