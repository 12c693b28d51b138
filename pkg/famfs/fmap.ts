/**
 * File maps: where each byte of a famfs file lives on the device.
 *
 * Interleaved files are laid out chunk by chunk, round-robin over the strips: chunk i of the file
 * is in strip (i mod nstrips), at row floor(i / nstrips) of that strip.
 */
import { Extent, Fmap } from './layout';

export function fmapExtents(fmap: Fmap): Extent[] {
  return fmap.kind === 'simple' ? fmap.extents : fmap.strips;
}

/** Bytes of device memory the map names (what the file could hold). */
export function fmapCapacity(fmap: Fmap): number {
  return fmapExtents(fmap).reduce((sum, e) => sum + e.len, 0);
}

export interface DeviceRun {
  deviceOffset: number;
  /** Bytes that stay contiguous on the device from deviceOffset (capped by the file's map). */
  length: number;
}

/** Translate a file offset to a device offset; undefined past the end of the map. */
export function fileOffsetToDevice(fmap: Fmap, fileOffset: number): DeviceRun | undefined {
  if (fileOffset < 0) return undefined;
  if (fmap.kind === 'simple') {
    let base = 0;
    for (const e of fmap.extents) {
      if (fileOffset < base + e.len) return { deviceOffset: e.offset + (fileOffset - base), length: base + e.len - fileOffset };
      base += e.len;
    }
    return undefined;
  }
  const { chunkSize, nstrips, strips } = fmap;
  const chunk = Math.floor(fileOffset / chunkSize);
  const strip = chunk % nstrips;
  const row = Math.floor(chunk / nstrips);
  const within = fileOffset % chunkSize;
  const s = strips[strip];
  const stripOffset = row * chunkSize + within;
  if (stripOffset >= s.len) return undefined;
  return { deviceOffset: s.offset + stripOffset, length: chunkSize - within };
}

/** Visit every device run that holds file bytes [offset, offset+length). */
export function forEachDeviceRun(fmap: Fmap, offset: number, length: number, visit: (deviceOffset: number, fileOffset: number, len: number) => void): void {
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const run = fileOffsetToDevice(fmap, pos);
    if (!run) throw new RangeError(`file offset ${pos} is outside the file's map`);
    const n = Math.min(run.length, end - pos);
    visit(run.deviceOffset, pos, n);
    pos += n;
  }
}
