/**
 * Reading the log from memory that other hosts write.
 *
 * The writer flushes the entry before the header counters, but nothing orders what *we* see:
 * our CPU may still hold stale lines. So every read is preceded by an invalidate of exactly the
 * lines read, and an entry that fails validation is invalidated and read once more before replay
 * gives up at it (the famfs rule: the first bad entry stops replay; the next catch-up retries).
 */
import { FamfsError } from './errors';
import {
  decodeEntry,
  decodeEntryAt,
  decodeLogHeader,
  EntryDecodeError,
  entryOffset,
  LE,
  LogEntry,
  LogHeader,
  LOG_OFFSET,
  LH,
  logCapacity,
  validateLogHeader,
} from './layout';
import { Media } from './media';
import { FamfsTree, TreeChange } from './tree';

export interface ReplayStop {
  index: number;
  reason: string;
}

export interface CatchUpResult {
  /** Entries the header says exist. */
  headerNextIndex: number;
  /** First index not applied yet (== headerNextIndex unless replay stopped). */
  nextIndex: number;
  changes: TreeChange[];
  stop?: ReplayStop;
}

/** What lies past next_index: valid entries that follow it directly, and the first non-empty slot after those. */
export interface PastEndScan {
  /** Valid entries at next_index, next_index+1, ... (an interrupted append, or a counter that went backwards). */
  valid: number;
  /** First slot after those valid entries that is not all zero (a gap: replay could never reach it). */
  nonEmptyAt?: number;
}

/** Entries read per device access during replay (1 MiB of log). */
const CHUNK_ENTRIES = 1927;

export class LogReader {
  private readonly scratch = Buffer.allocUnsafe(CHUNK_ENTRIES * LE.SIZE);

  constructor(
    private readonly media: Media,
    private readonly logLen: number,
    private readonly extended: () => boolean,
  ) {}

  /** Fresh header (invalidated first); throws ECORRUPT with every problem found. */
  header(): LogHeader {
    this.media.invalidate(LOG_OFFSET, LH.SIZE);
    const raw = this.media.read(LOG_OFFSET, LH.SIZE);
    const problems = validateLogHeader(raw, this.logLen);
    if (problems.length) throw new FamfsError('ECORRUPT', `famfs log header: ${problems.join('; ')}`);
    return decodeLogHeader(raw);
  }

  /**
   * Read and validate entries [from, to). Returns those that are good up to the first bad one,
   * which is retried once after an invalidate.
   */
  entries(from: number, to: number): { entries: LogEntry[]; stop?: ReplayStop } {
    const entries: LogEntry[] = [];
    for (let chunkStart = from; chunkStart < to; chunkStart += CHUNK_ENTRIES) {
      const n = Math.min(CHUNK_ENTRIES, to - chunkStart);
      const base = LOG_OFFSET + entryOffset(chunkStart);
      this.media.invalidate(base, n * LE.SIZE);
      const raw = this.readChunk(base, n * LE.SIZE);
      for (let k = 0; k < n; k++) {
        const i = chunkStart + k;
        try {
          entries.push(decodeEntryAt(raw, k * LE.SIZE, i, this.extended));
        } catch (first) {
          if (!(first instanceof EntryDecodeError)) throw first;
          // A stale or half-seen line: drop it and look once more before calling the entry bad.
          const at = LOG_OFFSET + entryOffset(i);
          this.media.invalidate(at, LE.SIZE);
          try {
            entries.push(decodeEntry(this.media.read(at, LE.SIZE), i, this.extended));
          } catch (second) {
            if (!(second instanceof EntryDecodeError)) throw second;
            return { entries, stop: { index: i, reason: second.reason } };
          }
        }
      }
    }
    return { entries };
  }

  /**
   * Look at every slot from `from` to the end of the log: how many valid entries follow `from`
   * directly, and whether anything but zeros comes after them. Reads the whole tail once (a master
   * does this before its first append, not on every append).
   */
  scanPastEnd(from: number): PastEndScan {
    const cap = logCapacity(this.logLen);
    let valid = 0;
    let scanning = true;
    for (let chunkStart = from; chunkStart < cap; chunkStart += CHUNK_ENTRIES) {
      const n = Math.min(CHUNK_ENTRIES, cap - chunkStart);
      const base = LOG_OFFSET + entryOffset(chunkStart);
      this.media.invalidate(base, n * LE.SIZE);
      const raw = this.readChunk(base, n * LE.SIZE);
      for (let k = 0; k < n; k++) {
        const i = chunkStart + k;
        if (scanning) {
          try {
            decodeEntryAt(raw, k * LE.SIZE, i, this.extended);
            valid++;
            continue;
          } catch (e) {
            if (!(e instanceof EntryDecodeError)) throw e;
            scanning = false;
          }
        }
        const o = k * LE.SIZE;
        for (let b = o; b < o + LE.SIZE; b++) if (raw[b] !== 0) return { valid, nonEmptyAt: i };
      }
    }
    return { valid };
  }

  /** Entries are decoded in place from one reused scratch buffer: no per-replay megabyte allocations. */
  private readChunk(offset: number, length: number): Buffer {
    if (!this.media.readInto) return this.media.read(offset, length);
    const view = this.scratch.subarray(0, length);
    this.media.readInto(offset, view);
    return view;
  }

  /** Apply every entry the tree has not seen yet. Idempotent; safe to call at any rate. */
  catchUp(tree: FamfsTree): CatchUpResult {
    const h = this.header();
    const changes: TreeChange[] = [];
    if (h.nextIndex < tree.nextIndex) {
      throw new FamfsError('ECORRUPT', `famfs log went backwards: header says ${h.nextIndex} entries, ${tree.nextIndex} were already replayed (was the device re-made? remount)`);
    }
    const { entries, stop } = this.entries(tree.nextIndex, h.nextIndex);
    for (const e of entries) {
      const c = tree.apply(e);
      if (c) changes.push(c);
    }
    return { headerNextIndex: h.nextIndex, nextIndex: tree.nextIndex, changes, stop };
  }
}
