"""Stepwise learning with the other losses on the default experiment's data and model
(configs/experiment/stepwise_digits_{vicreg,simclr}.yaml; docs/theory.md, other losses)."""

import numpy as np
import pytest

from conftest import assert_separated_steps
from sslkit.spectrum import crossing_steps, load
from sslkit.train import train

QUICK = ("eval=none", "spectrum.matrices=[xcorr]")


def test_vicreg_experiment_separates_its_first_two_steps(config, tmp_path):
    """experiment=stepwise_digits_vicreg cut to 700 steps: the first two eigenvalues of C rise
    from ≈ 0 one after the other; the first has crossed 0.8 before the second crosses 0.2.
    The third step comes later (test below, slow)."""
    train(config("experiment=stepwise_digits_vicreg", "trainer.max_steps=700", *QUICK), tmp_path)
    assert_separated_steps(tmp_path, 2)


@pytest.mark.slow
def test_vicreg_experiment_learns_three_separated_steps(config, tmp_path):
    """experiment=stepwise_digits_vicreg as the README runs it: ≥ 3 separated steps."""
    train(config("experiment=stepwise_digits_vicreg", *QUICK), tmp_path)
    assert_separated_steps(tmp_path, 3)


def test_simclr_on_the_sphere_does_not_see_the_init_scale(config, tmp_path):
    """loss.normalize=true (SimCLR's cosine similarity): L(cW) = L(W), so ∇L(cW) = ∇L(W)/c
    and a gradient step from cW with learning rate c²η is c times the step from W with η.
    Initial scale 10⁻³ with lr 0.06 and 10⁻¹ with lr 600 give the same C on the sphere at
    every step: a small initialisation only rescales the learning rate, and there is no
    saddle at 0 to learn from in steps."""
    base = ("experiment=stepwise_digits_simclr", "loss.normalize=true", "trainer.max_steps=6", *QUICK)
    train(config(*base, "backbone.init_scale=1e-3", "optim.lr=0.06"), tmp_path / "small")
    train(config(*base, "backbone.init_scale=1e-1", "optim.lr=600"), tmp_path / "large")
    small, large = load(tmp_path / "small")["xcorr"], load(tmp_path / "large")["xcorr"]
    assert np.abs(small[1:] - small[:1]).max() > 1e-3  # C moved
    np.testing.assert_allclose(large, small, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_simclr_on_raw_embeddings_learns_in_steps(config, tmp_path):
    """experiment=stepwise_digits_simclr (NT-Xent on the raw embeddings, small init): the
    eigenvalues of C̄/τ start near 0 and at least 3 cross ½, at increasing steps."""
    train(config("experiment=stepwise_digits_simclr", *QUICK), tmp_path)
    spectra = load(tmp_path)
    assert spectra["xcorr"][0].max() < 1e-3
    crossed = crossing_steps(spectra["step"], spectra["xcorr"][:, :3])
    assert (crossed > 0).all() and (np.diff(crossed) > 0).all(), crossed
