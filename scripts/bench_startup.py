"""The start-up cost of the commands, against the imports every one of them needs.

    python scripts/bench_startup.py [--repeats R] [-- OVERRIDES...]

Times, as new processes in turn (so that a change of the machine's load falls on all three
alike), R times each (5 by default):

- floor: `python -c "import torch, hydra, omegaconf"`, the imports no command can skip;
- help: `sslkit-train --help`;
- run: a 1-step run of the default experiment (`sslkit-train trainer.max_steps=1`, into a
  fresh temporary run directory, with OVERRIDES after it).

It prints each command's median wall-clock time and the ratios of the medians, and the
same for the CPU time (user + system) of the process, which a shared machine's load
changes less than the wall clock; the last two lines, of the wall-clock medians, are

    help_ratio: H      (sslkit-train --help / floor)
    startup_ratio: S   (1-step run / floor)
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

BIN = Path(sys.executable).parent


def commands(run_dir: Path, overrides: list[str]) -> dict[str, list[str]]:
    train = str(BIN / "sslkit-train")
    return {
        "floor": [sys.executable, "-c", "import torch, hydra, omegaconf"],
        "help": [train, "--help"],
        "run": [train, "trainer.max_steps=1", f"hydra.run.dir={run_dir}", *overrides],
    }


def cpu_seconds() -> float:
    """User + system CPU time of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of `command`, which must succeed."""
    start, cpu = time.perf_counter(), cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_startup: {' '.join(command)} failed (status {done.returncode}):\n{done.stderr}")
    return seconds, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the 1-step run")
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {"floor": [], "help": [], "run": []}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in tqdm(range(args.repeats), desc="repeats", file=sys.stderr):
            for name, command in commands(Path(tmp) / f"run{repeat}", args.overrides).items():
                times[name].append(timed(command))
    print(f"load average (1 min) before / after: {load:.2f} / {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    medians, cpu = ({name: statistics.median(t[i] for t in times[name]) for name in times} for i in (0, 1))
    for name, command in commands(Path("RUN_DIR"), args.overrides).items():
        runs = ", ".join(f"{t:.2f}" for t, _ in times[name])
        print(f"{name}: median {medians[name]:.2f} s wall ({runs}), {cpu[name]:.2f} s CPU  "
              f"{Path(command[0]).name} {' '.join(command[1:])}")
    print(f"CPU time ratios: help {cpu['help'] / cpu['floor']:.2f}, 1-step run {cpu['run'] / cpu['floor']:.2f}")
    print(f"help_ratio: {medians['help'] / medians['floor']:.2f}")
    print(f"startup_ratio: {medians['run'] / medians['floor']:.2f}")


if __name__ == "__main__":
    main()
