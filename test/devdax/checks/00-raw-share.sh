# Raw devdax sharing, with no project code: the two guests' /dev/dax0.0 are one medium, and the host's
# backing file holds it at DATA_OFFSET (2 MiB) + devdax offset.
. "$PROJ/test/devdax/guest/lib.sh"
OFF=0x10000000          # 256 MiB into the device: far from where famfs puts its superblock and log
REPLY=0x10200000
SIZE=$(daxio "$DAX" size)
[ "$SIZE" = "$(cat /sys/bus/dax/devices/dax0.0/size)" ] && result size ok "$SIZE bytes" || result size fail "daxio $SIZE"

if [ "$ROLE" = A ]; then
  printf 'PING-%s' "$NONCE" | daxio "$DAX" write $OFF || result ping-write fail "daxio write"
  signal ping
  expect pong "B's reply through its own mapping" -- daxio "$DAX" wait $REPLY "PONG-$NONCE" 30
  payload raw-64k 65536 >"$WORK/raw.bin"
  expect raw-write "A writes 64 KiB" -- daxio "$DAX" write 0x10400000 <"$WORK/raw.bin"
  expect host-agrees "host reads A's 64 KiB at file offset 2 MiB + 0x10400000" -- host_verify raw 0x10400000 "$WORK/raw.bin"
  signal raw-written
else
  await ping 30 || result ping fail "no ping signal"
  expect ping "A's bytes through B's mapping" -- daxio "$DAX" wait $OFF "PING-$NONCE" 10
  printf 'PONG-%s' "$NONCE" | daxio "$DAX" write $REPLY || result pong-write fail "daxio write"
  await raw-written 60
  payload raw-64k 65536 >"$WORK/raw.bin"
  daxio "$DAX" read 0x10400000 65536 >"$WORK/seen.bin"
  expect raw-read "B reads A's 64 KiB payload" -- cmp "$WORK/raw.bin" "$WORK/seen.bin"
fi
