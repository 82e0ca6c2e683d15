#!/usr/bin/env bash
# Runs this project on the lent GPU machine (NVIDIA H200 through Vulkan/WebGPU; no Node.js, no network) from
# what `node tools/gpu-pack.mjs` put in .gpu/. The device command is `bash tools/gpu-run.sh` with carry
# [".gpu"], from the repository root; results go under $OUT (the runner's empty folder that comes back).
#
# Stages, each under its own timeout and all within BUDGET_S seconds together; a stage that fails or times
# out is recorded in $OUT/stages.txt and the next one runs:
#   devsel one GPU per worker through Mesa's device-select layer (tools/gpu-devsel.sh, the layer from
#          .gpu/device-select.tar.xz): --gpus=0's backend line names the GPU's PCI address; an address that
#          matches no GPU, a disabled layer and a GPU the machine lacks are coded errors -> gpu-run.log
#   adapter what the adapter offers for --precision=f16 (tools/gpu-adapter.mjs, with and without Dawn's toggles):
#          shader-f16, chromium-experimental-subgroup-matrix and adapter.info.subgroupMatrixConfigs -> $OUT/f16.json
#   check  check-gradients.mjs --backend=webgpu: layer gradients vs cpu   -> $OUT/check-gradients.txt
#   bench  one training run at 224x224 batch 64, 1000 classes, 12 steps, the last profiled (steps 4-11 replay a
#          captured step) -> $OUT/bench.json (medians of steps 5..11, the profiled step's busiest kernels)
#   bench-f16 the same run with --precision=f16 (f16 GEMMs, loss scaling, no replay) -> $OUT/f16.json beside the
#          adapter's figures (medians of steps 5..11)
#   host   the bench step on Dawn's null backend, replayed: host-side ms per step -> $OUT/host.json (and without
#          replay, in the log)
#   train  synthetic data, 2 epochs, batch 32: --workers=1 and --workers=2 -> $OUT/train.json (final evals)
# Choose stages with STAGES="check bench train" (or as arguments: bash tools/gpu-run.sh bench train).
# Only 8 files of at most 16 MiB come back from $OUT, so the run folders are kept in $GPU_RUN_DIR/gpu-runs and
# $OUT gets 8 files: gpu-run.log (all output), stages.txt, check-gradients.txt, bench.json, f16.json, host.json,
# train.json and runs.tar.xz (every run folder without weights and checkpoints: config, train.log, metrics.jsonl, summary).
#
# Env overrides: BENCH_SIZE BENCH_BATCH BENCH_CLASSES BENCH_STEPS BENCH_PROFILE BENCH_FROM BENCH_ARGS, CHECK_ARGS,
#   TRAIN_WORKERS ("1 2") TRAIN_ARGS ("--epochs=2 --batch-size=32"), CHECK_TIMEOUT BENCH_TIMEOUT BENCH_F16_TIMEOUT TRAIN_TIMEOUT,
#   BUDGET_S (540: the whole script), BACKEND (webgpu), GPU_RUN_DIR (/tmp: node and app/ are unpacked there).
# GPU_RUN_LOCAL=1: a dry run on another machine (e.g. Mesa lavapipe): no dpkg -x of the .debs, no ldconfig.
# Example dry run: GPU_RUN_LOCAL=1 OUT=tmp/gpu-out BENCH_SIZE=32 BENCH_BATCH=4 BENCH_CLASSES=10 \
#   CHECK_ARGS=--model-image-size=32 TRAIN_ARGS="--epochs=1 --batch-size=8 --synthetic-size=64,32" bash tools/gpu-run.sh
set -u
T0=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G=$ROOT/.gpu
STAGES=${STAGES:-${*:-devsel adapter check bench bench-f16 host train}}
OUT=${OUT:-$ROOT/tmp/gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
# Everything this script prints also goes to $OUT/gpu-run.log (the script runs itself once more under tee).
if [ -z "${GPU_RUN_TEED:-}" ]; then
  GPU_RUN_TEED=1 OUT=$OUT STAGES=$STAGES bash "$0" 2>&1 | tee "$OUT/gpu-run.log"
  exit "${PIPESTATUS[0]}"
fi
RUN_DIR=${GPU_RUN_DIR:-/tmp}
W=$RUN_DIR/gpu-runs
NODE=$RUN_DIR/node
APP=$RUN_DIR/app
BACKEND=${BACKEND:-webgpu}
BUDGET_S=${BUDGET_S:-540}
BENCH_SIZE=${BENCH_SIZE:-224} BENCH_BATCH=${BENCH_BATCH:-64} BENCH_CLASSES=${BENCH_CLASSES:-1000}
BENCH_STEPS=${BENCH_STEPS:-12} BENCH_PROFILE=${BENCH_PROFILE:-12}
TRAIN_WORKERS=${TRAIN_WORKERS:-1 2} TRAIN_ARGS=${TRAIN_ARGS:---epochs=2 --batch-size=32}
FAILED=()
: >"$OUT/stages.txt"
rm -rf "$W" && mkdir -p "$W"

say() { echo "[gpu-run $(($(date +%s) - T0))s] $*"; }
record() { echo "$1 $2" >>"$OUT/stages.txt"; [ "$2" = ok ] || FAILED+=("$1"); }
# Seconds a stage may run: its own limit, cut to what is left of BUDGET_S (keeping 15 s for the summaries).
limit() { local left=$((BUDGET_S - ($(date +%s) - T0) - 15)); [ "$1" -lt "$left" ] && echo "$1" || echo "$left"; }
# stage NAME LIMIT LOGFILE CMD...: runs CMD under timeout (SIGTERM, then SIGKILL 15 s later), output to the
# terminal and LOGFILE, and records ok / failed (exit N) / timed out / skipped.
stage() {
  local name=$1 want=$2 log=$3; shift 3
  local t; t=$(limit "$want")
  if [ "$t" -lt 20 ]; then say "$name: skipped, ${t}s of the ${BUDGET_S}s budget left"; record "$name" skipped; return 1; fi
  say "$name (timeout ${t}s): $*"
  local s; s=$(date +%s)
  timeout -k 15 "$t" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]} took=$(($(date +%s) - s))
  if [ "$rc" = 0 ]; then record "$name" ok
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then say "$name: TIMED OUT after ${took}s"; record "$name" "timed-out(${took}s)"
  else say "$name: FAILED (exit $rc) after ${took}s"; record "$name" "failed(exit-$rc)"
  fi
  say "$name: ${took}s"
  return "$rc"
}

# ---- preamble (/work/shared/gpu/README.md): Node, the app, the Vulkan/GL loaders, the NVIDIA ICD
[ -f "$G/node.xz" ] && [ -f "$G/app.tar.xz" ] || { echo "gpu-run: $G/node.xz or app.tar.xz missing: run node tools/gpu-pack.mjs here first, and pass carry [\".gpu\"]" >&2; exit 2; }
mkdir -p "$RUN_DIR"
xz -dc "$G/node.xz" >"$NODE" && chmod +x "$NODE" || { echo "gpu-run: cannot unpack node to $NODE" >&2; exit 2; }
rm -rf "$APP" && tar xJf "$G/app.tar.xz" -C "$RUN_DIR" || { echo "gpu-run: cannot unpack app.tar.xz to $RUN_DIR" >&2; exit 2; }
if [ "${GPU_RUN_LOCAL:-0}" != 1 ]; then
  for f in "$G"/*.deb; do dpkg -x "$f" / || echo "gpu-run: dpkg -x $f failed" >&2; done
  ldconfig || true
fi
if [ -z "${VK_DRIVER_FILES:-}" ]; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; break; fi
  done
fi
# The native addons are not in the bundle (and are built with -march=native for another CPU): JS paths.
export GOOGLENET_NATIVE=0
export GOOGLENET_WORKER_ENTRY=$APP/cli/worker.mjs GOOGLENET_COORDINATOR_ENTRY=$APP/cli/coordinator.mjs
{
  echo "node: $("$NODE" --version) at $NODE; app: $APP; stages: $STAGES; budget: ${BUDGET_S}s; out: $OUT"
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset, so the default ICDs} GPU_RUN_LOCAL=${GPU_RUN_LOCAL:-0}"
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader; else echo "nvidia-smi: not present"; fi
} 2>&1
cd "$APP" || exit 2

want() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ---- devsel: a worker pinned to GPU 0 gets it; pins that cannot hold fail with GPU_NOT_ISOLATED / GPU_NOT_FOUND
if want devsel; then
  stage devsel "${DEVSEL_TIMEOUT:-120}" "$W/devsel.log" env NODE="$NODE" APP="$APP" G="$G" RUN_DIR="$RUN_DIR" W="$W" \
    bash "$ROOT/tools/gpu-devsel.sh"
fi

# ---- adapter: shader-f16 and the subgroup-matrix (tensor core) configs Dawn exposes, with and without its toggles
if want adapter; then
  stage adapter "${ADAPTER_TIMEOUT:-60}" "$W/adapter.log" "$NODE" "$ROOT/tools/gpu-adapter.mjs" --json="$W/adapter.json"
fi

# ---- check: layer gradient checks on the backend vs cpu
if want check; then
  # shellcheck disable=SC2086
  stage check "${CHECK_TIMEOUT:-120}" "$OUT/check-gradients.txt" "$NODE" check-gradients.mjs --backend="$BACKEND" ${CHECK_ARGS:-}
fi

# ---- bench: training-step throughput, the profiled step's kernels
if want bench; then
  B=$W/bench-$BENCH_SIZE-b$BENCH_BATCH
  # shellcheck disable=SC2086
  stage bench "${BENCH_TIMEOUT:-240}" "$W/bench.log" "$NODE" train.mjs --backend="$BACKEND" --workers=1 \
    --image-size="$BENCH_SIZE" --batch-size="$BENCH_BATCH" --num-classes="$BENCH_CLASSES" --steps="$BENCH_STEPS" \
    --no-eval --profile-step="$BENCH_PROFILE" --out="$B" --log-every=1 ${BENCH_ARGS:-}
  # Summarise whatever steps were recorded, also after a failure or a timeout.
  "$NODE" "$ROOT/tools/gpu-summary.mjs" bench "$B" --from="${BENCH_FROM:-5}" --to="$BENCH_STEPS" --profile-step="$BENCH_PROFILE" --json="$OUT/bench.json" \
    || record bench-summary "failed(no-steps)"
fi

# ---- bench-f16: the bench run in f16 (plain f16 GEMMs with f32 accumulation, dynamic loss scaling)
if want bench-f16; then
  B=$W/bench-f16-$BENCH_SIZE-b$BENCH_BATCH
  # shellcheck disable=SC2086
  stage bench-f16 "${BENCH_F16_TIMEOUT:-240}" "$W/bench-f16.log" "$NODE" train.mjs --backend="$BACKEND" --workers=1 --precision=f16 \
    --image-size="$BENCH_SIZE" --batch-size="$BENCH_BATCH" --num-classes="$BENCH_CLASSES" --steps="$BENCH_STEPS" \
    --no-eval --profile-step="$BENCH_PROFILE" --out="$B" --log-every=1 ${BENCH_ARGS:-}
  "$NODE" "$ROOT/tools/gpu-summary.mjs" bench "$B" --from="${BENCH_FROM:-5}" --to="$BENCH_STEPS" --profile-step="$BENCH_PROFILE" --json="$W/bench-f16.json" \
    || record bench-f16-summary "failed(no-steps)"
fi
# f16.json: the adapter's f16 features and subgroup-matrix configs, and the f16 bench, whichever of them ran.
if want adapter || want bench-f16; then
  "$NODE" -e 'const fs = require("fs"); const r = (f) => { try { return JSON.parse(fs.readFileSync(f, "utf8")); } catch { return null; } };
    fs.writeFileSync(process.argv[1], JSON.stringify({ adapter: r(process.argv[2]), bench: r(process.argv[3]), backendLine: (fs.existsSync(process.argv[4]) ? fs.readFileSync(process.argv[4], "utf8") : "").split("\n").find((l) => l.includes("backend:")) ?? null }, null, 2) + "\n");' \
    "$OUT/f16.json" "$W/adapter.json" "$W/bench-f16.json" "$W/bench-f16.log" || record f16-json failed
fi

# ---- host: a training step on Dawn's null backend (commands validated, nothing executed): what the host side
# costs on this CPU, i.e. a ceiling whatever the GPU does. At 32 px batch 4: the null backend holds 512 MiB (no
# 224 px step), and the host cost is per dispatch, not per pixel (224 px batch 64: 1,246 dispatches, 32 px batch 4:
# 1,101). Steps 4 on replay a captured step (packages/model/src/webgpu-replay.ts): medians of steps 6-10; the same
# run with GOOGLENET_WEBGPU_REPLAY=0 (every step through tfjs) goes to the log and runs.tar.xz (ms.cpu: CPU ms).
if want host; then
  for mode in replay noreplay; do
    H=$W/host-32-b4-$mode
    json=$OUT/host.json; [ "$mode" = replay ] || json=$W/host-$mode.json
    GOOGLENET_WEBGPU_REPLAY=$([ "$mode" = replay ] && echo 1 || echo 0) DAWNNODE_BACKEND=null stage "host-$mode" "${HOST_TIMEOUT:-90}" "$W/host-$mode.log" \
      "$NODE" train.mjs --backend="$BACKEND" --workers=1 --image-size=32 --batch-size=4 --num-classes="$BENCH_CLASSES" --steps=10 --no-eval \
      --out="$H" --log-every=1
    "$NODE" "$ROOT/tools/gpu-summary.mjs" bench "$H" --from=6 --to=10 --json="$json" || record "host-$mode-summary" "failed(no-steps)"
  done
fi

# ---- train: accuracy, one worker vs several, synthetic data
if want train; then
  DIRS=()
  for w in $TRAIN_WORKERS; do
    # shellcheck disable=SC2086
    stage "train-w$w" "${TRAIN_TIMEOUT:-180}" "$W/train-w$w.log" "$NODE" train.mjs --backend="$BACKEND" --workers="$w" \
      --out="$W/w$w" $TRAIN_ARGS
    DIRS+=("$W/w$w")
  done
  "$NODE" "$ROOT/tools/gpu-summary.mjs" train "${DIRS[@]}" --json="$OUT/train.json" || record train-summary "failed(missing-summary)"
fi

# The run folders, without weights and checkpoints, as one file (only 8 files come back from $OUT).
tar cJf "$OUT/runs.tar.xz" -C "$W" --exclude='*.safetensors' --exclude=checkpoints . || record runs-tar failed

echo
say "recap:"
"$NODE" "$ROOT/tools/gpu-summary.mjs" recap "$OUT" | sed 's/^/  /'
if [ -f "$OUT/f16.json" ]; then
  say "f16:"
  "$NODE" -e 'const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); const a = d.adapter?.withToggles;
    console.log(`  shader-f16 ${a?.shaderF16 ?? "-"} (without toggles ${d.adapter?.withoutToggles?.shaderF16 ?? "-"}), subgroup-matrix ${a?.subgroupMatrix ?? "-"}, configs ${JSON.stringify(a?.subgroupMatrixConfigs ?? null)}`);
    console.log(`  bench f16: ${d.bench?.imgPerSec ?? "-"} img/s, GPU kernel time ${d.bench?.profile?.kernelMs ?? "-"} ms; ${d.backendLine ?? "no backend line"}`);' "$OUT/f16.json" || true
fi
say "stages:"
sed 's/^/  /' "$OUT/stages.txt"
if [ ${#FAILED[@]} -gt 0 ]; then say "not ok: ${FAILED[*]}"; exit 1; fi
say "all ok"
