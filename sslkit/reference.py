"""The configuration reference, docs/reference/configuration.md, written from the code.

Every group of configs/ and every option in it; for each option that builds a `_target_`,
every key with its type, default and allowed values from the schema `sslkit.config.derive`
reads from the target's signature (the same schema Hydra checks the option against), and
its meaning from the target's docstring. The run's own keys come from the hand-written
dataclasses of sslkit.config (TrainConfig, TrainerConfig, EvalConfig, Switch).

Docstrings are Google style, the style mkdocstrings renders: a class or function lists the
keys it takes under `Args:` (a dataclass under `Attributes:`), one line each, and states
no types or defaults (the signature holds them). A key without a meaning is an error:

    python -m sslkit.reference          # writes docs/reference/configuration.md
    python -m sslkit.reference --check  # exit 1 when the page differs from what it would write
"""

import argparse
import inspect
import json
import re
import sys
import types
import typing
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import fields, is_dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, Union

from griffe import Docstring, DocstringSectionKind, Parser
from hydra.utils import get_object
from omegaconf import MISSING, OmegaConf

from sslkit.config import CONFIG_DIR, TrainConfig, derive, derived_options, flatten, schema_path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "configuration.md"
HIDDEN = ("_target_", "_convert_")  # keys Hydra reads, not the user
COMMAND = "python -m sslkit.reference"


class MissingMeaning(Exception):
    """A key whose callable's docstring does not document it."""


@cache
def meanings(obj: Any) -> dict[str, str]:
    """{name: one-line meaning} of the `Args:` and `Attributes:` sections of obj's
    Google-style docstring (parsed by griffe, as mkdocstrings does): the first sentence,
    without a trailing "(default: …)" (the signature's default is the one shown)."""
    sections = Docstring(inspect.getdoc(obj) or "").parse(Parser.google, warnings=False)
    found = {}
    for section in sections:
        if section.kind in (DocstringSectionKind.parameters, DocstringSectionKind.attributes):
            for item in section.value:
                text = " ".join(item.description.split()).split(" (default:")[0]
                found[item.name] = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text, maxsplit=1)[0]
    return found


def meaning(key: str, name: str, objects: list[Any]) -> str:
    """The meaning of parameter `name` (config key `key`) from the first of `objects` that documents it."""
    for obj in objects:
        if name in meanings(obj):
            return meanings(obj)[name]
    where = ", ".join(f"{o.__module__}.{o.__qualname__}" for o in objects)
    raise MissingMeaning(f"{key}: no meaning for '{name}' in the docstring of {where}; document it under "
                         f"Args: (Attributes: for a dataclass), one line.")


def type_name(tp: Any) -> str:
    """An annotation of the schema in words: `int`, `float or null`, `list of int`, `enum`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names + (["null"] if type(None) in args else []))
    if origin in (list, tuple):  # a tuple is a list in a config file
        return f"list of {type_name(args[0])}" if args else "list"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "enum"
    return getattr(tp, "__name__", "any") if tp is not Any else "any"


def allowed(tp: Any) -> str:
    """The values of the enum in annotation `tp` (`X | None`, `list[X]` included), or ""."""
    if isinstance(tp, type) and issubclass(tp, Enum):
        return ", ".join(f"`{m.value}`" for m in tp)
    return next((values for arg in typing.get_args(tp) if (values := allowed(arg))), "")


def yaml_value(value: Any) -> str:
    """A value as it is written in a config file or an override (`???`: required, no default)."""
    if value is MISSING or value is NO_DEFAULT:
        return "required"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, float) and len(repr(value)) > 8:
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


def default_of(f: Any) -> Any:
    """A dataclass field's default (its factory's value for a list)."""
    return f.default_factory() if f.default_factory is not NO_DEFAULT else f.default


def prose(text: str) -> str:
    """Text for Markdown: `<` outside code spans escaped, so that root/<class>/ is not read as HTML."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def cell(text: str) -> str:
    """Text for a table cell: prose with `|` escaped."""
    return prose(text).replace("|", "\\|")


def key_rows(schema: type, prefix: str, objects: list[Any]) -> list[str]:
    """One table row per key of `schema` (a dataclass) under `prefix`; a field typed by a
    dataclass (ImageViews' ViewSpec) gives one row per field of that dataclass."""
    rows = []
    for f in fields(schema):
        if f.name in HIDDEN:
            continue
        key = f"{prefix}{f.name}"
        inner = next((t for t in (f.type, *typing.get_args(f.type)) if is_dataclass(t)), None)
        if inner is not None:
            rows.append(f"| `{key}` | {cell(type_name(f.type))} | | | {cell(meaning(key, f.name, objects))} |")
            rows += key_rows(inner, f"{key}.", [inner])
            continue
        rows.append(f"| `{key}` | {cell(type_name(f.type))} | `{cell(yaml_value(default_of(f)))}` "
                    f"| {allowed(f.type)} | {cell(meaning(key, f.name, objects))} |")
    return rows


def key_table(schema: type, prefix: str, objects: list[Any]) -> list[str]:
    """The table of `schema`'s keys (see key_rows), or a line saying there are none."""
    rows = key_rows(schema, prefix, objects)
    if not rows:
        return ["It takes no keys.", ""]
    return ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |", *rows, ""]


def description(path: Path) -> str:
    """The first block of comment lines of an option file, as one line (not `# @package`)."""
    block: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            block.append(line.lstrip("#").strip())
        elif block:
            break
    return " ".join(block)


def settings(path: Path) -> dict[str, Any]:
    """{dotted key: value} an option file writes itself (its defaults list and `_target_` left out)."""
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    node = {k: v for k, v in (node or {}).items() if k not in ("defaults", *HIDDEN)}
    return flatten(node)


def overrides(path: Path) -> list[str]:
    """`group=option` entries of an option file's defaults list (an experiment's choices)."""
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    out = []
    for entry in node.get("defaults", []):
        if isinstance(entry, dict):
            for k, v in entry.items():
                group = k.removeprefix("override ").lstrip("/").split("@")[0]
                out.append(f"{group}={yaml_value(v) if isinstance(v, list) else v}")
    return out


def option_line(name: str, group: str, path: Path, target: str | None) -> str:
    """A bullet for option `name`: what it builds, the file's own description, the options an
    experiment chooses and the keys the file sets."""
    parts = [f"- **`{group}={name}`**"]
    if target:
        parts.append(f"(`{target}`)")
    text = description(path)
    line = " ".join(parts) + (f": {prose(text)}" if text else ".")
    if chosen := overrides(path) if group == "experiment" else []:
        line += " Chooses " + ", ".join(f"`{c}`" for c in chosen) + "."
    if values := settings(path):
        prefix = f"{where}." if (where := package(path, group)) else ""
        line += " Sets " + ", ".join(f"`{prefix}{k}: {yaml_value(v)}`" for k, v in values.items()) + "."
    return line


def run_defaults(config_dir: Path) -> dict[str, str]:
    """{group: option} of configs/train.yaml's defaults list."""
    choices = {}
    for entry in OmegaConf.to_container(OmegaConf.load(config_dir / "train.yaml"))["defaults"]:
        if isinstance(entry, dict):
            (group, option), = entry.items()
            choices[group] = yaml_value(option) if isinstance(option, list) else str(option)
    return choices


def run_section(config_dir: Path) -> list[str]:
    """The run's own keys (TrainConfig) and its groups with their default options."""
    choices = run_defaults(config_dir)
    lines = ["## The run's keys", "",
             "`seed`, `device`, `trainer.*` and `eval.*` are keys of the run itself (`sslkit.config.TrainConfig`); "
             "set one with `KEY=VALUE`, e.g. `trainer.max_steps=2000`.", "",
             "| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    groups = []
    for f in fields(TrainConfig):
        if f.name in choices and not is_dataclass(f.type):
            groups.append(f"| `{f.name}` | `{choices[f.name]}` | {cell(meaning(f.name, f.name, [TrainConfig]))} |")
            continue
        if is_dataclass(f.type):
            lines += key_rows(f.type, f"{f.name}.", [f.type])
        else:
            lines.append(f"| `{f.name}` | {cell(type_name(f.type))} | `{yaml_value(default_of(f))}` "
                         f"| {allowed(f.type)} | {cell(meaning(f.name, f.name, [TrainConfig]))} |")
    lines += ["", "## Groups", "",
              "Each group is a folder of configs/; `GROUP=OPTION` picks one of its files, `GROUP.KEY=VALUE` sets a "
              "key of the chosen option. The defaults are those of configs/train.yaml; a plain `sslkit-train` "
              f"also applies `experiment={choices.get('experiment')}`, `~experiment` leaves it out.", "",
              "| group | default | what it is |", "| --- | --- | --- |", *groups,
              f"| `eval` | `{choices.get('eval')}` | {cell(meaning('eval', 'eval', [TrainConfig]))} |",
              f"| `experiment` | `{choices.get('experiment')}` | A preset: options and keys of several groups at once. |",
              "| `hydra/launcher` | (Hydra's basic launcher) | Where the jobs of a `-m` sweep run. |", ""]
    return lines


def group_section(config_dir: Path, group: str, schemas: dict[str, tuple[str, ...]]) -> list[str]:
    """A group's options, then one key table per distinct set of callables they build."""
    lines = [f"## {group}", ""]
    tables: dict[tuple[str, ...], list[str]] = {}  # callables → the options that build them
    for path in sorted((config_dir / group).glob("*.yaml")):
        node = OmegaConf.load(path)
        schema = schema_path(node)
        targets = schemas.get(schema.split("/")[1]) if schema and "_target_" in node else None
        if targets:
            tables.setdefault(targets, []).append(path.stem)
        lines.append(option_line(path.stem, group, path, built(node, targets)))
    lines.append("")
    for targets, options in tables.items():
        main = built(OmegaConf.load(config_dir / group / f"{options[0]}.yaml"), targets)
        summary = " ".join((inspect.getdoc(get_object(main)) or "").split("\n\n")[0].split())
        lines += [f"### `{main}`", "", f"Options: {', '.join(f'`{o}`' for o in options)}. {prose(summary)}", ""]
        lines += key_table(derive(*targets), f"{package(config_dir / group / f'{options[0]}.yaml', group)}.",
                           [get_object(t) for t in targets])
    return lines


def built(node: Any, targets: tuple[str, ...] | None) -> str | None:
    """What an option builds: the network a wrapper's `network` key names, else its `_target_`."""
    return None if not targets else node.get("network", targets[0])


def package(path: Path, group: str) -> str:
    """Where an option file's keys go: the `# @package` its first line names (eval.knn; none
    for _global_), else its group as a dotted key (hydra/launcher: hydra.launcher)."""
    first = path.read_text().splitlines()[0]
    where = first.removeprefix("# @package ").strip() if first.startswith("# @package") else group.replace("/", ".")
    return "" if where == "_global_" else where


def render(config_dir: Path | str = CONFIG_DIR) -> str:
    """The page's text."""
    config_dir = Path(config_dir)
    derived = derived_options(config_dir)
    groups = sorted({p.parent.relative_to(config_dir).as_posix() for p in config_dir.glob("*/**/*.yaml")})
    lines = ["# Configuration reference", "",
             f"<!-- Written by `{COMMAND}` from the code; edit the docstrings, not this page. -->", "",
             "Every group of `configs/`, every option and every key, with the type, default and allowed values "
             "of the schema that `sslkit.config` derives from the code that the option builds, and the meaning "
             f"from that code's docstring. `{COMMAND}` writes this page; a test fails when it is out of date.", ""]
    lines += run_section(config_dir)
    for group in groups:
        lines += group_section(config_dir, group, derived.get(group, {}))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PAGE, help=f"the page to write (default: {PAGE})")
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when the page is out of date")
    parser.add_argument("--configs", type=Path, default=Path(CONFIG_DIR),
                        help="the config folder to document (default: the project's configs/)")
    args = parser.parse_args(argv)
    try:
        text = render(args.configs)
    except MissingMeaning as e:
        print(f"{COMMAND}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if args.out.is_file() and args.out.read_text() == text:
            return 0
        print(f"{args.out} is out of date: run `{COMMAND}`.", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
