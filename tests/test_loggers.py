"""Dashboards: what a run sends to TensorBoard and W&B, read back from the files they
write (TensorBoard's EventAccumulator; W&B's offline run file parsed with its protobuf
schema, no wandb.Api), a real `tensorboard` server, and the observer thread's errors."""

import json
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sslkit.errors import ConfigError
from sslkit.spectrum import load
from sslkit.train import train

from conftest import needs_wandb

BIN = Path(sys.executable).parent
RUN = ("data.batch_size=128", "trainer.max_steps=12", "trainer.log_every=1")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def wandb_records(run_dir: Path, timeout: float = 60) -> list:
    """The records of the offline run file, once it ends with the run's exit record: W&B's
    service process writes the file, and may still be writing it when run.finish() has
    returned (read at once, in about half the runs of the offline test below it held only
    its first 32 KiB block)."""
    deadline = time.monotonic() + timeout
    while (records := read_wandb_file(run_dir))[-1:] == [] or records[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, f"the offline run file of {run_dir} has no exit record"
        time.sleep(0.1)
    return records


def read_wandb_file(run_dir: Path) -> list:
    """The records of the offline run file: wandb's LevelDB-style log (a 7-byte file header
    ':W&B', 0xBEE1, version; 32 KiB blocks of chunks with a 7-byte header: CRC32, length,
    type 1 full / 2 first / 3 middle / 4 last), each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    records, chunk, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 or pos + 7 + length > len(data):  # the end, or a chunk still being written
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def test_tensorboard_event_file_holds_scalars_histograms_and_images(config, tmp_path):
    train(config(*RUN, "logger=tensorboard", "logger.tensorboard.spectrum_every=5"), tmp_path)
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    rows, spectra = metrics(tmp_path), load(tmp_path)
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [r["step"] for r in rows] == list(range(12))
    np.testing.assert_allclose([e.value for e in loss], [r["loss"] for r in rows], rtol=1e-6)
    rank = acc.Scalars("cov/effective_rank")
    np.testing.assert_allclose([e.value for e in rank], spectra["cov/effective_rank"], rtol=1e-6)
    assert {"xcorr/learned", "feat_cov/logdet", "lr", "redundancy"} <= set(acc.Tags()["scalars"])
    for name in ("cov", "xcorr", "feat_cov"):
        hist = acc.Histograms(f"eigenvalues/{name}")
        assert [h.step for h in hist] == [0, 5, 10]
        assert hist[1].histogram_value.num == spectra[name].shape[1]
        assert hist[1].histogram_value.max == pytest.approx(spectra[name][5].max(), rel=1e-6)
        images = acc.Images(f"spectrum/{name}")
        assert [i.step for i in images] == [0, 5, 10]
        # modes × logged steps, each cell 6 pixels tall and 256 // steps wide
        assert (images[0].height, images[0].width, images[-1].width) == (32 * 6, 256, 3 * (256 // 3))
    (figure,) = acc.Images("figures/stepwise")
    assert figure.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and figure.step == 11


def layout_of(acc: EventAccumulator):
    """The custom scalars layout of a run, as TensorBoard's plugin reads it: each session of
    the run (a resumed one too) writes it, and the plugin takes one of them."""
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    from tensorboard.util import tensor_util

    (layout,) = {tensor_util.make_ndarray(e.tensor_proto).item() for e in acc.Tensors(metadata.CONFIG_SUMMARY_TAG)}
    return layout_pb2.Layout.FromString(layout)


@pytest.mark.parametrize("modes", [32, 3])
def test_tensorboard_charts_the_top_eigenvalues_over_steps_in_one_chart_per_matrix(config, tmp_path, modes):
    """The custom scalars layout has one multi-line chart per matrix; its tag expression (as
    TensorBoard matches it, from the tag's start) selects exactly that matrix's top
    min(modes, D) eigenvalues, mode k's tag holding the spectrum store's λ_k at every
    spectrum_every-th step. modes=3 charts fewer modes than the matrices have; 32 more than
    the matrices' D = 16 (backbone.out_dim; the projector is the identity)."""
    train(config(*RUN, "backbone.out_dim=16", "logger=tensorboard",
                 "logger.tensorboard.spectrum_every=5", f"logger.tensorboard.modes={modes}"), tmp_path)
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    spectra, tags = load(tmp_path), acc.Tags()["scalars"]
    (category,) = layout_of(acc).category
    assert category.title == "eigenvalues"
    assert [chart.title for chart in category.chart] == [
        f"top {min(modes, spectra[name].shape[1])} eigenvalues of {name}" for name in ("cov", "xcorr", "feat_cov")]
    for name, chart in zip(("cov", "xcorr", "feat_cov"), category.chart):
        (expression,) = chart.multiline.tag
        charted = sorted(tag for tag in tags if re.match(expression, tag))
        expected = spectra[name][[0, 5, 10], :modes]
        assert len(charted) == expected.shape[1] == min(modes, spectra[name].shape[1])
        for k, tag in enumerate(charted):  # sorted tags are in mode order
            assert tag.startswith(f"eigenvalues/{name}/λ")
            assert [e.step for e in acc.Scalars(tag)] == [0, 5, 10]
            np.testing.assert_allclose([e.value for e in acc.Scalars(tag)], expected[:, k], rtol=1e-6)


def test_a_resumed_run_continues_the_eigenvalue_chart_from_its_checkpoint(config, tmp_path):
    """A run resumed from its step-6 checkpoint: TensorBoard hides what the first session
    logged after it (purge_step), so the chart's lines hold each logged step once, with the
    values of the spectrum store, which the resumed run rewrote from step 6 on."""
    run = (*RUN, "trainer.checkpoint_every=6", "logger=tensorboard", "logger.tensorboard.spectrum_every=5")
    train(config(*run), tmp_path)
    train(config(*run, f"trainer.resume={tmp_path / 'checkpoints' / 'step_00000006.pt'}"), tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    (category,) = layout_of(acc).category
    spectra = load(tmp_path)
    for name, chart in zip(("cov", "xcorr", "feat_cov"), category.chart):
        (expression,) = chart.multiline.tag
        charted = sorted(tag for tag in acc.Tags()["scalars"] if re.match(expression, tag))
        assert len(charted) == 32
        for k, tag in enumerate(charted):
            assert [e.step for e in acc.Scalars(tag)] == [0, 5, 10]
            np.testing.assert_allclose([e.value for e in acc.Scalars(tag)], spectra[name][[0, 5, 10], k], rtol=1e-6)


@needs_wandb
def test_wandb_offline_run_holds_history_images_and_config(config, tmp_path):
    train(config(*RUN, "optim.lr=0.07", "logger=wandb", "logger.wandb.mode=offline",
                 "logger.wandb.spectrum_every=5"), tmp_path)
    records = wandb_records(tmp_path)
    history: dict[int, dict] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history.setdefault(items["_step"], {}).update(items)
    rows = metrics(tmp_path)
    assert sorted(history) == list(range(12))
    for row in rows:
        for key in ("loss", "invariance", "lr", "cov/rankme", "xcorr/learned"):
            assert history[row["step"]][key] == pytest.approx(row[key], rel=1e-9), key
    assert [s for s in history if "spectrum/xcorr/path" in history[s]] == [0, 5, 10]
    media = next(tmp_path.glob("wandb/offline-run-*/files"))
    assert (media / history[11]["figures/stepwise/path"]).read_bytes()[:4] == b"\x89PNG"
    # the eigenvalue chart while the run trains: at every spectrum_every-th step, the
    # trajectories so far, every mode (D = 64 > 32 = modes: the top 32)
    assert [s for s in history if "trajectories/xcorr_table/path" in history[s]] == [0, 5, 10]
    spectra = load(tmp_path)
    for step in (0, 5, 10):
        table = json.loads((media / history[step]["trajectories/xcorr_table/path"]).read_text())
        assert table["columns"] == ["step", "lineKey", "lineVal"]
        drawn = {(key, s): value for s, key, value in table["data"]}
        shown = [s for s in (0, 5, 10) if s <= step]
        assert drawn == {(f"λ{k + 1}", s): pytest.approx(float(spectra["xcorr"][s, k]), rel=1e-6)
                         for k in range(32) for s in shown}
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    run_config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert run_config["optim"]["lr"] == 0.07 and run_config["trainer"]["max_steps"] == 12
    assert (tmp_path / "wandb-run-id").read_text() == run.run_id


@needs_wandb
def test_a_long_wandb_eigenvalue_chart_is_thinned_to_evenly_spread_steps(tmp_path):
    """400 logged steps: the chart keeps CHART_STEPS = 100 of them, evenly spread
    (consecutive kept steps 4 or 5 logged steps apart), the first and the latest among them,
    with their own values for every mode. 200 modes: 50 steps, as W&B keeps at most
    wandb.Table.MAX_ROWS = 10 000 rows (one per mode and step) and drops the rest."""
    import wandb

    from sslkit.records.wandb import CHART_STEPS, WandbSink

    for modes, kept in ((32, CHART_STEPS), (200, wandb.Table.MAX_ROWS // 200)):
        sink = WandbSink(tmp_path, {"seed": 0}, mode="disabled", spectrum_every=3, modes=modes)
        eig = {step: np.linspace(2.0, 0.1, 256) * (1 + step / 1000) for step in range(0, 1200, 3)}
        for step, values in eig.items():
            sink.history.add(step, {"xcorr": values})  # what log_spectrum keeps, without its 400 charts
        table = sink.trajectories("xcorr").table
        sink.close()
        steps = sorted({s for s, _, _ in table.data})
        assert len(steps) == kept and (steps[0], steps[-1]) == (0, 1197)
        assert set(np.diff(steps) // 3) == {399 // (kept - 1), 399 // (kept - 1) + 1}
        assert {(key, s): value for s, key, value in table.data} == {
            (f"λ{k + 1}", s): pytest.approx(eig[s][k]) for k in range(modes) for s in steps}


@needs_wandb
def test_wandb_online_without_api_key_logs_offline_and_says_how_to_sync(tmp_path, monkeypatch, caplog):
    from sslkit.records.wandb import WandbSink

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    sink = WandbSink(tmp_path, {"seed": 0}, mode="online")
    sink.log_scalars(0, {"loss": 1.0})
    sink.close()
    (offline,) = tmp_path.glob("wandb/offline-run-*")
    hint = [r.getMessage() for r in caplog.records if "wandb sync" in r.getMessage()]
    assert hint == [f"wandb: no API key configured, logging offline; upload later with `wandb sync {offline}`"]


@needs_wandb
def test_wandb_disabled_writes_no_run(tmp_path):
    from sslkit.records.wandb import WandbSink

    sink = WandbSink(tmp_path, {"seed": 0}, mode="disabled")
    sink.log_scalars(0, {"loss": 1.0})
    sink.close()
    assert not list(tmp_path.glob("wandb/*run-*"))


def test_bad_logger_options_name_the_key(config, tmp_path):
    with pytest.raises(ConfigCompositionException) as info:
        config("logger=[wandb]", "logger.wandb.mode=sometimes")
    assert "Invalid value 'sometimes', expected one of [online, offline, disabled]" in str(info.value.__cause__)
    with pytest.raises(ConfigError, match=r"logger.tensorboard.spectrum_every=0 is not allowed: use an integer >= 1"):
        train(config("trainer.max_steps=2", "logger=tensorboard", "logger.tensorboard.spectrum_every=0"), tmp_path)
    with pytest.raises(ConfigError, match=r"spectrum.full_every=0 is not allowed"):
        train(config("trainer.max_steps=2", "spectrum.full_every=0"), tmp_path / "b")


@pytest.mark.parametrize("background", [True, False], ids=["observer_thread", "training_thread"])
def test_an_error_in_the_observer_thread_stops_the_run(config, tmp_path, monkeypatch, background):
    """A dashboard's failure stops training with one message, whichever thread recorded."""
    from sslkit.records import observer
    from sslkit.records.tensorboard import TensorBoardSink

    monkeypatch.setattr(observer, "core_to_spare", lambda device: background)

    def fail(self, step, scalars):
        raise OSError("No space left on device")

    monkeypatch.setattr(TensorBoardSink, "log_scalars", fail)
    with pytest.raises(RuntimeError, match=r"recording the run failed: OSError\('No space left on device'\)"):
        train(config(*RUN, "logger=tensorboard"), tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_real_tensorboard_serves_the_run(config, tmp_path):
    train(config(*RUN, "logger=tensorboard"), tmp_path)
    port = free_port()
    server = subprocess.Popen([BIN / "tensorboard", "--logdir", str(tmp_path / "tensorboard"), "--host",
                               "localhost", "--port", str(port), "--load_fast=false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://localhost:{port}/data/plugin/scalars/scalars?run=.&tag=loss"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    served = json.loads(response.read())
                break
            except OSError:  # not listening yet, or the run not loaded yet (HTTP 400/404)
                assert time.monotonic() < deadline, "tensorboard did not serve the run within 120 s"
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = metrics(tmp_path)
    assert [step for _, step, _ in served] == [r["step"] for r in rows]
    np.testing.assert_allclose([value for _, _, value in served], [r["loss"] for r in rows], rtol=1e-6)
