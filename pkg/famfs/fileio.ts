/**
 * Reading and writing a famfs file's bytes through its map (what `famfs cp`, `verify` and tests
 * do without a mount). Never touches memory outside the file's extents, never past its size.
 */
import { FamfsError } from './errors';
import { fmapExtents, forEachDeviceRun } from './fmap';
import { Media } from './media';
import { FileNode } from './tree';

function checkRange(file: FileNode, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > file.size) {
    throw new FamfsError('EINVAL', `range ${offset}+${length} is outside "${file.relpath}" (${file.size} bytes); famfs files never grow`);
  }
}

export function writeFileData(media: Media, file: FileNode, offset: number, data: Uint8Array): void {
  checkRange(file, offset, data.length);
  forEachDeviceRun(file.fmap, offset, data.length, (dev, fileOff, len) => media.write(dev, data.subarray(fileOff - offset, fileOff - offset + len)));
}

export function readFileData(media: Media, file: FileNode, offset: number, length: number): Buffer {
  checkRange(file, offset, length);
  const out = Buffer.alloc(length);
  forEachDeviceRun(file.fmap, offset, length, (dev, fileOff, len) => media.read(dev, len).copy(out, fileOff - offset));
  return out;
}

/** Write back the file's CPU cache lines (the host giving the file up). */
export function flushFile(media: Media, file: FileNode): void {
  for (const e of fmapExtents(file.fmap)) media.flush(e.offset, e.len);
}

/** Drop the file's CPU cache lines (the host taking the file over). */
export function invalidateFile(media: Media, file: FileNode): void {
  for (const e of fmapExtents(file.fmap)) media.invalidate(e.offset, e.len);
}
