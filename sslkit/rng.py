"""Counter-based random streams: a generator for every (seed, stream, …, counter) key.

The batch order of epoch e and the views of step t come from generators seeded by
hashing (seed, e) and (seed, rank, t) with NumPy's SeedSequence. No generator state is
carried from step to step, so a resumed run draws exactly what an uninterrupted one
would, and ranks draw independent views without coordination.
"""

import numpy as np
import torch

DATA_ORDER, VIEWS, LINEAR_EVAL = 0, 1, 2  # stream ids (LINEAR_EVAL: sslkit-eval's augmentation and order)


def generator(device: torch.device, *key: int) -> torch.Generator:
    """A torch generator on `device` seeded from the non-negative integers `key`."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device).manual_seed(seed)
