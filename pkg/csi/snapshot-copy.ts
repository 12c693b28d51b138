// Memory-to-memory copy of one famfs file into another (snapshots, clones, volumes from
// snapshots): the bytes never leave the device. Both files may be interleaved differently, so the
// copy walks device runs of both maps; the destination's tail past the source is zeroed, and every
// destination byte is flushed before the copy counts as done (another host reads it next).
//
// Large copies run in slices with a yield to the event loop in between, so other RPCs are served
// meanwhile, and report progress to the log.
import type { Logger } from 'pino';
import { forEachDeviceRun } from '../famfs/fmap';
import type { Media } from '../famfs/media';
import type { FileNode } from '../famfs/tree';

/**
 * A Media that can copy inside the device (DaxDevice); others fall back to read + write.
 * copyPersistent leaves the bytes in memory (non-temporal stores): no flush pass after it.
 */
export type CopyMedia = Media & {
  copy?: (dstOffset: number, srcOffset: number, length: number) => void;
  copyPersistent?: (dstOffset: number, srcOffset: number, length: number) => void;
};

export interface CopyOptions {
  log?: Logger;
  /** Bytes copied between two yields to the event loop. */
  sliceBytes?: number;
  /** Minimum time between two progress lines. */
  progressEveryMs?: number;
  /** What is being copied, for the log ("snapshot snap-… of vol-…"). */
  what?: string;
}

const DEFAULT_SLICE = 64 * 1024 * 1024;
const ZERO = Buffer.alloc(4 * 1024 * 1024);
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function copyRun(media: CopyMedia, dst: number, src: number, len: number): void {
  if (media.copyPersistent) {
    media.copyPersistent(dst, src, len);
    return;
  }
  if (media.copy) {
    media.copy(dst, src, len);
    return;
  }
  for (let off = 0; off < len; off += ZERO.length) {
    const n = Math.min(ZERO.length, len - off);
    media.write(dst + off, media.read(src + off, n));
  }
}

function zeroRun(media: Media, dst: number, len: number): void {
  if (media.zero) {
    media.zero(dst, len);
    return;
  }
  for (let off = 0; off < len; off += ZERO.length) media.write(dst + off, ZERO.subarray(0, Math.min(ZERO.length, len - off)));
}

/**
 * Copies the first `length` bytes of `src` into `dst`, zeroes `dst` from there to its end, and
 * flushes `dst`. Returns the bytes per second achieved.
 */
export async function copyFileContents(media: CopyMedia, src: FileNode, dst: FileNode, length: number, o: CopyOptions = {}): Promise<number> {
  if (length > src.size || length > dst.size)
    throw new RangeError(`copy of ${length} bytes does not fit ${src.relpath} (${src.size}) → ${dst.relpath} (${dst.size})`);
  const slice = o.sliceBytes ?? DEFAULT_SLICE;
  const every = o.progressEveryMs ?? 1000;
  const started = Date.now();
  let lastReport = started;
  const total = dst.size;
  const report = (done: number): void => {
    const now = Date.now();
    if (o.log === undefined || now - lastReport < every) return;
    lastReport = now;
    o.log.info(
      { copy: o.what, done, total, percent: Math.floor((done / total) * 100), mbps: Math.round(done / 1e6 / ((now - started) / 1000)) },
      'copy in progress',
    );
  };
  // Source side first: invalidate so we read what the source's writers flushed, not stale lines.
  forEachDeviceRun(src.fmap, 0, length, (dev, _f, len) => media.invalidate(dev, len));
  for (let pos = 0; pos < total; pos += slice) {
    const end = Math.min(total, pos + slice);
    const copyEnd = Math.min(end, length);
    if (pos < copyEnd) {
      forEachDeviceRun(src.fmap, pos, copyEnd - pos, (srcDev, fileOff, srcLen) => {
        forEachDeviceRun(dst.fmap, fileOff, srcLen, (dstDev, dOff, n) => copyRun(media, dstDev, srcDev + (dOff - fileOff), n));
      });
    }
    const zeroFrom = Math.max(pos, length);
    if (zeroFrom < end) forEachDeviceRun(dst.fmap, zeroFrom, end - zeroFrom, (dev, _f, n) => zeroRun(media, dev, n));
    // Persistent copies and zeroing leave nothing in the caches to write back.
    if (!(media.copyPersistent && media.zero)) forEachDeviceRun(dst.fmap, pos, end - pos, (dev, _f, n) => media.flush(dev, n));
    report(end);
    if (end < total) await yieldToLoop();
  }
  const seconds = Math.max(1e-6, (Date.now() - started) / 1000);
  const rate = total / seconds;
  if (o.log !== undefined && total >= 256 * 1024 * 1024) o.log.info({ copy: o.what, bytes: total, seconds, mbps: Math.round(rate / 1e6) }, 'copy done');
  return rate;
}
