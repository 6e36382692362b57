"""Every option of every config group composes and builds as a run builds it, found from
the files in configs/ (a new YAML file is covered with no edit here), after the
lightning-hydra-template's test_configs.py."""

import pickle
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from conftest import compose_config, options, write_image
from sslkit.cli import Checks
from sslkit.config import CONFIG_DIR, derive, schema_path
from sslkit.eval import Evaluation
from sslkit.losses.barlow_twins import Normalize
from sslkit.errors import ConfigError
from sslkit.methods import Backbone, Loss, Method, check_loss, check_part
from sslkit.optim import build_optimizer
from sslkit.records import Observer
from test_sources import write_cifar10, write_stl_images

CONFIGS = Path(__file__).parents[1] / "configs"
GROUPS = sorted(d.name for d in CONFIGS.iterdir() if d.is_dir() and d.name not in ("experiment", "hydra"))
OPTIONS = [(group, option) for group in GROUPS for option in options(group)]
BUILT = {"data", "backbone", "projector", "method", "augment", "loss", "optim", "eval", "spectrum", "logger"}
RNG = np.random.default_rng(0)


def write_files(root: Path, option: str) -> None:
    """A few images in the official layout of each file-based data set."""
    if option == "cifar10":
        write_cifar10(root, n=2)
    elif option == "cifar100":
        for name in ("train", "test"):
            data = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
            (root / name).write_bytes(pickle.dumps({b"data": data, b"fine_labels": [0, 1, 2, 3]}, protocol=2))
    elif option == "stl10":
        for name in ("train", "test", "unlabeled"):
            write_stl_images(root / f"{name}_X.bin", RNG.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8))
            if name != "unlabeled":
                (root / f"{name}_y.bin").write_bytes(bytes([1, 2]))
    elif option == "imagefolder":
        for cls in ("a", "b"):
            (root / cls).mkdir()
            write_image(torch.from_numpy(RNG.integers(0, 256, (3, 20, 20), dtype=np.uint8)), root / cls / "x.png")


def fitting_method(loss: nn.Module, backbone: nn.Module, projector: nn.Module) -> nn.Module:
    """The method of the first option of configs/method/ that gives what `loss` takes (a
    loss written for a method with extra inputs, such as loss=byol, needs that method)."""
    for option in options("method"):
        net = instantiate(compose_config(f"method={option}").method, backbone=backbone, projector=projector)
        try:
            check_loss(net, loss)
            return net
        except ConfigError:
            continue
    raise AssertionError(f"no option of configs/method/ gives what {type(loss).__name__} takes")


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option, tmp_path):
    """Each option on top of the defaults, built with the arguments train.py and the
    Observer give it: the data (for the data group), the model, loss (with a method that
    gives what it takes), views and optimizer, and (for the spectrum and logger groups)
    the spectrum monitor and dashboards; backbone, method and loss have every member of
    their protocols."""
    overrides = [f"{group}={option}"]
    if group == "data" and option == "mnist1d":  # generated: a small set
        overrides += ["data.train=100", "data.test=50", "data.batch_size=10"]
    elif group == "data" and "root" in compose_config(f"data={option}").data:  # read from files
        write_files(tmp_path, option)
        overrides += [f"data.root={tmp_path}", "data.batch_size=2"]
        overrides += [f"data.cache_dir={tmp_path / 'cache'}"] if option == "imagefolder" else []
    overrides += {"logger=wandb": ["logger.wandb.mode=disabled"]}.get(overrides[0], [])
    cfg = compose_config(*overrides)
    assert group in BUILT, f"tests/test_configs.py does not build the new group {group} yet"
    data = instantiate(cfg.data) if group in ("data", "eval") else None
    backbone = instantiate(cfg.backbone, in_shape=(1, 8, 8))  # a digit
    check_part(backbone, Backbone, "backbone")
    projector = instantiate(cfg.projector, in_dim=backbone.out_dim)
    loss = instantiate(cfg.loss)
    net = (fitting_method(loss, backbone, projector) if group == "loss"
           else instantiate(cfg.method, backbone=backbone, projector=projector))
    check_part(net, Method, "method")
    check_part(loss, Loss, "loss")
    check_loss(net, loss)
    augment = instantiate(cfg.augment)
    build_optimizer(cfg.optim, net, 10)
    if group == "eval":
        Evaluation.build(cfg, data, augment, net, torch.device("cpu"), 10)
    if group in ("spectrum", "logger"):
        (tmp_path / "run").mkdir()
        Observer(tmp_path / "run", cfg, torch.device("cpu")).close()


def repeats(own: dict, defaults: dict, prefix: str = ""):
    """`key: value` of each value in `own` equal to the default at its key, nested dicts
    (ViewSpec's views) compared key by key."""
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            yield from repeats(value, defaults[key], f"{prefix}{key}.")
        elif key != "_target_" and key in defaults and value == defaults[key]:
            yield f"{prefix}{key}: {value}"


def skeleton(tree: dict) -> dict:
    """The nested dicts of `tree` without their values: merged onto a schema, it gives the
    defaults of a nested dataclass that the schema holds as null (ImageViews' view2)."""
    return {k: skeleton(v) for k, v in tree.items() if isinstance(v, dict)}


def test_no_file_repeats_a_default_of_its_schema():
    """Every option file of every group, and train.yaml, holds only what differs from its
    schema's defaults, nested dataclasses included; a schema read from the code has the
    callable's defaults, so each default is written once. Every group is covered."""
    store, repeated, covered = ConfigStore.instance(), [], set()
    for path in [CONFIGS / "train.yaml", *sorted(CONFIGS.glob("*/*.yaml"))]:
        node = OmegaConf.load(path)
        if (schema := schema_path(node)) is None:
            continue  # an alias of another option (`defaults: [byol]`), eval=none, an experiment
        own = {k: v for k, v in OmegaConf.to_container(node, resolve=False).items() if k not in ("defaults", "hydra")}
        base = OmegaConf.merge(store.load(f"schema/{schema}.yaml").node, skeleton(own))
        defaults = OmegaConf.to_container(base, resolve=False, enum_to_str=True)
        repeated += [f"{path.relative_to(CONFIGS)}: {r}" for r in repeats(own, defaults)]
        covered.add(schema.split("/")[0])
    assert not repeated, f"values equal to the schema's default: {repeated}"
    assert covered == {"train", *GROUPS}


def test_derived_schemas_type_and_default_every_parameter():
    """The schema of a target is its signature: BarlowTwinsLoss's keys, enum and defaults."""
    schema = {f.name: f for f in fields(derive("sslkit.losses.BarlowTwinsLoss"))}
    assert list(schema) == ["_target_", "lambd", "scale", "normalize", "symmetric"]
    assert schema["normalize"].type is Normalize and schema["lambd"].default == 0.0051
    assert [f.name for f in fields(derive("sslkit.models.Projector"))] == ["_target_", "hidden_dims", "out_dim", "init_scale"]


@pytest.mark.parametrize("override, message", [
    ("data.split=every", "Invalid value 'every', expected one of [all, train, test]"),
    ("data.batch_size=many", "Value 'many' of type 'str' could not be converted to Integer"),
    ("augment=simclr augment.view2.blur_q=0.5", "Key 'blur_q' not in 'ViewSpec'"),
    ("augment=simclr augment.view1.hue=strong", "Value 'strong' of type 'str' could not be converted to Float"),
    ("spectrum.matrices=[cov,gram]", "Invalid value 'gram', expected one of [cov, cov2, xcorr, xcorr_raw"),
    ("eval=knn eval.knn.features=[pixels]", "Invalid value 'pixels', expected one of [backbone, projector]"),
    ("optim=adamw optim.betas=[0.9,fast]", "Value 'fast' of type 'str' could not be converted to Float"),
])
def test_schemas_read_from_the_code_refuse_bad_values_at_composition(override, message):
    """Enums, numbers and nested dataclasses of the derived schemas are checked before
    anything is built, with OmegaConf's message naming the value and what is allowed."""
    with pytest.raises(Exception) as info:
        compose_config(*override.split())
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__
    assert any(message in text for text in chain), chain


LAUNCHERS = sorted(p.stem for p in (CONFIGS / "hydra" / "launcher").glob("*.yaml"))


def test_no_config_file_is_named_like_a_node_of_the_config_store():
    """Hydra matches a config file to the ConfigStore node of the same name and group as its
    schema, with a deprecation warning (hydra/_internal/config_loader_impl.py,
    `_load_single_config`; https://hydra.cc/docs/1.2/upgrades/1.0_to_1.1/automatic_schema_matching).
    No file of configs/, hydra/* included, shares a name with a node that sslkit or an
    installed plugin (found by Hydra's plugin scan) stores."""
    Plugins.instance()  # imports every hydra_plugins module: the submitit launcher stores its nodes
    store = ConfigStore.instance()
    named = [str(p.relative_to(CONFIGS)) for p in sorted(CONFIGS.rglob("*.yaml"))
             if store.get_type(str(p.relative_to(CONFIGS))) != ObjectType.NOT_FOUND]
    assert not named, f"named like a ConfigStore node: {named}"


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launchers_compose_without_a_warning_onto_the_plugins_schema(launcher):
    """hydra/launcher=<option> composes without Hydra's warnings, to the submitit plugin's
    config of the file's schema (its dataclass) with the file's own values on top; a
    value of the wrong type is refused at composition, so the plugin's schema still checks it."""
    node = OmegaConf.load(CONFIGS / "hydra" / "launcher" / f"{launcher}.yaml")
    [plugin] = [d for d in node.get("defaults", [launcher]) if d != "_self_"]  # without: matched by name
    own = {k: v for k, v in OmegaConf.to_container(node, resolve=False).items() if k != "defaults"}
    with warnings.catch_warnings(record=True) as caught, initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        warnings.simplefilter("always")
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert not [str(w.message) for w in caught]
    expected = OmegaConf.merge(ConfigStore.instance().load(f"hydra/launcher/{plugin}.yaml").node, own)
    assert OmegaConf.to_container(cfg.hydra.launcher) == OmegaConf.to_container(expected)
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.hydra_submitit_launcher.")
    with pytest.raises(Exception, match="timeout_min=an hour"), initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        compose("train", overrides=[f"hydra/launcher={launcher}", "hydra.launcher.timeout_min=an hour"],
                return_hydra_config=True)


@pytest.mark.parametrize("plugins, ours", sorted(Checks.RENAMED.items()))
def test_a_sweep_with_the_plugins_own_launcher_stops_naming_sslkits(plugins, ours, tmp_path, capsys):
    """The plugin's bare submitit_slurm / submitit_local (e.g. no requeue after a time-out)
    stop a sweep before any job, with the name of sslkit's launcher that extends it."""
    assert (CONFIGS / "hydra" / "launcher" / f"{ours}.yaml").exists()
    assert OmegaConf.load(CONFIGS / "hydra" / "launcher" / f"{ours}.yaml").defaults[0] == plugins
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={plugins}", f"hydra.sweep.dir={tmp_path}"],
                      return_hydra_config=True)
    with pytest.raises(SystemExit) as info:
        Checks().on_multirun_start(cfg)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"sslkit-train: error: hydra/launcher={plugins} is the submitit "
                                                   "plugin's own config"), err
    assert f"sslkit's is hydra/launcher={ours} (configs/hydra/launcher/{ours}.yaml" in err, err


def test_hydra_names_the_job_after_the_command():
    """--help's header ("<name>, of sslkit: ..."), the run directory's <name>.log and
    the SLURM job name are hydra.job.name: the console script of pyproject.toml that runs
    sslkit.cli:train_main, not the module's name (cli)."""
    import tomllib

    scripts = tomllib.loads((Path(CONFIG_DIR).parent / "pyproject.toml").read_text())["project"]["scripts"]
    [command] = [name for name, target in scripts.items() if target == "sslkit.cli:train_main"]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    assert cfg.hydra.job.name == command
