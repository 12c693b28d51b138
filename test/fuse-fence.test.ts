/**
 * Self-fencing FUSE hosts (issue 11) with a real famfs-fused process and a real mount: a host that
 * cannot prove it stayed inside the reclaim horizon answers EIO instead of serving memory that may
 * already belong to another volume. The test process is the master (pkg/famfs). Needs root and
 * /dev/fuse. hostLiveMs is 1 s on these devices, so the host's fence window is 930 ms.
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { openDevice, type DaxDevice } from '../pkg/device/index.js';
import { encodeHostSlot, HOST_SLOT_SIZE, HOST_SLOTS_OFFSET } from '../pkg/famfs/layout.js';
import { FamfsFs } from '../pkg/famfs/fs.js';
import { fmapExtents, forEachDeviceRun } from '../pkg/famfs/fmap.js';
import type { FileNode } from '../pkg/famfs/tree.js';
import pino from 'pino';
import { controlRequest } from '../pkg/fuse/control-client.js';
import { FuseSupervisor } from '../pkg/fuse/supervisor.js';
import { FusedHost } from './helpers/fused-host';

const MIB = 1024 ** 2;
const MASTER_UUID = '0f0e0d0c-0b0a-4909-8807-0605040302aa';
const HOST_UUID = '0000fe0c-0000-4000-8000-00000000fe0c';
const LIVE_MS = 1000;

const canMount = process.getuid?.() === 0 && fs.existsSync('/dev/fuse');

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return;
    await sleep(20);
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function status(h: FusedHost): Promise<Record<string, unknown>> {
  return await controlRequest(h.socket, { op: 'status' });
}

function fill(dev: DaxDevice, file: FileNode, byte: number): void {
  forEachDeviceRun(file.fmap, 0, file.size, (devOff, _f, len) => {
    dev.write(devOff, Buffer.alloc(len, byte));
    dev.flush(devOff, len);
  });
}

function overlaps(a: FileNode, b: FileNode): boolean {
  return fmapExtents(a.fmap).some((x) => fmapExtents(b.fmap).some((y) => x.offset < y.offset + y.len && y.offset < x.offset + x.len));
}

interface ReadResult {
  ok: boolean;
  code?: string;
  byte0?: number;
  same?: boolean;
}

/**
 * A reader in its own process, holding the file open from before the stall: a read blocks while
 * the FUSE server is stopped and is answered by the server once it runs again.
 */
class Reader {
  private buf = '';
  private waiters: ((r: ReadResult) => void)[] = [];
  private constructor(readonly proc: ChildProcess) {
    proc.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        this.waiters.shift()?.(JSON.parse(line) as ReadResult);
      }
    });
  }

  static async open(file: string): Promise<Reader> {
    const script = `
      const fs = require('fs');
      let fd;
      try { fd = fs.openSync(process.argv[1], 'r'); } catch (e) { process.stdout.write(JSON.stringify({ ok: false, code: e.code }) + '\\n'); process.exit(1); }
      process.stdout.write(JSON.stringify({ ok: true }) + '\\n');
      const buf = Buffer.alloc(65536);
      require('readline').createInterface({ input: process.stdin }).on('line', () => {
        try {
          const n = fs.readSync(fd, buf, 0, buf.length, 0);
          let same = true;
          for (let i = 1; i < n; i++) if (buf[i] !== buf[0]) { same = false; break; }
          process.stdout.write(JSON.stringify({ ok: true, byte0: buf[0], same }) + '\\n');
        } catch (e) {
          process.stdout.write(JSON.stringify({ ok: false, code: e.code }) + '\\n');
        }
      });`;
    const r = new Reader(spawn(process.execPath, ['-e', script, file], { stdio: ['pipe', 'pipe', 'inherit'] }));
    const opened = await r.next();
    assert.equal(opened.ok, true, `reader could not open ${file}: ${opened.code}`);
    return r;
  }

  private next(): Promise<ReadResult> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  read(): Promise<ReadResult> {
    const p = this.next();
    this.proc.stdin!.write('read\n');
    return p;
  }

  close(): void {
    this.proc.kill('SIGKILL');
  }
}

/**
 * Overwrite the whole host-slot table under the host-slot lock, as any writer of slots must: an
 * ack of the server in flight (find its slot, write it) would otherwise land in the middle of
 * this write and keep its slot, and the server would never fence.
 */
function fillSlots(dev: DaxDevice, raw: Buffer): void {
  assert.ok(dev.lockHostSlots(), 'the host-slot lock');
  try {
    dev.write(HOST_SLOTS_OFFSET, raw);
    dev.flush(HOST_SLOTS_OFFSET, raw.length);
  } finally {
    dev.unlockHostSlots();
  }
}

/** The FUSE server's own counters from its status. */
function nativeCounters(st: Record<string, unknown>): { fenced: number; staleHandles: number } {
  return (st['native'] as { counters: { fenced: number; staleHandles: number } }).counters;
}

(canMount ? describe : describe.skip)('self-fencing FUSE host (real mount)', function () {
  this.timeout(60_000);
  let dir: string;
  let devPath: string;
  let dev: DaxDevice;
  let master: FamfsFs;
  let host: FusedHost | undefined;
  const readers: Reader[] = [];

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-fence-'));
    devPath = `/dev/shm/famfs-fence-${process.pid}-${randomBytes(4).toString('hex')}`;
    dev = openDevice(devPath, { create: { size: 256 * MIB } });
    master = FamfsFs.mkfs(dev, { systemUuid: MASTER_UUID, devicePath: devPath, hostLiveMs: LIVE_MS });
    master.takeOver(MASTER_UUID);
    // Direct I/O: every read reaches the server (no page cache answering for it).
    host = await FusedHost.startHost(devPath, dir, HOST_UUID, ['--ack-heartbeat-ms', '100', '--direct-io']);
  });

  afterEach(async () => {
    for (const r of readers.splice(0)) r.close();
    if (host) {
      host.proc.kill('SIGCONT');
      await host.stop();
    }
    host = undefined;
    dev.close();
    fs.rmSync(devPath, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const acked = (): number => master.hostLiveness().find((h) => h.hostUuid === HOST_UUID)?.ackedIndex ?? -1;

  it("a host SIGSTOPped past hostLiveMs never returns the new tenant's bytes once its memory was reused: EIO until it has replayed", async () => {
    const h = host!;
    const victim = master.creat('victim', 4 * MIB, { mode: 0o644 });
    fill(dev, victim, 0xaa);
    await waitFor('the host acked the current log', () => acked() === master.tree.nextIndex);
    const reader = await Reader.open(h.p('victim'));
    readers.push(reader);
    assert.deepEqual(await reader.read(), { ok: true, byte0: 0xaa, same: true });

    process.kill(h.proc.pid!, 'SIGSTOP');
    let during: ReadResult;
    let tenant: FileNode;
    try {
      master.rm('victim');
      // The master watches the stopped host's slot, unchanged, for a full hostLiveMs on its own clock.
      await waitFor('the master to time the stopped host out', () => master.hostLiveness().find((x) => x.hostUuid === HOST_UUID)?.live === false, 5000);
      // Without zero: a copy's placement takes dirty free memory first (clean memory is kept for
      // creates that must read zeros), and the victim's is the only dirty memory on this device.
      tenant = master.creat('tenant-b', 4 * MIB, { mode: 0o644, zero: false });
      assert.ok(overlaps(tenant, victim), "the deleted volume's memory was reused (else this test proves nothing)");
      fill(dev, tenant, 0x5b);
      const ev = master.evictions().find((e) => e.hostUuid === HOST_UUID);
      assert.ok(ev, 'the timeout is recorded on the device');
      assert.ok(master.tree.released.some((r) => r.relpath === 'victim' && r.deleteIndex >= ev.ackedIndex && r.deleteIndex < ev.reclaimUpTo));
      // The reader asks while the host is stopped; the host answers once it runs again.
      const pending = reader.read();
      await sleep(100);
      process.kill(h.proc.pid!, 'SIGCONT');
      during = await pending;
    } finally {
      process.kill(h.proc.pid!, 'SIGCONT');
    }
    assert.notEqual(during.byte0, 0x5b, "the resumed host served the new tenant's bytes from the reused memory");
    assert.deepEqual(during, { ok: false, code: 'EIO' }, 'the resumed host must refuse to serve before it has replayed');
    // Which guard refused it depends on which thread of the resumed host runs first: its FUSE worker
    // (past the fence deadline: counted as fenced) or its replay (the delete applied: the open
    // handle is stale). Both refuse; the count is taken before any other read of the handle.
    const atRefusal = nativeCounters(await status(h));
    assert.ok(atRefusal.fenced + atRefusal.staleHandles >= 1, `the refused read was counted by neither guard (counters ${JSON.stringify(atRefusal)})`);
    // Replayed and acked: the deleted file is gone (its open handle keeps failing), the new one reads right.
    await waitFor('the resumed host acked the current log', () => acked() === master.tree.nextIndex);
    assert.deepEqual(await reader.read(), { ok: false, code: 'EIO' });
    assert.equal(fs.existsSync(h.p('victim')), false);
    const b = fs.readFileSync(h.p('tenant-b'));
    assert.equal(b.length, 4 * MIB);
    assert.ok(b.every((x) => x === 0x5b));
    const st = await status(h);
    assert.equal(st['fenced'], false);
    assert.match(h.output, /self-fenced/);
  });

  it('a host that cannot publish its position fences itself within its window (EIO, status fenced) and recovers once it can', async () => {
    const h = host!;
    const file = master.creat('data', 2 * MIB, { mode: 0o644 });
    fill(dev, file, 0x33);
    await waitFor('the host acked the current log', () => acked() === master.tree.nextIndex);
    const mine = master.hosts().find((s) => s.hostUuid === HOST_UUID)!;
    // Every slot taken by someone else, ours included: the host's acks now fail (no free slot).
    const raw = Buffer.alloc(1024 * HOST_SLOT_SIZE);
    for (let i = 0; i < 1024; i++) {
      encodeHostSlot({
        hostUuid: `aaaaaaaa-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
        ackedIndex: master.tree.nextIndex,
        beat: 1,
        name: 'filler',
      }).copy(raw, i * HOST_SLOT_SIZE);
    }
    fillSlots(dev, raw);
    let fenced = false;
    const deadline = Date.now() + 5000;
    while (!fenced && Date.now() < deadline) {
      fenced = (await status(h))['fenced'] === true;
      if (!fenced) await sleep(50);
    }
    assert.equal(fenced, true, 'a host whose acks fail must fence itself within its window');
    assert.throws(
      () => fs.readFileSync(h.p('data')),
      (e: NodeJS.ErrnoException) => e.code === 'EIO',
    );
    const flush = await controlRequest(h.socket, { op: 'flush', path: 'data' });
    assert.equal(flush.ok, false);
    // Give the host its slot back: it acks, re-arms, and serves again.
    const off = HOST_SLOTS_OFFSET + mine.slot * HOST_SLOT_SIZE;
    dev.write(off, Buffer.alloc(HOST_SLOT_SIZE));
    dev.flush(off, HOST_SLOT_SIZE);
    await waitFor('the host acked again', () => master.hosts().some((s) => s.hostUuid === HOST_UUID));
    await waitFor('unfenced', () => {
      try {
        return fs.readFileSync(h.p('data'))[0] === 0x33;
      } catch {
        return false;
      }
    });
  });

  it("the node plugin's health check (which drives the CSI volume condition) reports a fenced server", async () => {
    // The plugin's own supervisor runs this server: its default ack heartbeat (10 s) is capped at a
    // quarter of the fence window, so a healthy server never fences.
    const sup = new FuseSupervisor({
      stateDir: path.join(dir, 'plugin'),
      pool: 'fence',
      devicePath: devPath,
      hostUuid: '0000fe0c-0000-4000-8000-0000000000ff',
      log: pino({ level: 'silent' }),
      pollMs: 50,
    });
    try {
      await sup.ensure();
      await sleep(2 * LIVE_MS);
      let h = await sup.health();
      assert.ok(h.state === 'serving' && !h.fenced, `healthy after two windows: ${JSON.stringify(h)}`);
      const saved = dev.read(HOST_SLOTS_OFFSET, 1024 * HOST_SLOT_SIZE);
      const raw = Buffer.alloc(1024 * HOST_SLOT_SIZE);
      for (let i = 0; i < 1024; i++) {
        encodeHostSlot({
          hostUuid: `bbbbbbbb-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
          ackedIndex: master.tree.nextIndex,
          beat: 1,
          name: 'filler',
        }).copy(raw, i * HOST_SLOT_SIZE);
      }
      fillSlots(dev, raw);
      const deadline = Date.now() + 5000;
      do {
        h = await sup.health();
        if (h.state === 'serving' && h.fenced) break;
        await sleep(50);
      } while (Date.now() < deadline);
      assert.ok(h.state === 'serving' && h.fenced, `fenced: ${JSON.stringify(h)}`);
      dev.write(HOST_SLOTS_OFFSET, saved);
      dev.flush(HOST_SLOTS_OFFSET, saved.length);
      const until = Date.now() + 5000;
      do {
        h = await sup.health();
        if (h.state === 'serving' && !h.fenced) break;
        await sleep(50);
      } while (Date.now() < until);
      assert.ok(h.state === 'serving' && !h.fenced, `recovered: ${JSON.stringify(h)}`);
    } finally {
      await sup.stopServer();
    }
  });
});
