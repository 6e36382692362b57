"""What a command imports: only what it uses. `sslkit-train --help` and a run of the
default experiment import no dashboard, no torchvision, no scikit-learn and no SciPy (and
--help not torch's compiler stack); scripts/bench_startup.py times them."""

import subprocess
import sys

import numpy as np

from sslkit.data.sources import digits_arrays

HEAVY = ("torch._dynamo", "torchvision", "wandb", "torch.utils.tensorboard", "matplotlib", "sklearn", "scipy")


def imported_after(code: str) -> set[str]:
    """The modules of HEAVY that a new interpreter has imported after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_help_imports_no_target_of_an_option_it_does_not_compose():
    """--help composes the default config: its schemas are derived, and only its targets
    imported (none of the dashboards', ResNet's or the image folder's)."""
    code = ("import contextlib, io, sys\nsys.argv = ['sslkit-train', '--help']\nfrom sslkit.cli import _check_command\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert _check_command('sslkit-train')")
    assert imported_after(code) == set()


def test_the_default_runs_build_imports_neither_dashboards_nor_torchvision():
    """Building the default experiment's run (and its two-sample check), as sslkit-train does
    before its first step. torch's optimizers import torch._dynamo when they are built, so
    that one is allowed here; a figure at the end imports matplotlib."""
    code = ("from hydra import compose, initialize_config_dir\nfrom sslkit.config import CONFIG_DIR, register_configs\n"
            "from sslkit.train import check\nregister_configs()\n"
            "with initialize_config_dir(CONFIG_DIR, version_base='1.3'):\n"
            "    check(compose('train', overrides=['device=cpu']))")
    assert imported_after(code) <= {"torch._dynamo"}


def test_the_digits_are_scikit_learns():
    """The same pixels and labels as sklearn.datasets.load_digits, read without it."""
    from sklearn.datasets import load_digits

    images, target = digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)
