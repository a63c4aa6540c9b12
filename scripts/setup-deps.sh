#!/usr/bin/env bash
# Installs the Debian packages pcidevices needs to build, run and test, only those missing.
# Debian packages only: nothing is fetched from anywhere else.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libudev-dev libusb-1.0-0-dev libsimdjson-dev libcpp-httplib-dev libssl-dev
  libspdlog-dev libfmt-dev libboost-test-dev libabsl-dev
  pci.ids usb.ids pciutils usbutils umockdev libumockdev-dev python3
  qemu-system-x86 busybox-static kmod cpio e2fsprogs
  openssl python3-prometheus-client
  podman runc  # e2e_dra runs its CDI specs through podman (runc: crun refuses some cgroup set-ups)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup-deps: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup-deps: all packages present" >&2
fi
