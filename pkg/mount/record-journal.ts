// A keyed record set on local disk, written incrementally: an append-only journal of framed changes
// that starts with a snapshot and is compacted into a new snapshot when it grows.
//
// Why: the node plugin used to rewrite its whole publish-records document on every NodePublish and
// NodeUnpublish (430 KB with 1,000 volumes published). Here a call appends one frame of a few hundred
// bytes with one write(2) (and an fdatasync when the records must survive a machine crash).
//
// File: a sequence of frames, little-endian:
//
//   magic   u32   JOURNAL_MAGIC (first byte 0xe6: never the start of a JSON text)
//   length  u32   payload bytes
//   crc     u32   CRC-32 of magic+length, continued over the payload
//   payload       UTF-8 JSON: {"v":1,"q":SEQ,"snap":{KEY:REC,...}}  the whole set (always the first frame)
//                             {"q":SEQ,"put":{KEY:REC,...},"del":[KEY,...]}  one change, applied whole
//
// SEQ counts frames (a snapshot continues its predecessor's count), so a frame missing from the middle
// shows as a gap even if no damaged byte is left of it.
//
// Crash safety (one process owns the file; every change is queued by the caller):
// - a change is one write(2) of a whole frame at the end (O_APPEND): a kill -9 leaves it written or
//   not; a machine crash (without `durable`) or a failing disk can leave a partial frame at the end,
//   which the CRC finds: the torn tail is dropped (and cut off) with a warning;
// - compaction writes a new file holding one snapshot frame and renames it over the journal: a crash
//   leaves the old journal or the new one, which hold the same records;
// - damage followed by intact frames (a bad disk, an edit) is reported, never skipped silently: the
//   intact frames after it still apply, and every record whose last write came before the damage is
//   dropped as uncertain (the lost frames may have deleted it; dropping loses a record, keeping it could
//   resurrect a removed one). A copy of the damaged file is kept next to it for inspection.
import * as fs from 'fs';
import * as path from 'path';
import { crc32 } from 'zlib';
import { StateFileError } from './state-file-error';

export const JOURNAL_MAGIC = 0x4a5246e6;
export const JOURNAL_VERSION = 1;
const HEADER = 12;
/** A frame larger than this is damage, not data (the whole set of 100,000 records is ~40 MB). */
const MAX_FRAME = 256 * 1024 * 1024;
/** Compaction when the changes appended since the last snapshot exceed max(this, the snapshot's size). */
export const DEFAULT_COMPACT_MIN_BYTES = 64 * 1024;

export interface JournalDamage {
  /** File offset of the first damaged byte. */
  offset: number;
  /** Bytes skipped up to the next intact frame (0: frames missing, no damaged byte left of them). */
  bytes: number;
  reason: string;
}

/** What loading a journal found besides the records. */
export interface JournalReport {
  frames: number;
  bytes: number;
  /** A partial or damaged end dropped (and cut off the file): a write torn by a crash. */
  tornTail?: JournalDamage;
  /** Damage with intact frames after it: not a crash of this writer. */
  damage: JournalDamage[];
  /** Keys dropped because their last write came before the damage. */
  uncertain: string[];
  /** Where the damaged file was copied before it was compacted. */
  damagedCopy?: string;
}

export interface ParsedJournal<T> {
  records: Map<string, T>;
  seq: number;
  /** Where a torn tail starts (the file's length without one). */
  goodEnd: number;
  /** Payload bytes of the last snapshot frame and the frame bytes after it. */
  snapshotBytes: number;
  bytesSinceSnapshot: number;
  report: JournalReport;
}

/** Checks one record read back; returns it typed or throws. */
export type RecordValidator<T> = (key: string, rec: unknown) => T;

interface Payload {
  v?: unknown;
  q?: unknown;
  snap?: unknown;
  put?: unknown;
  del?: unknown;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** One frame's bytes. */
export function encodeFrame(payload: object): Buffer {
  const body = Buffer.from(JSON.stringify(payload), 'utf8');
  const b = Buffer.allocUnsafe(HEADER + body.length);
  b.writeUInt32LE(JOURNAL_MAGIC, 0);
  b.writeUInt32LE(body.length, 4);
  b.writeUInt32LE(crc32(body, crc32(b.subarray(0, 8))) >>> 0, 8);
  body.copy(b, HEADER);
  return b;
}

/** The payload of an intact frame at `off`, or why there is none. */
function frameAt(buf: Buffer, off: number): { end: number; body: Buffer } | { error: string } {
  if (buf.length - off < HEADER) return { error: `${buf.length - off} bytes, shorter than a frame header` };
  if (buf.readUInt32LE(off) !== JOURNAL_MAGIC) return { error: 'no frame magic' };
  const len = buf.readUInt32LE(off + 4);
  if (len > MAX_FRAME) return { error: `frame length ${len} out of range` };
  if (buf.length - off - HEADER < len) return { error: `frame of ${len} bytes cut short at ${buf.length - off - HEADER}` };
  const body = buf.subarray(off + HEADER, off + HEADER + len);
  if (crc32(body, crc32(buf.subarray(off, off + 8))) >>> 0 !== buf.readUInt32LE(off + 8)) return { error: 'CRC mismatch' };
  return { end: off + HEADER + len, body };
}

const MAGIC_BYTES = (() => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(JOURNAL_MAGIC, 0);
  return b;
})();

/** The next offset after `from` where an intact frame starts, or -1. */
function resync(buf: Buffer, from: number): number {
  for (let o = buf.indexOf(MAGIC_BYTES, from); o >= 0; o = buf.indexOf(MAGIC_BYTES, o + 1)) {
    if ('end' in frameAt(buf, o)) return o;
  }
  return -1;
}

/**
 * Reads a journal's bytes into its records (no I/O). Throws StateFileError EVERSION for a journal of a
 * newer format; anything else damaged is reported in `report`, as described at the top of this file.
 */
export function parseJournal<T>(buf: Buffer, validate: RecordValidator<T>): ParsedJournal<T> {
  const records = new Map<string, T>();
  /** Frame index of each key's last write. */
  const lastWrite = new Map<string, number>();
  const report: JournalReport = { frames: 0, bytes: buf.length, damage: [], uncertain: [] };
  let seq = 0;
  let off = 0;
  let frame = 0;
  /** Index of the first frame applied after the last damage (every key written before it is uncertain). */
  let afterDamage: number | undefined;
  let justDamaged = false;
  let snapshotBytes = 0;
  let sinceSnapshot = 0;
  const damaged = (offset: number, bytes: number, reason: string): void => {
    report.damage.push({ offset, bytes, reason });
    afterDamage = frame;
    justDamaged = true;
  };
  while (off < buf.length) {
    const f = frameAt(buf, off);
    if ('error' in f) {
      const next = resync(buf, off + 1);
      if (next < 0) {
        report.tornTail = { offset: off, bytes: buf.length - off, reason: f.error };
        break;
      }
      damaged(off, next - off, f.error);
      off = next;
      continue;
    }
    // An intact frame: its content must make sense too (a CRC-valid frame with a bad record was
    // written by something else, and counts as damage).
    let p: Payload;
    try {
      const parsed: unknown = JSON.parse(f.body.toString('utf8'));
      if (!isObject(parsed)) throw new Error('payload is not an object');
      p = parsed;
      if (typeof p.q !== 'number' || !Number.isSafeInteger(p.q) || p.q < 1) throw new Error(`bad sequence number ${JSON.stringify(p.q)}`);
      if (p.snap !== undefined && p.v !== JOURNAL_VERSION) {
        throw new StateFileError(
          'EVERSION',
          `record journal: frame at ${off} is of format version ${JSON.stringify(p.v)}, this plugin reads ${JOURNAL_VERSION}`,
        );
      }
    } catch (e) {
      if (e instanceof StateFileError) throw e;
      damaged(off, f.end - off, `unreadable frame: ${(e as Error).message}`);
      off = f.end;
      continue;
    }
    const q = p.q;
    if (frame === 0 && p.snap === undefined && report.damage.length === 0) damaged(off, 0, 'the journal does not start with a snapshot');
    else if (seq !== 0 && q !== seq + 1 && !(justDamaged && q > seq)) {
      damaged(off, 0, `frame ${q} follows frame ${seq}: ${q > seq ? 'frames missing' : 'out of order'}`);
      if (q <= seq) {
        off = f.end;
        continue;
      }
    }
    try {
      const puts: [string, T][] = [];
      const dels: string[] = [];
      if (p.snap !== undefined) {
        if (!isObject(p.snap)) throw new Error('snapshot is not an object');
        for (const [k, v] of Object.entries(p.snap)) puts.push([k, validate(k, v)]);
      } else {
        if (p.put !== undefined) {
          if (!isObject(p.put)) throw new Error('put is not an object');
          for (const [k, v] of Object.entries(p.put)) puts.push([k, validate(k, v)]);
        }
        if (p.del !== undefined) {
          if (!Array.isArray(p.del) || !p.del.every((k) => typeof k === 'string')) throw new Error('del is not a list of keys');
          dels.push(...p.del);
        }
      }
      // Validated whole before anything applies: a frame is one change.
      if (p.snap !== undefined) {
        records.clear();
        lastWrite.clear();
        snapshotBytes = f.end - off;
        sinceSnapshot = 0;
      } else sinceSnapshot += f.end - off;
      for (const k of dels) {
        records.delete(k);
        lastWrite.delete(k);
      }
      for (const [k, v] of puts) {
        records.set(k, v);
        lastWrite.set(k, frame);
      }
    } catch (e) {
      damaged(off, f.end - off, `unreadable frame ${q}: ${(e as Error).message}`);
      off = f.end;
      continue;
    }
    seq = q;
    frame++;
    justDamaged = false;
    off = f.end;
  }
  report.frames = frame;
  const goodEnd = report.tornTail?.offset ?? buf.length;
  const uncertain: string[] = [];
  if (afterDamage !== undefined) {
    for (const [k, at] of lastWrite) {
      if (at < afterDamage) uncertain.push(k);
    }
    for (const k of uncertain) records.delete(k);
  }
  report.uncertain = uncertain.sort();
  return { records, seq, goodEnd, snapshotBytes, bytesSinceSnapshot: sinceSnapshot, report };
}

export interface JournalOptions<T> {
  validate: RecordValidator<T>;
  /**
   * true: every change is on disk before it is acknowledged (fdatasync), and a compaction fsyncs the
   * new file and the directory. false: a change survives a crash of the process (it is in the page
   * cache once write(2) returns), not of the machine.
   */
  durable: boolean;
  /** Compaction threshold floor (bytes of changes since the last snapshot). */
  compactMinBytes?: number;
}

let tmpSeq = 0;

/** Temp files a compaction of `file` writes (left behind by a crash during one). */
function isTempOf(file: string, name: string): boolean {
  return name.startsWith(`.${path.basename(file)}.`) && name.endsWith('.tmp');
}

/**
 * The records of one journal file, held in memory, changed by appending frames. Not safe for
 * concurrent calls: the caller queues them (NodeStateStore does).
 */
export class RecordJournal<T> {
  private fd: number | undefined;
  private map = new Map<string, T>();
  private seq = 0;
  private snapshotBytes = 0;
  private sinceSnapshot = 0;
  /** The file's length: where the next frame goes, and where a failed append is cut back to. */
  private size = 0;
  private readonly compactMin: number;

  constructor(
    readonly file: string,
    private readonly opts: JournalOptions<T>,
  ) {
    this.compactMin = opts.compactMinBytes ?? DEFAULT_COMPACT_MIN_BYTES;
  }

  get records(): ReadonlyMap<string, T> {
    return this.map;
  }

  exists(): boolean {
    return fs.existsSync(this.file);
  }

  /**
   * Reads the journal (which must exist) and makes it ready for appends: a torn tail is cut off, a
   * journal with damage in its middle is copied aside and compacted. Returns what it found.
   */
  open(): JournalReport {
    this.close();
    let buf: Buffer;
    try {
      buf = fs.readFileSync(this.file);
    } catch (e) {
      throw new StateFileError('EIO', `cannot read ${this.file}: ${(e as Error).message}`, { cause: e });
    }
    const parsed = parseJournal(buf, this.opts.validate);
    this.removeTemps();
    this.map = parsed.records;
    this.seq = parsed.seq;
    this.snapshotBytes = parsed.snapshotBytes;
    this.sinceSnapshot = parsed.bytesSinceSnapshot;
    const r = parsed.report;
    if (r.damage.length > 0 || r.frames === 0) {
      if (r.damage.length > 0) {
        r.damagedCopy = `${this.file}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`;
        fs.copyFileSync(this.file, r.damagedCopy);
      }
      this.writeSnapshot(this.map);
      return r;
    }
    this.fd = this.openAppend();
    this.size = parsed.goodEnd;
    if (r.tornTail !== undefined) {
      // Cut the torn frame off so that the next frame follows an intact one.
      fs.ftruncateSync(this.fd, parsed.goodEnd);
      if (this.opts.durable) fs.fdatasyncSync(this.fd);
    }
    return r;
  }

  /**
   * Replaces the whole set (a new journal holding one snapshot): migration and compaction. `durable`
   * (default: the journal's) fsyncs the new file and the directory.
   */
  reset(records: ReadonlyMap<string, T>, durable = this.opts.durable): void {
    this.close();
    this.removeTemps();
    this.writeSnapshot(records, durable);
  }

  /**
   * Appends one change (records to put, keys to delete) and applies it in memory once it is written
   * (durably, with `durable`). A failed write leaves the file and the records as they were.
   */
  async change(put: ReadonlyMap<string, T>, del: readonly string[]): Promise<void> {
    if (put.size === 0 && del.length === 0) return;
    if (this.fd === undefined) throw new StateFileError('EIO', `${this.file} is not open (open() or reset() first)`);
    const payload: { q: number; put?: Record<string, T>; del?: string[] } = { q: this.seq + 1 };
    if (put.size > 0) payload.put = Object.fromEntries(put);
    if (del.length > 0) payload.del = [...del];
    const frame = encodeFrame(payload);
    const size = this.size;
    try {
      const n = fs.writeSync(this.fd, frame);
      if (n !== frame.length) throw new Error(`short write (${n} of ${frame.length} bytes)`);
      if (this.opts.durable) await fdatasync(this.fd);
    } catch (e) {
      // Take a partial frame back so the next one follows an intact frame.
      try {
        if (this.fd !== undefined) fs.ftruncateSync(this.fd, size);
      } catch {
        // The torn tail stays; the next load drops it (it holds nothing acknowledged).
      }
      throw new StateFileError('EIO', `cannot append to ${this.file}: ${(e as Error).message}`, { cause: e });
    }
    this.seq++;
    this.size += frame.length;
    this.sinceSnapshot += frame.length;
    for (const k of del) this.map.delete(k);
    for (const [k, v] of put) this.map.set(k, v);
    if (this.sinceSnapshot > Math.max(this.compactMin, this.snapshotBytes)) this.compact();
  }

  /** Rewrites the journal as one snapshot of the current records. */
  compact(): void {
    this.reset(this.map);
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private openAppend(): number {
    return fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_APPEND);
  }

  private removeTemps(): void {
    const dir = path.dirname(this.file);
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names) if (isTempOf(this.file, n)) fs.rmSync(path.join(dir, n), { force: true });
  }

  /** Write-temp, (fsync), rename over the journal, (fsync the directory); then open it for appends. */
  private writeSnapshot(records: ReadonlyMap<string, T>, durable = this.opts.durable): void {
    this.close();
    const dir = path.dirname(this.file);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const frame = encodeFrame({ v: JOURNAL_VERSION, q: this.seq + 1, snap: Object.fromEntries(records) });
    const tmp = path.join(dir, `.${path.basename(this.file)}.${process.pid}.${tmpSeq++}.tmp`);
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      const n = fs.writeSync(fd, frame);
      if (n !== frame.length) throw new Error(`short write (${n} of ${frame.length} bytes)`);
      if (durable) fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(tmp, this.file);
    } catch (e) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
      fs.rmSync(tmp, { force: true });
      throw new StateFileError('EIO', `cannot write ${this.file}: ${(e as Error).message}`, { cause: e });
    }
    if (durable) fsyncDir(dir);
    if (records !== this.map) this.map = new Map(records);
    this.seq++;
    this.snapshotBytes = frame.length;
    this.sinceSnapshot = 0;
    this.size = frame.length;
    this.fd = this.openAppend();
  }
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (e) => (e ? reject(e) : resolve())));
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
