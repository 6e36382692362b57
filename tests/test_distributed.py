"""Data-parallel training: 2 processes (torchrun, gloo on CPU) against 1 process with the
same global batch, for all three losses."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslkit.spectrum import load

from conftest import on_cpu

BIN = Path(sys.executable).parent
# Deterministic views (noise std 0) so that both runs see the same global batches; no
# BatchNorm, whose statistics are per process on CPU (no SyncBatchNorm).
RUN = ("data=synthetic", "augment=gaussian_noise", "augment.std=0", "backbone=mlp", "backbone.width=64",
       "projector=identity", "data.batch_size=256", "trainer.max_steps=20", "trainer.progress=false",
       "trainer.report=false")


def run(run_dir: Path, loss: str, processes: int) -> None:
    launcher = [BIN / "torchrun", f"--nproc_per_node={processes}", BIN / "sslkit-train"] if processes > 1 \
        else [BIN / "sslkit-train"]
    done = subprocess.run([*launcher, f"loss={loss}", *on_cpu(*RUN), f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["barlow_twins", "simclr", "vicreg"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, loss):
    run(tmp_path / "one", loss, 1)
    run(tmp_path / "two", loss, 2)
    curves = [[json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
              for d in ("one", "two")]
    assert len(curves[0]) == len(curves[1]) == 20
    torch.testing.assert_close(torch.tensor(curves[1]), torch.tensor(curves[0]), rtol=1e-5, atol=0)
    one, two = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["model"]
                for d in ("one", "two"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-7, msg=key)
    # rank 0 records the spectra of the global batch, backbone features (feat_cov) included
    spectra = [load(tmp_path / d) for d in ("one", "two")]
    for name in ("cov", "xcorr", "feat_cov"):
        torch.testing.assert_close(torch.from_numpy(spectra[1][name]), torch.from_numpy(spectra[0][name]),
                                   rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_submitit_local_sweep_runs_to_completion(tmp_path):
    done = subprocess.run([BIN / "sslkit-train", "-m", "hydra/launcher=submitit_local", "device=cpu", "loss=barlow_twins,vicreg",
                           "seed=0,1", "trainer.max_steps=3", "trainer.progress=false", "trainer.report=false",
                           f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(tmp_path.glob("*/metrics.jsonl"))
    assert len(runs) == 4 and all(len(r.read_text().splitlines()) == 3 for r in runs)
    configs = {(r.parent / "config.yaml").read_text().split("seed: ")[1].split("\n")[0] for r in runs}
    assert configs == {"0", "1"}
