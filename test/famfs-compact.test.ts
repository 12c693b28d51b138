/**
 * Log compaction in pkg/famfs (famfs-csi extension revision 2): what is kept, what readers see,
 * crash points, the delete reserve, and the threshold. In memory (BufferMedia); the FUSE hosts and
 * kill -9 tests are in famfs-compact-hosts.test.ts.
 */
import { strict as assert } from 'assert';
import * as zlib from 'zlib';
import { BufferMedia } from './helpers/buffer-media';
import { famfsCode as code, freshFamfs, MASTER_UUID } from './helpers/famfs-image';
import {
  DEFAULT_LOG_LEN,
  FamfsError,
  FamfsFs,
  FAMFS_CSI_EXT_VERSION,
  FAMFS_CSI_EXT2_VERSION,
  FAMFS_VERSION,
  FileNode,
  fsck,
  LOG_GEN,
  LOG_GEN_OFFSET,
  LOG_GEN_COMMIT,
  LOG_GEN_COMMIT_OFFSET,
  LOG_GEN_COMMIT_MAGIC,
  encodeLogGenCommit,
  decodeLogGenCommit,
  LOG_OFFSET,
  readActiveLog,
  ackReplay,
  SB,
  validateSuperblock,
  decodeSuperblock,
  TreeNode,
  repair,
  logCapacity,
  encodeLogGenRecord,
  decodeLogGenRecord,
  encodeLogHeader,
  validateLogHeader,
  entryOffset,
  LE,
  LH,
  FM,
  FMAP,
} from '../pkg/famfs';

const MASTER = MASTER_UUID;
const HOST = '22222222-3333-4444-8555-666666666666';
const MiB = 1 << 20;
const CAP = logCapacity(DEFAULT_LOG_LEN);

/** Metadata and the second log region fit in the first 64 MiB; a larger device is virtual beyond. */
function fresh(size = 64 * MiB): { media: BufferMedia; fs: FamfsFs } {
  const { media } = freshFamfs({ size, devicePath: '/dev/shm/compact-test' });
  return { media, fs: FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 }) };
}

/** Every live node as "index path kind size fmap": what a reader must see the same before and after. */
function snapshot(nodes: Iterable<TreeNode>): string[] {
  return [...nodes].map((n) => `${n.index} ${n.relpath} ${n.kind} ${n.kind === 'file' ? `${n.size} ${JSON.stringify(n.fmap)}` : ''}`).sort();
}

/** create+delete cycles of one small file, each in its own directory (like a CSI volume). */
function churn(fs: FamfsFs, cycles: number, tag = 'c'): void {
  for (let i = 0; i < cycles; i++) {
    fs.mkdir(`${tag}${i}`);
    fs.creat(`${tag}${i}/data`, 4096);
    fs.rm(`${tag}${i}/data`);
    fs.rm(`${tag}${i}`);
  }
}

describe('famfs log compaction: on-media format (docs/format.md, extension 3)', () => {
  it('a generation record is the documented 64 bytes, built here field by field from the table', () => {
    const want = Buffer.alloc(64);
    want.write('FAMFSGEN', 0, 'latin1');
    want.writeUInt32LE(1, 8); // revision
    want.writeUInt32LE(1, 12); // region
    want.writeBigUInt64LE(7n, 16); // generation
    Buffer.from('00112233445566778899aabbccddeeff', 'hex').copy(want, 24); // fs UUID
    want.writeBigUInt64LE(0x40000000n, 40); // second region
    want.writeBigUInt64LE(5n, 48); // epoch
    want.writeBigUInt64LE(BigInt(zlib.crc32(want.subarray(0, 56)) >>> 0), 56);
    const got = encodeLogGenRecord({ generation: 7, region: 1, fsUuid: '00112233-4455-6677-8899-aabbccddeeff', altOffset: 0x40000000, epoch: 5 });
    assert.equal(got.toString('hex'), want.toString('hex'));
    assert.deepEqual(decodeLogGenRecord(want), { generation: 7, region: 1, fsUuid: '00112233-4455-6677-8899-aabbccddeeff', altOffset: 0x40000000, epoch: 5 });
    assert.equal(LOG_GEN_OFFSET, 0x1800);
    assert.equal(FAMFS_CSI_EXT2_VERSION, 0x4353490200000030n);
    // what readers refuse: a wrong parity, a region 1 without a region, a torn byte
    const bad = (f: (b: Buffer) => void) => {
      const b = Buffer.from(want);
      f(b);
      return decodeLogGenRecord(b);
    };
    assert.equal(
      bad((b) => b.writeUInt32LE(0, 12)),
      undefined,
      'region 0 with an odd generation',
    );
    assert.equal(
      bad((b) => b.writeUInt32LE(9, 8)),
      undefined,
      'unknown revision',
    );
    assert.equal(
      bad((b) => (b[30] ^= 1)),
      undefined,
      'CRC',
    );
  });

  it('the committed-generation line is the documented 64 bytes at 0x1880, built here field by field from the table', () => {
    const want = Buffer.alloc(64);
    want.write('FAMFSCMT', 0, 'latin1');
    want.writeUInt32LE(1, 8); // line revision
    want.writeBigUInt64LE(7n, 16); // newest generation committed
    Buffer.from('00112233445566778899aabbccddeeff', 'hex').copy(want, 24); // fs UUID
    want.writeBigUInt64LE(0x40000000n, 40); // second region
    want.writeBigUInt64LE(BigInt(zlib.crc32(want.subarray(0, 56)) >>> 0), 56);
    const line = { generation: 7, fsUuid: '00112233-4455-6677-8899-aabbccddeeff', altOffset: 0x40000000 };
    assert.equal(encodeLogGenCommit(line).toString('hex'), want.toString('hex'));
    assert.deepEqual(decodeLogGenCommit(want), line);
    assert.equal(LOG_GEN_COMMIT_OFFSET, 0x1880);
    assert.equal(LOG_GEN_COMMIT_MAGIC, 0x544d4353464d4146n);
    const bad = (f: (b: Buffer) => void) => {
      const b = Buffer.from(want);
      f(b);
      return decodeLogGenCommit(b);
    };
    assert.equal(
      bad((b) => b.writeUInt32LE(2, 8)),
      undefined,
      'unknown revision',
    );
    assert.equal(
      bad((b) => (b[20] ^= 1)),
      undefined,
      'CRC',
    );
    // The line sits between the records and the host slots: a master's switch writes both.
    const { media, fs } = fresh();
    fs.creat('a', 4096);
    churn(fs, 3);
    fs.compact();
    assert.deepEqual(decodeLogGenCommit(media.read(LOG_GEN_COMMIT_OFFSET, 64)), {
      generation: 1,
      fsUuid: fs.superblock.uuid,
      altOffset: fs.activeLog.altOffset,
    });
  });

  it("a compacted log's header keeps famfs' layout: next_seqnum (next log index) may run ahead of next_index (slots)", () => {
    const h = encodeLogHeader(DEFAULT_LOG_LEN, 1000, 3);
    assert.equal(h.readBigUInt64LE(32), 1000n);
    assert.equal(h.readBigUInt64LE(40), 3n);
    assert.deepEqual(validateLogHeader(h, DEFAULT_LOG_LEN, true), []);
    assert.match(validateLogHeader(h, DEFAULT_LOG_LEN, false).join(), /next_seqnum 1000 differs from next_index 3/);
  });
});

describe('famfs log compaction (pkg/famfs)', () => {
  it('leaves a log that never had a delete alone: byte-identical, still famfs version 48', () => {
    const { media, fs } = fresh();
    fs.mkdir('d');
    for (let i = 0; i < 20; i++) fs.creat(`d/f${i}`, 4096);
    const before = Buffer.from(media.buffer);
    const r = fs.compact();
    assert.equal(r.compacted, false);
    assert.match(r.reason!, /never had a delete/);
    assert.ok(media.buffer.equals(before), 'not one byte changed');
    assert.equal(decodeSuperblock(media.read(0, SB.SIZE)).version, FAMFS_VERSION);
  });

  it('compacts to the live set: same files, same log indexes (inode numbers), same maps; the next append continues the index', () => {
    const { media, fs } = fresh();
    fs.mkdir('keep');
    const a = fs.creat('keep/a', 3 * MiB);
    churn(fs, 50);
    const b = fs.creat('keep/b', 4096);
    churn(fs, 50, 'd');
    const want = snapshot(fs.tree.nodes());
    const nextIndex = fs.tree.nextIndex;
    const reader = FamfsFs.open(media, { readOnly: true });
    assert.equal(reader.activeLog.generation, 0);

    const r = fs.compact();
    assert.equal(r.compacted, true);
    assert.equal(r.generation, 1);
    assert.equal(r.entriesBefore, 3 + 200 + 200);
    assert.equal(r.entriesAfter, 3, 'keep, keep/a, keep/b');
    assert.deepEqual(snapshot(fs.tree.nodes()), want);
    assert.equal(fs.tree.nextIndex, nextIndex);
    assert.equal(fs.usage().logEntriesUsed, 3);
    assert.equal(decodeSuperblock(media.read(0, SB.SIZE)).version, FAMFS_CSI_EXT2_VERSION);
    const active = readActiveLog(media, fs.superblock.uuid);
    assert.equal(active.generation, 1);
    assert.notEqual(active.offset, LOG_OFFSET, 'generation 1 lives in the second region');

    // a reader opened before follows; a new reader replays generation 1 directly
    const c = reader.catchUp();
    assert.equal(c.newGeneration, 1);
    assert.equal(c.changes.length, 0, 'no live node changed');
    assert.deepEqual(snapshot(reader.tree.nodes()), want);
    assert.deepEqual(snapshot(FamfsFs.open(media, { readOnly: true }).tree.nodes()), want);
    assert.equal((reader.lookup('keep/a') as FileNode).index, a.index);
    assert.equal((reader.lookup('keep/b') as FileNode).index, b.index);

    const n = fs.creat('keep/c', 4096);
    assert.equal(n.index, nextIndex, 'log indexes never restart');
    reader.catchUp();
    assert.equal((reader.lookup('keep/c') as FileNode).index, nextIndex);
    const report = fsck(media);
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.log!.generation, 1);
    assert.equal(report.log!.entriesUsed, 4);
    assert.equal(report.space!.collisions, 0);
  });

  it('alternates regions across generations; the second region is never handed out', () => {
    const { media, fs } = fresh();
    fs.creat('live', 4096);
    const offsets = new Set<number>();
    for (let g = 1; g <= 4; g++) {
      churn(fs, 30, `g${g}-`);
      const r = fs.compact();
      assert.equal(r.generation, g);
      offsets.add(fs.activeLog.offset);
      assert.equal(fs.activeLog.offset === LOG_OFFSET, g % 2 === 0);
    }
    assert.equal(offsets.size, 2);
    const alt = fs.activeLog.altOffset;
    // fill the device: no file may land on the second region
    const files: FileNode[] = [];
    for (;;) {
      try {
        files.push(fs.creat(`fill${files.length}`, 2 * MiB));
      } catch (e) {
        assert.equal((e as FamfsError).code, 'ENOSPC');
        break;
      }
    }
    for (const f of files)
      for (const e of f.fmap.kind === 'simple' ? f.fmap.extents : [])
        assert.ok(e.offset + e.len <= alt || e.offset >= alt + DEFAULT_LOG_LEN, 'file over the second log region');
    const r = fsck(media);
    assert.equal(r.clean, true, r.errors.join('; '));
  });

  it('keeps deletes a live host has not replayed (and their files), so their memory stays held', () => {
    const { media, fs } = fresh();
    fs.creat('x', 2 * MiB);
    ackReplay(media, 1024, HOST, 'lagging', fs.tree.nextIndex);
    fs.rm('x');
    churn(fs, 10);
    // the host acked before the deletes: nothing may be dropped past its position
    const r = fs.compact();
    assert.equal(r.compacted, false, 'every delete is still pending for the lagging host');
    ackReplay(media, 1024, HOST, 'lagging', fs.tree.nextIndex - 4); // behind the last cycle
    const r2 = fs.compact();
    assert.equal(r2.compacted, true);
    assert.equal(r2.entriesAfter, 4, 'the last cycle (mkdir, creat, rm, rm) stays');
    assert.equal(r2.pendingKept, 2);
    assert.equal(fs.usage().pendingFreeBytes, 2 * MiB, 'its file memory is still held');
    const f = fsck(media);
    assert.equal(f.clean, true, f.errors.join('; '));
    assert.equal(f.space!.pendingFreeBytes, 2 * MiB);
    // a master restarted now still holds it: the kept pair replays as a pending delete
    const again = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 });
    assert.equal(again.usage().pendingFreeBytes, 2 * MiB);
    // acks are log indexes, the same in every generation: once the host acks the end, it is free,
    // and the next compaction drops the pair
    ackReplay(media, 1024, HOST, 'lagging', again.tree.nextIndex);
    again.reclaimReplayed();
    assert.equal(again.usage().pendingFreeBytes, 0);
    again.creat('y', 4096);
    const r3 = again.compact();
    assert.equal(r3.compacted, true);
    assert.equal(r3.entriesAfter, 1, 'only y is left');
    assert.equal(fsck(media).clean, true);
  });

  it('an append by another writer during a compaction makes it switch nothing (EAGAIN): that entry is never lost', () => {
    const { media, fs } = fresh();
    fs.creat('keep', 4096);
    churn(fs, 20);
    const other = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 });
    let appended = false;
    assert.equal(
      code(() =>
        fs.compact({
          onProgress: (p) => {
            if (p.step === 'verify' && !appended) {
              appended = true;
              other.creat('during', 4096);
            }
          },
        }),
      ),
      'EAGAIN',
    );
    const seen = FamfsFs.open(media, { readOnly: true });
    assert.equal(seen.activeLog.generation, 0);
    assert.ok(seen.lookup('during'), 'the entry appended meanwhile is there');
    assert.equal(fs.compact().compacted, true);
    assert.ok(FamfsFs.open(media, { readOnly: true }).lookup('during'));
    assert.equal(fsck(media).clean, true);
  });

  it('a master that loses its fencing epoch during a compaction switches nothing (EFENCED), and the new master compacts', () => {
    const { media, fs } = fresh();
    const epoch = fs.takeOver(MASTER);
    assert.ok(epoch >= 1);
    fs.creat('keep', 4096);
    churn(fs, 20);
    const want = snapshot(fs.tree.nodes());
    const gen = fs.activeLog.generation;
    const other = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 });
    let stolen = false;
    assert.equal(
      code(() =>
        fs.compact({
          onProgress: (p) => {
            if (p.step === 'verify' && !stolen) {
              stolen = true;
              other.takeOver(MASTER); // a new leader bumps the epoch while this one is compacting
            }
          },
        }),
      ),
      'EFENCED',
    );
    assert.ok(stolen);
    const seen = FamfsFs.open(media, { readOnly: true });
    assert.equal(seen.activeLog.generation, gen, 'no generation was published by the fenced master');
    assert.deepEqual(snapshot(seen.tree.nodes()), want);
    const r = other.compact();
    assert.equal(r.compacted, true);
    assert.equal(
      code(() => fs.creat('late', 4096)),
      'EFENCED',
    );
    assert.deepEqual(snapshot(FamfsFs.open(media, { readOnly: true }).tree.nodes()), want);
    assert.equal(fsck(media).clean, true);
  });

  it('a crash before the switch leaves the old log whole; one after, the new one (every step)', () => {
    const { media, fs } = fresh();
    fs.mkdir('keep');
    fs.creat('keep/a', 2 * MiB);
    churn(fs, 100);
    fs.creat('keep/b', 2 * MiB);
    const want = snapshot(fs.tree.nodes());
    const image = Buffer.from(media.buffer);
    // Run the compaction once to learn its steps, then "crash" after each one by copying the
    // memory at that moment (a BufferMedia writes through: what is in the buffer is what survives).
    const steps: string[] = [];
    fs.compact({ stepEntries: 1, onProgress: (p) => steps.push(p.step) });
    assert.ok(steps.length >= 8, steps.join(','));
    let sawOld = 0;
    let sawNew = 0;
    for (let k = 0; k < steps.length; k++) {
      const m = new BufferMedia(Buffer.from(image));
      const w = FamfsFs.open(m, { hostUuid: MASTER, compactAt: 0 });
      let crashed: Buffer | undefined;
      let i = 0;
      try {
        w.compact({
          stepEntries: 1,
          onProgress: () => {
            if (i++ === k) {
              crashed = Buffer.from(m.buffer);
              throw new Error('crash');
            }
          },
        });
      } catch (e) {
        assert.equal((e as Error).message, 'crash');
      }
      const after = new BufferMedia(crashed!);
      const r = fsck(after);
      assert.equal(r.clean, true, `after step ${k} (${steps[k]}): ${r.errors.join('; ')}`);
      const g = FamfsFs.open(after, { hostUuid: MASTER, compactAt: 0 });
      assert.deepEqual(snapshot(g.tree.nodes()), want, `after step ${k} (${steps[k]})`);
      if (g.activeLog.generation === 0) sawOld++;
      else sawNew++;
      // the survivor compacts (again) and keeps working without double allocation
      g.compact();
      g.creat('after', 2 * MiB);
      const r2 = fsck(after);
      assert.equal(r2.clean, true, r2.errors.join('; '));
      assert.equal(r2.space!.collisions, 0);
    }
    assert.ok(sawOld > 0 && sawNew > 0, `old ${sawOld}, new ${sawNew}`);
  });

  it('a switch torn by a crash (record half written, the committed-generation line not moved): the older generation is current, and the master goes on', () => {
    const { media, fs } = fresh();
    fs.creat('a', 4096);
    churn(fs, 5);
    fs.compact();
    churn(fs, 5, 'e');
    const want = snapshot(fs.tree.nodes());
    // The crash: the line as it was before the switch (it is written after the record), and
    // generation 2's record torn.
    const line = Buffer.from(media.read(LOG_GEN_COMMIT_OFFSET, LOG_GEN_COMMIT.SIZE));
    fs.compact();
    assert.equal(fs.activeLog.generation, 2);
    media.write(LOG_GEN_COMMIT_OFFSET, line);
    media.buffer[LOG_GEN_OFFSET + 0 * LOG_GEN.SIZE + LOG_GEN.generation] ^= 0xff;
    const r = FamfsFs.open(media, { readOnly: true });
    assert.equal(r.activeLog.generation, 1);
    assert.deepEqual(snapshot(r.tree.nodes()), want, 'generation 1 holds the same files (nothing was written after the switch)');
    const f = fsck(media);
    assert.equal(f.clean, true, f.errors.join('; '));
    assert.ok(
      f.warnings.some((w) => /record 0 is damaged/.test(w)),
      f.warnings.join('; '),
    );
    const m = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 });
    m.creat('b', 2 * MiB);
    m.compact();
    assert.equal(m.activeLog.generation, 2);
    const g = fsck(media);
    assert.equal(g.clean, true, g.errors.join('; '));
    assert.equal(g.space!.collisions, 0);
  });

  it('a record left by an earlier file system on the device is never believed (mkfs clears them; the fs UUID binds them)', () => {
    const { media, fs } = fresh();
    fs.creat('a', 4096);
    churn(fs, 5);
    fs.compact();
    const records = Buffer.from(media.read(LOG_GEN_OFFSET, 2 * LOG_GEN.SIZE));
    const g = FamfsFs.mkfs(media, { systemUuid: MASTER, devicePath: 'x', force: true });
    assert.equal(g.activeLog.generation, 0);
    media.write(LOG_GEN_OFFSET, records); // as if a famfs mkfs had not cleared them
    const h = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 });
    h.creat('z', 4096);
    h.rm('z');
    assert.equal(h.activeLog.generation, 0);
    assert.equal(fsck(media).clean, true);
  });

  it('readers of revision 1 refuse a compacted device; famfs refuses it (version is neither 48 nor revision 1)', () => {
    const { media, fs } = fresh();
    fs.creat('a', 4096);
    churn(fs, 3);
    assert.equal(decodeSuperblock(media.read(0, SB.SIZE)).version, FAMFS_CSI_EXT_VERSION);
    fs.compact();
    const v = decodeSuperblock(media.read(0, SB.SIZE)).version;
    assert.equal(v, FAMFS_CSI_EXT2_VERSION);
    assert.notEqual(v, FAMFS_VERSION);
    assert.notEqual(v, FAMFS_CSI_EXT_VERSION);
    assert.equal(validateSuperblock(media.read(0, SB.SIZE)).compacted, true);
  });

  it('with the delete reserve, every live file and directory can be deleted on a full log, whatever hosts lag', () => {
    const { media } = fresh(16 * 1024 * MiB);
    const fs = FamfsFs.open(media, { hostUuid: MASTER, reserveDeleteEntries: true });
    // a host that never acks anything past 0 keeps every delete pending: compaction cannot help
    ackReplay(media, 1024, HOST, 'stuck', 0);
    let made = 0;
    for (;;) {
      const c = code(() => {
        fs.mkdir(`v${made}`);
        fs.creat(`v${made}/data`, 4096);
      });
      if (c !== 'OK') {
        assert.equal(c, 'ELOGFULL');
        break;
      }
      made++;
    }
    assert.ok(made >= Math.floor(CAP / 4) - 1, `${made} volumes`);
    for (let i = 0; i < made; i++) {
      fs.rm(`v${i}/data`);
      fs.rm(`v${i}`);
    }
    if (fs.lookup(`v${made}`)) fs.rm(`v${made}`);
    assert.equal(fs.tree.fileCount + fs.tree.dirCount, 0);
    assert.equal(fsck(media).clean, true);
  });

  it('DeleteVolume-style deletes on a log full of garbage compact first instead of failing', () => {
    const { media } = fresh();
    const fs = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 1 });
    fs.creat('live', 4096);
    let cycles = 0;
    while (fs.usage().logEntriesUsed + 4 <= CAP) {
      churn(fs, 1, `x${cycles++}-`);
    }
    assert.equal(fs.activeLog.generation, 0, 'compactAt 1: no threshold compaction');
    fs.mkdir('last');
    fs.creat('last/data', 4096);
    const gen = fs.activeLog.generation;
    fs.rm('last/data');
    fs.rm('last');
    assert.ok(fs.activeLog.generation > 0 || gen > 0, 'a full log was compacted to make room');
    assert.equal(fsck(media).clean, true);
  });

  it('compacts by itself past the threshold when the log holds garbage', () => {
    const { media } = fresh();
    const fs = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0.5 });
    churn(fs, Math.ceil((CAP * 0.6) / 4));
    assert.ok(fs.activeLog.generation >= 1);
    assert.ok(fs.usage().logEntriesUsed < CAP * 0.5);
    assert.equal(fsck(media).clean, true);
  });
});

describe('famfs log compaction: damaged generation records never roll a reader back to a superseded region', () => {
  const REGION_BYTES = DEFAULT_LOG_LEN;
  /** A log compacted `compactions` times, then appended to (files that exist only in the newest generation). */
  function compacted(compactions: number): { media: BufferMedia; fs: FamfsFs; want: string[] } {
    const { media, fs } = fresh();
    fs.mkdir('keep');
    fs.creat('keep/a', 2 * MiB);
    for (let k = 0; k < compactions; k++) {
      churn(fs, 10, `g${k}-`);
      fs.compact();
    }
    fs.creat('keep/after', 2 * MiB);
    return { media, fs, want: snapshot(fs.tree.nodes()) };
  }
  const damage = (media: BufferMedia, slot: number, how: 'flip' | 'zero') => {
    const at = LOG_GEN_OFFSET + slot * LOG_GEN.SIZE;
    if (how === 'zero') media.buffer.fill(0, at, at + LOG_GEN.SIZE);
    else media.buffer[at + LOG_GEN.generation] ^= 0x5a;
  };
  const refuses = (fn: () => unknown, what: string) =>
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof FamfsError, `${what}: ${String(e)}`);
      assert.equal(e.code, 'ECORRUPT', `${what}: ${e.message}`);
      assert.match(e.message, /generation/, what);
      assert.match(e.message, /famfs repair/, `${what}: says what to do`);
      return true;
    });

  /** Every reader refuses; nothing is written; repair rebuilds; then all is as before. */
  function refusedThenRepaired(media: BufferMedia, fs: FamfsFs, host: FamfsFs, want: string[], generation: number): void {
    const regions = [Buffer.from(media.read(LOG_OFFSET, REGION_BYTES)), Buffer.from(media.read(fs.activeLog.altOffset, REGION_BYTES))];
    refuses(() => FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 }), 'a master that opens the device');
    refuses(() => FamfsFs.open(media, { readOnly: true }), 'a host that opens the device');
    refuses(() => host.catchUp(), 'a host that follows');
    assert.deepEqual(snapshot(host.tree.nodes()), want, 'the following host keeps what it has');
    refuses(() => fs.creat('keep/never', 2 * MiB), 'the running master');
    assert.ok(media.read(LOG_OFFSET, REGION_BYTES).equals(regions[0]), 'region 0 untouched');
    assert.ok(media.read(fs.activeLog.altOffset, REGION_BYTES).equals(regions[1]), 'region 1 untouched');
    const f = fsck(media);
    assert.equal(f.clean, false);
    assert.ok(
      f.errors.some((e) => /^log generation records: .*famfs repair/.test(e)),
      f.errors.join('; '),
    );
    const rep = repair(media, { hostUuid: MASTER });
    assert.ok(
      rep.actions.some((a) => new RegExp(`rebuilt log generation record ${generation % 2}: generation ${generation}`).test(a)),
      rep.actions.join('; '),
    );
    assert.equal(readActiveLog(media, fs.superblock.uuid).generation, generation);
    const g = fsck(media);
    assert.equal(g.clean, true, g.errors.join('; '));
    assert.deepEqual(g.warnings, []);
    const m = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 });
    assert.deepEqual(snapshot(m.tree.nodes()), want);
    host.catchUp();
    assert.deepEqual(snapshot(host.tree.nodes()), want);
    m.creat('keep/new', 8 * MiB);
    const h = fsck(media);
    assert.equal(h.clean, true, h.errors.join('; '));
    assert.equal(h.space!.collisions, 0, 'the new file shares no memory with a live file or a log region');
  }

  for (const how of ['flip', 'zero'] as const) {
    it(`both records ${how === 'flip' ? 'damaged' : 'zeroed'} after a compaction: every reader refuses (never generation 0), fsck names it, repair rebuilds them`, () => {
      const { media, fs, want } = compacted(1);
      const host = FamfsFs.open(media, { readOnly: true });
      damage(media, 0, how);
      damage(media, 1, how);
      refusedThenRepaired(media, fs, host, want, 1);
    });
  }

  it('the newest record damaged and the older one valid: no roll back to the older region, even while the next compaction rewrites it', () => {
    const { media, fs } = compacted(2);
    const host = FamfsFs.open(media, { readOnly: true });
    assert.equal(fs.activeLog.generation, 2);
    // A compaction to generation 3 dies halfway through its copy into generation 1's region.
    fs.creat('keep/b', 2 * MiB);
    fs.rm('keep/b');
    const want2 = snapshot(fs.tree.nodes());
    host.catchUp();
    let n = 0;
    assert.throws(() =>
      fs.compact({
        stepEntries: 1,
        onProgress: (p) => {
          if (p.step === 'copy' && ++n === 2) throw new Error('crash');
        },
      }),
    );
    assert.equal(readActiveLog(media, fs.superblock.uuid).generation, 2);
    damage(media, 0, 'flip');
    refusedThenRepaired(media, fs, host, want2, 2);
  });

  it('no committed-generation line and no valid record: repair finds the second region from the damaged bytes, and believes it only as a whole log', () => {
    const { media, fs, want } = compacted(1);
    const host = FamfsFs.open(media, { readOnly: true });
    media.buffer.fill(0, LOG_GEN_COMMIT_OFFSET, LOG_GEN_COMMIT_OFFSET + LOG_GEN_COMMIT.SIZE);
    const saved = Buffer.from(media.read(LOG_GEN_OFFSET, 2 * LOG_GEN.SIZE));
    // The record's region offset damaged too: nothing says where generation 1 lives. Repair
    // refuses and writes nothing (famfs' log alone proves nothing about being current).
    media.buffer[LOG_GEN_OFFSET + LOG_GEN.SIZE + LOG_GEN.altOffset + 1] ^= 0x01;
    refuses(() => FamfsFs.open(media, { readOnly: true }), 'a host that opens the device');
    const before = Buffer.from(media.read(0, 12 * MiB));
    assert.equal(
      code(() => repair(media, { hostUuid: MASTER })),
      'ECORRUPT',
    );
    assert.ok(media.read(0, 12 * MiB).equals(before), 'nothing written');
    media.write(LOG_GEN_OFFSET, saved);
    damage(media, 1, 'flip');
    refusedThenRepaired(media, fs, host, want, 1);
  });

  it('a device compacted by an earlier release (no committed-generation line): a damaged newest record makes readers refuse; repair takes the region that reaches furthest', () => {
    const { media, fs, want } = compacted(2);
    const host = FamfsFs.open(media, { readOnly: true });
    media.buffer.fill(0, LOG_GEN_COMMIT_OFFSET, LOG_GEN_COMMIT_OFFSET + LOG_GEN_COMMIT.SIZE);
    damage(media, 0, 'flip');
    refusedThenRepaired(media, fs, host, want, 2);
  });
});

describe("famfs repair on a compacted log (generation >= 1): the same guarantees as on famfs' own log", () => {
  /**
   * A log compacted `compactions` times (odd: the second region; even: region 0 rewritten), then
   * appended to, with a host that replayed (and acked) all of it. Slots no longer equal log indexes.
   */
  function setup(compactions: number) {
    const { media, fs } = fresh();
    fs.mkdir('keep');
    fs.creat('keep/a', 2 * MiB);
    for (let k = 0; k < compactions; k++) {
      churn(fs, 10, `g${k}-`);
      fs.compact();
    }
    for (let i = 0; i < 6; i++) fs.creat(`keep/f${i}`, 2 * MiB);
    const host = FamfsFs.open(media, { readOnly: true, watchRewrites: true });
    ackReplay(media, 1024, HOST, 'host', host.tree.nextIndex);
    const want = snapshot(fs.tree.nodes());
    const at = fs.activeLog.offset;
    const h = fs.header();
    assert.ok(h.nextSeqnum > h.nextIndex, 'slots and log indexes differ');
    const slotOf = (relpath: string) => fs.tree.slotIndexes.indexOf(fs.lookup(relpath)!.index);
    const raw = (slot: number) => Buffer.from(media.read(at + entryOffset(slot), LE.SIZE));
    const put = (slot: number, b: Buffer) => media.write(at + entryOffset(slot), b);
    return { media, fs, host, want, at, h, slotOf, raw, put };
  }
  const clean = (media: BufferMedia) => {
    const r = fsck(media);
    assert.equal(r.clean, true, r.errors.join('; '));
    assert.equal(r.space!.collisions, 0);
    return r;
  };
  /** After the repair: the same files, the host sees no rewrite, a new file shares no memory with them. */
  function stillWhole(media: BufferMedia, host: FamfsFs, want: string[]): void {
    clean(media);
    const m = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 });
    assert.deepEqual(snapshot(m.tree.nodes()), want);
    host.catchUp();
    assert.deepEqual(host.rewrittenEntries(), [], 'every entry the host replayed is back byte for byte');
    m.creat('keep/new', 8 * MiB);
    clean(media);
  }

  for (const compactions of [1, 2]) {
    const region = compactions % 2 === 1 ? 'the second region' : 'region 0, rewritten';
    it(`a flipped extent offset in a replayed entry (generation ${compactions}, ${region}): restored byte for byte, never moved`, () => {
      const { media, host, want, slotOf, raw, put } = setup(compactions);
      const slot = slotOf('keep/f2');
      const saved = raw(slot);
      const bad = Buffer.from(saved);
      bad[LE.payload + FM.fmap + FMAP.extents + 8 + 2] ^= 0x40; // the extent offset moves by 4 MiB
      put(slot, bad);
      assert.equal(fsck(media).clean, false);
      const rep = repair(media, { hostUuid: MASTER });
      assert.ok(
        rep.actions.some((a) => /salvaged log entry \d+ .*one damaged byte/.test(a)),
        rep.actions.join('; '),
      );
      assert.ok(raw(slot).equals(saved));
      stillWhole(media, host, want);
    });

    it(`next_index and next_seqnum lowered by 2 (generation ${compactions}): repair commits the entries hosts replayed, never cuts them`, () => {
      const { media, fs, host, want, at, h } = setup(compactions);
      media.write(at + LH.nextSeqnum, Buffer.concat([u64le(h.nextSeqnum - 2), u64le(h.nextIndex - 2)]));
      const f = fsck(media);
      assert.equal(f.clean, false, 'a host acked past next_index: an error');
      const rep = repair(media, { hostUuid: MASTER });
      assert.ok(
        rep.actions.some((a) => /committed 2 valid entries/.test(a)),
        rep.actions.join('; '),
      );
      const back = fs.header();
      assert.equal(back.nextIndex, h.nextIndex);
      assert.equal(back.nextSeqnum, h.nextSeqnum);
      stillWhole(media, host, want);
    });

    it(`a damaged log header (generation ${compactions}): rewritten, counters kept (next log index above the slot count)`, () => {
      const { media, fs, host, want, at, h } = setup(compactions);
      media.buffer[at + LH.lastIndex + 1] ^= 0x10;
      assert.equal(fsck(media).clean, false);
      const rep = repair(media, { hostUuid: MASTER });
      assert.ok(
        rep.actions.some((a) => /rewrote the log header/.test(a)),
        rep.actions.join('; '),
      );
      const back = fs.header();
      assert.equal(back.nextIndex, h.nextIndex);
      assert.equal(back.nextSeqnum, h.nextSeqnum);
      stillWhole(media, host, want);
    });

    it(`damage the CRC cannot undo in a file entry (generation ${compactions}): quarantined under its own log index, its memory kept reserved`, () => {
      const { media, fs, host, slotOf, raw, put } = setup(compactions);
      const node = fs.lookup('keep/f3') as FileNode;
      const slot = slotOf('keep/f3');
      const bad = raw(slot);
      bad[LE.payload + FM.uid] ^= 0x01;
      bad[LE.payload + FM.gid] ^= 0x01;
      put(slot, bad);
      const rep = repair(media, { hostUuid: MASTER });
      assert.deepEqual(
        rep.quarantined.map((q) => q.index),
        [node.index],
        rep.actions.join('; '),
      );
      const q = fsck(media);
      assert.equal(q.clean, true, q.errors.join('; '));
      const m = FamfsFs.open(media, { hostUuid: MASTER, compactAt: 0 });
      const lost = m.lookup(`lost+found.${node.index}`) as FileNode;
      assert.equal(lost.index, node.index, 'same log index: same inode number');
      assert.deepEqual(lost.fmap, node.fmap, 'on the memory it named');
      host.catchUp();
      m.creat('keep/new', 8 * MiB);
      clean(media);
    });

    it(`next_index raised past the real entries (generation ${compactions}): set back; the next log index is never lowered`, () => {
      const { media, fs, host, want, at, h } = setup(compactions);
      media.write(at + LH.nextSeqnum, Buffer.concat([u64le(h.nextSeqnum + 7), u64le(h.nextIndex + 7)]));
      const rep = repair(media, { hostUuid: MASTER });
      assert.ok(
        rep.actions.some((a) => /set the log counters/.test(a)),
        rep.actions.join('; '),
      );
      const back = fs.header();
      assert.equal(back.nextIndex, h.nextIndex);
      assert.ok(back.nextSeqnum >= h.nextSeqnum, `next log index ${back.nextSeqnum} not below ${h.nextSeqnum}`);
      stillWhole(media, host, want);
    });
  }
});

function u64le(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}
