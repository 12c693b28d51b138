#!/usr/bin/env bash
# Proves that a fresh machine passes the README's set-up exactly as written:
#
#     npm install      then      npm test
#
# in a clean Debian 12 (bookworm) root built by debootstrap, holding only what a new machine of this
# project's kind ships before anyone touches it: Debian's base system, gcc/g++/make (build-essential),
# cmake, git and ca-certificates, plus this machine's own Node.js + npm and Go toolchains copied in (a
# new machine has the same ones preinstalled). Nothing else: every other package a script or a test
# needs must be installed by the project's own scripts, or the run fails here.
#
#   scripts/fresh-machine-check.sh [--repo PATH] [--ref REF] [--keep] [--rebuild-base] [--timeout MIN]
#
#   --repo PATH      the git repository to clone (default: the one holding this script)
#   --ref REF        the commit to test (default: HEAD of --repo; only committed work is tested)
#   --keep           keep the run's root file system (default: removed, the log is kept)
#   --rebuild-base   rebuild the cached debootstrap root
#   --timeout MIN    stop the run after MIN minutes (default 180); CI's own limit is 90 minutes
#   --seed-go-tools  NOT a fresh machine: copy this checkout's built Go tools (.cache/tools) into the
#                    clone, to check the rest quickly; the result says so
#
# To stop a run early: kill -KILL the `unshare` process it started (it passes the kill on to every
# process of the run through --kill-child; it does not react to SIGTERM while it waits).
#
# Cache: .cache/fresh-machine/base (the debootstrap root, built once, about 5 minutes), then each run
# copies it to .cache/fresh-machine/runs/<id>/root, clones the repository to /work/famfs-csi in it with
# a read-only copy of ../shared beside it (as CI lays them), empties apt's package lists (a new machine
# may have none), and runs the two commands as root with CI=true. Log: .cache/fresh-machine/runs/<id>/log,
# summary: .../result (and .cache/fresh-machine/last-result). Exit 0 only when both commands exit 0.
#
# Isolation from this host: the run lives in its own mount and PID namespaces (unshare). /dev is a
# private tmpfs holding only the device nodes the tests use (bound from the host), /dev/shm and
# /dev/pts are private instances, /proc is the namespace's own, /sys is bound. Every mount the run makes,
# and every process it leaves, dies with the namespace; the script checks that no mount under the run
# root is visible on the host before it removes anything. The Go module and build caches start empty,
# as on a new machine, so the Go tools are built cold (the README's "about 13 minutes on 2 cores").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/$(basename "${BASH_SOURCE[0]}")"
CACHE="$ROOT/.cache/fresh-machine"
BASE="$CACHE/base"
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# What a new machine of this kind has from Debian before the session starts (besides Node and Go,
# which are copied from this machine). Changing this list rebuilds the base.
BASE_PKGS=build-essential,cmake,git,ca-certificates
CHROOT_PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[fresh-machine %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------------------------------------
# Stage 2: runs inside `unshare --mount --pid --fork`, as PID 1 of the new PID namespace.
# ------------------------------------------------------------------------------------------------
if [[ "${1:-}" == --inside ]]; then
  R="$2"
  mount --make-rprivate /
  # The root becomes a mount point of its own, and later the real root (pivot_root), not a chroot:
  # tests change mount propagation (needs / to be a mount) and make user namespaces (the kernel
  # refuses CLONE_NEWUSER to a chrooted process).
  mount --bind "$R" "$R"
  mount -t proc proc "$R/proc"
  mount --rbind /sys "$R/sys"
  mount --make-rslave "$R/sys"
  mount -t tmpfs -o mode=0755,size=16m dev "$R/dev"
  # kmsg: every booted machine has it, and the kubelet refuses to start without it (its OOM watcher).
  for n in null zero full random urandom tty fuse kvm kmsg; do
    [[ -e "/dev/$n" ]] || continue
    touch "$R/dev/$n"
    mount --bind "/dev/$n" "$R/dev/$n"
  done
  mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
  ln -s pts/ptmx "$R/dev/ptmx"
  mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
  ln -s /proc/self/fd "$R/dev/fd"
  ln -s /proc/self/fd/0 "$R/dev/stdin"
  ln -s /proc/self/fd/1 "$R/dev/stdout"
  ln -s /proc/self/fd/2 "$R/dev/stderr"
  mount -t tmpfs -o mode=0755 run "$R/run"
  cp -L /etc/resolv.conf "$R/etc/resolv.conf"
  # The README's commands, nothing else. Each one's exit code and duration go to the log.
  # The machine's certificate settings (its TLS interception CA), as CI's environment has them.
  CA_ENV=()
  while IFS='=' read -r k v; do
    case "$k" in *CA_CERTS*|*CA_BUNDLE*|SSL_CERT_*|GIT_SSL_CAINFO) CA_ENV+=("$k=$v") ;; esac
  done < <(env)
  cd "$R"
  mkdir -p .old-root
  pivot_root . .old-root
  umount -l /.old-root
  rmdir /.old-root
  R=/
  set +e
  chroot "$R" /usr/bin/env -i HOME=/root PATH="$CHROOT_PATH" LANG=C.UTF-8 TERM=dumb CI=true "${CA_ENV[@]}" \
    /bin/bash -c '
      cd /work/famfs-csi || exit 90
      echo "== fresh machine: $(. /etc/os-release; echo "$PRETTY_NAME"), node $(node --version), npm $(npm --version), $(go version)"
      t0=$SECONDS
      npm install; rc=$?
      echo "== npm install exit $rc after $((SECONDS - t0)) s"
      [ $rc = 0 ] || exit 91
      t1=$SECONDS
      npm test; rc=$?
      echo "== npm test exit $rc after $((SECONDS - t1)) s"
      [ $rc = 0 ] || exit 92
      exit 0'
  rc=$?
  exit "$rc"
fi

# ------------------------------------------------------------------------------------------------
# Stage 1: on the host.
# ------------------------------------------------------------------------------------------------
REPO="$ROOT"
REF=""
KEEP=0
REBUILD=0
TIMEOUT_MIN=180
SEED_TOOLS=0
while (($#)); do
  case "$1" in
    --repo) REPO="$2"; shift 2 ;;
    --ref) REF="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --rebuild-base) REBUILD=1; shift ;;
    --timeout) TIMEOUT_MIN="$2"; shift 2 ;;
    --seed-go-tools) SEED_TOOLS=1; shift ;;
    *) echo "usage: $0 [--repo PATH] [--ref REF] [--keep] [--rebuild-base] [--timeout MIN]" >&2; exit 64 ;;
  esac
done
[[ "$(id -u)" == 0 ]] || die "run me as root (debootstrap, chroot and namespaces need it)"
REF="${REF:-$(git -C "$REPO" rev-parse HEAD)}"
REF="$(git -C "$REPO" rev-parse --verify "$REF^{commit}")" || die "no commit $REF in $REPO"
SHARED="$(cd "$REPO/.." && pwd)/shared"
[[ -d "$SHARED" ]] || die "no ../shared beside $REPO"

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; }
}
for t in debootstrap unshare chroot; do
  if ! command -v "$t" >/dev/null; then
    log "$t missing: installing it with apt-get"
    case "$t" in debootstrap) apt_install debootstrap ;; *) apt_install util-linux coreutils ;; esac
  fi
done
command -v node >/dev/null || die "this machine has no Node.js to copy into the root"
command -v go >/dev/null || die "this machine has no Go to copy into the root"

mkdir -p "$CACHE/runs"
exec 8>"$CACHE/base.lock"

# --- the cached base root -------------------------------------------------------------------------
base_key="$SUITE $MIRROR $BASE_PKGS"
flock 8
if ((REBUILD)) || [[ "$(cat "$BASE.key" 2>/dev/null)" != "$base_key" ]]; then
  log "building the $SUITE base root with debootstrap ($BASE_PKGS); a few minutes"
  rm -rf "$BASE.tmp" "$BASE" "$BASE.key"
  debootstrap --variant=minbase --include="$BASE_PKGS" "$SUITE" "$BASE.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  # The apt sources of a new machine of this kind (main, updates and security).
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    rm -f "$BASE.tmp/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/debian.sources "$BASE.tmp/etc/apt/sources.list.d/"
  fi
  chroot "$BASE.tmp" apt-get clean
  mv "$BASE.tmp" "$BASE"
  echo "$base_key" >"$BASE.key"
fi
flock -u 8

# --- this run's root ------------------------------------------------------------------------------
ID="$(date -u +%Y%m%dT%H%M%SZ)-$$"
RUN="$CACHE/runs/$ID"
R="$RUN/root"
LOG="$RUN/log"
RESULT="$RUN/result"
mkdir -p "$RUN"
log "run $ID: $REPO at $REF; log $LOG"
cp -a "$BASE" "$R"
rm -rf "$R/var/lib/apt/lists"/* "$R/var/cache/apt"/*.bin

# Node.js + npm as this machine has them (the Debian package nodejs, and npm upgraded in place), with
# the machine's npm settings. Go as installed in /usr/local/go, with the machine's go env file.
for f in $(dpkg -L nodejs | grep -v '^/usr/share/'); do
  if [[ -f "$f" && ! -L "$f" ]]; then mkdir -p "$R$(dirname "$f")"; cp -a "$f" "$R$f"; fi
done
mkdir -p "$R/usr/lib" "$R/usr/etc" "$R/usr/local" "$R/root/.config"
cp -a /usr/lib/node_modules "$R/usr/lib/"
for b in npm npx corepack; do [[ -L "/usr/bin/$b" ]] && cp -a "/usr/bin/$b" "$R/usr/bin/"; done
[[ -f /usr/etc/npmrc ]] && cp -a /usr/etc/npmrc "$R/usr/etc/"
[[ -f /etc/npmrc ]] && cp -a /etc/npmrc "$R/etc/"
[[ -f /root/.npmrc ]] && cp -a /root/.npmrc "$R/root/"
cp -a "$(go env GOROOT)" "$R/usr/local/go"
[[ -d /root/.config/go ]] && cp -a /root/.config/go "$R/root/.config/"

# The machine's CA bundle: it holds the certificate of this workplace's TLS interception, without
# which no registry answers (part of the machine, not of any package the project installs).
cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"

# The repository as CI lays it: a fresh clone, ../shared beside it without write bits.
mkdir -p "$R/work"
git clone -q --no-hardlinks "$REPO" "$R/work/famfs-csi"
git -C "$R/work/famfs-csi" checkout -q "$REF"
cp -a "$SHARED" "$R/work/shared"
# A booted Debian machine has a machine id (systemd writes it at first boot; debootstrap does not).
[[ -s "$R/etc/machine-id" ]] || tr -d - < /proc/sys/kernel/random/uuid > "$R/etc/machine-id"
if ((SEED_TOOLS)); then
  [[ -d "$ROOT/.cache/tools/bin" ]] || die "--seed-go-tools: no $ROOT/.cache/tools/bin to copy"
  mkdir -p "$R/work/famfs-csi/.cache/tools"
  cp -a "$ROOT/.cache/tools/bin" "$R/work/famfs-csi/.cache/tools/"
  [[ -d "$ROOT/.cache/tools/stamps" ]] && cp -a "$ROOT/.cache/tools/stamps" "$R/work/famfs-csi/.cache/tools/"
  # The snapshot test reads the VolumeSnapshot CRDs from the snapshotter's module source, which a
  # cold build downloads next to the binary: seed it with the binaries.
  snap_src="$ROOT/.cache/go/mod/github.com/kubernetes-csi/external-snapshotter"
  if [[ -d "$snap_src" ]]; then
    mkdir -p "$R/work/famfs-csi/.cache/go/mod/github.com/kubernetes-csi"
    cp -a "$snap_src" "$R/work/famfs-csi/.cache/go/mod/github.com/kubernetes-csi/"
  fi
  log "Go tools seeded from $ROOT/.cache/tools: this run is not a fresh machine for them"
fi
chmod -R a-w "$R/work/shared"

# --- the run, in its own mount and PID namespaces ------------------------------------------------
T0=$SECONDS
set +e
{
  echo "== $(date -u +%FT%TZ) fresh-machine check of $REF (repo $REPO)"
  timeout --kill-after=30 "$((TIMEOUT_MIN * 60))" \
    unshare --mount --pid --fork --kill-child --propagation private "$SELF" --inside "$R"
} >"$LOG" 2>&1
rc=$?
set -e
DT=$((SECONDS - T0))

# Nothing of the run may be mounted on the host (the namespace took its mounts with it).
if grep -qF " $R" /proc/self/mountinfo; then
  die "mounts under $R are visible on the host: $(grep -F " $R" /proc/self/mountinfo | head -3); not removing it"
fi

case "$rc" in
  0) verdict="PASS: npm install and npm test both exited 0" ;;
  91) verdict="FAIL: npm install failed" ;;
  92) verdict="FAIL: npm test failed" ;;
  124|137)
    if ((DT >= TIMEOUT_MIN * 60)); then verdict="FAIL: timed out after $TIMEOUT_MIN minutes"
    else verdict="FAIL: stopped by a signal after ${DT} s (exit $rc)"; fi ;;
  *) verdict="FAIL: the run exited $rc" ;;
esac
{
  echo "run: $ID"
  echo "commit: $REF"
  echo "verdict: $verdict"
  ((SEED_TOOLS)) && echo "note: Go tools seeded from this machine's .cache/tools (--seed-go-tools): not a cold run"
  echo "duration: ${DT} s"
  grep -a '^== npm ' "$LOG" || true
  # mocha's closing counts
  grep -aE '^ +[0-9]+ (passing|failing|pending)' "$LOG" | tail -n 3 || true
  echo "log: $LOG"
} >"$RESULT"
cp "$RESULT" "$CACHE/last-result"
cat "$RESULT" >&2

if ((KEEP)); then
  log "run root kept at $R"
else
  rm -rf "$R"
fi
# keep the 5 newest runs
{ ls -1dt "$CACHE"/runs/*/ 2>/dev/null || true; } | tail -n +6 | xargs -r rm -rf
[[ "$rc" == 0 ]]
