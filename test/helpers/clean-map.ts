/**
 * Checks on what a volume or the clean map (extension revision 4) hold, straight from the memory:
 * the zeroing tests (famfs-zero, csi-zero) share them.
 */
import { strict as assert } from 'assert';
import { ALLOC_UNIT, fmapExtents, readCleanMap, type FileNode, type Media } from '../../pkg/famfs';

/** Every byte of the file, straight from the memory. */
export function fileBytes(media: Media, f: FileNode): Buffer {
  const parts = fmapExtents(f.fmap).map((e) => {
    media.invalidate(e.offset, e.len);
    return media.read(e.offset, e.len);
  });
  return Buffer.concat(parts).subarray(0, f.size);
}

/** A tenant's data: a recognisable non-zero pattern over the whole file. */
export function fillPattern(media: Media, f: FileNode, byte = 0xa5): void {
  for (const e of fmapExtents(f.fmap)) {
    media.write(e.offset, Buffer.alloc(e.len, byte));
    media.flush(e.offset, e.len);
  }
}

export function allZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** The two files share memory. */
export function overlaps(a: FileNode, b: FileNode): boolean {
  return fmapExtents(a.fmap).some((x) => fmapExtents(b.fmap).some((y) => x.offset < y.offset + y.len && y.offset < x.offset + x.len));
}

/** Units the shared clean map calls clean hold only zeros (the invariant every crash must keep); returns how many are clean. */
export function assertCleanUnitsAreZero(media: Media, fsUuid: string, units: number): number {
  const map = readCleanMap(media, fsUuid, units);
  let clean = 0;
  for (let i = 0; i < map.runs.length; i += 2) {
    for (let u = map.runs[i]; u < map.runs[i + 1]; u++) {
      media.invalidate(u * ALLOC_UNIT, ALLOC_UNIT);
      assert.ok(allZero(media.read(u * ALLOC_UNIT, ALLOC_UNIT)), `unit ${u} is marked clean but holds data`);
      clean++;
    }
  }
  return clean;
}
