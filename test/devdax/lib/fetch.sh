#!/usr/bin/env bash
# Fetches the guest's parts with `apt-get download` into $CACHE/debs and unpacks them into $CACHE/x.
# Nothing is installed on the host (dpkg -x only). Re-runs are no-ops while the stamp matches.
#
#   test/devdax/lib/fetch.sh CACHE_DIR       # prints the guest kernel release on stdout
set -euo pipefail
CACHE="${1:?usage: fetch.sh CACHE_DIR}"
DEBS="$CACHE/debs"
X="$CACHE/x"
log() { printf '[devdax:fetch] %s\n' "$*" >&2; }

# The kernel package is whatever Debian's linux-image-amd64 currently points at, so the recipe keeps
# working after point releases; DEVDAX_KERNEL_PKG pins it.
kpkg="${DEVDAX_KERNEL_PKG:-}"
if [[ -z "$kpkg" ]]; then
  if [[ -f "$CACHE/kernel-pkg" ]]; then
    kpkg="$(cat "$CACHE/kernel-pkg")"
  else
    kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
    if [[ -z "$kpkg" ]]; then
      log "apt-cache knows no linux-image-amd64; running apt-get update"
      apt-get update -qq >&2
      kpkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
    fi
  fi
fi
[[ -n "$kpkg" ]] || { log "FATAL: cannot resolve the Debian kernel package"; exit 1; }

PKGS=("$kpkg" busybox-static ndctl daxctl libndctl6 libdaxctl1 libkmod2 libjson-c5 libuuid1 libudev1 \
      libkeyutils1 libiniparser1)
stamp="${PKGS[*]}"
if [[ -f "$CACHE/fetch.stamp" && "$(cat "$CACHE/fetch.stamp")" == "$stamp" && -d "$X/boot" ]]; then
  log "cached: ${PKGS[*]}"
else
  mkdir -p "$DEBS"
  (
    cd "$DEBS"
    missing=()
    for p in "${PKGS[@]}"; do
      compgen -G "${p}_*.deb" >/dev/null || missing+=("$p")
    done
    if ((${#missing[@]})); then
      log "apt-get download ${missing[*]}"
      apt-get download "${missing[@]}" >&2 || { apt-get update -qq >&2 && apt-get download "${missing[@]}" >&2; }
    fi
  )
  rm -rf "$X"; mkdir -p "$X"
  for f in "$DEBS"/*.deb; do dpkg -x "$f" "$X"; done
  printf '%s\n' "$kpkg" >"$CACHE/kernel-pkg"
  printf '%s\n' "$stamp" >"$CACHE/fetch.stamp"
  log "unpacked into $X"
fi
ls "$X/lib/modules" | sed -n 1p
