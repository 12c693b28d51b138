/**
 * Repairs for what fsck finds, limited to those that lose nothing that was ever visible:
 *
 * - a log header with a damaged CRC-covered part is rewritten from the superblock, and its
 *   counters are set to the count of entries that still validate;
 * - the log is cut at the first bad entry (entries after it were never replayed by anyone, since
 *   replay stops there); the dropped entries are reported, best-effort decoded;
 * - the slot after the end left by an interrupted append is zeroed;
 * - a damaged famfs-csi extension block is re-made with a higher epoch (fencing every writer
 *   that held the old one).
 *
 * Cross-linked files and skipped (meaningless) entries are reported but not "repaired": which
 * file owns the memory is a human decision.
 */
import { FamfsError } from './errors';
import { initExtBlock, readExtBlock } from './hosts';
import {
  decodeLogHeader,
  decodeSuperblock,
  encodeLogCounters,
  encodeLogHeader,
  entryOffset,
  LE,
  LH,
  LOG_OFFSET,
  logCapacity,
  SB,
  SUPERBLOCK_OFFSET,
  validateLogHeader,
  validateSuperblock,
  crc,
  RELPATH_FIELD,
} from './layout';
import { Media } from './media';
import { LogReader } from './replay';

export interface RepairReport {
  actions: string[];
  /** Entries cut from the log: index and what could be read of them. */
  dropped: { index: number; what: string }[];
}

export interface RepairOptions {
  /** System UUID of the host running the repair: must be the master's. */
  hostUuid: string;
  now?: number;
}

function describeRaw(raw: Buffer): string {
  const type = raw.readUInt32LE(8);
  const path = raw.subarray(LE.payload + (type === 1 ? 12 : 24), LE.payload + (type === 1 ? 12 : 24) + RELPATH_FIELD);
  const nul = path.indexOf(0);
  return `type ${type}, path "${path.subarray(0, nul < 0 ? path.length : nul).toString('utf8').replace(/[^\x20-\x7e]/g, '?')}"`;
}

export function repair(media: Media, o: RepairOptions): RepairReport {
  const report: RepairReport = { actions: [], dropped: [] };
  media.invalidate(SUPERBLOCK_OFFSET, SB.SIZE);
  const sbRaw = media.read(SUPERBLOCK_OFFSET, SB.SIZE);
  const sbCheck = validateSuperblock(sbRaw, media.size);
  if (!sbCheck.ok) {
    throw new FamfsError('ECORRUPT', `superblock is damaged (${sbCheck.problems.join('; ')}); it cannot be rebuilt safely: restore it or run famfs mkfs`);
  }
  const sb = decodeSuperblock(sbRaw);
  if (sb.systemUuid !== o.hostUuid) throw new FamfsError('ENOTMASTER', `only the master (${sb.systemUuid}) may repair the log`);
  const cap = logCapacity(sb.logLen);

  media.invalidate(LOG_OFFSET, LH.SIZE);
  let header = media.read(LOG_OFFSET, LH.SIZE);
  const headerProblems = validateLogHeader(header, sb.logLen);
  const magicOk = header.readBigUInt64LE(LH.magic) === 0xbadcafef00dn;
  const crcPartOk = magicOk && header.readBigUInt64LE(LH.crc) === BigInt(crc(header, 0, LH.crc)) && decodeLogHeaderSafe(header)?.len === sb.logLen;
  let claimed = 0;
  if (!crcPartOk) {
    // Rebuild the fixed part; the entries tell us how many there are.
    const fixed = encodeLogHeader(sb.logLen);
    media.write(LOG_OFFSET, fixed.subarray(0, LH.nextSeqnum));
    media.flush(LOG_OFFSET, LH.SIZE);
    report.actions.push(`rewrote the log header (${headerProblems.join('; ') || 'damaged'})`);
    claimed = cap;
  } else {
    const h = decodeLogHeaderSafe(header);
    claimed = h ? Math.min(h.nextIndex, cap) : cap;
  }

  // Count the entries that validate, up to what the header claims (or the whole log).
  const reader = new LogReader(media, sb.logLen, () => sbCheck.extended);
  const { entries, stop } = reader.entries(0, claimed);
  // With unknown counters the valid prefix simply ends at the first slot that is not an entry.
  const good = entries.length;
  if (stop && crcPartOk) {
    for (let i = stop.index; i < claimed; i++) {
      const raw = media.read(LOG_OFFSET + entryOffset(i), LE.SIZE);
      report.dropped.push({ index: i, what: i === stop.index ? `${stop.reason}; ${describeRaw(raw)}` : describeRaw(raw) });
    }
  }
  header = media.read(LOG_OFFSET, LH.SIZE);
  const current = decodeLogHeaderSafe(header);
  if (!current || current.nextIndex !== good || current.nextSeqnum !== good) {
    media.write(LOG_OFFSET + LH.nextSeqnum, encodeLogCounters(good, good));
    media.flush(LOG_OFFSET + LH.nextSeqnum, 16);
    report.actions.push(`set the log to ${good} valid entries (was ${current ? current.nextIndex : 'unreadable'})`);
  }
  // Zero every slot from the new end up to the old claim (and one more: an interrupted append).
  const end = Math.min(cap, Math.max(claimed, good + 1));
  const zeroFrom = good;
  if (zeroFrom < end) {
    let dirty = false;
    for (let i = zeroFrom; i < end && !dirty; i++) dirty = media.read(LOG_OFFSET + entryOffset(i), LE.SIZE).some((b) => b !== 0);
    if (dirty) {
      media.write(LOG_OFFSET + entryOffset(zeroFrom), Buffer.alloc((end - zeroFrom) * LE.SIZE));
      media.flush(LOG_OFFSET + entryOffset(zeroFrom), (end - zeroFrom) * LE.SIZE);
      report.actions.push(`cleared log slots ${zeroFrom}..${end - 1} past the end`);
    }
  }
  try {
    readExtBlock(media);
  } catch (e) {
    // The old epoch cannot be trusted; a wall-clock epoch is above any counter ever handed out.
    const now = o.now ?? Date.now();
    const block = initExtBlock(media, o.hostUuid, now, undefined, now);
    report.actions.push(`re-made the famfs-csi extension block (${(e as Error).message}); epoch is now ${block.epoch}, so every writer must take over again`);
  }
  return report;
}

function decodeLogHeaderSafe(b: Buffer) {
  try {
    return decodeLogHeader(b);
  } catch {
    return undefined;
  }
}
