#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds into build/ and runs
# every test through ctest (GPU tests report themselves skipped without a GPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/deps.sh
fgmoe_ensure_packages
fgmoe_build
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 1200
