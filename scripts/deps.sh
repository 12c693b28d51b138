#!/usr/bin/env bash
# Installs the Debian packages the project's build, tests and benches use, each only when missing.
# The one list of them: a script or test that calls a new tool adds its package here.
#
#   scripts/deps.sh build      # npm install: the native addon (libfuse3, pkg-config) and node-gyp (python3)
#   scripts/deps.sh test       # npm test: what the tests call (python3, mount tools, openssl, FUSE, ...)
#   scripts/deps.sh devdax     # the devdax tier (test/devdax/run.sh): qemu, cpio, kmod, a static C build
#   scripts/deps.sh bench      # npm run bench: fio
#   scripts/deps.sh lint       # npm run lint / npm run format: clang-format for native/
#   scripts/deps.sh cluster    # npm run cluster and the real-node tier: containerd, runc, CNI, image building
#   scripts/deps.sh --list GROUP...   # print the packages, install nothing
#
# Needs root only when something is missing (then it runs apt-get install, and apt-get update once if
# the package lists do not know a package: a new machine may have none). Not root and something
# missing: says what to install and exits 1. The machine itself is expected to ship Node.js 20 with
# npm, Go (for the Go tools, scripts/tools.sh), gcc/g++/make and git.
set -euo pipefail

pkgs_build=(libfuse3-dev fuse3 pkg-config python3 make g++)
# python3: os.getxattr/mkfifo/mmap probes in the FUSE and node tests; mount/util-linux: mount, umount,
# unshare, setpriv; openssl: the test cluster's certificates (scripts/k8s-cluster.sh); curl: its
# readiness probe; procps: ps/kill in cleanup paths; diffutils: cmp in the devdax host agent.
pkgs_test=(python3 fuse3 mount util-linux coreutils openssl curl procps diffutils)
# qemu runs the guests; cpio packs the initramfs; kmod's depmod/modprobe resolve the guest kernel's
# modules; gcc + libc6-dev build the static daxio helper; ldd (libc-bin) lists the libraries to copy.
pkgs_devdax=(qemu-system-x86 cpio kmod gcc libc6-dev libc-bin)
pkgs_bench=(fio)
pkgs_lint=(clang-format)
# containerd/runc/CNI plugins run the nodes; debootstrap and busybox-static build the images; gcc +
# libc6-dev build the static pause program; iproute2 and openssl for the node set-up and certificates.
pkgs_cluster=(containerd runc containernetworking-plugins debootstrap busybox-static openssl util-linux iproute2 gcc libc6-dev)

log() { printf '[deps] %s\n' "$*" >&2; }

list_of() {
  local g="$1"
  case "$g" in
    build) printf '%s\n' "${pkgs_build[@]}" ;;
    test) printf '%s\n' "${pkgs_test[@]}" ;;
    devdax) printf '%s\n' "${pkgs_devdax[@]}" ;;
    bench) printf '%s\n' "${pkgs_bench[@]}" ;;
    lint) printf '%s\n' "${pkgs_lint[@]}" ;;
    cluster) printf '%s\n' "${pkgs_cluster[@]}" ;;
    *) log "unknown group $g (build, test, devdax, bench, lint, cluster)"; return 2 ;;
  esac
}

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

main() {
  local listing=0
  if [[ "${1:-}" == --list ]]; then listing=1; shift; fi
  (($#)) || set -- build test
  local want=()
  for g in "$@"; do
    mapfile -t -O "${#want[@]}" want < <(list_of "$g")
  done
  if ((listing)); then printf '%s\n' "${want[@]}" | sort -u; return 0; fi
  if ! command -v dpkg-query >/dev/null; then
    log "not a Debian system: install the equivalents of ${want[*]} by hand"
    return 0
  fi
  local missing=()
  for p in $(printf '%s\n' "${want[@]}" | sort -u); do
    installed "$p" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ "$(id -u)" != 0 ]]; then
    log "missing Debian packages: ${missing[*]}"
    log "install them as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    return 1
  fi
  log "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    log "apt-get install failed; updating the package lists and trying again"
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
  for p in "${missing[@]}"; do
    installed "$p" || { log "$p is still not installed"; return 1; }
  done
}

main "$@"
