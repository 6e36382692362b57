"""Structured configs: the typed schema that every YAML file in `configs/` is checked against.

Each option file in a config group starts with `defaults: [/schema/<group>/<name>@_here_,
_self_]`, so Hydra merges it onto a dataclass. A misspelled key or a value of the wrong
type then fails at composition with OmegaConf's message, which names the full key
(e.g. `optim.lr`) and the value; an enum field lists its allowed values.

Most schemas are read from the code: an option file that names its class or function
with `_target_` gets the schema `derive(target)` builds from that callable's signature
(`register_configs` finds these files), so a parameter's type and default are written
once, in the code, and the file holds only what differs. The schemas below are written
by hand where the config holds keys that no constructor takes (data, optimizers, views,
spectrum, evaluation) or has no constructor at all (train, trainer).
"""

import inspect
import types
import typing
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, OmegaConf

from sslkit.augment.pipeline import ViewSpec
from sslkit.optim import Schedule


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OnNaN(str, Enum):
    stop = "stop"
    skip = "skip"


@dataclass
class TrainerConfig:
    max_steps: Optional[int] = None  # the run stops at whichever of max_steps / max_epochs comes first
    max_epochs: Optional[int] = None
    log_every: int = 1  # metrics.jsonl line and progress-bar update every k steps
    progress: bool = True
    report: bool = True  # write stepwise.png into the run directory when training ends
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto (from run_dir/checkpoints if there), never, overwrite, or a checkpoint path
    on_nan: OnNaN = OnNaN.stop  # skip: drop the update of a step whose loss is not finite
    # sslkit.accel: auto = the fast setting on CUDA (bf16, true, true), the plain one on the CPU
    precision: str = "auto"  # auto | fp32 | tf32 | bf16
    channels_last: Union[bool, str] = "auto"  # auto | true | false
    compile: Union[bool, str] = "auto"  # auto | true | false: torch.compile model and loss
    compile_mode: str = "default"  # default | max-autotune-no-cudagraphs


# --- data -------------------------------------------------------------------------------
class DigitsSplit(str, Enum):
    all = "all"  # 1797 images, the held-out labels hidden (−1)
    train = "train"  # the first 1500
    test = "test"  # the last 297: the held-out split of every evaluation


@dataclass
class DigitsConfig:
    _target_: str = "sslkit.data.digits"
    batch_size: int = 256
    split: DigitsSplit = DigitsSplit.all
    size: int = 8  # > 8: resized (bilinear) to size x size
    channels: int = 1  # 3: grey repeated in R, G, B


@dataclass
class SyntheticConfig:
    _target_: str = "sslkit.data.synthetic"
    batch_size: int = 1024
    n: int = 4096
    dim: int = 16
    spectrum: Optional[list[float]] = None  # variances σ², descending; overrides `decay`
    decay: float = 0.5  # power law σ²_k = 2^(-decay·k), k = 0 … dim-1
    seed: int = "${seed}"  # type: ignore[assignment]


class CifarSplit(str, Enum):
    train = "train"
    test = "test"


STL10Split = Enum("STL10Split", {s: s for s in ("train+unlabeled", "train", "test", "unlabeled")}, type=str)


@dataclass
class FileDataConfig:
    """Keys shared by the sources that read files: `root` is the data directory (required),
    `on_device` true | false | auto (sslkit.data.InMemoryData)."""

    _target_: str = MISSING
    root: Optional[str] = None
    batch_size: int = 256
    on_device: Union[bool, str] = "auto"


@dataclass
class Cifar10Config(FileDataConfig):
    _target_: str = "sslkit.data.cifar10"
    split: CifarSplit = CifarSplit.train


@dataclass
class Cifar100Config(Cifar10Config):
    _target_: str = "sslkit.data.cifar100"


@dataclass
class STL10Config(FileDataConfig):
    _target_: str = "sslkit.data.stl10"
    split: STL10Split = STL10Split["train+unlabeled"]  # type: ignore[valid-type]


@dataclass
class ImageFolderConfig(FileDataConfig):
    _target_: str = "sslkit.data.imagefolder"
    image_size: int = 96  # shorter side resized to this, then centre-cropped square
    cache_dir: Optional[str] = None  # null: $XDG_CACHE_HOME/sslkit or ~/.cache/sslkit


# --- models -----------------------------------------------------------------------------
# --- augmentations ----------------------------------------------------------------------
@dataclass
class ImageViewsConfig:
    """The view settings are `sslkit.augment.ViewSpec` itself; `_convert_: object` hands
    them to ImageViews as ViewSpec instances."""

    _target_: str = "sslkit.augment.ImageViews"
    _convert_: str = "object"
    view1: ViewSpec = field(default_factory=ViewSpec)
    view2: Optional[ViewSpec] = None  # null: the same settings as view1
    size: Optional[int] = None  # views are size x size; null: the input's size
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    compile: Union[bool, str] = "auto"  # torch.compile the view stages; auto: on CUDA


# --- losses -----------------------------------------------------------------------------
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
class SpectrumMatrix(str, Enum):
    """Embedding matrices (z) and backbone-feature matrices (feat_, h) of two views."""

    cov = "cov"  # covariance of view 1
    cov2 = "cov2"  # covariance of view 2
    xcorr = "xcorr"  # symmetrised cross-correlation (z1ᵀz2 + z2ᵀz1)/2N of z as the loss sees it
    xcorr_raw = "xcorr_raw"  # the same of the raw embeddings
    feat_cov = "feat_cov"
    feat_cov2 = "feat_cov2"
    feat_xcorr = "feat_xcorr"


@dataclass
class SpectrumConfig:
    """sslkit.spectrum.SpectrumMonitor: per-step eigenvalues, summaries and ½-crossings."""

    _target_: str = "sslkit.spectrum.SpectrumMonitor"
    enabled: bool = True
    matrices: list[SpectrumMatrix] = field(default_factory=lambda: [
        SpectrumMatrix.cov, SpectrumMatrix.xcorr, SpectrumMatrix.feat_cov])
    every: int = 1  # observe every k-th step
    top_k: int = 64  # eigenvalues stored per step and matrix
    full_every: int = 100  # complete spectra stored (and tracking checked) every k-th step
    exact_max: int = 256  # exact decomposition every step when min(rank bound, D) <= this
    oversample: int = 16  # extra tracked directions beyond top_k
    tol: float = 1e-3  # warn when tracked eigenvalues deviate from the exact ones by more than tol·|λ₁|
    iters: int = 2  # subspace iterations per step (a fixed number: the device never waits)
    rankme_eps: float = 1e-7
    level: float = 0.5  # a mode of a cross-correlation is learned when its eigenvalue reaches this
    flush_every: int = 100  # rows buffered in memory before they are appended to disk
    chunk: int = 32  # steps kept on the device before one bulk copy to the host


# --- evaluation -------------------------------------------------------------------------
class ProbeFeatures(str, Enum):
    backbone = "backbone"  # h, the backbone's output
    projector = "projector"  # z, the projector's output


class ProbeInput(str, Enum):
    clean = "clean"  # features of the batch's un-augmented images (one more forward pass, eval mode)
    view = "view"  # the step's own view-1 features (free; augmented, in train mode)


@dataclass
class OnlineProbeConfig:
    """sslkit.eval.OnlineProbe: a linear classifier per feature kind, trained with its own
    SGD on the detached features of every training batch (`input`, see Evaluation)."""

    features: list[ProbeFeatures] = field(default_factory=lambda: [ProbeFeatures.backbone])
    input: ProbeInput = ProbeInput.clean
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.cosine  # over the run's steps


@dataclass
class KNNConfig:
    """sslkit.eval.knn_scores: weighted kNN (Wu et al. 2018) on cosine similarity."""

    features: list[ProbeFeatures] = field(default_factory=lambda: [ProbeFeatures.backbone])
    k: list[int] = field(default_factory=lambda: [20, 200])
    temperature: float = 0.07
    chunk_elements: int = 2**24  # queries per chunk × bank size: bounds the similarity matrix


@dataclass
class EvalConfig:
    """Evaluation on the held-out split every `every` steps (configs/eval/)."""

    every: int = 100
    test_split: str = "test"  # data.split of the held-out split (data sets that have splits)
    test_root: Optional[str] = None  # data.root of the held-out split; null: data.root
    batch_size: int = 1024  # images per forward pass when features are extracted
    online_probe: Optional[OnlineProbeConfig] = None
    knn: Optional[KNNConfig] = None


@dataclass
class TrainConfig:
    seed: int = 0
    device: Device = Device.auto
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: Any = MISSING
    backbone: Any = MISSING
    projector: Any = MISSING
    method: Any = MISSING
    augment: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    spectrum: Any = MISSING
    logger: dict[str, Any] = field(default_factory=dict)  # dashboards; the run directory is always written
    eval: EvalConfig = field(default_factory=EvalConfig)


SCHEMAS = {
    "data": {"digits": DigitsConfig, "synthetic": SyntheticConfig, "cifar10": Cifar10Config,
             "cifar100": Cifar100Config, "stl10": STL10Config, "imagefolder": ImageFolderConfig},
    "augment": {"views": ImageViewsConfig},
    "optim": {"sgd": SGDConfig, "lars": LARSConfig, "adamw": AdamWConfig},
    "spectrum": {"spectrum": SpectrumConfig},
    "eval": {"online_probe": OnlineProbeConfig, "knn": KNNConfig},
}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (plain dicts, e.g. a loaded config.yaml) as {"dotted.key": value}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


# Arguments the run passes when it builds a part (train.py, the Observer): not config keys.
BUILT_WITH = frozenset({"in_shape", "in_dim", "backbone", "projector", "params", "run_dir", "run_config",
                        "start_step", "state"})
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def _config_type(tp: Any) -> Any:
    """An annotation as OmegaConf takes it: `X | None` → Optional[X], list[X] kept, plain
    types and enums kept, anything else untyped (Any)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [_config_type(a) for a in args if a is not type(None)]
        kind = inner[0] if len(inner) == 1 else Union[tuple(inner)]
        return Optional[kind] if type(None) in args else kind
    if origin is list:
        return list[_config_type(args[0])] if args else list[Any]
    if tp in (int, float, bool, str) or (isinstance(tp, type) and issubclass(tp, Enum)):
        return tp
    return Any


def derive(*targets: str) -> type:
    """The schema of an option that builds `targets[0]`, read from the signatures of the
    classes or functions `targets` name: `_target_`, then one field per parameter (except
    BUILT_WITH and *args / **kwargs) with the parameter's annotation and default (required
    when it has none). A wrapper's fields come first; the schema is named after the last."""
    fields: list[tuple] = [("_target_", str, field(default=targets[0]))]
    for target in targets:
        obj = get_object(target)
        hints = typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj)
        for p in inspect.signature(obj).parameters.values():
            if p.name in BUILT_WITH or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            default = MISSING if p.default is p.empty else p.default
            value = field(default_factory=lambda d=default: list(d)) if isinstance(default, list) else field(default=default)
            fields.append((p.name, _config_type(hints.get(p.name, Any)), value))
    name = obj.__name__ if isinstance(obj, type) else obj.__name__.title().replace("_", "")
    return make_dataclass(f"{name}Config", fields)


def option_targets(node: Any) -> tuple[str, ...]:
    """The callables an option file builds: its `_target_` and, for a wrapper such as
    sslkit.models.build_backbone, the one its `network` key names."""
    return (node["_target_"], *([node["network"]] if "network" in node else []))


def derived_options(config_dir: Path | str = CONFIG_DIR) -> dict[str, dict[str, tuple[str, ...]]]:
    """{group: {schema name: targets}} for the option files of `config_dir` that name a
    `_target_` and a schema (`/schema/<group>/<name>`) not written by hand in SCHEMAS."""
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    for path in sorted(Path(config_dir).glob("*/*.yaml")):
        node = OmegaConf.load(path)
        schemas = [d.split("@")[0].split("/") for d in node.get("defaults", []) if isinstance(d, str)
                   and d.startswith("/schema/")]
        if "_target_" in node and schemas:
            group, name = schemas[0][2], schemas[0][3]
            if name not in SCHEMAS.get(group, {}):
                found.setdefault(group, {})[name] = option_targets(node)
    return found


def register_configs(config_dir: Path | str = CONFIG_DIR) -> None:
    """Store the schemas under `schema/`: `schema/train`, and `schema/<group>/<name>` for
    the option files to extend (`defaults: [/schema/<group>/<name>@_here_, _self_]`): the
    hand-written SCHEMAS and those derived from the `_target_` of the files in `config_dir`."""
    cs = ConfigStore.instance()
    cs.store(group="schema", name="train", node=TrainConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    for group, targets in derived_options(config_dir).items():
        for name, target in targets.items():
            cs.store(group=f"schema/{group}", name=name, node=derive(*target))
