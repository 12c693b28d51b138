/**
 * A second writer process of the master host, for test/famfs-writelock.test.ts: opens the famfs on
 * an emulation file as the master and appends as fast as it can, printing one JSON line per write
 * it believes done (what, log index, extents), so the test can check every acknowledged write is
 * in the log exactly once.
 *
 *   node log-writer.js create <device> <masterUuid> <prefix> <count> [lockWaitMs]
 *     creates <prefix>/d<i % 4>/f<i> (2 MiB, missing parents made), deletes every third file again
 *   node log-writer.js hold <device>
 *     takes the writer lock, prints "locked", and keeps it until killed
 */
import { openDevice, type DaxDevice } from '../../pkg/device/index.js';
import { FamfsError, FamfsFs, fmapExtents } from '../../pkg/famfs/index.js';

const MiB = 1 << 20;

function out(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function create(device: string, master: string, prefix: string, count: number, waitMs: number | undefined): void {
  const dev = openDevice(device, waitMs === undefined ? {} : { writerLockWaitMs: waitMs });
  const fsys = FamfsFs.open(dev, { hostUuid: master, compactAt: 0 });
  let locked = 0;
  for (let i = 0; i < count; i++) {
    const relpath = `${prefix}/d${i % 4}/f${i}`;
    for (;;) {
      try {
        const n = fsys.creat(relpath, 2 * MiB, { parents: {} });
        out({ op: 'create', relpath, index: n.index, extents: fmapExtents(n.fmap).map((e) => [e.offset, e.len]) });
        if (i % 3 === 2) {
          fsys.rm(relpath);
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

/** Kept referenced: a collected device closes its descriptor, and that drops the lock. */
let held: DaxDevice | undefined;

function hold(device: string): void {
  const dev = openDevice(device, { writerLockWaitMs: 0 });
  held = dev;
  if (!dev.lockWriter()) {
    process.stdout.write('busy\n');
    process.exit(1);
  }
  process.stdout.write('locked\n');
  setInterval(() => held?.path, 1 << 30);
}

const [mode, device, master, prefix, count, wait] = process.argv.slice(2);
if (mode === 'create') create(device, master, prefix, Number(count), wait === undefined ? undefined : Number(wait));
else if (mode === 'hold') hold(device);
else {
  process.stderr.write(`usage: log-writer create|hold ...\n`);
  process.exit(2);
}
