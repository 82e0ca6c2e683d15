#!/usr/bin/env bash
# gpu-run.sh's devsel stage: does Mesa's device-select Vulkan layer give a worker the GPU it is pinned to?
# Run by gpu-run.sh (which exports NODE, APP, G, RUN_DIR, W); alone: NODE=... APP=... G=.gpu RUN_DIR=/tmp W=/tmp/gpu-runs.
# The layer comes from .gpu/device-select.tar.xz (gpu-pack.mjs); the libraries it links come from there only
# where this machine lacks them. Checks, each a short training run of the bundled trainer:
#   pinned     DRI_PRIME=<GPU 0's address>: the backend line names that address as the layer reports it (exit 0)
#   gpus0      --gpus=0: the backend line names GPU 0 (pinned by DRI_PRIME where the machine has several GPUs)
#   no-match   DRI_PRIME=pci-0000_fe_1f_7 (no such device): GPU_NOT_ISOLATED, not a run on another device
#   disabled   NODEVICE_SELECT=1 with a pin: GPU_NOT_ISOLATED (the layer is off, nothing could isolate the GPU)
#   missing    --gpus=<one past the last GPU>: GPU_NOT_FOUND naming it
# Without nvidia-smi (a dry run on lavapipe) `pinned` and `gpus0` are skipped and the others still run.
set -u
: "${NODE:?} ${APP:?} ${G:?} ${RUN_DIR:?} ${W:?}"
DS=$RUN_DIR/device-select
FAILS=0
say() { echo "[devsel] $*"; }
check() { # check NAME RESULT: RESULT is ok or why not; failures are counted
  if [ "$2" = ok ]; then say "$1: ok"; else say "$1: FAILED ($2)"; FAILS=$((FAILS + 1)); fi
}

rm -rf "$DS" && tar xJf "$G/device-select.tar.xz" -C "$RUN_DIR" || { say "cannot unpack $G/device-select.tar.xz: run node tools/gpu-pack.mjs"; exit 2; }
LAYER=$DS/lib/libVkLayer_MESA_device_select.so
mkdir -p "$DS/lib/missing"
export LD_LIBRARY_PATH=$DS/lib/missing${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for _ in 1 2 3; do # link what ldd cannot find (again for what those need)
  missing=$(ldd "$LAYER" | awk '/not found/ {print $1}')
  [ -z "$missing" ] && break
  for lib in $missing; do ln -sf "$DS/lib/deps/$lib" "$DS/lib/missing/$lib"; done
done
say "libraries taken from the pack: $(ls "$DS/lib/missing" | tr '\n' ' ')"
ldd "$LAYER" | grep 'not found' && { say "the layer still misses libraries"; exit 2; }
export XDG_DATA_DIRS=$DS/share:${XDG_DATA_DIRS:-/usr/local/share:/usr/share}

probe="const { create } = await import('webgpu'); const a = await create([]).requestAdapter(); console.log(a ? 'adapter' : 'no adapter');"
say "what the layer sees (MESA_VK_DEVICE_SELECT=list):"
(cd "$APP" && MESA_VK_DEVICE_SELECT=list "$NODE" --input-type=module -e "$probe" 2>&1 | grep -v '^Warning: max' | head -20)

# run NAME "VAR=VALUE ..." [FLAG...]: a 2-step training run at 32 px on webgpu with those variables and extra
# flags; its output goes to $W/devsel-NAME.log; sets RC and OUTPUT.
run() {
  local name=$1 vars=$2; shift 2
  # shellcheck disable=SC2086
  OUTPUT=$(set -f; cd "$APP" && timeout -k 5 60 env $vars "$NODE" train.mjs --backend=webgpu --workers=1 --steps=2 --image-size=32 \
    --batch-size=4 --synthetic-size=64,32 --no-eval --log-every=1 --out="$W/devsel-$name" "$@" 2>&1)
  RC=$?
  printf '%s\n' "$OUTPUT" >"$W/devsel-$name.log"
  printf '%s\n' "$OUTPUT" | grep -E 'backend:|error' | head -3 | cut -c1-400 | sed "s/^/  $name: /"
}

COUNT=0
if command -v nvidia-smi >/dev/null && SMI=$(nvidia-smi --query-gpu=index,pci.bus_id,name --format=csv,noheader 2>&1); then
  say "nvidia-smi: $(printf '%s' "$SMI" | tr '\n' ';')"
  COUNT=$(printf '%s\n' "$SMI" | grep -c '^[0-9]')
  # GPU 0's address in Linux's spelling: nvidia-smi's 8-digit domain as 4 digits, lowercase.
  PCI0=$(printf '%s\n' "$SMI" | awk -F', *' '$1 == "0" {print tolower($2)}' | sed -E 's/^0*([0-9a-f]{4}):/\1:/')
  run pinned "DRI_PRIME=pci-$(printf '%s' "$PCI0" | tr ':.' '__') MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1 VK_LOADER_DRIVERS_SELECT=nvidia*"
  if [ "$RC" = 0 ] && printf '%s' "$OUTPUT" | grep -q "at PCI $PCI0"; then check pinned ok
  else check pinned "exit $RC; expected a backend line naming PCI $PCI0: see $W/devsel-pinned.log"; fi
  # --gpus=0: with several GPUs the launcher's pin (DRI_PRIME), with one only the driver filter.
  run gpus0 "" --gpus=0
  if [ "$RC" = 0 ] && printf '%s' "$OUTPUT" | grep -q "(GPU 0, "; then check gpus0 ok
  else check gpus0 "exit $RC; expected a backend line naming GPU 0: see $W/devsel-gpus0.log"; fi
else
  say "pinned, gpus0: skipped (no nvidia-smi here: a dry run)"
fi

run no-match "DRI_PRIME=pci-0000_fe_1f_7 MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1"
if [ "$RC" != 0 ] && printf '%s' "$OUTPUT" | grep -q 'GPU_NOT_ISOLATED.*no Vulkan device is at that address'; then check no-match ok
else check no-match "exit $RC; expected GPU_NOT_ISOLATED: see $W/devsel-no-match.log"; fi

run disabled "NODEVICE_SELECT=1 DRI_PRIME=pci-0000_fe_1f_7 MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1"
if [ "$RC" != 0 ] && printf '%s' "$OUTPUT" | grep -q 'GPU_NOT_ISOLATED.*NODEVICE_SELECT=1'; then check disabled ok
else check disabled "exit $RC; expected GPU_NOT_ISOLATED naming NODEVICE_SELECT: see $W/devsel-disabled.log"; fi

run missing "" --gpus="$COUNT"
if [ "$RC" != 0 ] && printf '%s' "$OUTPUT" | grep -q "GPU_NOT_FOUND.*asks for GPU $COUNT"; then check missing ok
else check missing "exit $RC; expected GPU_NOT_FOUND for GPU $COUNT: see $W/devsel-missing.log"; fi

[ "$FAILS" = 0 ] || { say "$FAILS check(s) failed"; exit 1; }
say "all checks passed"
