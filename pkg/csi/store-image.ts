// The controller's metadata as an image in the shared memory itself, so that a controller that
// moves to another host (replicas share the memory, not a disk) finds every volume's CO name,
// requested range, parameters, content source and published nodes where it left them.
//
// The image lives in a reserved famfs file (csi/.controller-state), split in two self-describing
// halves. The layout is defined once, in pkg/famfs/layout.ts (CSI_IMAGE, CSI_DELTA), and documented
// in docs/format.md ("Controller state image").
//
// A half holds a checkpoint (a 64-byte header and the whole document as JSON) followed by change
// records, one per change, appended in order (revision 2). A change costs one small record, not
// the whole document: what a call costs no longer grows with the number of volumes.
//
// A checkpoint goes to the half that does NOT hold the newest image: body first, flushed, then its
// 64-byte header (one cache line), flushed. A crash before the header flush leaves the older half
// as the newest valid one; a torn header or body fails its CRC. A change record is written after
// the newest checkpoint's last record and flushed, then counted in the half's ack line; a torn
// record fails its CRC and ends the half (the change it carried was never acknowledged). A bad
// record the ack line counts, or one followed by a valid later record, was acknowledged: the
// image is then unreadable (the controller refuses) rather than silently shorter. Each checkpoint
// retires the halves it supersedes, so a damaged newest half is never replaced by an older one. When a record no longer fits, the next
// checkpoint is written; when a checkpoint would fill more than half of a half, the image moves to
// a new, larger file (csi/.controller-state.N), so the number of records has no cap of its own.
// A reader takes the valid half with the highest (epoch, generation) over all those files. Only
// the fenced master writes: the epoch is re-checked right before every store, the same check the
// log writer makes before publishing an entry.
import { crc32 } from 'zlib';
import { FamfsError } from '../famfs/errors';
import { forEachDeviceRun } from '../famfs/fmap';
import type { FamfsFs } from '../famfs/fs';
import {
  ALLOC_UNIT,
  CSI_ACK,
  CSI_ACK_MAGIC,
  CSI_DELTA,
  CSI_DELTA_MAGIC,
  CSI_IMAGE,
  CSI_IMAGE_MAGIC,
  CSI_IMAGE_REVISION,
  CSI_IMAGE_REVISION_DELTAS,
  CSI_IMAGE_REVISION_RETIRED,
} from '../famfs/layout';
import { writeFlush, type Media } from '../famfs/media';
import type { FileNode } from '../famfs/tree';

export const STATE_IMAGE_DIR = 'csi';
export const STATE_IMAGE_RELPATH = 'csi/.controller-state';
/** 8 MiB: two 4 MiB halves; the image moves to a larger file when its records need more. */
export const DEFAULT_STATE_IMAGE_SIZE = 8 * 1024 * 1024;

const MAGIC = CSI_IMAGE_MAGIC;
const HEADER_SIZE = CSI_IMAGE.HEADER_SIZE;
const BODY_OFFSET = CSI_IMAGE.BODY_OFFSET;
const H = CSI_IMAGE;
const D = CSI_DELTA;

export interface ImageHeader {
  half: 0 | 1;
  revision: number;
  generation: number;
  epoch: number;
  length: number;
  bodyCrc: number;
  /** Revision 2: log index of the FILE entry of the file this half belongs to. */
  fileIndex: number;
}

export interface LoadedImage<T> {
  header: ImageHeader;
  doc: T;
  /** Change records applied on top of the checkpoint. */
  deltas: number;
  /** Which file of the image holds it. */
  relpath: string;
  /** Halves that failed validation and why (a torn commit shows up here, harmlessly). */
  problems: string[];
}

export interface ImageRead<T> {
  loaded?: LoadedImage<T>;
  problems: string[];
  /**
   * Set when some half holds something (not all zero) but no half is valid: damage, or a revision
   * this reader does not know. Starting from an empty document would silently lose every record.
   */
  unreadable?: string;
}

/**
 * The fence check and the store in one step: writes and flushes `data` at device offset `offset`
 * unless this writer lost its epoch (then it throws, having written nothing). FamfsFs.writeFlushFenced.
 */
export type FencedWrite = (offset: number, data: Buffer) => void;

/** One change: set (or, without `value`, delete) the key at `path` of the document. */
export interface ImageDelta {
  path: string[];
  value?: unknown;
}

function encodeHeader(h: Omit<ImageHeader, 'half' | 'revision'>): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(b, H.magic);
  b.writeUInt32LE(CSI_IMAGE_REVISION_DELTAS, H.revision);
  b.writeBigUInt64LE(BigInt(h.generation), H.generation);
  b.writeBigUInt64LE(BigInt(h.epoch), H.epoch);
  b.writeUInt32LE(h.length, H.length);
  b.writeUInt32LE(h.bodyCrc, H.bodyCrc);
  b.writeBigUInt64LE(BigInt(h.fileIndex), H.fileIndex);
  b.writeUInt32LE(crc32(b.subarray(0, H.headerCrc)) >>> 0, H.headerCrc);
  return b;
}

/** The header of a half a newer checkpoint superseded (revision 3): never read as a state again. */
function encodeRetired(h: ImageHeader, supersededBy: number): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(b, H.magic);
  b.writeUInt32LE(CSI_IMAGE_REVISION_RETIRED, H.revision);
  b.writeBigUInt64LE(BigInt(h.generation), H.generation);
  b.writeBigUInt64LE(BigInt(h.epoch), H.epoch);
  b.writeBigUInt64LE(BigInt(h.fileIndex), H.fileIndex);
  b.writeBigUInt64LE(BigInt(supersededBy), H.supersededBy);
  b.writeUInt32LE(crc32(b.subarray(0, H.headerCrc)) >>> 0, H.headerCrc);
  return b;
}

const RETIRED = 'retired';
const DELTA_MAGIC_BYTES = (() => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(CSI_DELTA_MAGIC, 0);
  return b;
})();

/** A u64 field from a safe integer (two 32-bit stores: no BigInt on the per-record path). */
function writeU64(b: Buffer, at: number, v: number): void {
  b.writeUInt32LE(v % 0x100000000, at);
  b.writeUInt32LE(Math.floor(v / 0x100000000), at + 4);
}

/** The ack line for `count` records after checkpoint `generation` (into `into` when given, which must be zero past the fields). */
function encodeAck(generation: number, count: number, into?: Buffer): Buffer {
  const b = into ?? Buffer.alloc(CSI_ACK.SIZE);
  CSI_ACK_MAGIC.copy(b, CSI_ACK.magic);
  writeU64(b, CSI_ACK.generation, generation);
  writeU64(b, CSI_ACK.count, count);
  b.writeUInt32LE(crc32(b.subarray(0, CSI_ACK.crc)) >>> 0, CSI_ACK.crc);
  return b;
}

/** Records acknowledged after checkpoint `generation`, or undefined when the line is not valid for it. */
function decodeAck(b: Buffer, generation: number): number | undefined {
  if (!b.subarray(CSI_ACK.magic, CSI_ACK.magic + 8).equals(CSI_ACK_MAGIC)) return undefined;
  if (b.readUInt32LE(CSI_ACK.crc) !== crc32(b.subarray(0, CSI_ACK.crc)) >>> 0) return undefined;
  if (Number(b.readBigUInt64LE(CSI_ACK.generation)) !== generation) return undefined;
  return Number(b.readBigUInt64LE(CSI_ACK.count));
}

function decodeHeader(b: Buffer, half: 0 | 1, halfSize: number, file: FileNode, isBase: boolean): ImageHeader | string {
  if (b.every((x) => x === 0)) return 'empty';
  if (!b.subarray(H.magic, H.magic + 8).equals(MAGIC)) return 'bad magic';
  if (b.readUInt32LE(H.headerCrc) !== crc32(b.subarray(0, H.headerCrc)) >>> 0) return 'header CRC mismatch (torn or damaged)';
  const revision = b.readUInt32LE(H.revision);
  if (revision === CSI_IMAGE_REVISION_RETIRED) return RETIRED;
  if (revision !== CSI_IMAGE_REVISION && revision !== CSI_IMAGE_REVISION_DELTAS) return `unknown revision ${revision} (written by a newer famfs-csi?)`;
  // Revision 1 exists only in the first file; a later file starts at revision 2, and a revision 2
  // half must name its own file: what memory held before the file was made is never taken for it.
  if (revision === CSI_IMAGE_REVISION && !isBase) return 'revision 1 outside the first image file (stale memory)';
  const fileIndex = revision === CSI_IMAGE_REVISION ? file.index : Number(b.readBigUInt64LE(H.fileIndex));
  if (fileIndex !== file.index) return `belongs to file entry ${fileIndex}, not this file's ${file.index} (stale memory)`;
  const length = b.readUInt32LE(H.length);
  if (length > halfSize - BODY_OFFSET) return `body length ${length} exceeds the half`;
  return {
    half,
    revision,
    generation: Number(b.readBigUInt64LE(H.generation)),
    epoch: Number(b.readBigUInt64LE(H.epoch)),
    length,
    bodyCrc: b.readUInt32LE(H.bodyCrc),
    fileIndex,
  };
}

const align = (n: number): number => Math.ceil(n / D.ALIGN) * D.ALIGN;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Applies one change record to a parsed document (keys are plain JSON object keys). */
export function applyDelta(doc: unknown, d: ImageDelta): void {
  if (!isRecord(doc) || d.path.length === 0) throw new Error('change record: no document or empty path');
  let at: Record<string, unknown> = doc;
  for (const k of d.path.slice(0, -1)) {
    let next = at[k];
    if (next === undefined) {
      // An optional section (e.g. statics) appears with its first record; deleting from a
      // section that does not exist changes nothing.
      if (d.value === undefined) return;
      next = at[k] = {};
    }
    if (!isRecord(next)) throw new Error(`change record: ${d.path.join('/')} has no parent object`);
    at = next;
  }
  const last = d.path[d.path.length - 1];
  if (d.value === undefined) delete at[last];
  else at[last] = d.value;
}

function parseDelta(text: string): ImageDelta {
  const v: unknown = JSON.parse(text);
  if (!isRecord(v) || !Array.isArray(v['path']) || !v['path'].every((k) => typeof k === 'string')) throw new Error('change record: bad payload');
  return 'value' in v ? { path: v['path'], value: v['value'] } : { path: v['path'] };
}

interface Current {
  relpath: string;
  file: FileNode;
  header: ImageHeader;
  /** Offset inside the half where the next change record goes, and its sequence number. */
  tail: number;
  nextSeq: number;
}

/** Reads, writes and validates the double-buffered image (checkpoint + change records). */
export class SharedStateImage<T> {
  private current: Current | undefined;
  /** Highest generation seen in any valid half (the next checkpoint is one above). */
  private highest = 0;
  /** Image files a move to a larger file left behind (removed by the next checkpoint). */
  private stale: string[] = [];

  constructor(
    private readonly fs: FamfsFs,
    private readonly media: Media,
    private readonly validate: (doc: unknown) => T,
    readonly relpath = STATE_IMAGE_RELPATH,
  ) {}

  private fileAt(relpath: string): FileNode | undefined {
    const n = this.fs.lookup(relpath);
    return n?.kind === 'file' ? n : undefined;
  }

  /** The image's files: the first (relpath) and the larger ones it moved to (relpath.N), by N. */
  private family(): { relpath: string; n: number; file: FileNode }[] {
    const out: { relpath: string; n: number; file: FileNode }[] = [];
    const cut = this.relpath.lastIndexOf('/');
    const dir = this.fs.lookup(cut < 0 ? '' : this.relpath.slice(0, cut));
    const base = this.relpath.slice(cut + 1);
    if (dir?.kind !== 'dir') return out;
    for (const [name, node] of dir.children) {
      if (node.kind !== 'file') continue;
      if (name === base) out.push({ relpath: this.relpath, n: 0, file: node });
      else if (name.startsWith(base + '.') && /^[1-9][0-9]*$/.test(name.slice(base.length + 1))) {
        out.push({ relpath: `${this.relpath}.${name.slice(base.length + 1)}`, n: Number(name.slice(base.length + 1)), file: node });
      }
    }
    return out.sort((a, b) => a.n - b.n);
  }

  private static halfOf(file: FileNode): number {
    return Math.floor(file.size / 2 / 4096) * 4096;
  }

  /** Half size of the file the image is in now (or of the first file before any commit). */
  get halfSize(): number {
    const f = this.current?.file ?? this.fileAt(this.relpath);
    return f ? SharedStateImage.halfOf(f) : 0;
  }

  /** Largest JSON body a checkpoint in the current file can hold. */
  get capacity(): number {
    return Math.max(0, this.halfSize - BODY_OFFSET);
  }

  /** Which file the image is in now. */
  get currentRelpath(): string | undefined {
    return this.current?.relpath;
  }

  /** Creates the image file when missing (master only: it appends to the log). */
  ensure(size = DEFAULT_STATE_IMAGE_SIZE): void {
    if (this.family().length > 0) return;
    if (this.fs.lookup(STATE_IMAGE_DIR) === undefined) this.fs.mkdir(STATE_IMAGE_DIR, { mode: 0o755 });
    // Zeroed: both halves start "empty", which load() reads as no image.
    this.fs.creat(this.relpath, size, { mode: 0o600, zero: true });
  }

  private readRange(file: FileNode, offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    forEachDeviceRun(file.fmap, offset, length, (dev, fileOff, len) => {
      this.media.invalidate(dev, len);
      this.media.read(dev, len).copy(out, fileOff - offset);
    });
    return out;
  }

  private writeRange(file: FileNode, offset: number, data: Buffer): void {
    // The usual image file is one extent: no run walk for a record.
    const m = file.fmap;
    if (m.kind === 'simple' && m.extents.length === 1 && offset >= 0 && offset + data.length <= m.extents[0].len) {
      writeFlush(this.media, m.extents[0].offset + offset, data);
      return;
    }
    forEachDeviceRun(file.fmap, offset, data.length, (dev, fileOff, len) => {
      this.media.write(dev, data.subarray(fileOff - offset, fileOff - offset + len));
      this.media.flush(dev, len);
    });
  }

  /** The newest valid image, or undefined when there is none (see read() for why). */
  load(): LoadedImage<T> | undefined {
    return this.read().loaded;
  }

  /** Every half of every image file, validated; the newest valid one with its change records applied. */
  read(): ImageRead<T> {
    const problems: string[] = [];
    const candidates: { relpath: string; file: FileNode; header: ImageHeader }[] = [];
    let nonEmpty = 0;
    // The highest generation any header names, valid or not: the next checkpoint goes above it, so
    // change records an older checkpoint of the same half left behind never match its generation.
    let seen = 0;
    for (const m of this.family()) {
      const half = SharedStateImage.halfOf(m.file);
      for (const i of [0, 1] as const) {
        const raw = this.readRange(m.file, i * half, HEADER_SIZE);
        if (raw.subarray(H.magic, H.magic + 8).equals(MAGIC)) {
          for (const at of [H.generation, H.supersededBy]) {
            const g = raw.readBigUInt64LE(at);
            if (g < 1n << 40n) seen = Math.max(seen, Number(g));
          }
        }
        const h = decodeHeader(raw, i, half, m.file, m.n === 0);
        if (typeof h === 'string') {
          if (h === RETIRED) {
            // Superseded by a newer checkpoint: not a state, but not "nothing" either (when every
            // other half is damaged, starting empty would lose what that checkpoint held).
            nonEmpty++;
            continue;
          }
          if (h !== 'empty') {
            problems.push(`${m.relpath} half ${i}: ${h}`);
            // Stale memory in a file the image moved to is not damage of the image.
            if (!h.endsWith('(stale memory)')) nonEmpty++;
          }
          continue;
        }
        nonEmpty++;
        candidates.push({ relpath: m.relpath, file: m.file, header: h });
      }
    }
    candidates.sort((a, b) => b.header.epoch - a.header.epoch || b.header.generation - a.header.generation);
    /** Why a newer state than the one about to be loaded cannot be read (then loading it would lose acknowledged changes). */
    let newerLost: string | undefined;
    for (const c of candidates) {
      const { header: h, file, relpath } = c;
      const base = h.half * SharedStateImage.halfOf(file);
      const body = this.readRange(file, base + BODY_OFFSET, h.length);
      // A half whose header is valid was committed (its body is flushed before its header): when
      // its body fails, it is not a torn checkpoint but damage, and if it is the newest, falling
      // back to an older half would silently drop every change acknowledged since.
      const failed = (why: string): void => {
        problems.push(`${relpath} half ${h.half} (generation ${h.generation}): ${why}`);
        newerLost ??= `the newest checkpoint (${relpath} half ${h.half}, generation ${h.generation}) is damaged: ${why}`;
      };
      if (crc32(body) >>> 0 !== h.bodyCrc) {
        failed('body CRC mismatch (damage)');
        continue;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch (e) {
        failed((e as Error).message);
        continue;
      }
      const tail =
        h.revision === CSI_IMAGE_REVISION
          ? { tail: align(BODY_OFFSET + h.length), nextSeq: 0, deltas: 0, lost: undefined }
          : this.replayDeltas(file, base, h, parsed, problems, relpath);
      let doc: T;
      try {
        doc = this.validate(parsed);
      } catch (e) {
        failed((e as Error).message);
        continue;
      }
      const lost = newerLost ?? tail.lost;
      if (lost !== undefined) {
        this.current = undefined;
        this.highest = Math.max(seen, ...candidates.map((x) => x.header.generation));
        return { problems, unreadable: `${lost}; reading an older state would silently drop changes that were acknowledged` };
      }
      this.current = { relpath, file, header: h, tail: tail.tail, nextSeq: tail.nextSeq };
      this.highest = Math.max(seen, ...candidates.map((x) => x.header.generation));
      return { loaded: { header: h, doc, deltas: tail.deltas, relpath, problems }, problems };
    }
    this.current = undefined;
    this.highest = Math.max(seen, ...candidates.map((x) => x.header.generation));
    if (nonEmpty > 0) return { problems, unreadable: problems.join('; ') || 'no valid half' };
    return { problems };
  }

  /** Applies the change records after a checkpoint until the first one that is not valid. */
  private replayDeltas(
    file: FileNode,
    base: number,
    h: ImageHeader,
    doc: unknown,
    problems: string[],
    relpath: string,
  ): { tail: number; nextSeq: number; deltas: number; lost?: string } {
    const half = SharedStateImage.halfOf(file);
    const at = align(BODY_OFFSET + h.length);
    let seq = 0;
    if (at + D.HEADER_SIZE > half) return { tail: at, nextSeq: 0, deltas: 0 };
    // The ack line before the records: the writer moves it only after a record is flushed, so
    // what it counts is there when the records are read next (a writer appending meanwhile only
    // adds records; read the other way round, a follower would miss the newest and cry damage).
    const acked = decodeAck(this.readRange(file, base + CSI_ACK.OFFSET, CSI_ACK.SIZE), h.generation);
    const region = this.readRange(file, base + at, half - at);
    /** A whole, valid record of this checkpoint at `o` with sequence number `want` (undefined: any). */
    const validAt = (o: number, want?: number): number | undefined => {
      if (o + D.HEADER_SIZE > region.length || region.readUInt32LE(o + D.magic) !== CSI_DELTA_MAGIC) return undefined;
      const len = region.readUInt32LE(o + D.length);
      if (o + D.HEADER_SIZE + len > region.length || Number(region.readBigUInt64LE(o + D.generation)) !== h.generation) return undefined;
      const s = Number(region.readBigUInt64LE(o + D.seq));
      if (want !== undefined && s !== want) return undefined;
      const crc = crc32(region.subarray(o + D.HEADER_SIZE, o + D.HEADER_SIZE + len), crc32(region.subarray(o, o + D.crc))) >>> 0;
      return region.readUInt32LE(o + D.crc) === crc ? s : undefined;
    };
    let o = 0;
    let bad: string | undefined;
    for (;;) {
      // The end: zeros, or what an older checkpoint of this half left there (another generation).
      if (o + D.HEADER_SIZE > region.length || region.readUInt32LE(o + D.magic) !== CSI_DELTA_MAGIC) break;
      if (Number(region.readBigUInt64LE(o + D.generation)) !== h.generation) break;
      if (validAt(o, seq) === undefined) {
        bad = `change record ${seq} failed its CRC`;
        break;
      }
      const len = region.readUInt32LE(o + D.length);
      try {
        applyDelta(doc, parseDelta(region.toString('utf8', o + D.HEADER_SIZE, o + D.HEADER_SIZE + len)));
      } catch (e) {
        bad = `change record ${seq}: ${(e as Error).message}`;
        break;
      }
      seq++;
      o = align(o + D.HEADER_SIZE + len);
    }
    // Damage may also hit a record's magic or generation: look past the end in every case.
    // A torn append (a crash while writing the last record: its change was never acknowledged)
    // ends the half there, and the next append overwrites it. A valid record of this checkpoint
    // after it proves the contrary: the bad record was acknowledged (a later change was written
    // after it), and so were the ones after it. Reading on from there is impossible (the bad
    // record's change is unknown), and stopping would drop them without a word.
    // memchr-speed: jump from one occurrence of the record magic to the next (most of a half is
    // zeros or an older checkpoint's bytes; a follower reads the image before every answer).
    for (let p = region.indexOf(DELTA_MAGIC_BYTES, o + D.ALIGN); p >= 0 && p + D.HEADER_SIZE <= region.length; p = region.indexOf(DELTA_MAGIC_BYTES, p + 1)) {
      if (p % D.ALIGN !== 0) continue;
      const s = validAt(p);
      if (s !== undefined && s > seq) {
        bad ??= `change record ${seq} is not a record of this checkpoint`;
        problems.push(`${relpath} half ${h.half}: ${bad}, and change record ${s} after it is valid`);
        return {
          tail: at + o,
          nextSeq: seq,
          deltas: seq,
          lost: `${relpath} half ${h.half} (generation ${h.generation}): ${bad}, but change record ${s} after it is valid: changes acknowledged after record ${seq - 1} cannot be read`,
        };
      }
    }
    if (acked !== undefined && acked > seq) {
      const why = bad ?? `change record ${seq} is missing`;
      problems.push(`${relpath} half ${h.half}: ${why}, but the ack line counts ${acked} records`);
      return {
        tail: at + o,
        nextSeq: seq,
        deltas: seq,
        lost: `${relpath} half ${h.half} (generation ${h.generation}): ${why}, but ${acked} change records were acknowledged: ${acked - seq} cannot be read`,
      };
    }
    if (bad !== undefined) problems.push(`${relpath} half ${h.half}: ${bad} (torn append); the ${seq} before it are applied`);
    return { tail: at + o, nextSeq: seq, deltas: seq };
  }

  get generation(): number {
    return this.current?.header.generation ?? this.highest;
  }

  /**
   * Appends one change record after the newest checkpoint. Returns false, writing nothing, when it
   * does not fit (or the newest checkpoint is not this writer's): the caller writes a checkpoint.
   * `checkFence` runs right before the store and must throw when this writer lost epoch `epoch`.
   */
  append(delta: ImageDelta, epoch: number, checkFence: () => void, fencedWrite?: FencedWrite): boolean {
    const c = this.current;
    if (c === undefined || c.header.epoch !== epoch || c.header.revision !== CSI_IMAGE_REVISION_DELTAS) return false;
    // The JSON goes straight into the record (no intermediate payload buffer): one of these per
    // acknowledged change.
    const json = JSON.stringify(delta.value === undefined ? { path: delta.path } : { path: delta.path, value: delta.value });
    const len = Buffer.byteLength(json, 'utf8');
    const size = align(D.HEADER_SIZE + len);
    if (c.tail + size > SharedStateImage.halfOf(c.file)) return false;
    if (this.recordScratch.length < size) this.recordScratch = Buffer.alloc(Math.max(size, 2 * this.recordScratch.length));
    // Zeroed to its aligned end (the padding is part of what a reader looks at).
    const rec = this.recordScratch.fill(0, 0, size).subarray(0, size);
    rec.writeUInt32LE(CSI_DELTA_MAGIC, D.magic);
    rec.writeUInt32LE(len, D.length);
    writeU64(rec, D.generation, c.header.generation);
    writeU64(rec, D.seq, c.nextSeq);
    rec.write(json, D.HEADER_SIZE, len, 'utf8');
    rec.writeUInt32LE(crc32(rec.subarray(D.HEADER_SIZE, D.HEADER_SIZE + len), crc32(rec.subarray(0, D.crc))) >>> 0, D.crc);
    const base = c.header.half * SharedStateImage.halfOf(c.file);
    this.writeRangeFenced(c.file, base + c.tail, rec, checkFence, fencedWrite);
    c.tail += rec.length;
    c.nextSeq++;
    // The record is durable: count it (a reader then knows it was acknowledged, see CSI_ACK).
    this.writeRangeFenced(c.file, base + CSI_ACK.OFFSET, encodeAck(c.header.generation, c.nextSeq, this.ackScratch), checkFence, fencedWrite);
    return true;
  }

  /** checkFence, then writeRange; in one step through `fenced` when the range is one run of the device (the usual image file). */
  private writeRangeFenced(file: FileNode, offset: number, data: Buffer, checkFence: () => void, fenced: FencedWrite | undefined): void {
    const m = file.fmap;
    if (fenced !== undefined && m.kind === 'simple' && m.extents.length === 1 && offset >= 0 && offset + data.length <= m.extents[0].len) {
      fenced(m.extents[0].offset + offset, data);
      return;
    }
    checkFence();
    this.writeRange(file, offset, data);
  }

  /** A change record is built here (written, and copied to the device, at once; never kept). */
  private recordScratch = Buffer.alloc(1024);
  /** The ack line is rebuilt in place for every record (it is written, and copied, at once). */
  private readonly ackScratch = Buffer.alloc(CSI_ACK.SIZE);

  /**
   * Commits `doc` as a checkpoint of the next generation (to the other half, or to a new larger
   * file when the document fills more than half of a half). `checkFence` runs right before each
   * store and must throw when this writer no longer holds the fencing epoch `epoch`.
   */
  commit(doc: T, epoch: number, checkFence: () => void): ImageHeader {
    const body = Buffer.from(JSON.stringify(doc), 'utf8');
    let target = this.current?.file ?? this.fileAt(this.relpath);
    let targetRelpath = this.current?.relpath ?? this.relpath;
    if (target === undefined) throw new FamfsError('ENOENT', `${this.relpath} is missing: the master creates it on takeover`);
    let half: 0 | 1 = this.current === undefined ? 0 : this.current.header.half === 0 ? 1 : 0;
    // Half of a half stays for change records: a checkpoint every record would cost what a
    // whole-document commit per call did.
    if (body.length > (SharedStateImage.halfOf(target) - BODY_OFFSET) / 2) {
      const moved = this.grow(body.length, checkFence);
      target = moved.file;
      targetRelpath = moved.relpath;
      half = 0;
    }
    const base = half * SharedStateImage.halfOf(target);
    const generation = Math.max(this.current?.header.generation ?? 0, this.highest) + 1;
    checkFence();
    this.writeRange(target, base + BODY_OFFSET, body);
    // No record acknowledged after this checkpoint yet (written before the header that makes it count).
    this.writeRange(target, base + CSI_ACK.OFFSET, encodeAck(generation, 0));
    const header = {
      generation,
      epoch,
      length: body.length,
      bodyCrc: crc32(body) >>> 0,
      fileIndex: target.index,
    };
    checkFence();
    this.writeRange(target, base, encodeHeader(header));
    const written: ImageHeader = { ...header, half, revision: CSI_IMAGE_REVISION_DELTAS };
    // Retire what this checkpoint supersedes: the previous half, and any other half of this file
    // and of older image files that still holds something. If the new half is damaged later, no
    // older state is left to be taken for the newest one (see CSI_IMAGE_REVISION_RETIRED).
    this.retireAllBut(targetRelpath, half, written.generation, checkFence);
    this.current = { relpath: targetRelpath, file: target, header: written, tail: align(BODY_OFFSET + body.length), nextSeq: 0 };
    this.highest = written.generation;
    this.removeStale(targetRelpath);
    return written;
  }

  private retireAllBut(keepRelpath: string, keepHalf: 0 | 1, supersededBy: number, checkFence: () => void): void {
    for (const m of this.family()) {
      const half = SharedStateImage.halfOf(m.file);
      for (const i of [0, 1] as const) {
        if (m.relpath === keepRelpath && i === keepHalf) continue;
        const raw = this.readRange(m.file, i * half, HEADER_SIZE);
        const h = decodeHeader(raw, i, half, m.file, m.n === 0);
        if (h === 'empty' || h === RETIRED || (typeof h === 'string' && h.endsWith('(stale memory)'))) continue;
        const was: ImageHeader = typeof h === 'string' ? { half: i, revision: 0, generation: 0, epoch: 0, length: 0, bodyCrc: 0, fileIndex: m.file.index } : h;
        checkFence();
        this.writeRange(m.file, i * half, encodeRetired(was, supersededBy));
      }
    }
  }

  /** A new image file big enough for a checkpoint of `bodyBytes` with as much again for records. */
  private grow(bodyBytes: number, checkFence: () => void): { relpath: string; file: FileNode } {
    const fam = this.family();
    const last = fam[fam.length - 1];
    const n = (last?.n ?? 0) + 1;
    const relpath = `${this.relpath}.${n}`;
    const need = 2 * (BODY_OFFSET + 4 * bodyBytes);
    const size = Math.ceil(Math.max(need, 2 * (last?.file.size ?? DEFAULT_STATE_IMAGE_SIZE)) / ALLOC_UNIT) * ALLOC_UNIT;
    checkFence();
    // Not zeroed as a whole (it may be large): only the two headers are cleared, and every header
    // and record names this file and its generation, so what the memory held before is never read
    // as part of the image.
    const file = this.fs.creat(relpath, size, { mode: 0o600 });
    const zero = Buffer.alloc(HEADER_SIZE);
    this.writeRange(file, 0, zero);
    this.writeRange(file, SharedStateImage.halfOf(file), zero);
    this.stale.push(...fam.map((m) => m.relpath));
    return { relpath, file };
  }

  /** Removes image files the image moved away from (after the checkpoint in the new one). */
  private removeStale(keep: string): void {
    const left: string[] = [];
    for (const r of this.stale) {
      if (r === keep || this.fileAt(r) === undefined) continue;
      try {
        this.fs.rm(r);
      } catch {
        // Kept for the next checkpoint to retry: an older file is never read as newer (its
        // generations are lower), it only holds memory until then.
        left.push(r);
      }
    }
    this.stale = left;
  }
}
