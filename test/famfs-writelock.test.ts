/**
 * One famfs writer at a time on the master host. The famfs CLI next to a running controller, or two
 * controller processes during a rollout, are separate processes of one master: without a lock
 * between them, two that both caught up to next_index N both write slot N (one entry lost, maybe
 * after hosts replayed it; files lost or two files on the same memory). Every FamfsFs write holds
 * the device's flock(2) writer lock from its catch-up to its header publish.
 */
import { strict as assert } from 'assert';
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import { randomBytes, randomUUID } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';

import * as grpc from '@grpc/grpc-js';

import { openDevice } from '../pkg/device/index.js';
import {
  ALLOC_UNIT,
  FamfsError,
  FamfsFs,
  fmapExtents,
  fsck,
  readCleanMap,
  readExtBlock,
  readHostSlots,
  writeExtBlock,
  type Extent,
} from '../pkg/famfs/index.js';
import { CsiClient } from '../pkg/csi/client.js';
import { DEFAULT_DRIVER_NAME, startDriver } from '../pkg/csi/driver.js';
import { toCsiError } from '../pkg/csi/errors.js';
import type { CreateVolumeResponse } from '../pkg/csi/types.js';
import { LOG_WRITER, spawnLogWriter, type WriterLine } from './helpers/log-writer-child.js';

const MiB = 1 << 20;
const GiB = 1 << 30;
const MASTER = '11111111-2222-4333-8444-5555aaaa0001';
const MASTER2 = '11111111-2222-4333-8444-5555aaaa0002';
const WRITER = LOG_WRITER;
const CLI = path.join(__dirname, '..', 'cmd', 'famfs.js');

function devicePath(): string {
  return `/dev/shm/famfs-writelock-${process.pid}-${randomBytes(4).toString('hex')}.img`;
}

function mkfs(p: string, size: number): void {
  const dev = openDevice(p, { create: { size } });
  try {
    FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: p });
  } finally {
    dev.close();
  }
}

/** Starts `log-writer hold` and resolves once it holds the writer lock (or the host-slot lock). */
async function holdLock(p: string, which: 'writer' | 'slots' = 'writer'): Promise<ChildProcess> {
  const child = spawn(process.execPath, [WRITER, 'hold', p, ...(which === 'slots' ? ['slots'] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('locked')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`lock holder exited ${code} before taking the lock (${out.trim()})`)));
  });
  return child;
}

async function kill9(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  child.kill('SIGKILL');
  await gone;
}

function overlap(a: Pick<Extent, 'offset' | 'len'>, b: Pick<Extent, 'offset' | 'len'>): boolean {
  return a.offset < b.offset + b.len && b.offset < a.offset + a.len;
}

/** Emulation files and child processes of the running case: removed and killed after it (cleanUp). */
const made: string[] = [];
const children: ChildProcess[] = [];

async function cleanUp(): Promise<void> {
  for (const c of children.splice(0)) await kill9(c);
  for (const p of made.splice(0)) fs.rmSync(p, { force: true });
}

/** A new famfs on a new emulation file of `size` bytes, removed after the case. */
function newFamfs(size: number): string {
  const p = devicePath();
  made.push(p);
  mkfs(p, size);
  return p;
}

describe('famfs writer lock: one writer process at a time on the master host', function () {
  this.timeout(300_000);
  afterEach(cleanUp);

  it('writer processes appending at once (creates with parents, deletes, zeroing, compaction): every acknowledged write is in the log exactly once', async () => {
    const p = newFamfs(16 * GiB);
    const WRITERS = 4;
    const COUNT = 300;
    const runs = Array.from({ length: WRITERS }, (_, w) => spawnLogWriter(['create', p, MASTER, `w${w}`, String(COUNT)]));
    children.push(...runs.map((r) => r.child));
    // This process is a writer too (like the controller next to the CLI): creates, deletes,
    // background-zeroer steps, compactions, while the children append.
    const dev = openDevice(p);
    const mine: WriterLine[] = [];
    const errors: string[] = [];
    let alive = WRITERS;
    for (const r of runs) void r.done.then(() => alive--);
    try {
      const m = FamfsFs.open(dev, { hostUuid: MASTER, compactAt: 0 });
      for (let i = 0; alive > 0; i++) {
        const relpath = `parent/d${i % 3}/f${i}`;
        try {
          const n = m.creat(relpath, 2 * MiB, { parents: {} });
          mine.push({ op: 'create', relpath, index: n.index, extents: fmapExtents(n.fmap).map((e) => [e.offset, e.len]) });
          if (i % 2 === 1) {
            m.rm(relpath);
            mine.push({ op: 'delete', relpath, index: n.index });
          }
          if (i % 5 === 0) m.zeroFree({ discard: true, stepBytes: 4 * MiB, maxBytes: 64 * MiB });
          if (i % 40 === 39) m.compact();
        } catch (e) {
          if (!(e instanceof FamfsError && e.code === 'ELOCKED')) errors.push(`parent ${relpath}: ${(e as Error).message}`);
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      dev.close();
    }
    const results = await Promise.all(runs.map((r) => r.done));

    const all: WriterLine[] = [...mine];
    results.forEach((r, w) => {
      assert.equal(r.code, 0, `writer ${w} exited ${r.code}: ${r.err}`);
      for (const l of r.lines) {
        if (l.op === 'error') errors.push(`writer ${w} ${l.relpath}: ${l.code} ${l.message}`);
        else if (l.op !== 'done') all.push(l);
      }
      assert.ok(
        r.lines.some((l) => l.op === 'done'),
        `writer ${w} did not finish`,
      );
    });
    assert.deepEqual(errors.slice(0, 8), [], `${errors.length} writes failed (a failure here is two processes appending at one slot)`);
    const creates = all.filter((l) => l.op === 'create');
    assert.ok(creates.length >= WRITERS * COUNT, `${creates.length} creates acknowledged`);
    // No log index was handed out twice: each slot was written by one writer.
    const byIndex = new Map<number, string>();
    for (const c of creates) {
      const other = byIndex.get(c.index as number);
      assert.equal(other, undefined, `log index ${c.index} acknowledged for both ${other} and ${c.relpath}: one entry overwrote the other`);
      byIndex.set(c.index as number, c.relpath as string);
    }

    // A fresh replay holds exactly what was acknowledged, at the acknowledged index and memory.
    const check = openDevice(p, { readOnly: true });
    try {
      const r = FamfsFs.open(check, { readOnly: true });
      const deleted = new Set(all.filter((l) => l.op === 'delete').map((l) => l.relpath));
      const live: Extent[] = [];
      for (const c of creates) {
        const n = r.lookup(c.relpath as string);
        if (deleted.has(c.relpath)) {
          assert.equal(n, undefined, `${c.relpath} was deleted but is in the log`);
          continue;
        }
        assert.ok(n !== undefined && n.kind === 'file', `acknowledged ${c.relpath} (index ${c.index}) is not in the log`);
        assert.equal(n.index, c.index, `${c.relpath}: log index`);
        const ext = fmapExtents(n.fmap);
        assert.deepEqual(
          ext.map((e) => [e.offset, e.len]),
          c.extents,
          `${c.relpath}: memory`,
        );
        live.push(...ext);
      }
      live.sort((a, b) => a.offset - b.offset);
      for (let i = 1; i < live.length; i++) assert.ok(!overlap(live[i - 1], live[i]), `two live files share memory at 0x${live[i].offset.toString(16)}`);
      // No zeroing step marked memory clean that a file holds.
      const clean = readCleanMap(check, r.superblock.uuid, Math.floor(r.superblock.deviceSize / ALLOC_UNIT)).runs;
      for (let i = 0; i < clean.length; i += 2) {
        const [start, end] = [clean[i] * ALLOC_UNIT, clean[i + 1] * ALLOC_UNIT];
        for (const l of live) assert.ok(!(start < l.offset + l.len && l.offset < end), `clean-map run at unit ${clean[i]} covers a live file's memory`);
      }
      const report = fsck(check);
      assert.deepEqual(report.errors, [], 'fsck');
      assert.equal(report.clean, true, 'fsck clean');
    } finally {
      check.close();
    }
  });

  it('another process holds the lock: a write waits its bound, fails ELOCKED (gRPC UNAVAILABLE) and writes nothing; kill -9 of the holder releases it', async () => {
    const p = newFamfs(1 * GiB);
    const holder = await holdLock(p);
    children.push(holder);
    const dev = openDevice(p, { writerLockWaitMs: 300 });
    try {
      const m = FamfsFs.open(dev, { hostUuid: MASTER });
      const before = m.header();
      const started = Date.now();
      let err: unknown;
      try {
        m.creat('a/b', 2 * MiB, { parents: {} });
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof FamfsError, `creat under a held lock: ${String(err)}`);
      assert.equal(err.code, 'ELOCKED');
      assert.match(err.message, /another famfs writer on this host holds the log lock .*retry/);
      assert.ok(Date.now() - started >= 300, 'waited its bound before failing');
      for (const op of [() => m.mkdir('x'), () => m.compact(), () => m.zeroFree(), () => m.ensureCreateRoom(1)]) {
        assert.throws(op, (e: unknown) => e instanceof FamfsError && e.code === 'ELOCKED');
      }
      const csi = toCsiError(err, 'create volume pvc-1');
      assert.equal(csi.code, grpc.status.UNAVAILABLE);
      assert.match(csi.message, /holds the log lock/);
      // Nothing was written: same header, nothing in the tree, fsck clean.
      assert.deepEqual(m.header(), before);
      assert.equal(m.lookup('a'), undefined);
      assert.equal(fsck(dev).clean, true);

      await kill9(holder);
      const n = m.creat('a/b', 2 * MiB, { parents: {} });
      assert.equal(n.relpath, 'a/b');
      assert.equal(m.header().nextIndex, before.nextIndex + 2);
    } finally {
      dev.close();
    }
  });

  it('nested writes of one process run under the one lock (compactions inside creates), and leave it free', () => {
    const p = newFamfs(4 * GiB);
    const dev = openDevice(p, { writerLockWaitMs: 0 });
    try {
      // compactAt 1e-9: once 1/16 of the log is garbage, a create compacts inside itself.
      const m = FamfsFs.open(dev, { hostUuid: MASTER, compactAt: 1e-9 });
      for (let i = 0; m.activeLog.generation < 2; i++) {
        assert.ok(i < 5000, 'no compaction ran inside a create');
        m.creat(`n/f${i}`, 2 * MiB, { parents: {} });
        m.rm(`n/f${i}`);
      }
      // The lock is free again afterwards: another open of the inode takes it at once.
      const other = openDevice(p, { writerLockWaitMs: 0 });
      try {
        // Nested on one object: only the outermost unlock releases it.
        assert.equal(dev.lockWriter(), true);
        assert.equal(dev.lockWriter(), true);
        dev.unlockWriter();
        assert.equal(other.lockWriter(), false, 'an inner unlock released the lock');
        dev.unlockWriter();
        assert.equal(other.lockWriter(), true);
        assert.throws(
          () => m.mkdir('late'),
          (e: unknown) => e instanceof FamfsError && e.code === 'ELOCKED',
        );
        other.unlockWriter();
        m.mkdir('late');
      } finally {
        other.close();
      }
      assert.equal(fsck(dev).clean, true);
    } finally {
      dev.close();
    }
  });

  it('famfs CLI while another process holds the lock: exit 1, the message says who and what to do, nothing written', async () => {
    const p = newFamfs(1 * GiB);
    const env = { ...process.env, FAMFS_SYSTEM_UUID: MASTER };
    const made1 = spawnSync(process.execPath, [CLI, 'creat', '-s', '2M', p, 'old'], { env, encoding: 'utf8' });
    assert.equal(made1.status, 0, made1.stderr);
    const holder = await holdLock(p);
    children.push(holder);
    for (const args of [
      ['mkdir', '-p', p, 'models/a'],
      ['creat', '-s', '2M', p, 'f'],
      ['rm', p, 'old'],
      ['compact', p],
      ['zero', p],
      ['repair', p],
    ]) {
      const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8' });
      assert.equal(r.status, 1, `famfs ${args.join(' ')}: exit ${r.status} (${r.stderr}${r.stdout})`);
      assert.match(
        r.stderr,
        /another famfs writer on this host holds the log lock \(the famfs CLI or a second controller\).*retry/,
        `famfs ${args[0]}: ${r.stderr}${r.stdout}`,
      );
    }
    const dev = openDevice(p, { readOnly: true });
    try {
      const f = FamfsFs.open(dev, { readOnly: true });
      assert.equal(f.header().nextIndex, 1, 'nothing was appended');
      assert.equal(f.lookup('old')?.kind, 'file');
    } finally {
      dev.close();
    }
    await kill9(holder);
    const ok = spawnSync(process.execPath, [CLI, 'mkdir', '-p', p, 'models/a'], { env, encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
  });

  it('the CSI controller while the famfs CLI holds the lock: CreateVolume answers UNAVAILABLE over gRPC, writes nothing, succeeds once it is free', async () => {
    const p = newFamfs(1 * GiB);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-writelock-'));
    const saved = process.env.FAMFS_SYSTEM_UUID;
    process.env.FAMFS_SYSTEM_UUID = MASTER;
    const d = await startDriver({
      mode: 'controller',
      endpoint: `unix://${path.join(dir, 'csi.sock')}`,
      devicePath: p,
      deviceSize: 0,
      mkfs: false,
      nodeId: 'ctrl',
      driverName: DEFAULT_DRIVER_NAME,
      stateDir: path.join(dir, 'state'),
      pool: 'default',
      zeroIntervalMs: 0,
      log: pino({ level: 'silent' }),
    });
    const client = new CsiClient(d.config.endpoint, 60_000);
    const request = {
      name: 'pvc-locked',
      capacity_range: { required_bytes: String(4 * MiB) },
      volume_capabilities: [{ mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
    };
    try {
      const look = openDevice(p, { readOnly: true });
      const before = FamfsFs.open(look, { readOnly: true }).header().nextIndex;
      const holder = await holdLock(p);
      children.push(holder);
      await assert.rejects(client.call<CreateVolumeResponse>('Controller', 'CreateVolume', request), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAVAILABLE, e.message);
        assert.match(e.details, /another famfs writer on this host holds the log lock .*retry/);
        return true;
      });
      assert.equal(FamfsFs.open(look, { readOnly: true }).header().nextIndex, before, 'nothing was appended');
      await kill9(holder);
      const r = await client.call<CreateVolumeResponse>('Controller', 'CreateVolume', request);
      const after = FamfsFs.open(look, { readOnly: true });
      assert.ok(after.header().nextIndex > before);
      assert.equal(fsck(look).clean, true);
      look.close();
      assert.ok(r.volume.volume_id !== '');
    } finally {
      client.close();
      await d.stop();
      if (saved === undefined) delete process.env.FAMFS_SYSTEM_UUID;
      else process.env.FAMFS_SYSTEM_UUID = saved;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The superblock UUID and extension block of the famfs on `p`, read fresh by a new open. */
function look(p: string) {
  const dev = openDevice(p, { readOnly: true });
  try {
    const f = FamfsFs.open(dev, { readOnly: true });
    const block = readExtBlock(dev, f.superblock.uuid);
    return { sb: f.superblock, block, slots: block ? readHostSlots(dev, block.slotCount) : [], nextIndex: f.header().nextIndex, fsck: fsck(dev) };
  } finally {
    dev.close();
  }
}

describe('famfs writer lock: every host-local writer of shared metadata, not only the log', function () {
  this.timeout(300_000);
  afterEach(cleanUp);

  async function finish(runs: ReturnType<typeof spawnLogWriter>[]): Promise<WriterLine[][]> {
    children.push(...runs.map((r) => r.child));
    const results = await Promise.all(runs.map((r) => r.done));
    return results.map((r, w) => {
      assert.equal(r.code, 0, `process ${w} exited ${r.code}: ${r.err}`);
      assert.ok(
        r.lines.some((l) => l.op === 'done'),
        `process ${w} did not finish: ${r.err}`,
      );
      return r.lines;
    });
  }

  it('two processes taking over at once (two controllers in a rollout): every epoch handed out once, none lost, the superblock names the master the block names', async () => {
    const p = newFamfs(1 * GiB);
    const before = look(p).block?.epoch ?? 0;
    const COUNT = 150;
    // Two host UUIDs so that every take-over also rewrites the superblock's master.
    const startAt = String(Date.now() + 1500);
    const lines = await finish([
      spawnLogWriter(['takeover', p, MASTER, String(COUNT), startAt]),
      spawnLogWriter(['takeover', p, MASTER2, String(COUNT), startAt]),
    ]);
    const epochs = lines
      .flat()
      .filter((l) => l.op === 'epoch')
      .map((l) => l.epoch as number);
    assert.equal(epochs.length, 2 * COUNT);
    const twice = epochs.filter((e, i) => epochs.indexOf(e) !== i);
    assert.deepEqual(twice.slice(0, 8), [], `${twice.length} epochs were handed to both processes (both believe they are the one master)`);
    const after = look(p);
    assert.equal(after.block?.epoch, before + 2 * COUNT, 'every take-over raised the epoch once (none written from a stale read)');
    assert.equal(after.sb.systemUuid, after.block?.masterUuid, 'the superblock and the extension block name the same master');
    assert.deepEqual(after.fsck.errors, []);
  });

  it('two processes acking under one host UUID (a FUSE server and its successor): every ack counted, one slot', async () => {
    const p = newFamfs(1 * GiB);
    const HOST = '11111111-2222-4333-8444-5555aaaa00a0';
    const dev = openDevice(p);
    try {
      FamfsFs.open(dev, { hostUuid: HOST }).ackReplay(HOST, 'racer');
    } finally {
      dev.close();
    }
    const beat0 = look(p).slots.find((s) => s.hostUuid === HOST)?.beat as number;
    const COUNT = 400;
    const startAt = String(Date.now() + 1500);
    await finish([spawnLogWriter(['ack', p, HOST, String(COUNT), startAt]), spawnLogWriter(['ack', p, HOST, String(COUNT), startAt])]);
    const mine = look(p).slots.filter((s) => s.hostUuid === HOST);
    assert.equal(mine.length, 1, 'one slot for the host');
    assert.equal(mine[0].beat - beat0, 2 * COUNT, 'acks written from a stale read of the slot (the same line written twice: the master sees nothing change)');
  });

  it('another process holds the host-slot lock: an ack waits its bound, fails ELOCKED and writes nothing; a write of the log does not wait for it', async () => {
    const p = newFamfs(1 * GiB);
    const dev = openDevice(p, { writerLockWaitMs: 200 });
    try {
      const m = FamfsFs.open(dev, { hostUuid: MASTER });
      m.ackReplay(MASTER, 'me');
      const holder = await holdLock(p, 'slots');
      children.push(holder);
      const slots = () => JSON.stringify(m.hosts());
      const before = slots();
      assert.throws(
        () => m.ackReplay(MASTER, 'me'),
        (e: unknown) => e instanceof FamfsError && e.code === 'ELOCKED',
        'ackReplay under another process host-slot lock',
      );
      assert.equal(slots(), before, 'an ack was written under another process host-slot lock');
      m.creat('f', 2 * MiB);
      assert.equal(m.tree.lookup('f')?.kind, 'file', 'a log write waited for the host-slot lock');
      await kill9(holder);
      m.ackReplay(MASTER, 'me');
      assert.notEqual(slots(), before, 'the ack after the holder died');
    } finally {
      dev.close();
    }
  });

  it('processes of one host making a missing extension block at once: one block, no host ack cleared by a second block', async () => {
    const p = newFamfs(1 * GiB);
    const HOSTS = 4;
    const uuids = Array.from({ length: HOSTS }, (_, i) => `11111111-2222-4333-8444-5555aaaa00b${i}`);
    for (let round = 0; round < 4; round++) {
      // The block an earlier file system on the device left: not ours, so the next user makes one.
      const dev = openDevice(p);
      try {
        const uuid = FamfsFs.open(dev, { readOnly: true }).superblock.uuid;
        const block = readExtBlock(dev, uuid);
        assert.ok(block);
        writeExtBlock(dev, { ...block, fsUuid: randomUUID() });
        assert.equal(readExtBlock(dev, uuid), undefined);
      } finally {
        dev.close();
      }
      const startAt = String(Date.now() + 1500);
      await finish(uuids.map((u) => spawnLogWriter(['ack', p, u, '1', startAt])));
      const after = look(p);
      assert.ok(after.block, `round ${round}: no block`);
      assert.deepEqual(after.slots.map((s) => s.hostUuid).sort(), uuids, `round ${round}: a host's ack was cleared by another process making the block again`);
    }
  });

  it('another process holds the lock: take-over, making the extension block and mkfs wait their bound, fail ELOCKED and write nothing; an ack does not wait for it', async () => {
    const p = newFamfs(1 * GiB);
    const uuid = look(p).sb.uuid;
    const dev = openDevice(p, { writerLockWaitMs: 200 });
    try {
      const m = FamfsFs.open(dev, { hostUuid: MASTER });
      m.ackReplay(MASTER, 'me');
      const stale = { ...(readExtBlock(dev, uuid) as NonNullable<ReturnType<typeof readExtBlock>>), fsUuid: randomUUID() };
      const holder = await holdLock(p);
      children.push(holder);
      const snapshot = () => dev.read(0, 2 * MiB).toString('base64');
      const before = snapshot();
      const elocked = (e: unknown) => e instanceof FamfsError && e.code === 'ELOCKED';
      assert.throws(() => m.takeOver(MASTER2), elocked, 'takeOver');
      assert.throws(() => FamfsFs.mkfs(dev, { systemUuid: MASTER2, devicePath: p, force: true }), elocked, 'mkfs --force');
      assert.equal(snapshot(), before, 'something was written under another process lock');
      // An ack takes the host-slot lock, not this one: a master appending back to back must not
      // keep this host's FUSE server from publishing its replay position (its self-fence).
      const beat = (): number => m.hosts().find((h) => h.hostUuid === MASTER)!.beat;
      const beat0 = beat();
      m.ackReplay(MASTER, 'me');
      assert.equal(beat(), beat0 + 1, 'the ack under another process writer lock was not published');
      writeExtBlock(dev, stale);
      const stale2 = snapshot();
      assert.throws(() => m.extBlock(), elocked, 'extBlock (making it)');
      assert.equal(snapshot(), stale2, 'the block was made under another process lock');
      const r = spawnSync(process.execPath, [CLI, 'mkfs', '--force', p], { env: { ...process.env, FAMFS_SYSTEM_UUID: MASTER2 }, encoding: 'utf8' });
      assert.equal(r.status, 1, `famfs mkfs --force: exit ${r.status} (${r.stderr}${r.stdout})`);
      assert.match(r.stderr, /another famfs writer on this host holds the log lock.*retry/);
      assert.equal(snapshot(), stale2, 'famfs mkfs --force wrote under another process lock');
      await kill9(holder);
      assert.ok(m.extBlock().epoch > stale.epoch);
      assert.equal(m.takeOver(MASTER), m.extBlock().epoch);
    } finally {
      dev.close();
    }
  });

  it('mkfs --force (famfs mkfs) while a writer process appends: the new file system is whole (fsck clean, nothing of the old log in it) and the writer is fenced', async () => {
    const p = newFamfs(16 * GiB);
    // The device is re-made under the writer once it has appended a few entries.
    const remake = spawn(process.execPath, [WRITER, 'mkfs', p, MASTER], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(remake);
    let remakeOut = '';
    remake.stderr.on('data', (d: Buffer) => (remakeOut += d.toString()));
    const remade = new Promise<number | null>((resolve) => remake.on('close', resolve));
    await new Promise<void>((resolve, reject) => {
      remake.stdout.on('data', (d: Buffer) => {
        remakeOut += d.toString();
        if (remakeOut.includes('ready')) resolve();
      });
      remake.on('exit', (code) => reject(new Error(`mkfs process exited ${code}: ${remakeOut}`)));
    });
    const writer = spawnLogWriter(['create', p, MASTER, 'w', '3000', '3000']);
    await new Promise<void>((resolve) => {
      let n = 0;
      writer.child.stdout?.on('data', (d: Buffer) => {
        n += d.toString().split('"op":"create"').length - 1;
        if (n >= 50) resolve();
      });
      void writer.done.then(() => resolve());
    });
    remake.stdin.end('go\n');
    assert.equal(await remade, 0, `mkfs: ${remakeOut}`);
    const [wrote] = await finish([writer]);
    const after = look(p);
    assert.deepEqual(after.fsck.errors, [], 'the new file system holds what a writer of the old one wrote');
    assert.equal(after.nextIndex, 0, 'entries in the new log (written by the writer of the old one)');
    const before = wrote.filter((l) => l.op === 'create').length;
    assert.ok(before > 0 && before < 3000, `${before} creates before the device was re-made: the two did not overlap (${JSON.stringify(wrote.slice(0, 3))})`);
    const failed = wrote.filter((l) => l.op === 'error');
    assert.ok(failed.length > 0, 'the writer never failed after mkfs');
    for (const l of failed) assert.equal(l.code, 'EFENCED', `${l.relpath}: ${l.message}`);
  });
});
