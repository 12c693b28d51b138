import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';

import { DaxDevice, DeviceError, loadNative, openDevice, type DeviceErrorCode } from '../pkg/device/index.js';
import type { NativeDeviceHandle } from '../pkg/device/native.js';
import { createEmulatedDevice, emulatedDevicePath, removeEmulatedDevice } from '../testkit/emulated-device.js';

const MiB = 1 << 20;
const deviceModule = path.join(__dirname, '..', 'pkg', 'device', 'index.js');
const emulatedModule = path.join(__dirname, '..', 'testkit', 'emulated-device.js');
const prefix = `devtest-${process.pid}`;

/** build/Release/famfs_test.node: the device layer plus test hooks, never shipped (native/test/). */
interface TestAddon {
  DaxDevice: new (path: string, options: object) => NativeDeviceHandle;
  testing: {
    faultStress(
      device: NativeDeviceHandle,
      faultOffset: number,
      goodOffset: number,
      threads: number,
      iterations: number,
    ): { faults: number; ok: number; wrongAddress: number };
  };
}
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a .node file has no import form
const testAddon = require(path.join(__dirname, '..', '..', 'build', 'Release', 'famfs_test.node')) as TestAddon;
let counter = 0;

/** A fresh emulated device with a unique name; closed and removed after each test. */
const opened: { name: string; dev: DaxDevice }[] = [];
function fresh(size = 8 * MiB): { name: string; file: string; dev: DaxDevice } {
  const name = `${prefix}-${counter++}`;
  const dev = createEmulatedDevice(name, size, { fresh: true });
  opened.push({ name, dev });
  return { name, file: emulatedDevicePath(name), dev };
}

function expectCode(fn: () => unknown, code: DeviceErrorCode): DeviceError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof DeviceError, `expected DeviceError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}, nothing thrown`);
}

/** Runs a script in a separate node process; `DEV` in it is the device module. */
function runNode(script: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const r = spawnSync(
    process.execPath,
    ['-e', `const DEV = require(${JSON.stringify(deviceModule)});\nconst EMU = require(${JSON.stringify(emulatedModule)});\n${script}`],
    {
      encoding: 'utf8',
      timeout: 30_000,
    },
  );
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

afterEach(() => {
  for (const { name, dev } of opened.splice(0)) {
    dev.close();
    removeEmulatedDevice(name);
  }
});

describe('device: open and map', () => {
  it('creates, sizes and maps an emulation file in /dev/shm', () => {
    const { file, dev } = fresh(8 * MiB);
    assert.equal(file, `/dev/shm/famfs-${prefix}-${counter - 1}`);
    assert.equal(fs.statSync(file).size, 8 * MiB);
    assert.equal(dev.size, 8 * MiB);
    assert.equal(dev.kind, 'file');
    assert.equal(dev.alignment, 4096);
    assert.equal(typeof dev.mapSync, 'boolean');
    assert.equal(dev.failed, false);
    assert.equal(dev.readOnly, false);
    // A new file reads as zeros.
    assert.ok(dev.read(0, 64 * 1024).equals(Buffer.alloc(64 * 1024)));
  });

  it('reopens an existing file at its size, and refuses to re-create it with another size', () => {
    const { file, dev } = fresh(4 * MiB);
    dev.write(10, Buffer.from('kept'));
    const again = openDevice(file, { create: { size: 4 * MiB } });
    assert.equal(again.read(10, 4).toString(), 'kept');
    again.close();
    const plain = openDevice(file);
    assert.equal(plain.size, 4 * MiB);
    plain.close();
    expectCode(() => openDevice(file, { create: { size: 8 * MiB } }), 'EEXIST');
    assert.equal(fs.statSync(file).size, 4 * MiB);
  });

  it('reports the flush method chosen from cpuid', () => {
    const { dev } = fresh(MiB);
    const flags = new Set((/^flags\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(/\s+/));
    const expected = flags.has('clwb') ? 'clwb' : flags.has('clflushopt') ? 'clflushopt' : 'clflush';
    assert.equal(dev.flushMethod, expected);
    assert.equal(loadNative().flushMethod, expected);
    assert.equal(dev.invalidateMethod, flags.has('clflushopt') ? 'clflushopt' : 'clflush');
  });

  it('refuses paths that are missing, not devdax, or neither device nor file', () => {
    expectCode(() => openDevice(`/dev/shm/famfs-${prefix}-missing`), 'ENOENT');
    const notDax = expectCode(() => openDevice('/dev/null'), 'ENOTDAX');
    assert.match(notDax.message, /not a devdax/);
    expectCode(() => openDevice('/dev/shm'), 'EINVAL');
    expectCode(() => openDevice(`/dev/shm/famfs-${prefix}-x`, { create: { size: 0 } }), 'EINVAL');
    assert.equal(fs.existsSync(`/dev/shm/famfs-${prefix}-x`), false);
    expectCode(() => createEmulatedDevice('../etc', MiB), 'EINVAL');
  });

  it('maps an aligned window and refuses misaligned or oversized ones', () => {
    const { file, dev } = fresh(8 * MiB);
    dev.write(2 * MiB + 5, Buffer.from('window'));
    const win = openDevice(file, { window: { offset: 2 * MiB, length: 4 * MiB } });
    assert.equal(win.size, 4 * MiB);
    assert.equal(win.read(5, 6).toString(), 'window');
    expectCode(() => win.read(4 * MiB, 1), 'ERANGE');
    win.close();
    expectCode(() => openDevice(file, { window: { offset: 100 } }), 'EINVAL');
    expectCode(() => openDevice(file, { window: { offset: 0, length: 4097 } }), 'EINVAL');
    expectCode(() => openDevice(file, { window: { offset: 4 * MiB, length: 8 * MiB } }), 'ERANGE');
    expectCode(() => openDevice(file, { window: { offset: 8 * MiB } }), 'ERANGE');
  });
});

describe('device: access', () => {
  it('copyPersistent copies exactly, at any alignment and length (non-temporal body, ragged edges), and overlapping ranges like memmove', () => {
    const { dev } = fresh(16 * MiB);
    const data = crypto.randomBytes(5 * MiB);
    dev.write(0, data);
    // Lengths around the 64-byte lines and the 16 KiB four-page blocks, unaligned both sides.
    for (const [dst, src, len] of [
      [8 * MiB, 0, 5 * MiB],
      [8 * MiB + 3, 7, 16384 * 3 + 129],
      [8 * MiB + 64, 64, 63],
      [8 * MiB + 1, 5, 1],
      [9 * MiB + 61, 1000, 16384 + 64 * 5 + 3],
      [10 * MiB, 33, 4 * MiB + 11],
    ]) {
      dev.write(dst, Buffer.alloc(len + 128, 0xee).subarray(0, len));
      dev.copyPersistent(dst, src, len);
      assert.ok(dev.read(dst, len).equals(data.subarray(src, src + len)), `copy of ${len} bytes from ${src} to ${dst}`);
    }
    // The bytes right after a copy are untouched.
    dev.write(12 * MiB, Buffer.alloc(256, 0x11));
    dev.copyPersistent(12 * MiB, 0, 100);
    assert.ok(dev.read(12 * MiB + 100, 156).equals(Buffer.alloc(156, 0x11)));
    // Overlapping: memmove semantics.
    dev.write(MiB, data.subarray(0, 100_000));
    dev.copyPersistent(MiB + 4096 + 5, MiB, 100_000);
    assert.ok(dev.read(MiB + 4096 + 5, 100_000).equals(data.subarray(0, 100_000)));
  });

  it('round-trips write/read/readInto/copy, with number and bigint offsets', () => {
    const { dev } = fresh(8 * MiB);
    const data = crypto.randomBytes(3 * MiB + 17);
    dev.write(MiB + 3, data);
    assert.ok(dev.read(MiB + 3, data.length).equals(data));
    const into = Buffer.alloc(1000);
    assert.equal(dev.readInto(MiB + 3 + 500, into), 1000);
    assert.ok(into.equals(data.subarray(500, 1500)));
    // copy within the device, including an overlapping (memmove) one
    dev.copy(6 * MiB, MiB + 3, 1000);
    assert.ok(dev.read(6 * MiB, 1000).equals(data.subarray(0, 1000)));
    dev.copy(6 * MiB + 10, 6 * MiB, 1000);
    assert.ok(dev.read(6 * MiB + 10, 1000).equals(data.subarray(0, 1000)));
    // bigint offsets on the native handle
    assert.ok(dev.nativeHandle.read(BigInt(MiB + 3), 16n).equals(data.subarray(0, 16)));
    // Uint8Array subarray (byteOffset != 0) as source
    const u8 = new Uint8Array([9, 9, 1, 2, 3, 9]).subarray(2, 5);
    dev.write(0, u8);
    assert.deepEqual([...dev.read(0, 3)], [1, 2, 3]);
  });

  it('readFresh reads like invalidate + readInto; writeFlushIf writes only when every check range reads as expected', () => {
    const { dev } = fresh(4 * MiB);
    const data = crypto.randomBytes(600);
    dev.write(MiB, data);
    const into = Buffer.alloc(600);
    dev.readFresh(MiB, into);
    assert.ok(into.equals(data));
    const empty = Buffer.alloc(544);
    const entry = crypto.randomBytes(544);
    // An empty slot: written and flushed.
    assert.equal(dev.writeFlushIf(2 * MiB, entry, 2 * MiB, empty), true);
    assert.ok(dev.read(2 * MiB, 544).equals(entry));
    // Not empty any more: refused, nothing written.
    assert.equal(dev.writeFlushIf(2 * MiB, crypto.randomBytes(544), 2 * MiB, empty), false);
    assert.ok(dev.read(2 * MiB, 544).equals(entry));
    // Two checks: both must match; a mismatch in the second one writes nothing either.
    const fenceA = dev.read(MiB, 16);
    const fenceB = dev.read(MiB + 100, 128);
    const counters = crypto.randomBytes(16);
    assert.equal(dev.writeFlushIf(3 * MiB, counters, MiB, fenceA, MiB + 100, fenceB), true);
    assert.ok(dev.read(3 * MiB, 16).equals(counters));
    dev.write(MiB + 227, Buffer.from([data[327] ^ 0xff])); // the last byte of the second range
    assert.equal(dev.writeFlushIf(3 * MiB, crypto.randomBytes(16), MiB, fenceA, MiB + 100, fenceB), false);
    assert.ok(dev.read(3 * MiB, 16).equals(counters));
    // Without data: only the answer.
    assert.equal(dev.writeFlushIf(0, undefined, MiB, fenceA), true);
    assert.equal(dev.writeFlushIf(0, undefined, MiB + 100, fenceB), false);
    // A check range larger than the native stack buffer.
    const big = crypto.randomBytes(5000);
    dev.write(MiB + 8192, big);
    assert.equal(dev.writeFlushIf(0, undefined, MiB + 8192, big), true);
    big[4999] ^= 1;
    assert.equal(dev.writeFlushIf(0, undefined, MiB + 8192, big), false);
    // Bad arguments are refused before anything is read or written.
    expectCode(() => dev.writeFlushIf(4 * MiB - 8, counters, MiB, fenceA), 'ERANGE');
    expectCode(() => dev.writeFlushIf(3 * MiB, Buffer.alloc(16), 4 * MiB - 8, fenceA), 'ERANGE');
    expectCode(() => dev.readFresh(4 * MiB - 8, Buffer.alloc(16)), 'ERANGE');
    assert.ok(dev.read(3 * MiB, 16).equals(counters));
  });

  it('view() is zero-copy in both directions and outlives close()', () => {
    const { file, dev } = fresh(4 * MiB);
    const v = dev.view(4096, 8192);
    dev.write(4096, Buffer.from('through-write'));
    assert.equal(v.subarray(0, 13).toString(), 'through-write');
    v.write('through-view', 100);
    assert.equal(dev.read(4196, 12).toString(), 'through-view');
    dev.close();
    expectCode(() => dev.read(0, 1), 'ECLOSED');
    assert.equal(v.subarray(100, 112).toString(), 'through-view');
    assert.equal(fs.readFileSync(file).subarray(4196, 4208).toString(), 'through-view');
  });

  it('bounds-checks every call and touches nothing on a refused one', () => {
    const { dev } = fresh(MiB);
    dev.write(MiB - 4, Buffer.from([1, 2, 3, 4]));
    expectCode(() => dev.read(MiB, 1), 'ERANGE');
    expectCode(() => dev.read(MiB - 1, 2), 'ERANGE');
    expectCode(() => dev.read(-1, 1), 'ERANGE');
    expectCode(() => dev.read(0.5, 1), 'ERANGE');
    expectCode(() => dev.read(2 ** 53, 1), 'ERANGE');
    expectCode(() => dev.read(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER), 'ERANGE');
    expectCode(() => dev.write(MiB - 2, Buffer.from([9, 9, 9, 9])), 'ERANGE');
    expectCode(() => dev.readInto(MiB - 2, Buffer.alloc(4)), 'ERANGE');
    expectCode(() => dev.copy(0, MiB - 2, 4), 'ERANGE');
    expectCode(() => dev.copy(MiB - 2, 0, 4), 'ERANGE');
    expectCode(() => dev.flush(0, MiB + 1), 'ERANGE');
    expectCode(() => dev.invalidate(MiB, 64), 'ERANGE');
    expectCode(() => dev.view(MiB - 1, 2), 'ERANGE');
    // the raw native handle throws plain Errors carrying the same codes
    assert.throws(() => dev.nativeHandle.read(-1n, 1), { code: 'ERANGE' });
    assert.throws(() => dev.nativeHandle.read(2n ** 64n, 1), { code: 'ERANGE' });
    assert.throws(() => dev.nativeHandle.read('0' as unknown as number, 1), { code: 'EINVAL' });
    assert.deepEqual([...dev.read(MiB - 4, 4)], [1, 2, 3, 4]);
    assert.equal(dev.read(MiB, 0).length, 0);
    assert.equal(dev.failed, false);
  });

  it('flush and invalidate run over any range and report their method', () => {
    const { dev } = fresh(4 * MiB);
    dev.write(123, Buffer.from('persist me'));
    dev.flush(123, 10);
    dev.flush(0, 4 * MiB);
    dev.invalidate(100, 1);
    dev.invalidate(0, 4 * MiB);
    dev.flush(4 * MiB, 0);
    assert.equal(dev.read(123, 10).toString(), 'persist me');
    assert.match(dev.flushMethod, /^(clwb|clflushopt|clflush)$/);
    assert.match(dev.invalidateMethod, /^(clflushopt|clflush)$/);
  });

  it('zero() clears exactly its range, ragged edges included, and persists without a flush', () => {
    const { file, dev } = fresh(4 * MiB);
    dev.write(0, Buffer.alloc(4 * MiB, 0xab));
    dev.zero(5, 3 * MiB + 70);
    const all = dev.read(0, 4 * MiB);
    for (const [from, to, want] of [
      [0, 5, 0xab],
      [5, 5 + 3 * MiB + 70, 0],
      [5 + 3 * MiB + 70, 4 * MiB, 0xab],
    ] as const) {
      assert.ok(
        all.subarray(from, to).every((b) => b === want),
        `bytes ${from}..${to} should be 0x${want.toString(16)}`,
      );
    }
    // Another process reading the file (not our mapping) sees the zeros.
    const fd = fs.openSync(file, 'r');
    const b = Buffer.alloc(64);
    fs.readSync(fd, b, 0, 64, 2 * MiB);
    fs.closeSync(fd);
    assert.ok(b.every((x) => x === 0));
    expectCode(() => dev.zero(4 * MiB - 10, 11), 'ERANGE');
    const ro = openDevice(file, { readOnly: true });
    expectCode(() => ro.zero(0, 10), 'EACCES');
    ro.close();
  });

  it('refuses writes on a read-only open and leaves the bytes alone', () => {
    const { file, dev } = fresh(MiB);
    dev.write(0, Buffer.from('original'));
    const ro = openDevice(file, { readOnly: true });
    assert.equal(ro.readOnly, true);
    assert.equal(ro.read(0, 8).toString(), 'original');
    const err = expectCode(() => ro.write(0, Buffer.from('changed!')), 'EACCES');
    assert.match(err.message, /read-only/);
    expectCode(() => ro.copy(0, 100, 8), 'EACCES');
    ro.flush(0, 4096);
    ro.invalidate(0, 4096);
    assert.equal(ro.failed, false);
    ro.close();
    assert.equal(fs.readFileSync(file).subarray(0, 8).toString(), 'original');
  });

  it('shares bytes with another process mapping the same file', () => {
    const { file, dev } = fresh(4 * MiB);
    const mine = crypto.randomBytes(4096);
    dev.write(MiB, mine);
    dev.flush(MiB, mine.length);
    const r = runNode(`
      const d = DEV.openDevice(${JSON.stringify(file)});
      d.invalidate(${MiB}, 4096);
      process.stdout.write(d.read(${MiB}, 4096).toString('hex'));
      d.write(${2 * MiB}, Buffer.from('from-child-' + process.pid));
      d.flush(${2 * MiB}, 64);
      d.close();`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, mine.toString('hex'));
    dev.invalidate(2 * MiB, 64);
    assert.match(dev.read(2 * MiB, 32).toString('latin1'), /^from-child-\d+/);
  });
});

describe('device: memory faults (SIGBUS)', () => {
  it('turns SIGBUS from a shrunk backing file into EFAULT_DEVICE and fails only that device', () => {
    const a = fresh(4 * MiB);
    const b = fresh(4 * MiB);
    a.dev.write(3 * MiB, Buffer.from('before'));
    b.dev.write(0, Buffer.from('healthy'));
    fs.truncateSync(a.file, MiB); // pages past 1 MiB are gone under the live mapping
    assert.equal(a.dev.read(0, 16).length, 16); // still-backed part reads fine
    const err = expectCode(() => a.dev.read(3 * MiB, 6), 'EFAULT_DEVICE');
    assert.equal(typeof err.offset, 'number');
    assert.ok(err.offset! >= 3 * MiB && err.offset! < 3 * MiB + 6, `offset ${err.offset}`);
    assert.match(err.message, /0x300000/);
    assert.match(err.message, /marked failed/);
    assert.equal(a.dev.failed, true);
    assert.match(a.dev.failureMessage ?? '', /SIGBUS/);
    // Later calls fail fast with the same code, even on ranges that are still backed.
    expectCode(() => a.dev.read(0, 1), 'EFAULT_DEVICE');
    expectCode(() => a.dev.write(0, Buffer.from('x')), 'EFAULT_DEVICE');
    expectCode(() => a.dev.flush(0, 64), 'EFAULT_DEVICE');
    // The other device and this process are fine.
    assert.equal(b.dev.failed, false);
    assert.equal(b.dev.read(0, 7).toString(), 'healthy');
    b.dev.write(7, Buffer.from('!'));
    assert.equal(b.dev.read(0, 8).toString(), 'healthy!');
  });

  it('catches faults in write, readInto, copy, flush and invalidate too', () => {
    const ops: [string, (d: DaxDevice) => unknown][] = [
      ['write', (d) => d.write(2 * MiB, Buffer.alloc(4096, 1))],
      ['readInto', (d) => d.readInto(2 * MiB, Buffer.alloc(100))],
      ['copy', (d) => d.copy(0, 2 * MiB, 4096)],
      ['flush', (d) => d.flush(2 * MiB, 4096)],
      ['invalidate', (d) => d.invalidate(2 * MiB, 4096)],
      ['invalidate', (d) => d.readFresh(2 * MiB, Buffer.alloc(100))],
      ['invalidate', (d) => d.writeFlushIf(0, Buffer.alloc(8), 2 * MiB, Buffer.alloc(64))],
      ['write', (d) => d.writeFlushIf(2 * MiB, Buffer.alloc(64, 1))],
      ['zero', (d) => d.zero(2 * MiB, 4096)],
    ];
    for (const [what, op] of ops) {
      const { file, dev } = fresh(4 * MiB);
      dev.write(2 * MiB, Buffer.alloc(4096, 7)); // make the page resident first
      fs.truncateSync(file, 0);
      const err = expectCode(() => op(dev), 'EFAULT_DEVICE');
      assert.match(err.message, new RegExp(what === 'readInto' ? 'read' : what), what);
      assert.equal(dev.failed, true, what);
    }
  });

  it('catches the fault inside a worker_thread, and the main thread keeps working', async () => {
    const { dev } = fresh(MiB);
    dev.write(0, Buffer.from('main'));
    const workerFile = `/dev/shm/famfs-${prefix}-worker`;
    const code = `
      const { parentPort, workerData } = require('worker_threads');
      const fs = require('fs');
      const DEV = require(workerData.mod);
      const d = DEV.openDevice(workerData.file, { create: { size: 4 << 20 } });
      d.write(3 << 20, Buffer.from('w'));
      fs.truncateSync(workerData.file, 0);
      let result;
      try { d.read(3 << 20, 1); result = { thrown: false }; }
      catch (e) { result = { thrown: true, name: e.name, code: e.code, failed: d.failed }; }
      d.close();
      fs.rmSync(workerData.file, { force: true });
      parentPort.postMessage(result);`;
    const result = await new Promise<unknown>((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { mod: deviceModule, file: workerFile } });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (c) => (c !== 0 ? reject(new Error(`worker exited ${c}`)) : undefined));
    });
    assert.deepEqual(result, { thrown: true, name: 'DeviceError', code: 'EFAULT_DEVICE', failed: true });
    assert.equal(dev.read(0, 4).toString(), 'main');
    assert.equal(dev.failed, false);
  });

  it('guards C++ threads concurrently: every thread faults and recovers, many times', () => {
    const { file, dev } = fresh(4 * MiB);
    dev.write(0, Buffer.alloc(64, 1));
    dev.write(3 * MiB, Buffer.alloc(64, 2));
    // The hook lives in the test-only addon (the same device sources plus faultStress), which maps
    // the file with its own DaxDevice.
    const handle = new testAddon.DaxDevice(file, {});
    try {
      fs.truncateSync(file, MiB);
      const r = testAddon.testing.faultStress(handle, 3 * MiB, 0, 8, 2000);
      assert.deepEqual(r, { faults: 16000, ok: 16000, wrongAddress: 0 });
    } finally {
      handle.close();
    }
  });

  it('still crashes on a fault outside any guarded call (unguarded view), as a real bug should', () => {
    const name = `${prefix}-crash`;
    const r = runNode(`
      const fs = require('fs');
      const d = EMU.createEmulatedDevice(${JSON.stringify(name)}, 4 << 20, { fresh: true });
      const v = d.view(0, 4 << 20);
      v[3 << 20] = 1;
      fs.truncateSync(EMU.emulatedDevicePath(${JSON.stringify(name)}), 0);
      try { d.read(3 << 20, 1); } catch (e) { process.stdout.write(e.code + '\\n'); }
      v[3 << 20] = 2; // unguarded: must kill the process with SIGBUS
      process.stdout.write('survived\\n');`);
    removeEmulatedDevice(name);
    assert.equal(r.stdout, 'EFAULT_DEVICE\n');
    assert.equal(r.signal, 'SIGBUS', `status ${r.status} signal ${r.signal} stderr ${r.stderr}`);
  });

  it("passes SIGSEGV it does not own to V8's handler (wasm out-of-bounds traps still work)", () => {
    loadNative(); // our handler is installed on top of V8's from here on
    // (module (memory 1) (func (export "load") (param i32) (result i32) local.get 0 i32.load))
    const wasm = new Uint8Array([
      0, 97, 115, 109, 1, 0, 0, 0, 1, 6, 1, 96, 1, 127, 1, 127, 3, 2, 1, 0, 5, 3, 1, 0, 1, 7, 8, 1, 4, 108, 111, 97, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 40, 2, 0,
      11,
    ]);
    // tsconfig's lib has no WebAssembly typings: describe the three members used here.
    const WA = (
      globalThis as unknown as {
        WebAssembly: {
          Module: new (bytes: Uint8Array) => object;
          Instance: new (module: object) => { exports: Record<string, unknown> };
          RuntimeError: new () => Error;
        };
      }
    ).WebAssembly;
    const instance = new WA.Instance(new WA.Module(wasm));
    const load = instance.exports['load'] as (addr: number) => number;
    assert.equal(load(0), 0);
    assert.throws(() => load(1 << 30), WA.RuntimeError);
  });

  it('does not swallow a SIGBUS sent with kill()', () => {
    const r = runNode(`DEV.loadNative(); process.kill(process.pid, 'SIGBUS'); setTimeout(() => process.stdout.write('survived'), 200);`);
    assert.equal(r.signal, 'SIGBUS');
    assert.equal(r.stdout, '');
  });
});
