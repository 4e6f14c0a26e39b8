#!/usr/bin/env bash
# The CUDA backend's check on a machine with an NVIDIA GPU, in one command:
#   1. build for Hopper (CMAKE_CUDA_ARCHITECTURES=90, or $FGMOE_CUDA_ARCH),
#   2. tests: the CUDA tests, the trainer's GPU cases (and the CPU engine
#      tests) through ctest,
#   3. bench (FGMOE_GPU_BENCH=1): the whole-step comparison (soft_moe_32, batch
#      128: bf16 with fused (tensor-core), composite and CUDA-core attention, then bf16 and
#      fp32/TF32 against PyTorch eager and torch.compile, and the same replayed
#      from a whole-step CUDA graph (--cuda-graph)), each run's JSON and
#      output kept in the logs folder and its table printed at the end,
#   4. sanitizers: the CUDA tests under compute-sanitizer memcheck (with the
#      caching allocator off, so out-of-bounds accesses are not hidden in cached
#      blocks), racecheck and synccheck (shared-memory races, barriers),
# then print a one-line-per-step summary. Exit status 0 only when every step passed.
#
# Usage: tools/gpu_check.sh [build-dir]        (default: build-gpu)
# Environment:
#   FGMOE_GPU_STEPS="tests bench sanitizers"  the steps to run after the build
#       (default: tests and sanitizers, and bench with FGMOE_GPU_BENCH=1); a
#       second run in the same build folder rebuilds only what changed
#   FGMOE_GPU_BENCH_ONLY="graph fp32"  bench: only the runs whose name holds
#       one of these words (the names: "bf16 fused attention", "bf16 composite
#       attention", "bf16 CUDA-core attention", "bf16 against PyTorch", "bf16
#       CUDA graph against PyTorch", "fp32 TF32 against PyTorch", "fp32 TF32
#       CUDA graph"), to split the runs over calls with a time limit
#   FGMOE_SANITIZER_ARGS='--test-case=*attention*'  a doctest filter for the
#       sanitizer runs (one argument)
#   FGMOE_PYTHON=/path/python3  the Python with PyTorch for the bench's peer
#       (default: the python3 on PATH)
#   FGMOE_GPU_LOGS_ARCHIVE=FILE.tgz  also pack the logs folder into FILE.tgz
#   FGMOE_DEPS_DIR=DIR  on a machine without the build's Debian packages that
#       cannot install them: fetch them elsewhere with
#       `tools/offline_deps.sh download DIR` and bring DIR along
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

EXTRA_CMAKE_ARGS=()
if [ -n "${FGMOE_DEPS_DIR:-}" ]; then
  PREFIX="$BUILD/deps"
  tools/offline_deps.sh unpack "$FGMOE_DEPS_DIR" "$PREFIX"
  read -r -a EXTRA_CMAKE_ARGS <<<"$(tools/offline_deps.sh cmake-args "$PREFIX")"
  export LD_LIBRARY_PATH="$(tools/offline_deps.sh libpath "$PREFIX")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# NCCL: the CUDA toolkit's, else the one a Python install of PyTorch brings
# (the pip package nvidia-nccl-*: include/nccl.h, lib/libnccl.so.2).
NVCC_DIR=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")
if [ ! -f "$NVCC_DIR/../include/nccl.h" ]; then
  NCCL_DIR=$("${FGMOE_PYTHON:-python3}" -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)
  if [ -n "$NCCL_DIR" ] && [ -f "$NCCL_DIR/include/nccl.h" ] && [ -f "$NCCL_DIR/lib/libnccl.so.2" ]; then
    EXTRA_CMAKE_ARGS+=("-DNCCL_INCLUDE_DIR=$NCCL_DIR/include" "-DNCCL_LIBRARY=$NCCL_DIR/lib/libnccl.so.2")
    export LD_LIBRARY_PATH="$NCCL_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi

DEFAULT_STEPS="tests sanitizers"
[ "${FGMOE_GPU_BENCH:-0}" = 1 ] && DEFAULT_STEPS="tests bench sanitizers"
STEPS=" ${FGMOE_GPU_STEPS:-$DEFAULT_STEPS} "
wants() { [[ "$STEPS" == *" $1 "* ]]; }
PYTHON=${FGMOE_PYTHON:-$(command -v python3 || echo python3)}

TARGETS=(test_cuda test_engine test_train fgmoe-cuda-bench)
wants bench && TARGETS+=(fgmoe-bench)
step "configure" cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
  "${EXTRA_CMAKE_ARGS[@]}" &&
  step "build" cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}"
TEST_BIN="$BUILD/tests/cuda/test_cuda"
BENCH_LOGS=()
if [ $STATUS -eq 0 ] && wants tests; then
  # '^test_cuda:' and not '^test_cuda': the CUDA emulation's tests (test_cuda_emu*)
  # run on the CPU, in CI, and are not built here.
  step "ctest CUDA tests" ctest --test-dir "$BUILD" -R '^test_cuda:' --output-on-failure
  step "ctest trainer GPU cases" ctest --test-dir "$BUILD" -R '^test_train:.*GPU' --output-on-failure
  step "ctest CPU engine tests" ctest --test-dir "$BUILD" -R '^test_engine' --output-on-failure -j"$JOBS"
  # Every GPU test must have run, not skipped.
  for log in "$LOGS/ctest_CUDA_tests.log" "$LOGS/ctest_trainer_GPU_cases.log"; do
    if grep -q "FGMOE_SKIPPED" "$log" 2>/dev/null || grep -q "(Skipped)" "$log" 2>/dev/null; then
      SUMMARY+=("FAIL  $(basename "$log" .log): skipped, no GPU visible to the tests")
      STATUS=1
    fi
  done
fi
if [ $STATUS -eq 0 ] && wants bench; then
  BENCH=("$BUILD/fgmoe-bench" --device cuda --model soft_moe_32 --batch 128 --warmup 5 --steps 20)
  # The bf16 MFU target is defined against the H200's measured 790 TFLOP/s dense bf16 rate.
  BF16=(--precision bf16 --peak-tflops 790)
  PEER=(--compare-pytorch --compile --python "$PYTHON")
  bench() {  # bench NAME ARGS...: one fgmoe-bench run, its JSON beside its log
    local name=$1
    shift
    # FGMOE_GPU_BENCH_ONLY: run only the runs whose name holds one of these words.
    if [ -n "${FGMOE_GPU_BENCH_ONLY:-}" ]; then
      local word picked=0
      for word in $FGMOE_GPU_BENCH_ONLY; do [[ "$name" == *"$word"* ]] && picked=1; done
      [ $picked = 1 ] || return 0
    fi
    step "bench $name" "${BENCH[@]}" "$@" --json "$LOGS/bench_${name// /_}.json"
    BENCH_LOGS+=("$LOGS/bench_${name// /_}.log")
  }
  bench "bf16 fused attention" "${BF16[@]}" --breakdown
  bench "bf16 composite attention" "${BF16[@]}" --attention composite --breakdown
  bench "bf16 CUDA-core attention" "${BF16[@]}" --attention cuda-cores --breakdown
  bench "bf16 against PyTorch" "${BF16[@]}" "${PEER[@]}"
  # The CUDA-graph run meets torch.compile with CUDA graphs too (reduce-overhead).
  bench "bf16 CUDA graph against PyTorch" "${BF16[@]}" --cuda-graph "${PEER[@]}" --compile-mode reduce-overhead
  bench "fp32 TF32 against PyTorch" --precision fp32 "${PEER[@]}"
  bench "fp32 TF32 CUDA graph" --precision fp32 --cuda-graph
fi
if [ $STATUS -eq 0 ] && wants sanitizers; then
  SANITIZER=$(command -v compute-sanitizer || true)
  [ -z "$SANITIZER" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SANITIZER=/usr/local/cuda/bin/compute-sanitizer
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
fi

# The bench tables (the lines from the table's header on), whatever the status.
for log in "${BENCH_LOGS[@]}"; do
  [ -f "$log" ] || continue
  echo
  echo "---- $(basename "$log" .log)"
  sed -n '/images\/s/,$p' "$log" | head -n 40
done

echo
echo "==== fgmoe GPU check ($(date -u +%Y-%m-%dT%H:%MZ), sm_$ARCH) ===="
for line in "${SUMMARY[@]}"; do echo "$line"; done
for tool in memcheck racecheck synccheck; do
  log="$LOGS/compute-sanitizer_$tool.log"
  [ -f "$log" ] && grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -n 1 | sed "s/^/      $tool: /"
done
if [ -n "${FGMOE_GPU_LOGS_ARCHIVE:-}" ]; then
  tar czf "$FGMOE_GPU_LOGS_ARCHIVE" -C "$BUILD" gpu_check_logs && echo "logs packed into $FGMOE_GPU_LOGS_ARCHIVE"
fi
exit $STATUS
