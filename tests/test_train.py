"""The trainer end to end: stepwise learning, reproducibility, observers (the checks against
theory are in test_theory.py)."""

import json
import math
import threading

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from conftest import HAS_WANDB, assert_separated_steps
from sslkit.records import observer
from sslkit.spectrum import load
from sslkit.train import train


def metrics(run_dir, drop=("images_per_s",)) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def test_default_experiment_learns_five_separated_steps(config, tmp_path):
    """`make train`: ≥ 5 eigenvalues of C rise from ≈ 0 to ≈ 1 one after another; each has
    finished its rise (crossed 0.8) before the next one starts it (crosses 0.2). Its first
    500 of 1500 steps, which are those of the whole run (constant learning rate), without
    the evaluation, which does not change them (test_eval.py,
    test_evaluation_does_not_change_the_trajectory): the 5th mode crosses 0.8 at step 471."""
    train(config("experiment=stepwise_digits", "trainer.max_steps=500", "eval=none"), tmp_path)
    assert_separated_steps(tmp_path, 5)


@pytest.mark.parametrize("background", [True, False], ids=["observer_thread", "training_thread"])
def test_training_leaves_the_thread_settings_alone(config, tmp_path, monkeypatch, background):
    """Training with the spectrum monitor on, its work in the background thread (which runs
    on one OpenMP thread of its own) or in the training thread, does not change the
    process's intra-op or inter-op thread counts, nor any thread pool threadpoolctl sees
    (OpenMP, numpy's BLAS). Checked at 2 threads everywhere, not at the suite's 1, which a
    leaked one-thread setting would keep. A first short run loads every library training
    uses (scikit-learn's, for digits), so that the pools compared are the same ones."""
    monkeypatch.setattr(observer, "core_to_spare", lambda device: background)
    pools = lambda: [(p["prefix"], p["num_threads"]) for p in threadpool_info()]  # noqa: E731
    train(config("data.batch_size=128", "trainer.max_steps=1"), tmp_path / "first")
    with threadpool_limits(limits=2):
        torch.set_num_threads(2)
        before = torch.get_num_threads(), torch.get_num_interop_threads(), pools()
        assert before[0] == 2 and all(n == 2 for _, n in before[2]), before
        train(config("data.batch_size=128", "trainer.max_steps=3"), tmp_path / "run")
        assert (torch.get_num_threads(), torch.get_num_interop_threads(), pools()) == before


def test_the_observer_thread_only_where_a_core_is_free(monkeypatch):
    """On a CPU the background thread runs only when the step's intra-op pool leaves one of
    the process's cores free; beside a GPU always."""
    monkeypatch.setattr(observer.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for threads, spare in ((1, True), (3, True), (4, False), (8, False)):
        monkeypatch.setattr(observer.torch, "get_num_threads", lambda t=threads: t)
        assert observer.core_to_spare(torch.device("cpu")) is spare, threads
        assert observer.core_to_spare(torch.device("cuda", 0))


def test_the_training_thread_records_what_the_observer_thread_does(config, tmp_path, monkeypatch):
    """The observer's work in the training thread (a CPU whose cores the step's pool holds)
    writes the same metrics.jsonl, spectra and crossing events as in its own thread, through
    a checkpoint mid-chunk (`state()`), and no thread is started for it."""
    overrides = ("data.batch_size=128", "trainer.max_steps=40", "trainer.checkpoint_every=17")
    runs = {}
    for background in (True, False):
        monkeypatch.setattr(observer, "core_to_spare", lambda device, b=background: b)
        before = {t.name for t in threading.enumerate()}
        started = []
        monkeypatch.setattr(observer.threading.Thread, "start",
                            lambda self, run=threading.Thread.start: started.append(self.name) or run(self))
        train(config(*overrides), tmp_path / str(background))
        assert started == (["sslkit-observer"] if background else []), started
        assert {t.name for t in threading.enumerate()} <= before | {"MainThread"}
        runs[background] = tmp_path / str(background)
    assert metrics(runs[True]) == metrics(runs[False])
    thread, inline = load(runs[True]), load(runs[False])
    assert thread.keys() == inline.keys()
    for key in thread:
        np.testing.assert_array_equal(thread[key], inline[key], err_msg=key)
    events = [(r / "spectrum" / "events.jsonl").read_text() for r in runs.values()]
    assert events[0] == events[1] and events[0]


def test_same_seed_same_run_and_other_seed_differs(config, tmp_path):
    overrides = ("data.batch_size=128", "trainer.max_steps=30")
    train(config(*overrides), tmp_path / "a")
    train(config(*overrides), tmp_path / "b")
    train(config(*overrides, "seed=1"), tmp_path / "c")
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


def training_fields(rows: list[dict]) -> list[dict]:
    """The loop's own fields; the spectrum summaries are the keys "<matrix>/<metric>"."""
    return [{k: v for k, v in r.items() if "/" not in k} for r in rows]


@pytest.mark.parametrize("loss", ["barlow_twins", "simclr", "vicreg"])
def test_observers_do_not_change_the_trajectory(config, tmp_path, loss):
    """Spectrum on/off (exact or tracked eigenvalues), the dashboards and the logging
    cadence leave every logged loss bit-identical (W&B among the dashboards where wandb
    is installed)."""
    base = (f"loss={loss}", "backbone=mlp", "backbone.width=32", "projector=mlp",
            "data.batch_size=128", "trainer.max_steps=24")
    train(config(*base), tmp_path / "on")
    train(config(*base, "spectrum=off"), tmp_path / "off")
    train(config(*base, "spectrum=off", "trainer.log_every=5"), tmp_path / "sparse")
    loggers = ["logger=[tensorboard,wandb]", "logger.wandb.mode=offline"] if HAS_WANDB else ["logger=[tensorboard]"]
    train(config(*base, "spectrum.exact_max=0", "spectrum.full_every=5", *loggers,
                 "logger.tensorboard.spectrum_every=4"), tmp_path / "dashboards")
    on, off, sparse, dashboards = (metrics(tmp_path / k) for k in ("on", "off", "sparse", "dashboards"))
    assert training_fields(on) == off == training_fields(dashboards)
    assert {"cov/effective_rank", "cov/rankme", "feat_cov/logdet", "xcorr/learned"} <= set(on[0])
    assert "xcorr/residual" in dashboards[1] and "xcorr/track_err" in dashboards[5]
    assert not (tmp_path / "off" / "spectrum").exists()
    assert list((tmp_path / "dashboards" / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "dashboards" / "wandb").glob("offline-run-*/run-*.wandb")) or not HAS_WANDB
    by_step = {m["step"]: m for m in off}
    assert [by_step[m["step"]] for m in sparse] == sparse
    assert [m["step"] for m in sparse] == [4, 9, 14, 19, 23]


def test_run_directory_records(config, tmp_path):
    cfg = config("trainer.max_steps=12", "data.batch_size=64", "trainer.log_every=4")
    last = train(cfg, tmp_path)
    saved = (tmp_path / "config.yaml").read_text()
    assert "max_steps: 12" in saved and "batch_size: 64" in saved
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0
    rows = metrics(tmp_path, drop=())
    assert [r["step"] for r in rows] == [3, 7, 11] and rows[-1] == last
    assert {"loss", "invariance", "redundancy", "lr", "images_per_s", "epoch"} <= set(rows[0])
    assert math.isclose(rows[0]["loss"], rows[0]["invariance"] + rows[0]["redundancy"], rel_tol=1e-6)
    # 1797 // 64 = 28 batches per epoch: steps 0..11 are all in epoch 0
    assert rows[-1]["epoch"] == 0
    spectra = load(tmp_path)
    assert list(spectra["step"]) == list(range(12)) and spectra["cov"].shape == (12, 64)
    assert (np.diff(spectra["xcorr"], axis=1) <= 1e-6).all(), "eigenvalues must be descending"


def test_max_epochs_bounds_the_run(config, tmp_path):
    # 1797 // 599 = 3 batches per epoch
    train(config("trainer.max_steps=null", "trainer.max_epochs=2", "data.batch_size=599",
                 "trainer.log_every=1"), tmp_path)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(6)) and [r["epoch"] for r in rows] == [0, 0, 0, 1, 1, 1]


def test_schedule_reaches_the_logged_learning_rate(config, tmp_path):
    train(config("trainer.max_steps=10", "optim.schedule=cosine", "optim.lr=0.05"), tmp_path)
    lrs = [r["lr"] for r in metrics(tmp_path)]
    expected = [0.05 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
