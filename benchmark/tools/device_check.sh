#!/usr/bin/env bash
# The GPU checks of issue 14 in one command, for a session lent the GPU machine (15 min in all).
# Prepare here:   bash ../shared/device/wheels.sh                       (carry: [".whl"]; about 27 MiB)
#                 the machine's image has torch, timm, numpy, pandas, scikit-learn; versions.txt says
#                 whether it has pyarrow (parquet output, the run step needs it; its wheel is ~40 MiB)
# Run there:      bash benchmark/tools/device_check.sh                  (timeout_s 600; the steps' limits add to 590 s)
# Every step writes its figures under $OUT and has its own time limit, so one failing step
# leaves the others' figures. Nothing here is timed by a test: read the files.
set -u
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export AFF_BENCHMARK_CACHE=/tmp/aff-cache      # the cohort (1.4 GB: not under $OUT) and the calibration
step() {   # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/steps.txt"
}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.txt" 2>&1 || { echo "wheel install failed (see pip.txt)" | tee -a "$OUT/steps.txt"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, timm, optuna; print(torch.__version__, timm.__version__, optuna.__version__, torch.cuda.get_device_name(0))" \
  > "$OUT/versions.txt" 2>&1
python3 -c "import pyarrow; print('pyarrow', pyarrow.__version__)" >> "$OUT/versions.txt" 2>&1
# 1. the loop against bare timm (target >= 0.9), resnet18/50 at 224 and 512 px, then deterministic kernels
step throughput 120 python3 -m benchmark.tools.throughput --models resnet18,resnet50 --sizes 224,512
step throughput_deterministic 40 python3 -m benchmark.tools.throughput --models resnet18 --sizes 224 --deterministic
# 2. k fits sharing the GPU (sets plan.GPU_SHARE_UTIL and the --gpu-share advice)
step concurrent 100 python3 -m benchmark.tools.throughput --models resnet18,resnet50 --sizes 224 --concurrent 1,2,4
# 3. the cost plan calibrated on this GPU (the first step to need the default cohort generates it),
#    and the standard plan with it and with the stored table
step plan_gpu 150 python3 -m benchmark plan --suite all --profile standard --device-profile gpu --gpus 1
cp /tmp/aff-cache/cost_calibration.json "$OUT/" 2>/dev/null
step plan_h200 30 python3 -m benchmark plan --suite all --profile standard --device-profile h200
# 4. a reduced standard: resnet18 and late_stacking (and the register model it needs) at 224 px, halving
step slice 150 python3 -m benchmark run --candidates resnet18,late_stacking --profile standard_slice \
  --spaces benchmark/tools/device_slice --results /tmp/results --run slice --device cuda
for f in leaderboard.csv studies.csv trials.csv findings.md manifest.json; do
  cp "/tmp/results/slice/$f" "$OUT/slice_$f" 2>/dev/null
done
