import { strict as assert } from 'assert';
import * as fc from 'fast-check';
import {
  ALLOC_UNIT,
  DEFAULT_LOG_LEN,
  entryOffset,
  FamfsFs,
  FAMFS_CSI_EXT_VERSION,
  fmapExtents,
  fsck,
  LE,
  LH,
  LOG_OFFSET,
  SB,
  validateSuperblock,
  readExtBlock,
  repair,
} from '../pkg/famfs';
import { openDevice } from '../pkg/device';
import { createEmulatedDevice, removeEmulatedDevice } from '../testkit/emulated-device';
import { BufferMedia } from './helpers/buffer-media';
import { famfsCode as code, freshFamfs, MASTER_UUID } from './helpers/famfs-image';

const MASTER = MASTER_UUID;
const OTHER = '99999999-8888-4777-8666-555555555555';
const GiB = 1 << 30;
const MiB = 1 << 20;

/** Metadata lives in the first 10 MiB; larger devices are virtual (data writes need a real buffer). */
function fresh(size = 64 * MiB, logLen = DEFAULT_LOG_LEN, now?: () => number, stored = Math.min(size, 64 * MiB)): { media: BufferMedia; fs: FamfsFs } {
  return freshFamfs({ size, logLen, now, stored });
}

describe('famfs core: writer and reader', () => {
  it('mkfs makes a valid, empty famfs that plain famfs would accept (version 48)', () => {
    const { media, fs } = fresh();
    const check = validateSuperblock(media.read(0, SB.SIZE), media.size);
    assert.deepEqual(check, { ok: true, extended: false, problems: [] });
    assert.equal(fs.tree.nextIndex, 0);
    assert.equal(fs.isMaster, true);
    const r = fsck(media);
    assert.equal(r.clean, true);
    assert.equal(r.space!.allocatedBytes, LOG_OFFSET + DEFAULT_LOG_LEN);
  });

  it('mkfs refuses to overwrite an existing famfs without force, and writes nothing', () => {
    const { media, fs } = fresh();
    fs.creat('keep', 100);
    const before = Buffer.from(media.buffer);
    assert.equal(
      code(() => FamfsFs.mkfs(media, { systemUuid: MASTER, devicePath: 'x' })),
      'EEXIST',
    );
    assert.ok(media.buffer.equals(before));
    assert.equal(
      code(() => FamfsFs.mkfs(media, { systemUuid: MASTER, devicePath: 'x', logLen: 3 * MiB })),
      'EINVAL',
    );
    assert.equal(
      code(() => FamfsFs.mkfs(BufferMedia.ofSize(8 * MiB), { systemUuid: MASTER, devicePath: 'x' })),
      'EINVAL',
    );
  });

  it('creates dirs and files; a second reader replays the same tree', () => {
    const { media, fs } = fresh();
    fs.mkdir('a/b/c', { parents: true, mode: 0o750, uid: 1000, gid: 1000 });
    const f = fs.creat('a/b/c/file', 5000, { mode: 0o600, uid: 7, gid: 8 });
    assert.equal(f.size, 5000);
    assert.deepEqual(fmapExtents(f.fmap), [{ devindex: 0, offset: 10 * MiB, len: 2 * MiB }]);
    const reader = FamfsFs.open(media, { readOnly: true });
    const g = reader.lookup('a/b/c/file');
    assert.ok(g && g.kind === 'file');
    assert.deepEqual(g, f);
    assert.equal(reader.lookup('a/b')!.mode, 0o750);
    assert.equal(reader.tree.nextIndex, 4);
  });

  it('refuses bad input with typed errors and appends nothing', () => {
    const { fs } = fresh();
    fs.creat('f', 1);
    const n = fs.tree.nextIndex;
    const cases: [() => unknown, string][] = [
      [() => fs.creat('f', 1), 'EEXIST'],
      [() => fs.creat('nodir/x', 1), 'ENOENT'],
      [() => fs.creat('f/x', 1), 'ENOTDIR'],
      [() => fs.creat('z', 0), 'EINVAL'],
      [() => fs.creat('z', -5), 'EINVAL'],
      [() => fs.creat('z', 1.5), 'EINVAL'],
      [() => fs.creat('/abs', 1), 'EINVAL'],
      [() => fs.creat('a/../b', 1), 'EINVAL'],
      [() => fs.creat('', 1), 'EINVAL'],
      [() => fs.creat('nul\0x', 1), 'EINVAL'],
      [() => fs.creat('.meta/x', 1), 'EINVAL'],
      [() => fs.creat('x'.repeat(80), 1), 'ENAMETOOLONG'],
      [() => fs.creat('m', 1, { mode: 0o10000 }), 'EINVAL'],
      [() => fs.creat('u', 1, { uid: -1 }), 'EINVAL'],
      [() => fs.creat('big', 1e15), 'ENOSPC'],
      [() => fs.mkdir('f'), 'ENOTDIR'],
      [() => fs.mkdir('p/q'), 'ENOENT'],
      [() => fs.rm('nothere'), 'ENOENT'],
    ];
    for (const [fn, want] of cases) assert.equal(code(fn), want, fn.toString());
    assert.equal(fs.tree.nextIndex, n);
    assert.equal(
      code(() => fs.creat('x'.repeat(79), 1)),
      'OK',
    );
  });

  it('only the master appends; a read-only open never writes', () => {
    const { media } = fresh();
    const client = FamfsFs.open(media, { hostUuid: OTHER });
    assert.equal(
      code(() => client.creat('c', 1)),
      'ENOTMASTER',
    );
    const ro = FamfsFs.open(media, { hostUuid: MASTER, readOnly: true });
    assert.equal(
      code(() => ro.mkdir('d')),
      'EROFS',
    );
  });

  it('a full log is a clear error, never a partial write', () => {
    const { media, fs } = fresh(64 * MiB);
    const cap = fs.logCapacity;
    assert.equal(cap, 15420);
    // Directories use no space: fill the log with them.
    for (let i = 0; i < cap - 2; i++) fs.mkdir(`d${i}`);
    assert.equal(
      code(() => fs.mkdir('x/y/z', { parents: true })),
      'ELOGFULL',
    );
    assert.equal(fs.tree.nextIndex, cap - 2);
    fs.mkdir('last1');
    fs.creat('last2', 1);
    assert.equal(
      code(() => fs.creat('nope', 1)),
      'ELOGFULL',
    );
    const r = fsck(media);
    assert.equal(r.clean, true);
    assert.equal(r.log!.entriesUsed, cap);
  });

  it('a full device is ENOSPC, and fsck reports the largest free extent', () => {
    const { media, fs } = fresh(32 * MiB);
    // 32 MiB - 10 MiB reserved = 22 MiB = 11 units
    fs.creat('a', 10 * MiB);
    assert.equal(
      code(() => fs.creat('b', 14 * MiB)),
      'ENOSPC',
    );
    fs.creat('c', 12 * MiB);
    assert.equal(
      code(() => fs.creat('d', 1)),
      'ENOSPC',
    );
    const r = fsck(media);
    assert.equal(r.space!.freeBytes, 0);
    assert.equal(r.space!.largestFreeBytes, 0);
  });

  it('delete: the extension marks the superblock so famfs refuses it, and memory waits for every host', () => {
    const clock = 1_000_000;
    let mono = 0;
    const media = new BufferMedia(Buffer.alloc(64 * MiB), 64 * MiB);
    FamfsFs.mkfs(media, { systemUuid: MASTER, devicePath: '/dev/shm/test' });
    const fs = FamfsFs.open(media, { hostUuid: MASTER, monotonicNow: () => mono });
    const a = fs.creat('a', 20 * MiB);
    // A client host that has replayed up to now.
    const client = FamfsFs.open(media, { hostUuid: OTHER, readOnly: false, now: () => clock });
    client.ackReplay(OTHER, 'client');
    fs.rm('a');
    assert.equal(validateSuperblock(media.read(0, SB.SIZE)).extended, true);
    assert.equal(media.read(0, SB.SIZE).readBigUInt64LE(SB.version), FAMFS_CSI_EXT_VERSION);
    assert.equal(fs.lookup('a'), undefined);
    let u = fs.usage();
    assert.equal(u.pendingFreeBytes, 20 * MiB);
    // The client has not replayed the delete: the memory must not be handed out.
    const b = fs.creat('b', 20 * MiB);
    assert.notEqual(fmapExtents(b.fmap)[0].offset, fmapExtents(a.fmap)[0].offset);
    // Client replays and acks; now the memory comes back.
    client.catchUp();
    assert.equal(client.lookup('a'), undefined);
    client.ackReplay(OTHER, 'client');
    const c = fs.creat('c', 20 * MiB);
    assert.equal(fmapExtents(c.fmap)[0].offset, fmapExtents(a.fmap)[0].offset);
    u = fs.usage();
    assert.equal(u.pendingFreeBytes, 0);
    // A host the master watched silent for hostLiveMs (on the master's own clock) stops holding memory back.
    fs.rm('b');
    mono += 59_999;
    assert.equal(
      code(() => fs.creat('b2', 20 * MiB)),
      'ENOSPC',
      'the client is live: b stays held',
    );
    mono += 2;
    const d = fs.creat('d', 20 * MiB);
    assert.equal(fmapExtents(d.fmap)[0].offset, fmapExtents(b.fmap)[0].offset);
    assert.equal(fsck(media).clean, true);
  });

  it('replay of a deleted-then-recreated name shows only the new file', () => {
    const { media, fs } = fresh();
    fs.creat('v', 3 * MiB);
    fs.rm('v');
    fs.creat('v', 5 * MiB);
    const r = FamfsFs.open(media, { readOnly: true });
    const v = r.lookup('v');
    assert.ok(v && v.kind === 'file');
    assert.equal(v.size, 5 * MiB);
    assert.equal(r.tree.released.length, 1);
  });

  it('rmdir only of empty directories', () => {
    const { fs } = fresh();
    fs.mkdir('d');
    fs.creat('d/f', 1);
    assert.equal(
      code(() => fs.rm('d')),
      'ENOTEMPTY',
    );
    fs.rm('d/f');
    fs.rm('d');
    assert.equal(fs.lookup('d'), undefined);
  });

  it('interleaved files follow famfs rules and never share memory', () => {
    const { media, fs } = fresh(8 * GiB);
    const f = fs.creat('s', 64 * MiB, { interleave: { nbuckets: 8, nstrips: 4, chunkSize: 2 * MiB } });
    assert.equal(f.fmap.kind, 'interleave');
    if (f.fmap.kind !== 'interleave') return;
    assert.equal(f.fmap.strips.length, 4);
    for (const s of f.fmap.strips) assert.equal(s.len, 16 * MiB);
    const buckets = new Set(f.fmap.strips.map((s) => Math.floor(s.offset / GiB)));
    assert.equal(buckets.size, 4);
    const small = fs.creat('small', MiB, { interleave: { nbuckets: 8, nstrips: 4, chunkSize: 2 * MiB } });
    assert.equal(small.fmap.kind, 'simple');
    assert.equal(
      code(() => fs.creat('bad', 64 * MiB, { interleave: { nbuckets: 8, nstrips: 9, chunkSize: 2 * MiB } })),
      'EINVAL',
    );
    assert.equal(
      code(() => fs.creat('bad', 64 * MiB, { interleave: { nbuckets: 8, nstrips: 4, chunkSize: 3 * MiB } })),
      'EINVAL',
    );
    assert.equal(
      code(() => fs.creat('bad', 64 * MiB, { interleave: { nbuckets: 64, nstrips: 4, chunkSize: 2 * MiB } })),
      'EINVAL',
    );
    assert.equal(fsck(media).space!.collisions, 0);
  });

  it('zeroes a file when asked (memory that held another tenant)', () => {
    const { media, fs } = fresh();
    media.write(10 * MiB, Buffer.alloc(2 * MiB, 0xab));
    const f = fs.creat('z', 2 * MiB, { zero: true });
    const off = fmapExtents(f.fmap)[0].offset;
    assert.ok(media.read(off, 2 * MiB).every((b) => b === 0));
  });

  it('fencing: a writer whose epoch was superseded can never append again', () => {
    const { media } = fresh();
    const first = FamfsFs.open(media, { hostUuid: MASTER });
    const epoch1 = first.takeOver(MASTER);
    first.creat('one', 1);
    const second = FamfsFs.open(media, { hostUuid: OTHER });
    const epoch2 = second.takeOver(OTHER);
    assert.equal(epoch2, epoch1 + 1);
    assert.equal(readExtBlock(media, FamfsFs.open(media, { readOnly: true }).superblock.uuid)!.masterUuid, OTHER);
    assert.equal(
      code(() => first.creat('two', 1)),
      'EFENCED',
    );
    second.creat('two', 1);
    assert.equal(FamfsFs.open(media, { readOnly: true }).tree.fileCount, 2);
    assert.equal(fsck(media).clean, true);
  });

  it('a crash between entry and counters: replay ignores the entry, the next master commits it (issue 10: never overwrites it)', () => {
    const { media, fs } = fresh();
    fs.creat('a', 1);
    // Simulate: the next entry is written and flushed, the counters are not.
    const fake = FamfsFs.open(BufferMedia.ofSize(64 * MiB).buffer.length ? media : media, { hostUuid: MASTER });
    const before = Buffer.from(media.read(LOG_OFFSET, LH.SIZE));
    fake.creat('b', 1);
    media.write(LOG_OFFSET, before); // roll the counters back: "crash" before they were written
    const r = fsck(media);
    assert.equal(r.clean, true);
    assert.equal(r.files, 1);
    assert.ok(r.warnings.some((w) => w.includes('interrupted')));
    const again = FamfsFs.open(media, { hostUuid: MASTER });
    again.creat('c', 1); // rolls the orphan forward first: a host may already serve it
    assert.equal(FamfsFs.open(media, { readOnly: true }).tree.fileCount, 3);
  });

  it('replay stops at the first bad entry with a precise report, and never exposes it', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 5; i++) fs.creat(`f${i}`, 1);
    const at = LOG_OFFSET + entryOffset(2) + LE.payload + 30;
    media.write(at, Buffer.from([media.read(at, 1)[0] ^ 0x40]));
    const r = fsck(media);
    assert.equal(r.clean, false);
    assert.match(r.errors[0], /log entry 2: CRC mismatch/);
    const reader = FamfsFs.open(media, { readOnly: true });
    assert.equal(reader.tree.fileCount, 2);
    assert.equal(reader.lookup('f2'), undefined);
    assert.equal(
      code(() => FamfsFs.open(media, { hostUuid: MASTER }).creat('x', 1)),
      'ECORRUPT',
    );
  });

  it('incremental catch-up from a known index', () => {
    const { media, fs } = fresh();
    const reader = FamfsFs.open(media, { readOnly: true });
    fs.creat('a', 1);
    fs.mkdir('d');
    let r = reader.catchUp();
    assert.deepEqual(
      r.changes.map((c) => [c.op, c.node.relpath]),
      [
        ['add', 'a'],
        ['add', 'd'],
      ],
    );
    fs.rm('a');
    r = reader.catchUp();
    assert.deepEqual(
      r.changes.map((c) => [c.op, c.node.relpath]),
      [['remove', 'a']],
    );
    assert.equal(reader.catchUp().changes.length, 0);
  });
});

describe('famfs core: model-based property test', () => {
  type Op = { kind: 'mkdir' | 'creat' | 'rm'; name: number; dir: number; size: number };
  const op = fc.record({
    kind: fc.constantFrom<'mkdir' | 'creat' | 'rm'>('mkdir', 'creat', 'creat', 'rm'),
    name: fc.integer({ min: 0, max: 7 }),
    dir: fc.integer({ min: 0, max: 3 }),
    size: fc.integer({ min: 1, max: 9 * MiB }),
  });

  it('random create/mkdir/delete sequences replay to the model, with no overlapping extents', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops: Op[]) => {
        const { media, fs } = fresh(96 * MiB, DEFAULT_LOG_LEN, undefined, LOG_OFFSET + DEFAULT_LOG_LEN);
        const model = new Map<string, 'dir' | number>();
        for (const o of ops) {
          const parent = o.dir === 0 ? '' : `d${o.dir}`;
          const rel = parent && o.kind !== 'mkdir' ? `${parent}/n${o.name}` : o.kind === 'mkdir' ? `d${o.dir}` : `n${o.name}`;
          let expected: string;
          if (o.kind === 'mkdir') expected = model.has(rel) ? (model.get(rel) === 'dir' ? 'EEXIST' : 'ENOTDIR') : 'OK';
          else if (o.kind === 'creat') {
            expected = model.has(rel) ? 'EEXIST' : parent && model.get(parent) !== 'dir' ? 'ENOENT' : 'OK';
          } else {
            const hasChildren = [...model.keys()].some((k) => k.startsWith(`${rel}/`));
            expected = !model.has(rel) ? 'ENOENT' : hasChildren ? 'ENOTEMPTY' : 'OK';
          }
          const got = code(() => (o.kind === 'mkdir' ? fs.mkdir(rel) : o.kind === 'creat' ? fs.creat(rel, o.size) : fs.rm(rel)));
          if (got === 'ENOSPC' && o.kind === 'creat') continue;
          assert.equal(got, expected, `${o.kind} ${rel}`);
          if (got === 'OK') {
            if (o.kind === 'mkdir') model.set(rel, 'dir');
            else if (o.kind === 'creat') model.set(rel, o.size);
            else model.delete(rel);
          }
        }
        const replayed = FamfsFs.open(media, { readOnly: true });
        const seen = new Map<string, 'dir' | number>();
        for (const n of replayed.tree.nodes()) seen.set(n.relpath, n.kind === 'dir' ? 'dir' : n.size);
        assert.deepEqual(seen, model);
        const units = new Set<number>();
        for (const f of replayed.tree.files()) {
          for (const e of fmapExtents(f.fmap)) {
            for (let u = e.offset; u < e.offset + e.len; u += ALLOC_UNIT) {
              assert.ok(!units.has(u), `unit 0x${u.toString(16)} mapped twice`);
              units.add(u);
            }
          }
        }
        assert.equal(fsck(media).clean, true);
      }),
      { numRuns: 150 },
    );
  });
});

// The corruption fuzz (every flip found or provably harmless, repair on replayed entries) is in
// test/famfs-integrity.test.ts.

describe('famfs core: repair', () => {
  it('salvages a bad entry whose bytes still make sense, keeping every later entry', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 5; i++) fs.creat(`f${i}`, 1);
    const at = LOG_OFFSET + entryOffset(2) + LE.payload + 30; // padding after "f2"
    media.write(at, Buffer.from([media.read(at, 1)[0] ^ 0x40]));
    assert.equal(fsck(media).clean, false);
    const r = repair(media, { hostUuid: MASTER });
    assert.deepEqual(r.dropped, []);
    assert.ok(
      r.actions.some((a) => a.startsWith('salvaged log entry 2')),
      r.actions.join('; '),
    );
    const after = fsck(media);
    assert.deepEqual(after.errors, []);
    assert.equal(after.files, 5);
    FamfsFs.open(media, { hostUuid: MASTER }).creat('again', 1);
    assert.equal(fsck(media).clean, true);
  });

  it('an entry that no longer makes sense is replaced by lost+found.N only when the operator says so, never dropping later files or freeing their memory', () => {
    const { media, fs } = fresh();
    const files = [0, 1, 2, 3, 4].map((i) => fs.creat(`f${i}`, 1));
    // Point entry 2's extent at entry 3's memory: salvaging it would cross-link two files.
    const ext = LOG_OFFSET + entryOffset(2) + LE.payload + 104 + 16 + 8;
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(fmapExtents(files[3].fmap)[0].offset));
    media.write(ext, b);
    // Its memory is unknown (issue 10): repair refuses until the operator says to drop the entry.
    assert.equal(
      code(() => repair(media, { hostUuid: MASTER })),
      'ECORRUPT',
    );
    const r = repair(media, { hostUuid: MASTER, drop: [2] });
    assert.deepEqual(
      r.dropped.map((d) => d.index),
      [2],
    );
    assert.match(r.dropped[0].what, /"f2"/);
    const after = FamfsFs.open(media, { readOnly: true });
    assert.deepEqual([...after.tree.files()].map((f) => f.relpath).sort(), ['f0', 'f1', 'f3', 'f4']);
    assert.equal(after.lookup('lost+found.2')?.kind, 'dir');
    assert.equal(fsck(media).clean, true);
  });

  it('rebuilds a damaged log header from the superblock and keeps every valid entry', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 4; i++) fs.creat(`f${i}`, 1);
    media.write(LOG_OFFSET + LH.len, Buffer.from([0x77]));
    assert.equal(
      code(() => FamfsFs.open(media, { readOnly: true })),
      'ECORRUPT',
    );
    const r = repair(media, { hostUuid: MASTER });
    assert.ok(r.actions.some((a) => a.includes('rewrote the log header')));
    const after = fsck(media);
    assert.equal(after.clean, true, after.errors.join('; '));
    assert.equal(after.files, 4);
  });

  it('commits valid entries past next_index (interrupted append or a counter that went backwards)', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 6; i++) fs.creat(`f${i}`, 1);
    // Lower next_index by 3: hosts already serve f3..f5.
    media.write(LOG_OFFSET + LH.nextSeqnum, Buffer.from([3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]));
    const before = fsck(media);
    assert.equal(before.clean, false);
    assert.match(before.errors.join('; '), /next_index 3 is behind the log: entries 3\.\.5 are valid/);
    assert.equal(
      code(() => repair(media, { hostUuid: OTHER })),
      'ENOTMASTER',
    );
    const r = repair(media, { hostUuid: MASTER });
    assert.ok(
      r.actions.some((a) => a.includes('committed 3 valid entries')),
      r.actions.join('; '),
    );
    const after = fsck(media);
    assert.equal(after.clean, true);
    assert.deepEqual(after.warnings, []);
    assert.equal(after.files, 6);
  });

  it('a counter raised past what was written is brought back to the last entry', () => {
    const { media, fs } = fresh();
    for (let i = 0; i < 3; i++) fs.creat(`f${i}`, 1);
    media.write(LOG_OFFSET + LH.nextSeqnum, Buffer.from([9, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]));
    assert.equal(fsck(media).clean, false);
    repair(media, { hostUuid: MASTER });
    const after = fsck(media);
    assert.equal(after.clean, true, after.errors.join('; '));
    assert.equal(after.log!.entriesUsed, 3);
  });

  it('re-makes a damaged extension block with an epoch above any old writer', () => {
    const { media } = fresh();
    const w = FamfsFs.open(media, { hostUuid: MASTER });
    const epoch = w.takeOver(MASTER);
    media.write(0x1000 + 20, Buffer.from([0xee]));
    const r = repair(media, { hostUuid: MASTER, now: 1_700_000_000_000 });
    assert.ok(r.actions.some((a) => a.includes('extension block')));
    assert.ok(readExtBlock(media, FamfsFs.open(media, { readOnly: true }).superblock.uuid)!.epoch > epoch);
    assert.equal(
      code(() => w.creat('x', 1)),
      'EFENCED',
    );
  });
});

describe('famfs core: master hand-back', () => {
  it('a former master can take the role back after another host held it', () => {
    const { media } = fresh();
    const a = FamfsFs.open(media, { hostUuid: MASTER });
    a.takeOver(MASTER);
    a.creat('by-a', 1);
    const b = FamfsFs.open(media, { hostUuid: OTHER });
    b.takeOver(OTHER);
    b.creat('by-b', 1);
    assert.equal(
      code(() => a.creat('stale', 1)),
      'EFENCED',
    );
    a.takeOver(MASTER);
    a.creat('by-a-again', 1);
    assert.equal(FamfsFs.open(media, { readOnly: true }).superblock.systemUuid, MASTER);
    assert.equal(
      code(() => b.creat('stale', 1)),
      'EFENCED',
    );
    assert.equal(fsck(media).files, 3);
  });
});

describe('famfs core: damaged host slots', () => {
  it('a slot that fails its CRC holds back all reclaim until its host re-acks or repair clears it', () => {
    const clock = 1_000_000;
    const { media, fs } = fresh(64 * MiB, DEFAULT_LOG_LEN, () => clock);
    const a = fs.creat('a', 20 * MiB);
    const client = FamfsFs.open(media, { hostUuid: OTHER, now: () => clock });
    client.catchUp();
    const slot = client.ackReplay(OTHER, 'client');
    fs.rm('a');
    client.catchUp();
    client.ackReplay(OTHER, 'client'); // the client has seen the delete
    // Damage the client's slot (a byte of its acked index).
    media.write(0x2000 + slot * 64 + 17, Buffer.from([0x5a]));
    const slots = fs.hosts();
    assert.equal(slots.find((s) => s.slot === slot)?.damaged, true);
    const b = fs.creat('b', 20 * MiB);
    assert.notEqual(fmapExtents(b.fmap)[0].offset, fmapExtents(a.fmap)[0].offset, 'a damaged slot must not release memory');
    assert.ok(fsck(media).warnings.some((w) => w.includes('damaged')));
    // The owner re-acks: its slot is whole again and the memory comes back.
    client.ackReplay(OTHER, 'client');
    assert.equal(fs.hosts().filter((s) => s.damaged).length, 0);
    const c = fs.creat('c', 20 * MiB);
    assert.equal(fmapExtents(c.fmap)[0].offset, fmapExtents(a.fmap)[0].offset);
    // A damaged slot whose owner is gone: repair clears it.
    media.write(0x2000 + slot * 64 + 17, Buffer.from([0xa5]));
    const r = repair(media, { hostUuid: MASTER, now: clock });
    assert.ok(
      r.actions.some((x) => x.includes('cleared damaged host slots')),
      r.actions.join('; '),
    );
    assert.equal(fs.hosts().length, 0);
  });
});

/** `CODE: message` of what fn throws (a FamfsError), or undefined. */
function codeMessage(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return `${(e as { code?: string }).code}: ${(e as Error).message}`;
  }
  return undefined;
}

describe('famfs core on a mapped device (slot check and fence in the native compare-then-write)', () => {
  const name = `famfs-fs-native-${process.pid}`;
  afterEach(() => removeEmulatedDevice(name));

  it('a fenced master publishes nothing, and an occupied slot is never overwritten', () => {
    const made = createEmulatedDevice(name, 64 * MiB, { fresh: true });
    FamfsFs.mkfs(made, { systemUuid: MASTER, devicePath: made.path, logLen: DEFAULT_LOG_LEN });
    made.close();
    const devA = openDevice(made.path);
    const devB = openDevice(made.path);
    try {
      const a = FamfsFs.open(devA, { hostUuid: MASTER });
      const epochA = a.takeOver(MASTER);
      // Two writes: the second runs on the fence bytes the first verified (the one-call path).
      a.creat('one', 1);
      a.creat('two', 1);
      a.writeFlushFenced(60 * MiB, Buffer.from('by a'), epochA);
      assert.equal(devA.read(60 * MiB, 4).toString(), 'by a');

      // An occupied slot at next_index (a counter that went backwards): refused, its bytes kept.
      const slot = a.header().nextIndex;
      const at = LOG_OFFSET + entryOffset(slot);
      const junk = Buffer.alloc(LE.SIZE, 0x5a);
      devB.write(at, junk);
      assert.equal(
        code(() => a.creat('three', 1)),
        'ECORRUPT',
      );
      assert.ok(devA.read(at, LE.SIZE).equals(junk), 'the occupied slot is untouched');
      devB.write(at, Buffer.alloc(LE.SIZE));
      // A write of two entries (a directory and its file, published together) whose second slot
      // is occupied: refused before anything is written, the first slot included.
      devB.write(at + LE.SIZE, junk);
      const header = devA.read(LOG_OFFSET, LH.SIZE);
      assert.match(String(codeMessage(() => a.creat('dir/file', 1, { parents: {} }))), new RegExp(`ECORRUPT: log slot ${slot + 1} `));
      assert.ok(devA.read(at, LE.SIZE).equals(Buffer.alloc(LE.SIZE)), 'nothing written to the free first slot');
      assert.ok(devA.read(at + LE.SIZE, LE.SIZE).equals(junk), 'the occupied slot is untouched');
      assert.ok(devA.read(LOG_OFFSET, LH.SIZE).equals(header), 'nothing published');
      devB.write(at + LE.SIZE, Buffer.alloc(LE.SIZE));
      a.creat('dir/file', 1, { parents: {} });

      // Another master takes over: A's next store (log counters, or data outside the log) is refused.
      const b = FamfsFs.open(devB, { hostUuid: OTHER });
      b.takeOver(OTHER);
      const before = devA.read(LOG_OFFSET, LH.SIZE);
      assert.equal(
        code(() => a.creat('stale', 1)),
        'EFENCED',
      );
      assert.ok(devA.read(LOG_OFFSET, LH.SIZE).equals(before), 'the fenced writer did not publish');
      assert.equal(
        code(() => a.writeFlushFenced(60 * MiB, Buffer.from('late'), epochA)),
        'EFENCED',
      );
      assert.equal(devA.read(60 * MiB, 4).toString(), 'by a');
      b.creat('by-b', 1);
      const ro = openDevice(made.path, { readOnly: true });
      try {
        const r = FamfsFs.open(ro, { readOnly: true });
        assert.deepEqual(
          ['one', 'two', 'dir', 'dir/file', 'stale', 'by-b'].map((p) => r.lookup(p) !== undefined),
          [true, true, true, true, false, true],
        );
      } finally {
        ro.close();
      }
      assert.equal(fsck(devB).clean, true);
    } finally {
      devA.close();
      devB.close();
    }
  });
});
