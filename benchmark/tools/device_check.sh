#!/usr/bin/env bash
# The GPU checks in one command: the training loop against a bare timm loop (with and without
# augmentation, deterministic kernels, torch.compile, other batch sizes), fits sharing the GPU,
# whether --deterministic reruns are identical, the cost plan calibrated on this GPU, every torch
# family on CUDA, a reduced `standard` run (benchmark/tools/device_slice/profiles.yaml), and the `hour`
# profile's resnet18 units against their plan.
#   bash benchmark/tools/device_check.sh                        every step
#   bash benchmark/tools/device_check.sh fusion_smoke aug       only the steps named
# Settings (environment): OUT, where the figures go (default /tmp/device_check_out); DEADLINE_S,
# seconds from the start by which every step has ended (default 585); DEVICE_CHECK_DIR, the steps'
# scratch folder. A folder .whl of wheels in the working directory is installed first (offline,
# without dependencies, into /tmp/site) for packages the machine lacks.
# All steps together take more than ten minutes on one GPU: name a few steps per call.
# Every step writes its output under the scratch folder and has its own time limit, cut to what is
# left before DEADLINE_S, so one failing or slow step leaves the others' figures. After each step the
# outputs are packed again into $OUT/device_check.tgz, so a command stopped at its limit still returns
# every step that ended. Nothing here is timed by a test: read the files. A step stopped at its limit
# gets SIGABRT first, so Python's fault handler prints where every thread was (a hang shows up as a
# traceback at the end of the step's file).
set -u
OUT=${OUT:-/tmp/device_check_out}
DEADLINE_S=${DEADLINE_S:-585}                  # seconds from the start by which every step has ended
T0=$(date +%s)
D=${DEVICE_CHECK_DIR:-/tmp/device_check}      # the steps' outputs (packed into $OUT after each step)
mkdir -p "$OUT" "$D"
export AFF_BENCHMARK_CACHE=/tmp/aff-cache      # the cohort (1.4 GB: not under $OUT) and the calibration
export PYTHONUNBUFFERED=1                      # a step killed at its limit keeps what it printed
export PYTHONFAULTHANDLER=1                    # ... and its threads' tracebacks (timeout sends SIGABRT)
WANT=" $* "                                    # the steps asked for (none: all)
pack() {
  cp /tmp/aff-cache/cost_calibration.json "$D/" 2>/dev/null
  tar -czf "$OUT/device_check.tgz.tmp" -C "$D" . && mv "$OUT/device_check.tgz.tmp" "$OUT/device_check.tgz"
}
small_cohort() {   # the 300-patient cohort the GPU smoke and determinism steps run on, made once
  [ -f /tmp/small_cohort/dataset.yaml ] || python3 -m benchmark synth --patients 300 /tmp/small_cohort > /dev/null
}
export -f small_cohort
step() {   # step NAME SECONDS COMMAND...: at most SECONDS, and never past the deadline
  local name=$1 limit=$2; shift 2
  if [ "$WANT" != "  " ] && [[ "$WANT" != *" $name "* ]]; then return; fi
  local t=$(date +%s) left
  left=$(( DEADLINE_S - (t - T0) ))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 5 ]; then echo "$name: skipped (deadline)" | tee -a "$OUT/steps.txt"; return; fi
  timeout -s ABRT -k 5 "$limit" "$@" > "$D/$name.txt" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - t )) s (limit $limit s)" | tee -a "$OUT/steps.txt"
  pack
}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$D/pip.txt" 2>&1 || { echo "wheel install failed (see pip.txt)" | tee -a "$OUT/steps.txt"; pack; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
echo "wheels: $(( $(date +%s) - T0 )) s" >> "$OUT/steps.txt"
nvidia-smi > "$D/nvidia-smi.txt" 2>&1
python3 -c "import sys, torch, timm, optuna, pandas, numpy, sklearn, pyarrow, xgboost, lightgbm; \
print(sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'optuna', optuna.__version__, \
'pandas', pandas.__version__, 'numpy', numpy.__version__, 'sklearn', sklearn.__version__, 'pyarrow', pyarrow.__version__, \
'xgboost', xgboost.__version__, 'lightgbm', lightgbm.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA GPU'); \
print('cpus', __import__('os').cpu_count())" > "$D/versions.txt" 2>&1
# 1. the loop against bare timm (target >= 0.9), resnet18/50 at 224 and 512 px, then deterministic kernels
step throughput 100 python3 -m benchmark.tools.throughput --models resnet18,resnet50 --sizes 224,512 --steps 100
step throughput_deterministic 30 python3 -m benchmark.tools.throughput --models resnet18 --sizes 224 --steps 100 --deterministic
# 1b. would torch.compile pay? the bare loop compiled against eager
step compile 150 python3 -m benchmark.tools.throughput --models resnet18 --sizes 224 --steps 100 --compile default,reduce-overhead
# 1c. the loop at the other batch sizes the CNN spaces offer (16, 32) and at 128: plan prices a batch b < 64
#     at 64/b times the per-image cost at 64 (plan.costs.h200_batch_factor, a host-bound model); this measures it
step batches 90 bash -c 'for b in 16 32 128; do echo "== batch $b"
  python3 -m benchmark.tools.throughput --models resnet18 --sizes 224 --batch $b --steps 60 || exit 1; done'
# 2. k fits sharing the GPU (sets plan.schedule.GPU_SHARE_UTIL and the --gpu-share advice)
step concurrent 100 python3 -m benchmark.tools.throughput --models resnet18 --sizes 224 --steps 200 --concurrent 1,2,4
# 2b. GPU determinism: two reruns with --deterministic, two without, on a small cohort made here
#     (same_predictions prints per candidate whether the reruns' predictions are bit-identical)
step determinism 120 bash -c 'small_cohort || exit 1
for r in det1 det2 fast1 fast2; do
  flag=; case $r in det*) flag=--deterministic;; esac
  python3 -m benchmark run --data /tmp/small_cohort/dataset.yaml --profile smoke --device cuda --results /tmp/results \
    --run $r --candidates resnet18,joint_concat $flag > /dev/null 2>&1 || { echo "run $r failed"; exit 1; }
done
echo "--deterministic, two reruns:"; python3 -m benchmark.tools.same_predictions /tmp/results/det1 /tmp/results/det2
echo "default (cuDNN autotuning), two reruns:"; python3 -m benchmark.tools.same_predictions /tmp/results/fast1 /tmp/results/fast2
true'
# 3. the cost plan calibrated on this GPU (the first step to need the default cohort generates it),
#    and the standard plan with it and with the stored table (the calibration times batch 16, 32 and 64
#    of each CNN, the sizes standard's search draws; what it measured stays in the packed
#    cost_calibration.json, so a second call goes on from there)
step plan_gpu 200 python3 -m benchmark plan --suite all --profile standard --device-profile gpu --gpus 1
step plan_h200 20 python3 -m benchmark plan --suite all --profile standard --device-profile h200
# 4. every torch family once on the GPU (the smoke profile: 32 px; numbers mean nothing), on a small
#    cohort made here (no default cohort needed); its log gives each fold's seconds
step fusion_smoke 100 bash -c 'small_cohort && \
  python3 -m benchmark run --data /tmp/small_cohort/dataset.yaml --profile smoke --device cuda --results /tmp/results \
  --run fusion_smoke --candidates resnet18,joint_concat,film,gated,attention,mlp,embed_xgboost'
# 4b. the loop without augmentation (how much of the gap to the bare loop is augmentation), and the
#     calibration of convnext_nano and of fusion networks against their resnet18 backbone
step aug 40 python3 -m benchmark.tools.throughput --models resnet18 --sizes 224 --steps 100 --aug 0,1
step calibrate_more 60 python3 -c "from benchmark.run.plan import measure
for arch, fam in [('convnext_nano', 'timm_cnn'), ('resnet18', 'timm_cnn'), ('resnet18', 'joint_concat'), ('resnet18', 'attention')]:
    print(arch, fam, measure.measure_image(arch, 224, 64, family=fam, steps=30, device='cuda'), flush=True)"
# 5. a reduced standard: resnet18 and late_stacking (and the register model it needs) at 224 px, halving;
#    the GPU's load once a second beside it
nvidia-smi dmon -s u -d 1 > "$D/slice_dmon.txt" 2>&1 &
DMON=$!
step slice 240 python3 -m benchmark run --candidates resnet18,late_stacking --profile standard_slice \
  --spaces benchmark/tools/device_slice --results /tmp/results --run slice --device cuda
kill "$DMON" 2>/dev/null
# 6. the hour profile (the GPU default), measured against its plan: the plan of resnet18 alone from the
#    H200 table and from this GPU's calibration, then that run (5 outer x 3 inner folds, 4 trials, 4 epochs,
#    160 px, halving); its studies.csv gives each unit's seconds. The default cohort is generated first when
#    no earlier step did (minutes). Without internet the ImageNet weights cannot be fetched: the run says so
#    in one line and trains from random initialisation, at the same cost per image.
step hour 420 bash -c 'python3 -m benchmark plan --candidates resnet18 --profile hour --device-profile h200 && \
  python3 -m benchmark plan --candidates resnet18 --profile hour --device-profile gpu --gpus 1 && \
  python3 -m benchmark run --candidates resnet18 --profile hour --device cuda --results /tmp/results --run hour'
for run in fusion_smoke slice hour; do
  for f in leaderboard.csv studies.csv trials.csv fold_metrics.csv findings.md manifest.json; do
    cp "/tmp/results/$run/$f" "$D/${run}_$f" 2>/dev/null
  done
done
pack
echo "total: $(( $(date +%s) - T0 )) s" | tee -a "$OUT/steps.txt"
