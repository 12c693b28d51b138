# famfs-fused on the shared devdax: B mounts A's file system and reads exactly what A wrote; files A
# adds while B is mounted appear; a file A deletes is never readable on B afterwards (not by path,
# not through a descriptor opened before the delete); FUSE read vs raw mmap read of the device.
. "$PROJ/test/devdax/guest/lib.sh"
if ! have_js cmd/famfs-fused.js; then result famfs-fused fail "dist/cmd/famfs-fused.js is missing"; exit 1; fi
MNT=/mnt/famfs
BENCH_SIZE=32M

if [ "$ROLE" = A ]; then
  await fuse-mounted 120 || { result handoff fail "B never mounted"; exit 1; }
  payload fuse-live 777777 >"$WORK/live.bin"
  expect live-cp "cp proj/live.bin while B is mounted" -- famfs cp "$WORK/live.bin" "$DAX" proj/live.bin
  famfs flush "$DAX" proj/live.bin >/dev/null
  expect bench-mkdir "mkdir bench" -- famfs mkdir "$DAX" bench
  expect bench-creat "creat a $BENCH_SIZE seeded file for the read benchmark" -- famfs creat -s "$BENCH_SIZE" -S 7 "$DAX" bench/data
  famfs flush "$DAX" bench/data >/dev/null
  signal live-made
  await live-opened 120 || { result handoff fail "B never opened live.bin"; exit 1; }
  expect live-rm "rm proj/live.bin while B holds it open" -- famfs rm "$DAX" proj/live.bin
  signal live-removed
  await fuse-done 180
  exit 0
fi

mkdir -p "$MNT"
famfs_fused --foreground "$DAX" "$MNT" >"$RUN/B/famfs-fused.log" 2>&1 &
FUSED=$!
i=0
while ! grep -q " $MNT " /proc/mounts; do
  i=$((i + 1))
  if [ "$i" -gt 600 ] || ! kill -0 "$FUSED" 2>/dev/null; then
    result mount fail "famfs-fused did not mount in 30 s: $(tail -c 600 "$RUN/B/famfs-fused.log")"; signal fuse-done; exit 1
  fi
  usleep 50000
done
result mount ok "famfs-fused mounted $DAX on $MNT: $(grep " $MNT " /proc/mounts | cut -d' ' -f3-4)"

payload famfs-data 3158067 >"$WORK/data.bin"
expect fuse-read-data "B reads A's data.bin through FUSE, byte for byte" -- cmp "$MNT/proj/deep/dir/data.bin" "$WORK/data.bin"
expect fuse-size "stat size of data.bin is exact" -- sh -c "[ \$(stat -c %s $MNT/proj/deep/dir/data.bin) = 3158067 ]"
expect fuse-dir "proj/deep/dir is a directory through FUSE" -- test -d "$MNT/proj/deep/dir"
# The seeded file through FUSE equals the raw device bytes at its extent.
famfs ls --json "$DAX" >"$WORK/ls.json"
extent_of() { node -e '
  const e = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).entries.find((x) => x.path === process.argv[2]);
  if (!e || !e.extents || e.extents.length !== 1) process.exit(1);
  console.log(e.extents[0].offset);' "$WORK/ls.json" "$1"; }
SEED_OFF=$(extent_of proj/seeded)
daxio "$DAX" read "$SEED_OFF" 5242880 >"$WORK/seeded.raw"
expect fuse-equals-raw "proj/seeded through FUSE equals the raw mmap of its extent" -- cmp "$MNT/proj/seeded" "$WORK/seeded.raw"
signal fuse-mounted

# A adds a file while we are mounted.
await live-made 120 || { result live fail "A never made live.bin"; signal fuse-done; exit 1; }
payload fuse-live 777777 >"$WORK/live.bin"
i=0
while [ ! -e "$MNT/proj/live.bin" ] && [ "$i" -lt 200 ]; do i=$((i + 1)); usleep 50000; done
expect live-appears "a file A made while B is mounted appears with A's bytes ($((i * 50)) ms)" -- cmp "$MNT/proj/live.bin" "$WORK/live.bin"
exec 7<"$MNT/proj/live.bin"
signal live-opened
await live-removed 120 || { result live-rm fail "A never removed live.bin"; signal fuse-done; exit 1; }
i=0
while [ -e "$MNT/proj/live.bin" ] && [ "$i" -lt 200 ]; do i=$((i + 1)); usleep 50000; done
expect_fail deleted-path "deleted on A: not readable by path on B ($((i * 50)) ms)" "No such file|not exist" -- cat "$MNT/proj/live.bin"
cat <&7 >"$WORK/oldfd.out" 2>"$WORK/oldfd.err"
if [ -s "$WORK/oldfd.out" ]; then
  result deleted-open-fd fail "a descriptor opened before the delete still reads $(stat -c %s "$WORK/oldfd.out") bytes"
else
  result deleted-open-fd ok "a descriptor opened before the delete reads nothing: $(cat "$WORK/oldfd.err")"
fi
exec 7<&-

# FUSE read vs raw mmap read of the same bytes, same guest (emulated CPU: only the ratio means anything).
famfs ls --json "$DAX" >"$WORK/ls.json"     # now with A's bench/data
BENCH_OFF=$(extent_of bench/data)
if [ -n "$BENCH_OFF" ] && set -- $(daxio "$MNT/bench/data" fileread 1048576); then
  result fuse-read-mbps ok "cold read() of $BENCH_SIZE through FUSE, 1 MiB calls" "\"mbps\":$1,\"bytes\":$2"
  set -- $(daxio "$MNT/bench/data" fileread 1048576)
  result fuse-warm-read-mbps ok "second read() pass (page cache)" "\"mbps\":$1,\"bytes\":$2"
  mb=$(daxio "$DAX" bench "$BENCH_OFF" 33554432 3)
  result mmap-read-mbps ok "memcpy from a MAP_SHARED mapping of $DAX, 3 passes" "\"mbps\":$mb"
else
  result fuse-read-mbps fail "no bench/data extent or FUSE read failed"
fi

umount "$MNT" || result umount fail "umount $MNT"
i=0
while kill -0 "$FUSED" 2>/dev/null && [ "$i" -lt 100 ]; do i=$((i + 1)); usleep 50000; done
kill -0 "$FUSED" 2>/dev/null && { result fused-exit fail "famfs-fused still running after umount"; kill "$FUSED"; }
signal fuse-done
