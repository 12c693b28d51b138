/**
 * Repairs for what fsck finds. The rule: never make a file disappear that some host may have
 * replayed (pods may map it), and never account its memory as free.
 *
 * - A log header whose CRC-covered part is damaged is rewritten from the superblock; the end of
 *   the log is then found from the entries themselves.
 * - Valid entries past next_index (an interrupted append, or a counter that went backwards) are
 *   committed, not erased: rolling back could drop a file that hosts already serve.
 * - A bad entry inside the log is *salvaged* when its bytes still decode to an entry that fits
 *   (valid path and parent, extents inside the device, overlapping no other entry's memory): it
 *   is re-encoded with a fresh CRC. Otherwise it is replaced by an empty directory
 *   `lost+found.<index>` so that every later entry keeps its index and stays visible; what was
 *   in the slot is reported (its memory, if it was a file, is no longer accounted).
 * - A damaged famfs-csi extension block is re-made with an epoch above any handed out before.
 *
 * Cross-linked files are reported by fsck but not "repaired": which file owns the memory is a
 * human decision.
 */
import { FamfsError } from './errors';
import { fmapExtents } from './fmap';
import { clearDamagedHostSlots, initExtBlock, readAnyExtBlock, readExtBlock } from './hosts';
import {
  ALLOC_UNIT,
  crc,
  decodeEntryAt,
  decodeLogHeader,
  decodeSuperblock,
  encodeEntry,
  encodeLogCounters,
  encodeLogHeader,
  entryOffset,
  EntryDecodeError,
  EntryType,
  FAMFS_CSI_EXT_VERSION,
  FAMFS_VERSION,
  superblockCrc,
  tornVersionUpgrade,
  LE,
  LH,
  LOG_OFFSET,
  LogEntry,
  logCapacity,
  RELPATH_FIELD,
  SB,
  SUPERBLOCK_OFFSET,
  validateLogHeader,
  validateSuperblock,
} from './layout';
import { Media } from './media';
import { FamfsTree, reservedBytes } from './tree';

export interface RepairReport {
  actions: string[];
  /** Entries whose content could not be kept: index and what could be read of them. */
  dropped: { index: number; what: string }[];
}

export interface RepairOptions {
  /** System UUID of the host running the repair: must be the master's. */
  hostUuid: string;
  now?: number;
}

function describeRaw(raw: Buffer): string {
  const type = raw.readUInt32LE(8);
  const at = LE.payload + (type === 1 ? 12 : 24);
  const path = raw.subarray(at, at + RELPATH_FIELD);
  const nul = path.indexOf(0);
  return `type ${type}, path "${path.subarray(0, nul < 0 ? path.length : nul).toString('utf8').replace(/[^\x20-\x7e]/g, '?')}"`;
}

/** Decode a slot whatever its seqnum and CRC say: what the bytes would mean if they were right. */
function decodeIgnoringChecks(raw: Buffer, index: number, extended: boolean): LogEntry | undefined {
  const copy = Buffer.from(raw);
  copy.writeBigUInt64LE(BigInt(index), 0);
  copy.writeBigUInt64LE(BigInt(crc(copy, 0, LE.crc)), LE.crc);
  try {
    return decodeEntryAt(copy, 0, index, extended);
  } catch {
    return undefined;
  }
}

function isValidAt(raw: Buffer, index: number, extended: boolean): LogEntry | undefined {
  try {
    return decodeEntryAt(raw, 0, index, extended);
  } catch (e) {
    if (e instanceof EntryDecodeError) return undefined;
    throw e;
  }
}

function unitsOf(e: LogEntry): number[] {
  if (e.body.type !== 'file') return [];
  const units: number[] = [];
  for (const x of fmapExtents(e.body.fmap)) for (let u = Math.floor(x.offset / ALLOC_UNIT); u < Math.ceil((x.offset + x.len) / ALLOC_UNIT); u++) units.push(u);
  return units;
}

export function repair(media: Media, o: RepairOptions): RepairReport {
  const report: RepairReport = { actions: [], dropped: [] };
  media.invalidate(SUPERBLOCK_OFFSET, SB.SIZE);
  let sbRaw = media.read(SUPERBLOCK_OFFSET, SB.SIZE);
  if (sbRaw.readBigUInt64LE(SB.crc) !== BigInt(superblockCrc(sbRaw)) && tornVersionUpgrade(sbRaw)) {
    sbRaw = repairTornUpgrade(media, sbRaw, o.hostUuid, report);
  }
  const sbCheck = validateSuperblock(sbRaw, media.size);
  if (!sbCheck.ok) {
    throw new FamfsError('ECORRUPT', `superblock is damaged (${sbCheck.problems.join('; ')}); famfs keeps no second copy: restore a saved one or run famfs mkfs`);
  }
  const sb = decodeSuperblock(sbRaw);
  if (sb.systemUuid !== o.hostUuid) throw new FamfsError('ENOTMASTER', `only the master (${sb.systemUuid}) may repair the log`);
  const cap = logCapacity(sb.logLen);
  const extended = sbCheck.extended;

  media.invalidate(LOG_OFFSET, sb.logLen);
  const log = media.read(LOG_OFFSET, sb.logLen);
  const slot = (i: number) => log.subarray(entryOffset(i), entryOffset(i) + LE.SIZE);
  const isZero = (i: number) => slot(i).every((b) => b === 0);

  // 1. The header.
  const header = log.subarray(0, LH.SIZE);
  const fixedPartOk =
    header.readBigUInt64LE(LH.magic) === 0xbadcafef00dn &&
    header.readBigUInt64LE(LH.crc) === BigInt(crc(header, 0, LH.crc)) &&
    header.readBigUInt64LE(LH.len) === BigInt(sb.logLen) &&
    header.readBigUInt64LE(LH.lastIndex) === BigInt(cap - 1);
  let end: number;
  if (fixedPartOk) {
    const h = decodeLogHeaderSafe(header);
    end = h ? Math.min(h.nextIndex, cap) : 0;
    if (!h || h.nextIndex > cap) {
      // Counters unreadable: the log ends after its last non-empty slot.
      end = cap;
      while (end > 0 && isZero(end - 1)) end--;
    }
  } else {
    const problems = validateLogHeader(Buffer.from(header), sb.logLen);
    media.write(LOG_OFFSET, encodeLogHeader(sb.logLen).subarray(0, LH.nextSeqnum));
    media.flush(LOG_OFFSET, LH.SIZE);
    report.actions.push(`rewrote the log header (${problems.join('; ') || 'damaged'})`);
    end = cap;
    while (end > 0 && isZero(end - 1)) end--;
  }

  // A counter raised past what was ever written points at empty slots: those are not entries.
  while (end > 0 && isZero(end - 1)) end--;
  // 2. Valid entries past the end are committed (roll forward, never back).
  const claimedEnd = end;
  while (end < cap && isValidAt(slot(end), end, extended)) end++;
  if (end > claimedEnd) report.actions.push(`committed ${end - claimedEnd} valid entr${end - claimedEnd === 1 ? 'y' : 'ies'} found past next_index ${claimedEnd} (${claimedEnd}..${end - 1})`);

  // 3. Bad entries inside the log: salvage or replace, keeping every index.
  const decided: (LogEntry | undefined)[] = [];
  const owner = new Map<number, number>(); // allocation unit -> index of the valid entry that maps it
  for (let i = 0; i < end; i++) {
    const e = isValidAt(slot(i), i, extended);
    decided.push(e);
    if (e) for (const u of unitsOf(e)) owner.set(u, i);
  }
  const limits = { deviceSize: sb.deviceSize, reservedBytes: reservedBytes(sb.logLen) };
  const placeholder = (i: number): LogEntry => ({ index: i, seqnum: i, body: { type: 'mkdir', relpath: `lost+found.${i}`, mode: 0o700, uid: 0, gid: 0 } });
  /**
   * Problems a whole replay would report with `candidate` in slot i (undecided later slots as
   * placeholders), or undefined when the candidate itself does not apply cleanly or would share
   * memory with another entry.
   */
  const score = (i: number, candidate: LogEntry): number | undefined => {
    if (unitsOf(candidate).some((u) => owner.has(u) && owner.get(u) !== i)) return undefined;
    const trial = new FamfsTree(limits);
    for (let k = 0; k < end; k++) {
      const e = k === i ? candidate : (decided[k] ?? placeholder(k));
      const before = trial.problems.length;
      const change = trial.apply(e);
      if (k === i && (change === undefined || trial.problems.length !== before)) return undefined;
    }
    return trial.problems.length;
  };
  for (let i = 0; i < end; i++) {
    if (decided[i]) continue;
    const raw = slot(i);
    // Candidates in order of preference; the one whose replay leaves the fewest problems wins.
    const salvaged = decodeIgnoringChecks(raw, i, extended);
    const dir = missingDirectory(decided, i, end);
    const options: { entry: LogEntry; action: string; dropped: boolean }[] = [];
    if (salvaged) options.push({ entry: salvaged, action: `salvaged log entry ${i} (${describeRaw(raw)}): re-encoded with a fresh CRC`, dropped: false });
    if (dir !== undefined) {
      options.push({
        entry: { index: i, seqnum: i, body: { type: 'mkdir', relpath: dir, mode: 0o755, uid: 0, gid: 0 } },
        action: `rebuilt unreadable log entry ${i} (${describeRaw(raw)}) as directory "${dir}" (mode 0755, root), which later entries need`,
        dropped: false,
      });
    }
    options.push({ entry: placeholder(i), action: `replaced unreadable log entry ${i} by the empty directory lost+found.${i}; later entries keep their place`, dropped: true });
    let best = options[options.length - 1];
    let bestScore = score(i, best.entry) ?? Number.MAX_SAFE_INTEGER;
    for (const opt of options.slice(0, -1)) {
      const sc = score(i, opt.entry);
      if (sc !== undefined && sc <= bestScore) {
        best = opt;
        bestScore = sc;
        break;
      }
    }
    const replacement = best.entry;
    report.actions.push(best.action);
    if (best.dropped) report.dropped.push({ index: i, what: describeRaw(raw) });
    media.write(LOG_OFFSET + entryOffset(i), encodeEntry(i, replacement.body));
    media.flush(LOG_OFFSET + entryOffset(i), LE.SIZE);
    decided[i] = replacement;
  }

  // 4. Counters, and garbage right after the end.
  const current = decodeLogHeaderSafe(media.read(LOG_OFFSET, LH.SIZE));
  if (!current || current.nextIndex !== end || current.nextSeqnum !== end) {
    media.write(LOG_OFFSET + LH.nextSeqnum, encodeLogCounters(end, end));
    media.flush(LOG_OFFSET + LH.nextSeqnum, 16);
    report.actions.push(`set the log counters to ${end} entries (were ${current ? `${current.nextSeqnum}/${current.nextIndex}` : 'unreadable'})`);
  }
  if (end < cap && !isZero(end)) {
    media.write(LOG_OFFSET + entryOffset(end), Buffer.alloc(LE.SIZE));
    media.flush(LOG_OFFSET + entryOffset(end), LE.SIZE);
    report.actions.push(`cleared the invalid slot ${end} right after the end of the log`);
  }

  // 5. The extension block, and host slots too damaged to read.
  try {
    const block = readExtBlock(media, sb.uuid);
    if (block) {
      const cleared = clearDamagedHostSlots(media, block.slotCount);
      if (cleared.length) report.actions.push(`cleared damaged host slots ${cleared.join(', ')} (live hosts re-ack within seconds)`);
    } else {
      const stale = readAnyExtBlock(media);
      if (stale) {
        const now = o.now ?? Date.now();
        const fresh = initExtBlock(media, sb.uuid, o.hostUuid, now, undefined, stale.epoch + 1);
        report.actions.push(`re-made the famfs-csi extension area left by an earlier file system (${stale.fsUuid}): its host slots are cleared, epoch is now ${fresh.epoch}`);
      }
    }
  } catch (e) {
    // The old epoch cannot be trusted; a wall-clock epoch is above any counter ever handed out.
    const now = o.now ?? Date.now();
    const block = initExtBlock(media, sb.uuid, o.hostUuid, now, undefined, now);
    report.actions.push(`re-made the famfs-csi extension block (${(e as Error).message}); epoch is now ${block.epoch}, so every writer must take over again`);
  }
  return report;
}

/**
 * A superblock whose version and CRC disagree because an upgrade to the extension version was
 * torn. The version must be the extended one exactly when the log holds an extension entry (then
 * plain famfs must keep refusing the device); otherwise famfs' own 48, which keeps the device
 * readable by famfs. The CRC is recomputed for that version.
 */
function repairTornUpgrade(media: Media, raw: Buffer, hostUuid: string, report: RepairReport): Buffer {
  const sb = decodeSuperblock(raw);
  if (sb.systemUuid !== hostUuid) throw new FamfsError('ENOTMASTER', `only the master (${sb.systemUuid}) may repair the superblock`);
  const logLen = Math.min(sb.logLen, media.size - LOG_OFFSET);
  media.invalidate(LOG_OFFSET, logLen);
  const log = media.read(LOG_OFFSET, logLen);
  let extension = false;
  for (let i = 0; entryOffset(i) + LE.SIZE <= logLen && !extension; i++) {
    const o = entryOffset(i);
    if (log.readUInt32LE(o + LE.type) === EntryType.CSI_DELETE && log.readUInt32LE(o + LE.crc) === crc(log, o, o + LE.crc)) extension = true;
  }
  const version = extension ? FAMFS_CSI_EXT_VERSION : FAMFS_VERSION;
  const fixed = Buffer.from(raw);
  fixed.writeBigUInt64LE(version, SB.version);
  fixed.writeBigUInt64LE(BigInt(superblockCrc(fixed)), SB.crc);
  media.write(SUPERBLOCK_OFFSET, fixed);
  media.flush(SUPERBLOCK_OFFSET, SB.SIZE);
  report.actions.push(
    `superblock: torn version upgrade (version ${sb.version} with the CRC of the other version); set version ${version} ` +
      `(${extension ? 'the log holds famfs-csi delete entries' : 'the log holds no famfs-csi extension entry, so famfs can read it again'}) and its CRC`,
  );
  return fixed;
}

function relpathOf(e: LogEntry | undefined): string | undefined {
  return e && (e.body.type === 'file' || e.body.type === 'mkdir') ? e.body.relpath : undefined;
}

/**
 * The shallowest directory that entries after `bad` need as a parent but that no entry creates,
 * whose own parent exists before `bad`: the likeliest content of an unreadable MKDIR slot.
 */
function missingDirectory(decided: (LogEntry | undefined)[], bad: number, end: number): string | undefined {
  const made = new Set<string>(['']);
  for (let k = 0; k < end; k++) {
    const e = decided[k];
    if (e?.body.type === 'mkdir') made.add(e.body.relpath);
  }
  const before = new Set<string>(['']);
  for (let k = 0; k < bad; k++) {
    const e = decided[k];
    if (e?.body.type === 'mkdir') before.add(e.body.relpath);
  }
  let best: string | undefined;
  for (let k = bad + 1; k < end; k++) {
    const p = relpathOf(decided[k]);
    if (!p) continue;
    const parts = p.split('/');
    for (let d = 1; d < parts.length; d++) {
      const dir = parts.slice(0, d).join('/');
      const parent = parts.slice(0, d - 1).join('/');
      if (!made.has(dir) && before.has(parent) && (best === undefined || dir.split('/').length < best.split('/').length)) best = dir;
    }
  }
  return best;
}

function decodeLogHeaderSafe(b: Buffer) {
  try {
    return decodeLogHeader(b);
  } catch {
    return undefined;
  }
}

