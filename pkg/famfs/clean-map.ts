/**
 * The clean map in shared memory (extension block revision 4; layout in layout.ts CLEAN_LINE): which
 * free allocation units hold only zeros, so CreateVolume can hand out memory without zeroing it.
 *
 * Only the master writes it, and only in two ways, each ordered so that a crash (kill -9, power)
 * at any point never leaves a unit marked clean that holds data:
 * - clean: the unit was zeroed and the zeros flushed *before* its bit is set and the line flushed;
 * - dirty: the bit is cleared and the line flushed *before* a log entry hands the unit to a file.
 * A line that is torn, damaged or left by another file system fails its CRC: all its units are dirty.
 */
import { CLEAN_LINE, CLEAN_MAP_LINES, CLEAN_MAP_OFFSET, decodeCleanLine, encodeCleanLine } from './layout';
import { Media, readFresh, writeFlush } from './media';

/** Lines of the map that cover a device of `units` allocation units (the rest of the map is unused). */
export function cleanMapLines(units: number): number {
  return Math.min(CLEAN_MAP_LINES, Math.ceil(units / CLEAN_LINE.UNITS));
}

/** Units the map can describe on a device of `units` units (devices past 14 TiB keep the rest dirty). */
export function cleanMapUnits(units: number): number {
  return Math.min(units, CLEAN_MAP_LINES * CLEAN_LINE.UNITS);
}

export interface CleanMapState {
  /** Clean units as sorted, disjoint runs: [start0, end0, start1, end1, ...]. */
  runs: number[];
  /** Lines that fail their CRC (or belong to another file system): their units count as dirty. */
  damagedLines: number[];
  /** Lines never written (all zero bytes). */
  unwrittenLines: number;
}

/** Read the map for file system `fsUuid` over `units` allocation units. */
export function readCleanMap(media: Media, fsUuid: string, units: number): CleanMapState {
  const lines = cleanMapLines(units);
  const covered = cleanMapUnits(units);
  const out: CleanMapState = { runs: [], damagedLines: [], unwrittenLines: 0 };
  if (lines === 0) return out;
  const len = lines * CLEAN_LINE.SIZE;
  media.invalidate(CLEAN_MAP_OFFSET, len);
  const raw = media.read(CLEAN_MAP_OFFSET, len);
  let runStart = -1;
  for (let l = 0; l < lines; l++) {
    const bits = decodeCleanLine(fsUuid, l, raw.subarray(l * CLEAN_LINE.SIZE, (l + 1) * CLEAN_LINE.SIZE));
    if (bits === 'damaged') out.damagedLines.push(l);
    if (bits === 'unwritten') out.unwrittenLines++;
    const base = l * CLEAN_LINE.UNITS;
    for (let k = 0; k < CLEAN_LINE.UNITS; k++) {
      const u = base + k;
      if (u >= covered) break;
      const clean = typeof bits !== 'string' && (bits[k >> 3] & (1 << (k & 7))) !== 0;
      if (clean && runStart < 0) runStart = u;
      else if (!clean && runStart >= 0) {
        out.runs.push(runStart, u);
        runStart = -1;
      }
    }
  }
  if (runStart >= 0) out.runs.push(runStart, covered);
  return out;
}

/**
 * Set (clean) or clear (dirty) the bits of `units` ({start, count} runs of allocation units) and
 * flush every line touched. The caller orders this against its data writes (see the file comment).
 * Units past what the map covers are ignored (they are always dirty). A damaged line is rewritten
 * with only the bits set that this call sets: its other units stay dirty.
 */
export function writeCleanUnits(media: Media, fsUuid: string, deviceUnits: number, units: { start: number; count: number }[], clean: boolean): void {
  const covered = cleanMapUnits(deviceUnits);
  const touched = new Map<number, Buffer>();
  const lineBits = (l: number): Buffer => {
    let b = touched.get(l);
    if (b === undefined) {
      const at = CLEAN_MAP_OFFSET + l * CLEAN_LINE.SIZE;
      const raw = Buffer.allocUnsafe(CLEAN_LINE.SIZE);
      readFresh(media, at, raw);
      const cur = decodeCleanLine(fsUuid, l, raw);
      b = typeof cur === 'string' ? Buffer.alloc(CLEAN_LINE.crc) : cur;
      touched.set(l, b);
    }
    return b;
  };
  for (const r of units) {
    const end = Math.min(r.start + r.count, covered);
    for (let u = Math.max(0, r.start); u < end; u++) {
      const l = Math.floor(u / CLEAN_LINE.UNITS);
      const k = u - l * CLEAN_LINE.UNITS;
      const b = lineBits(l);
      if (clean) b[k >> 3] |= 1 << (k & 7);
      else b[k >> 3] &= ~(1 << (k & 7));
    }
  }
  for (const [l, bits] of touched) {
    const at = CLEAN_MAP_OFFSET + l * CLEAN_LINE.SIZE;
    writeFlush(media, at, encodeCleanLine(fsUuid, l, bits));
  }
}

/** Every line dirty (mkfs, and the upgrade to revision 4: nothing was known clean before). */
export function clearCleanMap(media: Media, deviceUnits = CLEAN_MAP_LINES * CLEAN_LINE.UNITS): void {
  const len = cleanMapLines(deviceUnits) * CLEAN_LINE.SIZE;
  if (len === 0) return;
  media.write(CLEAN_MAP_OFFSET, Buffer.alloc(len));
  media.flush(CLEAN_MAP_OFFSET, len);
}
