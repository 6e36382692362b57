"""One process at a time trains in a run directory.

The process that trains (rank 0 of a job: under torchrun or SLURM the other ranks write
nothing) holds an exclusive `fcntl.flock` on `run_dir/.lock` (`layout.LOCK`) for the
whole run, and writes its pid, host and command into it. A second process asking for the
same directory is refused with a `RunDirInUse` naming them, instead of interleaving its
records with the first's. The kernel releases a flock when its process ends, however it
ends, so a crashed or killed run leaves no stale lock; the file itself stays.
"""

import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sslkit import layout
from sslkit.errors import ConfigError


class RunDirInUse(ConfigError):
    """Another process holds the run directory; it is left as it is."""


_held: dict[Path, int] = {}  # run directory (resolved) → the locked file's descriptor, in this process


def is_locking_rank() -> bool:
    """Whether this process is the one of its job that locks (rank 0, or the only one);
    read from the launcher's environment, before the process group exists."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def acquire(run_dir: Path) -> bool:
    """Lock `run_dir` (made if missing) for this process; False if it holds it already.
    RunDirInUse when another process holds it."""
    key = Path(run_dir).resolve()
    if key in _held:
        return False
    try:
        key.mkdir(parents=True, exist_ok=True)
        fd = os.open(key / layout.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"The run directory {run_dir} is not writable ({exc}); choose another with "
                          f"hydra.run.dir=...") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 1 << 16).decode(errors="replace")
        os.close(fd)
        raise RunDirInUse(f"{run_dir} is in use by another process, {_describe(holder)}; two runs in one directory "
                          f"would interleave their records. Wait for it to end (or stop it), or choose another "
                          f"directory with hydra.run.dir=DIR.") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv}).encode())
    _held[key] = fd
    return True


def release(run_dir: Path) -> None:
    """Give up this process's lock of `run_dir`."""
    os.close(_held.pop(Path(run_dir).resolve()))


@contextmanager
def held(run_dir: Path) -> Iterator[None]:
    """`run_dir` locked while the block runs, by the locking rank (`is_locking_rank`); a lock
    this process held before stays held after."""
    acquired = is_locking_rank() and acquire(run_dir)
    try:
        yield
    finally:
        if acquired:
            release(run_dir)


def _describe(holder: str) -> str:
    """`pid P on host H (command ...)` from what the holder wrote into the lock file."""
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on host {info['host']} ({' '.join(info['command'])})"
    except (ValueError, KeyError, TypeError):  # the holder has not written it yet
        return "whose pid the lock file does not hold yet"
