#!/usr/bin/env bash
# The whole test suite under AddressSanitizer and UBSan (GCC): builds into
# build-asan/ without the CUDA backend, runs every test through ctest (invalid
# memory accesses and undefined behaviour fail the test they happen in), then
# runs each unit-test binary again with LeakSanitizer. Leak checking stays off
# for the ctest pass: Open MPI's plugins leave allocations at exit that cannot
# be told apart from fgmoe's (they are unloaded before the report). Where the
# CUDA toolkit is installed, the CUDA kernels' host emulation tests
# (tests/cuda_emu: every kernel fgmoe writes, against the CPU backend) build in
# build-asan-emu/ and run too: an index out of bounds in a kernel shows here
# without a GPU.
# About 25 minutes on two cores, most of it the build.
#
#   tools/sanitize.sh [ctest arguments, e.g. -R test_data]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/deps.sh
fgmoe_ensure_packages
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFGMOE_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-asan -j"$(nproc)"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
(cd build-asan && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  ctest --output-on-failure -j"$(nproc)" --timeout 1800 "$@")
status=0
while IFS= read -r binary; do
  echo "== leaks: $binary"
  ASAN_OPTIONS=detect_leaks=1 "$binary" --minimal || status=1
done < <(find build-asan/tests -type f -executable -name 'test_*' | sort)
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  cmake -S . -B build-asan-emu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFGMOE_CUDA=ON \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
  cmake --build build-asan-emu -j"$(nproc)" --target test_cuda_emu test_cuda_emu_kernels
  for binary in build-asan-emu/tests/cuda_emu/test_cuda_emu build-asan-emu/tests/cuda_emu/test_cuda_emu_kernels; do
    echo "== CUDA emulation: $binary"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "$binary" --minimal || status=1
  done
else
  echo "== no CUDA toolkit: the CUDA emulation tests were not run"
fi
exit $status
