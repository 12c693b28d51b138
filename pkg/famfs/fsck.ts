/**
 * Consistency check of a famfs device. Never throws on bad metadata: everything wrong is named
 * in the report, and `clean` is true only when nothing is.
 */
import { Allocator, SpaceSummary } from './allocator';
import { ActiveLog, GENERATION_ZERO, inspectGenerations } from './generation';
import { readAnyExtBlock, readExtBlock, readHostSlots, reclaimHorizon } from './hosts';
import {
  decodeEntry,
  decodeLogHeader,
  decodeSuperblock,
  entryOffset,
  HostSlot,
  ALLOC_UNIT,
  LE,
  LH,
  logCapacity,
  SB,
  SUPERBLOCK_OFFSET,
  validateLogHeader,
  validateSuperblock,
} from './layout';
import { fmapCapacity } from './fmap';
import { Media } from './media';
import { fsckHead, fsckHosts, NativeLogTree, nativeTreeAvailable, type FsckHead } from './native-tree';
import { isQuarantine, QUARANTINE_PREFIX } from './repair';
import { LogReader, ReplayStop } from './replay';
import { FamfsTree, reservedBytes, TreeLimits, TreeProblem } from './tree';

export interface FsckReport {
  clean: boolean;
  superblock?: {
    uuid: string;
    systemUuid: string;
    deviceSize: number;
    logLen: number;
    version: string;
    famfsCsiExtensions: boolean;
    devicePath: string;
  };
  log?: {
    entriesUsed: number;
    entriesTotal: number;
    replayedEntries: number;
    /** Log generation in use (0: famfs' own log; each compaction adds one) and where it is. */
    generation: number;
    offset: number;
    /** The next log index (equals entriesUsed until the log is compacted). */
    nextIndex: number;
  };
  files: number;
  directories: number;
  space?: SpaceSummary;
  fencingEpoch?: number;
  hosts: HostSlot[];
  /** Files repair quarantined (lost+found.<index>): memory held until an operator releases it. */
  quarantined: { index: number; relpath: string; bytes: number }[];
  errors: string[];
  warnings: string[];
}

export interface FsckOptions {
  /**
   * false: check the log with the JavaScript tree and allocator (what a build without the native
   * addon does) instead of the native log tree. Both report the same.
   */
  native?: boolean;
}

/** What fsck needs from a replay of the log: counts, problems, quarantined files, and the space map. */
interface CheckedLog {
  stop?: ReplayStop;
  /** Slots applied. */
  slot: number;
  nextIndex: number;
  files: number;
  dirs: number;
  problems: readonly TreeProblem[];
  quarantined: FsckReport['quarantined'];
  space(horizon: number): SpaceSummary;
}

/** Replay into a FamfsTree and rebuild an Allocator from it (replay's own code). */
function checkLogTree(reader: LogReader, limits: TreeLimits, logLen: number, active: ActiveLog, header: Head['header']): CheckedLog {
  const tree = new FamfsTree(limits, { native: false });
  tree.generation = active.generation;
  const { entries, stop } = reader.entries(0, header.nextIndex, { min: 0, max: header.nextSeqnum });
  for (const e of entries) tree.apply(e);
  if (!stop) tree.nextIndex = Math.max(tree.nextIndex, header.nextSeqnum);
  // Quarantine files live in the root (lost+found.<index>, made there by repair): no walk over every file.
  const quarantined: FsckReport['quarantined'] = [];
  for (const f of tree.root.children.values()) {
    if (f.kind === 'file' && isQuarantine(f)) quarantined.push({ index: f.index, relpath: f.relpath, bytes: fmapCapacity(f.fmap) });
  }
  return {
    ...(stop ? { stop } : {}),
    slot: tree.slot,
    nextIndex: tree.nextIndex,
    files: tree.fileCount,
    dirs: tree.dirCount,
    problems: tree.problems,
    quarantined,
    space: (horizon) => {
      const alloc = new Allocator(tree, limits.deviceSize, logLen);
      alloc.setLogRegion2(active.altOffset);
      alloc.rebuild(horizon);
      return alloc.summary();
    },
  };
}

/** The same through the native log tree: no JavaScript object per entry (see native-tree.ts). */
function checkLogNative(reader: LogReader, limits: TreeLimits, logLen: number, active: ActiveLog, header: Head['header']): CheckedLog {
  const tree = new NativeLogTree(limits, active.generation, header.nextIndex);
  const stop = reader.walk(0, header.nextIndex, { min: 0, max: header.nextSeqnum }, tree.sink());
  if (!stop) tree.nextIndex = Math.max(tree.nextIndex, header.nextSeqnum);
  const units = Math.floor(limits.deviceSize / ALLOC_UNIT);
  return {
    ...(stop ? { stop } : {}),
    slot: tree.slot,
    nextIndex: tree.nextIndex,
    files: tree.fileCount,
    dirs: tree.dirCount,
    problems: tree.problems(),
    quarantined: tree.rootFiles(QUARANTINE_PREFIX).filter((f) => isQuarantine({ kind: 'file', relpath: f.relpath, index: f.index })),
    space: (horizon) => {
      const sp = tree.space(horizon, limits.deviceSize, logLen, active.altOffset);
      const free = sp.freeUnits * ALLOC_UNIT;
      // Allocator.summary; the clean map is not loaded by fsck (cleanFreeBytes 0 both ways).
      return {
        deviceBytes: units * ALLOC_UNIT,
        allocatedBytes: units * ALLOC_UNIT - free,
        freeBytes: free,
        cleanFreeBytes: 0,
        largestFreeBytes: sp.largestFreeRun * ALLOC_UNIT,
        pendingFreeBytes: sp.pendingUnits * ALLOC_UNIT,
        collisions: sp.collisions,
      };
    },
  };
}

/** What fsck reads on with once the superblock and the active log's header are known valid. */
interface Head {
  sb: { uuid: string; logLen: number; deviceSize: number };
  extended: boolean;
  active: ActiveLog;
  header: { nextIndex: number; nextSeqnum: number };
}

/** The superblock, the generation records (compacted logs) and the log header, checked in JavaScript; undefined when fsck ends there (the report says why). */
function checkHead(media: Media, report: FsckReport): Head | undefined {
  media.invalidate(SUPERBLOCK_OFFSET, SB.SIZE);
  const sbRaw = media.read(SUPERBLOCK_OFFSET, SB.SIZE);
  const sbCheck = validateSuperblock(sbRaw, media.size);
  if (!sbCheck.ok) {
    report.errors.push(...sbCheck.problems.map((p) => `superblock: ${p}`));
    return undefined;
  }
  const sb = decodeSuperblock(sbRaw);
  report.superblock = {
    uuid: sb.uuid,
    systemUuid: sb.systemUuid,
    deviceSize: sb.deviceSize,
    logLen: sb.logLen,
    version: sb.version.toString(),
    famfsCsiExtensions: sbCheck.extended,
    devicePath: sb.devicePath,
  };
  let active: ActiveLog = GENERATION_ZERO;
  if (sbCheck.compacted) {
    const gens = inspectGenerations(media, sb.uuid);
    report.warnings.push(...gens.notes.map((n) => `log generation records: ${n}`));
    if (!gens.active) {
      report.errors.push(`log generation records: ${gens.problem}; run famfs repair on the master (it rebuilds the records from the log regions)`);
      return undefined;
    }
    active = gens.active;
    const a = active.altOffset;
    if (a !== 0 && (a % ALLOC_UNIT !== 0 || a < reservedBytes(sb.logLen) || a + sb.logLen > sb.deviceSize)) {
      report.errors.push(`log generation record: second log region at 0x${a.toString(16)} is outside the data area`);
      return undefined;
    }
  }
  const compacted = active.generation > 0;
  media.invalidate(active.offset, LH.SIZE);
  const lhRaw = media.read(active.offset, LH.SIZE);
  const lhProblems = validateLogHeader(lhRaw, sb.logLen, compacted);
  if (lhProblems.length) {
    report.errors.push(...lhProblems.map((p) => `log header${compacted ? ` (generation ${active.generation})` : ''}: ${p}`));
    return undefined;
  }
  return { sb, extended: sbCheck.extended, active, header: decodeLogHeader(lhRaw) };
}

/** checkHead's answer and report fields from what fsckHead read (a valid superblock and generation-0 header). */
function fromNativeHead(h: FsckHead, report: FsckReport): Head {
  report.superblock = {
    uuid: h.uuid,
    systemUuid: h.systemUuid,
    deviceSize: h.deviceSize,
    logLen: h.logLen,
    version: h.version,
    famfsCsiExtensions: h.extended,
    devicePath: h.devicePath,
  };
  return {
    sb: { uuid: h.uuid, logLen: h.logLen, deviceSize: h.deviceSize },
    extended: h.extended,
    active: GENERATION_ZERO,
    header: { nextIndex: h.nextIndex, nextSeqnum: h.nextSeqnum },
  };
}

/**
 * A one-shot check cannot judge host liveness (that takes a master watching slots for hostLiveMs on
 * its own clock), so every host with a slot counts as live: "pending free" is what some host may
 * still hold back.
 */
export function fsck(media: Media, opts: FsckOptions = {}): FsckReport {
  const report: FsckReport = { clean: false, files: 0, directories: 0, hosts: [], quarantined: [], errors: [], warnings: [] };
  const native = (opts.native ?? true) && nativeTreeAvailable();
  // A valid superblock and generation-0 header in one native call; anything else (damage to word,
  // a compacted log) goes through the JavaScript checks below.
  const nh = native ? fsckHead(media) : undefined;
  const head = nh ? fromNativeHead(nh, report) : checkHead(media, report);
  if (!head) return report;
  const { sb, extended, active, header } = head;
  const compacted = active.generation > 0;
  const limits = { deviceSize: sb.deviceSize, reservedBytes: reservedBytes(sb.logLen) };
  const reader = new LogReader(
    media,
    sb.logLen,
    () => extended,
    () => active,
  );
  const check = native ? checkLogNative : checkLogTree;
  const log = check(reader, limits, sb.logLen, active, header);
  const stop = log.stop;
  if (stop)
    report.errors.push(
      `log ${compacted ? 'slot' : 'entry'} ${stop.index}: ${stop.reason}; replay stops there, ${header.nextIndex - stop.index} entries not applied`,
    );
  for (const p of log.problems) report.errors.push(`log entry ${p.index}: ${p.message}`);
  report.log = {
    entriesUsed: header.nextIndex,
    entriesTotal: logCapacity(sb.logLen),
    replayedEntries: log.slot,
    generation: active.generation,
    offset: active.offset,
    nextIndex: header.nextSeqnum,
  };
  // Past the end: one valid entry is an interrupted append (or a counter lowered by one); more
  // than one means next_index went backwards and hosts may serve files the counter disowns.
  // In a compacted log the slot after the end must hold the next log index to count.
  let validPast = 0;
  const cap = logCapacity(sb.logLen);
  while (header.nextIndex + validPast < cap) {
    const at = active.offset + entryOffset(header.nextIndex + validPast);
    media.invalidate(at, LE.SIZE);
    const raw = media.read(at, LE.SIZE);
    try {
      const want = header.nextSeqnum + validPast;
      decodeEntry(raw, header.nextIndex + validPast, extended, compacted ? { min: want, max: want + 1 } : undefined);
      validPast++;
    } catch {
      if (validPast === 0 && raw.some((b) => b !== 0))
        report.warnings.push(`log slot ${header.nextIndex} (past the end) holds an invalid partial entry; it is ignored and will be overwritten`);
      break;
    }
  }
  report.quarantined = log.quarantined;
  if (report.quarantined.length > 0) {
    const bytes = report.quarantined.reduce((n, q) => n + q.bytes, 0);
    report.warnings.push(
      `${report.quarantined.length} quarantined entr${report.quarantined.length === 1 ? 'y holds' : 'ies hold'} ${bytes} bytes (${report.quarantined.map((q) => q.relpath).join(', ')}): ` +
        `repair could not prove their bytes, so their memory stays reserved; once no pod uses it: famfs repair --release N`,
    );
  }
  report.files = log.files;
  report.directories = log.dirs;

  let horizon = log.nextIndex;
  // This file system's block and undamaged slots in one native call; anything else in JavaScript.
  const nhosts = nh ? fsckHosts(media, sb.uuid) : undefined;
  if (nhosts) {
    report.fencingEpoch = nhosts.epoch;
    report.hosts = nhosts.hosts;
    horizon = reclaimHorizon(report.hosts, log.nextIndex);
  } else
    try {
      const block = readExtBlock(media, sb.uuid);
      const any = block ? block : readAnyExtBlock(media);
      if (!block && any) {
        report.warnings.push(
          `famfs-csi extension area belongs to ${any.revision === 1 ? 'an older famfs-csi (no file system UUID)' : `another file system (${any.fsUuid})`}: its epoch and host slots are ignored; the master re-makes it on first use (or famfs repair)`,
        );
      }
      if (block) {
        report.fencingEpoch = block.epoch;
        report.hosts = readHostSlots(media, block.slotCount);
        for (const h of report.hosts.filter((x) => x.damaged)) {
          report.warnings.push(`host slot ${h.slot} is damaged: it holds back reuse of deleted memory until its host re-acks or famfs repair clears it`);
        }
        horizon = reclaimHorizon(report.hosts, log.nextIndex);
      }
    } catch (e) {
      report.errors.push(`famfs-csi extension block: ${(e as Error).message}`);
    }
  // A host that acked past next_index replayed entries the counter disowns: next_index went
  // backwards (a master appending there would overwrite them). One valid entry past the end that
  // no host has seen is what an interrupted append leaves (the next master commits it).
  const ahead = report.hosts.filter((h) => !h.damaged && h.ackedIndex > header.nextSeqnum);
  if (ahead.length > 0) {
    report.errors.push(
      `next_index ${header.nextIndex} is behind what hosts replayed (${ahead.map((h) => `${h.name || h.hostUuid} acked ${h.ackedIndex}`).join(', ')}): ` +
        `the counter went backwards${validPast ? `; entries ${header.nextIndex}..${header.nextIndex + validPast - 1} are valid` : ''}; run famfs repair to commit them`,
    );
  } else if (validPast === 1) {
    report.warnings.push(
      `log slot ${header.nextIndex} (past the end) holds a valid entry that no host has acked: an append was interrupted; the next master commits it (or famfs repair)`,
    );
  } else if (validPast > 1) {
    report.errors.push(
      `next_index ${header.nextIndex} is behind the log: entries ${header.nextIndex}..${header.nextIndex + validPast - 1} are valid (the counter went backwards); run famfs repair to commit them`,
    );
  }
  report.space = log.space(horizon);
  if (report.space.collisions > 0) report.errors.push(`${report.space.collisions} allocation units are claimed by more than one file (cross-linked files)`);
  report.clean = report.errors.length === 0;
  return report;
}
