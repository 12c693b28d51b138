/**
 * Guest check: the native device layer (pkg/device) against a real /dev/dax0.0.
 * Both guests run it; the hand-off part has A write and B read, then the reverse.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';

import { DeviceError, openDevice, type DaxDevice } from '../../../pkg/device/index.js';
import { assertThat, awaitSignal, check, checkThrows, hostVerify, payload, result, runGuestCheck, signal, type GuestContext } from './report.js';

const MIB = 1 << 20;
// Offsets well inside the device and apart from the raw-share check's area.
const HANDOFF_AB = 0x12000000;
const HANDOFF_BA = 0x12400000;
const HANDOFF_LEN = MIB;

function sysfsNumber(file: string): number {
  return Number(fs.readFileSync(file, 'utf8').trim());
}

/** The same bytes read by a second, independent path: the static daxio tool's own mmap. */
function readWithDaxio(dax: string, offset: number, length: number): Buffer {
  return execFileSync('daxio', [dax, 'read', String(offset), String(length)], { maxBuffer: length + 1024 });
}

async function handOff(ctx: GuestContext, dev: DaxDevice): Promise<void> {
  const [mine, theirs] = ctx.role === 'A' ? [HANDOFF_AB, HANDOFF_BA] : [HANDOFF_BA, HANDOFF_AB];
  const myBytes = payload(ctx, `handoff-${ctx.role}`, HANDOFF_LEN);
  const theirBytes = payload(ctx, `handoff-${ctx.other}`, HANDOFF_LEN);

  // Read the other's area before it is written, so a stale line would be cached if caches were kept.
  dev.read(theirs, HANDOFF_LEN);
  if (ctx.role === 'A') {
    dev.write(mine, myBytes);
    dev.flush(mine, HANDOFF_LEN);
    signal(ctx, 'native-a-wrote');
    await awaitSignal(ctx, 'native-b-wrote');
  } else {
    await awaitSignal(ctx, 'native-a-wrote');
    dev.write(mine, myBytes);
    dev.flush(mine, HANDOFF_LEN);
    signal(ctx, 'native-b-wrote');
  }
  check(ctx, 'handoff-read', () => {
    dev.invalidate(theirs, HANDOFF_LEN);
    const seen = dev.read(theirs, HANDOFF_LEN);
    assertThat(seen.equals(theirBytes), `${ctx.other}'s 1 MiB at 0x${theirs.toString(16)} differs after invalidate`);
    return `${ctx.role} reads ${ctx.other}'s flushed 1 MiB after invalidate (${dev.flushMethod}/${dev.invalidateMethod})`;
  });
  check(ctx, 'handoff-second-path', () => {
    const seen = readWithDaxio(ctx.dax, theirs, HANDOFF_LEN);
    assertThat(seen.equals(theirBytes), 'daxio (its own mapping) sees different bytes');
    return 'an independent mapping (daxio) sees the same bytes';
  });
  try {
    result(ctx, 'handoff-host', 'ok', await hostVerify(ctx, 'native-handoff', mine, myBytes));
  } catch (e) {
    result(ctx, 'handoff-host', 'fail', e instanceof Error ? e.message : String(e));
  }
}

runGuestCheck(async (ctx) => {
  const sysSize = sysfsNumber('/sys/bus/dax/devices/dax0.0/size');
  const sysAlign = sysfsNumber('/sys/bus/dax/devices/dax0.0/align');
  const dev = openDevice(ctx.dax);
  check(ctx, 'kind', () => {
    assertThat(dev.kind === 'devdax', `kind is ${dev.kind}`);
    return 'devdax';
  });
  check(ctx, 'size-from-sysfs', () => {
    assertThat(dev.size === sysSize - (sysSize % sysAlign), `size ${dev.size}, sysfs ${sysSize}`);
    return `${dev.size} bytes (sysfs ${sysSize})`;
  });
  check(ctx, 'alignment', () => {
    assertThat(dev.alignment === 2 * MIB && dev.alignment === sysAlign, `alignment ${dev.alignment}, sysfs ${sysAlign}`);
    return `${dev.alignment}`;
  });
  check(ctx, 'map-sync', () => {
    assertThat(dev.mapSync, 'the devdax mapping was not made with MAP_SYNC');
    return 'MAP_SYNC mapping';
  });
  result(ctx, 'cache-methods', 'ok', `flush ${dev.flushMethod}, invalidate ${dev.invalidateMethod}`);
  check(ctx, 'whole-device', () => {
    // The last byte of the device is reachable through the one mapping.
    const last = dev.size - 1;
    const before = dev.read(last, 1)[0] ?? 0;
    if (ctx.role === 'A') {
      dev.write(last, Buffer.from([0xa5]));
      dev.flush(last, 1);
      dev.write(last, Buffer.from([before]));
      dev.flush(last, 1);
    }
    return `offset 0 .. 0x${last.toString(16)} mapped`;
  });
  checkThrows(ctx, 'read-past-end', 'ERANGE', () => dev.read(dev.size - 4096, 8192));
  checkThrows(ctx, 'write-past-end', 'ERANGE', () => dev.write(dev.size, Buffer.alloc(1)));
  checkThrows(ctx, 'flush-past-end', 'ERANGE', () => dev.flush(dev.size - 64, 128));
  checkThrows(ctx, 'window-misaligned-offset', 'EINVAL', () => openDevice(ctx.dax, { window: { offset: 4096, length: 2 * MIB } }));
  checkThrows(ctx, 'window-misaligned-length', 'EINVAL', () => openDevice(ctx.dax, { window: { offset: 0, length: 3 * 4096 } }));
  checkThrows(ctx, 'window-oversized', 'ERANGE', () => openDevice(ctx.dax, { window: { offset: 0, length: dev.size + 2 * MIB } }));
  checkThrows(ctx, 'window-beyond-end', 'ERANGE', () => openDevice(ctx.dax, { window: { offset: dev.size, length: 2 * MIB } }));
  checkThrows(ctx, 'create-bigger-than-device', 'ERANGE', () => openDevice(ctx.dax, { create: { size: dev.size + 4 * MIB } }));
  check(ctx, 'window-aligned', () => {
    const w = openDevice(ctx.dax, { window: { offset: 16 * MIB, length: 2 * MIB } });
    try {
      assertThat(w.size === 2 * MIB, `window size ${w.size}`);
      // Window offset 0 is device offset 16 MiB: both mappings see the same bytes.
      const a = w.read(0, 4096);
      const b = dev.read(16 * MIB, 4096);
      assertThat(a.equals(b), 'window and whole-device mapping disagree');
      return 'a 2 MiB window at 16 MiB maps the same bytes as the whole-device mapping';
    } finally {
      w.close();
    }
  });
  checkThrows(ctx, 'not-devdax-chardev', 'ENOTDAX', () => openDevice('/dev/null'));
  checkThrows(ctx, 'not-devdax-fuse', 'ENOTDAX', () => openDevice('/dev/fuse'));
  checkThrows(ctx, 'not-a-device', 'EINVAL', () => openDevice('/tmp'));
  checkThrows(ctx, 'missing-device', 'ENOENT', () => openDevice('/dev/dax9.9'));
  check(ctx, 'read-only-refuses-writes', () => {
    const ro = openDevice(ctx.dax, { readOnly: true });
    try {
      let code = '';
      try {
        ro.write(0x13000000, Buffer.from('x'));
      } catch (e) {
        code = DeviceError.is(e) ? e.code : String(e);
      }
      assertThat(code === 'EACCES', `write on a read-only mapping gave ${code || 'no error'}`);
      return `EACCES (read-only mapping, mapSync=${ro.mapSync})`;
    } finally {
      ro.close();
    }
  });
  await handOff(ctx, dev);
  dev.close();
});
