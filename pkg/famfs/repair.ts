/**
 * Repairs for what fsck finds. The rule: never make a file disappear that some host may have
 * replayed (pods may map it), and never account its memory as free.
 *
 * - A log header whose CRC-covered part is damaged is rewritten from the superblock; the end of
 *   the log is then found from the entries themselves.
 * - Valid entries past next_index (an interrupted append, or a counter that went backwards) are
 *   committed, not erased: rolling back could drop a file that hosts already serve.
 * - A bad entry inside the log is *salvaged* only when its CRC proves the original bytes: one
 *   damaged byte (anywhere, CRC field included) is found from the CRC syndrome and restored. A
 *   file is never re-encoded from bytes nobody can vouch for: a flipped extent offset would move
 *   it onto memory it never owned, and free the memory its pods still map.
 * - A file or directory entry whose damage lies only in its name field (several bytes) is
 *   restored when the CRC proves the name: for a file, a name its directory lacks (an empty
 *   directory made before it, as a CSI volume's `csi/<id>` is when its `data` entry rots); for a
 *   directory, the one later entries need and nobody creates; for both, the path a delete names.
 * - An entry the CRC cannot restore: if the entries after it need a directory nobody creates, it
 *   is rebuilt as that directory; a directory or delete whose bytes still apply cleanly is
 *   re-encoded (no memory hangs on them; a lost delete only keeps memory reserved); a file whose
 *   bytes name plausible memory is *quarantined*: the slot becomes the file `lost+found.<index>`,
 *   mode 000, on that memory, so it stays reserved (counted by fsck) until an operator releases
 *   it (`famfs repair --release N`). Anything else is refused: the operator decides, with
 *   `--drop N`, to replace it by the empty directory `lost+found.<index>` (every later entry
 *   keeps its index).
 * - A damaged famfs-csi extension block is re-made with an epoch above any handed out before.
 *
 * Cross-linked files are reported by fsck but not "repaired": which file owns the memory is a
 * human decision.
 */
import { FamfsError } from './errors';
import { fmapExtents } from './fmap';
import { GENERATION_ZERO, inspectGenerations } from './generation';
import { repairGenerations } from './repair-generation';
import { withHostSlotLock, withWriterLock } from './writer-lock';
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
  FM,
  MD,
  superblockCrc,
  FAMFS_CSI_EXT2_VERSION,
  tornVersionCrcOf,
  tornVersionUpgrade,
  LE,
  LH,
  LOG_MAGIC,
  LOG_OFFSET,
  LogEntry,
  logCapacity,
  RELPATH_FIELD,
  SeqWindow,
  SB,
  SUPERBLOCK_OFFSET,
  validateLogHeader,
  validateSuperblock,
} from './layout';
import type { FamfsFs } from './fs';
import { Media } from './media';
import { FamfsTree, reservedBytes } from './tree';

export interface RepairReport {
  actions: string[];
  /** Entries whose content could not be kept: index and what could be read of them. */
  dropped: { index: number; what: string }[];
  /** Entries turned into quarantine files (lost+found.<index>) holding the memory they named. */
  quarantined: { index: number; relpath: string; bytes: number; what: string }[];
}

export interface RepairOptions {
  /** System UUID of the host running the repair: must be the master's. */
  hostUuid: string;
  now?: number;
  /** Unprovable entries the operator accepts to replace by an empty directory (their memory becomes free). */
  drop?: number[];
}

/** Name of the quarantine file repair makes of log entry `index`. */
/** Every quarantine file's name starts with this (fsck looks for them among the root's files). */
export const QUARANTINE_PREFIX = 'lost+found.';

export function quarantineName(index: number): string {
  return `${QUARANTINE_PREFIX}${index}`;
}

/** A quarantine file: what repair made of an unprovable file entry (its name is its own log index). */
export function isQuarantine(node: { kind: string; relpath: string; index: number }): boolean {
  return node.kind === 'file' && node.relpath === quarantineName(node.index);
}

/**
 * Hand a quarantined entry's memory back to the pool (the operator checked that no pod uses it):
 * a famfs-csi delete of `lost+found.<index>`, through the master's writer.
 */
export function releaseQuarantine(fs: FamfsFs, index: number): void {
  const node = fs.lookup(quarantineName(index));
  if (!node || !isQuarantine(node))
    throw new FamfsError('ENOENT', `log entry ${index} is not quarantined (no file ${quarantineName(index)} made by famfs repair)`);
  fs.rm(node.relpath);
}

/** Syndromes of every single-byte error in the CRC-covered part of an entry (built on first use). */
let syndromes: Map<number, number> | undefined;
const AMBIGUOUS = -1;
function singleByteSyndromes(): Map<number, number> {
  if (syndromes) return syndromes;
  // CRC-32 is affine: crc(x ^ e) = crc(x) ^ crc(e) ^ crc(0). The syndrome of an error is
  // crc(e) ^ crc(0), and that of a byte error is the XOR of its bits' syndromes.
  const zero = Buffer.alloc(LE.crc);
  const c0 = crc(zero, 0, LE.crc);
  const bit: number[] = [];
  for (let p = 0; p < LE.crc; p++) {
    for (let b = 0; b < 8; b++) {
      zero[p] = 1 << b;
      bit.push((crc(zero, 0, LE.crc) ^ c0) >>> 0);
    }
    zero[p] = 0;
  }
  syndromes = new Map();
  for (let p = 0; p < LE.crc; p++) {
    for (let m = 1; m < 256; m++) {
      let syn = 0;
      for (let b = 0; b < 8; b++) if (m & (1 << b)) syn ^= bit[p * 8 + b];
      syn >>>= 0;
      syndromes.set(syn, syndromes.has(syn) ? AMBIGUOUS : p * 256 + m);
    }
  }
  return syndromes;
}

/**
 * The original bytes of a slot with exactly one damaged byte, when the CRC proves them: the one
 * single-byte change that makes the CRC match and the entry valid. undefined when there is none
 * or more than one (then nothing is proven).
 */
export function correctOneByte(raw: Buffer, index: number, extended: boolean, seq?: SeqWindow): { fixed: Buffer; at: number } | undefined {
  const found: { fixed: Buffer; at: number }[] = [];
  const stored = raw.readUInt32LE(LE.crc);
  const computed = crc(raw, 0, LE.crc);
  // The CRC field itself (or its zero upper half) took the hit: the data is intact.
  const field = Buffer.alloc(8);
  field.writeUInt32LE(computed, 0);
  const diff = [...Array(8).keys()].filter((k) => field[k] !== raw[LE.crc + k]);
  if (diff.length === 1) {
    const fixed = Buffer.from(raw);
    field.copy(fixed, LE.crc);
    if (isValidAt(fixed, index, extended, seq)) found.push({ fixed, at: LE.crc + diff[0] });
  }
  if (raw.readUInt32LE(LE.crc + 4) === 0) {
    const hit = singleByteSyndromes().get((stored ^ computed) >>> 0);
    if (hit !== undefined && hit !== AMBIGUOUS) {
      const fixed = Buffer.from(raw);
      const p = Math.floor(hit / 256);
      fixed[p] = fixed[p] ^ (hit % 256);
      if (isValidAt(fixed, index, extended, seq)) found.push({ fixed, at: p });
    }
  }
  return found.length === 1 ? found[0] : undefined;
}

function describeRaw(raw: Buffer): string {
  const type = raw.readUInt32LE(8);
  const at = LE.payload + (type === 1 ? 12 : 24);
  const path = raw.subarray(at, at + RELPATH_FIELD);
  const nul = path.indexOf(0);
  return `type ${type}, path "${path
    .subarray(0, nul < 0 ? path.length : nul)
    .toString('utf8')
    .replace(/[^\x20-\x7e]/g, '?')}"`;
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

/** `seq`: in a compacted log, the log indexes the slot may hold (its seqnum is its log index, not the slot). */
function isValidAt(raw: Buffer, index: number, extended: boolean, seq?: SeqWindow): LogEntry | undefined {
  try {
    return decodeEntryAt(raw, 0, index, extended, seq ? { ...seq } : undefined);
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

/** Repair rewrites the log and its header: no other writer of this host may append meanwhile. */
export function repair(media: Media, o: RepairOptions): RepairReport {
  return withWriterLock(media, () => repairLocked(media, o));
}

function repairLocked(media: Media, o: RepairOptions): RepairReport {
  const report: RepairReport = { actions: [], dropped: [], quarantined: [] };
  media.invalidate(SUPERBLOCK_OFFSET, SB.SIZE);
  let sbRaw = media.read(SUPERBLOCK_OFFSET, SB.SIZE);
  if (sbRaw.readBigUInt64LE(SB.crc) !== BigInt(superblockCrc(sbRaw)) && tornVersionUpgrade(sbRaw)) {
    sbRaw = repairTornUpgrade(media, sbRaw, o.hostUuid, report);
  }
  const sbCheck = validateSuperblock(sbRaw, media.size);
  if (!sbCheck.ok) {
    throw new FamfsError(
      'ECORRUPT',
      `superblock is damaged (${sbCheck.problems.join('; ')}); famfs keeps no second copy: restore a saved one or run famfs mkfs`,
    );
  }
  const sb = decodeSuperblock(sbRaw);
  if (sb.systemUuid !== o.hostUuid) throw new FamfsError('ENOTMASTER', `only the master (${sb.systemUuid}) may repair the log`);
  const cap = logCapacity(sb.logLen);
  const extended = sbCheck.extended;
  // Records that do not prove the log in use are rebuilt first (or repair refuses, writing nothing).
  const active = sbCheck.compacted ? repairGenerations(media, sb, extended, report.actions) : GENERATION_ZERO;
  // A compacted log (generation >= 1) lives at `base`, and its slot s holds the entry of log index
  // seq(s) (its original index, kept by compaction: inode numbers, delete targets and host acks
  // name it). The rules below are the same as for famfs' own log, where seq(s) == s.
  const compacted = active.generation > 0;
  const base = active.offset;

  media.invalidate(base, sb.logLen);
  const log = media.read(base, sb.logLen);
  const slot = (i: number) => log.subarray(entryOffset(i), entryOffset(i) + LE.SIZE);
  const isZero = (i: number) => slot(i).every((b) => b === 0);

  // 1. The header.
  const header = log.subarray(0, LH.SIZE);
  const fixedPartOk =
    header.readBigUInt64LE(LH.magic) === LOG_MAGIC &&
    header.readBigUInt64LE(LH.crc) === BigInt(crc(header, 0, LH.crc)) &&
    header.readBigUInt64LE(LH.len) === BigInt(sb.logLen) &&
    header.readBigUInt64LE(LH.lastIndex) === BigInt(cap - 1);
  let end: number;
  let rewriteHeader = false;
  /** The header's next log index, when readable (a compacted log's next_seqnum; never lowered). */
  let headerNextSeq: number | undefined;
  if (fixedPartOk) {
    const h = decodeLogHeaderSafe(header);
    end = h ? Math.min(h.nextIndex, cap) : 0;
    if (h && h.nextIndex <= cap && h.nextSeqnum >= h.nextIndex) headerNextSeq = h.nextSeqnum;
    if (!h || h.nextIndex > cap) {
      // Counters unreadable: the log ends after its last non-empty slot.
      end = cap;
      while (end > 0 && isZero(end - 1)) end--;
    }
  } else {
    const problems = validateLogHeader(Buffer.from(header), sb.logLen, compacted);
    const h = decodeLogHeaderSafe(header);
    if (h && h.nextSeqnum >= h.nextIndex && h.nextSeqnum < Number.MAX_SAFE_INTEGER) headerNextSeq = h.nextSeqnum;
    rewriteHeader = true;
    report.actions.push(`rewrote the log header (${problems.join('; ') || 'damaged'})`);
    end = cap;
    while (end > 0 && isZero(end - 1)) end--;
  }

  // A counter raised past what was ever written points at empty slots: those are not entries.
  while (end > 0 && isZero(end - 1)) end--;
  // Log indexes of the slots before the end, as far as valid entries tell (compacted: each above
  // the one before); the first index past them is where an append continues.
  const seqAt = (i: number): number | undefined => {
    if (!compacted) return i;
    const e = isValidAt(slot(i), i, extended, { min: 0, max: Number.MAX_SAFE_INTEGER });
    return e?.index;
  };
  let lastSeq = -1;
  for (let i = end - 1; i >= 0 && compacted; i--) {
    const q = seqAt(i);
    if (q !== undefined) {
      lastSeq = q;
      break;
    }
  }
  // 2. Valid entries past the end are committed (roll forward, never back). In a compacted log an
  // append writes slot next_index with log index next_seqnum: only that continuation counts.
  const claimedEnd = end;
  const appendSeq = compacted ? Math.max(headerNextSeq ?? 0, lastSeq + 1) : end;
  const pastWindow = (i: number): SeqWindow | undefined =>
    compacted ? { min: appendSeq + (i - claimedEnd), max: appendSeq + (i - claimedEnd) + 1 } : undefined;
  while (end < cap && isValidAt(slot(end), end, extended, pastWindow(end))) end++;
  if (end > claimedEnd)
    report.actions.push(
      `committed ${end - claimedEnd} valid entr${end - claimedEnd === 1 ? 'y' : 'ies'} found past next_index ${claimedEnd} (${claimedEnd}..${end - 1})`,
    );

  // 3. Bad entries inside the log: salvage or replace, keeping every index.
  const decided: (LogEntry | undefined)[] = [];
  const owner = new Map<number, number>(); // allocation unit -> slot of the valid entry that maps it
  const seqEnd = compacted ? appendSeq + (end - claimedEnd) : end;
  {
    let prev = -1;
    for (let i = 0; i < end; i++) {
      const e = isValidAt(slot(i), i, extended, compacted ? { min: prev + 1, max: seqEnd } : undefined);
      decided.push(e);
      if (e) {
        prev = e.index;
        for (const u of unitsOf(e)) owner.set(u, i);
      }
    }
  }
  // The log index of each slot, and for a bad slot the indexes it may hold: above the slot before
  // it, and leaving room below the next valid entry for the bad slots in between. A bad slot whose
  // stored seqnum fits keeps it; otherwise it takes the lowest free index (its inode number is
  // unknown anyway: whatever hosts served from it is reported as rewritten).
  const seq: number[] = [];
  const windowOf: (SeqWindow | undefined)[] = [];
  {
    let prev = -1;
    for (let i = 0; i < end; i++) {
      const e = decided[i];
      if (!compacted) {
        seq.push(i);
        windowOf.push(undefined);
        continue;
      }
      if (e) {
        seq.push(e.index);
        windowOf.push(undefined);
        prev = e.index;
        continue;
      }
      let next = i + 1;
      while (next < end && !decided[next]) next++;
      const nextSeq = next < end ? decided[next]!.index : seqEnd;
      const max = nextSeq - (next - i - 1); // exclusive
      if (max <= prev + 1) {
        throw new FamfsError(
          'ECORRUPT',
          `slot ${i} of the compacted log (generation ${active.generation}) lies between log indexes ${prev} and ${nextSeq}, which leave no index for it: the slots are out of order. Nothing was written`,
        );
      }
      const stored = slot(i).readBigUInt64LE(LE.seqnum);
      const q = stored > BigInt(prev) && stored < BigInt(max) ? Number(stored) : prev + 1;
      seq.push(q);
      windowOf.push({ min: prev + 1, max });
      prev = q;
    }
  }
  const limits = { deviceSize: sb.deviceSize, reservedBytes: reservedBytes(sb.logLen) };
  const placeholder = (i: number): LogEntry => ({
    index: seq[i],
    seqnum: seq[i],
    body: { type: 'mkdir', relpath: `lost+found.${seq[i]}`, mode: 0o700, uid: 0, gid: 0 },
  });
  /**
   * Problems a whole replay would report with `candidate` in slot i (undecided later slots as
   * placeholders), or undefined when the candidate itself does not apply cleanly or would share
   * memory with another entry.
   */
  const score = (i: number, candidate: LogEntry): number | undefined => {
    if (unitsOf(candidate).some((u) => owner.has(u) && owner.get(u) !== i)) return undefined;
    const trial = new FamfsTree(limits);
    trial.generation = active.generation;
    for (let k = 0; k < end; k++) {
      const e = k === i ? candidate : (decided[k] ?? placeholder(k));
      const before = trial.problems.length;
      const change = trial.apply(e);
      if (k === i && (change === undefined || trial.problems.length !== before)) return undefined;
    }
    return trial.problems.length;
  };
  /**
   * A file or directory entry whose damage is confined to its name field, restored when the CRC
   * proves the name. The candidates are the names it could have had here: the relpath of a delete
   * that targets it; for a directory, the one later entries need and nobody creates; for a file,
   * for every directory made before it that holds nothing, that directory joined with the damaged
   * base name or with the base name of a file in a sibling directory (a CSI volume is
   * `csi/<id>/data`, alone in its directory). The whole 80-byte field is
   * rewritten (text, NUL, zero padding, as every writer leaves it); a candidate counts only when
   * the stored CRC then matches, the entry decodes, and it applies cleanly without sharing memory.
   * A wrong name matches the CRC with probability 2^-32 per candidate, so exactly one match is the
   * original; none or several prove nothing.
   */
  const restoreName = (i: number, raw: Buffer): { entry: LogEntry; fixed: Buffer; relpath: string; damaged: number } | undefined => {
    const type = raw.readUInt32LE(LE.type);
    if ((type !== EntryType.FILE && type !== EntryType.MKDIR) || raw.readUInt32LE(LE.crc + 4) !== 0) return undefined;
    const kind = type === EntryType.FILE ? 'file' : 'mkdir';
    const stored = raw.readUInt32LE(LE.crc);
    const field = LE.payload + (kind === 'file' ? FM.relpath : MD.relpath);
    const candidates = new Set<string>();
    for (let k = i + 1; k < end; k++) {
      const d = decided[k];
      if (d?.body.type === 'delete' && d.body.targetIndex === seq[i]) candidates.add(d.body.relpath);
    }
    if (kind === 'mkdir') {
      // A directory: the one later entries need and nobody creates (a CSI volume's csi/<id>).
      const dir = missingDirectory(decided, i, end);
      if (dir !== undefined) candidates.add(dir);
    } else {
      // A file: the name an empty directory lacks.
      const trial = new FamfsTree(limits);
      trial.generation = active.generation;
      for (let k = 0; k < end; k++) trial.apply(k === i ? placeholder(k) : (decided[k] ?? placeholder(k)));
      const damagedText = raw.subarray(field, field + RELPATH_FIELD);
      const nul = damagedText.indexOf(0);
      const damagedBase = damagedText
        .subarray(0, nul < 0 ? RELPATH_FIELD : nul)
        .toString('latin1')
        .split('/')
        .pop();
      for (const dir of trial.nodes()) {
        if (dir.kind !== 'dir' || dir.index >= seq[i] || dir.children.size > 0) continue;
        const bases = new Set<string>(damagedBase ? [damagedBase] : []);
        const parent = trial.lookup(dir.relpath.split('/').slice(0, -1).join('/'));
        if (parent?.kind === 'dir')
          for (const sibling of parent.children.values())
            if (sibling.kind === 'dir') for (const child of sibling.children.values()) if (child.kind === 'file') bases.add(child.name);
        for (const base of bases) candidates.add(`${dir.relpath}/${base}`);
      }
    }
    const found: { entry: LogEntry; fixed: Buffer; relpath: string; damaged: number }[] = [];
    for (const relpath of candidates) {
      const text = Buffer.from(relpath, 'utf8');
      if (text.length >= RELPATH_FIELD) continue;
      const fixed = Buffer.from(raw);
      fixed.fill(0, field, field + RELPATH_FIELD);
      text.copy(fixed, field);
      if (crc(fixed, 0, LE.crc) !== stored) continue;
      const entry = isValidAt(fixed, i, extended, windowOf[i]);
      if (!entry || entry.body.type !== kind || entry.body.relpath !== relpath || score(i, entry) === undefined) continue;
      let damaged = 0;
      for (let p = field; p < field + RELPATH_FIELD; p++) if (fixed[p] !== raw[p]) damaged++;
      found.push({ entry, fixed, relpath, damaged });
    }
    return found.length === 1 ? found[0] : undefined;
  };
  const plan: { i: number; entry: LogEntry; raw?: Buffer }[] = [];
  const refused: string[] = [];
  const drop = new Set(o.drop ?? []);
  for (let i = 0; i < end; i++) {
    if (decided[i]) continue;
    const raw = slot(i);
    const what = describeRaw(raw);
    const x = seq[i]; // the log index the slot holds (== i in famfs' own log)
    const take = (entry: LogEntry, action: string, bytes?: Buffer) => {
      report.actions.push(action);
      plan.push({ i, entry, ...(bytes ? { raw: bytes } : {}) });
      decided[i] = entry;
      for (const u of unitsOf(entry)) owner.set(u, i);
    };
    const proven = correctOneByte(raw, i, extended, windowOf[i]);
    if (proven) {
      const e = isValidAt(proven.fixed, i, extended, windowOf[i])!;
      take(
        e,
        `salvaged log entry ${x} (${describeRaw(proven.fixed)}): one damaged byte at offset ${proven.at} restored (the CRC proves the original bytes)`,
        proven.fixed,
      );
      continue;
    }
    const named = restoreName(i, raw);
    if (named) {
      take(
        named.entry,
        `salvaged log entry ${x} (${what}): ${named.damaged} damaged byte${named.damaged === 1 ? '' : 's'} of its name restored to "${named.relpath}", ` +
          `the ${named.entry.body.type === 'file' ? 'file its directory lacks' : 'directory later entries need'} (the CRC proves the name and every other byte)`,
        named.fixed,
      );
      continue;
    }
    if (drop.has(x)) {
      take(
        placeholder(i),
        `replaced unreadable log entry ${x} (${what}) by the empty directory lost+found.${x} as the operator asked (--drop ${x}); later entries keep their place`,
      );
      report.dropped.push({ index: x, what });
      continue;
    }
    const dir = missingDirectory(decided, i, end);
    if (dir !== undefined) {
      const entry: LogEntry = { index: x, seqnum: x, body: { type: 'mkdir', relpath: dir, mode: 0o755, uid: 0, gid: 0 } };
      if (score(i, entry) !== undefined) {
        take(entry, `rebuilt unreadable log entry ${x} (${what}) as directory "${dir}" (mode 0755, root), which later entries need`);
        continue;
      }
    }
    const guess = decodeIgnoringChecks(raw, x, extended);
    if (guess && guess.body.type !== 'file' && score(i, guess) !== undefined) {
      take(guess, `re-encoded unreadable log entry ${x} (${what}): a ${guess.body.type} entry that applies cleanly (it holds no memory)`);
      continue;
    }
    if (guess?.body.type === 'file') {
      const q: LogEntry = {
        index: x,
        seqnum: x,
        body: { type: 'file', relpath: quarantineName(x), size: guess.body.size, mode: 0, uid: 0, gid: 0, flags: guess.body.flags, fmap: guess.body.fmap },
      };
      if (score(i, q) !== undefined) {
        const bytes = fmapExtents(guess.body.fmap).reduce((n, x) => n + x.len, 0);
        take(
          q,
          `quarantined log entry ${x} (${what}): the CRC cannot prove its bytes, so its memory stays reserved as ${quarantineName(x)} (mode 000) until an operator releases it (famfs repair --release ${x})`,
        );
        report.quarantined.push({ index: x, relpath: quarantineName(x), bytes, what });
        continue;
      }
    }
    refused.push(
      `log entry ${x} (${what}) cannot be proven and names no memory it could own${guess?.body.type === 'file' ? ' (its extents overlap another file or leave the data area)' : ''}`,
    );
  }
  if (refused.length > 0) {
    const ids = refused.map((r) => Number(/log entry (\d+)/.exec(r)![1]));
    throw new FamfsError(
      'ECORRUPT',
      `${refused.join('; ')}. Its memory is unknown: pods may map it. Nothing was written. After making sure no pod uses the file, ` +
        `run famfs repair ${ids.map((n) => `--drop ${n}`).join(' ')} (the slot becomes an empty directory and later entries keep their place)`,
    );
  }
  // Every decision is made before anything is written: a refused repair writes nothing.
  if (rewriteHeader) {
    media.write(base, encodeLogHeader(sb.logLen).subarray(0, LH.nextSeqnum));
    media.flush(base, LH.SIZE);
  }
  for (const p of plan) {
    media.write(base + entryOffset(p.i), p.raw ?? encodeEntry(seq[p.i], p.entry.body));
    media.flush(base + entryOffset(p.i), LE.SIZE);
  }

  // 4. Counters, and garbage right after the end.
  // A compacted log's next log index is never lowered: hosts replayed up to it and acked it, and
  // an append below it would be an index they believe they have seen.
  const nextSeq = compacted ? Math.max(seqEnd, end > 0 ? seq[end - 1] + 1 : 0) : end;
  const current = decodeLogHeaderSafe(media.read(base, LH.SIZE));
  if (!current || current.nextIndex !== end || current.nextSeqnum !== nextSeq) {
    media.write(base + LH.nextSeqnum, encodeLogCounters(nextSeq, end));
    media.flush(base + LH.nextSeqnum, 16);
    report.actions.push(
      compacted
        ? `set the log counters to ${end} slots, next log index ${nextSeq} (were ${current ? `${current.nextIndex} slots, next log index ${current.nextSeqnum}` : 'unreadable'})`
        : `set the log counters to ${end} entries (were ${current ? `${current.nextSeqnum}/${current.nextIndex}` : 'unreadable'})`,
    );
  }
  if (end < cap && !isZero(end)) {
    media.write(base + entryOffset(end), Buffer.alloc(LE.SIZE));
    media.flush(base + entryOffset(end), LE.SIZE);
    report.actions.push(`cleared the invalid slot ${end} right after the end of the log`);
  }

  // 5. The extension block, and host slots too damaged to read.
  try {
    const block = readExtBlock(media, sb.uuid);
    if (block) {
      // The slot lock too (after the writer lock, the one order): an ack of this host must not land between the read and the clear.
      const cleared = withHostSlotLock(media, () => clearDamagedHostSlots(media, block.slotCount));
      if (cleared.length) report.actions.push(`cleared damaged host slots ${cleared.join(', ')} (live hosts re-ack within seconds)`);
    } else {
      const stale = readAnyExtBlock(media);
      if (stale) {
        const now = o.now ?? Date.now();
        const fresh = initExtBlock(media, sb.uuid, o.hostUuid, now, undefined, stale.epoch + 1);
        report.actions.push(
          `re-made the famfs-csi extension area left by an earlier file system (${stale.fsUuid}): its host slots are cleared, epoch is now ${fresh.epoch}`,
        );
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
 * A superblock whose version and CRC disagree because a version upgrade was torn. The version is
 * chosen from what the device holds: a compacted log (a generation record >= 1) needs the
 * compaction version; a delete entry in the log needs the extension version (plain famfs must keep
 * refusing the device); otherwise famfs' own 48, which keeps the device readable by famfs. The CRC
 * is recomputed for that version.
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
  // Any sign of a compaction (a record, the committed-generation line) keeps the compaction version.
  const gens = inspectGenerations(media, sb.uuid);
  const compacted = gens.slots.some((x) => x.state !== 'empty' && x.state !== 'foreign') || gens.commit.state === 'valid' || gens.commit.state === 'damaged';
  const version = compacted ? FAMFS_CSI_EXT2_VERSION : extension ? FAMFS_CSI_EXT_VERSION : FAMFS_VERSION;
  const fixed = Buffer.from(raw);
  fixed.writeBigUInt64LE(version, SB.version);
  fixed.writeBigUInt64LE(BigInt(superblockCrc(fixed)), SB.crc);
  media.write(SUPERBLOCK_OFFSET, fixed);
  media.flush(SUPERBLOCK_OFFSET, SB.SIZE);
  report.actions.push(
    `superblock: torn version upgrade (version ${sb.version} with the CRC of version ${tornVersionCrcOf(raw)}); set version ${version} ` +
      `(${compacted ? 'the log was compacted' : extension ? 'the log holds famfs-csi delete entries' : 'the log holds no famfs-csi extension entry, so famfs can read it again'}) and its CRC`,
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
