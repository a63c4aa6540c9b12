#!/usr/bin/env bash
# Builds the kernel's sample mdev parent drivers (samples/vfio-mdev/mtty.c and mbochs.c) for the
# VM's kernel KVER into OUTDIR, without installing anything: linux-source-6.1 and the headers of
# exactly KVER (with their -common part and linux-kbuild) are fetched with apt-get download and
# unpacked with dpkg -x into OUTDIR, and only the two sources are taken from the tarball. The
# sources are never copied into the repository. Cached: a second run for KVER does nothing.
# Writes OUTDIR/samples.env (KVER, MTTY, MBOCHS) and prints it.
set -euo pipefail

out=${1:?usage: prepare_mdev_samples.sh OUTDIR KVER}
kver=${2:?usage: prepare_mdev_samples.sh OUTDIR KVER}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [[ -f $out/samples.env ]] && grep -qx "KVER=$kver" "$out/samples.env" \
   && [[ -f $out/build/mtty.ko && -f $out/build/mbochs.ko ]]; then
  cat "$out/samples.env"
  exit 0
fi
rm -rf "$out/root" "$out/build" "$out/download" "$out/samples.env"

headers=linux-headers-$kver
# The headers' own dependencies name the -common part and linux-kbuild of the same version.
deps=$(apt-cache depends "$headers" | sed -n 's/^ *Depends: \(linux-\(headers\|kbuild\)-[^ ]*\)$/\1/p')
[[ -n $deps ]] || { echo "prepare_mdev_samples: no package $headers" >&2; exit 1; }
mkdir "$out/download"
if id _apt >/dev/null 2>&1; then chown _apt "$out/download"; fi
fetch() { (cd "$out/download" && apt-get download -qq "$@"); }
# shellcheck disable=SC2086
if ! fetch "$headers" $deps linux-source-6.1; then
  apt-get update -qq
  fetch "$headers" $deps linux-source-6.1
fi

mkdir -p "$out/root" "$out/build"
for deb in "$out"/download/linux-headers-*.deb "$out"/download/linux-kbuild-*.deb; do
  dpkg -x "$deb" "$out/root"
done
# The arch part includes the -common part by its installed path: point it at ours.
sed -i "s|include /usr/src/|include $out/root/usr/src/|" "$out/root/usr/src/$headers/Makefile"
dpkg-deb --fsys-tarfile "$out"/download/linux-source-6.1_*.deb \
  | tar -xO ./usr/src/linux-source-6.1.tar.xz | xz -dc \
  | tar -x -C "$out/build" --strip-components=3 \
      linux-source-6.1/samples/vfio-mdev/mtty.c linux-source-6.1/samples/vfio-mdev/mbochs.c
echo 'obj-m := mtty.o mbochs.o' >"$out/build/Kbuild"
make -s -C "$out/root/usr/src/$headers" M="$out/build" modules 2>&1 | grep -v '^Skipping BTF' || true
[[ -f $out/build/mtty.ko && -f $out/build/mbochs.ko ]] \
  || { echo "prepare_mdev_samples: the modules did not build" >&2; exit 1; }
rm -rf "$out/download" "$out/root"

cat >"$out/samples.env" <<ENV
KVER=$kver
MTTY=$out/build/mtty.ko
MBOCHS=$out/build/mbochs.ko
ENV
cat "$out/samples.env"
