# Sourced by the project's scripts: installs the Debian packages fgmoe needs
# when they are missing (apt-get only when something is missing).
fgmoe_packages=(
  build-essential cmake pkg-config
  nlohmann-json3-dev libstb-dev doctest-dev libopenblas-dev libopenblas-openmp-dev libturbojpeg0-dev
  libopenmpi-dev openmpi-bin
  libjpeg62-turbo-dev
  python3 python3-torch python3-torchvision python3-pil python3-numpy
)

fgmoe_ensure_packages() {
  local missing=()
  local pkg
  for pkg in "${fgmoe_packages[@]}" "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]})); then
    echo "fgmoe: installing missing packages: ${missing[*]}"
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
  # The CUDA toolkit is optional; use it when installed in the usual place.
  if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
}

fgmoe_build() {
  local jobs
  jobs=$(nproc)
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
  cmake --build build -j"$jobs"
}
