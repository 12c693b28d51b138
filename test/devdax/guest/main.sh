# The guest's programme, run by /init from the shared checkout:
#   1. bring up /dev/dax0.0 (guest A provisions the namespace once; B waits, then probes);
#   2. run every test/devdax/checks/NN-*.sh in order, both guests in step (a barrier before and after
#      each check), each check's output kept in $RUN/ROLE/NN-*.log.
set -u
for w in $(cat /proc/cmdline); do
  case "$w" in
    devdax.role=*) ROLE="${w#*=}" ;;
    devdax.nonce=*) NONCE="${w#*=}" ;;
    devdax.proj=*) PROJ="${w#*=}" ;;
    devdax.only=*) ONLY="${w#*=}" ;;
    devdax.dist=*) DIST="${w#*=}" ;;
  esac
done
export ROLE NONCE PROJ DIST="${DIST:-$PROJ/dist}" RUN=/run/devdax WORK=/tmp/work ONLY="${ONLY:-}"
mkdir -p "$WORK" "$RUN/$ROLE" "$RUN/sync"
. "$PROJ/test/devdax/guest/lib.sh"
trap 'signal exited' EXIT
# main.sh's own results go to the console and to $RUN/ROLE/results.jsonl (what the host reads).
RESULTS="$RUN/$ROLE/results.jsonl"; : >"$RESULTS"
result() { result_line "$@" | tee_results; }
tee_results() { while IFS= read -r l; do echo "$l"; echo "${l#DEVDAX-RESULT }" >>"$RESULTS"; done; }

CHECK=boot; export CHECK
result init ok "guest $ROLE up, kernel $(uname -r)"

load_nvdimm() {
  for m in nfit nd_pmem dax_pmem device_dax fuse; do modprobe "$m" || return 1; done
}
wait_path() { # PATH SECS
  local i=0
  while [ ! -e "$1" ]; do i=$((i + 1)); [ "$i" -gt $(($2 * 20)) ] && return 1; usleep 50000; done
}

if [ "$ROLE" = A ]; then
  load_nvdimm || { result modules fail "modprobe failed"; exit 1; }
  wait_path /sys/bus/nd/devices/region0 20 || { result region fail "no region0 after 20 s"; exit 1; }
  if [ ! -e "$DAX" ]; then
    # map=mem keeps the kernel's page array out of the shared medium (see docs/devdax.md).
    out="$(ndctl create-namespace -f -e namespace0.0 -m devdax --map=mem 2>&1 \
        || ndctl create-namespace -r region0 -m devdax --map=mem 2>&1)" \
      || { result provision fail "$out"; exit 1; }
  fi
  wait_path "$DAX" 20 || { result provision fail "no $DAX after create-namespace"; exit 1; }
  result provision ok "$(ndctl list -N 2>/dev/null | tr -d ' \n' | head -c 300)"
  signal provisioned
else
  await provisioned 90 || { result provision fail "guest A never provisioned"; exit 1; }
  load_nvdimm || { result modules fail "modprobe failed"; exit 1; }
  wait_path /sys/bus/nd/devices/region0 20 || { result region fail "no region0 after 20 s"; exit 1; }
  # The namespace A made is in the shared label area, so dax0.0 follows region0 within a moment;
  # when it does not (nothing shared: the negative control), one re-probe and we give up.
  wait_path "$DAX" 10 || {
    ndctl disable-region all >/dev/null 2>&1; ndctl enable-region all >/dev/null 2>&1
    wait_path "$DAX" 5; } || { result probe fail "no $DAX after re-probe: $(ndctl list -RN 2>&1 | tr -d ' \n' | head -c 300)"; exit 1; }
  result probe ok "$DAX present"
fi
result dax-ready ok "$(cat /sys/bus/dax/devices/dax0.0/size) bytes, align $(cat /sys/bus/dax/devices/dax0.0/align 2>/dev/null)"

failed=0
for f in "$PROJ"/test/devdax/checks/[0-9]*.sh; do
  CHECK="$(basename "$f" .sh)"; export CHECK
  if [ -n "$ONLY" ] && ! echo "$CHECK" | grep -Eq "$ONLY"; then continue; fi
  barrier "begin-$CHECK" || { result barrier fail "begin: $(await "begin-$CHECK" 1 2>&1)"; failed=1; break; }
  t0=$(uptime_ms)
  # A check that hangs fails on its own instead of eating the guest's whole time limit.
  ( cd "$WORK" && timeout "${CHECK_TIMEOUT:-300}" sh "$f" ) >"$RUN/$ROLE/$CHECK.log" 2>&1
  rc=$?
  grep '^DEVDAX-RESULT ' "$RUN/$ROLE/$CHECK.log" | tee_results
  if [ "$rc" -eq 0 ]; then st=ok; else st=fail; failed=1; fi
  result exit "$st" "exit code $rc" "\"ms\":$(( $(uptime_ms) - t0 ))"
  barrier "end-$CHECK" || { result barrier fail "end of $CHECK"; failed=1; break; }
done
CHECK=main result done ok "guest $ROLE finished"
exit "$failed"
