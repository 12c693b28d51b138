/**
 * The famfs-csi extension block in shared memory: the writer fencing epoch and the hosts'
 * replay acknowledgements (design hazards 2 and 5).
 *
 * Every host owns one cache-line slot and writes only that line, so hosts never race on a line.
 * The master reads all slots to learn how far the slowest live host has replayed: memory
 * released by a delete at index D is reusable only once every live host acked an index > D.
 */
/**
 * The famfs-csi extension block in shared memory: the writer fencing epoch, the hosts' replay
 * acknowledgements (design hazards 2 and 5), and the master's liveness judgement (issue 11).
 *
 * Every host owns one cache-line slot and writes only that line, so hosts never race on a line.
 * The master reads all slots to learn how far the slowest live host has replayed: memory
 * released by a delete at index D is reusable only once every live host acked an index > D.
 *
 * One clock: no host's clock is ever compared with another's. A host bumps a counter in its slot
 * on every ack; the master notes, on its own monotonic clock, when it saw each slot change
 * (HostWatch), and a host is gone only after the master itself watched its slot unchanged for
 * `hostLiveMs`. The host fences itself earlier, by its own clock (fenceWindowMs): see
 * docs/format.md "One clock" for the arithmetic.
 */
import { randomInt } from 'crypto';
import { FamfsError } from './errors';
import {
  decodeEvictionRecord,
  decodeExtBlock,
  decodeHostSlot,
  DEFAULT_HOST_LIVE_MS,
  DEFAULT_HOST_SLOTS,
  encodeEvictionRecord,
  encodeExtBlock,
  encodeHostSlot,
  EVICT,
  EVICT_OFFSET,
  EVICT_RECORDS,
  EvictionRecord,
  EXT,
  EXT_AREA_SIZE,
  EXT_BLOCK_OFFSET,
  EXT_LIVE,
  EXT_REVISION,
  encodeLiveLine,
  ExtBlock,
  HOST_SLOT_SIZE,
  HOST_SLOTS_OFFSET,
  HostSlot,
  HS,
  CLEAN_MAP_OFFSET,
  EXT_REVISION_CLEAN_MAP,
  bytesToUuid,
} from './layout';
import { clearCleanMap } from './clean-map';
import { Media, readFresh } from './media';

/** Host slots end where the clean map (revision 4) begins. */
export const MAX_HOST_SLOTS = Math.floor((CLEAN_MAP_OFFSET - HOST_SLOTS_OFFSET) / HOST_SLOT_SIZE);

/**
 * Clock-rate error allowed between any two hosts' clocks and real time (1% = 10,000 ppm: 20x what
 * an NTP-disciplined clock may slew, 100x a free-running crystal's tolerance).
 */
export const CLOCK_RATE_ERROR = 0.01;
/** Shortest liveness window accepted: below it the fence slack leaves a host no time to serve. */
export const MIN_HOST_LIVE_MS = 200;

/**
 * Real time a request may take between its fence check and its last access to the memory, and an
 * ack's write may take to reach the memory: L/20, at least 10 ms, at most 1 s.
 */
export function fenceSlackMs(hostLiveMs: number): number {
  return Math.min(1000, Math.max(10, Math.ceil(hostLiveMs / 20)));
}

/**
 * How long, by its own clock, a host may serve data after reading that clock just before an ack:
 * F = (1 - r) * (L / (1 + r) - S), rounded down. The master waits L on its clock (at least
 * L/(1+r) real), the host stops after F on its clock (at most F/(1-r) real) and its last access
 * ends within S real, so F/(1-r) + S <= L/(1+r) always holds (docs/format.md "One clock").
 */
export function fenceWindowMs(hostLiveMs: number): number {
  const r = CLOCK_RATE_ERROR;
  return Math.max(0, Math.floor((1 - r) * (hostLiveMs / (1 + r) - fenceSlackMs(hostLiveMs))));
}

export function checkHostLiveMs(ms: number): number {
  if (!Number.isSafeInteger(ms) || ms < MIN_HOST_LIVE_MS || ms > 0xffffffff) {
    throw new FamfsError('EINVAL', `host liveness window ${ms} ms must be an integer ${MIN_HOST_LIVE_MS}..${0xffffffff} ms`);
  }
  return ms;
}

/** The block as it is on the device, whichever file system it belongs to (see readExtBlock). */
export function readAnyExtBlock(media: Media): ExtBlock | undefined {
  const b = sharedExtBlock(media);
  return b === undefined ? undefined : { ...b };
}

/**
 * The extension block of file system `fsUuid` as it is on the device now, read-only: the object
 * is shared with the next reads (no copy), for the fence check before every store.
 */
export function peekExtBlock(media: Media, fsUuid: string): Readonly<ExtBlock> | undefined {
  const b = sharedExtBlock(media);
  return b && b.fsUuid === fsUuid ? b : undefined;
}

/** Reads the block fresh; the object returned is the cached one (callers copy before changing it). */
function sharedExtBlock(media: Media): ExtBlock | undefined {
  // The block changes only when a master takes over, but writers read it before every append
  // (the fence check): the same bytes decode to the same block, so one memcmp replaces two CRCs
  // and two UUID conversions. Keyed by the bytes alone (decodeExtBlock depends on nothing else).
  // Read into a scratch buffer: a repeat allocates nothing.
  let raw: Buffer;
  if (media.readInto !== undefined || media.readFresh !== undefined) {
    readFresh(media, EXT_BLOCK_OFFSET, extScratch);
    if (lastExt !== undefined && extScratch.equals(lastExt.raw)) return lastExt.block;
    raw = Buffer.from(extScratch);
  } else {
    media.invalidate(EXT_BLOCK_OFFSET, EXT_AREA_SIZE);
    raw = media.read(EXT_BLOCK_OFFSET, EXT_AREA_SIZE);
  }
  if (lastExt !== undefined && raw.equals(lastExt.raw)) return lastExt.block;
  const block = decodeExtBlock(raw);
  lastExt = block === undefined ? undefined : { raw, block };
  return block;
}

/**
 * The EXT_AREA_SIZE bytes at EXT_BLOCK_OFFSET that decoded to `block` (an object peekExtBlock or
 * readAnyExtBlock's cache returned), or undefined when the cache moved on. Equal bytes decode to
 * the same block: a writer's fence check compares the device against them (FamfsFs).
 */
export function extBlockBytes(block: Readonly<ExtBlock>): Buffer | undefined {
  return lastExt !== undefined && lastExt.block === block ? lastExt.raw : undefined;
}

/** The bytes readAnyExtBlock last decoded into a block, and that block. */
let lastExt: { raw: Buffer; block: ExtBlock } | undefined;
const extScratch = Buffer.alloc(EXT_AREA_SIZE);

/**
 * The extension block of the file system whose superblock UUID is `fsUuid`. undefined when it was
 * never initialised or belongs to an earlier file system on the same device (famfs' own mkfs
 * leaves it behind): its epoch and host slots mean nothing here. Throws ECORRUPT when damaged.
 */
export function readExtBlock(media: Media, fsUuid: string): ExtBlock | undefined {
  const block = readAnyExtBlock(media);
  return block && block.fsUuid === fsUuid ? block : undefined;
}

/** The liveness line first, then the block's line: a block that says revision 3 has its line. */
export function writeExtBlock(media: Media, block: ExtBlock): void {
  media.write(EXT_LIVE.OFFSET, encodeLiveLine(block.hostLiveMs));
  media.flush(EXT_LIVE.OFFSET, EXT_LIVE.SIZE);
  media.write(EXT_BLOCK_OFFSET, encodeExtBlock(block));
  media.flush(EXT_BLOCK_OFFSET, EXT.SIZE);
}

/** Write a fresh block for file system `fsUuid` and clear every host slot and eviction record. */
export function initExtBlock(
  media: Media,
  fsUuid: string,
  masterUuid: string,
  nowMs: number,
  slotCount = DEFAULT_HOST_SLOTS,
  epoch = 1,
  hostLiveMs = DEFAULT_HOST_LIVE_MS,
): ExtBlock {
  if (slotCount < 1 || slotCount > MAX_HOST_SLOTS) throw new FamfsError('EINVAL', `host slot count ${slotCount} must be 1..${MAX_HOST_SLOTS}`);
  checkHostLiveMs(hostLiveMs);
  media.write(HOST_SLOTS_OFFSET, Buffer.alloc(slotCount * HOST_SLOT_SIZE));
  media.flush(HOST_SLOTS_OFFSET, slotCount * HOST_SLOT_SIZE);
  media.write(EVICT_OFFSET, Buffer.alloc(EVICT_RECORDS * EVICT.SIZE));
  media.flush(EVICT_OFFSET, EVICT_RECORDS * EVICT.SIZE);
  // Nothing is known clean for a new block: lines of an earlier file system would fail their CRC
  // anyway (it is bound to the UUID), but cleared lines read as "never written", not "damaged".
  clearCleanMap(media);
  const block: ExtBlock = { revision: EXT_REVISION, slotCount, epoch, masterUuid, fsUuid, epochTimeMs: nowMs, hostLiveMs };
  writeExtBlock(media, block);
  return block;
}

/**
 * Master only: bring a revision-2 block to revision 3 (the eviction ring was never written before
 * revision 3, so it is zeroed first) and raise the liveness window to `hostLiveMs` if that is
 * longer. The window is never lowered here: hosts armed their fence from the old value, and a
 * shorter wait could end before their fence does (make a new file system to shorten it).
 */
export function upgradeExtBlock(media: Media, block: ExtBlock, hostLiveMs?: number): ExtBlock {
  const live = Math.max(block.hostLiveMs, hostLiveMs === undefined ? 0 : checkHostLiveMs(hostLiveMs));
  if (block.revision === EXT_REVISION && live === block.hostLiveMs) return block;
  if (block.revision < 3) {
    media.write(EVICT_OFFSET, Buffer.alloc(EVICT_RECORDS * EVICT.SIZE));
    media.flush(EVICT_OFFSET, EVICT_RECORDS * EVICT.SIZE);
  }
  if (block.revision < EXT_REVISION_CLEAN_MAP) {
    // The clean map takes the end of the region host slots could once reach.
    if (block.slotCount > MAX_HOST_SLOTS) {
      throw new FamfsError(
        'EUNSUPPORTED',
        `${block.slotCount} host slots overlap the clean map of revision ${EXT_REVISION_CLEAN_MAP} (at most ${MAX_HOST_SLOTS})`,
      );
    }
    // Nothing was ever marked clean before revision 4: every unit starts dirty.
    clearCleanMap(media);
  }
  const next: ExtBlock = { ...block, revision: EXT_REVISION, hostLiveMs: live };
  writeExtBlock(media, next);
  return next;
}

/** Re-reads of a slot that fails its CRC before it counts as damaged (a host may be mid-write). */
const TORN_SLOT_RETRIES = 5;
const ZERO_LINE = Buffer.alloc(HOST_SLOT_SIZE);

/**
 * Decode slot `i` from `line`; a line that fails its CRC is re-read (its owner may be writing it).
 * One that stays damaged is returned as `damaged`, acked at index 0 and always live, so it holds
 * back all reclaim: ignoring it could hand a live host's memory to someone else. Its owner
 * rewrites it on its next ack; `famfs repair` clears it when the owner is gone. undefined: free.
 */
function slotAt(media: Media, i: number, first: Buffer): HostSlot | undefined {
  let line = first;
  if (line.equals(ZERO_LINE)) return undefined;
  let s = decodeHostSlot(line, i);
  for (let k = 0; !s && k < TORN_SLOT_RETRIES; k++) {
    const at = HOST_SLOTS_OFFSET + i * HOST_SLOT_SIZE;
    media.invalidate(at, HOST_SLOT_SIZE);
    line = media.read(at, HOST_SLOT_SIZE);
    if (line.equals(ZERO_LINE)) return undefined;
    s = decodeHostSlot(line, i);
  }
  return s ?? { slot: i, hostUuid: bytesToUuid(line.subarray(HS.hostUuid, HS.hostUuid + 16)), ackedIndex: 0, beat: 0, name: '(damaged slot)', damaged: true };
}

/** Every host slot in use (see slotAt for damaged slots). */
export function readHostSlots(media: Media, slotCount: number): HostSlot[] {
  const len = slotCount * HOST_SLOT_SIZE;
  media.invalidate(HOST_SLOTS_OFFSET, len);
  const raw = media.read(HOST_SLOTS_OFFSET, len);
  const slots: HostSlot[] = [];
  // Most of the 1,024 slots are free (all zero): a group of them is one native compare, where a
  // look at each slot cost a fresh process (interpreted JavaScript) ~1.5 ms per read.
  for (let g = 0; g < slotCount; g += SLOT_GROUP) {
    const end = Math.min(slotCount, g + SLOT_GROUP);
    if (raw.compare(ZERO_GROUP, 0, (end - g) * HOST_SLOT_SIZE, g * HOST_SLOT_SIZE, end * HOST_SLOT_SIZE) === 0) continue;
    for (let i = g; i < end; i++) {
      const s = slotAt(media, i, raw.subarray(i * HOST_SLOT_SIZE, (i + 1) * HOST_SLOT_SIZE));
      if (s) slots.push(s);
    }
  }
  return slots;
}
const SLOT_GROUP = 32;
const ZERO_GROUP = Buffer.alloc(SLOT_GROUP * HOST_SLOT_SIZE);

/** Zero every damaged host slot (master repair: their owners re-ack if they are alive). */
export function clearDamagedHostSlots(media: Media, slotCount: number): number[] {
  const cleared: number[] = [];
  for (const s of readHostSlots(media, slotCount)) {
    if (!s.damaged) continue;
    const off = HOST_SLOTS_OFFSET + s.slot * HOST_SLOT_SIZE;
    media.write(off, Buffer.alloc(HOST_SLOT_SIZE));
    media.flush(off, HOST_SLOT_SIZE);
    cleared.push(s.slot);
  }
  return cleared;
}

/**
 * Record that `hostUuid` has applied every entry below `ackedIndex`, bumping the slot's ack
 * counter so the master sees a change. Finds the host's slot, or claims a free one. Slot claiming
 * is not atomic across hosts, so a claimed slot is re-read after the write: if another host won
 * the race, we move on to the next free slot. A freshly claimed slot starts its counter at a
 * random value, so a host that lost its slot and claims it again never writes the exact line the
 * master saw last (which would look unchanged).
 */
export function ackReplay(media: Media, slotCount: number, hostUuid: string, name: string, ackedIndex: number): number {
  const slots = readHostSlots(media, slotCount);
  // A damaged slot that still names us is ours to rewrite.
  const mine = slots.find((s) => s.hostUuid === hostUuid);
  const taken = new Set(slots.map((s) => s.slot));
  const candidates = mine ? [mine.slot] : [...Array(slotCount).keys()].filter((i) => !taken.has(i));
  const beat = mine && !mine.damaged ? mine.beat + 1 : randomInt(1, 2 ** 47);
  for (const slot of candidates) {
    const off = HOST_SLOTS_OFFSET + slot * HOST_SLOT_SIZE;
    media.write(off, encodeHostSlot({ hostUuid, ackedIndex, beat, name }));
    media.flush(off, HOST_SLOT_SIZE);
    media.invalidate(off, HOST_SLOT_SIZE);
    const back = decodeHostSlot(media.read(off, HOST_SLOT_SIZE), slot);
    if (back && back.hostUuid === hostUuid) return slot;
  }
  throw new FamfsError('ENOSPC', `no free host slot among ${slotCount}: remove stale hosts (famfs hosts --evict)`);
}

/** Free a host's slot (host decommissioned or fenced out). */
export function evictHost(media: Media, slotCount: number, hostUuid: string): boolean {
  const s = readHostSlots(media, slotCount).find((x) => x.hostUuid === hostUuid);
  if (!s) return false;
  const off = HOST_SLOTS_OFFSET + s.slot * HOST_SLOT_SIZE;
  media.write(off, Buffer.alloc(HOST_SLOT_SIZE));
  media.flush(off, HOST_SLOT_SIZE);
  return true;
}

/** The lowest acked index among `live` hosts, never above the writer's own position. */
export function reclaimHorizon(live: Iterable<HostSlot>, writerNextIndex: number): number {
  let horizon = writerNextIndex;
  for (const s of live) horizon = Math.min(horizon, s.ackedIndex);
  return horizon;
}

/** Eviction records, oldest first (empty or damaged records are skipped). */
export function readEvictions(media: Media): EvictionRecord[] {
  const len = EVICT_RECORDS * EVICT.SIZE;
  media.invalidate(EVICT_OFFSET, len);
  const raw = media.read(EVICT_OFFSET, len);
  const out: EvictionRecord[] = [];
  for (let i = 0; i < EVICT_RECORDS; i++) {
    const r = decodeEvictionRecord(raw.subarray(i * EVICT.SIZE, (i + 1) * EVICT.SIZE));
    if (r) out.push(r);
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/** Master only: append an eviction record (flushed before the caller reuses any memory). */
export function appendEviction(media: Media, r: Omit<EvictionRecord, 'seq'>): EvictionRecord {
  const seq = readEvictions(media).reduce((m, x) => Math.max(m, x.seq), 0) + 1;
  const rec: EvictionRecord = { ...r, seq };
  const at = EVICT_OFFSET + (seq % EVICT_RECORDS) * EVICT.SIZE;
  media.write(at, encodeEvictionRecord(rec));
  media.flush(at, EVICT.SIZE);
  return rec;
}

/** A host slot as the master judges it. */
export interface HostLiveness extends HostSlot {
  live: boolean;
  /** How long this master has watched the slot unchanged (its own monotonic clock). */
  silentMs: number;
}

interface Watched {
  slot: HostSlot;
  seenAt: number;
  /** Already reported as timed out (reset when the slot changes). */
  reported: boolean;
}

/** Bytes compared at once before looking at single lines: 16 slots. */
const WATCH_BLOCK = 16 * HOST_SLOT_SIZE;

/**
 * The master's view of host liveness, on its own monotonic clock. `observe` reads the whole slot
 * table (one read, one memcmp against the last copy when nothing moved: a few microseconds for
 * 1,024 slots) and notes the time of every change it sees. A slot first seen now counts as
 * changed now, so a new master treats every host as live until it has watched a full window.
 */
export class HostWatch {
  private last: Buffer = Buffer.alloc(0);
  private next: Buffer = Buffer.alloc(0);
  private readonly watched = new Map<number, Watched>();

  constructor(private readonly clock: () => number) {}

  observe(media: Media, slotCount: number): void {
    const len = slotCount * HOST_SLOT_SIZE;
    if (this.next.length !== len) this.next = Buffer.alloc(len);
    media.invalidate(HOST_SLOTS_OFFSET, len);
    if (media.readInto) media.readInto(HOST_SLOTS_OFFSET, this.next);
    else media.read(HOST_SLOTS_OFFSET, len).copy(this.next);
    const now = this.clock();
    const raw = this.next;
    const prev = this.last;
    const same = prev.length === len;
    if (same && raw.equals(prev)) return;
    for (let b = 0; b < len; b += WATCH_BLOCK) {
      const be = Math.min(len, b + WATCH_BLOCK);
      if (same && raw.compare(prev, b, be, b, be) === 0) continue;
      // First look (or a new slot count): a block of free slots is one compare, not a look at each.
      if (!same && raw.compare(ZERO_GROUP, 0, be - b, b, be) === 0) {
        for (let i = b / HOST_SLOT_SIZE; i < be / HOST_SLOT_SIZE && this.watched.size > 0; i++) this.watched.delete(i);
        continue;
      }
      for (let off = b; off < be; off += HOST_SLOT_SIZE) {
        const end = off + HOST_SLOT_SIZE;
        if (same && raw.compare(prev, off, end, off, end) === 0) continue;
        const i = off / HOST_SLOT_SIZE;
        const s = slotAt(media, i, raw.subarray(off, end));
        if (s) this.watched.set(i, { slot: s, seenAt: now, reported: false });
        else this.watched.delete(i);
      }
    }
    if (!same) for (const i of [...this.watched.keys()]) if (i >= slotCount) this.watched.delete(i);
    this.next = prev.length === len ? prev : Buffer.alloc(len);
    this.last = raw;
  }

  /** Every slot in use, judged against `liveMs` on this master's clock. Damaged slots are always live. */
  liveness(liveMs: number): HostLiveness[] {
    const now = this.clock();
    const out: HostLiveness[] = [];
    for (const w of this.watched.values()) {
      const silentMs = Math.max(0, now - w.seenAt);
      out.push({ ...w.slot, live: w.slot.damaged === true || silentMs < liveMs, silentMs });
    }
    return out.sort((a, b) => a.slot - b.slot);
  }

  /**
   * The reclaim horizon over live hosts (those `skip` returns true for are left out), and the hosts
   * that timed out since the last call (each reported once per silence).
   */
  horizon(writerNextIndex: number, liveMs: number, skip?: (s: HostSlot) => boolean): { horizon: number; timedOut: HostLiveness[] } {
    const now = this.clock();
    let horizon = writerNextIndex;
    const timedOut: HostLiveness[] = [];
    for (const w of this.watched.values()) {
      if (skip?.(w.slot)) continue;
      const silentMs = Math.max(0, now - w.seenAt);
      if (w.slot.damaged === true || silentMs < liveMs) {
        horizon = Math.min(horizon, w.slot.ackedIndex);
      } else if (!w.reported) {
        w.reported = true;
        timedOut.push({ ...w.slot, live: false, silentMs });
      }
    }
    return { horizon, timedOut };
  }
}
