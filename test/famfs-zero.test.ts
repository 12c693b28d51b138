/**
 * No zeroing on the create path (issue 15 item 3): memory is zeroed when it is freed (past the
 * reclaim horizon) or once for a fresh device, and the clean map in shared memory (extension block
 * revision 4) says which free units hold only zeros. Whatever happens to the map or the master, no
 * new file ever shows a previous tenant's bytes, and memory a host may still map is never zeroed.
 */
import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

import { openDevice, type DaxDevice } from '../pkg/device/index.js';
import {
  ALLOC_UNIT,
  CLEAN_LINE,
  CLEAN_MAP_OFFSET,
  crc,
  decodeExtBlock,
  encodeCleanLine,
  encodeEntry,
  encodeLogCounters,
  entryOffset,
  EXT,
  EXT_AREA_SIZE,
  EXT_BLOCK_OFFSET,
  FamfsFs,
  LH,
  LOG_OFFSET,
  readCleanMap,
  type FileNode,
} from '../pkg/famfs/index.js';
import { allZero, assertCleanUnitsAreZero, fileBytes, fillPattern, overlaps } from './helpers/clean-map.js';
import { famfsCode, freshFamfs, MASTER_UUID } from './helpers/famfs-image.js';

const MiB = 1 << 20;
const CLI = path.join(__dirname, '..', 'cmd', 'famfs.js');
const HOST = '99999999-8888-4777-8666-000000000001';
const OTHER_MASTER = '22222222-3333-4444-8555-666666666666';

describe('no zeroing on the create path: clean map (pkg/famfs)', () => {
  it('pattern, delete, create over the same memory: the new file reads zeros, with and without background zeroing', () => {
    const { media, fs: m } = freshFamfs();
    for (const background of [false, true, false, true]) {
      const old = m.creat('tenant-a', 40 * MiB, { zero: true });
      fillPattern(media, old);
      m.rm('tenant-a');
      if (background) assert.ok(m.zeroFree().zeroedBytes >= 40 * MiB, 'zeroFree zeroes the freed memory');
      const next = m.creat('tenant-b', 40 * MiB, { zero: true });
      assert.ok(overlaps(old, next), "the new file reuses the old one's memory (the case that could leak)");
      assert.ok(allZero(fileBytes(media, next)), `tenant-b shows tenant-a's bytes (background zeroing ${background})`);
      fillPattern(media, next, 0x5a);
      m.rm('tenant-b');
    }
  });

  it('a create on clean memory does not wait; one that finds only dirty memory zeroes it and counts it (zeroStats)', () => {
    const { media, fs: m } = freshFamfs();
    // A fresh device that was not known to be zero starts dirty: the first create waits.
    const first = m.creat('first', 4 * MiB, { zero: true });
    assert.deepEqual(m.zeroStats, { createsWaited: 1, createWaitBytes: 4 * MiB, freeZeroedBytes: 0 });
    assert.ok(allZero(fileBytes(media, first)));
    const r = m.zeroFree();
    assert.equal(r.cleanMap, true);
    assert.equal(r.dirtyFreeBytes, 0);
    assert.equal(r.zeroedBytes, m.usage().freeBytes);
    assert.equal(m.usage().cleanFreeBytes, m.usage().freeBytes);
    for (let i = 0; i < 5; i++) m.creat(`f${i}`, 2 * MiB, { zero: true });
    assert.equal(m.zeroStats.createsWaited, 1, 'creates on clean memory never zero');
    // Files that are copied into (zero: false) never count.
    fillPattern(media, m.creat('copy-target', 2 * MiB), 0x77);
    m.rm('copy-target');
    // Freed but not zeroed yet: the next create that lands there waits, and says so.
    m.reclaimReplayed();
    const big = m.usage().freeBytes;
    m.creat('all', big, { zero: true });
    assert.equal(m.zeroStats.createsWaited, 2);
    assert.equal(m.zeroStats.createWaitBytes, 4 * MiB + 2 * MiB);
  });

  it('copies (zero: false) take dirty memory first and leave the clean memory to creates that must read zeros', () => {
    const { media, fs: m } = freshFamfs();
    m.zeroFree();
    const a = m.creat('a', 8 * MiB, { zero: true });
    m.creat('b', 8 * MiB, { zero: true });
    fillPattern(media, a);
    m.rm('a');
    m.reclaimReplayed();
    // a's memory is free and dirty, everything after b is clean.
    const copy = m.creat('copy', 8 * MiB);
    assert.ok(overlaps(a, copy), 'the copy target takes the dirty memory');
    const fresh = m.creat('fresh', 8 * MiB, { zero: true });
    assert.ok(!overlaps(a, fresh));
    assert.equal(m.zeroStats.createsWaited, 0);
    assert.ok(allZero(fileBytes(media, fresh)));
  });

  it('memory a host may still map is never zeroed: the deleted bytes stay until the host acks past the delete', () => {
    const { media, fs: m } = freshFamfs();
    m.zeroFree();
    const victim = m.creat('victim', 10 * MiB, { zero: true });
    fillPattern(media, victim);
    const host = FamfsFs.open(media, { hostUuid: HOST });
    host.ackReplay(HOST, 'reader');
    m.rm('victim');
    m.zeroFree();
    assert.ok(!allZero(fileBytes(media, victim)), 'zeroFree destroyed the data of a file a host still serves');
    assert.equal(
      fileBytes(media, victim).every((b) => b === 0xa5),
      true,
    );
    assert.ok(m.usage().pendingFreeBytes >= 10 * MiB);
    host.catchUp();
    host.ackReplay(HOST, 'reader');
    m.zeroFree();
    assert.ok(allZero(fileBytes(media, victim)), 'once the host acked, the freed memory is zeroed');
  });

  it('a damaged clean-map line counts as dirty, never clean (bad CRC, another file system, torn)', () => {
    for (const damage of ['crc', 'other-fs', 'torn'] as const) {
      const { media, fs: m } = freshFamfs();
      const old = m.creat('old', 20 * MiB, { zero: true });
      fillPattern(media, old);
      m.rm('old');
      // The map is forged to say "clean" for the dirty units of the deleted file, damaged each way.
      const uuid = m.superblock.uuid;
      const bits = Buffer.alloc(CLEAN_LINE.crc, 0xff);
      let line = encodeCleanLine(damage === 'other-fs' ? OTHER_MASTER : uuid, 0, bits);
      if (damage === 'crc') line[CLEAN_LINE.crc] ^= 1;
      if (damage === 'torn') line = Buffer.concat([line.subarray(0, 32), encodeCleanLine(uuid, 0, Buffer.alloc(CLEAN_LINE.crc)).subarray(32)]);
      media.write(CLEAN_MAP_OFFSET, line);
      const next = FamfsFs.open(media, { hostUuid: MASTER_UUID });
      next.takeOver(MASTER_UUID);
      const f = next.creat('new', 20 * MiB, { zero: true });
      assert.ok(overlaps(old, f));
      assert.ok(allZero(fileBytes(media, f)), `a ${damage} clean-map line let a new file show old bytes`);
      assert.equal(next.zeroStats.createsWaited, 1, `the create over a ${damage} line zeroed inline`);
    }
  });

  it('failover: a new master trusts only the shared map (what the old one zeroed needs no zeroing; the rest is zeroed)', () => {
    const { media, fs: a } = freshFamfs();
    a.takeOver(MASTER_UUID);
    a.zeroFree();
    const t = a.creat('t', 40 * MiB, { zero: true });
    fillPattern(media, t);
    a.rm('t');
    // The old master zeroes part of the freed memory, then loses the role.
    a.zeroFree({ maxBytes: 16 * MiB, stepBytes: 4 * MiB });
    const b = FamfsFs.open(media, { hostUuid: OTHER_MASTER });
    b.catchUp();
    b.takeOver(OTHER_MASTER);
    assert.equal(
      famfsCode(() => a.zeroFree()),
      'EFENCED',
      'a fenced master stops zeroing at once',
    );
    const small = b.creat('small', 16 * MiB, { zero: true });
    assert.equal(b.zeroStats.createsWaited, 0, 'memory the old master zeroed and marked clean needs no zeroing');
    assert.ok(allZero(fileBytes(media, small)));
    const rest = b.creat('rest', b.usage().freeBytes, { zero: true });
    assert.ok(overlaps(t, rest));
    assert.equal(b.zeroStats.createsWaited, 1);
    assert.ok(allZero(fileBytes(media, rest)), "memory the old master had not zeroed leaked into the new master's file");
  });

  it('a clean bit left on memory a file owns (a writer that does not keep the map) is cleared before that memory is freed', () => {
    const { media, fs: m } = freshFamfs();
    const f = m.creat('f', 12 * MiB, { zero: true });
    fillPattern(media, f);
    // Forge: every unit clean, the file's included, with a valid CRC.
    const uuid = m.superblock.uuid;
    media.write(CLEAN_MAP_OFFSET, encodeCleanLine(uuid, 0, Buffer.alloc(CLEAN_LINE.crc, 0xff)));
    const next = FamfsFs.open(media, { hostUuid: MASTER_UUID });
    next.takeOver(MASTER_UUID);
    next.rm('f');
    // The next master reads only the shared map: the bits over f must have been cleared there.
    const third = FamfsFs.open(media, { hostUuid: MASTER_UUID });
    third.takeOver(MASTER_UUID);
    const g = third.creat('g', third.usage().freeBytes, { zero: true });
    assert.ok(overlaps(f, g));
    assert.ok(allZero(fileBytes(media, g)), "a stale clean bit handed out a previous tenant's bytes");
  });

  it('a file another writer placed on clean memory (famfs itself: no map) has its bits cleared before the next write, so its memory is zeroed once freed', () => {
    const { media, fs: m } = freshFamfs();
    m.zeroFree();
    const free = m.allocator.freeRuns()[0];
    // famfs' own creat, as bytes: an entry and the counters, no clean map.
    const h = m.header();
    const at = LOG_OFFSET + entryOffset(h.nextIndex);
    const fmap = { kind: 'simple' as const, extents: [{ devindex: 0, offset: free.offset, len: 8 * MiB }] };
    media.write(at, encodeEntry(h.nextIndex, { type: 'file', relpath: 'by-famfs', size: 8 * MiB, flags: 2, uid: 0, gid: 0, mode: 0o644, fmap }));
    media.write(LOG_OFFSET + LH.nextSeqnum, encodeLogCounters(h.nextSeqnum + 1, h.nextIndex + 1));
    m.catchUp();
    const byFamfs = m.lookup('by-famfs') as FileNode;
    fillPattern(media, byFamfs);
    m.rm('by-famfs'); // the master's next write clears the stale bits first
    // A new master trusts only the shared map: the memory must be dirty there.
    const next = FamfsFs.open(media, { hostUuid: MASTER_UUID });
    next.takeOver(MASTER_UUID);
    const g = next.creat('g', next.usage().freeBytes, { zero: true });
    assert.ok(overlaps(byFamfs, g));
    assert.ok(allZero(fileBytes(media, g)), 'a file famfs placed on clean memory leaked its bytes after its delete');
  });

  it('revision 4: a revision-3 block is used without a map until a takeover upgrades it (map cleared); unknown revisions are refused', () => {
    const { media, fs: m } = freshFamfs();
    const raw = media.read(EXT_BLOCK_OFFSET, EXT_AREA_SIZE);
    assert.equal(decodeExtBlock(raw)?.revision, 4);
    const setRevision = (rev: number): void => {
      const b = media.read(EXT_BLOCK_OFFSET, EXT.SIZE);
      b.writeUInt32LE(rev, EXT.revision);
      b.writeUInt32LE(crc(b, 0, EXT.crc), EXT.crc);
      media.write(EXT_BLOCK_OFFSET, b);
    };
    setRevision(5);
    assert.equal(
      famfsCode(() => decodeExtBlock(media.read(EXT_BLOCK_OFFSET, EXT_AREA_SIZE))),
      'EUNSUPPORTED',
    );
    setRevision(3);
    // A valid line saying "all clean" that a revision-3 device cannot vouch for.
    media.write(CLEAN_MAP_OFFSET, encodeCleanLine(m.superblock.uuid, 0, Buffer.alloc(CLEAN_LINE.crc, 0xff)));
    const old = FamfsFs.open(media, { hostUuid: MASTER_UUID });
    assert.equal(old.zeroFree().cleanMap, false);
    old.creat('x', 2 * MiB, { zero: true });
    assert.equal(old.zeroStats.createsWaited, 1, 'without a map every create zeroes');
    old.takeOver(MASTER_UUID);
    assert.equal(decodeExtBlock(media.read(EXT_BLOCK_OFFSET, EXT_AREA_SIZE))?.revision, 4);
    assert.equal(readCleanMap(media, m.superblock.uuid, 32).runs.length, 0, 'the upgrade starts with every unit dirty');
  });
});

describe('no zeroing on the create path: devices and crashes (real processes)', function () {
  this.timeout(180_000);
  const made: { dev: DaxDevice; path: string }[] = [];
  const device = (size: number): { dev: DaxDevice; path: string } => {
    const p = `/dev/shm/famfs-zero-test-${process.pid}-${randomBytes(4).toString('hex')}`;
    const d = { dev: openDevice(p, { create: { size } }), path: p };
    made.push(d);
    return d;
  };
  after(() => {
    for (const d of made) {
      d.dev.close();
      fs.rmSync(d.path, { force: true });
    }
  });

  it('mkfs of a freshly created emulation file marks the data area clean; a device that held data starts dirty', () => {
    const fresh = device(64 * MiB);
    const a = FamfsFs.mkfs(fresh.dev, { systemUuid: MASTER_UUID, devicePath: fresh.path });
    assert.equal(a.usage().cleanFreeBytes, a.usage().freeBytes);
    a.creat('f', 8 * MiB, { zero: true });
    assert.equal(a.zeroStats.createsWaited, 0);
    const used = device(64 * MiB);
    used.dev.write(40 * MiB, Buffer.alloc(MiB, 0xee));
    const b = FamfsFs.mkfs(used.dev, { systemUuid: MASTER_UUID, devicePath: used.path });
    assert.equal(b.usage().cleanFreeBytes, 0);
    const g = b.creat('g', b.usage().freeBytes, { zero: true });
    assert.equal(b.zeroStats.createsWaited, 1);
    assert.ok(allZero(fileBytes(used.dev, g)));
  });

  it('an emulation file gets holes instead of zeros (zeroFree discard): the freed memory reads zero, is clean, and its pages are released', () => {
    const d = device(128 * MiB);
    const m = FamfsFs.mkfs(d.dev, { systemUuid: MASTER_UUID, devicePath: d.path });
    const f = m.creat('f', 64 * MiB, { zero: true });
    assert.equal(m.zeroStats.createsWaited, 0);
    fillPattern(d.dev, f);
    const used = fs.statSync(d.path).blocks * 512;
    assert.ok(used >= 64 * MiB, `the pattern occupies the file (${used} bytes)`);
    m.rm('f');
    const r = m.zeroFree({ discard: true });
    assert.ok(r.zeroedBytes >= 64 * MiB);
    assert.equal(r.dirtyFreeBytes, 0);
    assert.ok(fs.statSync(d.path).blocks * 512 <= used - 64 * MiB, 'the freed pages went back to the system');
    assert.ok(allZero(fileBytes(d.dev, f)));
    const g = m.creat('g', 64 * MiB, { zero: true });
    assert.ok(overlaps(f, g));
    assert.equal(m.zeroStats.createsWaited, 0);
    assert.ok(allZero(fileBytes(d.dev, g)));
  });

  it('kill -9 of `famfs zero` mid-zeroing, again and again: every unit the map calls clean reads zero, and the next create reads zeros', async () => {
    const { dev, path: p } = device(384 * MiB);
    FamfsFs.mkfs(dev, { systemUuid: MASTER_UUID, devicePath: p, zeroed: false });
    let m = FamfsFs.open(dev, { hostUuid: MASTER_UUID });
    const victim = m.creat('victim', m.usage().freeBytes, { zero: true });
    fillPattern(dev, victim, 0xc3);
    m.rm('victim');
    const units = Math.floor(m.superblock.deviceSize / ALLOC_UNIT);
    const env = { ...process.env, FAMFS_SYSTEM_UUID: MASTER_UUID };
    let kills = 0;
    let partial = 0;
    for (let round = 0; round < 8; round++) {
      const child = spawn(process.execPath, [CLI, 'zero', '--progress', '--step', '2M', p], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const started = new Promise<void>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('zero: ')) resolve();
        }),
      );
      const first = await Promise.race([started.then(() => 'progress'), exited.then(() => 'exit')]);
      if (first === 'exit') {
        assert.match(out, /zeroed|still dirty/, `famfs zero failed: ${err}`);
        break;
      }
      // Somewhere inside the next steps: most of a step's time is spent zeroing.
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 10)));
      child.kill('SIGKILL');
      const code = await exited;
      if (code === null) kills++;
      const clean = assertCleanUnitsAreZero(dev, m.superblock.uuid, units);
      if (clean > 0 && clean < units - 5) partial++;
      console.log(`      round ${round}: killed ${code === null}, ${clean} of ${units} units clean`);
    }
    assert.ok(kills >= 3, `only ${kills} kills landed while zeroing`);
    assert.ok(partial >= 1, 'no kill left the map part clean, part dirty');
    // Restart: a new master finishes and hands out everything, all zeros.
    m = FamfsFs.open(dev, { hostUuid: MASTER_UUID });
    m.takeOver(MASTER_UUID);
    const next = m.creat('next', m.usage().freeBytes, { zero: true });
    assert.ok(overlaps(victim, next));
    assert.ok(allZero(fileBytes(dev, next)), "a kill -9 mid-zeroing let the next tenant read the old one's bytes");
  });
});
