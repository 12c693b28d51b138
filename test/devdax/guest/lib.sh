# Helpers for the guest side of the devdax tier; sourced by main.sh and by every check script.
#
# Environment every check sees:
#   ROLE   A or B (OTHER is the other one)      NONCE  hex string fresh for each run
#   DAX    /dev/dax0.0                           PROJ   the checkout (read-only 9p, host path)
#   RUN    the run directory (read-write 9p)     WORK   a guest-local scratch directory (tmpfs)
#   CHECK  the running check's name (file name without .sh)
#   DIST   the compiled project the checks run: a snapshot of dist/ (and the addon next to it,
#          in ../build/Release) taken at the start of the run, so a rebuild on the host mid-run
#          cannot pull files from under the guests
#
# Results are JSON lines on stdout prefixed with "DEVDAX-RESULT "; the host collects them.

export PATH=/usr/bin:/bin:/usr/sbin:/sbin
export DAX="${DAX:-/dev/dax0.0}"
case "$ROLE" in A) OTHER=B ;; B) OTHER=A ;; esac
export OTHER

json_str() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/ /g' | tr '\n' ' '; }

# uptime_ms: guest uptime, for phase timings
uptime_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }

# result NAME ok|fail|skip [DETAIL] [EXTRA_JSON_FIELDS]: one structured result line.
result() { result_line "$@"; }
result_line() {
  local extra="${4:-}"
  [ -n "$extra" ] && extra=",$extra"
  printf 'DEVDAX-RESULT {"check":"%s","role":"%s","name":"%s","status":"%s","detail":"%s","uptime_ms":%s%s}\n' \
    "$(json_str "${CHECK:-main}")" "$ROLE" "$(json_str "$1")" "$2" "$(json_str "${3:-}")" "$(uptime_ms)" "$extra"
}

# expect NAME DETAIL -- CMD...: run CMD, report ok when it succeeds, fail (with its output) otherwise.
expect() {
  local name="$1" detail="$2"; shift 3
  local out
  if out="$("$@" 2>&1)"; then result "$name" ok "$detail"; return 0
  else result "$name" fail "$detail: $(printf '%s' "$out" | tail -c 400)"; return 1; fi
}

# expect_fail NAME DETAIL PATTERN -- CMD...: CMD must fail and its output must match PATTERN (grep -E).
expect_fail() {
  local name="$1" detail="$2" pat="$3"; shift 4
  local out
  if out="$("$@" 2>&1)"; then result "$name" fail "$detail: succeeded but should have failed"; return 1; fi
  if printf '%s' "$out" | grep -Eq "$pat"; then result "$name" ok "$detail"; return 0; fi
  result "$name" fail "$detail: failed without /$pat/: $(printf '%s' "$out" | tail -c 400)"; return 1
}

# signal NAME: tell the other guest NAME happened.    await NAME [SECS]: wait for the other's NAME.
# Flags are files on the run share (9p, cache=none, so every lookup reaches the host).
signal() { : >"$RUN/sync/$1.$ROLE"; }
await() {
  local name="$1" secs="${2:-60}" i=0
  while [ ! -e "$RUN/sync/$name.$OTHER" ]; do
    if [ -e "$RUN/sync/exited.$OTHER" ]; then echo "await $name: guest $OTHER has exited" >&2; return 1; fi
    # The other guest is past this check: it will signal nothing more in it (it failed early).
    if [ -n "${CHECK:-}" ] && [ "$name" != "end-$CHECK" ] && [ -e "$RUN/sync/end-$CHECK.$OTHER" ]; then
      echo "await $name: guest $OTHER already finished $CHECK" >&2; return 1; fi
    i=$((i + 1)); [ "$i" -gt $((secs * 20)) ] && { echo "await $name: timeout after ${secs}s" >&2; return 1; }
    usleep 50000
  done
}
# barrier NAME: both guests reach NAME before either goes on.
barrier() { signal "$1"; await "$1" "${2:-120}"; }

# The project's tools, run by the guest's node from the shared checkout.
famfs() { node "$DIST/cmd/famfs.js" "$@"; }
famfs_fused() { node "$DIST/cmd/famfs-fused.js" "$@"; }
have_js() { [ -f "$DIST/$1" ]; }

# payload NAME SIZE: deterministic bytes for NAME in this run (so B and the host can recompute them);
# the same function as payload() in report.ts.
payload() { node -e '
  const [name, size, nonce] = process.argv.slice(1);
  const crypto = require("crypto");
  const key = crypto.createHash("sha256").update(`${nonce}/${name}`).digest();
  const c = crypto.createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  process.stdout.write(Buffer.concat([c.update(Buffer.alloc(Number(size))), c.final()]));' "$1" "$2" "$NONCE"; }

# host_verify NAME DAX_OFFSET FILE: ask the host agent whether the backing file holds FILE's bytes at
# this devdax offset; prints the agent's answer and succeeds only on agreement.
host_verify() {
  local name="$ROLE-$1" i=0
  cp "$3" "$RUN/hostreq/$name.bin" && printf '%s\n' "$2" >"$RUN/hostreq/$name.req.tmp" \
    && mv "$RUN/hostreq/$name.req.tmp" "$RUN/hostreq/$name.req" || return 1
  while [ ! -e "$RUN/hostreq/$name.ok" ] && [ ! -e "$RUN/hostreq/$name.fail" ]; do
    i=$((i + 1)); [ "$i" -gt 600 ] && { echo "host agent did not answer $name"; return 1; }
    usleep 50000
  done
  if [ -e "$RUN/hostreq/$name.ok" ]; then cat "$RUN/hostreq/$name.ok"; return 0; fi
  cat "$RUN/hostreq/$name.fail"; return 1
}
