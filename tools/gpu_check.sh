#!/usr/bin/env bash
# The CUDA backend's check on a machine with an NVIDIA GPU, in one command:
#   1. build for Hopper (CMAKE_CUDA_ARCHITECTURES=90, or $FGMOE_CUDA_ARCH),
#   2. run the CUDA tests (and the CPU engine tests) through ctest,
#   3. run the CUDA tests under compute-sanitizer memcheck (with the caching
#      allocator off, so out-of-bounds accesses are not hidden in cached blocks)
#      and racecheck (shared-memory races),
# then print a one-line-per-step summary. Exit status 0 only when every step passed.
#
# Usage: tools/gpu_check.sh [build-dir]        (default: build-gpu)
# A doctest filter for the sanitizer runs (one argument):
#   FGMOE_SANITIZER_ARGS='--test-case=*attention*' tools/gpu_check.sh
# FGMOE_GPU_BENCH=1 also builds fgmoe-bench and runs the whole-step comparison
# (soft_moe_32, batch 128: bf16 with fused and with composite attention, then
# bf16 and fp32/TF32 against PyTorch eager and torch.compile), each run's JSON
# and output kept in the logs folder.
# On a machine without doctest and OpenBLAS that cannot install packages, fetch
# them elsewhere with `tools/offline_deps.sh download DIR`, bring DIR along and
# run with FGMOE_DEPS_DIR=DIR.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=${1:-build-gpu}
ARCH=${FGMOE_CUDA_ARCH:-90}
JOBS=$(nproc)
LOGS="$BUILD/gpu_check_logs"
declare -a SUMMARY=()
STATUS=0

step() {  # step NAME COMMAND...: runs, logs, records PASS/FAIL with the time taken
  local name=$1
  shift
  local log="$LOGS/${name// /_}.log" start end rc
  start=$(date +%s)
  "$@" >"$log" 2>&1
  rc=$?
  end=$(date +%s)
  if [ $rc -eq 0 ]; then
    SUMMARY+=("PASS  $name ($((end - start)) s)")
  else
    SUMMARY+=("FAIL  $name ($((end - start)) s, exit $rc): see $log")
    STATUS=1
    tail -n 40 "$log"
  fi
  return $rc
}

mkdir -p "$LOGS"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
  echo "nvidia-smi not found: is this a GPU machine?"
fi

SANITIZER=$(command -v compute-sanitizer || true)
[ -z "$SANITIZER" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SANITIZER=/usr/local/cuda/bin/compute-sanitizer

EXTRA_CMAKE_ARGS=()
if [ -n "${FGMOE_DEPS_DIR:-}" ]; then
  PREFIX="$BUILD/deps"
  tools/offline_deps.sh unpack "$FGMOE_DEPS_DIR" "$PREFIX"
  read -r -a EXTRA_CMAKE_ARGS <<<"$(tools/offline_deps.sh cmake-args "$PREFIX")"
  export LD_LIBRARY_PATH="$(tools/offline_deps.sh libpath "$PREFIX")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

step "configure" cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
  "${EXTRA_CMAKE_ARGS[@]}" &&
  step "build" cmake --build "$BUILD" -j"$JOBS" --target test_cuda test_engine fgmoe-cuda-bench
if [ $STATUS -eq 0 ]; then
  TEST_BIN="$BUILD/tests/cuda/test_cuda"
  step "ctest CUDA tests" ctest --test-dir "$BUILD" -R '^test_cuda' --output-on-failure
  step "ctest CPU engine tests" ctest --test-dir "$BUILD" -R '^test_engine' --output-on-failure -j"$JOBS"
  # Every GPU test must have run, not skipped.
  if grep -q "FGMOE_SKIPPED" "$LOGS/ctest_CUDA_tests.log" 2>/dev/null ||
     grep -q "(Skipped)" "$LOGS/ctest_CUDA_tests.log" 2>/dev/null; then
    SUMMARY+=("FAIL  CUDA tests were skipped: no GPU visible to the tests")
    STATUS=1
  fi
  if [ -n "$SANITIZER" ]; then
    # Arrays keep the doctest filters' '*' and spaces away from the shell.
    ALL_TESTS=()
    # Shared memory and barriers appear only in these kernels; racecheck is slow.
    SHARED_MEMORY_TESTS=('--test-case=*attention*,*softmax*,*layer_norm*,*max and min*,*AdamW*')
    if [ -n "${FGMOE_SANITIZER_ARGS:-}" ]; then
      ALL_TESTS=("$FGMOE_SANITIZER_ARGS")
      SHARED_MEMORY_TESTS=("$FGMOE_SANITIZER_ARGS")
    fi
    step "compute-sanitizer memcheck" env FGMOE_CUDA_EXACT_ALLOC=1 "$SANITIZER" --tool memcheck \
      --error-exitcode 97 --leak-check no "$TEST_BIN" "${ALL_TESTS[@]}"
    step "compute-sanitizer racecheck" "$SANITIZER" --tool racecheck --error-exitcode 98 \
      "$TEST_BIN" "${SHARED_MEMORY_TESTS[@]}"
    step "compute-sanitizer synccheck" "$SANITIZER" --tool synccheck --error-exitcode 99 \
      "$TEST_BIN" "${SHARED_MEMORY_TESTS[@]}"
  else
    SUMMARY+=("FAIL  compute-sanitizer not found (PATH, /usr/local/cuda/bin)")
    STATUS=1
  fi
  if [ "${FGMOE_GPU_BENCH:-0}" = 1 ] && step "build fgmoe-bench" cmake --build "$BUILD" -j"$JOBS" --target fgmoe-bench; then
    BENCH=("$BUILD/fgmoe-bench" --device cuda --model soft_moe_32 --batch 128 --warmup 5 --steps 20)
    # The bf16 MFU target is defined against the H200's measured 790 TFLOP/s dense bf16 rate.
    BF16=(--precision bf16 --peak-tflops 790)
    step "bench bf16 fused attention" "${BENCH[@]}" "${BF16[@]}" --breakdown --json "$LOGS/bench_bf16_fused.json"
    step "bench bf16 composite attention" "${BENCH[@]}" "${BF16[@]}" --attention composite --json "$LOGS/bench_bf16_composite.json"
    step "bench bf16 against PyTorch" "${BENCH[@]}" "${BF16[@]}" --compare-pytorch --compile --json "$LOGS/bench_bf16_pytorch.json"
    step "bench fp32 (TF32) against PyTorch" "${BENCH[@]}" --precision fp32 --compare-pytorch --compile --json "$LOGS/bench_fp32_pytorch.json"
  fi
fi

echo
echo "==== fgmoe GPU check ($(date -u +%Y-%m-%dT%H:%MZ), sm_$ARCH) ===="
for line in "${SUMMARY[@]}"; do echo "$line"; done
for tool in memcheck racecheck synccheck; do
  log="$LOGS/compute-sanitizer_$tool.log"
  [ -f "$log" ] && grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -n 1 | sed "s/^/      $tool: /"
done
exit $STATUS
