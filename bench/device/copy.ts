/**
 * Device copy throughput: guarded native copies (read, readInto, write) against JS copies out
 * of an unguarded zero-copy view, on an emulated device in /dev/shm.
 *
 *   node dist/bench/device/copy.js [--seconds 0.3]
 */
import * as os from 'os';
import { type DaxDevice } from '../../pkg/device/index.js';
import { createEmulatedDevice, removeEmulatedDevice } from '../../testkit/emulated-device.js';

const MiB = 1 << 20;
const DEVICE_SIZE = 256 * MiB;

interface Row {
  op: string;
  size: string;
  gbps: number;
  perOp: string;
}

/** Runs `fn` repeatedly for about `seconds`; returns ops/second. */
function measure(seconds: number, fn: () => void): number {
  fn(); // warm up (faults pages in, JITs the path)
  let ops = 0;
  const start = process.hrtime.bigint();
  const budget = BigInt(Math.round(seconds * 1e9));
  let elapsed = 0n;
  while (elapsed < budget) {
    for (let i = 0; i < 8; i++) fn();
    ops += 8;
    elapsed = process.hrtime.bigint() - start;
  }
  return ops / (Number(elapsed) / 1e9);
}

function fmtTime(sec: number): string {
  if (sec < 1e-6) return `${(sec * 1e9).toFixed(0)} ns`;
  if (sec < 1e-3) return `${(sec * 1e6).toFixed(1)} µs`;
  return `${(sec * 1e3).toFixed(2)} ms`;
}

function benchSize(dev: DaxDevice, len: number, seconds: number): Row[] {
  const label = len >= MiB ? `${len / MiB} MiB` : `${len} B`;
  const off = 16 * MiB;
  const target = Buffer.alloc(len);
  const src = Buffer.alloc(len, 0x5a);
  dev.write(off, src);
  const longView = dev.view(off, len);
  const cases: [string, () => void][] = [
    ['read (new Buffer)', () => void dev.read(off, len)],
    ['readInto', () => void dev.readInto(off, target)],
    ['write', () => dev.write(off, src)],
    ['view + Buffer.copy', () => void dev.view(off, len).copy(target)],
    ['Buffer.copy from view', () => void longView.copy(target)],
    ['Buffer.copy into view', () => void src.copy(longView)],
  ];
  return cases.map(([op, fn]) => {
    const opsPerSec = measure(seconds, fn);
    return { op, size: label, gbps: (opsPerSec * len) / 1e9, perOp: fmtTime(1 / opsPerSec) };
  });
}

export function run(seconds = 0.3): Row[] {
  const name = `bench-copy-${process.pid}`;
  const dev = createEmulatedDevice(name, DEVICE_SIZE, { fresh: true });
  try {
    dev.write(0, Buffer.alloc(DEVICE_SIZE)); // fault every page in before timing
    const rows: Row[] = [];
    for (const len of [64, 4096, MiB, 64 * MiB]) rows.push(...benchSize(dev, len, seconds));
    console.log(
      `device copy bench: ${dev.kind} ${DEVICE_SIZE / MiB} MiB, flush=${dev.flushMethod}, node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg()[0]?.toFixed(1)}`,
    );
    console.log(`${'op'.padEnd(24)}${'size'.padStart(8)}${'GB/s'.padStart(9)}${'per op'.padStart(12)}`);
    for (const r of rows) {
      console.log(`${r.op.padEnd(24)}${r.size.padStart(8)}${r.gbps.toFixed(2).padStart(9)}${r.perOp.padStart(12)}`);
    }
    // Cost of cache maintenance per 4 KiB (what a famfs log append pays for a few lines).
    const flushOps = measure(seconds, () => dev.flush(0, 4096));
    const invalOps = measure(seconds, () => dev.invalidate(0, 4096));
    console.log(`flush(4 KiB) ${fmtTime(1 / flushOps)}   invalidate(4 KiB) ${fmtTime(1 / invalOps)}`);
    return rows;
  } finally {
    dev.close();
    removeEmulatedDevice(name);
  }
}

if (require.main === module) {
  const i = process.argv.indexOf('--seconds');
  run(i > 0 ? Number(process.argv[i + 1]) : 0.3);
}
