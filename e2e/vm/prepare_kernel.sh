#!/usr/bin/env bash
# Fetches the stock Debian kernel (the package linux-image-amd64 depends on) into OUTDIR without
# installing it: apt-get download + dpkg -x, then depmod -b so busybox modprobe works in the guest.
# Cached: a second run for the same kernel version does nothing.
# Writes OUTDIR/kernel.env (KVER, VMLINUZ, MODROOT) and prints it.
set -euo pipefail

out=${1:?usage: prepare_kernel.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# e.g. "linux-image-6.1.0-56-amd64"; the kernel version is the package name minus the prefix.
pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)
[[ -n $pkg ]] || { echo "prepare_kernel: linux-image-amd64 has no linux-image dependency" >&2; exit 1; }
kver=${pkg#linux-image-}
root=$out/root

if [[ -f $out/kernel.env ]] && grep -qx "KVER=$kver" "$out/kernel.env" \
   && [[ -f $root/boot/vmlinuz-$kver && -f $root/lib/modules/$kver/modules.dep ]]; then
  cat "$out/kernel.env"
  exit 0
fi

rm -rf "$root" "$out/kernel.env" "$out/download"
# apt-get download writes into the current directory, which apt's unprivileged _apt user must
# be able to write. Only refresh the package lists when the download fails (stale lists name a
# version the mirror no longer has).
mkdir "$out/download"
if id _apt >/dev/null 2>&1; then chown _apt "$out/download"; fi
if ! (cd "$out/download" && apt-get download -qq "$pkg"); then
  apt-get update -qq
  (cd "$out/download" && apt-get download -qq "$pkg")
fi
mkdir -p "$root"
dpkg -x "$out/download/${pkg}"_*.deb "$root"
rm -rf "$out/download"
depmod -b "$root" "$kver"

cat > "$out/kernel.env" <<ENV
KVER=$kver
VMLINUZ=$root/boot/vmlinuz-$kver
MODROOT=$root
ENV
cat "$out/kernel.env"
