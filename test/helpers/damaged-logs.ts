// Damaged famfs logs for the differential tests of the native log tree against the JavaScript
// tree (famfs-fsck-native, famfs-tree-native): three intact images (famfs' own log; deletes and a
// quarantined entry; a log compacted twice) and damage() that breaks one in place in one of many
// ways (torn and zeroed entries, flipped bytes with and without a matching CRC, crafted entries
// that trip each replay rule, names that are not UTF-8, lowered and raised counters).
import { strict as assert } from 'assert';
import {
  ALLOC_UNIT,
  crc,
  DAXDEV_PATH_FIELD,
  EXT,
  EXT_BLOCK_OFFSET,
  EXT_LIVE,
  HOST_NAME_FIELD,
  HOST_SLOT_SIZE,
  HOST_SLOTS_OFFSET,
  HS,
  FAMFS_CSI_EXT2_VERSION,
  FAMFS_CSI_EXT_VERSION,
  FAMFS_VERSION,
  LOG_OFFSET,
  SB,
  SMALL_ALLOC_UNIT,
  encodeEntry,
  encodeLogCounters,
  entryOffset,
  FamfsFs,
  FM,
  LE,
  LH,
  repair,
  RELPATH_FIELD,
  type EntryBody,
  type Extent,
  type TreeNode,
} from '../../pkg/famfs';
import { BufferMedia } from './buffer-media';
import { freshFamfs, MASTER_UUID } from './famfs-image';
import { type SeededRandom } from './seeded-random';

export const MiB = 1 << 20;
const HOST = '99999999-8888-4777-8666-555555555555';
export const SIZE = 128 * MiB;

export interface Base {
  name: string;
  media: BufferMedia;
  pristine: Buffer;
  /** Device offset of the active log region, and its slots in use. */
  logAt: number;
  used: number;
  compacted: boolean;
  /** The nodes replay shows for the intact image. */
  nodes: TreeNode[];
}

export function snapshot(name: string, media: BufferMedia): Base {
  const f = FamfsFs.open(media, { readOnly: true });
  const h = f.header();
  return {
    name,
    media,
    pristine: Buffer.from(media.buffer),
    logAt: f.activeLog.offset,
    used: h.nextIndex,
    compacted: f.activeLog.generation > 0,
    nodes: [...f.tree.nodes()],
  };
}

/** famfs' own log (no extension): files, directories, nested, several extents. */
export function plainBase(): Base {
  const { media, fs } = freshFamfs({ size: SIZE, stored: SIZE });
  fs.mkdir('a');
  fs.mkdir('a/b');
  fs.creat('a/f1', 3 * MiB);
  fs.creat('a/b/f2', 1);
  for (let i = 0; i < 6; i++) fs.creat(`r${i}`, (i + 1) * 700_000);
  fs.mkdir('e');
  return snapshot('plain', media);
}

/** Deletes (the extension), a quarantined entry made by repair, and more files after it. */
export function deletesBase(): Base {
  const { media, fs } = freshFamfs({ size: SIZE, stored: SIZE });
  fs.mkdir('d');
  fs.mkdir('d/sub');
  for (let i = 0; i < 8; i++) fs.creat(`d/f${i}`, (1 + (i % 3)) * MiB);
  // A host that replayed up to here: the deletes after it stay pending (fsck's pendingFreeBytes).
  FamfsFs.open(media, { hostUuid: HOST }).ackReplay(HOST, 'host');
  fs.rm('d/f2');
  fs.rm('d/sub');
  fs.creat('d/f2', 2 * MiB);
  const victim = fs.lookup('d/f5')!.index;
  // Two damaged bytes (name and uid) of a file entry: repair cannot prove them and quarantines it.
  const at = fs.activeLog.offset + entryOffset(victim) + LE.payload;
  media.buffer[at + FM.relpath + 1] ^= 0x20;
  media.buffer[at + FM.uid] ^= 0x01;
  repair(media, { hostUuid: MASTER_UUID });
  const after = FamfsFs.open(media, { hostUuid: MASTER_UUID });
  after.creat('tail', 4 * MiB);
  after.mkdir('tail-dir');
  return snapshot('deletes+quarantine', media);
}

/** A log compacted twice (generation 2), with entries appended after each compaction. */
export function compactedBase(): Base {
  const { media, fs } = freshFamfs({ size: SIZE, stored: SIZE });
  fs.mkdir('c');
  for (let i = 0; i < 12; i++) fs.creat(`c/v${i}`, MiB);
  for (let i = 0; i < 12; i += 2) fs.rm(`c/v${i}`);
  assert.equal(fs.compact().compacted, true);
  fs.mkdir('c/n');
  for (let i = 0; i < 4; i++) fs.creat(`c/n/w${i}`, 2 * MiB);
  fs.rm('c/v1');
  fs.rm('c/n/w0');
  assert.equal(fs.compact().compacted, true);
  fs.creat('c/last', 3 * MiB);
  const b = snapshot('compacted', media);
  assert.ok(FamfsFs.open(media, { readOnly: true }).activeLog.generation >= 2);
  return b;
}

function slotAt(b: Base, i: number): number {
  return b.logAt + entryOffset(i);
}

function fixCrc(media: BufferMedia, at: number): void {
  const e = media.buffer.subarray(at, at + LE.SIZE);
  e.writeUInt32LE(crc(e, 0, LE.crc), LE.crc);
  e.writeUInt32LE(0, LE.crc + 4);
}

function ext(offset: number, len: number, devindex = 0): Extent {
  return { devindex, offset, len };
}

/** An entry body that replay must skip or that trips one of its rules. */
export function craftedBody(r: SeededRandom, b: Base, nodes: TreeNode[]): EntryBody {
  const data = 10 * MiB;
  const name = (): string => (nodes.length ? r.pick(nodes).relpath : 'x');
  const file = (relpath: string, extents: Extent[], size = extents.reduce((n, e) => n + e.len, 0)): EntryBody => ({
    type: 'file',
    size,
    flags: 2,
    uid: 0,
    gid: 0,
    mode: 0o644,
    relpath,
    fmap: { kind: 'simple', extents },
  });
  const somewhere = (): number => data + r.int((SIZE - data) / ALLOC_UNIT) * ALLOC_UNIT;
  switch (r.int(18)) {
    case 0:
      return file(name(), [ext(somewhere(), ALLOC_UNIT)]); // a name that exists (or its parent does not)
    case 1:
      return { type: 'mkdir', uid: 1, gid: 2, mode: 0o755, relpath: name() };
    case 2:
      return file(`new${r.int(5)}`, [ext(somewhere(), 2 * ALLOC_UNIT)]); // may overlap live files
    case 3:
      return file(`odd${r.int(3)}`, [
        r.pick([ext(data + 4096, ALLOC_UNIT), ext(MiB * 4, ALLOC_UNIT), ext(SIZE - ALLOC_UNIT, 2 * ALLOC_UNIT), ext(data, 0), ext(data, ALLOC_UNIT, 1)]),
      ]);
    case 4:
      return file(`big${r.int(3)}`, [ext(somewhere(), ALLOC_UNIT)], ALLOC_UNIT + 1 + r.int(5));
    case 5:
      return file(r.pick(['.meta', '.meta/x', 'a/../b', './r9', '/abs', 'a//b', 'a/', '.', '..', 'nope/x', 'r0/x', 'a/f1/y']), [ext(somewhere(), ALLOC_UNIT)]);
    case 6:
      return { type: 'mkdir', uid: 0, gid: 0, mode: 0o700, relpath: r.pick(['./dd', 'dd', '.meta', 'a/b/c', 'zz/top', 'e']) };
    case 7:
    case 8:
      return { type: 'delete', targetIndex: r.int(Math.max(1, b.used + 2)), targetType: r.pick(['file', 'mkdir'] as const), relpath: name() };
    case 9: {
      // Interleaved maps: whole chunks of one length, or not; chunk sizes that are not a power of
      // two, including one whose low 32 bits look like one (JavaScript's & sees only those).
      const chunk = r.pick([2 * MiB, 4 * MiB, 3 * MiB, 2 ** 32 + 2 * MiB, 2 ** 33]);
      const n = 1 + r.int(3);
      const len = r.pick([chunk, 2 * chunk, 4 * MiB]);
      const strips = Array.from({ length: n }, (_, i) => ext(data + (8 + i * 8) * ALLOC_UNIT, r.int(4) === 0 && i > 0 ? len + ALLOC_UNIT : len));
      return {
        type: 'file',
        size: r.int(n * len + 2),
        flags: 2,
        uid: 0,
        gid: 0,
        mode: 0o644,
        relpath: `il${r.int(4)}`,
        fmap: { kind: 'interleave', nstrips: n, chunkSize: chunk, strips },
      };
    }
    case 11:
    case 12: {
      // An exact delete of a live node (a directory may still hold children); the slot it
      // replaces is gone, so later entries may lose their parent.
      const n = nodes.length ? r.pick(nodes) : undefined;
      if (n) return { type: 'delete', targetIndex: n.index, targetType: n.kind === 'file' ? 'file' : 'mkdir', relpath: n.relpath };
      return { type: 'mkdir', uid: 0, gid: 0, mode: 0o755, relpath: 'x' };
    }
    case 10:
      return { type: 'add_daxdev', size: 1 << 30, uuid: '12345678-1234-4234-8234-123456789abc', devindex: 1 };
    default:
      return file(`${name()}${r.pick(['', '/k', '-2'])}`, [ext(somewhere(), ALLOC_UNIT * (1 + r.int(3)))]);
  }
}

/** Damage `b`'s image in place (from its pristine bytes) in one of several ways; returns what was done. */
export function damage(r: SeededRandom, b: Base, nodes: TreeNode[]): string {
  const m = b.media;
  const steps: string[] = [];
  for (let n = 1 + (r.int(4) === 0 ? 1 + r.int(2) : 0); n > 0; n--) {
    const i = r.int(b.used + (r.int(8) === 0 ? 2 : 0));
    const at = slotAt(b, i);
    const kind = r.int(7);
    if (kind === 0) {
      const k = 1 + r.int(3);
      for (let j = 0; j < k; j++) m.buffer[at + r.int(LE.SIZE)] ^= 1 + r.int(255);
      steps.push(`slot ${i}: ${k} flipped bytes`);
    } else if (kind === 1) {
      // Flips the CRC then agrees with: the damage reaches replay's rules.
      const k = 1 + r.int(2);
      for (let j = 0; j < k; j++) m.buffer[at + LE.payload + r.int(LE.crc - LE.payload)] ^= 1 << r.int(8);
      fixCrc(m, at);
      steps.push(`slot ${i}: ${k} flipped bits, CRC fixed`);
    } else if (kind === 2) {
      const from = r.int(2) === 0 ? 0 : r.int(LE.SIZE);
      m.buffer.fill(0, at + from, at + LE.SIZE);
      steps.push(`slot ${i}: zeroed from byte ${from}`);
    } else if (kind === 3 || kind === 4) {
      // A crafted entry at the slot's own log index (its stored seqnum; the slot in famfs' own log).
      const seq = b.compacted && m.buffer.readUInt32LE(at) !== 0 ? m.buffer.readUInt32LE(at) : i;
      const body = craftedBody(r, b, nodes);
      m.buffer.set(encodeEntry(seq, body), at);
      steps.push(`slot ${i}: ${JSON.stringify(body)}`);
    } else if (kind === 5) {
      // A name that is not UTF-8 (two such names may decode to the same string).
      const p = at + LE.payload + FM.relpath;
      const bytes = r.pick([
        [0xff, 0x2f, 0x41],
        [0x61, 0xc3],
        [0xe2, 0x82],
        [0xf0, 0x9f, 0x98],
        [0xed, 0xa0, 0x80],
        [0x72, 0x30, 0xc0, 0xaf],
      ]);
      m.buffer.fill(0, p, p + RELPATH_FIELD);
      m.buffer.set(bytes, p);
      fixCrc(m, at);
      steps.push(`slot ${i}: relpath bytes ${bytes.map((x) => x.toString(16)).join(' ')}`);
    } else {
      const v = Math.max(0, b.used + r.int(5) - 2);
      const h = b.logAt;
      const seq = m.buffer.readUInt32LE(h + LH.nextSeqnum) + (v - b.used);
      m.buffer.set(encodeLogCounters(Math.max(v, seq), v), h + LH.nextSeqnum);
      steps.push(`counters set to ${v}`);
    }
  }
  return steps.join('; ');
}

/**
 * Damage `b`'s superblock and log header in place (from its pristine bytes) in one to three ways:
 * fields set to values on and around every boundary validateSuperblock and validateLogHeader draw
 * (and past 2^32, 2^48 and 2^53), each with or without a CRC that agrees, device paths that are
 * not ASCII or not UTF-8, fields outside the CRC. Returns what was done.
 */
export function damageHead(r: SeededRandom, b: Base): string {
  const m = b.media.buffer;
  const steps: string[] = [];
  const u64 = (at: number, v: bigint): void => {
    m.writeBigUInt64LE(BigInt.asUintN(64, v), at);
  };
  const big = (): bigint => BigInt(r.int(0x100000000)) * 0x100000000n + BigInt(r.int(0x100000000));
  const lh = b.logAt;
  const logLens = [
    8n * 1048576n,
    16n * 1048576n,
    4n * 1048576n,
    8n * 1048576n + 1n,
    1n << 32n,
    (1n << 32n) + (8n << 20n),
    (1n << 33n) + (8n << 20n),
    1n << 48n,
    (1n << 53n) + (8n << 20n),
    1n << 63n,
    BigInt(SIZE),
    BigInt(SIZE) * 2n,
  ];
  for (let n = 1 + r.int(3); n > 0; n--) {
    const what = r.int(16);
    if (what === 0) {
      u64(SB.magic, r.int(2) === 0 ? big() : 0x87b282ffn ^ (1n << BigInt(r.int(64))));
      steps.push('superblock magic');
    } else if (what === 1) {
      const v = r.pick([FAMFS_VERSION, FAMFS_CSI_EXT_VERSION, FAMFS_CSI_EXT2_VERSION, 47n, FAMFS_VERSION | (1n << 40n), big()]);
      u64(SB.version, v);
      steps.push(`superblock version ${v}`);
    } else if (what === 2) {
      const v = r.pick([BigInt(LOG_OFFSET), 0n, BigInt(LOG_OFFSET + 4096), 1n << 40n, big()]);
      u64(SB.logOffset, v);
      steps.push(`superblock log offset ${v}`);
    } else if (what === 3) {
      const v = r.pick(logLens);
      u64(SB.logLen, v);
      steps.push(`superblock log length ${v}`);
    } else if (what === 4) {
      const v = r.pick([BigInt(ALLOC_UNIT), BigInt(SMALL_ALLOC_UNIT), 8192n, 0n, 1n << 60n, BigInt(ALLOC_UNIT) + (1n << 32n)]);
      u64(SB.allocUnit, v);
      steps.push(`superblock allocation unit ${v}`);
    } else if (what === 5) {
      const v = r.pick([2, 1, 3, 0x10002]);
      m.writeUInt32LE(v, SB.omfMajor);
      steps.push(`superblock OMF major ${v}`);
    } else if (what === 6) {
      const at = r.pick([SB.uuid, SB.systemUuid, SB.devUuid, SB.daxdevUuid]);
      for (let i = 0; i < 16; i++) m[at + i] = r.int(256);
      steps.push(`superblock UUID at ${at}`);
    } else if (what === 7) {
      // A stored CRC with bits above the low 32, or just wrong.
      u64(SB.crc, r.int(2) === 0 ? m.readBigUInt64LE(SB.crc) + (1n << BigInt(32 + r.int(32))) : big());
      steps.push('superblock CRC');
    } else if (what === 8) {
      const v = r.pick([
        BigInt(SIZE),
        BigInt(SIZE) + 1n,
        BigInt(SIZE - ALLOC_UNIT),
        BigInt(LOG_OFFSET) + 8n * 1048576n - 1n,
        BigInt(LOG_OFFSET) + 8n * 1048576n,
        1n << 48n,
        (1n << 53n) + 1n,
        (1n << 64n) - 1n,
        0n,
      ]);
      u64(SB.daxdevSize, v);
      steps.push(`superblock device size ${v}`);
    } else if (what === 9) {
      const bytes = r.pick([
        Buffer.from('/dev/dax0.0'),
        Buffer.from('/dev/shm/é'),
        Buffer.from([0x2f, 0xff, 0x41]),
        Buffer.from([0x2f, 0xe2, 0x82]),
        Buffer.alloc(DAXDEV_PATH_FIELD, 0x61),
        Buffer.from([0x2f, 0xc3, 0xa9, ...Buffer.alloc(DAXDEV_PATH_FIELD - 3, 0x62)]),
        Buffer.alloc(0),
      ]);
      m.fill(0, SB.daxdevPath, SB.daxdevPath + DAXDEV_PATH_FIELD);
      m.set(bytes, SB.daxdevPath);
      steps.push(`superblock device path bytes ${bytes.toString('hex')}`);
    } else if (what === 10) {
      m.writeUInt32LE(r.int(0x100000000), SB.flags);
      steps.push('superblock flags');
    } else if (what === 11) {
      u64(lh + LH.magic, r.int(2) === 0 ? big() : 0xbadcafef00dn ^ (1n << BigInt(r.int(64))));
      steps.push('log magic');
    } else if (what === 12) {
      const v = r.pick([...logLens, 0n, 47n, 48n]);
      u64(lh + LH.len, v);
      steps.push(`log length ${v}`);
    } else if (what === 13) {
      const last = m.readBigUInt64LE(lh + LH.lastIndex);
      const v = r.pick([last, last + 1n, last - 1n, 0n, (1n << 53n) + last, 1n << 63n, -2n]);
      u64(lh + LH.lastIndex, v);
      steps.push(`log last_index ${BigInt.asUintN(64, v)}`);
    } else if (what === 14) {
      u64(lh + LH.crc, r.int(2) === 0 ? m.readBigUInt64LE(lh + LH.crc) + (1n << BigInt(32 + r.int(32))) : big());
      steps.push('log header CRC');
    } else {
      // The counters (outside the CRC): past the last slot, apart, beyond 2^53.
      const last = m.readBigUInt64LE(lh + LH.lastIndex);
      const used = BigInt(b.used);
      const pick = (): bigint => r.pick([used, used + 1n, used - 1n, last, last + 1n, last + 2n, 1n << 53n, (1n << 53n) - 1n, 1n << 63n, 0n]);
      const idx = pick();
      const seq = r.int(2) === 0 ? idx : pick();
      u64(lh + LH.nextSeqnum, seq);
      u64(lh + LH.nextIndex, idx);
      steps.push(`log counters seq ${seq} index ${idx}`);
    }
    // Most of the time the CRCs agree, so the checks behind them are reached.
    if (r.int(4) !== 0) u64(SB.crc, BigInt(crc(m, 0, SB.crc)));
    if (r.int(4) !== 0) u64(lh + LH.crc, BigInt(crc(m, lh, lh + LH.crc)));
  }
  return steps.join('; ');
}

/**
 * Damage `b`'s famfs-csi extension block, its liveness line and host slots in place (from its
 * pristine bytes) in one to three ways: every field on and around what readExtBlock and
 * readHostSlots accept (revisions 1 to 5, slot counts past the table, epochs, windows and acks
 * past 2^48 and 2^53, another file system's UUID, zero host UUIDs, names that are not ASCII or not
 * UTF-8), most with CRCs that agree. Returns what was done.
 */
export function damageHosts(r: SeededRandom, b: Base): string {
  const m = b.media.buffer;
  const steps: string[] = [];
  const u64 = (at: number, v: bigint): void => {
    m.writeBigUInt64LE(BigInt.asUintN(64, v), at);
  };
  const big = (): bigint => BigInt(r.int(0x100000000)) * 0x100000000n + BigInt(r.int(0x100000000));
  const E = EXT_BLOCK_OFFSET;
  const live = E + EXT.SIZE;
  for (let n = 1 + r.int(3); n > 0; n--) {
    const what = r.int(12);
    const slot = HOST_SLOTS_OFFSET + r.int(4) * HOST_SLOT_SIZE;
    if (what === 0) {
      u64(E + EXT.magic, r.int(2) === 0 ? big() : m.readBigUInt64LE(E + EXT.magic) ^ (1n << BigInt(r.int(64))));
      steps.push('extension magic');
    } else if (what === 1) {
      const v = r.pick([1, 2, 3, 4, 5, 0]);
      m.writeUInt32LE(v, E + EXT.revision);
      steps.push(`extension revision ${v}`);
    } else if (what === 2) {
      const v = r.pick([0, 1, 2, 4, 1024, 1025, 2047, 2048, 0x80000000]);
      m.writeUInt32LE(v, E + EXT.slotCount);
      steps.push(`extension slot count ${v}`);
    } else if (what === 3) {
      const v = r.pick([0n, 1n, 1n << 48n, (1n << 53n) + 1n, (1n << 64n) - 1n]);
      u64(E + EXT.epoch, v);
      steps.push(`extension epoch ${v}`);
    } else if (what === 4) {
      const at = r.pick([E + EXT.fsUuid, E + EXT.masterUuid]);
      for (let i = 0; i < 16; i++) m[at + i] = r.int(3) === 0 ? 0 : r.int(256);
      steps.push(`extension UUID at ${at - E}`);
    } else if (what === 5) {
      m.writeUInt32LE(r.int(0x100000000), E + EXT.crc);
      steps.push('extension CRC');
    } else if (what === 6) {
      const v = r.pick([0n, 1n, 60000n, 1n << 48n, (1n << 53n) + 1n, big()]);
      u64(live + EXT_LIVE.hostLiveMs, v);
      steps.push(`liveness window ${v}`);
    } else if (what === 7) {
      for (let i = 0; i < 16; i++) m[slot + HS.hostUuid + i] = r.int(2) === 0 ? 0 : r.int(256);
      steps.push(`host slot at ${slot}: UUID`);
    } else if (what === 8) {
      const v = r.pick([0n, BigInt(b.used), BigInt(b.used) + 5n, 1n << 48n, (1n << 53n) + 1n, big()]);
      u64(slot + r.pick([HS.ackedIndex, HS.beat]), v);
      steps.push(`host slot at ${slot}: ack or beat ${v}`);
    } else if (what === 9) {
      const bytes = r.pick([Buffer.from('node-7'), Buffer.from('nœud'), Buffer.from([0x6e, 0xff]), Buffer.alloc(HOST_NAME_FIELD, 0x61), Buffer.alloc(0)]);
      m.fill(0, slot + HS.name, slot + HS.name + HOST_NAME_FIELD);
      m.set(bytes, slot + HS.name);
      steps.push(`host slot at ${slot}: name bytes ${bytes.toString('hex')}`);
    } else if (what === 10) {
      m[slot + r.int(HOST_SLOT_SIZE)] ^= 1 + r.int(255);
      steps.push(`host slot at ${slot}: a flipped byte`);
    } else {
      m.fill(0, slot, slot + HOST_SLOT_SIZE);
      steps.push(`host slot at ${slot}: zeroed`);
    }
    if (r.int(4) !== 0) m.writeUInt32LE(crc(m, E, E + EXT.crc), E + EXT.crc);
    if (r.int(4) !== 0) u64(live + EXT_LIVE.crc, BigInt(crc(m, live, live + EXT_LIVE.crc)));
    if (what >= 7 && what <= 9 && r.int(4) !== 0) u64(slot + HS.crc, BigInt(crc(m, slot, slot + HS.crc)));
  }
  return steps.join('; ');
}
