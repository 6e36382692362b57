"""The start-up cost of the commands, against the imports every one of them needs.

    python scripts/bench_startup.py [--repeats R] [-- OVERRIDES...]

Times, as new processes in turn (so that a change of the machine's load falls on all three
alike), R times each (5 by default):

- floor: `python -c "import torch, hydra, omegaconf"`, the imports no command can skip;
- help: `sslkit-train --help`;
- run: a 1-step run of the default experiment (`sslkit-train trainer.max_steps=1`, into a
  fresh temporary run directory, with OVERRIDES after it).

It prints each command's median wall-clock time and the ratios of the medians; the last
two lines are

    help_ratio: H      (sslkit-train --help / floor)
    startup_ratio: S   (1-step run / floor)
"""

import argparse
import os
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


def timed(command: list[str]) -> float:
    """Wall-clock seconds of `command`, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_startup: {' '.join(command)} failed (status {done.returncode}):\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the 1-step run")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"floor": [], "help": [], "run": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in tqdm(range(args.repeats), desc="repeats", file=sys.stderr):
            for name, command in commands(Path(tmp) / f"run{repeat}", args.overrides).items():
                times[name].append(timed(command))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"load average before the last repeat: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    for name, command in commands(Path("RUN_DIR"), args.overrides).items():
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name}: median {medians[name]:.2f} s ({runs})  {' '.join(Path(c).name for c in command[:1])} "
              f"{' '.join(command[1:])}")
    print(f"help_ratio: {medians['help'] / medians['floor']:.2f}")
    print(f"startup_ratio: {medians['run'] / medians['floor']:.2f}")


if __name__ == "__main__":
    main()
