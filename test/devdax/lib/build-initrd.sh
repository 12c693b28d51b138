#!/usr/bin/env bash
# Builds the guests' initramfs: busybox, the nvdimm/dax/9p/fuse modules of the fetched Debian kernel,
# ndctl/daxctl, the host's Node.js, fusermount3, and every shared library those (and the project's
# native addon) load. The project itself is not packed: the guests mount the checkout over 9p.
#
#   test/devdax/lib/build-initrd.sh CACHE_DIR KVER PROJECT_DIR OUT.cpio
#
# The image is left uncompressed: the guest kernel only copies it, which is faster under
# emulation than inflating ~110 MB, and qemu loads it from the page cache.
set -euo pipefail
CACHE="${1:?}"; KVER="${2:?}"; PROJ="${3:?}"; OUT="${4:?}"
X="$CACHE/x"
ROOT="$(mktemp -d "$CACHE/initrd-root.XXXXXX")"
trap 'rm -rf "$ROOT"' EXIT
log() { printf '[devdax:initrd] %s\n' "$*" >&2; }

mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,run,mnt,etc}
ln -s lib "$ROOT/usr/lib" 2>/dev/null || true
cp "$X/bin/busybox" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [[ -e "$ROOT/bin/$applet" ]] || ln -s busybox "$ROOT/bin/$applet"
done

# Kernel modules, with their dependencies resolved by the host's kmod against the fetched tree.
MODS=(nfit libnvdimm nd_pmem nd_btt dax_pmem device_dax kmem
      virtio_pci 9pnet_virtio 9p fuse)
[[ -f "$X/lib/modules/$KVER/modules.dep" ]] || depmod -b "$X" "$KVER"
for m in "${MODS[@]}"; do
  modprobe -d "$X" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r ko; do
  rel="${ko#"$X"/}"
  mkdir -p "$ROOT/$(dirname "$rel")"
  cp "$ko" "$ROOT/$rel"
done
cp "$X/lib/modules/$KVER"/modules.{builtin,builtin.modinfo,order} "$ROOT/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$ROOT" "$KVER"

# Binaries and their libraries. Libraries come from the fetched debs first, then the host (same Debian).
BINS=("$X/usr/bin/ndctl" "$X/usr/bin/daxctl" /usr/bin/node)
cp "$X/usr/bin/ndctl" "$X/usr/bin/daxctl" "$ROOT/usr/bin/"
cp /usr/bin/node "$ROOT/usr/bin/node"
if command -v fusermount3 >/dev/null; then
  cp "$(command -v fusermount3)" "$ROOT/usr/bin/"; BINS+=("$(command -v fusermount3)")
  ln -s fusermount3 "$ROOT/usr/bin/fusermount"
fi
shopt -s nullglob
for addon in "$PROJ"/build/Release/*.node; do BINS+=("$addon"); done
# libfuse3 even if the addon is not built yet: the FUSE server will want it.
EXTRA_LIBS=(/usr/lib/x86_64-linux-gnu/libfuse3.so.3)
LIBPATH="$X/usr/lib/x86_64-linux-gnu:$X/lib/x86_64-linux-gnu"
{
  for b in "${BINS[@]}" "${EXTRA_LIBS[@]}"; do
    LD_LIBRARY_PATH="$LIBPATH" ldd "$b" | awk '/=> \// {print $3} /^\s*\/lib64/ {print $1}'
  done
  printf '%s\n' "${EXTRA_LIBS[@]}"
} | sort -u | while read -r lib; do
  [[ -e "$lib" ]] || continue
  cp -L "$lib" "$ROOT/lib/$(basename "$lib")"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"
# One flat lib dir; the loader finds it through ld.so.cache-less default paths plus this link.
mkdir -p "$ROOT/lib/x86_64-linux-gnu"
for l in "$ROOT"/lib/*.so*; do ln -sf "../$(basename "$l")" "$ROOT/lib/x86_64-linux-gnu/$(basename "$l")"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
: >"$ROOT/etc/fuse.conf"
mkdir -p "$ROOT/etc/ssl"

gcc -O2 -Wall -Wextra -static -o "$ROOT/usr/bin/daxio" "$PROJ/test/devdax/guest/daxio.c"
install -m 0755 "$PROJ/test/devdax/guest/init" "$ROOT/init"

( cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet ) >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "$(du -h "$OUT" | cut -f1) $OUT ($(find "$ROOT" -name '*.ko' | wc -l) modules)"
