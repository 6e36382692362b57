"""Weighted k-nearest-neighbour classification on cosine similarity (Wu et al. 2018, as in
solo-learn's WeightedKNNClassifier).

Features are L2-normalised, so s = q·b is the cosine similarity of a query q and a bank
sample b. The k most similar bank samples vote for their class with weight exp(s/T)
(`temperature` T = 0.07), or with weight 1 (`temperature=None`: the plain majority vote);
the class scores are the summed weights. The (queries × bank) similarity matrix is
computed a chunk of queries at a time, at most `chunk_elements` entries, so memory stays
bounded for large banks: against 50 000 bank samples a chunk is 335 queries, a 67 MB
block, next to the 410 MB of a 50 000 × 2048 float32 bank.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sslkit.errors import ConfigError
from sslkit.eval.features import ProbeFeatures, kinds

TEMPERATURE, CHUNK_ELEMENTS = 0.07, 2**24


def knn_scores(bank: Tensor, bank_labels: Tensor, queries: Tensor, k: int, classes: int,
               temperature: float | None = TEMPERATURE, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """(Q, classes) class scores of `queries` (Q, D) against `bank` (N, D) with labels in
    0..classes−1: Σ over the k nearest bank samples of class c of exp(s/T) (or of 1)."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float().to(bank.device), dim=1)
    bank_labels = bank_labels.to(bank.device)
    k = min(k, len(bank))
    rows = max(1, chunk_elements // len(bank))
    scores = []
    for q in queries.split(rows):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (rows, k), most similar first
        weight = (sim / temperature).exp() if temperature is not None else torch.ones_like(sim)
        votes = torch.zeros(len(q), classes, device=bank.device)
        scores.append(votes.scatter_add_(1, bank_labels[idx], weight))
    return torch.cat(scores)


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """{k: % of rows whose label is among the k highest scores}; k is capped at the number
    of classes. Ties go to the lower class index (as torch.argmax, and scikit-learn)."""
    labels = labels.to(scores.device)
    order = scores.sort(dim=1, descending=True, stable=True).indices
    return {k: 100 * (order[:, :k] == labels[:, None]).any(1).float().mean().item() for k in ks}


class KNN:
    """eval=knn: the top-1 and top-5 accuracy (%) of `knn_scores` of each feature kind in
    `features` (None: every kind given) for each k in `k`.

    Args:
        features: Feature kinds scored: backbone (h), projector (z); null: both.
        k: Neighbour counts, one accuracy each.
        temperature: T of the vote weights exp(s/T) (null: a plain majority vote).
        chunk_elements: Most entries of the similarity matrix computed at once (bounds memory).
    """

    def __init__(self, features: Sequence[ProbeFeatures] | None = None, k: Sequence[int] = (20, 200),
                 temperature: float | None = TEMPERATURE, chunk_elements: int = CHUNK_ELEMENTS) -> None:
        if not k or any(n < 1 for n in k):
            raise ConfigError(f"eval.knn.k={list(k)} is not allowed: use a list of neighbour counts >= 1, e.g. "
                              f"[20,200].")
        if temperature is not None and not temperature > 0:
            raise ConfigError(f"eval.knn.temperature={temperature} is not allowed: use T > 0, e.g. {TEMPERATURE} "
                              f"(weights exp(s/T)), or null for a plain majority vote.")
        if chunk_elements < 1:
            raise ConfigError(f"eval.knn.chunk_elements={chunk_elements} is not allowed: use a positive number "
                              f"of similarity entries per chunk, e.g. {CHUNK_ELEMENTS}.")
        self.features, self.k, self.temperature, self.chunk_elements = features, list(k), temperature, chunk_elements

    def __call__(self, bank: dict[str, Tensor], bank_labels: Tensor, test: dict[str, Tensor], test_labels: Tensor,
                 classes: int) -> dict[str, float]:
        """{"eval/knn<k>/<kind>/top1": …, …/top5": …} of the held-out features `test`."""
        metrics = {}
        for kind in bank if self.features is None else kinds(self.features):
            for k in self.k:
                scores = knn_scores(bank[kind], bank_labels, test[kind], k, classes, self.temperature,
                                    self.chunk_elements)
                metrics.update({f"eval/knn{k}/{kind}/top{n}": v for n, v in topk_accuracy(scores, test_labels).items()})
        return metrics
