#!/usr/bin/env bash
# The devdax tier: two qemu guests sharing one real /dev/dax0.0 (an emulated NVDIMM backed by one
# host file), running test/devdax/checks/*.sh in step. See docs/devdax.md.
#
#   test/devdax/run.sh [--out DIR] [--only REGEX] [--keep]
#
# Writes DIR/results.jsonl (one JSON object per line: guest results, host results, phase timings)
# and DIR/{A,B}.serial.log; exits 0 only when both guests finished, every check passed and no
# result says "fail". Exits 2, loudly, when qemu cannot run here: the tier never passes silently.
#
# Environment: DEVDAX_ACCEL=kvm|tcg (default tcg; see below), DEVDAX_NO_BUILD=1 (skip tsc),
# DEVDAX_TIMEOUT (seconds per guest, default 600), DEVDAX_SHARE=off (negative control), DEVDAX_KERNEL_PKG (pin the Debian kernel).
set -euo pipefail
PROJ="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$PROJ/.cache/devdax"
OUT=""
ONLY=""
KEEP=0
while (($#)); do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--out DIR] [--only REGEX] [--keep]" >&2; exit 64 ;;
  esac
done
# Per guest. A quiet 2-core machine needs ~100 s for the whole run; a loaded one much more.
TIMEOUT="${DEVDAX_TIMEOUT:-600}"
# DEVDAX_SHARE=off is the negative control: qemu maps the backing file privately, so nothing one
# guest writes reaches the other, and the tier must fail.
SHARE="${DEVDAX_SHARE:-on}"
# The devdax data start inside the backing file: with --map=mem and 2 MiB alignment the namespace's
# info block takes the first 2 MiB (checked by the raw-share check through the host agent).
DATA_OFFSET=$((2 << 20))
BACKING="/dev/shm/famfs-devdax-$$.img"
mkdir -p "$CACHE/runs"
# Each run has its own directory (several test runs may start at once); last-run points at the newest.
if [[ -z "$OUT" ]]; then
  OUT="$CACHE/runs/$(date +%Y%m%d-%H%M%S)-$$"
  ln -sfn "runs/$(basename "$OUT")" "$CACHE/last-run"
  # keep the 5 newest run directories
  { ls -1dt "$CACHE"/runs/*/ 2>/dev/null || true; } | tail -n +6 | xargs -r rm -rf
fi
rm -rf "$OUT"; mkdir -p "$OUT/sync" "$OUT/hostreq" "$OUT/A" "$OUT/B"
OUT="$(cd "$OUT" && pwd)"
RESULTS="$OUT/results.jsonl"; : >"$RESULTS"

log() { printf '[devdax] %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
emit() { printf '%s\n' "$1" >>"$RESULTS"; }
json_str() { printf '%s' "$1" | tr '\n\t' '  ' | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
host_result() { emit "{\"check\":\"$1\",\"role\":\"host\",\"name\":\"$2\",\"status\":\"$3\",\"detail\":\"$(json_str "${4:-}")\"}"; }
phase_start() { PHASE="$1"; PHASE_T0="$(now_ms)"; log "phase $1"; }
phase_end() { emit "{\"check\":\"phase\",\"role\":\"host\",\"name\":\"$PHASE\",\"status\":\"ok\",\"ms\":$(( $(now_ms) - PHASE_T0 ))}"; }
# fatal: loud, recorded, and never a pass.
fatal() {
  log "FATAL: $*"
  printf '\n*** DEVDAX TIER CANNOT RUN: %s ***\n\n' "$*" >&2
  host_result setup fatal fail "$*"
  exit 2
}

# Any command that fails unexpectedly (set -e) is reported, never a silent exit.
set -E
trap 'rc=$?; log "FAILED at line $LINENO (exit $rc): $BASH_COMMAND"; host_result setup "line-$LINENO" fail "$BASH_COMMAND exited $rc"' ERR

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -f "$BACKING"
}
trap cleanup EXIT

T_ALL="$(now_ms)"

# --- qemu ---------------------------------------------------------------------------------------
phase_start qemu
# Every package this tier uses comes from the project's one list (scripts/deps.sh devdax).
"$PROJ/scripts/deps.sh" devdax >&2 || fatal "cannot install the devdax tier's packages (scripts/deps.sh devdax)"
for tool in qemu-system-x86_64 cpio depmod modprobe gcc ldd cmp; do
  command -v "$tool" >/dev/null || fatal "$tool is not available after scripts/deps.sh devdax"
done
qemu-system-x86_64 --version >/dev/null 2>&1 || fatal "qemu-system-x86_64 does not start"
# Software emulation by default: on this kind of VM /dev/kvm exists but a nested guest hangs in the
# kernel or aborts on MSR writes, and a probe that does not boot a kernel cannot tell. DEVDAX_ACCEL=kvm
# opts in where KVM is known to work.
ACCEL="${DEVDAX_ACCEL:-tcg}"
case "$ACCEL" in
  kvm) ACCEL_ARGS=(-accel kvm -cpu host) ;;
  tcg) ACCEL_ARGS=(-accel tcg -cpu max) ;;
  *) fatal "DEVDAX_ACCEL must be kvm or tcg, not $ACCEL" ;;
esac
phase_end

# --- downloads ----------------------------------------------------------------------------------
phase_start download
KVER="$("$PROJ/test/devdax/lib/fetch.sh" "$CACHE")" || fatal "cannot fetch the guest packages with apt-get download"
KERNEL="$CACHE/x/boot/vmlinuz-$KVER"
[[ -f "$KERNEL" ]] || fatal "no kernel at $KERNEL"
phase_end

# --- project build -----------------------------------------------------------------------------
# The guests run the checkout's dist/ and build/Release addon over 9p. DEVDAX_NO_BUILD=1 skips this
# (the mocha test sets it: npm test has just built everything).
phase_start build
if [[ "${DEVDAX_NO_BUILD:-0}" != 1 ]]; then
  [[ -f "$PROJ/build/Release/famfs_native.node" ]] || (cd "$PROJ" && node native/build.js >&2) \
    || fatal "the native addon does not build"
  # tsc still emits when another module has type errors; the checks then report what is missing.
  (cd "$PROJ" && npx tsc -p . >&2) || log "WARNING: tsc reported errors (emitted anyway)"
fi
phase_end

# --- one tier at a time ------------------------------------------------------------------------
# Two runs at once would fight over the initramfs and starve each other's emulated CPUs (2 cores).
phase_start lock
exec 9>"$CACHE/run.lock"
flock -w "${DEVDAX_LOCK_WAIT:-600}" 9 || fatal "another devdax run held $CACHE/run.lock for ${DEVDAX_LOCK_WAIT:-600} s"
phase_end

# --- snapshot of the compiled project --------------------------------------------------------
# Other work in the same checkout may rebuild dist/ or the addon while the guests run; they run a
# copy (inside the checkout, so node_modules still resolves by walking up to $PROJ/node_modules).
phase_start snapshot
# Not under $CACHE: the guests see only $PROJ (9p), and a checkout's .cache may be a symlink to a
# cache shared by several checkouts (git worktrees), which the guests cannot follow.
SNAP="$PROJ/.devdax-snap"
rm -rf "$SNAP"; mkdir -p "$SNAP/build/Release"
[[ -d "$PROJ/dist/cmd" ]] || fatal "$PROJ/dist is not built (npm run build)"
cp -a "$PROJ/dist" "$SNAP/dist"
cp -a "$PROJ/package.json" "$SNAP/"
[[ -d "$PROJ/proto" ]] && cp -a "$PROJ/proto" "$SNAP/proto"
# The addon may be in the middle of a rebuild by other work in this checkout: wait for it a while.
for _ in $(seq 1 120); do compgen -G "$PROJ/build/Release/*.node" >/dev/null && break; sleep 1; done
compgen -G "$PROJ/build/Release/*.node" >/dev/null || fatal "no native addon in $PROJ/build/Release (node native/build.js)"
cp -a "$PROJ"/build/Release/*.node "$SNAP/build/Release/"
phase_end

# --- initramfs ----------------------------------------------------------------------------------
phase_start initrd
INITRD="$CACHE/initrd.cpio"
# Rebuilt only when what goes into it changed (scripts, node, the addon's library set, the packages).
initrd_key="$( {
  cat "$PROJ/test/devdax/lib/build-initrd.sh" "$PROJ/test/devdax/guest/init" "$PROJ/test/devdax/guest/daxio.c" "$CACHE/fetch.stamp"
  echo "$KVER"; stat -c '%s %Y' /usr/bin/node "$(command -v fusermount3 || echo /dev/null)"
  for a in "$PROJ"/build/Release/*.node; do if [[ -e "$a" ]]; then ldd "$a" | awk '{print $1}'; fi; done
} | sha256sum | cut -c1-16)"
if [[ -f "$INITRD" && "$(cat "$INITRD.key" 2>/dev/null)" == "$initrd_key" ]]; then
  log "initramfs up to date ($initrd_key)"
else
  "$PROJ/test/devdax/lib/build-initrd.sh" "$CACHE" "$KVER" "$PROJ" "$INITRD" || fatal "cannot build the initramfs"
  echo "$initrd_key" >"$INITRD.key"
fi
phase_end

# --- guests -------------------------------------------------------------------------------------
phase_start guests
# 1 GiB + 2 MiB: qemu takes the 128 KiB label area off the end and the region must stay a multiple
# of 16 MiB after that (see docs/devdax.md, "region alignment").
# Backing files of runs that were killed (their run.sh is gone) are removed first.
for stale in /dev/shm/famfs-devdax-*.img; do
  [[ -e "$stale" ]] || continue
  stale_pid="${stale##*-}"; stale_pid="${stale_pid%.img}"
  kill -0 "$stale_pid" 2>/dev/null || { log "removing stale $stale"; rm -f "$stale"; }
done
truncate -s 1026M "$BACKING"
NONCE="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
log "accel=$ACCEL share=$SHARE kernel=$KVER nonce=$NONCE backing=$BACKING out=$OUT"

boot() { # ROLE
  local role="$1"
  timeout --kill-after=5 "$TIMEOUT" qemu-system-x86_64 \
    -machine pc,nvdimm=on "${ACCEL_ARGS[@]}" -smp 1 -m 1G,slots=2,maxmem=4G \
    -object "memory-backend-file,id=mem1,share=$SHARE,mem-path=$BACKING,size=1026M,align=2M" \
    -device nvdimm,memdev=mem1,id=nv1,label-size=128K \
    -virtfs "local,path=$OUT,mount_tag=run,security_model=none,id=run" \
    -virtfs "local,path=$PROJ,mount_tag=proj,security_model=none,readonly=on,id=proj" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 devdax.role=$role devdax.nonce=$NONCE devdax.proj=$PROJ devdax.dist=$SNAP/dist devdax.only=$ONLY" \
    -nographic -no-reboot -nodefaults -serial stdio -display none \
    </dev/null >"$OUT/$role.serial.log" 2>&1
}

# The host agent answers the guests' "does the backing file hold these bytes?" requests while they run:
# a guest writes hostreq/NAME.bin (the bytes) and NAME.req (the devdax offset); the agent compares the
# backing file at DATA_OFFSET + offset byte for byte and answers NAME.ok or NAME.fail.
host_agent() {
  shopt -s nullglob
  while :; do
    for req in "$OUT"/hostreq/*.req; do
      local name="${req%.req}"
      [[ -e "$name.ok" || -e "$name.fail" ]] && continue
      local off len tmp
      off="$(cat "$req")"; [[ -n "$off" ]] || continue
      len="$(stat -c %s "$name.bin")"
      tmp="$name.host"
      dd if="$BACKING" of="$tmp" iflag=skip_bytes,count_bytes skip=$((DATA_OFFSET + off)) count="$len" status=none
      if cmp -s "$tmp" "$name.bin"; then
        echo "file offset $((DATA_OFFSET + off)): $len bytes agree" >"$name.ok"
        host_result host-agent "$(basename "$name")" ok "$(cat "$name.ok")"
      else
        echo "file offset $((DATA_OFFSET + off)): $(cmp "$tmp" "$name.bin" 2>&1 | head -c 200)" >"$name.fail"
        host_result host-agent "$(basename "$name")" fail "$(cat "$name.fail")"
      fi
      rm -f "$tmp"
    done
    [[ -e "$OUT/sync/exited.A" && -e "$OUT/sync/exited.B" ]] && return 0
    sleep 0.05
  done
}

T_BOOT="$(now_ms)"
boot A & PIDS+=($!); PID_A=$!
boot B & PIDS+=($!); PID_B=$!
host_agent & PIDS+=($!); PID_AGENT=$!
rc_a=0; rc_b=0
wait "$PID_A" || rc_a=$?
wait "$PID_B" || rc_b=$?
touch "$OUT/sync/exited.A" "$OUT/sync/exited.B"
wait "$PID_AGENT" || true
phase_end

# --- results ------------------------------------------------------------------------------------
failed=0
for role in A B; do
  rc_var="rc_${role,,}"
  exit_line="$(grep -a -o 'DEVDAX-GUEST-EXIT [0-9]*' "$OUT/$role.serial.log" | tail -1 || true)"
  guest_rc="${exit_line##* }"
  if [[ -z "$exit_line" ]]; then
    host_result guest "$role-exit" fail "guest $role never reported its exit (qemu rc ${!rc_var}; timeout ${TIMEOUT}s?); tail: $(tail -c 600 "$OUT/$role.serial.log")"
    failed=1
  elif [[ "$guest_rc" != 0 ]]; then
    host_result guest "$role-exit" fail "guest $role exited $guest_rc"
    failed=1
  else
    host_result guest "$role-exit" ok "qemu rc ${!rc_var}"
  fi
  grep -a 'DEVDAX-GUEST-FATAL' "$OUT/$role.serial.log" && failed=1
  [[ -f "$OUT/$role/results.jsonl" ]] && cat "$OUT/$role/results.jsonl" >>"$RESULTS"
done
emit "{\"check\":\"phase\",\"role\":\"host\",\"name\":\"total\",\"status\":\"ok\",\"ms\":$(( $(now_ms) - T_ALL )),\"accel\":\"$ACCEL\",\"share\":\"$SHARE\",\"kernel\":\"$KVER\"}"

n_ok="$(grep -c '"status":"ok"' "$RESULTS" || true)"
n_fail="$(grep -c '"status":"fail"' "$RESULTS" || true)"
n_skip="$(grep -c '"status":"skip"' "$RESULTS" || true)"
((n_fail == 0)) || failed=1
grep '"status":"fail"' "$RESULTS" >&2 || true
log "results: $n_ok ok, $n_fail fail, $n_skip skip -> $RESULTS (serial logs in $OUT)"
((KEEP)) && log "backing file kept: $BACKING" && BACKING=/nonexistent
if ((failed)); then log "DEVDAX TIER FAILED"; exit 1; fi
log "DEVDAX TIER PASSED ($ACCEL, $(( ($(now_ms) - T_ALL) / 1000 )) s)"
