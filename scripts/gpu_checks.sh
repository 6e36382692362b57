#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one go, on a machine whose PyTorch image
# lacks sslkit's pure-Python dependencies: they come as wheels in .whl/ (git-ignored; made
# elsewhere with `pip wheel --no-deps -w .whl hydra-core==1.3.8 omegaconf==2.3.1
# antlr4-python3-runtime==4.9.3 submitit==1.5.4 hydra-submitit-launcher==1.2.0
# threadpoolctl==3.8.0 mnist1d==0.0.2.post1 pytest-xdist execnet pytest-timeout`, the pins of
# pyproject.toml; mnist1d imports scipy and requests, which the image must have for
# data=mnist1d's tests). Parts run in order of priority, each under its own time
# limit and all within BUDGET seconds; everything goes to $OUT (default /tmp/gpu_checks):
#   summary.txt   device, commit, each part's exit status and wall time, the tests' tally
#   bench.log     scripts/bench_gpu.py: Barlow Twins at batch 256 and 1024, VICReg, SimCLR,
#                 Barlow Twins with eval=online_probe (16 SGD steps on 2048 samples per step)
#   monitor.log   scripts/bench_spectrum.py monitor at batch 256, D = 2048: the monitor's host
#                 and device time per step with C decomposed exactly (its 512×512 form from
#                 a QR on the device, the default spectrum.exact_max=512) and tracked
#                 (exact_max=256, as before)
#   stepwise.log  scripts/stepwise_gpu_settings.py, then scripts/make_figures.py
#                 stepwise_resnet18_gpu with its settings; the figure and events.jsonl
#   tests.log     the fast suite, pytest -m "not slow" -n 8, last
# On an H200 (torch 2.11) the first compilation of the ResNet-18 step took more than
# 110 s with 4 test processes beside it (docs/benchmarks.md): give bench_gpu.py minutes,
# and run the suite alone (with 4 workers next to compilation, 11 % of it ran in 200 s).
#     COMMIT=$(git rev-parse HEAD) bash scripts/gpu_checks.sh
set -u
OUT=${OUT:-/tmp/gpu_checks}
BUDGET=${BUDGET:-1500}  # seconds
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > /dev/null || exit 1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"
  echo "commit ${COMMIT:-unknown}"
} > "$OUT/summary.txt"

part() {  # part NAME LIMIT_S LOG COMMAND...: run it within the budget, append to LOG, record rc and time
  local name=$1 limit=$2 log=$3 start=$SECONDS
  shift 3
  (( limit > BUDGET - SECONDS )) && limit=$(( BUDGET - SECONDS ))
  (( limit < 20 )) && { echo "$name skipped: budget spent" >> "$OUT/summary.txt"; return; }
  echo "=== $name: $*" >> "$OUT/$log"
  timeout -k 5 "$limit" "$@" >> "$OUT/$log" 2>&1  # -k: sslkit-train finishes its step on SIGTERM
  echo "$name rc=$? $((SECONDS - start)) s" >> "$OUT/summary.txt"
}

part bench_bt256 300 bench.log python3 scripts/bench_gpu.py --steps 30 --warmup 10
part settings 30 stepwise.log python3 scripts/stepwise_gpu_settings.py
part stepwise 150 stepwise.log python3 scripts/make_figures.py stepwise_resnet18_gpu -- trainer.progress=false \
  $(tail -n 1 "$OUT/stepwise.log")
cp scripts/figures/stepwise_resnet18_gpu.png runs/figures/stepwise_resnet18_gpu/spectrum/events.jsonl "$OUT/"
part monitor_exact 60 monitor.log python3 scripts/bench_spectrum.py monitor --batch 256 --dim 2048 --steps 200
part monitor_tracked 60 monitor.log python3 scripts/bench_spectrum.py monitor --batch 256 --dim 2048 --steps 200 \
  --exact-max 256
part bench_bt1024 90 bench.log python3 scripts/bench_gpu.py --batch-size 1024 --steps 30 --warmup 10
part bench_vicreg 60 bench.log python3 scripts/bench_gpu.py --experiment vicreg_cifar10_resnet18 --steps 30
part bench_simclr 80 bench.log python3 scripts/bench_gpu.py --experiment simclr_cifar10_resnet18 --steps 30
part bench_probe 90 bench.log python3 scripts/bench_gpu.py --steps 30 --warmup 10 eval=online_probe
part tests 400 tests.log python3 -m pytest -m "not slow" -n 8 -p no:cacheprovider -q --timeout 300
tail -n 3 "$OUT/tests.log" >> "$OUT/summary.txt"
