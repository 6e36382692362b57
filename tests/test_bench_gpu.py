"""scripts/bench_gpu.py at its CPU size: it runs end to end and its last line is the ratio
of the pairs/s it printed for sslkit (spectra on) and for the reference loop."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_runs_on_the_cpu_and_reports_its_ratio():
    done = subprocess.run([sys.executable, ROOT / "scripts" / "bench_gpu.py", "--tiny", "--steps", "1", "--warmup", "1",
                           "device=cpu"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    pairs = {line.split(":")[0]: float(re.search(r": ([\d,.]+) pairs/s", line)[1].replace(",", ""))
             for line in lines if "pairs/s" in line}
    on, ref = pairs["sslkit, spectrum=every_step"], next(v for k, v in pairs.items() if k.startswith("reference"))
    assert lines[-1].startswith("ratio_vs_reference: ")
    assert float(lines[-1].split(": ")[1]) == pytest.approx(on / ref, rel=1e-3)
    breakdown = next(line for line in lines if line.startswith("breakdown"))
    assert all(f"{stage} " in breakdown for stage in ("views", "forward", "backward", "optimizer", "spectrum"))
