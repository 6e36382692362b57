"""Finding a data set's files under `data.root`, with errors that say what is expected."""

from pathlib import Path

from sslkit.errors import ConfigError


def root_dir(root: str | None, option: str, layout: str, hint: str) -> Path:
    """`data.root` as a Path; unset or not a directory is a ConfigError that names
    data.root, the expected layout and a hint."""
    if root is None:
        env = ", or once per machine: export SSLKIT_DATA=DIR" if option != "imagefolder" else ""
        raise ConfigError(f"data.root is not set: data={option} reads its files from a directory. Set "
                          f"data.root=DIR with {layout}{env}. {hint}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"data.root={root} is not a directory. data={option} expects {layout}. {hint}")
    return path


def locate(root: str | None, option: str, names: list[str], folder: str, layout: str, hint: str) -> Path:
    """The directory that holds all of `names`: `root` itself, or root/`folder` (the folder
    the official archive extracts to). A missing root or file is a ConfigError that names
    data.root, the expected layout and a hint."""
    path = root_dir(root, option, layout, hint)
    for d in (path, path / folder):
        if all((d / n).is_file() for n in names):
            return d
    best = path / folder if (path / folder).is_dir() else path
    missing = [n for n in names if not (best / n).is_file()]
    raise ConfigError(f"data.root={root} does not hold the data={option} files: {', '.join(missing)} "
                      f"not found in {best}. Expected: {layout}. {hint}")


def malformed(path: Path, problem: str, hint: str) -> ConfigError:
    """The error for a data file that exists but cannot be read as the format says."""
    return ConfigError(f"{path} is not a valid data file: {problem}. {hint}")
