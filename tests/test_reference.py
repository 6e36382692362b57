"""The configuration reference (sslkit.reference): the committed page is what the code
gives, it covers every option and key that the config folder and the schemas hold, a
changed default makes the page out of date, and a key without a meaning is an error."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sslkit import reference
from sslkit.config import CONFIG_DIR, TrainConfig, derive, derived_options, schema_path

TOY = '''
class Toy:
    """A toy loss.

    Args:
        weight: How much the toy counts.{extra}
    """

    def __init__(self, weight: float = {default}, mode: str = "a") -> None:
        self.weight = weight
'''


@pytest.fixture(scope="module")
def page() -> str:
    return reference.render()


def test_committed_page_is_what_the_generator_writes(page):
    """Regenerate with `python -m sslkit.reference` when this fails."""
    assert reference.PAGE.read_text() == page


def test_every_option_and_every_key_is_on_the_page(page):
    """Counted independently of the generator: the option files of configs/ and the fields
    of the schemas sslkit.config derives (and of TrainConfig's dataclasses)."""
    for path in Path(CONFIG_DIR).glob("*/**/*.yaml"):
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        assert f"**`{group}={path.stem}`**" in page, path
    derived = derived_options()
    for path in Path(CONFIG_DIR).glob("*/*.yaml"):
        node, first = OmegaConf.load(path), path.read_text().splitlines()[0]
        if "_target_" not in node or not schema_path(node):
            continue
        group, schema = schema_path(node).split("/")
        prefix = first.removeprefix("# @package ") if first.startswith("# @package") else group
        for f in dataclasses.fields(derive(*derived[group][schema])):
            if not f.name.startswith("_"):
                assert f"| `{prefix}.{f.name}` |" in page, (path, f.name)
    for f in dataclasses.fields(TrainConfig):
        nested = dataclasses.fields(f.type) if dataclasses.is_dataclass(f.type) else []
        for key in [f"{f.name}.{g.name}" for g in nested] or [f.name]:
            assert f"`{key}`" in page, key


def test_a_row_holds_the_schema_default_and_the_enum_values(page):
    assert "| `loss.lambd` | float | `0.0051` |  | Weight λ of the redundancy (off-diagonal) term. |" in page
    assert "| `trainer.on_nan` | enum | `stop` | `stop`, `skip` |" in page
    assert "| `augment.view2.solarize_p` | float | `0.0` |" in page  # a key of the nested ViewSpec


def toy_project(tmp_path: Path, default: str, extra: str = "") -> tuple[Path, dict]:
    """A config folder with one group `loss` whose option builds toymod.Toy, on PYTHONPATH."""
    (tmp_path / "toymod.py").write_text(TOY.format(default=default, extra=extra))
    configs = tmp_path / "configs"
    (configs / "loss").mkdir(parents=True, exist_ok=True)
    (configs / "train.yaml").write_text("defaults:\n  - loss: toy\n  - _self_\n")
    (configs / "loss" / "toy.yaml").write_text(
        "defaults:\n  - /schema/loss/toy@_here_\n  - _self_\n\n# The toy option.\n_target_: toymod.Toy\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    return configs, env


def generate(configs: Path, out: Path, env: dict, *flags: str) -> subprocess.CompletedProcess:
    """A fresh process, so that nothing the test process imported or cached takes part."""
    return subprocess.run([sys.executable, "-m", "sslkit.reference", "--configs", str(configs), "--out", str(out),
                           *flags], env=env, capture_output=True, text=True)


def test_a_changed_default_makes_the_page_out_of_date(tmp_path):
    page = tmp_path / "configuration.md"
    documented = "        mode: Which toy.\n"
    configs, env = toy_project(tmp_path, "1.5", extra="\n" + documented.rstrip("\n"))
    assert generate(configs, page, env).returncode == 0
    assert "| `loss.weight` | float | `1.5` |  | How much the toy counts. |" in page.read_text()
    assert generate(configs, page, env, "--check").returncode == 0

    toy_project(tmp_path, "2.5", extra="\n" + documented.rstrip("\n"))  # the constructor's default changes
    check = generate(configs, page, env, "--check")
    assert check.returncode == 1 and "out of date" in check.stderr
    assert generate(configs, page, env).returncode == 0
    assert "| `loss.weight` | float | `2.5` |" in page.read_text()


def test_a_key_without_a_meaning_is_a_one_line_error(tmp_path):
    configs, env = toy_project(tmp_path, "1.5")  # `mode` is not under Args:
    run = generate(configs, tmp_path / "page.md", env)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "loss.mode" in run.stderr and "toymod.Toy" in run.stderr
    assert not (tmp_path / "page.md").exists()


def test_option_settings_are_the_files_own_values():
    """loss=barlow_twins_simplified sets three keys over BarlowTwinsLoss's defaults."""
    path = Path(CONFIG_DIR) / "loss" / "barlow_twins_simplified.yaml"
    expected = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items() if k not in ("defaults", "_target_")}
    assert reference.settings(path) == expected == {"lambd": 1.0, "normalize": "none", "symmetric": True}
