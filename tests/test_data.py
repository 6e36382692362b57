"""Tests for sslkit.data: the digits source against scikit-learn, the in-memory batcher,
and the synthetic Gaussian source against its covariance."""

from __future__ import annotations

from fractions import Fraction
from itertools import islice

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from sslkit.data import InMemoryData, digits, mnist1d, synthetic
from sslkit.errors import ConfigError

# ------------------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def sk_digits():
    return load_digits()


@pytest.fixture(scope="module")
def our_digits():
    return digits(batch_size=256)


def test_digits_shape_and_dtype(our_digits):
    assert our_digits.x.dtype == torch.uint8
    assert tuple(our_digits.x.shape) == (1797, 1, 8, 8)
    assert our_digits.y.dtype == torch.int64
    assert tuple(our_digits.y.shape) == (1797,)
    assert our_digits.batch_size == 256


def test_digits_values_are_rescaled_sklearn_levels(our_digits, sk_digits):
    levels = sk_digits.images
    # scikit-learn's grey levels are integers 0..16; map each with exact rational arithmetic
    # (Python's round of a Fraction: half to even, so level 8 → 127.5 → 128).
    assert np.array_equal(levels, np.round(levels)) and levels.min() >= 0 and levels.max() <= 16
    table = np.array([round(Fraction(255 * level, 16)) for level in range(17)], dtype=np.int64)
    expected = table[levels.astype(np.int64)]
    got = our_digits.x[:, 0].numpy().astype(np.int64)
    np.testing.assert_array_equal(got, expected)
    assert got.max() == 255 and got.min() == 0


def test_digits_labels_equal_sklearn(our_digits, sk_digits):
    """split=all (the default) hides the labels of the held-out last 297 digits (−1)."""
    np.testing.assert_array_equal(our_digits.y.numpy()[:1500], sk_digits.target[:1500])
    assert (our_digits.y[1500:] == -1).all()


def test_digits_rejects_impossible_batch_size():
    with pytest.raises(ValueError, match=r"data\.batch_size"):
        digits(batch_size=1798)


# ------------------------------------------------------------------------------ mnist1d


def test_mnist1d_is_the_packages_data_set_and_its_defaults_the_packages_arguments():
    """data=mnist1d: the mnist1d package's make_dataset (training samples, then the held-out
    ones) as float32 (N, 40); split=all hides the held-out labels (−1), train and test are
    its two parts. The defaults are the package's own arguments (get_dataset_args: 5000
    samples, 80 % training, seed 42). Generating (the per-process cache cleared first, so
    that it does generate) leaves numpy's and Python's global generators as they were (the
    package seeds them)."""
    import inspect
    import random

    import numpy as np
    from mnist1d.data import get_dataset_args, make_dataset

    from sslkit.data import sources

    defaults = {k: p.default for k, p in inspect.signature(mnist1d).parameters.items()}
    published = get_dataset_args()
    assert defaults["train"] + defaults["test"] == published.num_samples
    assert defaults["train"] / published.num_samples == published.train_split and defaults["seed"] == published.seed
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = 150, 100 / 150, 7
    reference = make_dataset(args)
    np.random.seed(1), random.seed(1)
    expected_next = np.random.rand(), random.random()
    np.random.seed(1), random.seed(1)
    sources._mnist1d.cache_clear()
    train, test, every = (mnist1d(10, split, train=100, test=50, seed=7) for split in ("train", "test", "all"))
    assert (np.random.rand(), random.random()) == expected_next
    assert train.x.dtype == torch.float32 and train.x.shape == (100, 40) and test.x.shape == (50, 40)
    assert torch.equal(train.x, torch.from_numpy(reference["x"]).float())
    assert torch.equal(test.x, torch.from_numpy(reference["x_test"]).float())
    assert torch.equal(train.y, torch.from_numpy(reference["y"]))
    assert torch.equal(test.y, torch.from_numpy(reference["y_test"]))
    assert torch.equal(every.x, torch.cat([train.x, test.x]))
    assert torch.equal(every.y, torch.cat([train.y, torch.full((50,), -1)]))


def test_mnist1d_rejects_a_split_it_has_not_and_too_few_samples():
    with pytest.raises(ConfigError, match=r"data.split=val is not allowed for data=mnist1d: use all .* train "
                                          r"\(the first 100\) or test \(the last 50\)"):
        mnist1d(10, "val", train=100, test=50)
    with pytest.raises(ConfigError, match=r"data.train=100, data.test=5 is not allowed: .* at least 10"):
        mnist1d(10, train=100, test=5)


# ------------------------------------------------------------------------- InMemoryData


def indexed_data(n: int, batch_size: int) -> InMemoryData:
    """Sample i is the vector (i, -i) with label i, so batches reveal their indices."""
    idx = torch.arange(n)
    return InMemoryData(torch.stack([idx, -idx], 1).float(), idx.clone(), batch_size)


def epoch_batches(data: InMemoryData, seed: int, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (x, y) batches of one epoch, as the trainer draws them."""
    steps = islice(data.batches(seed, epoch * data.steps_per_epoch), data.steps_per_epoch)
    return [(x, y) for e, x, y in steps if e == epoch]


def epoch_indices(data: InMemoryData, seed: int) -> list[torch.Tensor]:
    return [y for _, y in epoch_batches(data, seed)]


@pytest.mark.parametrize("n, b", [(103, 10), (100, 10), (7, 7), (7, 1), (50, 26)])
def test_epoch_yields_full_batches_of_distinct_indices(n, b):
    data = indexed_data(n, b)
    assert data.steps_per_epoch == n // b
    batches = list(epoch_batches(data, 0))
    assert len(batches) == n // b
    for x, y in batches:
        assert x.shape == (b, 2) and y.shape == (b,)
        # x and y are indexed together
        torch.testing.assert_close(x[:, 0], y.float(), rtol=0, atol=0)
        torch.testing.assert_close(x[:, 1], -y.float(), rtol=0, atol=0)
    seen = torch.cat([y for _, y in batches])
    assert len(seen) == (n // b) * b
    assert len(torch.unique(seen)) == len(seen), "an index was visited twice in one epoch"
    assert bool(((seen >= 0) & (seen < n)).all())


def test_epoch_order_is_shuffled_and_covers_all_samples_over_epochs():
    data = indexed_data(103, 10)
    first = torch.cat([y for _, y in epoch_batches(data, 1)])
    assert not torch.equal(first, torch.arange(100)), "epoch order is not shuffled"
    covered = set(first.tolist())
    for epoch in range(1, 31):  # the 3 dropped samples change from epoch to epoch
        covered |= set(torch.cat([y for _, y in epoch_batches(data, 1, epoch)]).tolist())
    assert covered == set(range(103))


def test_epoch_same_seed_same_order_different_seed_different_order():
    data = indexed_data(103, 10)
    a, b, c = epoch_indices(data, 5), epoch_indices(data, 5), epoch_indices(data, 6)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(torch.cat(a), torch.cat(c))


def test_batch_size_equal_to_n_is_allowed():
    data = indexed_data(12, 12)
    (x, y), = list(epoch_batches(data, 0))
    assert sorted(y.tolist()) == list(range(12))


@pytest.mark.parametrize("batch_size", [13, 100, 0, -1])
def test_impossible_batch_size_raises_naming_the_key(batch_size):
    with pytest.raises(ValueError, match=r"data\.batch_size"):
        indexed_data(12, batch_size)


def test_label_count_mismatch_raises():
    with pytest.raises(ValueError):
        InMemoryData(torch.zeros(5, 2), torch.zeros(4, dtype=torch.long), 2)


# ---------------------------------------------------------------------------- synthetic


def empirical_cov(x: torch.Tensor) -> np.ndarray:
    return np.cov(x.numpy().astype(np.float64), rowvar=False)


@pytest.mark.parametrize("decay", [0.5, 1.3])
def test_synthetic_power_law_covariance(decay):
    n, dim = 200_000, 6
    data = synthetic(batch_size=1000, n=n, dim=dim, decay=decay, seed=3)
    assert data.x.dtype == torch.float32 and tuple(data.x.shape) == (n, dim)
    assert data.y.dtype == torch.int64 and not bool(data.y.any())
    cov = empirical_cov(data.x)
    target = np.array([2.0 ** (-decay * k) for k in range(dim)])
    # sample variance has relative sd sqrt(2/n) ≈ 0.3 %; allow 2 %
    np.testing.assert_allclose(np.diag(cov), target, rtol=0.02)
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    off = corr[~np.eye(dim, dtype=bool)]
    assert np.abs(off).max() < 0.02  # sd of a sample correlation ≈ 1/sqrt(n) ≈ 0.002
    np.testing.assert_allclose(data.x.numpy().mean(0), 0, atol=0.02)


def test_synthetic_explicit_spectrum_overrides_decay():
    spectrum = [4.0, 1.0, 0.25, 0.01]
    data = synthetic(batch_size=10, n=200_000, dim=4, spectrum=spectrum, decay=0.1, seed=0)
    cov = empirical_cov(data.x)
    np.testing.assert_allclose(np.diag(cov), spectrum, rtol=0.02)
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert np.abs(corr[~np.eye(4, dtype=bool)]).max() < 0.02


@pytest.mark.parametrize(
    "dim, spectrum",
    [(3, [1.0, 0.5]), (2, [1.0, 0.5, 0.25]), (3, [1.0, 0.0, 0.5]), (3, [1.0, -0.5, 0.25]), (1, [])],
)
def test_synthetic_bad_spectrum_raises_naming_keys(dim, spectrum):
    with pytest.raises(ValueError, match=r"data\.spectrum") as info:
        synthetic(batch_size=1, n=10, dim=dim, spectrum=spectrum)
    assert "data.dim" in str(info.value)


def test_synthetic_seed_determines_data():
    a = synthetic(batch_size=8, n=500, dim=5, seed=11)
    b = synthetic(batch_size=8, n=500, dim=5, seed=11)
    c = synthetic(batch_size=8, n=500, dim=5, seed=12)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_synthetic_rejects_impossible_batch_size():
    with pytest.raises(ValueError, match=r"data\.batch_size"):
        synthetic(batch_size=11, n=10, dim=2)
