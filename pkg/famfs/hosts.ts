/**
 * The famfs-csi extension block in shared memory: the writer fencing epoch and the hosts'
 * replay acknowledgements (design hazards 2 and 5).
 *
 * Every host owns one cache-line slot and writes only that line, so hosts never race on a line.
 * The master reads all slots to learn how far the slowest live host has replayed: memory
 * released by a delete at index D is reusable only once every live host acked an index > D.
 */
import { FamfsError } from './errors';
import {
  decodeExtBlock,
  decodeHostSlot,
  DEFAULT_HOST_SLOTS,
  encodeExtBlock,
  encodeHostSlot,
  EXT,
  EXT_BLOCK_OFFSET,
  EXT_REVISION,
  ExtBlock,
  HOST_SLOT_SIZE,
  HOST_SLOTS_OFFSET,
  HostSlot,
  HS,
  SUPERBLOCK_REGION,
  bytesToUuid,
} from './layout';
import { Media } from './media';

export const MAX_HOST_SLOTS = Math.floor((SUPERBLOCK_REGION - HOST_SLOTS_OFFSET) / HOST_SLOT_SIZE);

/** The block as it is on the device, whichever file system it belongs to (see readExtBlock). */
export function readAnyExtBlock(media: Media): ExtBlock | undefined {
  media.invalidate(EXT_BLOCK_OFFSET, EXT.SIZE);
  return decodeExtBlock(media.read(EXT_BLOCK_OFFSET, EXT.SIZE));
}

/**
 * The extension block of the file system whose superblock UUID is `fsUuid`. undefined when it was
 * never initialised or belongs to an earlier file system on the same device (famfs' own mkfs
 * leaves it behind): its epoch and host slots mean nothing here. Throws ECORRUPT when damaged.
 */
export function readExtBlock(media: Media, fsUuid: string): ExtBlock | undefined {
  const block = readAnyExtBlock(media);
  return block && block.fsUuid === fsUuid ? block : undefined;
}

export function writeExtBlock(media: Media, block: ExtBlock): void {
  media.write(EXT_BLOCK_OFFSET, encodeExtBlock(block));
  media.flush(EXT_BLOCK_OFFSET, EXT.SIZE);
}

/** Write a fresh block for file system `fsUuid` and clear every host slot. */
export function initExtBlock(media: Media, fsUuid: string, masterUuid: string, nowMs: number, slotCount = DEFAULT_HOST_SLOTS, epoch = 1): ExtBlock {
  if (slotCount < 1 || slotCount > MAX_HOST_SLOTS) throw new FamfsError('EINVAL', `host slot count ${slotCount} must be 1..${MAX_HOST_SLOTS}`);
  media.write(HOST_SLOTS_OFFSET, Buffer.alloc(slotCount * HOST_SLOT_SIZE));
  media.flush(HOST_SLOTS_OFFSET, slotCount * HOST_SLOT_SIZE);
  const block: ExtBlock = { revision: EXT_REVISION, slotCount, epoch, masterUuid, fsUuid, epochTimeMs: nowMs };
  writeExtBlock(media, block);
  return block;
}

/** Re-reads of a slot that fails its CRC before it counts as damaged (a host may be mid-write). */
const TORN_SLOT_RETRIES = 5;

/**
 * Every host slot in use. A slot that fails its CRC is re-read (its owner may be writing it); one
 * that stays damaged is returned as `damaged`, acked at index 0 and always live, so it holds back
 * all reclaim: ignoring it could hand a live host's memory to someone else. Its owner rewrites it
 * on its next ack; `famfs repair` clears it when the owner is gone.
 */
export function readHostSlots(media: Media, slotCount: number): HostSlot[] {
  const len = slotCount * HOST_SLOT_SIZE;
  media.invalidate(HOST_SLOTS_OFFSET, len);
  const raw = media.read(HOST_SLOTS_OFFSET, len);
  const slots: HostSlot[] = [];
  for (let i = 0; i < slotCount; i++) {
    let line = raw.subarray(i * HOST_SLOT_SIZE, (i + 1) * HOST_SLOT_SIZE);
    if (line.every((b) => b === 0)) continue;
    let s = decodeHostSlot(line, i);
    for (let k = 0; !s && k < TORN_SLOT_RETRIES; k++) {
      const at = HOST_SLOTS_OFFSET + i * HOST_SLOT_SIZE;
      media.invalidate(at, HOST_SLOT_SIZE);
      line = media.read(at, HOST_SLOT_SIZE);
      if (line.every((b) => b === 0)) break;
      s = decodeHostSlot(line, i);
    }
    if (s) slots.push(s);
    else if (line.some((b) => b !== 0)) {
      slots.push({ slot: i, hostUuid: bytesToUuid(line.subarray(HS.hostUuid, HS.hostUuid + 16)), ackedIndex: 0, heartbeatMs: Number.MAX_SAFE_INTEGER, name: '(damaged slot)', damaged: true });
    }
  }
  return slots;
}

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
 * Record that `hostUuid` has applied every entry below `ackedIndex`. Finds the host's slot, or
 * claims a free one. Slot claiming is not atomic across hosts, so a claimed slot is re-read after
 * the write: if another host won the race, we move on to the next free slot.
 */
export function ackReplay(media: Media, slotCount: number, hostUuid: string, name: string, ackedIndex: number, nowMs: number): number {
  const slots = readHostSlots(media, slotCount);
  // A damaged slot that still names us is ours to rewrite.
  const mine = slots.find((s) => s.hostUuid === hostUuid);
  const taken = new Set(slots.map((s) => s.slot));
  const candidates = mine ? [mine.slot] : [...Array(slotCount).keys()].filter((i) => !taken.has(i));
  for (const slot of candidates) {
    const off = HOST_SLOTS_OFFSET + slot * HOST_SLOT_SIZE;
    media.write(off, encodeHostSlot({ hostUuid, ackedIndex, heartbeatMs: nowMs, name }));
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

/**
 * The reclaim horizon: the lowest acked index among hosts that heartbeated within `liveMs`,
 * never above the writer's own position. A host silent for longer counts as gone (its node must
 * re-replay from scratch before serving again, which the FUSE server does on every start).
 */
export function reclaimHorizon(slots: HostSlot[], writerNextIndex: number, nowMs: number, liveMs: number): number {
  let horizon = writerNextIndex;
  for (const s of slots) if (nowMs - s.heartbeatMs <= liveMs) horizon = Math.min(horizon, s.ackedIndex);
  return horizon;
}
