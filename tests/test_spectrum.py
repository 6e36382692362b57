"""Tests for sslkit.spectrum: eigenvalues against numpy, the append-only store (round trip,
partial flushes, truncated files), and crossing_steps on a hand-built array."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from sslkit.spectrum import SpectrumWriter, crossing_steps, eigenvalues, load

# --------------------------------------------------------------------------- eigenvalues


def two_views(n: int, d: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 3.0, d, dtype=torch.float64)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * scale + 0.7
    z2 = 0.8 * z1 + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64) - 0.3
    return z1.to(dtype), z2.to(dtype)


@pytest.mark.parametrize("n, d", [(50, 6), (7, 3), (200, 32), (5, 10)])
def test_cov_eigenvalues_match_numpy(n, d):
    z1, z2 = two_views(n, d, seed=n + d)
    out = eigenvalues(z1, z2)
    expected = np.linalg.eigvalsh(np.cov(z1.numpy(), rowvar=False))[::-1]
    assert out["cov"].dtype == torch.float64 and out["cov"].shape == (d,)
    np.testing.assert_allclose(out["cov"].numpy(), expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("n, d", [(50, 6), (7, 3), (200, 32), (5, 10)])
def test_xcorr_eigenvalues_match_numpy(n, d):
    z1, z2 = two_views(n, d, seed=n * d)
    out = eigenvalues(z1, z2)
    a, b = z1.numpy(), z2.numpy()
    c = (a.T @ b + b.T @ a) / (2 * n)  # uncentred, unnormalised
    expected = np.linalg.eigvalsh(c)[::-1]
    assert out["xcorr"].dtype == torch.float64 and out["xcorr"].shape == (d,)
    np.testing.assert_allclose(out["xcorr"].numpy(), expected, rtol=1e-9, atol=1e-10)
    # the symmetrised matrix may be indefinite; eigenvalues still come out descending
    assert bool((out["xcorr"][:-1] >= out["xcorr"][1:]).all())


def test_eigenvalues_accept_float32_and_grad_tensors():
    z1, z2 = two_views(64, 5, seed=0, dtype=torch.float32)
    z1.requires_grad_(True)
    out = eigenvalues(z1, z2)
    ref = np.linalg.eigvalsh(np.cov(z1.detach().numpy().astype(np.float64), rowvar=False))[::-1]
    np.testing.assert_allclose(out["cov"].numpy(), ref, rtol=1e-9, atol=1e-10)
    assert not out["cov"].requires_grad


@pytest.mark.parametrize("r", [1, 3, 5])
def test_rank_r_embedding_has_r_nonzero_cov_eigenvalues(r):
    n, d = 100, 8
    g = torch.Generator().manual_seed(r)
    a = torch.randn(n, r, generator=g, dtype=torch.float64)
    z1 = a @ torch.randn(r, d, generator=g, dtype=torch.float64)
    z1 = z1 + 5.0  # a constant offset adds no variance
    cov = eigenvalues(z1, z1)["cov"]
    assert bool((cov[:r] > 1e-3).all())
    assert bool((cov[r:].abs() < 1e-10 * cov[0]).all())
    # xcorr is uncentred: the offset adds one more direction
    xcorr = eigenvalues(z1, z1)["xcorr"]
    assert bool((xcorr[: r + 1] > 1e-3).all()) and bool((xcorr[r + 1 :].abs() < 1e-9 * xcorr[0]).all())


# ------------------------------------------------------------------------------- storage


def spectra_rows(t: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-contiguous steps and float64 descending spectra, not representable in float32."""
    rng = np.random.default_rng(seed)
    steps = 3 * np.arange(t, dtype=np.int64) + 7
    cov = -np.sort(-rng.exponential(size=(t, d)), axis=1)
    xcorr = -np.sort(-rng.normal(size=(t, d)), axis=1)
    return steps, cov, xcorr


def write(writer: SpectrumWriter, steps, cov, xcorr, rows: range) -> None:
    for i in rows:
        writer.append(int(steps[i]), {"cov": torch.from_numpy(cov[i]), "xcorr": torch.from_numpy(xcorr[i])})


def assert_rows(out: dict, steps, cov, xcorr, k: int) -> None:
    d = cov.shape[1]
    assert out["step"].dtype == np.int64 and out["step"].shape == (k,)
    assert out["cov"].dtype == np.float32 and out["cov"].shape == (k, d)
    assert out["xcorr"].dtype == np.float32 and out["xcorr"].shape == (k, d)
    np.testing.assert_array_equal(out["step"], steps[:k])
    np.testing.assert_array_equal(out["cov"], cov[:k].astype(np.float32))
    np.testing.assert_array_equal(out["xcorr"], xcorr[:k].astype(np.float32))


@pytest.mark.parametrize("t, flush_every", [(23, 5), (23, 7), (10, 3), (5, 100), (6, 1)])
def test_writer_load_round_trip(tmp_path, t, flush_every):
    d = 4
    steps, cov, xcorr = spectra_rows(t, d)
    w = SpectrumWriter(tmp_path, flush_every=flush_every)
    write(w, steps, cov, xcorr, range(t))
    w.close()
    assert json.loads((tmp_path / "spectrum" / "meta.json").read_text())["dim"] == d
    assert (tmp_path / "spectrum" / "cov.f4").stat().st_size == t * d * 4
    assert (tmp_path / "spectrum" / "step.i8").stat().st_size == t * 8
    assert_rows(load(tmp_path), steps, cov, xcorr, t)
    w.close()  # closing twice writes nothing more
    assert_rows(load(tmp_path), steps, cov, xcorr, t)


def test_load_returns_only_flushed_rows_while_writing(tmp_path):
    d, flush_every = 3, 5
    steps, cov, xcorr = spectra_rows(23, d, seed=1)
    w = SpectrumWriter(str(tmp_path), flush_every=flush_every)
    write(w, steps, cov, xcorr, range(3))  # all buffered, nothing on disk but meta.json
    assert_rows(load(tmp_path), steps, cov, xcorr, 0)
    written = 3
    for upto in (5, 9, 10, 12, 20, 23):
        write(w, steps, cov, xcorr, range(written, upto))
        written = upto
        assert_rows(load(str(tmp_path)), steps, cov, xcorr, (upto // flush_every) * flush_every)
    w.close()
    assert_rows(load(tmp_path), steps, cov, xcorr, 23)


@pytest.mark.parametrize(
    "file, chop, rows",
    [
        ("cov.f4", 2, 22),  # mid-value: not even a whole float
        ("cov.f4", 4, 22),  # a whole float, but not a whole row
        ("cov.f4", 4 * 4, 22),  # exactly one row
        ("cov.f4", 4 * 4 + 6, 21),
        ("xcorr.f4", 4 * 4 * 3 + 1, 19),
        ("step.i8", 3, 22),
        ("step.i8", 8 * 5, 18),
    ],
)
def test_load_truncated_file_keeps_complete_rows(tmp_path, file, chop, rows):
    d, t = 4, 23
    steps, cov, xcorr = spectra_rows(t, d, seed=2)
    w = SpectrumWriter(tmp_path, flush_every=6)
    write(w, steps, cov, xcorr, range(t))
    w.close()
    path = tmp_path / "spectrum" / file
    data = path.read_bytes()
    path.write_bytes(data[:-chop])
    assert_rows(load(tmp_path), steps, cov, xcorr, rows)


def test_load_with_a_series_file_missing(tmp_path):
    steps, cov, xcorr = spectra_rows(4, 2)
    w = SpectrumWriter(tmp_path, flush_every=2)
    write(w, steps, cov, xcorr, range(4))
    w.close()
    (tmp_path / "spectrum" / "xcorr.f4").unlink()
    assert_rows(load(tmp_path), steps, cov, xcorr, 0)


def test_values_beyond_float32_are_stored_as_infinities_without_a_warning(tmp_path):
    """A diverging run's eigenvalues (float64 arrays or tensors on the way in) beyond float32's
    range read back as ±inf; every other value as its float32 rounding."""
    row = np.array([1e40, -1e39, 3.5e38, 1e-50, np.nan, 2.0])
    w = SpectrumWriter(tmp_path, flush_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.append(7, {"xcorr": row, "cov": torch.tensor(row[::-1].copy())})
    w.close()
    stored = load(tmp_path)
    expected = [np.inf, -np.inf, np.inf, 0.0, np.nan, 2.0]
    np.testing.assert_array_equal(stored["xcorr"][0], expected)
    np.testing.assert_array_equal(stored["cov"][0], expected[::-1])
    assert stored["step"].tolist() == [7] and stored["xcorr"].dtype == np.float32


def test_load_without_spectra_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"spectrum\.enabled"):
        load(tmp_path)
    (tmp_path / "spectrum").mkdir()
    with pytest.raises(FileNotFoundError, match=r"spectrum\.enabled"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"does_not_exist is not a directory"):
        load(tmp_path / "does_not_exist")


# ------------------------------------------------------------------------ crossing_steps


def test_crossing_steps_hand_built():
    steps = np.array([0, 10, 20, 30, 40])
    eig = np.array(
        [
            # col0  col1  col2  col3  col4
            [0.10, 0.00, 0.10, 0.90, 0.20],
            [0.50, 0.10, 0.20, 0.95, 0.30],  # col0 reaches 0.5 exactly: counts
            [0.60, 0.20, 0.49, 1.00, 0.70],  # col4 crosses here...
            [0.80, 0.55, 0.30, 1.00, 0.40],  # ...then drops back: first crossing stays
            [0.90, 0.70, 0.49, 1.00, 0.90],
        ]
    )
    np.testing.assert_array_equal(crossing_steps(steps, eig), [10, 30, -1, 0, 20])
    np.testing.assert_array_equal(crossing_steps(steps, eig, level=0.9), [40, -1, -1, 0, 40])
    np.testing.assert_array_equal(crossing_steps(steps, eig, level=2.0), [-1, -1, -1, -1, -1])
    np.testing.assert_array_equal(crossing_steps(steps + 1000, eig, level=0.0), [1000] * 5)


def test_crossing_steps_on_loaded_spectra(tmp_path):
    """End to end through the store: steps are the recorded ones, not row indices."""
    t = 12
    rises = np.array([2, 5, 100])  # row at which each eigenvalue jumps to 1
    values = (np.arange(t)[:, None] >= rises[None, :]).astype(np.float64) * 0.999 + 1e-4
    steps = 3 * np.arange(t, dtype=np.int64) + 7
    w = SpectrumWriter(tmp_path, flush_every=5)
    write(w, steps, values, values, range(t))
    w.close()
    out = load(tmp_path)
    np.testing.assert_array_equal(crossing_steps(out["step"], out["xcorr"]), [steps[2], steps[5], -1])
