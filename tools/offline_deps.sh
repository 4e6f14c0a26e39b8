#!/usr/bin/env bash
# Build dependencies for a machine that cannot install packages (an offline GPU
# machine): download the Debian packages here, carry the folder there, unpack
# them into a private prefix (never into /) and point CMake at it.
#
#   tools/offline_deps.sh download DIR        # here: apt-get download into DIR
#   tools/offline_deps.sh unpack DIR PREFIX   # there: dpkg -x every DIR/*.deb into PREFIX
#   tools/offline_deps.sh cmake-args PREFIX   # prints the -D options for cmake
#   tools/offline_deps.sh libpath PREFIX      # prints the LD_LIBRARY_PATH entries
#
# tools/gpu_check.sh does the last three itself when FGMOE_DEPS_DIR is set.
set -euo pipefail
# Everything the build needs beyond a compiler, CMake, OpenMP and the CUDA
# toolkit: tests (doctest), BLAS, JPEG decoding and encoding, stb, JSON.
PACKAGES=(doctest-dev libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0
          libturbojpeg0 libturbojpeg0-dev libjpeg62-turbo libjpeg62-turbo-dev libstb0 libstb-dev
          nlohmann-json3-dev)
ARCH_DIR=x86_64-linux-gnu

case "${1:-}" in
  download)
    mkdir -p "$2"
    (cd "$2" && apt-get download "${PACKAGES[@]}")
    ;;
  unpack)
    mkdir -p "$3"
    for deb in "$2"/*.deb; do dpkg -x "$deb" "$3"; done
    ;;
  cmake-args)
    p=$(cd "$2" && pwd)
    # The prefix first for every find_*(); the explicit paths pin the packages
    # whose system copy would otherwise win (OpenBLAS's OpenMP build, cblas.h).
    echo "-DCMAKE_PREFIX_PATH=$p/usr" \
         "-Ddoctest_DIR=$p/usr/lib/cmake/doctest -DDOCTEST_INCLUDE_DIR=$p/usr/include" \
         "-DOPENBLAS_LIBRARY=$p/usr/lib/$ARCH_DIR/openblas-openmp/libopenblas.so" \
         "-DCBLAS_INCLUDE_DIR=$p/usr/include/$ARCH_DIR/openblas-openmp"
    ;;
  libpath)
    p=$(cd "$2" && pwd)
    echo "$p/usr/lib/$ARCH_DIR/openblas-openmp:$p/usr/lib/$ARCH_DIR"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
