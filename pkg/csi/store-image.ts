// The controller's metadata as an image in the shared memory itself, so that a controller that
// moves to another host (replicas share the memory, not a disk) finds every volume's CO name,
// requested range, parameters, content source and published nodes where it left them.
//
// The image lives in a reserved famfs file (csi/.controller-state), split in two self-describing
// halves: a 64-byte header and a JSON body each. The layout is defined once, in pkg/famfs/layout.ts
// (CSI_IMAGE), and documented in docs/format.md ("Controller state image").
//
// A commit writes the half that does NOT hold the newest image: body first, flushed, then its
// 64-byte header (one cache line), flushed. A crash before the header flush leaves the older half
// as the newest valid one; a torn header or body fails its CRC. A reader takes the valid half with
// the highest (epoch, generation). Only the fenced master commits: the epoch is re-checked right
// before the header store, the same check the log writer makes before publishing an entry.
import { crc32 } from 'zlib';
import { FamfsError } from '../famfs/errors';
import { forEachDeviceRun } from '../famfs/fmap';
import type { FamfsFs } from '../famfs/fs';
import { CSI_IMAGE, CSI_IMAGE_MAGIC, CSI_IMAGE_REVISION } from '../famfs/layout';
import type { Media } from '../famfs/media';
import type { FileNode } from '../famfs/tree';

export const STATE_IMAGE_DIR = 'csi';
export const STATE_IMAGE_RELPATH = 'csi/.controller-state';
/** 8 MiB: two 4 MiB halves, room for roughly ten thousand volume records. */
export const DEFAULT_STATE_IMAGE_SIZE = 8 * 1024 * 1024;

const MAGIC = CSI_IMAGE_MAGIC;
const REVISION = CSI_IMAGE_REVISION;
const HEADER_SIZE = CSI_IMAGE.HEADER_SIZE;
const BODY_OFFSET = CSI_IMAGE.BODY_OFFSET;
const H = CSI_IMAGE;

export interface ImageHeader {
  half: 0 | 1;
  generation: number;
  epoch: number;
  length: number;
  bodyCrc: number;
}

export interface LoadedImage<T> {
  header: ImageHeader;
  doc: T;
  /** Halves that failed validation and why (a torn commit shows up here, harmlessly). */
  problems: string[];
}

function encodeHeader(h: Omit<ImageHeader, 'half'>): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(b, H.magic);
  b.writeUInt32LE(REVISION, H.revision);
  b.writeBigUInt64LE(BigInt(h.generation), H.generation);
  b.writeBigUInt64LE(BigInt(h.epoch), H.epoch);
  b.writeUInt32LE(h.length, H.length);
  b.writeUInt32LE(h.bodyCrc, H.bodyCrc);
  b.writeUInt32LE(crc32(b.subarray(0, H.headerCrc)) >>> 0, H.headerCrc);
  return b;
}

function decodeHeader(b: Buffer, half: 0 | 1, halfSize: number): ImageHeader | string {
  if (b.subarray(0, 8).every((x) => x === 0)) return 'empty';
  if (!b.subarray(H.magic, H.magic + 8).equals(MAGIC)) return 'bad magic';
  if (b.readUInt32LE(H.headerCrc) !== crc32(b.subarray(0, H.headerCrc)) >>> 0) return 'header CRC mismatch (torn or damaged)';
  if (b.readUInt32LE(H.revision) !== REVISION) return `unknown revision ${b.readUInt32LE(H.revision)}`;
  const length = b.readUInt32LE(H.length);
  if (length > halfSize - BODY_OFFSET) return `body length ${length} exceeds the half`;
  return {
    half,
    generation: Number(b.readBigUInt64LE(H.generation)),
    epoch: Number(b.readBigUInt64LE(H.epoch)),
    length,
    bodyCrc: b.readUInt32LE(H.bodyCrc),
  };
}

/** Reads, writes and validates the double-buffered image in one famfs file. */
export class SharedStateImage<T> {
  private latest: ImageHeader | undefined;

  constructor(
    private readonly fs: FamfsFs,
    private readonly media: Media,
    private readonly validate: (doc: unknown) => T,
    readonly relpath = STATE_IMAGE_RELPATH,
  ) {}

  private file(): FileNode | undefined {
    const n = this.fs.lookup(this.relpath);
    return n?.kind === 'file' ? n : undefined;
  }

  get halfSize(): number {
    const f = this.file();
    return f ? Math.floor(f.size / 2 / 4096) * 4096 : 0;
  }

  /** Largest JSON body a commit can hold. */
  get capacity(): number {
    return Math.max(0, this.halfSize - BODY_OFFSET);
  }

  /** Creates the image file when missing (master only: it appends to the log). */
  ensure(size = DEFAULT_STATE_IMAGE_SIZE): void {
    if (this.file() !== undefined) return;
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
    forEachDeviceRun(file.fmap, offset, data.length, (dev, fileOff, len) => {
      this.media.write(dev, data.subarray(fileOff - offset, fileOff - offset + len));
      this.media.flush(dev, len);
    });
  }

  /** The newest valid image, or undefined when none was ever committed (or the file is missing). */
  load(): LoadedImage<T> | undefined {
    const file = this.file();
    if (file === undefined) {
      this.latest = undefined;
      return undefined;
    }
    const half = this.halfSize;
    const problems: string[] = [];
    const candidates: { header: ImageHeader; doc: T }[] = [];
    for (const i of [0, 1] as const) {
      const h = decodeHeader(this.readRange(file, i * half, HEADER_SIZE), i, half);
      if (typeof h === 'string') {
        if (h !== 'empty') problems.push(`half ${i}: ${h}`);
        continue;
      }
      const body = this.readRange(file, i * half + BODY_OFFSET, h.length);
      if ((crc32(body) >>> 0) !== h.bodyCrc) {
        problems.push(`half ${i} (generation ${h.generation}): body CRC mismatch (torn commit or damage)`);
        continue;
      }
      try {
        candidates.push({ header: h, doc: this.validate(JSON.parse(body.toString('utf8'))) });
      } catch (e) {
        problems.push(`half ${i} (generation ${h.generation}): ${(e as Error).message}`);
      }
    }
    candidates.sort((a, b) => b.header.epoch - a.header.epoch || b.header.generation - a.header.generation);
    const best = candidates[0];
    // Remember the newest header even if it failed to parse as a doc, so the next commit never
    // overwrites the only good half.
    this.latest = best?.header;
    return best ? { ...best, problems } : undefined;
  }

  get generation(): number {
    return this.latest?.generation ?? 0;
  }

  /**
   * Commits `doc` as the next generation. `checkFence` runs right before the header store and
   * must throw when this writer no longer holds the fencing epoch `epoch`.
   */
  commit(doc: T, epoch: number, checkFence: () => void): ImageHeader {
    const file = this.file();
    if (file === undefined) throw new FamfsError('ENOENT', `${this.relpath} is missing: the master creates it on takeover`);
    const body = Buffer.from(JSON.stringify(doc), 'utf8');
    if (body.length > this.capacity) {
      throw new FamfsError('ENOSPC', `controller state of ${body.length} bytes exceeds the ${this.capacity}-byte image half (${this.relpath}); delete unused volumes`);
    }
    const target: 0 | 1 = this.latest === undefined ? 0 : this.latest.half === 0 ? 1 : 0;
    const base = target * this.halfSize;
    checkFence();
    this.writeRange(file, base + BODY_OFFSET, body);
    const header = { generation: this.generation + 1, epoch, length: body.length, bodyCrc: crc32(body) >>> 0 };
    checkFence();
    this.writeRange(file, base, encodeHeader(header));
    this.latest = { ...header, half: target };
    return this.latest;
  }
}
