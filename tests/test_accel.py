"""The precision / layout / compile switches (sslkit.accel) and the step without host
synchronisation (sslkit.step): on the CPU, each switch changes the losses by rounding
only; on CUDA (tests skipped without it), the fast path's defaults, the restored process
settings and a step that never waits for the device."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sslkit.accel import Accel
from sslkit.errors import ConfigError
from sslkit.train import train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# a small CNN on 8×8 digit images: convolutions (channels_last acts), BatchNorm, a projector
TINY = ("backbone=cnn", "backbone.width=16", "projector=mlp", "projector.hidden_dims=[32]", "projector.out_dim=16",
        "loss=barlow_twins", "optim.lr=0.01", "optim.momentum=0.9", "data.batch_size=64",
        "spectrum=off")
# an MLP on the digits' 64 pixels (on a CPU without bfloat16 units, bf16 convolutions are slow)
MLP = ("backbone=mlp", "backbone.width=128", "projector=mlp", "projector.hidden_dims=[128]", "projector.out_dim=32",
       "loss=barlow_twins", "optim.lr=0.01", "optim.momentum=0.9", "data.batch_size=256", "spectrum=off",
       "trainer.max_steps=20")


def losses(run_dir: Path) -> torch.Tensor:
    return torch.tensor([json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()],
                        dtype=torch.float64)


def trainer(**kw):
    return SimpleNamespace(**{"precision": "auto", "channels_last": "auto", "compile": "auto",
                              "compile_mode": "default", **kw})


def test_auto_is_fast_on_cuda_and_plain_on_the_cpu():
    assert Accel.resolve(trainer(), torch.device("cuda")) == Accel(torch.device("cuda"), "bf16", True, True)
    assert Accel.resolve(trainer(), torch.device("cpu")) == Accel(torch.device("cpu"), "fp32", False, False)
    forced = Accel.resolve(trainer(precision="tf32", channels_last=True, compile=False), torch.device("cpu"))
    assert (forced.precision, forced.channels_last, forced.compile) == ("tf32", True, False)
    for key, value, allowed in (("precision", "fp16", "auto, fp32, tf32, bf16"), ("channels_last", "yes", "auto, true"),
                                ("compile_mode", "reduce-overhead", "default, max-autotune-no-cudagraphs")):
        with pytest.raises(ConfigError, match=rf"trainer.{key}={value} is not allowed: use .*{allowed}"):
            Accel.resolve(trainer(**{key: value}), torch.device("cpu"))


@pytest.mark.parametrize("switch", [
    "trainer.channels_last=true",
    pytest.param("trainer.compile=true", marks=pytest.mark.slow),  # inductor compiles C++: minutes on 2 cores
])
def test_channels_last_and_compile_leave_the_losses(config, tmp_path, switch):
    """The same run in NCHW and NHWC, eager and compiled by inductor: losses equal to 1e-5
    (relative) over 5 steps: both switches only reorder the same float32 arithmetic. (At
    a learning rate where a step moves the loss by a factor of 3, as with LARS at 0.1 on
    this model, rounding differences grow past 1e-5 within 5 steps whatever causes them.)"""
    base = (*TINY, "trainer.max_steps=5", "trainer.precision=fp32", "trainer.channels_last=false",
            "trainer.compile=false")
    train(config(*base), tmp_path / "plain")
    train(config(*base, switch), tmp_path / "switched")
    plain = losses(tmp_path / "plain")
    assert len(plain) == 5 and not torch.allclose(plain[0], plain[-1])  # it trains
    torch.testing.assert_close(losses(tmp_path / "switched"), plain, rtol=1e-5, atol=0)


def test_bf16_stays_near_fp32(config, tmp_path):
    """bf16 autocast rounds the inputs of every matrix product to 8 significant bits
    (relative error ≤ 2⁻⁹ ≈ 0.2 %); the loss, computed in float32 from those outputs,
    stays within 3 % of the fp32 run's at each of 20 steps (1 % measured)."""
    train(config(*MLP, "trainer.precision=fp32"), tmp_path / "fp32")
    train(config(*MLP, "trainer.precision=bf16"), tmp_path / "bf16")
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert not torch.equal(fp32, bf16)  # bf16 did act
    torch.testing.assert_close(bf16, fp32, rtol=0.03, atol=0)


@cuda
def test_step_never_waits_for_the_device(config):
    """After a warm-up step (compilation), views (augment=cifar, hue included), forward,
    backward, the guarded LARS update and the pinned copy of the step's scalars run with
    CUDA's sync debug mode set to error: any host synchronisation would raise."""
    from sslkit.step import HostValues, Step

    cfg = config("data=digits", "data.size=32", "data.channels=3", "augment=cifar", "optim=lars", *TINY[:6],
                 "data.batch_size=64", "device=cuda", "trainer.max_steps=4")
    step = Step.build(cfg, torch.device("cuda"))
    batches = step.data.batches(cfg.seed)
    pending = None
    for t in range(4):
        _, x, _ = next(batches)
        torch.cuda.set_sync_debug_mode("error" if t > 0 else "default")
        try:
            v1, v2 = step.views(x, t)
            _, out = step.forward(v1, v2)
            finite = step.backward(out)
            step.update(t, finite)
            current = HostValues([finite, out.loss])
        finally:
            torch.cuda.set_sync_debug_mode("default")
        if pending is not None:
            assert pending.get()[0] == 1.0
        pending = current


@cuda
def test_cuda_fast_path_trains_like_the_cpu(config, tmp_path):
    """On CUDA with the fast defaults (bf16, compiled, spectra on), the MLP run above stays
    within its bf16 tolerance of the CPU's fp32 run; the CNN run in fp32, channels_last and
    compiled, within 1e-4 of the CPU's over 5 steps. The process's TF32 settings are as
    before the runs."""
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    train(config(*MLP, "spectrum=every_step", "device=cuda"), tmp_path / "mlp-cuda")
    train(config(*MLP, "spectrum=every_step", "device=cpu"), tmp_path / "mlp-cpu")
    torch.testing.assert_close(losses(tmp_path / "mlp-cuda"), losses(tmp_path / "mlp-cpu"), rtol=0.03, atol=0)
    cnn = (*TINY, "trainer.max_steps=5", "trainer.precision=fp32")
    train(config(*cnn, "device=cuda"), tmp_path / "cnn-cuda")
    train(config(*cnn, "device=cpu"), tmp_path / "cnn-cpu")
    torch.testing.assert_close(losses(tmp_path / "cnn-cuda"), losses(tmp_path / "cnn-cpu"), rtol=1e-4, atol=0)
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before
