"""Counter-based random streams: a generator for every (seed, stream, …, counter) key.

The batch order of epoch e and the views of step t come from generators seeded by
hashing (seed, e) and (seed, t) with NumPy's SeedSequence. No generator state is carried
from step to step, so a resumed run draws exactly what an uninterrupted one would. Every
process draws the view parameters of the whole global batch from the step's generator and
keeps its own rows (sslkit.augment), so each sample's views depend on its position in the
global batch only, not on the number of processes.
"""

import random

import numpy as np
import torch

from sslkit.errors import ConfigError

DATA_ORDER, VIEWS, LINEAR_EVAL = 0, 1, 2  # stream ids (LINEAR_EVAL: sslkit-eval's augmentation and order)


def generator(device: torch.device, *key: int) -> torch.Generator:
    """A torch generator on `device` seeded from the non-negative integers `key`."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device).manual_seed(seed)


def seed_globals(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (torch's draws the initial
    weights), so that the RNG states a checkpoint stores are those of the seed and a
    resumed run's states equal an uninterrupted one's."""
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed} is not allowed: use an integer from 0 to 2**32 - 1 (NumPy's seed range).")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
