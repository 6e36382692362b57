"""Structured configs: the typed schema that every YAML file in `configs/` is checked against.

Each option file in a config group starts with `defaults: [/schema/<group>/<name>@_here_,
_self_]`, so Hydra merges it onto a dataclass. A misspelled key or a value of the wrong
type then fails at composition with OmegaConf's message, which names the full key
(e.g. `optim.lr`) and the value; an enum field lists its allowed values.

The schema of an option is read from the code: an option file names its class or function
with `_target_`, and `derive` builds the schema from that callable's signature
(`register_configs` finds these files), so a parameter's type and default are written
once, in the code, and the file holds only what differs. Keys of a group that the run
hands to another callable than the target are read from that callable too (`ALSO_READ`).
Written by hand is only what has no constructor: the run's own keys (`TrainConfig`,
`TrainerConfig`, `EvalConfig`) and the spectrum's on/off switch (`Switch`).

Each option has its own schema, named after its file (configs/loss/simclr.yaml extends
`/schema/loss/simclr`): a file copied from another option that still names the other's
schema is refused, as it would replace the other option's schema with its own. A schema
is derived when Hydra first loads it, so a run imports the targets of the options it
composes, not those of every option.
"""

import copy
import functools
import inspect
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, is_dataclass, make_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigNode, ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, OmegaConf

from sslkit.errors import ConfigError


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OnNaN(str, Enum):
    stop = "stop"
    skip = "skip"


@dataclass
class TrainerConfig:
    """How long the run trains and what it writes along the way (sslkit.train, sslkit.accel).

    Attributes:
        max_steps: Training steps; the run stops at whichever of max_steps / max_epochs comes first (null: no limit).
        max_epochs: Passes over the data (null: no limit).
        log_every: Steps between two metrics.jsonl lines and progress-bar updates.
        progress: Show the progress bar.
        report: Write stepwise.png into the run directory when training ends.
        checkpoint_every: Steps between two checkpoints; one is also written at the end.
        keep_checkpoints: Number of most recent checkpoints kept.
        resume: auto (from run_dir/checkpoints if there), never, overwrite, or a checkpoint path.
        on_nan: stop, or skip (drop the update of a step whose loss is not finite).
        precision: auto, fp32, tf32 or bf16 (auto: bf16 on CUDA, fp32 on the CPU).
        channels_last: auto, true or false: images in channels-last memory format (auto: on CUDA).
        compile: auto, true or false: torch.compile the model and the loss (auto: on CUDA).
        compile_mode: torch.compile's mode: default or max-autotune-no-cudagraphs.
    """

    max_steps: Optional[int] = 1000
    max_epochs: Optional[int] = None
    log_every: int = 1
    progress: bool = True
    report: bool = True
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    resume: str = "auto"
    on_nan: OnNaN = OnNaN.stop
    precision: str = "auto"
    channels_last: Union[bool, str] = "auto"
    compile: Union[bool, str] = "auto"
    compile_mode: str = "default"


@dataclass
class EvalConfig:
    """Evaluation on the held-out split every `every` steps (sslkit.eval.Evaluation); the
    probes are options of configs/eval/ (sslkit.eval.OnlineProbe, sslkit.eval.KNN).

    Attributes:
        every: Steps between two evaluations.
        test_split: data.split of the held-out split (data sets that have splits).
        test_root: data.root of the held-out split (null: data.root).
        batch_size: Images per forward pass when features are extracted.
        online_probe: The online linear probe (eval=online_probe; null: none).
        knn: The kNN classifier (eval=knn; null: none).
    """

    every: int = 100
    test_split: str = "test"
    test_root: Optional[str] = None
    batch_size: int = 1024
    online_probe: Any = None
    knn: Any = None


@dataclass
class TrainConfig:
    """The run's own keys; every other key belongs to the option of its group.

    Attributes:
        seed: Seed of every random draw of the run (initialisation, data order, views); in [0, 2**32).
        device: auto (CUDA when there is a GPU), cpu or cuda.
        trainer: How long to train and what to write (trainer.*).
        data: The data set (data=...).
        backbone: The network (backbone=...).
        projector: The head on the backbone (projector=...).
        method: How the views go through the networks (method=...).
        augment: The two views of a batch (augment=...).
        loss: The loss (loss=...).
        optim: The optimizer and its learning-rate schedule (optim=...).
        spectrum: The spectrum monitor (spectrum=...).
        logger: The dashboards (logger=[wandb,tensorboard]); the run directory is always written.
        eval: Held-out evaluation (eval.*, eval=[online_probe,knn]).
    """

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
    logger: dict[str, Any] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class Switch:
    """The spectrum's on/off switch, beside SpectrumMonitor's own keys.

    Attributes:
        enabled: false builds no SpectrumMonitor (sslkit.records.Observer), so nothing is recorded.
    """

    enabled: bool = True


# A group's keys that the run hands to another callable than the option's `_target_`, and
# the arguments the run passes to that callable itself (sslkit.optim.build_optimizer).
ALSO_READ: dict[str, dict[str, frozenset[str]]] = {
    "optim": {"sslkit.optim.lr_schedule": frozenset({"optimizer", "total_steps"})},
    "spectrum": {"sslkit.config.Switch": frozenset()},
}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (plain dicts, e.g. a loaded config.yaml) as {"dotted.key": value}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


# The arguments the run passes itself to the callables of each group's options (not config
# keys), by the code that passes them: sslkit.step.Step.build (backbone, projector, method;
# sslkit.models.build_backbone hands `in_shape` on to its network), sslkit.optim.build_optimizer
# (the optimizer; lr_schedule's: ALSO_READ), sslkit.records.Observer (spectrum, logger) and
# sslkit.eval.Evaluation (the online probe of eval).
BUILT_WITH: dict[str, frozenset[str]] = {
    "backbone": frozenset({"in_shape"}),
    "projector": frozenset({"in_dim"}),
    "method": frozenset({"backbone", "projector"}),
    "optim": frozenset({"params", "fused"}),
    "spectrum": frozenset({"run_dir", "state", "view"}),
    "logger": frozenset({"run_dir", "run_config", "start_step"}),
    "eval": frozenset({"dims", "classes", "total_steps"}),
}
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def _config_type(tp: Any) -> Any:
    """An annotation as OmegaConf takes it: `X | None` → Optional[X] (members it cannot
    type, such as Tensor in `float | Tensor`, dropped), a list, tuple or Sequence of X →
    list[X], plain types, enums and dataclasses kept, anything else untyped (Any)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [t for t in (_config_type(a) for a in args if a is not type(None)) if t is not Any]
        if not inner:
            return Any
        kind = inner[0] if len(inner) == 1 else Union[tuple(inner)]
        return Optional[kind] if type(None) in args else kind
    if origin in (list, tuple, Sequence):
        return list[_config_type(args[0])] if args else list[Any]
    if tp in (int, float, bool, str) or (isinstance(tp, type) and (issubclass(tp, Enum) or is_dataclass(tp))):
        return tp
    return Any


def derive(*targets: str, group: str | None = None) -> type:
    """The schema of an option of `group` that builds `targets[0]`, read from the signatures
    of the classes or functions `targets` name: `_target_`, then one field per parameter
    (except *args / **kwargs and the arguments the run passes itself: BUILT_WITH[group], or
    ALSO_READ's for the group's other callables) with the parameter's annotation and
    default (required when it has none; a tuple default becomes a list). Without `group`,
    the group of configs/ whose options build `targets[0]`. A parameter typed by a
    dataclass (ImageViews' ViewSpec) is handed over as that dataclass (`_convert_: object`).
    The schema is named after the first class among `targets` (the optimizer beside
    lr_schedule, the network build_backbone wraps), else after the last function."""
    group = group if group is not None else _groups_of_targets().get(targets[0])
    also_read = ALSO_READ.get(group, {})
    objects = [get_object(t) for t in targets]
    fields: list[tuple] = [("_target_", str, field(default=targets[0]))]
    for target, obj in zip(targets, objects):
        passed = also_read.get(target, BUILT_WITH.get(group, frozenset()))
        hints = typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj)
        for p in inspect.signature(obj).parameters.values():
            if p.name in passed or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            default = MISSING if p.default is p.empty else p.default
            value = (field(default_factory=lambda d=default: list(d)) if isinstance(default, (list, tuple))
                     else field(default=default))
            fields.append((p.name, _config_type(hints.get(p.name, Any)), value))
    if any(is_dataclass(t) for _, tp, _ in fields for t in (tp, *typing.get_args(tp))):
        fields.insert(1, ("_convert_", str, field(default="object")))
    obj = next((o for o in objects if isinstance(o, type)), objects[-1])
    name = obj.__name__ if isinstance(obj, type) else obj.__name__.title().replace("_", "")
    return make_dataclass(f"{name}Config", fields)


@functools.cache
def _groups_of_targets() -> dict[str, str]:
    """{`_target_`: its group} over the option files of configs/."""
    return {targets[0]: group for group, options in derived_options().items() for targets in options.values()}


def option_targets(group: str, node: Any) -> tuple[str, ...]:
    """The callables that take an option file's keys: its `_target_`, for a wrapper such as
    sslkit.models.build_backbone the one its `network` key names, and the group's ALSO_READ."""
    return (node["_target_"], *([node["network"]] if "network" in node else []), *ALSO_READ.get(group, ()))


def schema_path(node: Any) -> str | None:
    """The schema an option file extends: `<group>/<name>` for `/schema/<group>/<name>@_here_`
    in its defaults list (`train` for configs/train.yaml)."""
    return next((d.split("@")[0].removeprefix("/schema/") for d in node.get("defaults", [])
                 if isinstance(d, str) and d.startswith("/schema/")), None)


def derived_options(config_dir: Path | str = CONFIG_DIR) -> dict[str, dict[str, tuple[str, ...]]]:
    """{group: {schema name: targets}} for the option files of `config_dir` that name a
    `_target_` and a schema (`/schema/<group>/<name>`). An option file extends the schema
    named after itself; one that names another (a file copied from another option) is a
    ConfigError naming both files."""
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    root = Path(config_dir).parent  # files are named as configs/<group>/<name>.yaml
    for path in sorted(Path(config_dir).glob("*/*.yaml")):
        node = OmegaConf.load(path)
        if "_target_" not in node or (schema := schema_path(node)) is None:
            continue
        own = f"{path.parent.name}/{path.stem}"
        if schema != own:
            other = Path(config_dir) / f"{schema}.yaml"
            whose = f"the schema of {other.relative_to(root)}" if other.exists() else "no option's schema"
            raise ConfigError(f"{path.relative_to(root)} extends /schema/{schema}, {whose}: an option extends the "
                              f"schema named after its own file; write `- /schema/{own}@_here_` in its defaults list.")
        group, name = schema.split("/")
        found.setdefault(group, {})[name] = option_targets(group, node)
    return found


class _Schemas(dict):
    """The schemas of one group in Hydra's ConfigStore, {"<name>.yaml": ConfigNode}, each
    derived when first read (Hydra loads only the options it composes)."""

    def __init__(self, group: str, options: dict[str, tuple[str, ...]]) -> None:
        super().__init__({f"{name}.yaml": targets for name, targets in options.items()})
        self.group = group

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if isinstance(value, tuple):
            node = OmegaConf.structured(derive(*value, group=self.group))
            value = ConfigNode(name=name, node=node, group=f"schema/{self.group}", package=None, provider=None)
            super().__setitem__(name, value)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def values(self) -> list[Any]:
        return [self[name] for name in self]

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self[name]) for name in self]

    def __deepcopy__(self, memo: dict) -> "_Schemas":
        """A copy that derives no schema (Hydra copies the store to save its state)."""
        copied = _Schemas(self.group, {})
        dict.update(copied, {name: copy.deepcopy(value, memo) for name, value in dict.items(self)})
        return copied


def register_configs(config_dir: Path | str = CONFIG_DIR) -> None:
    """Store the schemas under `schema/`: `schema/train`, and `schema/<group>/<name>` for
    the option files to extend (`defaults: [/schema/<group>/<name>@_here_, _self_]`),
    derived from the `_target_` of the files in `config_dir` when Hydra first loads them."""
    cs = ConfigStore.instance()
    cs.store(group="schema", name="train", node=TrainConfig)
    for group, options in derived_options(config_dir).items():
        cs.repo["schema"][group] = _Schemas(group, options)
