/**
 * A second writer process of the master host, for test/famfs-writelock.test.ts: opens the famfs on
 * an emulation file as the master and appends as fast as it can, printing one JSON line per write
 * it believes done (what, log index, extents), so the test can check every acknowledged write is
 * in the log exactly once.
 *
 *   node log-writer.js create <device> <masterUuid> <prefix> <count> [lockWaitMs] [startAtMs|stdin]
 *     creates <prefix>/d<i % 4>/f<i> (2 MiB, missing parents made), deletes every third file again
 *   node log-writer.js hold <device> [slots]
 *     takes the writer lock (with "slots": the host-slot lock), prints "locked", and keeps it until killed
 *   node log-writer.js takeover <device> <hostUuid> <count> [startAtMs]
 *     from wall-clock time startAtMs on (a start line for racing processes), takes over as master
 *     <count> times, printing each epoch it was handed
 *   node log-writer.js ack <device> <hostUuid> <count> [startAtMs]
 *     from startAtMs on, publishes its replay position <count> times under <hostUuid>
 *   node log-writer.js mkfs <device> <systemUuid>
 *     opens the device, prints "ready", and on a line on stdin makes a new famfs over whatever the
 *     device holds (famfs mkfs --force)
 */
import { readSync } from 'fs';

import { openDevice, type DaxDevice } from '../../pkg/device/index.js';
import { FamfsError, FamfsFs, fmapExtents } from '../../pkg/famfs/index.js';

const MiB = 1 << 20;

function out(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function create(device: string, master: string, prefix: string, count: number, waitMs: number | undefined, startAtMs: number | 'stdin'): void {
  const dev = openDevice(device, waitMs === undefined ? {} : { writerLockWaitMs: waitMs });
  const fsys = FamfsFs.open(dev, { hostUuid: master, compactAt: 0 });
  if (startAtMs === 'stdin') {
    // Opened: say so, and start on a line from the parent (a start line when starting is slow).
    out({ op: 'ready' });
    readSync(0, Buffer.alloc(1));
  } else waitUntil(startAtMs);
  let locked = 0;
  for (let i = 0; i < count; i++) {
    const relpath = `${prefix}/d${i % 4}/f${i}`;
    for (;;) {
      try {
        const n = fsys.creat(relpath, 2 * MiB, { parents: {} });
        out({ op: 'create', relpath, index: n.index, extents: fmapExtents(n.fmap).map((e) => [e.offset, e.len]) });
        if (i % 3 === 2) {
          // Its own retry: the create is done, only the delete waits out the other writer.
          locked += retryLocked(() => fsys.rm(relpath)).locked;
          out({ op: 'delete', relpath, index: n.index });
        }
        break;
      } catch (e) {
        // Waiting out another writer's lock is the documented answer: try again.
        if (e instanceof FamfsError && e.code === 'ELOCKED') {
          locked++;
          continue;
        }
        out({ op: 'error', relpath, code: e instanceof FamfsError ? e.code : 'other', message: (e as Error).message });
        break;
      }
    }
  }
  out({ op: 'done', locked });
  dev.close();
}

/** Runs `fn`, again while another writer's lock makes it fail ELOCKED (the documented answer). */
function retryLocked<T>(fn: () => T): { value: T; locked: number } {
  for (let locked = 0; ; locked++) {
    try {
      return { value: fn(), locked };
    } catch (e) {
      if (!(e instanceof FamfsError && e.code === 'ELOCKED')) throw e;
    }
  }
}

/** Sleeps until wall-clock time `ms`. */
function waitUntil(ms: number): void {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  while (Date.now() < ms) Atomics.wait(nap, 0, 0, Math.max(0, Math.min(5, ms - Date.now() - 1)));
}

function takeover(device: string, master: string, count: number, startAtMs: number): void {
  const dev = openDevice(device);
  const fsys = FamfsFs.open(dev, { hostUuid: master });
  waitUntil(startAtMs);
  let locked = 0;
  for (let i = 0; i < count; i++) {
    const r = retryLocked(() => fsys.takeOver(master));
    locked += r.locked;
    out({ op: 'epoch', epoch: r.value });
  }
  out({ op: 'done', locked });
  dev.close();
}

function ack(device: string, host: string, count: number, startAtMs: number): void {
  const dev = openDevice(device);
  const fsys = FamfsFs.open(dev, { hostUuid: host });
  waitUntil(startAtMs);
  let locked = 0;
  for (let i = 0; i < count; i++) {
    const r = retryLocked(() => fsys.ackReplay(host, 'racer'));
    locked += r.locked;
  }
  out({ op: 'done', locked });
  dev.close();
}

/** Kept referenced: a collected device closes its descriptor, and that drops the lock. */
let held: DaxDevice | undefined;

function hold(device: string, which: string | undefined): void {
  const dev = openDevice(device, { writerLockWaitMs: 0 });
  held = dev;
  if (!(which === 'slots' ? dev.lockHostSlots() : dev.lockWriter())) {
    process.stdout.write('busy\n');
    process.exit(1);
  }
  process.stdout.write('locked\n');
  setInterval(() => held?.path, 1 << 30);
}

function mkfs(device: string, systemUuid: string): void {
  const dev = openDevice(device);
  process.stdout.write('ready\n');
  readSync(0, Buffer.alloc(1));
  const f = FamfsFs.mkfs(dev, { systemUuid, devicePath: device, force: true });
  out({ op: 'done', uuid: f.superblock.uuid });
  dev.close();
}

const [mode, device, master, prefix, count, wait, start] = process.argv.slice(2);
if (mode === 'create')
  create(
    device,
    master,
    prefix,
    Number(count),
    wait === undefined ? undefined : Number(wait),
    start === undefined ? 0 : start === 'stdin' ? start : Number(start),
  );
else if (mode === 'mkfs') mkfs(device, master);
else if (mode === 'hold') hold(device, master);
else if (mode === 'takeover') takeover(device, master, Number(prefix), count === undefined ? 0 : Number(count));
else if (mode === 'ack') ack(device, master, Number(prefix), count === undefined ? 0 : Number(count));
else {
  process.stderr.write(`usage: log-writer create|hold ...\n`);
  process.exit(2);
}
