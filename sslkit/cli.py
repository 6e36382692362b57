"""Command-line entry points: `sslkit-train`, `sslkit-theory` (Hydra) and `sslkit-report`.

A mistake in the command is reported before any training starts, as one paragraph on
stderr (`sslkit-train: error: ...`, or `sslkit-theory: ...`; exit status 2), by the first
process only under torchrun. `_check_command`, for both commands: overrides naming no
group or key, or a key no option of its group has, are caught before Hydra composes, and
a value Hydra cannot merge (of the wrong type, or not one of an enum's) by composing
once; the run directory (or a sweep's directory) and every job of a `-m` sweep are
checked by `Checks`, a Hydra callback that runs before the first job; the rest by
`train` before its loop, and a run directory made for that run is removed again.
`--help` is Hydra's page, drawn by `_help`.
"""

import argparse
import difflib
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Any

import hydra
import torch.distributed
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ValidationError

from sslkit import checkpoint, layout, runlock
from sslkit.config import CONFIG_DIR, TrainConfig, register_configs
from sslkit.errors import ConfigError, Preempted


def _config_error(exc: BaseException | None, cfg: DictConfig | None = None) -> ConfigError | None:
    """The ConfigError behind `exc`, also when Hydra's instantiate wrapped it; a ValueError
    that a `_target_` raised on building (a value it refuses: loss.temperature=0, a negative
    optim.weight_decay) as one that names the config group of `cfg` with that target."""
    while exc is not None and not isinstance(exc, ConfigError):
        target = re.match(r"Error in call to target '([\w.]+)'", str(exc))
        if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, ValueError) and target \
                and not isinstance(exc.__cause__, ConfigError):
            groups = [g for g, node in (cfg or {}).items() if isinstance(node, DictConfig)
                      and str(node.get("_target_", "")).rsplit(".", 1)[-1] == target[1].rsplit(".", 1)[-1]]
            where = f"{groups[0]} ({target[1]})" if groups else target[1]
            keys = f" Change the {groups[0]}.* value it names." if groups else ""
            return ConfigError(f"{where} refused its settings: {str(exc.__cause__).rstrip('.')}.{keys}")
        exc = exc.__cause__
    return exc


def _merge_error(exc: BaseException) -> str | None:
    """`OVERRIDE: why` when Hydra could not merge an override into the typed config (a
    value of the wrong type, or not one of an enum's values); else None."""
    match = re.fullmatch(r"Error merging override (.+)", str(exc).strip())
    if isinstance(exc, ConfigCompositionException) and match and isinstance(exc.__cause__, ValidationError):
        return f"{match[1]}: {str(exc.__cause__.msg).splitlines()[0]}."
    return None


def _preset_key_error(exc: BaseException, overrides: list[str]) -> str | None:
    """What to do when a preset (configs/experiment/, or any file of configs/) sets a key that
    the option chosen for its group does not have, e.g. `sslkit-train backbone=resnet18`:
    the default experiment sets backbone.out_dim for the linear backbone; else None."""
    match = re.match(r"In '([\w/]+)': ConfigKeyError raised while composing config:\nKey '\w+' not in '\w+'\n"
                     r"\s+full_key: (\S+)", str(exc))
    if not isinstance(exc, ConfigCompositionException) or match is None:
        return None
    preset, key = match[1], match[2]
    group = key.split(".")[0]
    chosen = next((o for o in reversed(overrides) if o.startswith(f"{group}=")), f"the chosen {group}")
    message = f"configs/{preset}.yaml sets {key}, which {chosen} does not have."
    if preset.startswith("experiment/"):
        name = preset.removeprefix("experiment/")
        chose = any(o.startswith("experiment=") for o in overrides)
        default = "" if chose else " (the default of a plain sslkit-train)"
        command = shlex.join([PROG, "~experiment", *(a for a in sys.argv[1:] if not a.startswith("experiment="))])
        message += (f" Leave the experiment {name}{default} out with ~experiment: {command}; or choose "
                    f"another experiment=: {', '.join(_options('experiment'))}.")
    return message


def _compose(overrides: list[str]) -> DictConfig | None:
    """The config `overrides` compose, with its hydra node (~0.3 s). A value Hydra cannot
    merge (`_merge_error`) or a preset's key that the chosen option lacks (`_preset_key_error`)
    stops here with one line (Hydra would print it over several lines, with exit status 1);
    for any other error None, and Hydra reports it."""
    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=overrides, return_hydra_config=True)
    except Exception as exc:
        if (message := _merge_error(exc) or _preset_key_error(exc, overrides)
                or _other_options_key(exc, overrides)) is not None:
            _fail(f"error: {message}")
        return None


def _other_options_key(exc: BaseException, overrides: list[str]) -> str | None:
    """What to do when an override sets a key that the chosen option of its group lacks but
    other options have (optim.betas with optim=sgd: a key of optim=adamw), instead of Hydra's
    hint to add it with `+`; else None."""
    match = re.fullmatch(r"Could not override '([\w.]+)'\.\nTo append to your config use \+(.+)", str(exc).strip())
    if not isinstance(exc, ConfigCompositionException) or match is None:
        return None
    key, override = match[1], match[2]
    group, sub = key.split(".", 1)
    if not (Path(CONFIG_DIR) / group).is_dir():
        return None
    having, chosen = _options_with_key(group, key), f"the chosen {group}"
    try:  # the option the command chose: its config without the overrides below the group
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[o for o in overrides if not o.lstrip("+~").startswith(f"{group}.")],
                          return_hydra_config=True)
        chosen = f"{group}={cfg.hydra.runtime.choices[group]}"
    except Exception:
        pass
    if not having:
        return f"{override}: no option of {group} has the key {key} (configs/{group}/). Leave it out."
    return (f"{override}: {chosen} has no key {key}; it is a key of {', '.join(f'{group}={o}' for o in having)}. "
            f"Choose it with {group}={having[0]} {override}, or leave {key} out.")


def _options_with_key(group: str, key: str) -> list[str]:
    """The options of `group` whose config, as `sslkit-train ~experiment group=OPTION`
    composes it, has the dotted `key` (≈ 0.1 s an option)."""
    having = []
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        for option in _options(group):
            try:
                cfg = compose("train", overrides=["~experiment", f"{group}={option}"])
            except Exception:  # an option that needs other choices: not one to suggest alone
                continue
            if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
                having.append(option)
    return having


_ABSENT = object()


PROG = "sslkit-train"  # the command that reports (set by _check_command)


def _is_main() -> bool:
    """Whether this is the process that reports (rank 0, or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def _fail(message: str, status: int = 2, together: bool = False, then: Callable[[], None] = lambda: None) -> None:
    """Print `PROG: <message>` once (from rank 0), call `then` and exit with
    `status`; with `together`, every rank first waits for rank 0's line (torchrun stops
    the other ranks as soon as one exits, which could cut it)."""
    if _is_main():
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    if together and torch.distributed.is_initialized():
        torch.distributed.barrier()
    then()
    sys.exit(status)


def _resume_command(run_dir: Path) -> str:
    """The command that continues the run in `run_dir`: this job's overrides, its directory."""
    task = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.run.dir=")]
    launcher = "torchrun ... $(which sslkit-train)" if "RANK" in os.environ else "sslkit-train"
    return f"{launcher} {shlex.join([*task, f'hydra.run.dir={run_dir}'])}"


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _train(cfg: DictConfig) -> None:
    from sslkit.run import StopSignal
    from sslkit.train import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        train(cfg, run_dir)
    except Preempted as exc:
        # after the line, the handler the signal had before training: submitit's requeue
        # (rank 0's; the other ranks exit: `scontrol requeue <job id>` restarts every task of the job)
        _fail(f"{exc} Resume with: {_resume_command(run_dir)}", exc.exit_code, together=True,
              then=lambda signal=exc.signal: StopSignal.hand_on(signal))
    except KeyboardInterrupt:
        checkpoints = checkpoint.step_files(run_dir / layout.CHECKPOINTS)
        _fail("interrupted (Ctrl-C) without a checkpoint of this moment; "
              + (f"{_resume_command(run_dir)} resumes from {checkpoints[0]}." if checkpoints
                 else "nothing to resume."), 130)
    except Exception as exc:
        if (error := _config_error(exc, cfg)) is None:
            raise
        _fail(f"error: {error}", then=Checks.remove_new_run_dir)
    if _is_main():
        if cfg.trainer.report and (run_dir / layout.METRICS).exists():
            from sslkit.report import stepwise_figure  # matplotlib: only when a figure is drawn

            try:
                print(f"figure: {stepwise_figure(run_dir, pdf=False)}")
            except KeyboardInterrupt:  # training is over and saved: only the figure is missing
                _fail(f"interrupted (Ctrl-C) while drawing the figure; the run is complete in {run_dir}, "
                      f"and sslkit-report {run_dir} draws it.", 130)
        print(f"run directory: {run_dir}")


class Checks(Callback):
    """Hydra callback (configs/train.yaml, hydra.callbacks): before the run, or before the
    first job of a sweep, the output directory must be writable (and, for sslkit-train,
    not in use by another process: sslkit.runlock, held from here on); a sweep's jobs are each
    composed and checked with `sslkit.train.check` before any of them trains, and a SLURM
    sweep needs SLURM's commands (submitit would stop with a traceback)."""

    # configs/hydra/launcher/: sslkit's launchers, named apart from the plugin's that they extend
    RENAMED = {"submitit_slurm": "slurm", "submitit_local": "local"}

    created: Path | None = None  # the outermost folder of the run directory this run creates

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._writable(config.hydra.run.dir, "hydra.run.dir")
        path = Path(config.hydra.run.dir).absolute()
        Checks.created = next((p for p in (*reversed(path.parents), path) if not p.exists()), None)
        if PROG == "sslkit-train" and runlock.is_locking_rank():  # held until the process ends; before
            try:                                                   # Hydra writes .hydra/ and the log
                runlock.acquire(path)
            except ConfigError as exc:
                _fail(f"error: {exc}")

    @staticmethod
    def remove_new_run_dir() -> None:
        """After a config error: remove the run directory if this run created it (then it
        holds only what this run wrote before the check), and the new folders above it;
        from rank 0."""
        if Checks.created is not None and _is_main():
            shutil.rmtree(Checks.created, ignore_errors=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra

        from sslkit.train import check

        self._writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        if (launcher := config.hydra.runtime.choices.get("hydra/launcher")) in self.RENAMED:
            _fail(f"error: hydra/launcher={launcher} is the submitit plugin's own config, without sslkit's "
                  f"settings (e.g. no requeue after a time-out); sslkit's is hydra/launcher={self.RENAMED[launcher]} "
                  f"(configs/hydra/launcher/{self.RENAMED[launcher]}.yaml, on top of {launcher}).")
        loader = GlobalHydra.instance().config_loader()
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(list(config.hydra.overrides.task))
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        for num, job in enumerate(jobs):
            try:
                job_cfg = loader.load_sweep_config(config, list(job))
            except Exception as exc:
                if (error := _merge_error(exc)) is None:
                    raise
                _fail(f"error: sweep job {num}, checked before any job trains: {error}")
            with read_write(job_cfg), open_dict(job_cfg):
                del job_cfg["hydra"]
            try:
                check(job_cfg)
            except Exception as exc:
                if (error := _config_error(exc, job_cfg)) is None:
                    raise
                _fail(f"error: sweep job {num} ({' '.join(job)}), checked before any job trains: {error}")
        missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
        if config.hydra.launcher._target_.endswith(".SlurmLauncher") and missing:
            _fail(f"error: hydra/launcher=slurm submits the {len(jobs)} jobs to SLURM, and this machine "
                  f"has no SLURM ({' and '.join(missing)} not on PATH). Launch the command from a node of the "
                  "cluster, or run the sweep here with hydra/launcher=local (without the "
                  "hydra.launcher.* keys only SLURM has: partition, account, qos, constraint, gres).")

    @staticmethod
    def _writable(directory: str, key: str) -> None:
        """The nearest existing folder of `directory` accepts new folders: one is made and
        removed again (permissions alone do not tell: /sys and /proc refuse them to root)."""
        path = Path(directory).absolute()
        existing = next(p for p in (path, *path.parents) if p.exists())
        why = "not a folder" if not existing.is_dir() else None
        if why is None:
            try:
                tempfile.TemporaryDirectory(dir=existing).cleanup()
            except OSError as exc:
                why = f"a folder that refuses new folders ({exc.strerror or exc})"
        if why is not None:
            _fail(f"error: {key}={directory} cannot be written: {existing} is {why}. "
                  f"Choose a writable directory with {key}=DIR.")


# `key=~/path` as a shell would expand it in an assignment; Hydra's grammar has no `~`.
_HOME = re.compile(r"^(\+{0,2}[\w.@/-]+=)~(?=/|$)")


def _group_keys(group: str) -> list[str] | None:
    """The keys `group.KEY=...` may set under any option of `group`: the fields of its
    schemas (registered by register_configs), of TrainerConfig or of EvalConfig; None for
    a group whose keys are not checked here (experiment, hydra, logger)."""
    if group in ("trainer", "eval"):
        return sorted(TrainConfig.__dataclass_fields__[group].default_factory.__dataclass_fields__)
    schemas = ConfigStore.instance().repo.get("schema", {}).get(group)
    if not isinstance(schemas, dict) or group == "logger":  # logger.<option>.<key>: one level deeper
        return None
    return sorted({key for schema in schemas.values() for key in schema.node if not key.startswith("_")})


def _groups() -> list[str]:
    """The config groups: the folders of configs/, by name (hydra's included)."""
    return sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir())


def _options(group: str) -> list[str]:
    """The options of a config group: the files configs/<group>/*.yaml, by name."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def _did_you_mean(word: str, choices: list[str], corrected: Callable[[str], str]) -> str:
    """"Did you mean <corrected(the choice closest to word)>? ", or "" when none is close."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"Did you mean {corrected(close[0])}? " if close else ""


def _known_override(arg: str) -> str | None:
    """None if the override `arg` names a config group or a key; else the message. Below a
    group, the first key must be one of `_group_keys` (an override with `+` adds a key and
    is left to Hydra)."""
    key = arg.split("=", 1)[0].lstrip("+~")
    head = re.split(r"[./@]", key, maxsplit=1)[0]
    groups = _groups()
    keys = sorted({*TrainConfig.__dataclass_fields__, *groups})
    value = arg.split("=", 1)[1] if "=" in arg else ""
    if head in keys and key.startswith(f"{head}.") and not arg.startswith("+"):
        sub = key.split(".")[1]
        if (allowed := _group_keys(head)) is None or sub in allowed:
            return None
        fix = _did_you_mean(sub, allowed, lambda match: f"{head}.{match}{key[len(head) + 1 + len(sub):]}={value}")
        options = "" if head in ("trainer", "eval") else " under any of its options"
        show = "" if options == "" else f" (`{PROG} --cfg job {head}=OPTION` shows one option's)"
        return (f"error: {arg}: {head} has no key '{sub}'{options}. {fix}Keys of {head}: "
                f"{', '.join(allowed)}{show}.")
    if head in groups and key == head and head != "hydra" and re.fullmatch(r"\[?[\w,]*\]?", value):
        options = _options(head)
        if not (unknown := [v for v in value.strip("[]").split(",") if v and v != "null" and v not in options]):
            return None
        word = re.compile(rf"\b{unknown[0]}\b")
        fix = _did_you_mean(unknown[0], options, lambda match: f"{head}={word.sub(match, value)}")
        return (f"error: {arg}: {head} has no option {', '.join(map(repr, unknown))}. {fix}"
                f"Options of {head} (configs/{head}/): {', '.join(options)}.")
    if not head or head in keys:
        return None
    fix = _did_you_mean(head, keys, lambda match: f"{match}{key[len(head):]}={value}")
    return (f"error: {arg}: '{head}' is neither a config group nor a key. {fix}Groups (configs/): "
            f"{', '.join(g for g in groups if g != 'hydra')}; top-level keys: seed, device, trainer.")


def _not_an_override(args: list[str]) -> str | None:
    """The message for a word of the command line that is no override (Hydra would say
    "missing EQUAL at '<EOF>'"): spaces around `=` (`optim.lr = 0.1`), or an option without
    its group (`stepwise_digits` for experiment=stepwise_digits); None when every word is
    KEY=VALUE or ~KEY."""
    for i, arg in enumerate(args):
        after = args[i + 1] if i + 1 < len(args) else ""
        if after.startswith("=") or (arg.endswith("=") and after and "=" not in after):
            words = args[i:i + 2 + (after == "=" and i + 2 < len(args))]
            return (f"error: {' '.join(words)}: an override is one word, without spaces around '=': "
                    f"write {''.join(words)}.")
        if arg.startswith("~") or "=" in arg:
            continue
        groups = [g for g in _groups() if g != "hydra" and arg in _options(g)]
        fix = (f"Did you mean {' or '.join(f'{g}={arg}' for g in groups)}? " if groups else "")
        return (f"error: {arg}: not an override. {fix}Overrides are GROUP=OPTION (e.g. experiment=stepwise_digits), "
                f"KEY=VALUE (e.g. optim.lr=0.1) or ~GROUP; `{PROG} --help` lists the groups and keys.")
    return None


def _check_command(prog: str) -> bool:
    """Check the command line of `prog` before Hydra sees it (module docstring); True when
    the request was the help page, now printed, and nothing is left to run."""
    global PROG
    PROG = prog
    try:
        register_configs()
    except ConfigError as exc:  # an option file that names another option's schema
        _fail(f"error: {exc}")
    sys.argv[1:] = [_HOME.sub(lambda m: m.group(1) + str(Path.home()), a) for a in sys.argv[1:]]
    args = get_args_parser().parse_args(sys.argv[1:])  # Hydra's own parser: its flags, its errors
    if (message := _not_an_override(args.overrides)) is not None:
        _fail(message)
    for arg in args.overrides:
        if "=" in arg and (message := _known_override(arg)):
            _fail(message)
    other_app = args.config_path or args.config_name or args.config_dir
    if not (args.hydra_help or args.info or args.shell_completion or args.experimental_rerun or other_app):
        # a run, its help or its --cfg; a sweep's config as Hydra composes it first, without
        # the sweep overrides (its jobs: Checks)
        overrides = args.overrides
        if args.multirun:
            try:
                overrides = [o.input_line for o in OverridesParser.create().parse_overrides(overrides)
                             if not o.is_sweep_override()]
            except Exception:  # Hydra reports a malformed override
                return False
        # `+group.key` adds a key that the group's target would refuse (Hydra's hint after a key of
        # another option): composed as `group.key`, so that the key is checked as that one
        cfg = _compose([o[1:] if re.match(r"\+[^+=]+\.", o) and _group_keys(o[1:].split(".")[0]) else o
                        for o in overrides])
        if cfg is not None and args.help:
            try:
                print(_help(cfg, args.resolve), flush=True)
            except BrokenPipeError:  # `--help | head`: the reader left; nothing more to write
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return True
    return False


def train_main() -> None:
    if not _check_command("sslkit-train"):
        _train()


def _help(cfg: DictConfig, resolve: bool) -> str:
    """`sslkit-train --help [--resolve] [OVERRIDE ...]` (or sslkit-theory's) for the config
    `cfg` they compose (with its hydra node): Hydra's help page of the app, from its
    template (hydra.help), with the config groups listed from the folders of configs/:
    without the internal schema/ groups, and in well under a second after the imports
    (Hydra's own listing re-reads the config repository once per option, ≈ 12 s on 2
    cores). `--hydra-help` is Hydra's."""
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.help.app_name = PROG
        template = cfg.hydra.help.template
        del cfg["hydra"]
    listing = "".join(f"{group}: {', '.join(_options(group))}\n" for group in _groups() if group != "hydra")
    return Template(template).substitute(APP_CONFIG_GROUPS=listing, HYDRA_CONFIG_GROUPS="", FLAGS_HELP="",
                                         CONFIG=OmegaConf.to_yaml(cfg, resolve=resolve))


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _theory(cfg: DictConfig) -> None:
    from sslkit.theory.predict import predict

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        out = predict(_trained_config(cfg, Path(run_dir)), run_dir)
    except KeyboardInterrupt:
        _fail(f"interrupted (Ctrl-C) before the prediction was written; nothing of it is in {run_dir}. The same "
              f"command computes it again.", 130, then=Checks.remove_new_run_dir)
    except Exception as exc:
        if (error := _config_error(exc, cfg)) is None:
            raise
        _fail(f"error: {error}", then=Checks.remove_new_run_dir)
    print(f"prediction: {out}")


def _trained_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The config sslkit-theory predicts for in `run_dir`: `cfg`, or in the directory of a
    trained run (its config.yaml) the run's own. A command without overrides of its own
    (but those of the keys below) gets the run's, composed again from the overrides Hydra
    recorded for it (.hydra/overrides.yaml); a command whose config differs from the run's
    is a ConfigError naming the keys. Keys that change neither the trajectory nor the figure may
    differ (report.NOT_DRAWN; device, eval, spectrum: they only observe)."""
    from sslkit.report import NOT_DRAWN

    ignore = (*NOT_DRAWN, "device", "eval", "spectrum")
    saved = run_dir / layout.CONFIG
    if not saved.is_file() or not (diff := checkpoint.differences(saved.read_text(), cfg, ignore)):
        return cfg
    own = [o for o in HydraConfig.get().overrides.task  # those of keys that change the prediction
           if not any(re.match(rf"[+~]*{re.escape(k)}[.=@]", o) for k in ("hydra", *ignore))]
    record = run_dir / ".hydra" / "overrides.yaml"
    trained = [o for o in OmegaConf.load(record) if not o.startswith("hydra.")] if record.is_file() else None
    if not own and trained is not None:
        run_cfg = compose("train", overrides=trained)
        if not checkpoint.differences(saved.read_text(), run_cfg, ignore):
            print(f"config: the run's ({saved}), composed from its overrides: {shlex.join(trained) or 'none'}")
            return run_cfg
    keys = "; ".join(f"{key}: run {before!r}, now {now!r}" for key, (before, now) in diff.items())
    fix = (f"Leave the overrides out to use the run's own, or pass them: {PROG} {shlex.join(trained)} "
           f"hydra.run.dir={run_dir}" if trained is not None else "Pass the overrides the run was trained with")
    raise ConfigError(f"{run_dir} holds a run trained with another config, so the prediction would be for a "
                      f"different run: {keys}. {fix}.")


def theory_main() -> None:
    """`sslkit-theory <the training overrides> hydra.run.dir=RUN_DIR`: writes RUN_DIR/theory/,
    with its log (sslkit-theory.log) and Hydra's record (theory/.hydra/) apart from those of
    a training run in the same directory."""
    if not _check_command("sslkit-theory"):
        own = {"hydra.job.name": "sslkit-theory", "hydra.output_subdir": f"{layout.THEORY}/.hydra"}
        sys.argv += [f"{key}={value}" for key, value in own.items()
                     if not any(arg.startswith(f"{key}=") for arg in sys.argv)]
        _theory()


def report_main(argv: list[str] | None = None) -> None:
    from sslkit.report import compare_figure, side_by_side_figure, stepwise_figure, theory_table
    from sslkit.spectrum import NoSpectra

    parser = argparse.ArgumentParser(
        prog="sslkit-report",
        description="Write RUN_DIR/stepwise.png and .pdf for each run; with several runs, also "
                    "a figure that overlays them (--out).")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories written by sslkit-train")
    parser.add_argument("--out", type=Path, default=None,
                        help="comparison figure OUT.png / OUT.pdf (default: compare in the runs' "
                             "common parent directory)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="draw the runs in columns, each on its own step axis (e.g. runs of different "
                             "losses), instead of overlaid")
    args = parser.parse_args(argv)
    if args.out is not None and len(args.run_dirs) == 1:
        parser.exit(2, f"sslkit-report: error: --out {args.out} names the figure that compares several runs, and "
                       f"{args.run_dirs[0]} is one; its own figure is {args.run_dirs[0] / layout.FIGURE}.png (and "
                       f".pdf). Leave --out out, or pass the runs to compare.\n")
    for run_dir in args.run_dirs:
        runs = sorted(p.parent for p in run_dir.glob(f"*/{layout.METRICS}"))
        if runs and not (run_dir / layout.METRICS).exists():
            names = ", ".join(r.name for r in runs)
            parser.exit(2, f"sslkit-report: error: {run_dir} holds {len(runs)} runs ({names}), a sweep's, and is not "
                           f"one itself; draw them with: "
                           f"{shlex.join(['sslkit-report', *map(str, runs)])}\n")
    if args.out is not None:  # its folder is made now, so a bad --out stops before any drawing
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.exit(2, f"sslkit-report: error: --out {args.out}: its folder cannot be made ({exc.strerror}).\n")
    try:
        for run_dir in args.run_dirs:
            print(stepwise_figure(run_dir))
            if (table := theory_table(run_dir)) is not None:
                print(table)
        if len(args.run_dirs) > 1:
            out = args.out or Path(os.path.commonpath([d.resolve() for d in args.run_dirs])) / "compare"
            try:
                print((side_by_side_figure if args.side_by_side else compare_figure)(args.run_dirs, out))
            except NoSpectra as exc:
                parser.exit(2, f"sslkit-report: error: {exc} Each run's own figure is written above.\n")
    except FileNotFoundError as exc:
        parser.exit(2, f"sslkit-report: error: {exc}\n")
