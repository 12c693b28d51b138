/**
 * Which log region is in use (famfs-csi extension revision 2, online compaction).
 *
 * Generation 0 is famfs' own log at LOG_OFFSET. Each compaction writes the live set into the other
 * region and then publishes the next generation in the log generation record of that parity (see
 * layout.ts). Readers pick the highest valid record, read the log, and look again afterwards: if
 * the generation moved while they read, what they read may be a region being rewritten, so they
 * drop it and replay the new generation instead (a sequence lock; the master never writes a region
 * before the generation that last used it has been superseded).
 */
import { decodeLogGenRecord, encodeLogGenRecord, LOG_GEN, LOG_GEN_OFFSET, LOG_OFFSET, LogGenRecord } from './layout';
import { Media } from './media';

export interface ActiveLog {
  generation: number;
  /** Device offset of the log header of this generation. */
  offset: number;
  /** Device offset of the second region, 0 while none was ever allocated. */
  altOffset: number;
}

export const GENERATION_ZERO: ActiveLog = { generation: 0, offset: LOG_OFFSET, altOffset: 0 };

/** Both records as stored (undefined where a record is empty, torn or foreign). */
export function readLogGenRecords(media: Media, fsUuid: string): (LogGenRecord | undefined)[] {
  const len = LOG_GEN.SIZE * LOG_GEN.COUNT;
  media.invalidate(LOG_GEN_OFFSET, len);
  const raw = media.read(LOG_GEN_OFFSET, len);
  // Read before and after every catch-up, changed only by a compaction: the same bytes (and file
  // system) give the same records, so one memcmp replaces two CRCs and UUID conversions.
  if (lastGen !== undefined && lastGen.fsUuid === fsUuid && raw.equals(lastGen.raw)) return lastGen.records.map((r) => (r ? { ...r } : undefined));
  const out: (LogGenRecord | undefined)[] = [];
  for (let i = 0; i < LOG_GEN.COUNT; i++) {
    const r = decodeLogGenRecord(raw.subarray(i * LOG_GEN.SIZE, (i + 1) * LOG_GEN.SIZE));
    out.push(r && r.fsUuid === fsUuid && r.generation % LOG_GEN.COUNT === i ? r : undefined);
  }
  lastGen = { raw, fsUuid, records: out.map((r) => (r ? { ...r } : undefined)) };
  return out;
}

/** What readLogGenRecords last decoded: the bytes, the file system asked about, the records. */
let lastGen: { raw: Buffer; fsUuid: string; records: (LogGenRecord | undefined)[] } | undefined;

/** The current generation: the highest valid record, or generation 0. */
export function readActiveLog(media: Media, fsUuid: string): ActiveLog {
  let best: LogGenRecord | undefined;
  for (const r of readLogGenRecords(media, fsUuid)) if (r && (!best || r.generation > best.generation)) best = r;
  if (!best || best.generation === 0) return { ...GENERATION_ZERO, altOffset: best?.altOffset ?? 0 };
  return { generation: best.generation, offset: best.region === 0 ? LOG_OFFSET : best.altOffset, altOffset: best.altOffset };
}

/** The commit point of a compaction: one 64-byte record, flushed. */
export function writeLogGenRecord(media: Media, r: LogGenRecord): void {
  const at = LOG_GEN_OFFSET + (r.generation % LOG_GEN.COUNT) * LOG_GEN.SIZE;
  media.write(at, encodeLogGenRecord(r));
  media.flush(at, LOG_GEN.SIZE);
}

/** mkfs: forget every generation of an earlier file system on this device. */
export function clearLogGenRecords(media: Media): void {
  const len = LOG_GEN.SIZE * LOG_GEN.COUNT;
  media.write(LOG_GEN_OFFSET, Buffer.alloc(len));
  media.flush(LOG_GEN_OFFSET, len);
}
