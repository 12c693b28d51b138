/**
 * No zeroing on the create path (issue 15 item 3), with its baseline measured in the same run:
 *
 * 1. create latency (FamfsFs.creat of a volume-shaped file, zero: true) on clean memory (zeroed
 *    in the background beforehand: what CreateVolume pays now) and on dirty memory (zeroed on the
 *    create path: what every CreateVolume paid before);
 * 2. large zero and clone throughput against single-thread memcpy between two ranges of the same
 *    device, interleaved A B C A B C.
 *
 * The emulated device is a tmpfs file whose pages are all touched before timing: a real devdax
 * has every page present (no first-touch fault), so a first touch would measure the emulation.
 *
 *   node dist/bench/zero/run.js [--gib 1] [--rounds 3]
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { CsiClient } from '../../pkg/csi/client.js';
import { DEFAULT_DRIVER_NAME, startDriver } from '../../pkg/csi/driver.js';
import type { CreateVolumeResponse } from '../../pkg/csi/types.js';
import type { DaxDevice } from '../../pkg/device/index.js';
import { copyFileContents } from '../../pkg/csi/snapshot-copy.js';
import { FamfsFs } from '../../pkg/famfs/index.js';
import { createEmulatedDevice, removeEmulatedDevice } from '../../testkit/emulated-device.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MASTER = '71111111-2222-4333-8444-555555555555';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

function seconds(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function secondsAsync(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function ms(x: number): string {
  return x < 1e-3 ? `${(x * 1e6).toFixed(0)} µs` : `${(x * 1e3).toFixed(2)} ms`;
}

function median(xs: number[]): number {
  return pct(xs, 50);
}

/** Creates of `size` bytes, each followed by its delete; `between` runs untimed after each delete. */
function createLatency(f: FamfsFs, size: number, n: number, between: () => void): { p50: number; p99: number; waited: number } {
  const xs: number[] = [];
  const waitedBefore = f.zeroStats.createsWaited;
  for (let i = 0; i < n; i++) {
    xs.push(seconds(() => f.creat(`bench/v${i}`, size, { zero: true })));
    f.rm(`bench/v${i}`);
    between();
  }
  return { p50: pct(xs, 50), p99: pct(xs, 99), waited: f.zeroStats.createsWaited - waitedBefore };
}

const CAP = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

/**
 * CreateVolume over gRPC (an in-process controller on a unix socket), each followed by an untimed
 * DeleteVolume. zeroIntervalMs 0: no background zeroing, every create zeroes what it takes (the
 * old path); otherwise the controller zeroes freed memory and the bench waits (untimed) until it
 * is done before the next create.
 */
async function csiCreateLatency(devicePath: string, zeroIntervalMs: number, bytes: number, n: number): Promise<{ p50: number; p99: number; waited: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-zero-'));
  process.env.FAMFS_SYSTEM_UUID = MASTER;
  const d = await startDriver({
    mode: 'controller',
    endpoint: `unix://${path.join(dir, 'csi.sock')}`,
    devicePath,
    deviceSize: 0,
    mkfs: false,
    nodeId: 'bench',
    driverName: DEFAULT_DRIVER_NAME,
    stateDir: path.join(dir, 'state'),
    pool: 'default',
    zeroIntervalMs,
    log: pino({ level: 'silent' }),
  });
  const client = new CsiClient(d.config.endpoint, 60_000);
  try {
    const xs: number[] = [];
    const waited0 = d.fs.zeroStats.createsWaited;
    for (let i = 0; i < n; i++) {
      if (zeroIntervalMs > 0) while (d.fs.dirtyFreeBytes() > 0 || d.fs.allocator.hasPending) await new Promise((r) => setTimeout(r, 5));
      const t = process.hrtime.bigint();
      const r = await client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
        name: `bench-${i}`,
        capacity_range: { required_bytes: String(bytes) },
        volume_capabilities: [CAP],
      });
      xs.push(Number(process.hrtime.bigint() - t) / 1e9);
      await client.call('Controller', 'DeleteVolume', { volume_id: r.volume.volume_id });
    }
    return { p50: pct(xs, 50), p99: pct(xs, 99), waited: d.fs.zeroStats.createsWaited - waited0 };
  } finally {
    client.close();
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function csiTable(): Promise<void> {
  const name = `bench-zero-csi-${process.pid}`;
  const size = 1280 * MiB;
  const dev = createEmulatedDevice(name, size, { fresh: true });
  const devicePath = dev.path;
  try {
    dev.zero(0, dev.size); // every page present, as on a devdax
    FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath, zeroed: false });
  } finally {
    dev.close();
  }
  try {
    console.log('\nCreateVolume over gRPC (in-process controller, unix socket; each followed by an untimed DeleteVolume)');
    console.log(
      `${'size'.padEnd(8)}${'zero on create (--zero-interval 0)'.padStart(36)}${'background zeroing (20 ms ticks)'.padStart(34)}${'speedup'.padStart(10)}`,
    );
    console.log(
      `${''.padEnd(8)}${'p50'.padStart(12)}${'p99'.padStart(12)}${'waited'.padStart(12)}${'p50'.padStart(12)}${'p99'.padStart(12)}${'waited'.padStart(10)}`,
    );
    const sizes = [
      ['2 MiB', 2 * MiB, 200],
      ['64 MiB', 64 * MiB, 40],
      ['1 GiB', GiB, 5],
    ] as const;
    // Every size without background zeroing first: the device stays dirty (and every page
    // present); then with it (the controller punches holes in this emulation file: creates do
    // not touch memory either way).
    const dirtyRuns = [];
    for (const [, bytes, n] of sizes) dirtyRuns.push(await csiCreateLatency(devicePath, 0, bytes, n));
    const cleanRuns = [];
    // The zeroer ticks every 20 ms here (200 ms by default) so the untimed wait for it before each
    // create is short; the timed create finds nothing dirty either way.
    for (const [, bytes, n] of sizes) cleanRuns.push(await csiCreateLatency(devicePath, 20, bytes, n));
    for (let i = 0; i < sizes.length; i++) {
      const label = sizes[i][0];
      const dirty = dirtyRuns[i];
      const clean = cleanRuns[i];
      console.log(
        `${label.padEnd(8)}${ms(dirty.p50).padStart(12)}${ms(dirty.p99).padStart(12)}${String(dirty.waited).padStart(12)}` +
          `${ms(clean.p50).padStart(12)}${ms(clean.p99).padStart(12)}${String(clean.waited).padStart(10)}${(dirty.p50 / clean.p50).toFixed(1).padStart(9)}×`,
      );
    }
  } finally {
    removeEmulatedDevice(name);
  }
}

async function main(): Promise<void> {
  const bigBytes = arg('gib', 1) * GiB;
  const rounds = arg('rounds', 3);
  const name = `bench-zero-${process.pid}`;
  // Two big files (source and clone) and room for the memcpy baseline's two ranges.
  const size = 2 * bigBytes + 256 * MiB;
  const dev: DaxDevice = createEmulatedDevice(name, size, { fresh: true });
  try {
    dev.zero(0, dev.size); // touch every page before timing (devdax has no first touch)
    const f = FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: dev.path, zeroed: false });
    f.mkdir('bench');
    const [l1, l5, l15] = os.loadavg();
    console.log(
      `zero bench: emulated device ${(size / GiB).toFixed(2)} GiB in /dev/shm, every page pre-touched (real devdax: no first-touch faults), ` +
        `flush=${dev.flushMethod}, node ${process.version}, ${os.cpus().length} CPUs, load ${l1.toFixed(2)} ${l5.toFixed(2)} ${l15.toFixed(2)}`,
    );

    // 1. create latency, dirty first (freed memory stays dirty until zeroFree runs), then clean.
    const sizes: [string, number, number][] = [
      ['2 MiB', 2 * MiB, 200],
      ['64 MiB', 64 * MiB, 40],
      [`${bigBytes / GiB} GiB`, bigBytes, 5],
    ];
    const rows: string[] = [];
    // Every size on dirty memory first (nothing is zeroed in between, so it all stays dirty), then
    // every size on clean memory (each delete's memory is zeroed, untimed, before the next create).
    const dirtyRuns = sizes.map(([, bytes, n]) => createLatency(f, bytes, n, () => undefined));
    f.zeroFree();
    const cleanRuns = sizes.map(([, bytes, n]) => createLatency(f, bytes, n, () => f.zeroFree()));
    for (let i = 0; i < sizes.length; i++) {
      const label = sizes[i][0];
      const dirty = dirtyRuns[i];
      const clean = cleanRuns[i];
      rows.push(
        `${label.padEnd(8)}${ms(dirty.p50).padStart(12)}${ms(dirty.p99).padStart(12)}${String(dirty.waited).padStart(8)}` +
          `${ms(clean.p50).padStart(12)}${ms(clean.p99).padStart(12)}${String(clean.waited).padStart(8)}${(dirty.p50 / clean.p50).toFixed(1).padStart(9)}×`,
      );
    }
    console.log('\ncreate latency (FamfsFs.creat, zero: true; p50/p99; "waited" = creates that zeroed memory themselves)');
    console.log(`${'size'.padEnd(8)}${'zero on create'.padStart(24)}${''.padStart(8)}${'clean (zeroed when freed)'.padStart(32)}${'speedup'.padStart(10)}`);
    console.log(
      `${''.padEnd(8)}${'p50'.padStart(12)}${'p99'.padStart(12)}${'waited'.padStart(8)}${'p50'.padStart(12)}${'p99'.padStart(12)}${'waited'.padStart(8)}`,
    );
    for (const r of rows) console.log(r);

    // 2. large zero and clone against single-thread memcpy, interleaved.
    f.zeroFree();
    const src = f.creat('bench/src', bigBytes, { zero: true });
    dev.write(src.fmap.kind === 'simple' ? src.fmap.extents[0].offset : 0, Buffer.alloc(MiB, 0x5a));
    const memcpy: number[] = [];
    const zeroFreed: number[] = [];
    const nativeZero: number[] = [];
    const clone: number[] = [];
    const cloneFlush: number[] = [];
    const ntCopy: number[] = [];
    // The clone path as it was: the same copyFileContents over a device without copyPersistent.
    const plain = {
      size: dev.size,
      read: (o: number, l: number) => dev.read(o, l),
      write: (o: number, d: Uint8Array) => dev.write(o, d),
      zero: (o: number, l: number) => dev.zero(o, l),
      copy: (d: number, s: number, l: number) => dev.copy(d, s, l),
      flush: (o: number, l: number) => dev.flush(o, l),
      invalidate: (o: number, l: number) => dev.invalidate(o, l),
    };
    const srcOff = src.fmap.kind === 'simple' ? src.fmap.extents[0].offset : 0;
    for (let r = 0; r < rounds; r++) {
      // A: single-thread memcpy of bigBytes between two ranges of the device (no flush): the baseline.
      const dst = f.creat('bench/memcpy-dst', bigBytes, { zero: false });
      const dstOff = dst.fmap.kind === 'simple' ? dst.fmap.extents[0].offset : 0;
      memcpy.push(bigBytes / seconds(() => dev.copy(dstOff, srcOff, bigBytes)));
      // B: the raw zeroing primitive (non-temporal stores + fence) over the same range.
      nativeZero.push(bigBytes / seconds(() => dev.zero(dstOff, bigBytes)));
      // The raw persistent copy primitive (non-temporal stores + fence), same ranges as A.
      ntCopy.push(bigBytes / seconds(() => dev.copyPersistent(dstOff, srcOff, bigBytes)));
      f.rm('bench/memcpy-dst');
      // C: zeroing freed memory as the controller does it (zeroFree: fence check, zero, mark clean).
      let zeroed = 0;
      zeroFreed.push(bigBytes / seconds(() => (zeroed = f.zeroFree().zeroedBytes)));
      if (zeroed < bigBytes) throw new Error(`zeroFree zeroed ${zeroed} bytes, expected ${bigBytes}`);
      // D: a clone as CreateVolume with a dataSource does it (copyFileContents: copy + flush or persistent copy).
      const c = f.creat('bench/clone', bigBytes, { zero: false });
      clone.push(bigBytes / (await secondsAsync(() => copyFileContents(dev, src, c, bigBytes, { sliceBytes: 64 * MiB }))));
      f.rm('bench/clone');
      // E: the clone as it was before (memmove, then a flush pass): what copyPersistent replaced.
      const c2 = f.creat('bench/clone', bigBytes, { zero: false });
      cloneFlush.push(bigBytes / (await secondsAsync(() => copyFileContents(plain, src, c2, bigBytes, { sliceBytes: 64 * MiB }))));
      f.rm('bench/clone');
      f.zeroFree();
    }
    const base = median(memcpy);
    const row = (what: string, xs: number[]): void => {
      const m = median(xs);
      console.log(`${what.padEnd(64)}${(m / 1e9).toFixed(2).padStart(8)}${`${((m / base) * 100).toFixed(0)} %`.padStart(10)}`);
    };
    console.log(`\nlarge zero and clone, ${bigBytes / GiB} GiB, median of ${rounds} interleaved rounds (GB/s; % of single-thread memcpy)`);
    console.log(`${'operation'.padEnd(64)}${'GB/s'.padStart(8)}${'memcpy'.padStart(10)}`);
    row('memcpy, one thread, device to device (baseline)', memcpy);
    row('copy: native non-temporal stores + fence (no flush pass)', ntCopy);
    row('zero: native non-temporal stores + fence', nativeZero);
    row('zero freed memory: FamfsFs.zeroFree (fence, zero, mark clean)', zeroFreed);
    row('clone: copyFileContents (invalidate source, non-temporal copy)', clone);
    row('clone before: copyFileContents (invalidate, memmove, flush)', cloneFlush);
  } finally {
    dev.close();
    removeEmulatedDevice(name);
  }
  await csiTable();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
