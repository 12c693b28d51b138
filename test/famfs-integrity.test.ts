// Issue 10, famfs layer: a damaged or rolled-back log never leads to memory reuse.
// Every test here drives the real format code on an in-memory device; hosts are second FamfsFs
// instances replaying the same bytes, as a FUSE host's follower does.
import { strict as assert } from 'assert';
import * as fc from 'fast-check';
import {
  ALLOC_UNIT,
  encodeEntry,
  encodeLogCounters,
  entryOffset,
  EXT_BLOCK_OFFSET,
  FAMFS_CSI_EXT2_VERSION,
  FAMFS_CSI_EXT_VERSION,
  FAMFS_VERSION,
  readAnyExtBlock,
  readExtBlock,
  quarantineName as quarantine,
  releaseQuarantine,
  repair,
  SB,
  superblockCrc,
  validateSuperblock,
  FamfsError,
  FamfsFs,
  fmapExtents,
  fsck,
  LE,
  LH,
  LOG_OFFSET,
  type FileNode,
  type Fmap,
} from '../pkg/famfs';
import { BufferMedia } from './helpers/buffer-media';
import { famfsCode as code, freshFamfs, MASTER_UUID } from './helpers/famfs-image';

const MASTER = MASTER_UUID;
const HOST = '99999999-8888-4777-8666-555555555555';
const MiB = 1 << 20;

function fresh(size = 64 * MiB): { media: BufferMedia; fs: FamfsFs } {
  return freshFamfs({ size, stored: size });
}

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}

function setCounters(media: BufferMedia, n: number): void {
  media.write(LOG_OFFSET + LH.nextSeqnum, encodeLogCounters(n, n));
}

function slot(media: BufferMedia, i: number): Buffer {
  return media.read(LOG_OFFSET + entryOffset(i), LE.SIZE);
}

function units(fmap: Fmap): Set<number> {
  const s = new Set<number>();
  for (const e of fmapExtents(fmap)) for (let u = e.offset; u < e.offset + e.len; u += ALLOC_UNIT) s.add(u / ALLOC_UNIT);
  return s;
}

/** Allocation units that `file` shares with any file the host serves. */
function overlapWithHost(host: FamfsFs, file: FileNode): number[] {
  const mine = units(file.fmap);
  const shared: number[] = [];
  for (const f of host.tree.files()) for (const u of units(f.fmap)) if (mine.has(u)) shared.push(u);
  return shared;
}

describe('famfs integrity: a lowered next_index never lets a master overwrite replayed entries', () => {
  for (const lowered of [1, 2]) {
    it(`next_index lowered by ${lowered}, master restart + create: the new file shares no memory with what a live host serves, and replayed entries stay byte-for-byte`, () => {
      const { media, fs } = fresh();
      for (let i = 0; i < 6; i++) fs.creat(`f${i}`, 3 * MiB);
      const host = FamfsFs.open(media, { hostUuid: HOST, readOnly: true });
      assert.equal(host.tree.fileCount, 6);
      const replayed = [...Array(host.tree.nextIndex).keys()].map((i) => slot(media, i));
      setCounters(media, host.tree.nextIndex - lowered);

      const master = FamfsFs.open(media, { hostUuid: MASTER });
      const created = master.creat('new', 3 * MiB);
      assert.deepEqual(overlapWithHost(host, created), [], 'the new file is placed on memory a live host serves');
      replayed.forEach((raw, i) => assert.ok(slot(media, i).equals(raw), `entry ${i}, which the host replayed, was rewritten`));
      // The master rolled forward: what the host serves is in the log, and the host sees the new file too.
      assert.equal(master.tree.fileCount, 7);
      host.catchUp();
      assert.equal(host.lookup('new')?.kind, 'file');
      assert.equal(fsck(media).clean, true, fsck(media).errors.join('; '));
    });
  }

  it('append refuses a log slot that is not all zero (the slot is left as it was)', () => {
    const { media, fs } = fresh();
    fs.creat('a', MiB);
    const at = LOG_OFFSET + entryOffset(1);
    media.write(at + 100, Buffer.from([0x5a]));
    const before = slot(media, 1);
    const master = FamfsFs.open(media, { hostUuid: MASTER });
    assert.equal(
      code(() => master.creat('b', MiB)),
      'ECORRUPT',
    );
    assert.match(
      message(() => master.creat('b', MiB)),
      /famfs repair/,
    );
    assert.ok(slot(media, 1).equals(before), 'the refused append wrote into the slot');
    assert.equal(master.header().nextIndex, 1, 'the refused append moved the counters');
  });

  it('the master already running sees a lowered counter too: it refuses (its replay is ahead of the header)', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 4; i++) fs.creat(`f${i}`, MiB);
    const before = slot(media, 3);
    setCounters(media, 3);
    assert.equal(
      code(() => fs.creat('x', MiB)),
      'ECORRUPT',
    );
    assert.ok(slot(media, 3).equals(before));
  });

  it('a gap past next_index (an empty or bad slot, then valid entries) makes a new master refuse and say to run repair', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 6; i++) fs.creat(`f${i}`, MiB);
    const saved = [3, 4, 5].map((i) => slot(media, i));
    // Counter lowered by 3 and the first slot past it damaged: entries 4 and 5 sit behind a gap.
    setCounters(media, 3);
    media.write(LOG_OFFSET + entryOffset(3) + 40, Buffer.from([0xff]));
    const damaged3 = slot(media, 3);
    const master = FamfsFs.open(media, { hostUuid: MASTER });
    assert.equal(
      code(() => master.creat('x', MiB)),
      'ECORRUPT',
    );
    assert.match(
      message(() => master.creat('x', MiB)),
      /famfs repair/,
    );
    assert.ok(slot(media, 3).equals(damaged3));
    assert.ok(slot(media, 4).equals(saved[1]) && slot(media, 5).equals(saved[2]));
    // A zeroed slot followed by valid entries is a gap as well.
    media.write(LOG_OFFSET + entryOffset(3), Buffer.alloc(LE.SIZE));
    const again = FamfsFs.open(media, { hostUuid: MASTER });
    assert.equal(
      code(() => again.creat('x', MiB)),
      'ECORRUPT',
    );
    assert.equal(again.header().nextIndex, 3);
  });

  it('an interrupted append (entry written, counters not) is rolled forward by the next master, never overwritten', () => {
    const { media, fs } = fresh();
    fs.creat('a', MiB);
    const header = media.read(LOG_OFFSET, LH.SIZE);
    fs.creat('b', MiB);
    media.write(LOG_OFFSET, header); // the counters never made it
    const r = fsck(media);
    assert.equal(r.clean, true, 'no host acked past the end: an interrupted append, not a lowered counter');
    assert.ok(r.warnings.some((w) => w.includes('interrupted')));
    const again = FamfsFs.open(media, { hostUuid: MASTER });
    again.creat('c', MiB);
    assert.deepEqual([...FamfsFs.open(media, { readOnly: true }).tree.files()].map((f) => f.relpath).sort(), ['a', 'b', 'c']);
  });
});

describe('famfs integrity: fsck treats a lowered next_index as an error', () => {
  for (const lowered of [1, 2]) {
    it(`next_index lowered by ${lowered} below what a host acked: error`, () => {
      const { media, fs } = fresh();
      for (let i = 0; i < 4; i++) fs.creat(`f${i}`, MiB);
      fs.rm('f0'); // enables the extension: hosts ack their replay position
      const host = FamfsFs.open(media, { hostUuid: HOST, readOnly: false });
      host.ackReplay(HOST, 'host');
      setCounters(media, host.tree.nextIndex - lowered);
      const r = fsck(media);
      assert.equal(r.clean, false, `fsck calls it clean; warnings: ${r.warnings.join(' | ')}`);
      assert.ok(
        r.errors.some((e) => /next_index/.test(e)),
        r.errors.join(' | '),
      );
    });
  }
});

describe('famfs integrity: superblock CRC and torn version upgrade', () => {
  /** A superblock whose version is `version` but whose CRC is that of `crcOf`. */
  function tear(media: BufferMedia, version: bigint, crcOf: bigint): void {
    const raw = media.read(0, SB.SIZE);
    raw.writeBigUInt64LE(crcOf, SB.version);
    raw.writeBigUInt64LE(BigInt(superblockCrc(raw)), SB.crc);
    raw.writeBigUInt64LE(version, SB.version);
    media.write(0, raw);
  }
  const cases = [
    { name: 'version 48 with the CRC of the extended version', version: FAMFS_VERSION, crcOf: FAMFS_CSI_EXT_VERSION },
    { name: 'the extended version with the CRC of version 48', version: FAMFS_CSI_EXT_VERSION, crcOf: FAMFS_VERSION },
  ];
  for (const c of cases) {
    for (const deletes of [false, true]) {
      it(`${c.name}${deletes ? ' (log holds a delete)' : ''}: not clean, not openable; repair makes version and CRC agree`, () => {
        const { media, fs } = fresh();
        fs.creat('a', MiB);
        fs.creat('b', MiB);
        if (deletes) fs.rm('a');
        tear(media, c.version, c.crcOf);
        const r = fsck(media);
        assert.equal(r.clean, false, 'a torn upgrade reads as clean');
        assert.ok(
          r.errors.some((e) => /torn version upgrade/.test(e)),
          r.errors.join(' | '),
        );
        assert.equal(
          code(() => FamfsFs.open(media, { readOnly: true })),
          'ECORRUPT',
        );
        const rep = repair(media, { hostUuid: MASTER });
        assert.ok(
          rep.actions.some((a) => /torn version upgrade/.test(a)),
          rep.actions.join(' | '),
        );
        const after = fsck(media);
        assert.equal(after.clean, true, after.errors.join(' | '));
        // Version 48 only while the log has no extension entry (plain famfs must refuse deletes).
        assert.equal(after.superblock!.version, (deletes ? FAMFS_CSI_EXT_VERSION : FAMFS_VERSION).toString());
        assert.equal(validateSuperblock(media.read(0, SB.SIZE)).ok, true);
        assert.deepEqual(
          [...FamfsFs.open(media, { readOnly: true }).tree.files()].map((f) => f.relpath),
          deletes ? ['b'] : ['a', 'b'],
        );
      });
    }
  }

  it('a compacted log: a torn store between the delete and the compaction versions is repaired to the compaction version', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 4; i++) fs.creat(`f${i}`, MiB);
    fs.rm('f0');
    fs.compact();
    assert.equal(fsck(media).superblock!.version, FAMFS_CSI_EXT2_VERSION.toString());
    tear(media, FAMFS_CSI_EXT_VERSION, FAMFS_CSI_EXT2_VERSION);
    assert.equal(fsck(media).clean, false);
    repair(media, { hostUuid: MASTER });
    const after = fsck(media);
    assert.equal(after.clean, true, after.errors.join(' | '));
    assert.equal(after.superblock!.version, FAMFS_CSI_EXT2_VERSION.toString());
    assert.deepEqual([...FamfsFs.open(media, { readOnly: true }).tree.files()].map((f) => f.relpath).sort(), ['f1', 'f2', 'f3']);
  });

  it('any other CRC mismatch still makes open refuse and repair refuse to guess', () => {
    const { media } = fresh();
    media.write(SB.logLen + 1, Buffer.from([0x01]));
    assert.equal(
      code(() => FamfsFs.open(media, { readOnly: true })),
      'ECORRUPT',
    );
    assert.equal(
      code(() => repair(media, { hostUuid: MASTER })),
      'ECORRUPT',
    );
  });
});

describe('famfs integrity: the extension area belongs to one file system', () => {
  it("after famfs' own mkfs -f over a used device, the old epoch and host slots are ignored and then re-made", () => {
    const { media, fs } = fresh();
    fs.creat('a', MiB);
    fs.rm('a');
    const host = FamfsFs.open(media, { hostUuid: HOST });
    host.ackReplay(HOST, 'stale-host');
    const oldEpoch = fs.extBlock().epoch;
    assert.equal(fs.hosts().length, 1);
    // famfs' mkfs -f writes its superblock and log and never touches the bytes after the superblock.
    const ext = Buffer.from(media.buffer.subarray(EXT_BLOCK_OFFSET, LOG_OFFSET));
    FamfsFs.mkfs(media, { systemUuid: MASTER, devicePath: '/dev/shm/test', force: true });
    media.buffer.set(ext, EXT_BLOCK_OFFSET);

    const reader = FamfsFs.open(media, { readOnly: true });
    assert.deepEqual(reader.hosts(), [], 'hosts of the earlier file system are shown');
    const r = fsck(media);
    assert.deepEqual(r.hosts, []);
    assert.equal(r.fencingEpoch, undefined);
    assert.ok(
      r.warnings.some((w) => /extension area belongs to another file system/.test(w)),
      r.warnings.join(' | '),
    );
    const master = FamfsFs.open(media, { hostUuid: MASTER });
    const epoch = master.takeOver(MASTER);
    assert.ok(epoch > oldEpoch, `epoch ${epoch} continues above the old ${oldEpoch}`);
    assert.deepEqual(master.hosts(), []);
    assert.equal(readExtBlock(media, master.superblock.uuid)?.fsUuid, master.superblock.uuid);
    assert.equal(fsck(media).clean, true);
  });

  it('a writer fenced on one file system cannot append to the next one on the same device', () => {
    const { media, fs } = fresh();
    const epoch = fs.takeOver(MASTER);
    const ext = Buffer.from(media.buffer.subarray(EXT_BLOCK_OFFSET, LOG_OFFSET));
    FamfsFs.mkfs(media, { systemUuid: MASTER, devicePath: '/dev/shm/test', force: true });
    media.buffer.set(ext, EXT_BLOCK_OFFSET); // same epoch number, other file system
    assert.equal(readAnyExtBlock(media)?.epoch, epoch);
    assert.equal(
      code(() => fs.creat('x', MiB)),
      'EFENCED',
    );
  });
});

describe('famfs integrity: repair never moves a file onto memory it did not own', () => {
  /** XOR `mask` into byte `pos` of log entry `index`. */
  function rot(media: BufferMedia, index: number, pos: number, mask: number): void {
    const at = LOG_OFFSET + entryOffset(index) + pos;
    media.write(at, Buffer.from([media.read(at, 1)[0] ^ mask]));
  }
  const EXTENT0_OFFSET = LE.payload + 104 + 16 + 8; // FM.fmap + FMAP.extents + devindex
  const RELPATH = LE.payload + 24;

  it('one flipped bit in the extent offset of a replayed entry: repair restores the original (CRC-proven), the next create shares no memory with the host', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 5; i++) fs.creat(`f${i}`, 3 * MiB);
    const host = FamfsFs.open(media, { hostUuid: HOST, readOnly: true });
    const original = slot(media, 2);
    rot(media, 2, EXTENT0_OFFSET + 3, 0x02); // offset + 32 MiB: free memory, a plausible but wrong place
    assert.equal(fsck(media).clean, false);
    const r = repair(media, { hostUuid: MASTER });
    assert.deepEqual(r.dropped, []);
    assert.ok(slot(media, 2).equals(original), `entry 2 was not restored: ${r.actions.join(' | ')}`);
    const master = FamfsFs.open(media, { hostUuid: MASTER });
    assert.deepEqual(fmapExtents((master.lookup('f2') as FileNode).fmap), fmapExtents((host.lookup('f2') as FileNode).fmap));
    const created = master.creat('new', 4 * MiB);
    assert.deepEqual(overlapWithHost(host, created), [], 'the new file lands on memory the host serves');
    assert.equal(fsck(media).clean, true);
  });

  it('a flipped name (csi/vol-1 → csi/wol-1) of a replayed entry: repair finds the volume again under its own name', () => {
    const { media, fs } = fresh();
    fs.mkdir('csi');
    const vol = fs.creat('csi/vol-1', 2 * MiB);
    fs.creat('csi/vol-2', 2 * MiB);
    rot(media, vol.index, RELPATH + 4, 'v'.charCodeAt(0) ^ 'w'.charCodeAt(0));
    const r = repair(media, { hostUuid: MASTER });
    assert.deepEqual(r.dropped, []);
    const after = FamfsFs.open(media, { readOnly: true });
    assert.equal(after.lookup('csi/wol-1'), undefined, `the volume was renamed: ${r.actions.join(' | ')}`);
    assert.deepEqual(fmapExtents((after.lookup('csi/vol-1') as FileNode).fmap), fmapExtents(vol.fmap));
  });

  /** A CSI-shaped log: csi/vol-<n>/data files, one per directory, each directory made just before its file. */
  function csiVolumes(fs: FamfsFs, n: number): FileNode[] {
    fs.mkdir('csi');
    return [...Array(n).keys()].map((k) => {
      fs.mkdir(`csi/vol-${k}abc`);
      return fs.creat(`csi/vol-${k}abc/data`, 2 * MiB);
    });
  }
  /** Overwrite the name field of entry `index` with `text` (NUL-padded): damage to several bytes of the name. */
  function rotName(media: BufferMedia, index: number, text: string): void {
    const field = Buffer.alloc(80);
    Buffer.from(text).copy(field);
    media.write(LOG_OFFSET + entryOffset(index) + RELPATH, field);
  }

  for (const [what, rotten] of [
    ['two bytes of the directory part (csi/vol-1abc/data → csi/wXl-1abc/data)', 'csi/wXl-1abc/data'],
    ['the directory and the file name (→ csi/vol-1abX/dXta)', 'csi/vol-1abX/dXta'],
    ['the whole name, its NUL and the padding after it', 'c\u00ffi/v\u00f1l-1abc/dat\u00e1\u00e1\u00e1\u00e1'],
  ] as const) {
    it(`several damaged bytes in the name of a replayed file entry, ${what}: repair restores it byte for byte (the CRC proves the name its empty directory lacks)`, () => {
      const { media, fs } = fresh();
      const vols = csiVolumes(fs, 3);
      const host = FamfsFs.open(media, { hostUuid: HOST, readOnly: true });
      const victim = vols[1];
      const original = slot(media, victim.index);
      rotName(media, victim.index, rotten);
      assert.equal(fsck(media).clean, false);
      const r = repair(media, { hostUuid: MASTER });
      assert.deepEqual(r.quarantined, [], r.actions.join(' | '));
      assert.deepEqual(r.dropped, []);
      assert.ok(slot(media, victim.index).equals(original), `entry ${victim.index} was not restored: ${r.actions.join(' | ')}`);
      assert.ok(
        r.actions.some((a) => /name/.test(a) && a.includes('csi/vol-1abc/data')),
        r.actions.join(' | '),
      );
      const after = FamfsFs.open(media, { hostUuid: MASTER });
      assert.deepEqual(fmapExtents((after.lookup('csi/vol-1abc/data') as FileNode).fmap), fmapExtents(victim.fmap));
      assert.equal(after.lookup(quarantine(victim.index)), undefined);
      const f = fsck(media);
      assert.equal(f.clean, true, f.errors.join(' | '));
      assert.deepEqual(f.quarantined, []);
      host.catchUp();
      assert.deepEqual(overlapWithHost(host, after.creat('new', 8 * MiB)), []);
    });
  }

  it("several damaged bytes in the name of a replayed directory entry (a CSI volume's csi/<id>): repair restores it byte for byte, owner and mode included", () => {
    const { media, fs } = fresh();
    fs.mkdir('csi');
    const dirs = [0, 1, 2].map((k) => {
      const d = fs.mkdir(`csi/vol-${k}abc`, { mode: 0o710, uid: 7, gid: 9 }).at(-1)!;
      fs.creat(`csi/vol-${k}abc/data`, 2 * MiB);
      return d;
    });
    const original = slot(media, dirs[1].index);
    const field = Buffer.alloc(80);
    Buffer.from('csi/wXl-1abc').copy(field);
    media.write(LOG_OFFSET + entryOffset(dirs[1].index) + LE.payload + 12, field); // MD.relpath
    const r = repair(media, { hostUuid: MASTER });
    assert.ok(slot(media, dirs[1].index).equals(original), `entry ${dirs[1].index} was not restored: ${r.actions.join(' | ')}`);
    const after = FamfsFs.open(media, { readOnly: true });
    const d = after.lookup('csi/vol-1abc');
    assert.deepEqual(d && d.kind === 'dir' ? [d.mode, d.uid, d.gid] : d, [0o710, 7, 9]);
    assert.equal(after.lookup('csi/vol-1abc/data')?.kind, 'file');
    assert.equal(fsck(media).clean, true);
  });

  it('several damaged bytes in the name of a deleted file entry: the name its delete entry names is proven by the CRC, the delete applies again', () => {
    const { media, fs } = fresh();
    const files = [0, 1, 2].map((k) => fs.creat(`file-${k}`, 2 * MiB));
    fs.rm('file-1');
    const original = slot(media, files[1].index);
    rotName(media, files[1].index, 'fXle-Y');
    const r = repair(media, { hostUuid: MASTER });
    assert.deepEqual(r.quarantined, [], r.actions.join(' | '));
    assert.ok(slot(media, files[1].index).equals(original), r.actions.join(' | '));
    const f = fsck(media);
    assert.equal(f.clean, true, f.errors.join(' | '));
    const after = FamfsFs.open(media, { readOnly: true });
    assert.equal(after.lookup('file-1'), undefined);
    assert.deepEqual(
      [...after.tree.files()].map((n) => n.relpath),
      ['file-0', 'file-2'],
    );
  });

  it('several damaged name bytes and one more byte elsewhere: no name makes the CRC match, so the entry is quarantined, never renamed', () => {
    const { media, fs } = fresh();
    const vols = csiVolumes(fs, 3);
    rotName(media, vols[1].index, 'csi/wXl-1abc/data');
    rot(media, vols[1].index, LE.payload + 12, 0x01); // uid
    const r = repair(media, { hostUuid: MASTER });
    assert.deepEqual(
      r.quarantined.map((q) => q.index),
      [vols[1].index],
      r.actions.join(' | '),
    );
    const after = FamfsFs.open(media, { readOnly: true });
    assert.equal(after.lookup('csi/vol-1abc/data'), undefined, 'a name the CRC does not prove was given to the file');
    assert.deepEqual(fmapExtents((after.lookup(quarantine(vols[1].index)) as FileNode).fmap), fmapExtents(vols[1].fmap));
  });

  it('damage CRC cannot undo (two bytes): the entry is quarantined with its memory reserved, counted by fsck, until an operator releases it', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 4; i++) fs.creat(`f${i}`, 4 * MiB);
    const host = FamfsFs.open(media, { hostUuid: HOST, readOnly: true });
    rot(media, 1, RELPATH + 1, 0x20);
    rot(media, 1, LE.payload + 12, 0x01); // uid
    const r = repair(media, { hostUuid: MASTER });
    assert.deepEqual(
      r.quarantined.map((q) => q.index),
      [1],
      r.actions.join(' | '),
    );
    const f = fsck(media);
    assert.equal(f.clean, true, f.errors.join(' | '));
    assert.deepEqual(
      f.quarantined.map((q) => [q.index, q.relpath, q.bytes]),
      [[1, 'lost+found.1', 4 * MiB]],
    );
    assert.ok(
      f.warnings.some((w) => /quarantine/.test(w)),
      f.warnings.join(' | '),
    );
    const master = FamfsFs.open(media, { hostUuid: MASTER });
    const q = master.lookup('lost+found.1') as FileNode;
    assert.equal(q.mode, 0, 'nobody can open a quarantined file by accident');
    assert.deepEqual(fmapExtents(q.fmap), fmapExtents((host.lookup('f1') as FileNode).fmap));
    const created = master.creat('new', 4 * MiB);
    assert.deepEqual(overlapWithHost(host, created), []);
    // The operator releases it (after checking no pod uses the memory): the memory is the pool's again.
    releaseQuarantine(master, 1);
    assert.deepEqual(fsck(media).quarantined, []);
    assert.equal(
      code(() => releaseQuarantine(master, 2)),
      'ENOENT',
    );
  });

  it('extents that cannot be right (overlapping another file) and cannot be proven: repair refuses, unless told to drop the entry', () => {
    const { media, fs } = fresh();
    const files = [0, 1, 2, 3, 4].map((i) => fs.creat(`f${i}`, 1));
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(fmapExtents(files[3].fmap)[0].offset));
    media.write(LOG_OFFSET + entryOffset(2) + EXTENT0_OFFSET, b);
    const before = Buffer.from(media.buffer.subarray(0, LOG_OFFSET + entryOffset(8)));
    assert.equal(
      code(() => repair(media, { hostUuid: MASTER })),
      'ECORRUPT',
    );
    assert.match(
      message(() => repair(media, { hostUuid: MASTER })),
      /--drop 2/,
    );
    assert.ok(media.buffer.subarray(0, before.length).equals(before), 'a refused repair wrote something');
    const r = repair(media, { hostUuid: MASTER, drop: [2] });
    assert.deepEqual(
      r.dropped.map((d) => d.index),
      [2],
    );
    assert.equal(FamfsFs.open(media, { readOnly: true }).lookup('lost+found.2')?.kind, 'dir');
    assert.equal(fsck(media).clean, true);
  });
});

/**
 * The same bytes as a BufferMedia, whose reads can run another host's work once, just before the
 * first read that reaches `from`: what a master does while this host is in the middle of a read.
 */
class InterruptedMedia extends BufferMedia {
  interrupted = false;
  private pending?: { from: number; run: () => void };

  beforeReadPast(from: number, run: () => void): void {
    this.pending = { from, run };
  }

  private maybeInterrupt(offset: number, length: number): void {
    const p = this.pending;
    if (p === undefined || offset + length <= p.from) return;
    this.pending = undefined;
    p.run();
    this.interrupted = true;
  }

  override read(offset: number, length: number): Buffer {
    this.maybeInterrupt(offset, length);
    return super.read(offset, length);
  }

  override readInto(offset: number, target: Uint8Array): void {
    this.maybeInterrupt(offset, target.length);
    super.readInto(offset, target);
  }
}

describe('famfs integrity: a host notices when an entry it replayed is rewritten', () => {
  /** What a master that trusted a lowered next_index did before issue 10: write over a replayed slot. */
  function rogueRewrite(media: BufferMedia, index: number, relpath: string, offset: number): void {
    media.write(
      LOG_OFFSET + entryOffset(index),
      encodeEntry(index, {
        type: 'file',
        relpath,
        size: MiB,
        mode: 0o644,
        uid: 0,
        gid: 0,
        flags: 2,
        fmap: { kind: 'simple', extents: [{ devindex: 0, offset, len: 2 * MiB }] },
      }),
    );
  }

  it('the newest entry rewritten under an unchanged header: reported on the next catch-up, and it stays reported', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 5; i++) fs.creat(`f${i}`, MiB);
    const host = FamfsFs.open(media, { hostUuid: HOST, readOnly: true, watchRewrites: true });
    assert.deepEqual(host.catchUp().rewritten, []);
    const n = host.tree.nextIndex;
    rogueRewrite(media, n - 1, 'intruder', fmapExtents((host.lookup('f1') as FileNode).fmap)[0].offset);
    const r = host.catchUp();
    assert.equal(r.nextIndex, n, 'the header did not move, so a plain catch-up sees nothing new');
    assert.deepEqual(
      r.rewritten.map((x) => [x.index, x.nowValid]),
      [[n - 1, true]],
    );
    assert.deepEqual(host.catchUp().rewritten, [], 'reported once per content');
    assert.deepEqual(
      host.rewrittenEntries().map((x) => x.index),
      [n - 1],
    );
  });

  it('an old entry rewritten deep in a long log is found within a bounded number of catch-ups', () => {
    const { media, fs } = fresh();
    fs.mkdir('d');
    for (let i = 0; i < 600; i++) fs.mkdir(`d/${i}`);
    const host = FamfsFs.open(media, { readOnly: true, watchRewrites: true });
    rogueRewrite(media, 3, 'x', 40 * MiB);
    let polls = 0;
    while (host.rewrittenEntries().length === 0 && polls < 20) {
      host.catchUp();
      polls++;
    }
    assert.deepEqual(
      host.rewrittenEntries().map((x) => x.index),
      [3],
      `not found after ${polls} catch-ups`,
    );
    assert.ok(polls <= Math.ceil(601 / 128) + 1, `${polls} catch-ups`);
  });

  for (const [when, start, at] of [
    ['reading its log header (generation 0: the new header does not fit it)', 0, 0],
    ['reading its log header (generation 1: the new header reads as a log that went backwards)', 1, 0],
    ['checking the entries it replayed', 0, entryOffset(0)],
  ] as const) {
    it(`two compactions while a host is ${when}: no rewrite reported, no error, the host follows`, () => {
      const { media, fs } = fresh();
      for (let i = 0; i < 18; i++) fs.creat(`a${i}`, MiB);
      const rmSome = (k: number) => {
        for (let i = k; i < 18; i += 6) fs.rm(`a${i}`);
      };
      rmSome(0);
      if (start === 1) {
        fs.compact();
        rmSome(1);
      }
      const view = new InterruptedMedia(media.buffer, media.size);
      const host = FamfsFs.open(view, { readOnly: true, watchRewrites: true });
      const region = host.activeLog.offset;
      assert.equal(host.activeLog.generation, start);
      // The master compacts twice in the middle of the host's catch-up (the host stalled there):
      // generation start+1 goes to the other region, start+2 back into the region the host reads.
      view.beforeReadPast(region + at, () => {
        fs.compact();
        rmSome(2);
        fs.compact();
        assert.equal(fs.activeLog.generation, start + 2);
        assert.equal(fs.activeLog.offset, region);
      });
      let error: unknown;
      try {
        host.catchUp();
      } catch (e) {
        error = e;
      }
      assert.equal(view.interrupted, true, 'the compactions did not run during the catch-up');
      assert.deepEqual(host.rewrittenEntries(), [], 'entries a compaction rewrote after its switch were reported as rewritten');
      assert.equal(error, undefined, `the catch-up failed: ${String(error)}`);
      assert.equal(host.activeLog.generation, start + 2);
      assert.deepEqual([...host.tree.files()].map((f) => f.relpath).sort(), [...fs.tree.files()].map((f) => f.relpath).sort());
    });
  }

  it('a host following compactions (regions rewritten after each switch) reports no rewrite', () => {
    const { media, fs } = fresh();
    const host = FamfsFs.open(media, { readOnly: true, watchRewrites: true });
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 6; i++) fs.creat(`r${round}-${i}`, MiB);
      host.catchUp();
      for (let i = 0; i < 6; i += 2) fs.rm(`r${round}-${i}`);
      host.catchUp();
      fs.compact();
      host.catchUp();
      host.catchUp();
    }
    assert.ok(host.activeLog.generation >= 4, `generation ${host.activeLog.generation}`);
    assert.equal(host.tree.fileCount, 12);
    assert.deepEqual(host.rewrittenEntries(), []);
    // And the watch still works in a compacted generation.
    const victim = host.lookup('r3-1') as FileNode;
    const slotOf = [...Array(host.tree.slot).keys()].find(
      (k) => media.read(host.activeLog.offset + entryOffset(k), 8).readBigUInt64LE(0) === BigInt(victim.index),
    )!;
    const at = host.activeLog.offset + entryOffset(slotOf) + 60;
    media.write(at, Buffer.from([media.read(at, 1)[0] ^ 0x10]));
    for (let k = 0; k < 5 && host.rewrittenEntries().length === 0; k++) host.catchUp();
    assert.deepEqual(
      host.rewrittenEntries().map((w) => w.index),
      [victim.index],
    );
  });

  it('a counter lowered under a host is a loud error, and damage to a replayed entry is reported as not valid', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 4; i++) fs.creat(`f${i}`, MiB);
    const host = FamfsFs.open(media, { readOnly: true, watchRewrites: true });
    const saved = media.read(LOG_OFFSET + entryOffset(2) + 60, 1);
    media.write(LOG_OFFSET + entryOffset(2) + 60, Buffer.from([saved[0] ^ 0x33]));
    setCounters(media, 3);
    assert.equal(
      code(() => host.catchUp()),
      'ECORRUPT',
    );
    assert.deepEqual(
      host.rewrittenEntries().map((x) => [x.index, x.nowValid]),
      [[2, false]],
    );
    // Restored (as repair does): no longer a discrepancy.
    media.write(LOG_OFFSET + entryOffset(2) + 60, saved);
    setCounters(media, 4);
    assert.deepEqual(host.catchUp().rewritten, []);
    assert.deepEqual(host.rewrittenEntries(), []);
  });
});

describe('famfs integrity: corruption fuzz over entries hosts have replayed', () => {
  it('every flipped byte is found by fsck or provably harmless; repair brings back exactly what the host replayed, and the next create shares no memory with it', function () {
    this.timeout(600_000);
    const { media, fs } = fresh();
    fs.mkdir('d');
    for (let i = 0; i < 10; i++) fs.creat(`d/f${i}`, (i + 1) * 300_000);
    // A live host replayed everything and acked it (so a lowered counter is visible to fsck).
    FamfsFs.open(media, { hostUuid: HOST, now: () => 1_000 }).ackReplay(HOST, 'host');
    const truth = new Map([...fs.tree.files()].map((f) => [f.relpath, { size: f.size, extents: JSON.stringify(fmapExtents(f.fmap)) }]));
    const pristine = Buffer.from(media.buffer.subarray(0, LOG_OFFSET + entryOffset(14)));
    const regions = [
      { name: 'superblock', lo: 0, hi: SB.SIZE },
      { name: 'log header', lo: LOG_OFFSET, hi: LOG_OFFSET + LH.SIZE },
      { name: 'log entries', lo: LOG_OFFSET + LH.SIZE, hi: LOG_OFFSET + entryOffset(11) },
    ];
    /** The tree holds exactly the files the host replayed, on the same memory. */
    const sameAsTruth = (f: FamfsFs, why: string) => {
      const seen = new Map([...f.tree.files()].map((n) => [n.relpath, { size: n.size, extents: JSON.stringify(fmapExtents(n.fmap)) }]));
      assert.deepEqual(seen, truth, why);
    };
    const counts = { found: 0, harmless: 0, repaired: 0, superblockRefused: 0 };
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 }), fc.nat(), fc.integer({ min: 1, max: 255 }), (region, pos, mask) => {
        media.buffer.set(pristine, 0);
        const host = FamfsFs.open(media, { readOnly: true, watchRewrites: true });
        const { name, lo, hi } = regions[region];
        const at = lo + (pos % (hi - lo));
        media.buffer[at] ^= mask;
        const where = `${name} byte ${at - lo} ^ 0x${mask.toString(16)}`;
        const r = fsck(media);
        if (r.clean) {
          // Only bytes no reader interprets may go unnoticed: the superblock's flags and daxdev record.
          assert.ok(region === 0 && at - lo >= SB.flags, `fsck missed a flip: ${where}`);
          sameAsTruth(FamfsFs.open(media, { readOnly: true }), `a flip fsck missed changed what replay shows: ${where}`);
          counts.harmless++;
          return;
        }
        counts.found++;
        let rep: ReturnType<typeof repair>;
        try {
          rep = repair(media, { hostUuid: MASTER });
        } catch (e) {
          // famfs keeps no second superblock: repair refuses to guess one (and says so).
          assert.ok(e instanceof FamfsError && e.code === 'ECORRUPT' && region === 0, `repair refused ${where}: ${String(e)}`);
          counts.superblockRefused++;
          return;
        }
        counts.repaired++;
        assert.deepEqual(rep.dropped, [], `${where}: ${rep.actions.join(' | ')}`);
        assert.deepEqual(rep.quarantined, [], `one damaged byte is always proven: ${where}`);
        const after = fsck(media);
        assert.equal(after.clean, true, `${where}: ${after.errors.join(' | ')}`);
        assert.equal(after.log!.entriesUsed, 11, `${where}: next_index`);
        assert.equal(after.hosts.length, 1, `${where}: the host's slot`);
        sameAsTruth(FamfsFs.open(media, { readOnly: true }), `${where}: after repair`);
        host.catchUp();
        assert.deepEqual(host.rewrittenEntries(), [], `${where}: repair left an entry the host replayed different from what it replayed`);
        const created = FamfsFs.open(media, { hostUuid: MASTER }).creat('new', 3 * MiB);
        assert.deepEqual(overlapWithHost(host, created), [], `${where}: the next create lands on replayed memory`);
      }),
      { numRuns: 250, seed: 0x10f1 },
    );
    // Every kind of outcome was exercised (a fuzz that only ever takes one branch proves little).
    assert.ok(counts.repaired > 80 && counts.superblockRefused > 0 && counts.harmless > 0, JSON.stringify(counts));
    console.log(`      corruption fuzz: ${JSON.stringify(counts)}`);
  });
});
