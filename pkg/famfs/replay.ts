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
  crc,
  decodeEntry,
  decodeEntryAt,
  decodeLogHeader,
  EntryDecodeError,
  entryOffset,
  LE,
  LogEntry,
  LogHeader,
  LH,
  logCapacity,
  SeqWindow,
  validateLogHeader,
} from './layout';
import { crcSlots } from './crc-slots';
import { decodeSlots, nativeDecodeAvailable } from './decode-batch';
import { ActiveLog, GENERATION_ZERO } from './generation';
import { Media, readFresh } from './media';
import { FamfsTree, TreeChange } from './tree';

export interface ReplayStop {
  index: number;
  reason: string;
}

/** A log entry this reader had replayed whose bytes are no longer what it replayed. */
export interface RewrittenEntry {
  /** Log index of the entry that was replayed there. */
  index: number;
  /** Slot of the current log generation it sits in (= index until a compaction). */
  slot: number;
  /** CRC field of the entry when it was replayed. */
  replayedCrc: number;
  /** CRC of the slot's bytes now. */
  nowCrc: number;
  /** Whether the slot now holds a valid entry (rewritten by a writer) or damage. */
  nowValid: boolean;
}

export interface CatchUpResult {
  /** Log index after the last entry the header says exists (its next_seqnum). */
  headerNextIndex: number;
  /** First index not applied yet (== headerNextIndex unless replay stopped). */
  nextIndex: number;
  changes: TreeChange[];
  stop?: ReplayStop;
  /**
   * The log generation is not the tree's (a compaction switched logs): nothing was applied, the
   * caller replays the new generation into a fresh tree (FamfsFs does, and reports the difference).
   */
  generationChanged?: boolean;
  /** Set by FamfsFs when this catch-up moved the tree to a new log generation. */
  newGeneration?: number;
  /** Replayed entries found rewritten by this call (see LogReader.watchRewrites). */
  rewritten: RewrittenEntry[];
  /** The log header this catch-up read (set when it read one of the tree's generation). */
  header?: LogHeader;
}

/** Replayed entries re-read on every catch-up: the newest ones, where a lowered counter lets a master write. */
const VERIFY_TAIL = 32;
/** Older replayed entries re-read per catch-up, round-robin, so a rewrite anywhere is found within a bounded number of polls. */
const VERIFY_SWEEP = 128;

/** What lies past next_index: valid entries that follow it directly, and the first non-empty slot after those. */
export interface PastEndScan {
  /** Valid entries at next_index, next_index+1, ... (an interrupted append, or a counter that went backwards). */
  valid: number;
  /** First slot after those valid entries that is not all zero (a gap: replay could never reach it). */
  nonEmptyAt?: number;
}

/**
 * Where LogReader.walk puts the slots it validated, in log order. `batch` (when given) takes as
 * many valid slots from the start of `raw` as it can, moves `window.min` past the last one it
 * took, and returns how many it took; `one` takes each entry decodeEntryAt decoded.
 */
export interface SlotSink {
  batch?: (raw: Buffer, count: number, firstSlot: number, deletesAllowed: boolean, window: SeqWindow | undefined) => number;
  /**
   * Like batch, reading the `count` slots at device offset `offset` itself (invalidated first)
   * from the addon's device object behind the medium; walk reads what it leaves.
   */
  device?: (device: object, offset: number, count: number, firstSlot: number, deletesAllowed: boolean, window: SeqWindow | undefined) => number;
  one: (e: LogEntry) => void;
}

/** Entries read per device access during replay (1 MiB of log). */
const CHUNK_ENTRIES = 1927;
const ZERO_CHUNK = Buffer.alloc(CHUNK_ENTRIES * LE.SIZE);

export class LogReader {
  private readonly scratch = Buffer.allocUnsafe(CHUNK_ENTRIES * LE.SIZE);
  /** A delete entry was accepted (so the superblock enables them): the native decoder takes deletes too. */
  private deletesSeen = false;
  /** The log generation being read (see generation.ts); generation 0 is famfs' log. */
  private active: ActiveLog = GENERATION_ZERO;
  /** CRC field and log index of every entry applied to the tree, by slot (kept only when watching rewrites). */
  private replayedCrcs: number[] = [];
  private replayedIndexes: number[] = [];
  /** Generation the recorded CRCs belong to: a compaction starts a new record. */
  private recordedGeneration = -1;
  private sweepAt = 0;
  /** Replayed entries that differ from what was replayed, by slot (reported once per content; dropped when restored). */
  readonly rewritten = new Map<number, RewrittenEntry>();
  /**
   * Keep what identifies each replayed entry and re-read some on every catch-up: a host must
   * notice when a writer overwrote an entry it had replayed (a master that trusted a lowered
   * next_index), because its files may now sit on memory another file was given.
   */
  watchRewrites = false;

  /**
   * `locate` says which log generation is current. It is asked before and after each catch-up;
   * a reader that cannot have compacted logs (no extension revision 2) passes none.
   */
  constructor(
    private readonly media: Media,
    private readonly logLen: number,
    private readonly extended: () => boolean,
    private readonly locate?: () => ActiveLog,
  ) {
    if (locate) this.active = locate();
  }

  get activeLog(): ActiveLog {
    return this.active;
  }

  /** Look at the generation records again (a replay of a new generation starts with this). */
  relocate(): ActiveLog {
    if (this.locate) this.active = this.locate();
    return this.active;
  }

  /** Fresh header (invalidated first); throws ECORRUPT with every problem found. */
  header(): LogHeader {
    const at = this.active.offset;
    const compacted = this.active.generation > 0;
    // A writer reads the header several times per append (catch-up, room check, append): the same
    // bytes validate and decode the same way, so a memcmp answers the repeats (read into a
    // scratch buffer: no allocation either).
    const last = this.lastHeader;
    let raw: Buffer;
    if (this.media.readInto !== undefined || this.media.readFresh !== undefined) {
      readFresh(this.media, at, this.headerScratch);
      if (last !== undefined && last.compacted === compacted && this.headerScratch.equals(last.raw)) return { ...last.header };
      raw = Buffer.from(this.headerScratch);
    } else {
      this.media.invalidate(at, LH.SIZE);
      raw = this.media.read(at, LH.SIZE);
    }
    if (last !== undefined && last.compacted === compacted && raw.equals(last.raw)) return { ...last.header };
    const problems = validateLogHeader(raw, this.logLen, compacted);
    if (problems.length)
      throw new FamfsError('ECORRUPT', `famfs log header${compacted ? ` (generation ${this.active.generation})` : ''}: ${problems.join('; ')}`);
    const header = decodeLogHeader(raw);
    this.lastHeader = { raw, compacted, header: { ...header } };
    return header;
  }

  private readonly headerScratch = Buffer.alloc(LH.SIZE);

  /**
   * This process just published `counters` (next_seqnum, next_index: LH.nextSeqnum..+16) over the
   * header it last read: that header with them is what the next read finds, unless someone
   * changed it since (then the bytes differ and it is validated as usual). Spares the writer a
   * full validation after each of its own appends.
   */
  notePublished(counters: Buffer): void {
    const last = this.lastHeader;
    if (last === undefined || counters.length !== 16) return;
    // In place: header() hands out copies of last.header, and last.raw is this reader's own.
    counters.copy(last.raw, LH.nextSeqnum);
    last.header.nextSeqnum = counters.readUInt32LE(4) * 0x100000000 + counters.readUInt32LE(0);
    last.header.nextIndex = counters.readUInt32LE(12) * 0x100000000 + counters.readUInt32LE(8);
  }
  /** The header bytes header() last validated, and what they decoded to. */
  private lastHeader: { raw: Buffer; compacted: boolean; header: LogHeader } | undefined;

  /**
   * Read and validate slots [from, to). Returns those that are good up to the first bad one,
   * which is retried once after an invalidate. `seq` bounds the log indexes of a compacted
   * generation (slot `from` holds an index >= seq.min; each slot's is above the previous one's).
   */
  entries(from: number, to: number, seq?: SeqWindow): { entries: LogEntry[]; stop?: ReplayStop } {
    const entries: LogEntry[] = [];
    const sink: SlotSink = {
      one: (e) => entries.push(e),
      batch: nativeDecodeAvailable()
        ? (raw, count, firstSlot, deletesAllowed, window) => {
            const batch = decodeSlots(raw, count, firstSlot, deletesAllowed, window) ?? [];
            for (const e of batch) {
              entries.push(e);
              if (window) window.min = e.index + 1;
            }
            return batch.length;
          }
        : undefined,
    };
    const stop = this.walk(from, to, seq, sink);
    return stop ? { entries, stop } : { entries };
  }

  /**
   * entries() into a sink instead of an array (fsck's native log tree takes the slots without a
   * JavaScript object per entry). Returns where replay stops, if it does.
   */
  walk(from: number, to: number, seq: SeqWindow | undefined, sink: SlotSink): ReplayStop | undefined {
    const compacted = this.active.generation > 0;
    const window = compacted ? { min: seq?.min ?? 0, max: seq?.max ?? Number.MAX_SAFE_INTEGER } : undefined;
    const device = sink.device && this.media.nativeHandle;
    for (let chunkStart = from; chunkStart < to; chunkStart += CHUNK_ENTRIES) {
      const chunkEnd = Math.min(chunkStart + CHUNK_ENTRIES, to);
      // Straight from the mapping first (no copy of the chunk); the slots it leaves are read here.
      const start = device
        ? chunkStart + sink.device!(device, this.active.offset + entryOffset(chunkStart), chunkEnd - chunkStart, chunkStart, this.deletesSeen, window)
        : chunkStart;
      if (start >= chunkEnd) continue;
      const n = chunkEnd - start;
      const base = this.active.offset + entryOffset(start);
      this.media.invalidate(base, n * LE.SIZE);
      const raw = this.readChunk(base, n * LE.SIZE);
      // The valid entries in one native call; a slot it leaves (damage, or an entry it does not
      // take) goes to decodeEntryAt, which decodes it or says why not (decode-batch.ts).
      const batch = sink.batch;
      const crcs = batch ? undefined : crcSlots(raw, n, LE.SIZE, LE.crc);
      for (let k = 0; k < n; k++) {
        if (batch) {
          k += batch(k === 0 ? raw : raw.subarray(k * LE.SIZE), n - k, start + k, this.deletesSeen, window);
          if (k >= n) break;
        }
        const i = start + k;
        let e: LogEntry;
        try {
          e = decodeEntryAt(raw, k * LE.SIZE, i, this.extended, window, crcs?.[k]);
        } catch (first) {
          if (!(first instanceof EntryDecodeError)) throw first;
          // A stale or half-seen line: drop it and look once more before calling the entry bad.
          const at = this.active.offset + entryOffset(i);
          this.media.invalidate(at, LE.SIZE);
          try {
            e = decodeEntry(this.media.read(at, LE.SIZE), i, this.extended, window);
          } catch (second) {
            if (!(second instanceof EntryDecodeError)) throw second;
            return { index: i, reason: second.reason };
          }
        }
        // decodeEntryAt returns a delete only when the superblock enables them: from now on the
        // native decoder may take them too (the extension is never switched off).
        if (e.body.type === 'delete') this.deletesSeen = true;
        sink.one(e);
        if (window) window.min = e.index + 1;
      }
    }
    return undefined;
  }

  /**
   * Look at every slot from `from` to the end of the log: how many valid entries follow `from`
   * directly, and whether anything but zeros comes after them. Reads the whole tail once (a master
   * does this before its first append, not on every append). In a compacted generation, slot
   * `from + k` counts only if it holds log index `nextSeqnum + k` (what an append would write).
   */
  scanPastEnd(from: number, nextSeqnum = from): PastEndScan {
    const cap = logCapacity(this.logLen);
    const compacted = this.active.generation > 0;
    let valid = 0;
    let scanning = true;
    for (let chunkStart = from; chunkStart < cap; chunkStart += CHUNK_ENTRIES) {
      const n = Math.min(CHUNK_ENTRIES, cap - chunkStart);
      const base = this.active.offset + entryOffset(chunkStart);
      this.media.invalidate(base, n * LE.SIZE);
      const raw = this.readChunk(base, n * LE.SIZE);
      // Once past the valid entries, a chunk of zeros (the usual case: the rest of the log) is one
      // native compare instead of a loop over every byte.
      if (!scanning && raw.equals(ZERO_CHUNK.subarray(0, n * LE.SIZE))) continue;
      for (let k = 0; k < n; k++) {
        const i = chunkStart + k;
        if (scanning) {
          try {
            const want = nextSeqnum + (i - from);
            decodeEntryAt(raw, k * LE.SIZE, i, this.extended, compacted ? { min: want, max: want + 1 } : undefined);
            valid++;
            continue;
          } catch (e) {
            if (!(e instanceof EntryDecodeError)) throw e;
            scanning = false;
          }
        }
        const o = k * LE.SIZE;
        if (!raw.subarray(o, o + LE.SIZE).equals(ZERO_CHUNK.subarray(0, LE.SIZE))) return { valid, nonEmptyAt: i };
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

  /**
   * Apply every entry the tree has not seen yet. Idempotent; safe to call at any rate. When the
   * log generation is not the tree's, nothing is applied and `generationChanged` is set.
   * Without `collectChanges` the result's changes stay empty (a first replay nobody watched).
   */
  catchUp(tree: FamfsTree, collectChanges = true): CatchUpResult {
    const quick = this.watchRewrites ? undefined : this.nothingNew(tree);
    if (quick !== undefined) return quick;
    this.relocate();
    const unchanged = { headerNextIndex: tree.nextIndex, nextIndex: tree.nextIndex, changes: [] as TreeChange[], rewritten: [] as RewrittenEntry[] };
    if (this.active.generation !== tree.generation) return { ...unchanged, generationChanged: true };
    // A header that does not fit this generation, or one behind what the tree replayed, is damage
    // only if the generation did not change since we located the log: two compactions since then
    // (a stalled host) put the next generation's header and entries in the region we read.
    const moved = (): boolean => this.locate !== undefined && this.relocate().generation !== tree.generation;
    let h: LogHeader;
    try {
      h = this.header();
    } catch (e) {
      if (moved()) return { ...unchanged, generationChanged: true };
      throw e;
    }
    // Before anything else: a counter that went backwards is exactly when entries get rewritten.
    const check = this.watchRewrites && this.recordedGeneration === tree.generation ? this.verifyReplayed(tree.slot) : undefined;
    // What the check saw counts only if no compaction switched generations meanwhile (the master
    // rewrites a region only after publishing the next generation: the same sequence lock as below).
    const settle = (): RewrittenEntry[] => {
      if (!check) return [];
      if (this.locate && this.relocate().generation !== tree.generation) return [];
      for (const slot of check.restored) this.rewritten.delete(slot);
      for (const r of check.found) this.rewritten.set(r.slot, r);
      return check.found;
    };
    if (h.nextIndex < tree.slot) {
      if (moved()) return { ...unchanged, generationChanged: true };
      settle();
      throw new FamfsError(
        'ECORRUPT',
        `famfs log went backwards: header says ${h.nextIndex} entries, ${tree.slot} were already replayed (was the device re-made? remount)`,
      );
    }
    const fromSlot = tree.slot;
    // A first replay nobody watches goes through the native log tree, slots straight into it.
    const bulk = collectChanges ? undefined : tree.nativeSink(h.nextIndex - tree.slot);
    if (bulk !== undefined) {
      let stop: ReplayStop | undefined;
      try {
        stop = this.walk(tree.slot, h.nextIndex, { min: tree.nextIndex, max: h.nextSeqnum }, bulk);
      } catch (e) {
        // Entries applied as they are read: a region rewritten under us (the sequence lock below)
        // can make the tree refuse one. The caller replays the new generation into a fresh tree.
        if (moved()) return { ...unchanged, generationChanged: true };
        throw e;
      }
      // Sequence lock, as below: what was applied is from a region that may have been rewritten;
      // the caller replaces this tree with a replay of the new generation.
      if (this.locate && this.relocate().generation !== tree.generation) return { ...unchanged, generationChanged: true };
      const rewritten = settle();
      if (this.watchRewrites) this.noteReplayed(tree.generation, fromSlot, tree.slotIndexes.slice(fromSlot));
      if (!stop) tree.nextIndex = Math.max(tree.nextIndex, h.nextSeqnum);
      return { headerNextIndex: h.nextSeqnum, nextIndex: tree.nextIndex, changes: [], stop, rewritten, header: h };
    }
    const { entries, stop } = this.entries(tree.slot, h.nextIndex, { min: tree.nextIndex, max: h.nextSeqnum });
    // Sequence lock: a compaction that switched generations while we read may have been
    // rewriting the region we read. Apply nothing; the caller replays the new generation.
    if (this.locate && this.relocate().generation !== tree.generation) return { ...unchanged, generationChanged: true };
    const rewritten = settle();
    const changes: TreeChange[] = [];
    for (const e of entries) {
      const c = tree.apply(e);
      if (c && collectChanges) changes.push(c);
    }
    if (this.watchRewrites)
      this.noteReplayed(
        tree.generation,
        fromSlot,
        entries.map((e) => e.index),
      );
    // A compacted log may end with indexes whose entries were dropped: the tree is at the
    // header's next index all the same (that is what a host acknowledges).
    if (!stop) tree.nextIndex = Math.max(tree.nextIndex, h.nextSeqnum);
    return { headerNextIndex: h.nextSeqnum, nextIndex: tree.nextIndex, changes, stop, rewritten, header: h };
  }

  /**
   * The catch-up of a log nothing was appended to since the tree's last entry (a writer asks
   * several times per append), or undefined for the long way (anything else, errors included).
   * No entry is read, so there is nothing for the sequence lock to guard, and the tree's index
   * does not move; hosts that watch for rewrites never come here.
   */
  private nothingNew(tree: FamfsTree): CatchUpResult | undefined {
    this.relocate();
    if (this.active.generation !== tree.generation) return undefined;
    let h: LogHeader;
    try {
      h = this.header();
    } catch {
      return undefined; // the long way reads it again and says why
    }
    if (h.nextIndex !== tree.slot || h.nextSeqnum !== tree.nextIndex) return undefined;
    return { headerNextIndex: tree.nextIndex, nextIndex: tree.nextIndex, changes: [], rewritten: [], header: h };
  }

  /** Record the CRC fields of the entries just applied from slot `from` (their log indexes; read once more: they are in cache). */
  private noteReplayed(generation: number, from: number, indexes: readonly number[]): void {
    if (generation !== this.recordedGeneration) {
      this.recordedGeneration = generation;
      this.replayedCrcs = [];
      this.replayedIndexes = [];
      this.rewritten.clear();
      this.sweepAt = 0;
    }
    if (indexes.length === 0) return;
    const raw = this.media.read(this.active.offset + entryOffset(from), indexes.length * LE.SIZE);
    this.replayedCrcs.length = from;
    this.replayedIndexes.length = from;
    indexes.forEach((index, k) => {
      this.replayedCrcs.push(raw.readUInt32LE(k * LE.SIZE + LE.crc));
      this.replayedIndexes.push(index);
    });
  }

  /**
   * Compare replayed entries (slots below `slots`) with the device: the newest VERIFY_TAIL every
   * time, and VERIFY_SWEEP older ones round-robin. A mismatch is read again past any stale line
   * before it counts.
   */
  private verifyReplayed(slots: number): { found: RewrittenEntry[]; restored: number[] } {
    const n = Math.min(slots, this.replayedCrcs.length);
    const found: RewrittenEntry[] = [];
    const restored: number[] = [];
    if (n === 0) return { found, restored };
    const check = (from: number, to: number) => {
      if (to <= from) return;
      const base = this.active.offset + entryOffset(from);
      this.media.invalidate(base, (to - from) * LE.SIZE);
      const raw = this.media.read(base, (to - from) * LE.SIZE);
      for (let i = from; i < to; i++) {
        const want = this.replayedCrcs[i];
        // Same CRC field and bytes that still match it: the entry we replayed.
        const same = (b: Buffer, o: number) => b.readUInt32LE(o + LE.crc) === want && b.readUInt32LE(o + LE.crc + 4) === 0 && crc(b, o, o + LE.crc) === want;
        if (same(raw, (i - from) * LE.SIZE)) {
          // Back to what we replayed (repair restored it): no longer a discrepancy.
          if (this.rewritten.has(i)) restored.push(i);
          continue;
        }
        const at = this.active.offset + entryOffset(i);
        this.media.invalidate(at, LE.SIZE);
        const again = this.media.read(at, LE.SIZE);
        if (same(again, 0)) {
          if (this.rewritten.has(i)) restored.push(i);
          continue;
        }
        const nowCrc = crc(again, 0, LE.crc);
        if (this.rewritten.get(i)?.nowCrc === nowCrc) continue;
        let nowValid = true;
        try {
          decodeEntry(again, i, this.extended);
        } catch {
          nowValid = false;
        }
        found.push({ index: this.replayedIndexes[i], slot: i, replayedCrc: want, nowCrc, nowValid });
      }
    };
    const tail = Math.max(0, n - VERIFY_TAIL);
    check(tail, n);
    if (tail > 0) {
      if (this.sweepAt >= tail) this.sweepAt = 0;
      const end = Math.min(tail, this.sweepAt + VERIFY_SWEEP);
      check(this.sweepAt, end);
      this.sweepAt = end;
    }
    return { found, restored };
  }
}
