/**
 * famfs on-media format (OMF 2.2, superblock version 48): every struct, every offset, in one place.
 *
 * Readers and writers both go through the encode/decode functions below, so an offset is written
 * down exactly once. All integers are little-endian; the structs are plain x86-64 LP64 C structs
 * (natural alignment, no packing), which is why two CRC slots are 8 bytes wide.
 *
 * famfs-csi extensions (see docs/format.md) are defined here too and are kept out of every byte
 * that a famfs reader interprets unless the superblock version says the extension is in use.
 */
import { crc32 } from 'zlib';
import { FamfsError } from './errors';

// ---------------------------------------------------------------------------------------------
// Global constants
// ---------------------------------------------------------------------------------------------
export const SUPERBLOCK_MAGIC = 0x87b282ffn;
/** famfs' FAMFS_CURRENT_VERSION: the only ts_version a plain famfs reader accepts. */
export const FAMFS_VERSION = 48n;
/**
 * ts_version of a superblock whose log may hold famfs-csi extension entries (deletes).
 * Low 32 bits keep famfs' 48, high 32 bits carry the tag "CSI" and the extension revision 1.
 * famfs compares ts_version with 48 for equality, so it refuses such a device instead of replaying
 * a log whose deletions it cannot understand (it would show deleted files over freed memory).
 */
export const FAMFS_CSI_EXT_VERSION = (0x43534901n << 32n) | FAMFS_VERSION;
/**
 * ts_version of a superblock whose log may have been compacted (famfs-csi extension revision 2):
 * the log in use is the one the log generation records (LOG_GEN_OFFSET) name, which may be a
 * second region in the data area. Revision-1 readers (and famfs) refuse such a device, so none of
 * them can replay the stale famfs log region.
 */
export const FAMFS_CSI_EXT2_VERSION = (0x43534902n << 32n) | FAMFS_VERSION;
export const OMF_MAJOR = 2;
export const OMF_MINOR = 2;

export const SUPERBLOCK_OFFSET = 0;
/** Size of the superblock *region*; the log starts right after it. */
export const SUPERBLOCK_REGION = 0x200000;
export const LOG_OFFSET = 0x200000;
export const ALLOC_UNIT = 0x200000;
/** The other allocation unit a famfs superblock may name (4 KiB pages). */
export const SMALL_ALLOC_UNIT = 4096;
export const DEFAULT_LOG_LEN = 0x800000;
export const MIN_LOG_LEN = 0x800000;
export const CACHE_LINE = 64;

export const LOG_MAGIC = 0xbadcafef00dn;
export const LOG_HEADER_SIZE = 48;
export const LOG_ENTRY_SIZE = 544;
export const MAX_RELPATH = 79; // FAMFS_MAX_PATHLEN 80 including the NUL
export const RELPATH_FIELD = 80;
export const MAX_SIMPLE_EXTENTS = 16;
export const MAX_STRIPS = 16;
export const MAX_BUCKETS = 64;
export const DAXDEV_PATH_FIELD = 64;

/** Log entry type codes (famfs_log_entry_type). */
export const EntryType = {
  FILE: 0,
  MKDIR: 1,
  /** Reserved by famfs, never written by it; famfs-csi does not use it either (its meaning is famfs'). */
  FAMFS_DELETE_RESERVED: 2,
  ADD_DAXDEV: 3,
  INVALID: 4,
  /** famfs-csi extension: delete a file or an empty directory. Only valid under FAMFS_CSI_EXT_VERSION. */
  CSI_DELETE: 0x43530001,
} as const;

export const FileFlags = { ALL_HOSTS_RO: 1, ALL_HOSTS_RW: 2 } as const;
export const ExtentType = { SIMPLE: 0, INTERLEAVE: 1 } as const;

/** Number of log entries a log of `logLen` bytes holds (famfs_log_last_index + 1). */
export function logCapacity(logLen: number): number {
  return Math.floor((logLen - LOG_HEADER_SIZE) / LOG_ENTRY_SIZE);
}

export function crc(buf: Uint8Array, start: number, end: number): number {
  return crc32(buf.subarray(start, end)) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// UUIDs: stored in libuuid byte order (same order as the hex digits of the text form)
// ---------------------------------------------------------------------------------------------
export function uuidToBytes(text: string): Buffer {
  const hex = text.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new FamfsError('EINVAL', `not a UUID: ${JSON.stringify(text)}`);
  return Buffer.from(hex, 'hex');
}

export function bytesToUuid(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

// ---------------------------------------------------------------------------------------------
// Little helpers: u64 fields are read as bigint and narrowed where the value must fit a JS number
// ---------------------------------------------------------------------------------------------
function u64(b: Buffer, off: number): bigint {
  return b.readBigUInt64LE(off);
}
/** Read a u64 that must be a safe integer (offsets, sizes); anything larger is corrupt metadata. */
function u64n(b: Buffer, off: number, what: string): number {
  // Two 32-bit reads: replay decodes tens of thousands of these, BigInt would dominate.
  const hi = b.readUInt32LE(off + 4);
  if (hi > 0x1fffff) throw new FamfsError('ECORRUPT', `${what} is out of range: ${b.readBigUInt64LE(off)}`);
  return hi * 0x100000000 + b.readUInt32LE(off);
}
/** Read a u64 for reporting: values beyond 2^53 saturate, so validation still sees them as absurd. */
function u64sat(b: Buffer, off: number): number {
  const v = b.readBigUInt64LE(off);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}
function putU64(b: Buffer, off: number, v: number | bigint): void {
  // Two 32-bit stores for safe integers (every log entry has several u64s; BigInt costs more).
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) {
    b.writeUInt32LE(v % 0x100000000, off);
    b.writeUInt32LE(Math.floor(v / 0x100000000), off + 4);
  } else b.writeBigUInt64LE(BigInt(v), off);
}
function readCString(b: Buffer, off: number, len: number): { text: string; terminated: boolean } {
  const nul = b.indexOf(0, off);
  const terminated = nul >= 0 && nul < off + len;
  return { text: b.toString('utf8', off, terminated ? nul : off + len), terminated };
}
function putCString(b: Buffer, off: number, len: number, text: string): void {
  const n = Buffer.byteLength(text, 'utf8');
  if (n >= len) throw new FamfsError('ENAMETOOLONG', `"${text}" is ${n} bytes; the field holds ${len - 1}`);
  b.fill(0, off, off + len);
  b.write(text, off, n, 'utf8');
}

// ---------------------------------------------------------------------------------------------
// struct famfs_superblock (200 bytes at device offset 0)
// ---------------------------------------------------------------------------------------------
export const SB = {
  magic: 0,
  version: 8,
  logOffset: 16,
  logLen: 24,
  allocUnit: 32,
  omfMajor: 40,
  omfMinor: 44,
  uuid: 48,
  devUuid: 64,
  systemUuid: 80,
  crc: 96, // CRC-32 over bytes [0, 96)
  flags: 104, // not covered by the CRC
  daxdevSize: 112, // struct famfs_daxdev, not covered by the CRC
  daxdevUuid: 120,
  daxdevPath: 136,
  SIZE: 200,
} as const;

export interface Superblock {
  magic: bigint;
  version: bigint;
  logOffset: number;
  logLen: number;
  allocUnit: number;
  omfMajor: number;
  omfMinor: number;
  uuid: string;
  devUuid: string;
  systemUuid: string;
  crc: number;
  flags: number;
  deviceSize: number;
  deviceUuid: string;
  devicePath: string;
}

export function superblockCrc(b: Buffer): number {
  return crc(b, 0, SB.crc);
}

export function encodeSuperblock(sb: Omit<Superblock, 'crc' | 'magic'>): Buffer {
  const b = Buffer.alloc(SB.SIZE);
  putU64(b, SB.magic, SUPERBLOCK_MAGIC);
  putU64(b, SB.version, sb.version);
  putU64(b, SB.logOffset, sb.logOffset);
  putU64(b, SB.logLen, sb.logLen);
  putU64(b, SB.allocUnit, sb.allocUnit);
  b.writeUInt32LE(sb.omfMajor, SB.omfMajor);
  b.writeUInt32LE(sb.omfMinor, SB.omfMinor);
  uuidToBytes(sb.uuid).copy(b, SB.uuid);
  uuidToBytes(sb.devUuid).copy(b, SB.devUuid);
  uuidToBytes(sb.systemUuid).copy(b, SB.systemUuid);
  putU64(b, SB.crc, superblockCrc(b));
  b.writeUInt32LE(sb.flags, SB.flags);
  putU64(b, SB.daxdevSize, sb.deviceSize);
  uuidToBytes(sb.deviceUuid).copy(b, SB.daxdevUuid);
  putCString(b, SB.daxdevPath, DAXDEV_PATH_FIELD, sb.devicePath);
  return b;
}

/** Decode without judging; see validateSuperblock for the checks. */
export function decodeSuperblock(b: Buffer): Superblock {
  if (b.length < SB.SIZE) throw new FamfsError('ECORRUPT', `superblock buffer is ${b.length} bytes, need ${SB.SIZE}`);
  return {
    magic: u64(b, SB.magic),
    version: u64(b, SB.version),
    logOffset: u64sat(b, SB.logOffset),
    logLen: u64sat(b, SB.logLen),
    allocUnit: u64sat(b, SB.allocUnit),
    omfMajor: b.readUInt32LE(SB.omfMajor),
    omfMinor: b.readUInt32LE(SB.omfMinor),
    uuid: bytesToUuid(b.subarray(SB.uuid, SB.uuid + 16)),
    devUuid: bytesToUuid(b.subarray(SB.devUuid, SB.devUuid + 16)),
    systemUuid: bytesToUuid(b.subarray(SB.systemUuid, SB.systemUuid + 16)),
    crc: u64sat(b, SB.crc),
    flags: b.readUInt32LE(SB.flags),
    deviceSize: u64sat(b, SB.daxdevSize),
    deviceUuid: bytesToUuid(b.subarray(SB.daxdevUuid, SB.daxdevUuid + 16)),
    devicePath: readCString(b, SB.daxdevPath, DAXDEV_PATH_FIELD).text,
  };
}

export interface SuperblockCheck {
  ok: boolean;
  /** True when the superblock carries a famfs-csi extension version (1 or 2). */
  extended: boolean;
  /** True when it carries revision 2: the log generation records say where the log is. */
  compacted?: boolean;
  problems: string[];
}

const KNOWN_VERSIONS = [FAMFS_VERSION, FAMFS_CSI_EXT_VERSION, FAMFS_CSI_EXT2_VERSION];

/**
 * Enabling the extension rewrites ts_version and the CRC, which live in different cache lines; a
 * crash between the two leaves a CRC that matches the *other* version. famfs sees a corrupt
 * superblock (its mkfs would reformat the device), so this is damage, not a valid state:
 * validateSuperblock names it and `famfs repair` makes version and CRC agree again.
 */
export function tornVersionUpgrade(raw: Buffer, stored: number = Number(raw.readBigUInt64LE(SB.crc))): boolean {
  return tornVersionCrcOf(raw, stored) !== undefined;
}

/** The other known version whose CRC the superblock carries, when its version store was torn. */
export function tornVersionCrcOf(raw: Buffer, stored: number = Number(raw.readBigUInt64LE(SB.crc))): bigint | undefined {
  const v = raw.readBigUInt64LE(SB.version);
  if (!KNOWN_VERSIONS.includes(v)) return undefined;
  const copy = Buffer.from(raw.subarray(0, SB.crc));
  for (const other of KNOWN_VERSIONS) {
    if (other === v) continue;
    copy.writeBigUInt64LE(other, SB.version);
    if (crc(copy, 0, SB.crc) === stored) return other;
  }
  return undefined;
}

/** The checks famfs_check_super makes, plus range checks that protect our own arithmetic. */
export function validateSuperblock(raw: Buffer, mediaSize?: number): SuperblockCheck {
  const sb = decodeSuperblock(raw);
  const problems: string[] = [];
  if (sb.magic !== SUPERBLOCK_MAGIC) {
    return { ok: false, extended: false, problems: [`no famfs superblock (magic 0x${sb.magic.toString(16)}, want 0x87b282ff)`] };
  }
  const compacted = sb.version === FAMFS_CSI_EXT2_VERSION;
  const extended = sb.version === FAMFS_CSI_EXT_VERSION || compacted;
  if (sb.version !== FAMFS_VERSION && !extended) problems.push(`unsupported superblock version ${sb.version} (want 48)`);
  const stored = Number(raw.readBigUInt64LE(SB.crc));
  const computed = superblockCrc(raw);
  if (stored !== computed) {
    problems.push(
      tornVersionUpgrade(raw, stored)
        ? `torn version upgrade: version ${sb.version} carries the CRC of version ${tornVersionCrcOf(raw, stored)} (famfs would reformat this device; run famfs repair)`
        : `superblock CRC mismatch: stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`,
    );
  }
  if (sb.logOffset !== LOG_OFFSET) problems.push(`log offset 0x${sb.logOffset.toString(16)} (want 0x200000)`);
  if (sb.logLen < MIN_LOG_LEN || (sb.logLen & (sb.logLen - 1)) !== 0) problems.push(`log length ${sb.logLen} is not a power of two >= 8 MiB`);
  if (sb.allocUnit !== ALLOC_UNIT && sb.allocUnit !== SMALL_ALLOC_UNIT) problems.push(`allocation unit ${sb.allocUnit} (want 2 MiB or 4 KiB)`);
  if (sb.omfMajor !== OMF_MAJOR) problems.push(`OMF major version ${sb.omfMajor} (want ${OMF_MAJOR})`);
  if (sb.deviceSize < LOG_OFFSET + sb.logLen) problems.push(`device size ${sb.deviceSize} is smaller than superblock + log`);
  if (mediaSize !== undefined && sb.deviceSize > mediaSize) {
    problems.push(`superblock says the device has ${sb.deviceSize} bytes but only ${mediaSize} are mapped`);
  }
  return { ok: problems.length === 0, extended, ...(compacted ? { compacted } : {}), problems };
}

// ---------------------------------------------------------------------------------------------
// struct famfs_log (48-byte header at LOG_OFFSET)
// ---------------------------------------------------------------------------------------------
export const LH = {
  magic: 0,
  len: 8,
  lastIndex: 16,
  crc: 24, // CRC-32 over [0, 24): magic, len, last_index
  nextSeqnum: 32, // not CRC-protected
  nextIndex: 40, // not CRC-protected
  SIZE: LOG_HEADER_SIZE,
} as const;

export interface LogHeader {
  magic: bigint;
  len: number;
  lastIndex: number;
  crc: number;
  nextSeqnum: number;
  nextIndex: number;
}

export function encodeLogHeader(logLen: number, nextSeqnum = 0, nextIndex = 0): Buffer {
  const b = Buffer.alloc(LH.SIZE);
  putU64(b, LH.magic, LOG_MAGIC);
  putU64(b, LH.len, logLen);
  putU64(b, LH.lastIndex, logCapacity(logLen) - 1);
  putU64(b, LH.crc, crc(b, 0, LH.crc));
  putU64(b, LH.nextSeqnum, nextSeqnum);
  putU64(b, LH.nextIndex, nextIndex);
  return b;
}

/** The two counters an append bumps; they live in one cache line with the rest of the header. */
export function encodeLogCounters(nextSeqnum: number, nextIndex: number): Buffer {
  const b = Buffer.alloc(16);
  putU64(b, 0, nextSeqnum);
  putU64(b, 8, nextIndex);
  return b;
}

export function decodeLogHeader(b: Buffer): LogHeader {
  return {
    magic: u64(b, LH.magic),
    len: u64n(b, LH.len, 'log length'),
    lastIndex: u64n(b, LH.lastIndex, 'log last_index'),
    crc: Number(u64(b, LH.crc) & 0xffffffffn),
    nextSeqnum: u64n(b, LH.nextSeqnum, 'log next_seqnum'),
    nextIndex: u64n(b, LH.nextIndex, 'log next_index'),
  };
}

/**
 * `compacted`: the header belongs to a log generation >= 1, whose entries keep the log index
 * they were first written at (their seqnum), so next_seqnum may run ahead of next_index.
 */
export function validateLogHeader(b: Buffer, sbLogLen: number, compacted = false): string[] {
  const problems: string[] = [];
  const magic = u64(b, LH.magic);
  if (magic !== LOG_MAGIC) return [`bad log magic 0x${magic.toString(16)} (want 0xbadcafef00d)`];
  const stored = Number(b.readBigUInt64LE(LH.crc));
  const computed = crc(b, 0, LH.crc);
  if (stored !== computed) problems.push(`log header CRC mismatch: stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`);
  let h: LogHeader;
  try {
    h = decodeLogHeader(b);
  } catch (e) {
    return [...problems, (e as Error).message];
  }
  if (h.len !== sbLogLen) problems.push(`log length ${h.len} differs from the superblock's ${sbLogLen}`);
  if (h.lastIndex !== logCapacity(h.len) - 1) problems.push(`log last_index ${h.lastIndex} does not fit length ${h.len}`);
  if (h.nextIndex > h.lastIndex + 1) problems.push(`log next_index ${h.nextIndex} is past the last slot ${h.lastIndex}`);
  if (compacted ? h.nextSeqnum < h.nextIndex : h.nextSeqnum !== h.nextIndex) {
    problems.push(`log next_seqnum ${h.nextSeqnum} ${compacted ? 'is below' : 'differs from'} next_index ${h.nextIndex}`);
  }
  return problems;
}

export function entryOffset(index: number): number {
  return LOG_HEADER_SIZE + index * LOG_ENTRY_SIZE;
}

// ---------------------------------------------------------------------------------------------
// struct famfs_log_entry (544 bytes)
// ---------------------------------------------------------------------------------------------
export const LE = {
  seqnum: 0,
  type: 8,
  payload: 16, // 520-byte union
  crc: 536, // CRC-32 over [0, 536) of the zero-filled raw entry
  SIZE: LOG_ENTRY_SIZE,
} as const;

/** famfs_log_file_meta, relative to the payload. */
export const FM = {
  size: 0,
  flags: 8,
  uid: 12,
  gid: 16,
  mode: 20,
  relpath: 24,
  fmap: 104,
} as const;

/** famfs_log_fmap, relative to FM.fmap. */
export const FMAP = {
  extType: 0,
  count: 8, // fmap_nextents (SIMPLE) / fmap_niext (INTERLEAVE)
  extents: 16,
  SIMPLE_EXTENT_SIZE: 24, // {u64 devindex, u64 offset, u64 len}
  /** famfs_interleaved_ext: {u64 nstrips, u64 chunk_size, se strips[16]} */
  IE_NSTRIPS: 0,
  IE_CHUNK: 8,
  IE_STRIPS: 16,
} as const;

/** famfs_log_mkdir, relative to the payload. */
export const MD = { uid: 0, gid: 4, mode: 8, relpath: 12 } as const;

/** famfs_log_add_daxdev (OMF 2.2), relative to the payload. */
export const AD = { size: 0, uuid: 8, index: 24 } as const;

/**
 * famfs-csi delete entry payload (type CSI_DELETE), relative to the payload:
 * the log index of the FILE or MKDIR entry it removes, that entry's type, and its relpath
 * (a cross-check: replay refuses a delete whose target does not match).
 */
export const DEL = { targetIndex: 0, targetType: 8, flags: 12, relpath: 16 } as const;

export interface Extent {
  devindex: number;
  offset: number;
  len: number;
}

export type Fmap = { kind: 'simple'; extents: Extent[] } | { kind: 'interleave'; nstrips: number; chunkSize: number; strips: Extent[] };

export interface FileEntry {
  type: 'file';
  size: number;
  flags: number;
  uid: number;
  gid: number;
  mode: number;
  relpath: string;
  fmap: Fmap;
}
export interface MkdirEntry {
  type: 'mkdir';
  uid: number;
  gid: number;
  mode: number;
  relpath: string;
}
export interface AddDaxdevEntry {
  type: 'add_daxdev';
  size: number;
  uuid: string;
  devindex: number;
}
export interface DeleteEntry {
  type: 'delete';
  targetIndex: number;
  targetType: 'file' | 'mkdir';
  relpath: string;
}
export type EntryBody = FileEntry | MkdirEntry | AddDaxdevEntry | DeleteEntry;
export interface LogEntry {
  index: number;
  seqnum: number;
  body: EntryBody;
}

export function checkRelpath(relpath: string): void {
  if (relpath.length === 0) throw new FamfsError('EINVAL', 'empty path');
  if (relpath.startsWith('/')) throw new FamfsError('EINVAL', `"${relpath}": famfs paths are relative to the mount (no leading /)`);
  if (relpath.includes('\0')) throw new FamfsError('EINVAL', 'path contains a NUL byte');
  const bytes = Buffer.byteLength(relpath, 'utf8');
  if (bytes > MAX_RELPATH) throw new FamfsError('ENAMETOOLONG', `"${relpath}" is ${bytes} bytes; famfs paths hold at most ${MAX_RELPATH}`);
  for (const part of relpath.split('/')) {
    if (part === '' || part === '.' || part === '..') throw new FamfsError('EINVAL', `"${relpath}": empty, "." or ".." path component`);
  }
  if (relpath === '.meta' || relpath.startsWith('.meta/')) throw new FamfsError('EINVAL', `"${relpath}": .meta is reserved for famfs metadata files`);
}

function encodeExtent(b: Buffer, off: number, e: Extent): void {
  putU64(b, off, e.devindex);
  putU64(b, off + 8, e.offset);
  putU64(b, off + 16, e.len);
}
function decodeExtent(b: Buffer, off: number): Extent {
  return { devindex: u64n(b, off, 'extent devindex'), offset: u64n(b, off + 8, 'extent offset'), len: u64n(b, off + 16, 'extent length') };
}

/** Build the full 544-byte entry (zero-filled, CRC set). */
export function encodeEntry(index: number, body: EntryBody, into?: Buffer): Buffer {
  // `into` (a writer's scratch slot, LE.SIZE bytes) spares an allocation per append.
  const b = into === undefined ? Buffer.alloc(LE.SIZE) : into.fill(0, 0, LE.SIZE);
  putU64(b, LE.seqnum, index);
  const p = LE.payload;
  switch (body.type) {
    case 'file': {
      b.writeUInt32LE(EntryType.FILE, LE.type);
      putU64(b, p + FM.size, body.size);
      b.writeUInt32LE(body.flags, p + FM.flags);
      b.writeUInt32LE(body.uid, p + FM.uid);
      b.writeUInt32LE(body.gid, p + FM.gid);
      b.writeUInt32LE(body.mode, p + FM.mode);
      putCString(b, p + FM.relpath, RELPATH_FIELD, body.relpath);
      const f = p + FM.fmap;
      if (body.fmap.kind === 'simple') {
        const n = body.fmap.extents.length;
        if (n < 1 || n > MAX_SIMPLE_EXTENTS) throw new FamfsError('EINVAL', `${n} simple extents (1..${MAX_SIMPLE_EXTENTS})`);
        b.writeUInt32LE(ExtentType.SIMPLE, f + FMAP.extType);
        b.writeUInt32LE(n, f + FMAP.count);
        body.fmap.extents.forEach((e, i) => encodeExtent(b, f + FMAP.extents + i * FMAP.SIMPLE_EXTENT_SIZE, e));
      } else {
        const n = body.fmap.strips.length;
        if (n < 1 || n > MAX_STRIPS || n !== body.fmap.nstrips) throw new FamfsError('EINVAL', `${n} strips (1..${MAX_STRIPS}, = nstrips)`);
        b.writeUInt32LE(ExtentType.INTERLEAVE, f + FMAP.extType);
        b.writeUInt32LE(1, f + FMAP.count);
        const ie = f + FMAP.extents;
        putU64(b, ie + FMAP.IE_NSTRIPS, body.fmap.nstrips);
        putU64(b, ie + FMAP.IE_CHUNK, body.fmap.chunkSize);
        body.fmap.strips.forEach((e, i) => encodeExtent(b, ie + FMAP.IE_STRIPS + i * FMAP.SIMPLE_EXTENT_SIZE, e));
      }
      break;
    }
    case 'mkdir':
      b.writeUInt32LE(EntryType.MKDIR, LE.type);
      b.writeUInt32LE(body.uid, p + MD.uid);
      b.writeUInt32LE(body.gid, p + MD.gid);
      b.writeUInt32LE(body.mode, p + MD.mode);
      putCString(b, p + MD.relpath, RELPATH_FIELD, body.relpath);
      break;
    case 'add_daxdev':
      b.writeUInt32LE(EntryType.ADD_DAXDEV, LE.type);
      putU64(b, p + AD.size, body.size);
      uuidToBytes(body.uuid).copy(b, p + AD.uuid);
      b.writeUInt32LE(body.devindex, p + AD.index);
      break;
    case 'delete':
      b.writeUInt32LE(EntryType.CSI_DELETE, LE.type);
      putU64(b, p + DEL.targetIndex, body.targetIndex);
      b.writeUInt32LE(body.targetType === 'file' ? EntryType.FILE : EntryType.MKDIR, p + DEL.targetType);
      putCString(b, p + DEL.relpath, RELPATH_FIELD, body.relpath);
      break;
  }
  putU64(b, LE.crc, crc(b, 0, LE.crc));
  return b;
}

/** Why an entry slot cannot be used; replay stops at the first one. */
export class EntryDecodeError extends Error {
  constructor(
    readonly index: number,
    readonly reason: string,
  ) {
    super(`log entry ${index}: ${reason}`);
  }
}

/**
 * Decode and validate one raw entry. `extended` says whether famfs-csi extension entries are
 * allowed (superblock carries FAMFS_CSI_EXT_VERSION); it is asked only when such an entry shows
 * up, so a reader can re-check a superblock that was upgraded after it opened the device.
 */
export function decodeEntry(raw: Buffer, index: number, extended: boolean | (() => boolean), seq?: SeqWindow): LogEntry {
  return decodeEntryAt(raw, 0, index, extended, seq);
}

/**
 * Which seqnums a slot may hold. In generation 0 (famfs' own log) an entry's seqnum is its slot
 * (no window given). A compacted log keeps each entry's original log index as its seqnum, so
 * slot i holds a seqnum in [min, max): above the previous slot's, below the header's next_seqnum.
 */
export interface SeqWindow {
  min: number;
  max: number;
}

/**
 * decodeEntry for the entry at byte `o` of a larger buffer (replay decodes in place, no copies).
 * `index` is the slot; the returned entry's index is its log index (the seqnum).
 */
export function decodeEntryAt(raw: Buffer, o: number, index: number, extended: boolean | (() => boolean), seq?: SeqWindow, knownCrc?: number): LogEntry {
  // knownCrc: the CRC of these bytes computed in a batch (crc-slots.ts); otherwise computed here.
  const computed = knownCrc ?? crc(raw, o, o + LE.crc);
  if (raw.readUInt32LE(o + LE.crc) !== computed || raw.readUInt32LE(o + LE.crc + 4) !== 0) {
    throw new EntryDecodeError(index, `CRC mismatch (stored 0x${raw.readBigUInt64LE(o + LE.crc).toString(16)}, computed 0x${computed.toString(16)})`);
  }
  if (seq === undefined) {
    if (raw.readUInt32LE(o + LE.seqnum) !== index % 0x100000000 || raw.readUInt32LE(o + LE.seqnum + 4) !== Math.floor(index / 0x100000000)) {
      throw new EntryDecodeError(index, `seqnum ${raw.readBigUInt64LE(o + LE.seqnum)} differs from its index`);
    }
  } else {
    const hi = raw.readUInt32LE(o + LE.seqnum + 4);
    const s = hi > 0x1fffff ? Number.MAX_SAFE_INTEGER : hi * 0x100000000 + raw.readUInt32LE(o + LE.seqnum);
    if (s < seq.min || s >= seq.max)
      throw new EntryDecodeError(index, `seqnum ${raw.readBigUInt64LE(o + LE.seqnum)} outside [${seq.min}, ${seq.max}) for slot ${index} of a compacted log`);
    index = s;
  }
  const type = raw.readUInt32LE(o + LE.type);
  const p = o + LE.payload;
  try {
    switch (type) {
      case EntryType.FILE: {
        const rp = readCString(raw, p + FM.relpath, RELPATH_FIELD);
        if (!rp.terminated) throw new EntryDecodeError(index, 'relpath is not NUL-terminated');
        const f = p + FM.fmap;
        const extType = raw.readUInt32LE(f + FMAP.extType);
        const count = raw.readUInt32LE(f + FMAP.count);
        let fmap: Fmap;
        if (extType === ExtentType.SIMPLE) {
          if (count < 1 || count > MAX_SIMPLE_EXTENTS) throw new EntryDecodeError(index, `${count} simple extents`);
          const extents: Extent[] = [];
          for (let i = 0; i < count; i++) extents.push(decodeExtent(raw, f + FMAP.extents + i * FMAP.SIMPLE_EXTENT_SIZE));
          fmap = { kind: 'simple', extents };
        } else if (extType === ExtentType.INTERLEAVE) {
          if (count !== 1) throw new EntryDecodeError(index, `${count} interleaved extents (famfs allows exactly 1)`);
          const ie = f + FMAP.extents;
          const nstrips = u64n(raw, ie + FMAP.IE_NSTRIPS, 'nstrips');
          const chunkSize = u64n(raw, ie + FMAP.IE_CHUNK, 'chunk size');
          if (nstrips < 1 || nstrips > MAX_STRIPS) throw new EntryDecodeError(index, `${nstrips} strips`);
          if (chunkSize === 0) throw new EntryDecodeError(index, 'interleave chunk size 0');
          const strips: Extent[] = [];
          for (let i = 0; i < nstrips; i++) strips.push(decodeExtent(raw, ie + FMAP.IE_STRIPS + i * FMAP.SIMPLE_EXTENT_SIZE));
          fmap = { kind: 'interleave', nstrips, chunkSize, strips };
        } else {
          throw new EntryDecodeError(index, `unknown extent type ${extType}`);
        }
        return {
          index,
          seqnum: index,
          body: {
            type: 'file',
            size: u64n(raw, p + FM.size, 'file size'),
            flags: raw.readUInt32LE(p + FM.flags),
            uid: raw.readUInt32LE(p + FM.uid),
            gid: raw.readUInt32LE(p + FM.gid),
            mode: raw.readUInt32LE(p + FM.mode),
            relpath: rp.text,
            fmap,
          },
        };
      }
      case EntryType.MKDIR: {
        const rp = readCString(raw, p + MD.relpath, RELPATH_FIELD);
        if (!rp.terminated) throw new EntryDecodeError(index, 'relpath is not NUL-terminated');
        return {
          index,
          seqnum: index,
          body: { type: 'mkdir', uid: raw.readUInt32LE(p + MD.uid), gid: raw.readUInt32LE(p + MD.gid), mode: raw.readUInt32LE(p + MD.mode), relpath: rp.text },
        };
      }
      case EntryType.ADD_DAXDEV:
        return {
          index,
          seqnum: index,
          body: {
            type: 'add_daxdev',
            size: u64n(raw, p + AD.size, 'daxdev size'),
            uuid: bytesToUuid(raw.subarray(p + AD.uuid, p + AD.uuid + 16)),
            devindex: raw.readUInt32LE(p + AD.index),
          },
        };
      case EntryType.CSI_DELETE: {
        if (!(typeof extended === 'function' ? extended() : extended))
          throw new EntryDecodeError(index, 'famfs-csi delete entry in a log whose superblock does not enable the extension');
        const rp = readCString(raw, p + DEL.relpath, RELPATH_FIELD);
        const tt = raw.readUInt32LE(p + DEL.targetType);
        if (tt !== EntryType.FILE && tt !== EntryType.MKDIR) throw new EntryDecodeError(index, `delete of unsupported entry type ${tt}`);
        return {
          index,
          seqnum: index,
          body: {
            type: 'delete',
            targetIndex: u64n(raw, p + DEL.targetIndex, 'delete target'),
            targetType: tt === EntryType.FILE ? 'file' : 'mkdir',
            relpath: rp.text,
          },
        };
      }
      default:
        throw new EntryDecodeError(index, `unknown entry type ${type}`);
    }
  } catch (e) {
    if (e instanceof EntryDecodeError) throw e;
    throw new EntryDecodeError(index, (e as Error).message);
  }
}

// ---------------------------------------------------------------------------------------------
// famfs-csi extension block: in the unused part of the superblock region (famfs never reads past
// byte 200 of it). Holds the writer fencing epoch and one cache line per host for replay acks.
// ---------------------------------------------------------------------------------------------
export const EXT_BLOCK_OFFSET = 0x1000;
export const EXT_MAGIC = 0x4953434d53464146n; // the bytes "FAFSMCSI" read as a little-endian u64 (a historical spelling; kept: devices carry it)
/**
 * Revision 2 binds the block to the file system: it records the superblock UUID, and a block whose
 * UUID is not the superblock's (left behind by an earlier file system: famfs' own `mkfs -f` never
 * touches these bytes) is ignored and re-made, host slots included. Revision 1 blocks carried no
 * UUID and are treated the same way.
 *
 * Revision 3 (one clock, issue 11) adds the liveness line (EXT_LIVE, the next cache line: the
 * host liveness window every host derives its self-fence from), makes the host slot's word at 24
 * an ack counter (it was a wall-clock time), and adds the master's eviction records (EVICT). A
 * revision-2 reader refuses a revision-3 block (EUNSUPPORTED), so no host of that release misreads it;
 * a revision-2 block is read with the default window and upgraded by the next master (hosts.ts).
 *
 * Revision 4 (issue 15: no zeroing on the create path) adds the clean map (CLEAN_MAP_OFFSET): which
 * free allocation units hold only zeros. A writer that does not know the map would hand out clean
 * units without clearing their bits, and a later master would give that memory, with its new data,
 * to another tenant as "clean": so a revision-3 reader refuses a revision-4 block (EUNSUPPORTED), as
 * it refuses any revision it does not know. This build reads revisions 1 to 4 and trusts the map only
 * under revision 4.
 */
export const EXT_REVISION = 4;
/** The first block revision with the clean map. */
export const EXT_REVISION_CLEAN_MAP = 4;
/** One cache line, so it is never torn between two lines. */
export const EXT = {
  magic: 0,
  revision: 8,
  slotCount: 12,
  epoch: 16, // writer fencing epoch, bumped by every new master
  masterUuid: 24, // system UUID of the host holding the epoch
  fsUuid: 40, // superblock UUID of the file system this block belongs to
  epochTimeSec: 56, // u32 wall clock (s) of the last epoch change (informational)
  crc: 60, // u32 CRC-32 over [0, 60)
  SIZE: 64,
} as const;
/** Revision 1 (no file system UUID): only the fields needed to continue its epoch. */
const EXT_V1 = { epoch: 16, crc: 48 } as const;
/**
 * Revision 3: the liveness line, the cache line after the block. Written before the block's own
 * line (a block that says revision 3 always has it) and only by a master, never lowered.
 */
export const EXT_LIVE = {
  OFFSET: EXT_BLOCK_OFFSET + 64,
  hostLiveMs: 0, // u64: a host whose slot the master watched unchanged this long (its own clock) is gone
  crc: 56, // CRC-32 over [0, 56)
  SIZE: 64,
} as const;
/** Both lines of the block, as read in one go. */
export const EXT_AREA_SIZE = 128;
/** The liveness window of revision-2 blocks and of mkfs unless told otherwise. */
export const DEFAULT_HOST_LIVE_MS = 60_000;
export const HOST_SLOTS_OFFSET = EXT_BLOCK_OFFSET + 0x1000;
export const HOST_SLOT_SIZE = CACHE_LINE;
export const DEFAULT_HOST_SLOTS = 1024;
/** One cache line per host so hosts never write the same line. */
export const HS = {
  hostUuid: 0, // 16 bytes; zero = free slot
  ackedIndex: 16, // u64: the host has applied every entry below this index
  beat: 24, // u64 ack counter, +1 on every ack (revision 2 wrote wall-clock ms here; any change counts)
  name: 32, // 24-byte NUL-padded host name (informational)
  crc: 56, // CRC-32 over [0, 56)
} as const;
export const HOST_NAME_FIELD = 24;

export interface ExtBlock {
  revision: number;
  slotCount: number;
  epoch: number;
  masterUuid: string;
  /** Superblock UUID of the file system the block (and its host slots) belongs to. */
  fsUuid: string;
  epochTimeMs: number;
  /** Host liveness window (revision 3; DEFAULT_HOST_LIVE_MS for older blocks). */
  hostLiveMs: number;
}

export function encodeLiveLine(hostLiveMs: number): Buffer {
  const b = Buffer.alloc(EXT_LIVE.SIZE);
  putU64(b, EXT_LIVE.hostLiveMs, hostLiveMs);
  putU64(b, EXT_LIVE.crc, crc(b, 0, EXT_LIVE.crc));
  return b;
}

export function encodeExtBlock(e: ExtBlock): Buffer {
  const b = Buffer.alloc(EXT.SIZE);
  putU64(b, EXT.magic, EXT_MAGIC);
  b.writeUInt32LE(EXT_REVISION, EXT.revision);
  b.writeUInt32LE(e.slotCount, EXT.slotCount);
  putU64(b, EXT.epoch, e.epoch);
  uuidToBytes(e.masterUuid).copy(b, EXT.masterUuid);
  uuidToBytes(e.fsUuid).copy(b, EXT.fsUuid);
  b.writeUInt32LE(Math.min(0xffffffff, Math.floor(e.epochTimeMs / 1000)), EXT.epochTimeSec);
  b.writeUInt32LE(crc(b, 0, EXT.crc), EXT.crc);
  return b;
}

/**
 * undefined when the block was never initialised; throws ECORRUPT when it is damaged. A
 * revision-1 block decodes with the zero UUID as fsUuid (it belongs to no file system) and the
 * epoch it held, so a new block can continue above it. `b` holds EXT_AREA_SIZE bytes (the block
 * and its liveness line); 64 are enough for a block below revision 3.
 */
export function decodeExtBlock(b: Buffer): ExtBlock | undefined {
  if (u64(b, EXT.magic) !== EXT_MAGIC) return undefined;
  const revision = b.readUInt32LE(EXT.revision);
  if (revision === 1) {
    if (Number(b.readBigUInt64LE(EXT_V1.crc)) !== crc(b, 0, EXT_V1.crc)) throw new FamfsError('ECORRUPT', 'famfs-csi extension block CRC mismatch');
    return {
      revision,
      slotCount: b.readUInt32LE(EXT.slotCount),
      epoch: u64n(b, EXT_V1.epoch, 'fencing epoch'),
      masterUuid: ZERO_UUID,
      fsUuid: ZERO_UUID,
      epochTimeMs: 0,
      hostLiveMs: DEFAULT_HOST_LIVE_MS,
    };
  }
  if (b.readUInt32LE(EXT.crc) !== crc(b, 0, EXT.crc)) throw new FamfsError('ECORRUPT', 'famfs-csi extension block CRC mismatch');
  if (revision < 2 || revision > EXT_REVISION)
    throw new FamfsError('EUNSUPPORTED', `famfs-csi extension block revision ${revision} (this build knows 1 to ${EXT_REVISION})`);
  let hostLiveMs = DEFAULT_HOST_LIVE_MS;
  if (revision >= 3) {
    if (b.length < EXT_AREA_SIZE) throw new FamfsError('EINVAL', `extension block buffer of ${b.length} bytes lacks the liveness line`);
    const live = b.subarray(EXT.SIZE, EXT.SIZE + EXT_LIVE.SIZE);
    if (Number(live.readBigUInt64LE(EXT_LIVE.crc)) !== crc(live, 0, EXT_LIVE.crc))
      throw new FamfsError('ECORRUPT', 'famfs-csi extension block: liveness line CRC mismatch');
    hostLiveMs = u64n(live, EXT_LIVE.hostLiveMs, 'host liveness window');
    if (hostLiveMs < 1) throw new FamfsError('ECORRUPT', `famfs-csi extension block: host liveness window ${hostLiveMs} ms`);
  }
  return {
    revision,
    slotCount: b.readUInt32LE(EXT.slotCount),
    epoch: u64n(b, EXT.epoch, 'fencing epoch'),
    masterUuid: bytesToUuid(b.subarray(EXT.masterUuid, EXT.masterUuid + 16)),
    fsUuid: bytesToUuid(b.subarray(EXT.fsUuid, EXT.fsUuid + 16)),
    epochTimeMs: b.readUInt32LE(EXT.epochTimeSec) * 1000,
    hostLiveMs,
  };
}

/**
 * Eviction records (revision 3): written only by the master, between the liveness line and the log
 * generation records, before it reuses memory that a timed-out host still held back. A ring of
 * EVICT_RECORDS 64-byte records; the record with sequence number s lives at index s % EVICT_RECORDS.
 */
export const EVICT_OFFSET = EXT_BLOCK_OFFSET + 0x400;
export const EVICT_RECORDS = 16;
export const EVICT = {
  seq: 0, // u64, 1-based; 0 = empty record
  hostUuid: 8, // 16 bytes: the host that was timed out
  ackedIndex: 24, // u64: its last acknowledged position
  reclaimUpTo: 32, // u64: log next index when it was timed out; deletes in [ackedIndex, reclaimUpTo) were freed without it
  atMs: 40, // u64: master's wall clock at the decision (for people; never used to decide anything)
  silentMs: 48, // u32: how long the master itself watched the slot unchanged
  slot: 52, // u32: the host's slot
  crc: 56, // CRC-32 over [0, 56)
  SIZE: 64,
} as const;

export interface EvictionRecord {
  seq: number;
  hostUuid: string;
  slot: number;
  ackedIndex: number;
  reclaimUpTo: number;
  atMs: number;
  silentMs: number;
}

export function encodeEvictionRecord(r: EvictionRecord): Buffer {
  const b = Buffer.alloc(EVICT.SIZE);
  putU64(b, EVICT.seq, r.seq);
  uuidToBytes(r.hostUuid).copy(b, EVICT.hostUuid);
  putU64(b, EVICT.ackedIndex, r.ackedIndex);
  putU64(b, EVICT.reclaimUpTo, r.reclaimUpTo);
  putU64(b, EVICT.atMs, r.atMs);
  b.writeUInt32LE(Math.min(r.silentMs, 0xffffffff), EVICT.silentMs);
  b.writeUInt32LE(r.slot, EVICT.slot);
  putU64(b, EVICT.crc, crc(b, 0, EVICT.crc));
  return b;
}

/** undefined for an empty or damaged record (records are informational; nothing decides on them). */
export function decodeEvictionRecord(b: Buffer): EvictionRecord | undefined {
  const seq = u64sat(b, EVICT.seq);
  if (seq === 0) return undefined;
  if (Number(b.readBigUInt64LE(EVICT.crc)) !== crc(b, 0, EVICT.crc)) return undefined;
  return {
    seq,
    hostUuid: bytesToUuid(b.subarray(EVICT.hostUuid, EVICT.hostUuid + 16)),
    ackedIndex: u64sat(b, EVICT.ackedIndex),
    reclaimUpTo: u64sat(b, EVICT.reclaimUpTo),
    atMs: u64sat(b, EVICT.atMs),
    silentMs: b.readUInt32LE(EVICT.silentMs),
    slot: b.readUInt32LE(EVICT.slot),
  };
}

export interface HostSlot {
  slot: number;
  hostUuid: string;
  ackedIndex: number;
  /** Ack counter: the master watches it change (it is not a time; see HS.beat). */
  beat: number;
  name: string;
  /** The slot is in use but fails its CRC even after re-reads: see readHostSlots. */
  damaged?: boolean;
}

export const ZERO_UUID = '00000000-0000-0000-0000-000000000000';

export function encodeHostSlot(s: Omit<HostSlot, 'slot'>): Buffer {
  const b = Buffer.alloc(HOST_SLOT_SIZE);
  uuidToBytes(s.hostUuid).copy(b, HS.hostUuid);
  putU64(b, HS.ackedIndex, s.ackedIndex);
  putU64(b, HS.beat, s.beat);
  const name = Buffer.from(s.name, 'utf8').subarray(0, HOST_NAME_FIELD - 1);
  name.copy(b, HS.name);
  putU64(b, HS.crc, crc(b, 0, HS.crc));
  return b;
}

/** undefined for a free or damaged slot (a torn slot is treated as absent, its host re-acks). */
export function decodeHostSlot(b: Buffer, slot: number): HostSlot | undefined {
  const uuid = bytesToUuid(b.subarray(HS.hostUuid, HS.hostUuid + 16));
  if (uuid === ZERO_UUID) return undefined;
  if (Number(b.readBigUInt64LE(HS.crc)) !== crc(b, 0, HS.crc)) return undefined;
  return {
    slot,
    hostUuid: uuid,
    ackedIndex: u64sat(b, HS.ackedIndex),
    beat: u64sat(b, HS.beat),
    name: readCString(b, HS.name, HOST_NAME_FIELD).text,
  };
}

// ---------------------------------------------------------------------------------------------
// famfs-csi log generation records (extension revision 2: online log compaction)
//
// Two 64-byte records in the unused part of the superblock region, after the extension block and
// before the host slots. Generation g is written into record g % 2 and names the log region in
// use: region 0 is famfs' own log at LOG_OFFSET, region 1 a second region of the same length in
// the data area (`altOffset`, allocated at the first compaction). Generation g always lives in
// region g % 2. The record with the highest generation that passes its CRC and names this file
// system's UUID is current; none means generation 0 (famfs' log). A compaction writes the new
// log into the other region, flushes it, then writes the next generation's record: a torn record
// fails its CRC and the older one stays current, so readers see the whole old or the whole new log.
// Records are read only under FAMFS_CSI_EXT2_VERSION (see docs/format.md).
// ---------------------------------------------------------------------------------------------
export const LOG_GEN_OFFSET = EXT_BLOCK_OFFSET + 0x800;
export const LOG_GEN_MAGIC = 0x4e454753464d4146n; // the bytes "FAMFSGEN" read as a little-endian u64
export const LOG_GEN_REVISION = 1;
export const LOG_GEN = {
  magic: 0,
  revision: 8,
  region: 12, // 0: famfs' log at LOG_OFFSET; 1: the second region at altOffset
  generation: 16,
  fsUuid: 24, // the superblock's ts_uuid: a record left by an earlier mkfs is never believed
  altOffset: 40, // device offset of the second region (0 before the first compaction)
  epoch: 48, // fencing epoch of the master that wrote it (informational)
  crc: 56, // CRC-32 over [0, 56)
  SIZE: 64,
  COUNT: 2,
} as const;

export interface LogGenRecord {
  generation: number;
  region: 0 | 1;
  fsUuid: string;
  altOffset: number;
  epoch: number;
}

export function encodeLogGenRecord(r: LogGenRecord): Buffer {
  const b = Buffer.alloc(LOG_GEN.SIZE);
  putU64(b, LOG_GEN.magic, LOG_GEN_MAGIC);
  b.writeUInt32LE(LOG_GEN_REVISION, LOG_GEN.revision);
  b.writeUInt32LE(r.region, LOG_GEN.region);
  putU64(b, LOG_GEN.generation, r.generation);
  uuidToBytes(r.fsUuid).copy(b, LOG_GEN.fsUuid);
  putU64(b, LOG_GEN.altOffset, r.altOffset);
  putU64(b, LOG_GEN.epoch, r.epoch);
  putU64(b, LOG_GEN.crc, crc(b, 0, LOG_GEN.crc));
  return b;
}

/** undefined for an empty, torn or foreign record (it is simply not current). */
export function decodeLogGenRecord(b: Buffer): LogGenRecord | undefined {
  if (b.length < LOG_GEN.SIZE || u64(b, LOG_GEN.magic) !== LOG_GEN_MAGIC) return undefined;
  if (Number(b.readBigUInt64LE(LOG_GEN.crc)) !== crc(b, 0, LOG_GEN.crc)) return undefined;
  if (b.readUInt32LE(LOG_GEN.revision) !== LOG_GEN_REVISION) return undefined;
  const region = b.readUInt32LE(LOG_GEN.region);
  const generation = u64sat(b, LOG_GEN.generation);
  if ((region !== 0 && region !== 1) || generation % 2 !== region) return undefined;
  if (region === 1 && u64sat(b, LOG_GEN.altOffset) === 0) return undefined;
  return {
    generation,
    region,
    fsUuid: bytesToUuid(b.subarray(LOG_GEN.fsUuid, LOG_GEN.fsUuid + 16)),
    altOffset: u64sat(b, LOG_GEN.altOffset),
    epoch: u64sat(b, LOG_GEN.epoch),
  };
}

// ---------------------------------------------------------------------------------------------
// famfs-csi committed-generation line (log compaction, line revision 1)
//
// The 64-byte line right after the two generation records. It is a second witness of the newest
// generation ever committed: the master writes it right after each switch (and, before its first
// write, whenever it finds it behind the current record), and at the first compaction it writes
// generation 0 before the superblock says revision 2. Without it a reader cannot tell a record
// torn by a crash during the switch (the older generation is current and whole) from the newest
// record damaged afterwards (the older generation's region is superseded: the master appended to
// the newer one since, and may be rewriting the older one for the next compaction). With it:
// no valid record at or above its generation means the records were damaged, and readers refuse.
// A reader of an earlier build never reads this line; every byte it does read keeps its meaning.
// ---------------------------------------------------------------------------------------------
export const LOG_GEN_COMMIT_OFFSET = LOG_GEN_OFFSET + LOG_GEN.SIZE * LOG_GEN.COUNT;
export const LOG_GEN_COMMIT_MAGIC = 0x544d4353464d4146n; // the bytes "FAMFSCMT" read as a little-endian u64
export const LOG_GEN_COMMIT_REVISION = 1;
export const LOG_GEN_COMMIT = {
  magic: 0,
  revision: 8, // u32; 12..15 reserved (0)
  generation: 16, // the newest generation committed (0: a first compaction was started, none committed yet)
  fsUuid: 24, // the superblock's ts_uuid, as in the records
  altOffset: 40, // the second region of that generation (0 while generation is 0)
  crc: 56, // CRC-32 over [0, 56)
  SIZE: 64,
} as const;

export interface LogGenCommit {
  generation: number;
  fsUuid: string;
  altOffset: number;
}

export function encodeLogGenCommit(c: LogGenCommit): Buffer {
  const b = Buffer.alloc(LOG_GEN_COMMIT.SIZE);
  putU64(b, LOG_GEN_COMMIT.magic, LOG_GEN_COMMIT_MAGIC);
  b.writeUInt32LE(LOG_GEN_COMMIT_REVISION, LOG_GEN_COMMIT.revision);
  putU64(b, LOG_GEN_COMMIT.generation, c.generation);
  uuidToBytes(c.fsUuid).copy(b, LOG_GEN_COMMIT.fsUuid);
  putU64(b, LOG_GEN_COMMIT.altOffset, c.altOffset);
  putU64(b, LOG_GEN_COMMIT.crc, crc(b, 0, LOG_GEN_COMMIT.crc));
  return b;
}

/** undefined unless magic, CRC and revision hold (the caller tells an all-zero line from damage). */
export function decodeLogGenCommit(b: Buffer): LogGenCommit | undefined {
  if (b.length < LOG_GEN_COMMIT.SIZE || u64(b, LOG_GEN_COMMIT.magic) !== LOG_GEN_COMMIT_MAGIC) return undefined;
  if (Number(b.readBigUInt64LE(LOG_GEN_COMMIT.crc)) !== crc(b, 0, LOG_GEN_COMMIT.crc)) return undefined;
  if (b.readUInt32LE(LOG_GEN_COMMIT.revision) !== LOG_GEN_COMMIT_REVISION) return undefined;
  const generation = u64sat(b, LOG_GEN_COMMIT.generation);
  const altOffset = u64sat(b, LOG_GEN_COMMIT.altOffset);
  if (generation > 0 && altOffset === 0) return undefined;
  return { generation, fsUuid: bytesToUuid(b.subarray(LOG_GEN_COMMIT.fsUuid, LOG_GEN_COMMIT.fsUuid + 16)), altOffset };
}
// Controller state image (famfs-csi): the content of the famfs file csi/.controller-state, written
// only by the fenced master's controller (pkg/csi/store-image.ts). The file is split in two equal
// halves, each a header (one cache line) and a UTF-8 JSON body; a commit writes the half that does
// not hold the newest image, body first. See docs/format.md.
// ---------------------------------------------------------------------------------------------
export const CSI_IMAGE_MAGIC = Buffer.from('FCSISTAT', 'latin1');
/**
 * Revision 1: a half holds the whole JSON document, nothing else. Readers refuse any revision they
 * do not know, so a newer layout is never misread.
 */
export const CSI_IMAGE_REVISION = 1;
/**
 * Revision 2: the half's JSON body is a checkpoint, followed by change records (CSI_DELTA) appended
 * one per change; the header binds the half to its famfs file (fileIndex). Written from famfs-csi
 * 0.2 on; revision 1 halves are still read (and replaced by the next checkpoint).
 */
export const CSI_IMAGE_REVISION_DELTAS = 2;
/**
 * Revision 3 marks a *retired* half: one a newer checkpoint superseded. The writer retires the
 * previous half right after each checkpoint, so that when the newest half is damaged no valid
 * older half is left to fall back to silently (that would lose every change acknowledged since):
 * the reader finds no valid half and the controller refuses until the records are rebuilt.
 * A reader that knows only revisions 1 and 2 sees an unknown revision: not a valid half either.
 */
export const CSI_IMAGE_REVISION_RETIRED = 3;
export const CSI_IMAGE = {
  magic: 0, // 8 bytes "FCSISTAT"
  revision: 8, // u32
  generation: 16, // u64, grows by one per commit (checkpoint)
  epoch: 24, // u64, fencing epoch of the writer
  length: 32, // u32, body length in bytes
  bodyCrc: 36, // u32, CRC-32 of the body
  fileIndex: 40, // u64, revision 2: famfs log index of the FILE entry of the file holding this half
  supersededBy: 48, // u64, revision 3 (retired): generation of the checkpoint that superseded this half
  headerCrc: 60, // u32, CRC-32 of bytes [0, 60)
  HEADER_SIZE: 64,
  /** Offset of the body inside a half. */
  BODY_OFFSET: 4096,
} as const;

/**
 * The ack line: the second cache line of each half (offset 64, in the gap before the body). The
 * writer sets it after each change record it flushed (count = records acknowledged) and to 0 with
 * each checkpoint, before the header. A reader that finds fewer valid records than the line counts
 * knows an acknowledged record was damaged (without it, damage to the last record looks exactly
 * like a torn append). Readers that predate it never read these bytes.
 */
export const CSI_ACK_MAGIC = Buffer.from('FCSIACKN', 'latin1');
export const CSI_ACK = {
  OFFSET: 64, // inside the half
  magic: 0, // 8 bytes "FCSIACKN"
  generation: 8, // u64, the half's checkpoint generation
  count: 16, // u64, change records acknowledged after that checkpoint
  crc: 60, // u32, CRC-32 of bytes [0, 60)
  SIZE: 64,
} as const;

/**
 * Change record (revision 2), appended after the checkpoint body at 8-byte aligned offsets, each
 * a 32-byte header and a UTF-8 JSON payload {"path": [key, ...], "value": ...} (no "value": delete
 * the key). Valid while magic, generation (= the half's), sequence (0, 1, 2, ... in append order)
 * and CRC all hold; the first record that fails any of them ends the half.
 */
export const CSI_DELTA_MAGIC = 0x44495346; // "FSID" little-endian
export const CSI_DELTA = {
  magic: 0, // u32
  length: 4, // u32, payload bytes
  generation: 8, // u64, the checkpoint (half) generation this record extends
  seq: 16, // u64, 0 for the first record after the checkpoint
  crc: 24, // u32, CRC-32 of bytes [0, 24) and the payload
  reserved: 28, // u32, 0
  HEADER_SIZE: 32,
  ALIGN: 8,
} as const;

// ---------------------------------------------------------------------------------------------
// famfs-csi clean map (extension block revision 4): which free allocation units are known to hold
// only zeros, so a new file can be handed out without zeroing it on the create path.
//
// The last MiB of the superblock region (famfs reads only its first 200 bytes). One cache line per
// CLEAN_LINE.UNITS allocation units: 56 bytes of bits (bit b of byte k: unit line*448 + k*8 + b; 1 =
// clean) and a CRC-32 over the file system UUID, the line number and the bits, so a line left by an
// earlier file system, a line of another position and a torn line all fail and count as dirty.
// Only the master writes it: a unit is marked clean after it was zeroed and flushed, and marked
// dirty (flushed) before a log entry hands it to a file. Devices larger than the map covers
// (CLEAN_MAP_LINES * 448 units: 14 TiB) keep the units past it dirty. See docs/format.md.
// ---------------------------------------------------------------------------------------------
export const CLEAN_MAP_OFFSET = 0x100000;
export const CLEAN_LINE = {
  bits: 0, // 56 bytes of bits
  crc: 56, // u32 CRC-32 over (fs UUID (16 bytes), line number (u64 LE), bits (56 bytes))
  reserved: 60, // u32 0
  SIZE: 64,
  UNITS: 56 * 8,
} as const;
export const CLEAN_MAP_LINES = (SUPERBLOCK_REGION - CLEAN_MAP_OFFSET) / CLEAN_LINE.SIZE;

/** The file system UUID's bytes for the clean-map CRCs: every line read or written needs them, and the text-to-bytes conversion (a regex and a hex parse) cost more than the CRC. */
let cleanUuid: { text: string; bytes: Buffer } | undefined;
function cleanUuidBytes(text: string): Buffer {
  if (cleanUuid?.text !== text) cleanUuid = { text, bytes: uuidToBytes(text) };
  return cleanUuid.bytes;
}

function cleanLineCrc(fsUuid: Buffer, line: number, bits: Uint8Array): number {
  const seed = Buffer.alloc(24);
  fsUuid.copy(seed, 0);
  putU64(seed, 16, line);
  return crc32(bits, crc32(seed)) >>> 0;
}

/** A clean-map line: `bits` (56 bytes, 1 = clean) sealed for file system `fsUuid` at position `line`. */
export function encodeCleanLine(fsUuid: string, line: number, bits: Uint8Array): Buffer {
  if (bits.length !== CLEAN_LINE.crc) throw new FamfsError('EINVAL', `clean-map line bits are ${bits.length} bytes, want ${CLEAN_LINE.crc}`);
  const b = Buffer.alloc(CLEAN_LINE.SIZE);
  b.set(bits, CLEAN_LINE.bits);
  b.writeUInt32LE(cleanLineCrc(cleanUuidBytes(fsUuid), line, bits), CLEAN_LINE.crc);
  return b;
}

/**
 * The bits of a clean-map line, or why none can be trusted: 'unwritten' (all zero: never written
 * for any file system) or 'damaged' (CRC, position or file system do not match). Either way every
 * unit of the line counts as dirty.
 */
export function decodeCleanLine(fsUuid: string, line: number, raw: Buffer): Buffer | 'unwritten' | 'damaged' {
  if (raw.length < CLEAN_LINE.SIZE) throw new FamfsError('EINVAL', `clean-map line buffer of ${raw.length} bytes`);
  const bits = raw.subarray(CLEAN_LINE.bits, CLEAN_LINE.crc);
  if (raw.readUInt32LE(CLEAN_LINE.reserved) !== 0) return 'damaged';
  if (raw.readUInt32LE(CLEAN_LINE.crc) !== cleanLineCrc(cleanUuidBytes(fsUuid), line, bits)) {
    return raw.subarray(0, CLEAN_LINE.SIZE).every((x) => x === 0) ? 'unwritten' : 'damaged';
  }
  return Buffer.from(bits);
}
