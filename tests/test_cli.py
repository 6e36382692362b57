"""The shell interface: `sslkit-train` with Hydra overrides, `sslkit-report`, and the
messages a researcher sees for bad input."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sslkit.errors import ConfigError, NonFiniteLossError
from sslkit.spectrum import load
from sslkit.train import check, train

from conftest import on_cpu

BIN = Path(sys.executable).parent


def sslkit_train(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "sslkit-train", *on_cpu(*overrides), "trainer.progress=false"],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_and_report_from_the_shell(tmp_path):
    run_dir = tmp_path / "run"
    done = sslkit_train("experiment=stepwise_digits", "trainer.max_steps=20", "optim.lr=0.05",
                        f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "optim:" in (run_dir / "config.yaml").read_text()
    assert "lr: 0.05" in (run_dir / "config.yaml").read_text()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 20
    assert load(run_dir)["xcorr"].shape == (20, 64)
    figure = run_dir / "stepwise.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not figure.with_suffix(".pdf").exists()  # the run draws the figure once; the PDF on request
    drawn = figure.read_bytes()
    figure.unlink()
    report = subprocess.run([BIN / "sslkit-report", str(run_dir)], capture_output=True, text=True, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert figure.read_bytes() == drawn  # the same picture as the run's
    assert figure.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_default_run_directory_is_under_runs(tmp_path):
    done = sslkit_train("trainer.max_steps=2", "trainer.report=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("runs/*/*/metrics.jsonl"))) == 1


def run_entry_point(main: str, *args: str, monkeypatch, capsys) -> tuple[int, str, str]:
    """The console script `main` (sslkit-train, sslkit-theory) with `args`, in this process
    until it exits: its exit status, stdout and stderr."""
    import sslkit.cli

    monkeypatch.setattr(sys, "argv", [main, *args])
    monkeypatch.setattr(sslkit.cli, "PROG", sslkit.cli.PROG)  # restored after the test
    with pytest.raises(SystemExit) as stop:
        {"sslkit-train": sslkit.cli.train_main, "sslkit-theory": sslkit.cli.theory_main}[main]()
    out, err = capsys.readouterr()
    return stop.value.code, out, err


@pytest.mark.parametrize("main", ["sslkit-train", "sslkit-theory"])
@pytest.mark.parametrize(
    "args, expected",
    [
        (["loss=foo"], ["loss=foo: loss has no option 'foo'", "Options of loss", "barlow_twins", "simclr", "vicreg"]),
        (["optim.lr=abc"], ["optim.lr=abc: Value 'abc' of type 'str' could not be converted to Float."]),
        (["--cfg", "job", "optim.lr=abc"],
         ["optim.lr=abc: Value 'abc' of type 'str' could not be converted to Float."]),
        (["-m", "loss=simclr,vicreg", "optim.lr=abc"],
         ["optim.lr=abc: Value 'abc' of type 'str' could not be converted to Float."]),
        (["device=gpu"], ["device=gpu: Invalid value 'gpu', expected one of [auto, cpu, cuda]."]),
        (["optim.schedule=linear"],
         ["optim.schedule=linear: Invalid value 'linear', expected one of [constant, cosine, warmup_cosine]."]),
        (["optim.lrr=0.1"], ["optim.lrr=0.1", "no key 'lrr'", "Did you mean optim.lr=0.1?"]),
        (["trainer.max_steps=many"], ["trainer.max_steps=many: Value 'many' of type 'str' could not be converted "
                                      "to Integer."]),
    ],
)
def test_bad_overrides_name_the_key_and_the_allowed_values(tmp_path, monkeypatch, capsys, main, args, expected):
    """One line (`sslkit-train: error: ...` or `sslkit-theory: error: ...`, exit status 2)
    naming the override, the value and what is allowed, also under Hydra's `--cfg job` and
    beside a sweep's overrides (`-m`); the type and enum errors are Hydra's own, composed
    once before it would print them over several lines with status 1. No run directory is
    left. In process: the entry point stops before Hydra runs (the console script:
    test_a_bad_override_from_the_shell)."""
    monkeypatch.chdir(tmp_path)
    status, out, err = run_entry_point(main, *on_cpu(*args), monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"{main}: error: "), err
    for text in expected:
        assert text in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("main", ["sslkit-train", "sslkit-theory"])
@pytest.mark.parametrize("args, preset, key, chosen", [
    (["backbone=resnet18"], "stepwise_digits", "backbone.out_dim", "backbone=resnet18"),
    (["-m", "experiment=barlow_cifar10_resnet18", "backbone=linear", "seed=0,1"], "barlow_cifar10_resnet18",
     "backbone.cifar_stem", "backbone=linear"),
])
def test_a_preset_key_the_chosen_option_lacks_is_one_line_with_a_command_that_composes(
        tmp_path, monkeypatch, capsys, main, args, preset, key, chosen):
    """A plain `sslkit-train backbone=resnet18` runs the default experiment, whose
    backbone.out_dim the ResNet has no field for (Hydra: a ConfigKeyError over five lines).
    The line names the preset's file, the key and the choice, and gives the same command
    without the experiment, which composes to the chosen option."""
    from hydra import compose, initialize_config_dir

    from sslkit.cli import CONFIG_DIR

    monkeypatch.chdir(tmp_path)
    status, out, err = run_entry_point(main, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{main}: error: configs/experiment/{preset}.yaml sets {key}, which {chosen} does not "
                          f"have."), err
    command = re.search(rf"with ~experiment: ({main} .*?); or choose", err)[1].split()
    assert command[:2] == [main, "'~experiment'"] and "experiment=" not in " ".join(command)
    overrides = [o.strip("'") for o in command[1:] if not o.startswith("-") and "," not in o]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.backbone.network == {"backbone=resnet18": "sslkit.models.resnet"}.get(chosen, "sslkit.models.Linear")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_override_from_the_shell(tmp_path):
    """The console script's line and exit status, as a shell sees them, and no run directory."""
    done = sslkit_train("optim.schedule=linear", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("sslkit-train: error: optim.schedule=linear: Invalid value 'linear', expected one of "
                           "[constant, cosine, warmup_cosine].\n")
    assert list(tmp_path.iterdir()) == []


def test_a_config_error_removes_the_run_directory_it_created_and_only_that(tmp_path):
    """A check that fails in `train` (after Hydra made the run directory): the folders this
    run created are removed (runs/DATE/TIME, runs/ itself when new); a run directory that
    was there before keeps everything in it."""
    done = sslkit_train("spectrum.every=0", cwd=tmp_path)
    assert done.returncode == 2 and "spectrum.every=0 is not allowed" in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists()
    existing = tmp_path / "kept" / "run"
    existing.mkdir(parents=True)
    (existing / "notes.txt").write_text("mine")
    done = sslkit_train("spectrum.every=0", f"hydra.run.dir={existing}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert (existing / "notes.txt").read_text() == "mine" and (existing / ".hydra").is_dir()


def test_config_errors_print_one_paragraph_without_traceback(tmp_path):
    done = sslkit_train("data=synthetic", "augment=digits", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("sslkit-train: error: augment=digits shifts images")
    assert "Traceback" not in done.stderr and "augment=gaussian_noise" in done.stderr
    done = sslkit_train("loss=simclr", "loss.temperature=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == ("sslkit-train: error: loss (sslkit.losses.simclr.NTXentLoss) refused "
                                                    "its settings: temperature must be > 0, got 0.0. Change the loss.* "
                                                    "value it names.\n")


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["data=synthetic", "augment=digits"], r"augment=digits .* \(B, C, H, W\), got \(1024, 16\).*augment=gaussian_noise"),
        (["data=synthetic", "data.spectrum=[1.0,0.5]"], r"data.spectrum must list data.dim=16 .* Set data.dim=2"),
        (["data=synthetic", "data.spectrum=[1.0,-0.5]", "data.dim=2"], r"data.spectrum must list data.dim=2 positive"),
        (["data.batch_size=5000"], r"data.batch_size=5000 .* 1797 samples: choose 1 <= data.batch_size <= 1797"),
        (["trainer.max_steps=null"], r"trainer.max_steps=None, trainer.max_epochs=None\. Set at least one"),
        (["trainer.max_steps=0"], r"The run has no steps"),
        (["backbone.out_dim=0"], r"^backbone.out_dim=0 is not allowed: use an integer >= 1\.$"),
        (["backbone=mlp", "backbone.width=0"], r"^backbone.width=0 is not allowed"),
        (["projector=mlp", "projector.hidden_dims=[64,0]"], r"projector.hidden_dims=\[64, 0\]: every size must be"),
        (["trainer.checkpoint_every=0"], r"^trainer.checkpoint_every=0 is not allowed: use an integer >= 1 \(a "),
        (["trainer.log_every=0"], r"^trainer.log_every=0 is not allowed"),
        (["trainer.keep_checkpoints=0"], r"^trainer.keep_checkpoints=0 is not allowed"),
        (["seed=-1"], r"^seed=-1 is not allowed: use an integer from 0 to 2\*\*32 - 1"),
    ],
)
def test_bad_shapes_and_sizes(config, tmp_path, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        try:
            train(config(*overrides), tmp_path)
        except Exception as exc:  # Hydra's instantiate wraps errors raised by a _target_
            raise exc.__cause__ if isinstance(exc.__cause__, ConfigError) else exc


def test_non_finite_loss_names_the_step_and_what_to_change(config, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step \d+: loss=(nan|inf) \(invariance=.*lower optim.lr"):
        train(config("experiment=stepwise_digits", "optim.lr=1e9", "trainer.max_steps=50"), tmp_path)


def test_resume_never_refuses_an_existing_run(config, tmp_path):
    train(config("trainer.max_steps=2"), tmp_path)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds a run .* trainer.resume=never. .*hydra.run.dir"):
        train(config("trainer.max_steps=2", "trainer.resume=never"), tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_cuda_request_without_cuda_is_explained(config, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ConfigError, match="device=cuda was requested but no CUDA device"):
        train(config("device=cuda"), tmp_path)


def test_every_experiment_preset_composes_and_builds(config, tmp_path):
    from hydra.utils import instantiate
    from test_sources import write_cifar10

    write_cifar10(tmp_path, n=52)  # the CIFAR presets read data.root: 5 × 52 images ≥ their batch of 256
    for preset in sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "experiment").glob("*.yaml")):
        cfg = config(f"experiment={preset}", *([f"data.root={tmp_path}"] if "cifar" in preset else []))
        data = instantiate(cfg.data)
        backbone = instantiate(cfg.backbone, in_shape=tuple(data.x.shape[1:]))
        instantiate(cfg.projector, in_dim=backbone.out_dim)
        instantiate(cfg.loss), instantiate(cfg.augment)


def test_plain_sslkit_train_is_the_default_experiment():
    """`sslkit-train` with no arguments composes exactly `make train`'s preset."""
    from hydra import compose, initialize_config_dir

    from sslkit.cli import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        plain, preset = compose("train"), compose("train", overrides=["experiment=stepwise_digits"])
    assert plain == preset
    make = (Path(__file__).parents[1] / "Makefile").read_text()
    assert "\t$(BIN)/sslkit-train $(ARGS)\n" in make


def test_data_sets_get_their_own_views_without_augment(config):
    """data=cifar10 alone: the cifar recipe (CIFAR-10 statistics), not the digits shifts."""
    cfg = config("data=cifar10")
    assert cfg.augment._target_ == "sslkit.augment.ImageViews"
    assert list(cfg.augment.mean) == [0.4914, 0.4822, 0.4465]
    assert config("data=synthetic").augment._target_ == "sslkit.augment.GaussianNoise"
    assert config("data=cifar10", "augment=simclr").augment.view1.blur_p == 0.5  # an explicit choice wins


def test_unknown_group_and_tilde_paths_from_the_shell(tmp_path, monkeypatch, capsys):
    """optimizer=adamw (and Hydra's +optimizer=adamw) are refused naming optim=adamw (in
    process: the check before Hydra); data.root=~/... reaches the data check as the home
    directory's path (from the shell)."""
    monkeypatch.chdir(tmp_path)
    for arg in ("optimizer=adamw", "+optimizer=adamw"):
        status, _, err = run_entry_point("sslkit-train", arg, monkeypatch=monkeypatch, capsys=capsys)
        assert status == 2 and "Did you mean optim=adamw?" in err and "Traceback" not in err, err
    done = subprocess.run([BIN / "sslkit-train", "data=cifar10", "data.root=~/nowhere"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 2 and f"data.root={tmp_path}/nowhere is not a directory" in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("metrics.jsonl"))


@pytest.mark.parametrize("override, group, suggestion, targets", [
    ("optim.lrr=0.1", "optim", "optim.lr=0.1", ("torch.optim.SGD", "torch.optim.AdamW", "sslkit.optim.LARS")),
    ("backbone.widht=10", "backbone", "backbone.width=10", ("sslkit.models.MLP", "sslkit.models.CNN")),
    ("trainer.max_step=50", "trainer", "trainer.max_steps=50", ()),
])
def test_a_mistyped_key_is_one_message_with_the_keys_of_its_group(override, group, suggestion, targets):
    """A key below a group that none of its options has: one line naming the override, the
    closest key and the group's keys, which include every parameter of the options'
    constructors (read here from their signatures) or every field of the trainer's
    dataclass. In process, the check sslkit-train makes before Hydra composes (the shell's
    message and exit status: test_bad_overrides_name_the_key_and_the_allowed_values)."""
    import dataclasses
    import inspect

    from hydra.utils import get_object

    from sslkit.cli import _known_override
    from sslkit.config import BUILT_WITH, TrainerConfig, register_configs

    register_configs()
    line = _known_override(override)
    assert line.startswith(f"error: {override}: {group} has no key") and f"Did you mean {suggestion}?" in line
    assert "\n" not in line and "+" + group not in line
    listed = set(line.split(f"Keys of {group}: ")[1].split(" (")[0].rstrip(".").split(", "))
    expected = ({f.name for f in dataclasses.fields(TrainerConfig)} if group == "trainer" else
                {p for t in targets for p in inspect.signature(get_object(t)).parameters} - BUILT_WITH[group] - {"kwargs"})
    assert expected <= listed, expected - listed


def test_keys_of_other_options_and_deeper_keys_pass_the_early_check():
    """The early check looks at the first key below a group only, across all its options:
    a key of another option, a nested key, a logger's key and an added key reach Hydra."""
    from sslkit.cli import _known_override
    from sslkit.config import register_configs

    register_configs()
    for arg in ("optim.betas=[0.9,0.95]", "augment.view2.hue=0.3", "eval.online_probe.lr=0.5",
                "logger.wandb.mode=offline", "+optim.foo=1", "spectrum.enabled=false", "method.tau=0.99",
                "hydra.run.dir=x", "data.root=/x"):
        assert _known_override(arg) is None, arg


@pytest.mark.parametrize("override, unknown, suggestion", [
    ("eval=[knn,onlineprobe]", "onlineprobe", "eval=[knn,online_probe]"),  # a list: Hydra names no options
    ("loss=barlow_twins,simclrr", "simclrr", "loss=barlow_twins,simclr"),  # a sweep's values
    ("loss=barlowtwins", "barlowtwins", "loss=barlow_twins"),
])
def test_an_unknown_option_is_one_line_with_the_groups_files(override, unknown, suggestion):
    """Each value of a group override (one, a list, a sweep) must be a file of configs/<group>/:
    the line names the unknown one, the closest and every file (listed here from the folder)."""
    from sslkit.cli import CONFIG_DIR, _known_override

    group = override.split("=")[0]
    line = _known_override(override)
    assert line.startswith(f"error: {override}: {group} has no option '{unknown}'.") and "\n" not in line
    assert f"Did you mean {suggestion}?" in line
    files = sorted(name.removesuffix(".yaml") for name in os.listdir(Path(CONFIG_DIR) / group))
    assert line.endswith(f"Options of {group} (configs/{group}/): {', '.join(files)}.")
    for fine in ("eval=[knn,online_probe]", "loss=barlow_twins,simclr", "logger=[tensorboard,wandb]",
                 "eval=none", "experiment=stepwise_digits_vicreg", "loss=choice(simclr,vicreg)"):
        assert _known_override(fine) is None, fine


# sslkit-train with a Ctrl-C that arrives while the finished run's figure is drawn
CTRL_C_IN_FIGURE = """
import sys
import sslkit.report

def interrupted(run_dir, **options):
    raise KeyboardInterrupt

sslkit.report.stepwise_figure = interrupted
from sslkit.cli import train_main
sys.argv = ["sslkit-train", *sys.argv[1:]]
train_main()
"""


@pytest.mark.slow  # a process of its own: about 11 s, mostly imports
def test_ctrl_c_while_the_figure_is_drawn_is_one_line_and_keeps_the_run(tmp_path):
    """Training is over and saved when the figure is drawn: a Ctrl-C then ends with one
    line that says so and names sslkit-report, status 130, no traceback; the run is whole
    (the checkpoint of its last step, one metrics line per step)."""
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_FIGURE,
                           *on_cpu("~experiment", "trainer.max_steps=2", "trainer.progress=false", f"hydra.run.dir={run}")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"sslkit-train: interrupted (Ctrl-C) while drawing the figure; the "
                                                    f"run is complete in {run}, and sslkit-report {run} draws it.")
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1
    assert (run / "checkpoints" / "step_00000002.pt").exists()


# sslkit-theory with a Ctrl-C that arrives while it computes
CTRL_C_IN_THEORY = """
import sys
import sslkit.theory.predict

def interrupted(cfg, run_dir):
    raise KeyboardInterrupt

sslkit.theory.predict.predict = interrupted
from sslkit.cli import theory_main
sys.argv = ["sslkit-theory", *sys.argv[1:]]
theory_main()
"""


@pytest.mark.slow  # a process of its own per directory: about 10 s, mostly imports
def test_ctrl_c_in_sslkit_theory_is_one_line_and_removes_only_what_it_created(tmp_path):
    """Status 130, one line, no traceback; a directory the command created is removed, a run
    directory that was there (to predict an existing run) is kept with its files."""
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "metrics.jsonl").write_text("{}\n")
    for run in (tmp_path / "new" / "run", existing):
        done = subprocess.run([sys.executable, "-c", CTRL_C_IN_THEORY, f"hydra.run.dir={run}"], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (f"sslkit-theory: interrupted (Ctrl-C) before the prediction "
                                                        f"was written; nothing of it is in {run}. The same command "
                                                        f"computes it again.")
    assert not (tmp_path / "new").exists()
    assert (existing / "metrics.jsonl").read_text() == "{}\n"


@pytest.mark.slow  # two processes: about 20 s
def test_sslkit_theory_in_a_run_directory_keeps_the_runs_log_and_hydra_record(tmp_path):
    """The README's order: train, then predict into the same directory. The training run's
    .hydra/ (its overrides) and sslkit-train.log stay as training wrote them; the prediction's
    are theory/.hydra/ and sslkit-theory.log."""
    run = tmp_path / "run"
    assert sslkit_train("trainer.max_steps=2", "trainer.report=false", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    record = {f: (run / f).read_bytes() for f in (".hydra/overrides.yaml", ".hydra/config.yaml", "sslkit-train.log")}
    done = subprocess.run([BIN / "sslkit-theory", "trainer.max_steps=2", f"hydra.run.dir={run}"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {f: (run / f).read_bytes() for f in record} == record
    assert "- trainer.max_steps=2" in (run / "theory" / ".hydra" / "overrides.yaml").read_text()
    assert (run / "sslkit-theory.log").exists() and (run / "theory" / "modes.json").exists()


def test_a_sweep_checks_every_job_before_the_first_trains(tmp_path):
    done = sslkit_train("-m", "data.batch_size=256,5000,128", "trainer.max_steps=2", f"hydra.sweep.dir={tmp_path / 's'}",
                        cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("sslkit-train: error: sweep job 1 (data.batch_size=5000")
    assert "choose 1 <= data.batch_size <= 1797" in done.stderr
    assert not list(tmp_path.rglob("metrics.jsonl")), "no job may train"
    done = sslkit_train("-m", "trainer.max_steps=2,many", f"hydra.sweep.dir={tmp_path / 't'}", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "sslkit-train: error: sweep job 1, checked before any job trains: trainer.max_steps=many: Value 'many' "
        "of type 'str' could not be converted to Integer."], done.stderr
    assert not list(tmp_path.rglob("metrics.jsonl")), "no job may train"


def test_an_unwritable_run_directory_is_one_message(tmp_path):
    (tmp_path / "file").write_text("")
    done = sslkit_train(f"hydra.run.dir={tmp_path / 'file' / 'run'}", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (f"sslkit-train: error: hydra.run.dir={tmp_path / 'file' / 'run'} cannot be written: "
                           f"{tmp_path / 'file'} is not a folder. Choose a writable directory with hydra.run.dir=DIR.\n")


@pytest.mark.parametrize("overrides, pattern", [
    (["loss=simclr", "data.batch_size=1"], r"data.batch_size=1 is too small for SimCLR .* no negatives"),
    (["loss=barlow_twins", "data.batch_size=1"], r"data.batch_size=1 is too small for Barlow Twins .*constant"),
    (["loss=vicreg", "data.batch_size=1"], r"data.batch_size=1 is too small for VICReg: .*N - 1 = 0"),
    (["optim.lr=0"], r"optim.lr=0.0 would not train: .* e.g. optim.lr=0.1"),
    (["optim.momentum=1.5"], r"optim.momentum=1.5 is not allowed: use 0 <= momentum < 1"),
    (["optim=lars", "optim.momentum=1"], r"optim.momentum=1.0 is not allowed"),
])
def test_settings_that_would_train_nothing_are_refused(config, tmp_path, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        check(config(*overrides))
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("overrides, group, target, reason", [
    (["loss=simclr", "loss.temperature=0"], "loss", "sslkit.losses.simclr.NTXentLoss", "temperature must be > 0"),
    (["loss=barlow_twins", "loss.lambd=-1"], "loss", "sslkit.losses.barlow_twins.BarlowTwinsLoss", "lambd must be >= 0"),
    (["loss=vicreg", "loss.cov_coeff=-1"], "loss", "sslkit.losses.vicreg.VICRegLoss", "cov_coeff must be >= 0"),
    (["optim=adamw", "optim.weight_decay=-1"], "optim", "torch.optim.adamw.AdamW", "weight_decay"),  # torch's words
])
def test_a_value_the_target_refuses_is_one_line_naming_its_group(config, overrides, group, target, reason):
    """A ValueError that a config's `_target_` raises while Hydra builds it (Hydra: "Error
    in call to target ...", a traceback) is reported as a config error naming the group."""
    from sslkit.cli import _config_error

    cfg = config(*overrides)
    with pytest.raises(Exception) as raised:
        check(cfg)
    error = _config_error(raised.value, cfg)
    assert isinstance(error, ConfigError) and len(str(error).splitlines()) == 1
    assert str(error).startswith(f"{group} ({target}) refused its settings: ") and reason in str(error), str(error)
    assert str(error).endswith(f"Change the {group}.* value it names.")


def test_batch_one_works_for_the_loss_that_allows_it(config, tmp_path):
    """The simplified Barlow Twins loss (no normalisation) is defined at batch 1."""
    train(config("loss=barlow_twins_simplified", "data.batch_size=1", "trainer.max_steps=2"), tmp_path)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_rgb_statistics_on_grey_images_suggest_values_that_work(config, tmp_path):
    with pytest.raises(ConfigError, match=r"augment.mean=\[0.485,0.456,0.406\] .* 1-channel images") as error:
        check(config("augment=simclr"))
    fix = re.search(r"(augment.mean=\S+) (augment.std=\S+)\.$", str(error.value)).groups()
    train(config("augment=simclr", *fix, "trainer.max_steps=2"), tmp_path)


def test_on_nan_skip_of_a_diverged_run_stops_with_one_warning(config, tmp_path, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(NonFiniteLossError, match=r"10 steps in a row .*diverged"):
        train(config("experiment=stepwise_digits", "optim.lr=1e9", "trainer.max_steps=100",
                     "trainer.on_nan=skip"), tmp_path)
    assert caplog.text.count("Skipped (trainer.on_nan=skip)") == 1
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert any(r["loss"] is None for r in rows) and len(rows) < 100


HYDRAS_HELP = """
import sys
from sslkit.cli import _train
from sslkit.config import register_configs
register_configs()
_train()
"""


@pytest.mark.slow  # a process of its own: about 8 s, mostly imports
def test_help_into_a_reader_that_has_gone_ends_quietly(tmp_path):
    """`sslkit-train --help | head -1`, when head has exited before the page is written (the
    pipe is closed here at once, so every write finds no reader): exit status 0, no traceback."""
    help_ = subprocess.Popen([BIN / "sslkit-train", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=tmp_path, text=True)
    help_.stdout.close()
    assert help_.wait(timeout=300) == 0
    assert "Traceback" not in help_.stderr.read()


@pytest.mark.slow
def test_the_help_pages_example_composes_to_what_it_says(tmp_path):
    """The head of --help gives a command without the default experiment; it composes, to a
    ResNet-18 on CIFAR-10 with VICReg."""
    from hydra import compose, initialize_config_dir

    from sslkit.cli import CONFIG_DIR

    page = subprocess.run([BIN / "sslkit-train", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    example = next(line.split()[1:] for line in page.stdout.splitlines() if line.startswith("  sslkit-train "))
    assert example[0] == "~experiment", page.stdout
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=example)
    assert (cfg.backbone.arch, cfg.data._target_.rsplit(".", 1)[-1], cfg.loss._target_.rsplit(".", 1)[-1]) == (
        "resnet18", "cifar10", "VICRegLoss")


def test_help_is_hydras_page_without_the_internal_schema_groups(tmp_path):
    """`sslkit-train --help [--resolve] OVERRIDES` prints Hydra's own help page (the app's
    template, groups and composed config, as `hydra.main` prints it) less the schema/
    groups, which no user picks."""
    for args in (["--help", "loss=vicreg", "optim.lr=0.3"], ["--help", "--resolve", "eval=online_probe"]):
        ours = subprocess.run([BIN / "sslkit-train", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        hydra = subprocess.run([sys.executable, "-c", HYDRAS_HELP, *args], capture_output=True, text=True,
                               cwd=tmp_path, timeout=300)
        assert ours.returncode == hydra.returncode == 0, ours.stderr + hydra.stderr
        assert "schema/loss: " in hydra.stdout and "loss: barlow_twins, " in ours.stdout
        assert ours.stdout == "".join(line for line in hydra.stdout.splitlines(keepends=True)
                                      if not line.startswith("schema")), args


@pytest.mark.parametrize("args, expected", [
    (["stepwise_digits"], "stepwise_digits: not an override. Did you mean experiment=stepwise_digits?"),
    (["digits"], "digits: not an override. Did you mean augment=digits or data=digits?"),
    (["optim.lr", "=", "0.1"], "optim.lr = 0.1: an override is one word, without spaces around '=': "
                               "write optim.lr=0.1."),
    (["seed=1", "optim.lr=", "0.1"], "optim.lr= 0.1: an override is one word, without spaces around '=': "
                                     "write optim.lr=0.1."),
    (["optim.betas=[0.9,0.95]"], "optim.betas=[0.9,0.95]: optim=sgd has no key optim.betas; it is a key of "
                                 "optim=adamw. Choose it with optim=adamw optim.betas=[0.9,0.95]"),
    (["augment.view2.hue=0.3"], "augment.view2.hue=0.3: augment=digits has no key augment.view2.hue; it is a key "
                                "of augment=barlow_twins, augment=byol, "),
    (["data.root=/x"], "data.root=/x: data=digits has no key data.root; it is a key of data=cifar10, data=cifar100, "
                       "data=imagefolder, data=stl10."),
    (["+data.root=/x"], "data.root=/x: data=digits has no key data.root; it is a key of data=cifar10"),
    (["augment.view2.nothing=1"], "no option of augment has the key augment.view2.nothing"),
])
def test_words_that_are_no_override_and_keys_of_other_options_are_one_line(tmp_path, monkeypatch, capsys, args,
                                                                          expected):
    """A forgotten `experiment=`, spaces around `=` (Hydra: "missing EQUAL at '<EOF>'") and a
    key that only other options of its group have (Hydra: "Could not override", with a `+`
    hint whose run then fails with a TypeError) are one line with the fix, exit status 2,
    and leave no run directory. Which options have a key is checked here against each
    option's composed config."""
    monkeypatch.chdir(tmp_path)
    status, out, err = run_entry_point("sslkit-train", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert list(tmp_path.iterdir()) == []
    if "is a key of" in err:  # every option named composes with the key, the chosen one does not
        from sslkit.cli import _compose
        override = err.split(": ")[2]
        group = override.split(".")[0]
        for option in re.findall(rf"{group}=(\w+)", err.split("is a key of ")[1].split(". Choose")[0]):
            assert _compose(["~experiment", f"{group}={option}", override]) is not None, option


@pytest.mark.parametrize("directory", ["/sys/sslkit-run", "/proc/sslkit-run"])
def test_a_run_directory_under_sys_or_proc_is_one_line(tmp_path, directory):
    """/sys and /proc refuse new folders even to root, whose permission bits allow them
    (a traceback from Hydra's mkdir before)."""
    done = sslkit_train(f"hydra.run.dir={directory}", "trainer.max_steps=1", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"sslkit-train: error: hydra.run.dir={directory} cannot be written: "
                                  f"/{directory.split('/')[1]} is "), done.stderr
    assert done.stderr.rstrip().endswith("Choose a writable directory with hydra.run.dir=DIR.")


@pytest.mark.slow  # two processes: about 25 s
def test_a_run_directory_in_use_by_another_process_is_refused_and_freed_when_it_dies(tmp_path):
    """A second sslkit-train into the directory of a running one is one line naming the
    first (pid, host, command) and writes nothing there (both ran to exit 0, interleaving
    their records, before); once the first is killed (SIGKILL: no clean-up of its own) the
    kernel has released its lock and the directory can be taken again."""
    import socket

    from conftest import wait_for_lines
    from sslkit import runlock

    run_dir = tmp_path / "run"
    first = subprocess.Popen([BIN / "sslkit-train", *on_cpu("trainer.max_steps=100000", "trainer.progress=false",
                                                            f"hydra.run.dir={run_dir}")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        wait_for_lines(first, run_dir, 2)
        hydra_record = (run_dir / ".hydra" / "overrides.yaml").read_text()
        second = sslkit_train("trainer.max_steps=5", "seed=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert second.stderr.startswith(f"sslkit-train: error: {run_dir} is in use by another process, pid "
                                        f"{first.pid} on host {socket.gethostname()} ("), second.stderr
        assert "trainer.max_steps=100000" in second.stderr and "hydra.run.dir=DIR" in second.stderr
        assert (run_dir / ".hydra" / "overrides.yaml").read_text() == hydra_record  # the first run's, kept
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
    assert runlock.acquire(run_dir)
    runlock.release(run_dir)


@pytest.mark.slow  # three processes: about 40 s
def test_sslkit_theory_in_a_trained_run_uses_its_config_or_names_the_keys_that_differ(tmp_path, monkeypatch, capsys):
    """In the directory of a run trained with backbone.init_scale=0.01, a plain sslkit-theory
    predicts for the run's config, the same prediction as with the run's overrides spelled
    out (it predicted for the default init scale without a word); with overrides of its
    own whose config differs, it is one line naming the keys and the run's overrides."""
    trained = ("backbone.init_scale=0.01", "trainer.max_steps=40")
    run = tmp_path / "run"
    done = sslkit_train(*trained, "trainer.report=false", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    monkeypatch.chdir(tmp_path)
    status, out, err = run_entry_point("sslkit-theory", "optim.lr=0.06", f"hydra.run.dir={run}",
                                       monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert (f"sslkit-theory: error: {run} holds a run trained with another config, so the prediction would be for a "
            f"different run: backbone.init_scale: run 0.01, now 0.001; trainer.max_steps: run 40, now 1500. Leave "
            f"the overrides out to use the run's own, or pass them: sslkit-theory backbone.init_scale=0.01 "
            f"trainer.max_steps=40 ") in err, err
    assert not (run / "theory" / "modes.json").exists()
    spelled = subprocess.run([BIN / "sslkit-theory", *on_cpu(*trained), f"hydra.run.dir={tmp_path / 'spelled'}"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert spelled.returncode == 0, spelled.stderr
    plain = subprocess.run([BIN / "sslkit-theory", f"hydra.run.dir={run}"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    assert plain.returncode == 0 and "config: the run's" in plain.stdout, plain.stderr
    assert (run / "theory" / "modes.json").read_text() == (tmp_path / "spelled" / "theory" / "modes.json").read_text()
