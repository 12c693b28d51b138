/**
 * Which log region is in use (famfs-csi extension revision 2, online compaction).
 *
 * Generation 0 is famfs' own log at LOG_OFFSET. Each compaction writes the live set into the other
 * region and then publishes the next generation in the log generation record of that parity (see
 * layout.ts). Readers pick the highest valid record, read the log, and look again afterwards: if
 * the generation moved while they read, what they read may be a region being rewritten, so they
 * drop it and replay the new generation instead (a sequence lock; the master never writes a region
 * before the generation that last used it has been superseded).
 *
 * A record that is not valid is either a switch torn by a crash (the older generation is current
 * and whole) or the newest record damaged afterwards (the older generation's region is superseded:
 * the master appended to the newer one since, and may be rewriting the older one). The
 * committed-generation line (layout.ts) tells the two apart; when nothing does, readers refuse
 * instead of falling back to an older region, and `famfs repair` rebuilds the records.
 */
import { FamfsError } from './errors';
import {
  decodeLogGenCommit,
  decodeLogGenRecord,
  encodeLogGenCommit,
  encodeLogGenRecord,
  LOG_GEN,
  LOG_GEN_COMMIT,
  LOG_GEN_COMMIT_OFFSET,
  LOG_GEN_OFFSET,
  LOG_OFFSET,
  LogGenCommit,
  LogGenRecord,
} from './layout';
import { Media } from './media';

export interface ActiveLog {
  generation: number;
  /** Device offset of the log header of this generation. */
  offset: number;
  /** Device offset of the second region, 0 while none was ever allocated. */
  altOffset: number;
}

export const GENERATION_ZERO: ActiveLog = { generation: 0, offset: LOG_OFFSET, altOffset: 0 };

/** What a 64-byte record or line holds: valid for this file system, all zero, another file system's, or damage. */
export type GenSlot = { state: 'valid'; record: LogGenRecord } | { state: 'empty' } | { state: 'foreign' } | { state: 'damaged' };
export type CommitLine = { state: 'valid'; line: LogGenCommit } | { state: 'empty' } | { state: 'foreign' } | { state: 'damaged' };

export interface GenerationState {
  slots: GenSlot[];
  commit: CommitLine;
  /** The log in use, when the records (and the committed-generation line) prove it. */
  active?: ActiveLog;
  /** Why the log in use cannot be told; set exactly when `active` is not. */
  problem?: string;
  /** Damage that does not hide the log in use (fsck warns; repair and the next master clear it). */
  notes: string[];
}

/** What to do when the log in use cannot be told (every reader's error ends with it). */
export const GENERATION_REPAIR_HINT =
  'nothing was read from or written to the log; run famfs fsck, then famfs repair on the master (it rebuilds the generation records from the log regions)';

const allZero = (b: Buffer) => b.every((x) => x === 0);

function readSlot(raw: Buffer, i: number, fsUuid: string): GenSlot {
  if (allZero(raw)) return { state: 'empty' };
  const r = decodeLogGenRecord(raw);
  // A record of another file system (famfs' mkfs -f never clears these bytes) is not ours to believe.
  if (r) return r.fsUuid !== fsUuid ? { state: 'foreign' } : r.generation % LOG_GEN.COUNT === i ? { state: 'valid', record: r } : { state: 'damaged' };
  return { state: 'damaged' };
}

function readLine(raw: Buffer, fsUuid: string): CommitLine {
  if (allZero(raw)) return { state: 'empty' };
  const c = decodeLogGenCommit(raw);
  if (c) return c.fsUuid === fsUuid ? { state: 'valid', line: c } : { state: 'foreign' };
  return { state: 'damaged' };
}

/** Both records and the committed-generation line, and what they prove about the log in use. */
export function inspectGenerations(media: Media, fsUuid: string): GenerationState {
  const len = LOG_GEN.SIZE * LOG_GEN.COUNT + LOG_GEN_COMMIT.SIZE;
  media.invalidate(LOG_GEN_OFFSET, len);
  const raw = media.read(LOG_GEN_OFFSET, len);
  // Read before and after every catch-up, changed only by a compaction: the same bytes (and file
  // system) give the same answer, so one memcmp replaces three CRCs and UUID conversions.
  if (lastState !== undefined && lastState.fsUuid === fsUuid && raw.equals(lastState.raw)) return copyState(lastState.state);
  const slots: GenSlot[] = [];
  for (let i = 0; i < LOG_GEN.COUNT; i++) slots.push(readSlot(raw.subarray(i * LOG_GEN.SIZE, (i + 1) * LOG_GEN.SIZE), i, fsUuid));
  const commit = readLine(raw.subarray(LOG_GEN_COMMIT_OFFSET - LOG_GEN_OFFSET, len), fsUuid);
  const state: GenerationState = { slots, commit, ...decide(slots, commit) };
  lastState = { raw: Buffer.from(raw), fsUuid, state: copyState(state) };
  return state;
}

/** What inspectGenerations last decided: the bytes, the file system asked about, the answer. */
let lastState: { raw: Buffer; fsUuid: string; state: GenerationState } | undefined;

function copyState(s: GenerationState): GenerationState {
  return {
    slots: s.slots.map((x) => (x.state === 'valid' ? { state: 'valid', record: { ...x.record } } : { ...x })),
    commit: s.commit.state === 'valid' ? { state: 'valid', line: { ...s.commit.line } } : { ...s.commit },
    ...(s.active ? { active: { ...s.active } } : {}),
    ...(s.problem !== undefined ? { problem: s.problem } : {}),
    notes: [...s.notes],
  };
}

function decide(slots: GenSlot[], commit: CommitLine): { active?: ActiveLog; problem?: string; notes: string[] } {
  const notes: string[] = [];
  let best: LogGenRecord | undefined;
  for (const s of slots) if (s.state === 'valid' && (!best || s.record.generation > best.generation)) best = s.record;
  const line = commit.state === 'valid' ? commit.line.generation : undefined;
  const lineWhy =
    commit.state === 'damaged'
      ? 'the committed-generation line is damaged too'
      : 'no committed-generation line says which generation was committed last (the device was compacted by an earlier release)';
  if (commit.state === 'damaged') notes.push('the committed-generation line is damaged (famfs repair, or the next master, rewrites it)');
  if (best) {
    const i = (best.generation + 1) % LOG_GEN.COUNT;
    const other = slots[i];
    const active: ActiveLog =
      best.generation === 0
        ? { ...GENERATION_ZERO, altOffset: best.altOffset }
        : { generation: best.generation, offset: best.region === 0 ? LOG_OFFSET : best.altOffset, altOffset: best.altOffset };
    if (line !== undefined && line > best.generation) {
      return {
        notes,
        problem:
          `log generation ${line} was committed (the committed-generation line says so) but the newest valid generation record is ${best.generation} ` +
          `(record ${i} is ${other.state}): generation ${best.generation}'s log region is superseded and may be being rewritten`,
      };
    }
    if (other.state !== 'damaged') return { active, notes };
    if (line !== undefined) {
      notes.push(
        `log generation record ${i} is damaged; no generation above ${best.generation} was ever committed (a switch torn by a crash), so generation ${best.generation} is current`,
      );
      return { active, notes };
    }
    return {
      notes,
      problem:
        `log generation record ${i} is damaged and ${lineWhy}: it may have held generation ${best.generation + 1}, ` +
        `in which case generation ${best.generation}'s log region is superseded`,
    };
  }
  const damaged = slots.map((s, i) => (s.state === 'damaged' ? i : -1)).filter((i) => i >= 0);
  if (line !== undefined && line > 0) {
    return {
      notes,
      problem: `no valid log generation record, but generation ${line} was committed (the committed-generation line says so): generation 0's log region is superseded`,
    };
  }
  if (line === 0) {
    // A first compaction was started and none was committed: famfs' log is current and whole.
    if (damaged.length > 0)
      notes.push(`log generation record${damaged.length > 1 ? 's' : ''} ${damaged.join(' and ')} damaged; no compaction was ever committed`);
    return { active: GENERATION_ZERO, notes };
  }
  if (damaged.length === 0 && commit.state !== 'damaged') return { active: GENERATION_ZERO, notes }; // never compacted
  return {
    notes,
    problem:
      damaged.length > 0
        ? `log generation record${damaged.length > 1 ? 's' : ''} ${damaged.join(' and ')} damaged and ${lineWhy}: a compacted generation may be current, and generation 0's log region superseded`
        : "no valid log generation record and the committed-generation line is damaged: a compacted generation may be current, and generation 0's log region superseded",
  };
}

/** Both records as stored (undefined where a record is empty, torn or foreign). */
export function readLogGenRecords(media: Media, fsUuid: string): (LogGenRecord | undefined)[] {
  return inspectGenerations(media, fsUuid).slots.map((s) => (s.state === 'valid' ? s.record : undefined));
}

/**
 * The current generation: the highest valid record, or generation 0 when no compaction was ever
 * committed. Throws ECORRUPT when the records do not prove which one is current (never falls back
 * to a region that may be superseded).
 */
export function readActiveLog(media: Media, fsUuid: string): ActiveLog {
  const s = inspectGenerations(media, fsUuid);
  if (!s.active) throw new FamfsError('ECORRUPT', `${s.problem}; ${GENERATION_REPAIR_HINT}`);
  return s.active;
}

/** The commit point of a compaction: one 64-byte record, flushed. */
export function writeLogGenRecord(media: Media, r: LogGenRecord): void {
  const at = LOG_GEN_OFFSET + (r.generation % LOG_GEN.COUNT) * LOG_GEN.SIZE;
  media.write(at, encodeLogGenRecord(r));
  media.flush(at, LOG_GEN.SIZE);
}

/** The committed-generation line, flushed (written by the master only; see layout.ts). */
export function writeLogGenCommit(media: Media, c: LogGenCommit): void {
  media.write(LOG_GEN_COMMIT_OFFSET, encodeLogGenCommit(c));
  media.flush(LOG_GEN_COMMIT_OFFSET, LOG_GEN_COMMIT.SIZE);
}

/** Zero one generation record (repair: a damaged record that proves nothing). */
export function clearLogGenRecord(media: Media, slot: number): void {
  const at = LOG_GEN_OFFSET + slot * LOG_GEN.SIZE;
  media.write(at, Buffer.alloc(LOG_GEN.SIZE));
  media.flush(at, LOG_GEN.SIZE);
}

/** mkfs: forget every generation of an earlier file system on this device (records and line). */
export function clearLogGenRecords(media: Media): void {
  const len = LOG_GEN.SIZE * LOG_GEN.COUNT + LOG_GEN_COMMIT.SIZE;
  media.write(LOG_GEN_OFFSET, Buffer.alloc(len));
  media.flush(LOG_GEN_OFFSET, len);
}
