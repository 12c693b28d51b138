# famfs CLI on the shared devdax: A makes the file system and fills it; B (a client, not the master)
# sees exactly what A wrote; a file A deletes disappears for B; the host agrees byte for byte.
. "$PROJ/test/devdax/guest/lib.sh"
if ! have_js cmd/famfs.js; then result famfs-cli fail "dist/cmd/famfs.js is missing"; exit 1; fi

DATA_SIZE=3158067      # 3 MiB + a bit: not a multiple of anything
payload famfs-data "$DATA_SIZE" >"$WORK/data.bin"
payload famfs-gone 100000 >"$WORK/gone.bin"

if [ "$ROLE" = A ]; then
  expect mkfs "famfs mkfs $DAX" -- famfs mkfs "$DAX"
  expect mkdir "mkdir -p proj/deep/dir" -- famfs mkdir -p "$DAX" proj/deep/dir
  expect cp "cp a $DATA_SIZE-byte file" -- famfs cp "$WORK/data.bin" "$DAX" proj/deep/dir/data.bin
  expect creat "creat 5 MiB seeded" -- famfs creat -s 5M -S 42 "$DAX" proj/seeded
  expect cp-gone "cp a file to delete later" -- famfs cp "$WORK/gone.bin" "$DAX" proj/gone.bin
  expect flush "flush the files for the hand-off" -- famfs flush "$DAX" proj/deep/dir/data.bin proj/seeded proj/gone.bin
  expect fsck-a "fsck clean on the master" -- famfs fsck "$DAX"
  famfs ls --json "$DAX" >"$WORK/ls.json"
  node "$DIST/test/devdax/guest/host-verify-file.js" "$WORK/ls.json" proj/deep/dir/data.bin "$WORK/data.bin" host-data
  cp "$WORK/ls.json" "$RUN/A/famfs-ls.json"
  signal famfs-made
  await famfs-seen 120 || result handoff fail "B never confirmed"
  expect rm "rm proj/gone.bin" -- famfs rm "$DAX" proj/gone.bin
  expect fsck-after-rm "fsck clean after rm" -- famfs fsck "$DAX"
  signal famfs-removed
  await famfs-gone-checked 120
else
  await famfs-made 180 || { result handoff fail "A never made the file system"; exit 1; }
  if famfs ls --json "$DAX" >"$WORK/ls.json" 2>"$WORK/ls.err"; then result ls ok "famfs ls on B"
  else result ls fail "$(cat "$WORK/ls.err")"; fi
  expect same-listing "B lists exactly A's entries" -- node -e '
    const fs = require("fs");
    const strip = (f) => JSON.stringify(JSON.parse(fs.readFileSync(f, "utf8")).entries);
    if (strip(process.argv[1]) !== strip(process.argv[2])) { console.log("listings differ"); process.exit(1); }' \
    "$WORK/ls.json" "$RUN/A/famfs-ls.json"
  expect dirs "proj/deep/dir is a directory on B" -- grep -q '"path": "proj/deep/dir"' "$WORK/ls.json"
  expect verify-data "B: data.bin holds A's bytes" -- famfs verify --compare "$WORK/data.bin" "$DAX" proj/deep/dir/data.bin
  expect verify-seeded "B: seeded file holds seed 42's pattern" -- famfs verify -S 42 "$DAX" proj/seeded
  expect verify-gone "B: gone.bin readable before the delete" -- famfs verify --compare "$WORK/gone.bin" "$DAX" proj/gone.bin
  expect_fail not-master "B (not the master) cannot mkdir" "master|EPERM|not.*master|read-only|client" -- famfs mkdir "$DAX" from-b
  expect fsck-b "fsck clean from B" -- famfs fsck "$DAX"
  signal famfs-seen
  await famfs-removed 120 || { result rm-seen fail "A never removed"; exit 1; }
  famfs ls "$DAX" >"$WORK/ls2.txt" 2>&1
  if grep -q 'gone.bin' "$WORK/ls2.txt"; then result rm-ls fail "B still lists proj/gone.bin"
  else result rm-ls ok "B no longer lists proj/gone.bin"; fi
  expect_fail rm-verify "B cannot read proj/gone.bin" "ENOENT|not found|no such|does not exist" -- famfs verify --compare "$WORK/gone.bin" "$DAX" proj/gone.bin
  signal famfs-gone-checked
fi
