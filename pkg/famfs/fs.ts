/**
 * One famfs instance on one Media: superblock, replayed tree, allocator and the (single) writer.
 *
 * Data flows one way: media → log → tree → allocator. Mutations append an entry to the log and
 * then apply that same decoded entry to the tree, exactly as a replaying host would.
 */
import { randomUUID } from 'crypto';
import { Allocator, InterleaveParams, SpaceSummary } from './allocator';
import { readCleanMap, writeCleanUnits } from './clean-map';
import { withHostSlotLock, withWriterLock } from './writer-lock';
import { FamfsError } from './errors';
import { ActiveLog, clearLogGenRecords, GENERATION_ZERO, inspectGenerations, readActiveLog, writeLogGenCommit, writeLogGenRecord } from './generation';
import {
  ackReplay,
  appendEviction,
  checkHostLiveMs,
  HostLiveness,
  HostWatch,
  initExtBlock,
  readAnyExtBlock,
  readEvictions,
  peekExtBlock,
  extBlockBytes,
  readExtBlock,
  readHostSlots,
  upgradeExtBlock,
  writeExtBlock,
} from './hosts';
import {
  ALLOC_UNIT,
  checkRelpath,
  DEFAULT_HOST_LIVE_MS,
  DEFAULT_HOST_SLOTS,
  DEFAULT_LOG_LEN,
  encodeEntry,
  encodeLogCounters,
  encodeLogHeader,
  encodeSuperblock,
  entryOffset,
  EntryBody,
  Fmap,
  EvictionRecord,
  Extent,
  ExtBlock,
  EXT_REVISION_CLEAN_MAP,
  EXT_BLOCK_OFFSET,
  FAMFS_CSI_EXT_VERSION,
  FAMFS_CSI_EXT2_VERSION,
  FAMFS_VERSION,
  FileFlags,
  LE,
  LH,
  LOG_GEN_COMMIT_OFFSET,
  LOG_GEN_COMMIT,
  LOG_GEN_OFFSET,
  LOG_OFFSET,
  LogEntry,
  LogHeader,
  logCapacity,
  MIN_LOG_LEN,
  OMF_MAJOR,
  OMF_MINOR,
  SB,
  Superblock,
  SUPERBLOCK_OFFSET,
  validateSuperblock,
  ZERO_UUID,
  decodeSuperblock,
  bytesToUuid,
  uuidToBytes,
} from './layout';
import { fmapCapacity, fmapExtents } from './fmap';
import { Media, readFresh, writeFlush, writeFlushIf } from './media';
import { isQuarantine } from './repair';
import { CatchUpResult, LogReader, RewrittenEntry } from './replay';
import { DirNode, FamfsTree, FileNode, TreeChange, reservedBytes } from './tree';

export interface MkfsOptions {
  logLen?: number;
  /** System UUID of the master host (famfs' /opt/famfs/system_uuid). */
  systemUuid: string;
  /** Device path recorded in the superblock (informational, max 63 bytes). */
  devicePath: string;
  /** Overwrite an existing famfs superblock. */
  force?: boolean;
  /** The host liveness window written into the extension block (default 60 s; see hosts.ts). */
  hostLiveMs?: number;
  /**
   * Every byte of the device reads zero (default: the Media says so, see Media.unwritten): the data
   * area is marked clean at once. Otherwise it starts dirty and is zeroed once, by zeroFree.
   */
  zeroed?: boolean;
  now?: () => number;
}

export interface OpenOptions {
  /** This host's system UUID; only the master (sb system UUID) may append. */
  hostUuid?: string;
  hostName?: string;
  readOnly?: boolean;
  /**
   * Remember what identifies each replayed entry and re-check on every catch-up (hosts that serve
   * files: the FUSE server, the node plugin). See rewrittenEntries().
   */
  watchRewrites?: boolean;
  /** The fencing epoch this writer holds; appends fail with EFENCED once the shared epoch moves on. */
  fenceEpoch?: number;
  /**
   * Master: a host whose slot this master watched unchanged for this long no longer holds back
   * reclaim of deleted files' memory. Raises the device's window at takeover (never lowers it:
   * hosts fence themselves by the device's value; see hosts.ts upgradeExtBlock).
   */
  hostLiveMs?: number;
  /** Wall clock (ms): informational timestamps only, never a liveness decision. */
  now?: () => number;
  /** The master's monotonic clock (ms) that judges host liveness (default performance.now). */
  monotonicNow?: () => number;
  /**
   * Compact the log (see compact()) when a write would not fit, and when the log is more than
   * this fraction full and holds garbage. 0 disables compaction by writes; default 0.75.
   */
  compactAt?: number;
  /**
   * Creates leave one free log entry for every live file and directory, so every one of them can
   * always be deleted, whatever compaction can reclaim (a host that lags keeps deletes pending).
   * The CSI controller sets this: DeleteVolume must never fail for log space.
   */
  reserveDeleteEntries?: boolean;
  /**
   * false: keep the tree as JavaScript objects from the first entry (what a build without the
   * addon does; the reference the native log tree is checked against). Default: replay through
   * the native log tree and make node objects when they are looked up (see tree.ts).
   */
  nativeTree?: boolean;
}

/** One step of a compaction, for progress output (famfs compact prints one line per step). */
export interface CompactProgress {
  step: 'plan' | 'region' | 'copy' | 'zero' | 'flush' | 'verify' | 'superblock' | 'switch' | 'done';
  /** Entries written so far / to write (copy), or the generation (switch, done). */
  done?: number;
  total?: number;
}

export interface CompactOptions {
  /** Entries written per copy step (default 1024). */
  stepEntries?: number;
  /** Called after every step; may block (famfs compact --throttle sleeps here). */
  onProgress?: (p: CompactProgress) => void;
}

export interface CompactResult {
  compacted: boolean;
  /** Why nothing was done (compacted false). */
  reason?: string;
  generation: number;
  entriesBefore: number;
  entriesAfter: number;
  /** Pairs of entries (create + delete) that had to stay because some host may still map them. */
  pendingKept: number;
  ms: number;
}

/** An eviction record with the host's name and the deleted files whose memory it made reusable. */
export interface EvictionReport extends EvictionRecord {
  name: string;
  reusable: { deleteIndex: number; relpath: string; extents: Extent[]; bytes: number }[];
  reusableBytes: number;
}

export interface CreateFileOptions {
  mode?: number;
  uid?: number;
  gid?: number;
  flags?: number;
  interleave?: InterleaveParams;
  /**
   * The file must read zeros when it becomes visible (required when memory may be reused). Clean
   * units (clean map) are placed first and need no work; any other unit is zeroed here, before the
   * entry is written, and counted in zeroStats (the create waited for zeroing).
   */
  zero?: boolean;
  random?: () => number;
  /**
   * Make the missing parent directories too (with this mode, uid and gid), like mkdir -p, in the
   * same write: everything is checked (names, room for the file, log entries for all of them)
   * before the first entry is appended, so a refused create leaves no directory behind.
   */
  parents?: MkdirOptions;
}

/** What zeroing cost, since this FamfsFs was opened. */
export interface ZeroStats {
  /** Creates (zero: true) that found no clean room of their shape and zeroed memory themselves. */
  createsWaited: number;
  /** Bytes those creates zeroed. */
  createWaitBytes: number;
  /** Bytes zeroed by zeroFree (freed memory past the horizon, a fresh device) and marked clean. */
  freeZeroedBytes: number;
}

export interface ZeroFreeOptions {
  /** Stop after zeroing about this many bytes (default: everything dirty and free). */
  maxBytes?: number;
  /** Bytes zeroed, flushed and marked clean per step (default 64 MiB, a multiple of 2 MiB). */
  stepBytes?: number;
  /**
   * Release the pages instead of writing zeros where the medium can (Media.discard: an emulation
   * file gets a hole, which reads zero, so a sparse device stays sparse). A devdax is zeroed.
   */
  discard?: boolean;
  /** Called after each step, once its units are marked clean. May block (famfs zero --throttle). */
  onProgress?: (p: { done: number; total: number }) => void;
}

export interface ZeroFreeResult {
  zeroedBytes: number;
  /** Free bytes still dirty afterwards (0 once everything free is clean). */
  dirtyFreeBytes: number;
  /** False when the clean map is not in use (extension block below revision 4, or no block). */
  cleanMap: boolean;
}

export interface MkdirOptions {
  mode?: number;
  uid?: number;
  gid?: number;
  parents?: boolean;
}

export interface UsageReport extends SpaceSummary {
  logEntriesUsed: number;
  logEntriesTotal: number;
  files: number;
  directories: number;
  /** Entries famfs repair quarantined (lost+found.<index> files) and the memory they hold. */
  quarantinedEntries: number;
  quarantinedBytes: number;
}

const MIN_DEVICE_SIZE = (n: number) => reservedBytes(n) + ALLOC_UNIT;
const ZERO_CHUNK = Buffer.alloc(4 << 20);
/**
 * Deletes waiting for the horizon above which a create reclaims before it places, even when clean
 * memory would do: the pending list stays short where nothing else reclaims (no background zeroer).
 */
const RECLAIM_EAGER_PENDING = 256;
/** An unused log slot: all zero. */
const EMPTY_ENTRY = Buffer.alloc(LE.SIZE);

function checkId(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xfffffffe) throw new FamfsError('EINVAL', `${what} ${v} must be an integer 0..4294967294`);
  return v;
}
function checkMode(v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0o7777) throw new FamfsError('EINVAL', `mode 0${v.toString(8)} must be permission bits 0..07777`);
  return v;
}

export class FamfsFs {
  readonly tree: FamfsTree;
  readonly allocator: Allocator;
  private readonly reader: LogReader;
  private readonly now: () => number;
  private readonly watch: HostWatch;
  /** Entries this master committed because they sat valid past next_index (see crossCheckLog). */
  readonly rolledForward: { from: number; to: number }[] = [];
  /** The header's counters were cross-checked against the entries since this host became master. */
  private logChecked = false;
  /** Log entries in use right after this process last compacted (auto-compaction hysteresis). */
  private compactedTo = 0;
  /** False during the first replay: the allocator is built once, after it. */
  private ready = false;
  /**
   * The clean map (extension revision 4) as this master uses it: 'unknown' until the first write
   * (and again after a takeover: a new master trusts only shared memory), 'off' when the block
   * has no map, 'on' once the allocator holds what the shared map says.
   */
  private cleanMap: 'unknown' | 'off' | 'on' = 'unknown';
  /** Files another writer placed on units the shared map still calls clean: cleared before the next write. */
  private staleClean: Fmap[] = [];
  readonly zeroStats: ZeroStats = { createsWaited: 0, createWaitBytes: 0, freeZeroedBytes: 0 };

  private constructor(
    readonly media: Media,
    private sb: Superblock,
    private extended: boolean,
    private compacted: boolean,
    private readonly opts: OpenOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.watch = new HostWatch(opts.monotonicNow ?? (() => performance.now()));
    this.tree = new FamfsTree({ deviceSize: sb.deviceSize, reservedBytes: reservedBytes(sb.logLen) }, { native: opts.nativeTree });
    this.reader = new LogReader(
      media,
      sb.logLen,
      () => this.extended || this.rereadExtended(),
      () => this.locateLog(),
    );
    this.reader.watchRewrites = opts.watchRewrites === true;
    this.tree.generation = this.reader.activeLog.generation;
    this.allocator = new Allocator(this.tree, sb.deviceSize, sb.logLen);
    this.allocator.setLogRegion2(this.reader.activeLog.altOffset);
    this.catchUp();
    this.allocator.rebuild(this.horizon());
    this.ready = true;
  }

  /** Write a fresh famfs: log first, superblock last, so a crash never leaves a half-made fs that validates. */
  static mkfs(media: Media, o: MkfsOptions): FamfsFs {
    const logLen = o.logLen ?? DEFAULT_LOG_LEN;
    const hostLiveMs = checkHostLiveMs(o.hostLiveMs ?? DEFAULT_HOST_LIVE_MS);
    // Asked before mkfs writes anything itself.
    const zeroed = o.zeroed ?? media.unwritten === true;
    if (!Number.isInteger(logLen) || logLen < MIN_LOG_LEN || (logLen & (logLen - 1)) !== 0) {
      throw new FamfsError('EINVAL', `log length ${logLen} must be a power of two of at least 8 MiB`);
    }
    const deviceSize = Math.floor(media.size / ALLOC_UNIT) * ALLOC_UNIT;
    if (deviceSize < MIN_DEVICE_SIZE(logLen)) {
      throw new FamfsError('EINVAL', `device of ${media.size} bytes is too small for a ${logLen}-byte log (need at least ${MIN_DEVICE_SIZE(logLen)})`);
    }
    // Under the writer lock from the look at the old superblock to the new file system's first
    // write: a writer of this host mid-append (a controller next to `famfs mkfs --force`) passes its
    // fence check on the old UUID, which mkfs only replaces at its end, and would write its entry
    // and header into the log mkfs is making. With the lock it finishes first, or waits and then
    // finds the new UUID (EFENCED).
    return withWriterLock(media, () => FamfsFs.mkfsLocked(media, o, logLen, hostLiveMs, zeroed, deviceSize));
  }

  private static mkfsLocked(media: Media, o: MkfsOptions, logLen: number, hostLiveMs: number, zeroed: boolean, deviceSize: number): FamfsFs {
    media.invalidate(SUPERBLOCK_OFFSET, SB.SIZE);
    const existing = validateSuperblock(media.read(SUPERBLOCK_OFFSET, SB.SIZE));
    if (existing.ok && !o.force) throw new FamfsError('EEXIST', 'the device already holds a famfs file system; pass --force to destroy it');
    // Kill the old superblock first: from here until the end, the device is not a valid famfs.
    media.write(SUPERBLOCK_OFFSET, Buffer.alloc(8));
    media.flush(SUPERBLOCK_OFFSET, 8);
    for (let off = 0; off < logLen; off += ZERO_CHUNK.length) {
      media.write(LOG_OFFSET + off, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, logLen - off)));
    }
    media.write(LOG_OFFSET, encodeLogHeader(logLen));
    media.flush(LOG_OFFSET, logLen);
    const uuid = randomUUID();
    initExtBlock(media, uuid, o.systemUuid, (o.now ?? Date.now)(), DEFAULT_HOST_SLOTS, 1, hostLiveMs);
    clearLogGenRecords(media);
    media.write(
      SUPERBLOCK_OFFSET,
      encodeSuperblock({
        version: FAMFS_VERSION,
        logOffset: LOG_OFFSET,
        logLen,
        allocUnit: ALLOC_UNIT,
        omfMajor: OMF_MAJOR,
        omfMinor: OMF_MINOR,
        uuid,
        devUuid: randomUUID(),
        systemUuid: o.systemUuid,
        flags: 0,
        deviceSize,
        deviceUuid: ZERO_UUID,
        devicePath: o.devicePath.slice(0, 63),
      }),
    );
    media.flush(SUPERBLOCK_OFFSET, SB.SIZE);
    const f = FamfsFs.open(media, { hostUuid: o.systemUuid, now: o.now });
    if (zeroed) f.markFreeClean();
    return f;
  }

  /** mkfs of a device that reads all zeros: every free unit is clean, without writing it. */
  private markFreeClean(): void {
    this.exclusive(() => this.markFreeCleanLocked());
  }

  private markFreeCleanLocked(): void {
    this.prepareWrite();
    if (this.cleanMap !== 'on') return;
    const runs = this.allocator.dirtyFreeRuns();
    writeCleanUnits(this.media, this.sb.uuid, this.deviceUnits, runs, true);
    for (const r of runs) this.allocator.noteZeroed(r.start, r.count);
  }

  private get deviceUnits(): number {
    return Math.floor(this.sb.deviceSize / ALLOC_UNIT);
  }

  static open(media: Media, opts: OpenOptions = {}): FamfsFs {
    media.invalidate(SUPERBLOCK_OFFSET, SB.SIZE);
    const raw = media.read(SUPERBLOCK_OFFSET, SB.SIZE);
    const check = validateSuperblock(raw, media.size);
    if (!check.ok) {
      const code = check.problems[0]?.startsWith('no famfs superblock') ? 'ENOTFAMFS' : 'ECORRUPT';
      throw new FamfsError(code, `${check.problems.join('; ')}${code === 'ENOTFAMFS' ? ' (run famfs mkfs first)' : ' (run famfs fsck for details)'}`);
    }
    return new FamfsFs(media, decodeSuperblock(raw), check.extended, check.compacted === true, opts);
  }

  get superblock(): Readonly<Superblock> {
    return this.sb;
  }

  /** True once the log may contain famfs-csi delete entries (plain famfs refuses the device). */
  get extensionsEnabled(): boolean {
    return this.extended;
  }

  get isMaster(): boolean {
    return this.opts.hostUuid !== undefined && this.opts.hostUuid === this.sb.systemUuid;
  }

  get logCapacity(): number {
    return logCapacity(this.sb.logLen);
  }

  /** The log in use: its generation (0 = famfs' own log) and where it lives. */
  get activeLog(): ActiveLog {
    return this.reader.activeLog;
  }

  header(): LogHeader {
    return this.reader.header();
  }

  /**
   * Replay whatever other writers appended since the last call; keeps the allocator in step. When
   * the master compacted the log meanwhile, the new generation is replayed into a fresh tree and
   * the difference is reported as changes (nodes keep their log index, so hosts keep inodes).
   */
  catchUp(): CatchUpResult {
    for (let attempt = 0; attempt < 8; attempt++) {
      // The first replay (the constructor) reports no changes: nobody has seen the tree yet, and a
      // change object per entry of a full log is garbage a fresh process pays for in GC.
      const r = this.reader.catchUp(this.tree, this.ready);
      if (!r.generationChanged) {
        this.noteChanges(r.changes);
        return r;
      }
      const fresh = new FamfsTree(this.tree.limits, { native: this.opts.nativeTree });
      const active = this.reader.relocate();
      fresh.generation = active.generation;
      // No changes from this replay (replaceWith works them out): a fresh tree replays natively.
      const f = this.reader.catchUp(fresh, false);
      if (f.generationChanged) continue; // compacted again while we read: look once more
      const changes = this.tree.replaceWith(fresh);
      this.allocator.setLogRegion2(active.altOffset);
      if (this.ready) this.allocator.rebuild(this.horizon());
      return {
        headerNextIndex: f.headerNextIndex,
        nextIndex: this.tree.nextIndex,
        changes,
        ...(f.stop ? { stop: f.stop } : {}),
        newGeneration: active.generation,
        rewritten: f.rewritten,
      };
    }
    throw new FamfsError('EAGAIN', 'the famfs log generation kept changing while it was replayed (compactions back to back); try again');
  }

  /**
   * The generation records' bytes locateLog last decided on (with the flags and file system the
   * decision depended on) and its answer. Asked before and after every catch-up, so several
   * times per append: while the bytes stay the same, one read into a scratch buffer and a memcmp
   * answer, with no decoding and no allocation.
   */
  private locMemo: { raw: Buffer; scratch: Buffer; uuid: string; compacted: boolean; active: ActiveLog } | undefined;

  /** Where the log is: the generation records decide once the superblock says revision 2. */
  private locateLog(): ActiveLog {
    if (!this.extended) return GENERATION_ZERO;
    const len = LOG_GEN_COMMIT_OFFSET + LOG_GEN_COMMIT.SIZE - LOG_GEN_OFFSET;
    if (this.media.readInto === undefined) return this.decideLog();
    const memo = this.locMemo;
    const scratch = memo?.scratch ?? Buffer.alloc(len);
    readFresh(this.media, LOG_GEN_OFFSET, scratch);
    if (memo !== undefined && memo.uuid === this.sb.uuid && memo.compacted === this.compacted && scratch.equals(memo.raw)) return { ...memo.active };
    const before = Buffer.from(scratch);
    this.locMemo = undefined;
    const active = this.decideLog();
    // Remembered only when the answer follows from these bytes alone (decideLog says so) and the
    // records did not move while they were decided on; a throw remembers nothing.
    if (this.decidedByRecords) {
      readFresh(this.media, LOG_GEN_OFFSET, scratch);
      if (scratch.equals(before)) this.locMemo = { raw: before, scratch, uuid: this.sb.uuid, compacted: this.compacted, active: { ...active } };
    }
    return active;
  }

  /** Whether decideLog's last answer followed from the generation records alone (not from a superblock read). */
  private decidedByRecords = false;

  private decideLog(): ActiveLog {
    this.decidedByRecords = false;
    if (!this.compacted) {
      // Records count only under revision 2. Anything in them may mean the master upgraded the
      // superblock (flushed before any record) after we read it: look again.
      const s = inspectGenerations(this.media, this.sb.uuid);
      if (s.active?.generation === 0 && s.slots.every((x) => x.state !== 'valid')) {
        this.decidedByRecords = true;
        return GENERATION_ZERO;
      }
      this.rereadSuperblock();
      if (!this.compacted) return GENERATION_ZERO;
    }
    // Throws (ECORRUPT) when the records do not prove which generation is current: a reader
    // never falls back to a region that may be superseded.
    const active = readActiveLog(this.media, this.sb.uuid);
    if (active.altOffset !== 0) {
      const a = active.altOffset;
      if (a % ALLOC_UNIT !== 0 || a < reservedBytes(this.sb.logLen) || a + this.sb.logLen > this.sb.deviceSize) {
        throw new FamfsError('ECORRUPT', `log generation record names a second log region at 0x${a.toString(16)}, outside the data area (run famfs fsck)`);
      }
    }
    this.decidedByRecords = true;
    return active;
  }

  /**
   * Entries this host replayed that were rewritten since (only with OpenOptions.watchRewrites):
   * the log no longer says what this host serves. Sticky until the device is reopened.
   */
  rewrittenEntries(): RewrittenEntry[] {
    return [...this.reader.rewritten.values()];
  }

  lookup(relpath: string) {
    return this.tree.lookup(relpath);
  }

  usage(): UsageReport {
    // Quarantine files live in the root (famfs repair makes them there): no tree walk.
    let quarantinedEntries = 0;
    let quarantinedBytes = 0;
    for (const n of this.tree.root.children.values()) {
      if (n.kind === 'file' && isQuarantine(n)) {
        quarantinedEntries++;
        quarantinedBytes += fmapCapacity(n.fmap);
      }
    }
    return {
      ...this.allocator.summary(),
      logEntriesUsed: this.tree.slot,
      logEntriesTotal: this.logCapacity,
      files: this.tree.fileCount,
      directories: this.tree.dirCount,
      quarantinedEntries,
      quarantinedBytes,
    };
  }

  /** Bytes of the data area (device minus superblock and log): no file can ever be larger. */
  get dataAreaBytes(): number {
    return this.sb.deviceSize - reservedBytes(this.sb.logLen);
  }

  /** Log entries creates can still append (after the compaction a write would trigger, and keeping the delete reserve). */
  logEntriesLeft(): number {
    // What a compaction would give back counts as room: a write that needs it compacts first.
    let used = this.tree.slot;
    if (this.extended && (this.opts.compactAt ?? 0.75) > 0) {
      const horizon = this.horizon();
      for (const d of this.tree.deletes) if (d.deleteIndex < horizon) used -= 2;
    }
    const free = this.logCapacity - used;
    // With the delete reserve, n new entries need n more kept free for their own deletes.
    return this.opts.reserveDeleteEntries ? Math.max(0, Math.floor((free - this.tree.fileCount - this.tree.dirCount) / 2)) : free;
  }

  /** Makes memory free whose delete every live host has replayed (cheap when nothing waits). */
  reclaimReplayed(): void {
    // Reading every host's slot costs a few microseconds; only pay it when something waits.
    if (this.allocator.hasPending) this.allocator.reclaim(this.horizon());
  }

  /**
   * Refuses now what creating the file `relpath` of `size` bytes (and its missing parent
   * directories) would refuse: no room of that shape or a bad interleave (ENOSPC, EINVAL), a log
   * without room for the entries (ELOGFULL). Writes nothing, so a caller can check before it
   * commits to anything else.
   */
  planCreate(relpath: string, size: number, interleave?: InterleaveParams): void {
    // Clean units are free units: room there is room (no horizon read needed to know it).
    if (this.allocator.placeClean(size, interleave) === undefined || this.allocator.pendingCount >= RECLAIM_EAGER_PENDING) {
      this.reclaimReplayed();
      this.allocator.place(size, interleave);
    }
    const parts = relpath.split('/');
    let needed = 1;
    for (let i = 1; i < parts.length; i++) if (this.tree.lookup(parts.slice(0, i).join('/')) === undefined) needed++;
    // Compacts the log first when that makes room; keeps the entries every delete needs.
    this.ensureCreateRoom(needed);
  }

  /**
   * Throws EFENCED unless the device is still at fencing epoch `epoch` (undefined: not held at
   * all). For writers of data outside the log that must stop once another master took over.
   */
  checkFenceEpoch(epoch: number | undefined): void {
    const block = peekExtBlock(this.media, this.sb.uuid) ?? this.extBlock();
    if (epoch === undefined || block.epoch !== epoch) {
      throw new FamfsError('EFENCED', `this writer holds fencing epoch ${epoch ?? 'none'} but the device is at ${block.epoch}: another master took over`);
    }
    this.noteFenceBlock(block);
  }

  // ---------------------------------------------------------------------------------------------
  // Writer side (master only)
  // ---------------------------------------------------------------------------------------------

  mkdir(relpath: string, o: MkdirOptions = {}): DirNode[] {
    checkRelpath(relpath);
    const mode = checkMode(o.mode ?? 0o755);
    const uid = checkId(o.uid ?? 0, 'uid');
    const gid = checkId(o.gid ?? 0, 'gid');
    return this.exclusive(() => this.mkdirLocked(relpath, o, mode, uid, gid));
  }

  private mkdirLocked(relpath: string, o: MkdirOptions, mode: number, uid: number, gid: number): DirNode[] {
    const h = this.prepareWrite();
    const missing = this.missingParents(relpath);
    if (missing.length === 0) {
      const n = this.tree.lookup(relpath);
      if (n?.kind === 'dir') throw new FamfsError('EEXIST', `directory "${relpath}" already exists`);
      if (n) throw new FamfsError('ENOTDIR', `"${relpath}" is a file`);
    }
    missing.push(relpath);
    if (missing.length > 1 && !o.parents) {
      throw new FamfsError('ENOENT', `parent directory "${relpath.split('/').slice(0, -1).join('/')}" does not exist (use -p)`);
    }
    const room = this.ensureLogRoom(h, missing.length, true);
    this.appendAll(
      room,
      missing.map((p) => ({ type: 'mkdir', relpath: p, mode, uid, gid })),
    );
    return missing.map((p) => this.tree.lookup(p) as DirNode);
  }

  creat(relpath: string, size: number, o: CreateFileOptions = {}): FileNode {
    checkRelpath(relpath);
    if (!Number.isSafeInteger(size) || size <= 0)
      throw new FamfsError('EINVAL', `file size ${size} must be a positive integer (famfs files are pre-allocated)`);
    const mode = checkMode(o.mode ?? 0o644);
    const uid = checkId(o.uid ?? 0, 'uid');
    const gid = checkId(o.gid ?? 0, 'gid');
    return this.exclusive(() => this.creatLocked(relpath, size, o, mode, uid, gid));
  }

  private creatLocked(relpath: string, size: number, o: CreateFileOptions, mode: number, uid: number, gid: number): FileNode {
    const h = this.prepareWrite();
    const missing = o.parents !== undefined ? this.missingParents(relpath) : [];
    if (missing.length === 0) this.checkNewName(relpath);
    const dirMode = missing.length > 0 ? checkMode(o.parents?.mode ?? 0o755) : 0;
    const dirUid = missing.length > 0 ? checkId(o.parents?.uid ?? 0, 'uid') : 0;
    const dirGid = missing.length > 0 ? checkId(o.parents?.gid ?? 0, 'gid') : 0;
    const room = this.ensureLogRoom(h, 1 + missing.length, true);
    // A file that must read zeros goes to clean memory first; when it fits there, reclaiming first
    // would not change where it goes (reclaimed memory is dirty), so the host slots (the horizon)
    // are read only when it does not fit, or when many deletes wait (the zeroer reclaims too).
    let fmap = o.zero === true && this.allocator.pendingCount < RECLAIM_EAGER_PENDING ? this.allocator.placeClean(size, o.interleave, o.random) : undefined;
    if (fmap === undefined) {
      this.reclaimReplayed();
      fmap = this.allocator.place(size, o.interleave, o.random, o.zero === true ? 'clean' : 'dirty');
    }
    // Room, names and log entries are all known good: the parents, then the file, published together.
    const bodies: EntryBody[] = missing.map((p) => ({ type: 'mkdir', relpath: p, mode: dirMode, uid: dirUid, gid: dirGid }));
    const dirty = o.zero ? this.allocator.dirtyParts(fmap) : [];
    // Dirty in shared memory (flushed) before the entry hands the units to the file.
    this.claimUnits(fmap);
    if (dirty.length > 0) {
      let bytes = 0;
      for (const r of dirty) {
        this.zeroRange(r.start * ALLOC_UNIT, r.count * ALLOC_UNIT);
        bytes += r.count * ALLOC_UNIT;
      }
      this.zeroStats.createsWaited++;
      this.zeroStats.createWaitBytes += bytes;
    }
    bodies.push({ type: 'file', relpath, size, mode, uid, gid, flags: o.flags ?? FileFlags.ALL_HOSTS_RW, fmap });
    this.appendAll(room, bodies);
    return this.tree.lookup(relpath) as FileNode;
  }

  /**
   * Delete a file or an empty directory (famfs-csi extension). The memory is not reusable until
   * every live host has replayed past the delete entry.
   */
  rm(relpath: string): void {
    checkRelpath(relpath);
    this.exclusive(() => this.rmLocked(relpath));
  }

  private rmLocked(relpath: string): void {
    const h = this.prepareWrite();
    const node = this.tree.lookup(relpath);
    if (!node) throw new FamfsError('ENOENT', `"${relpath}" does not exist`);
    if (node.kind === 'dir' && node.children.size > 0) throw new FamfsError('ENOTEMPTY', `directory "${relpath}" is not empty`);
    const room = this.ensureLogRoom(h, 1, false);
    this.enableExtensions();
    this.append(room, { type: 'delete', targetIndex: node.index, targetType: node.kind === 'file' ? 'file' : 'mkdir', relpath });
  }

  /**
   * Delete those of `relpaths` that exist, in order, in one write (a file, then its directory):
   * like rm() for each, with one catch-up for all. Returns how many were deleted. What is
   * missing is skipped (a delete rolled forward by this write's catch-up is done already).
   */
  rmPresent(relpaths: readonly string[]): number {
    for (const r of relpaths) checkRelpath(r);
    return this.exclusive(() => this.rmPresentLocked(relpaths));
  }

  private rmPresentLocked(relpaths: readonly string[]): number {
    const h = this.prepareWrite();
    const bodies: EntryBody[] = [];
    const deleted = new Set<string>();
    for (const relpath of relpaths) {
      const node = this.tree.lookup(relpath);
      if (!node || deleted.has(relpath)) continue;
      // Empty once the earlier deletes of this write are applied (a file, then its directory).
      if (node.kind === 'dir') {
        for (const name of node.children.keys()) {
          if (!deleted.has(`${relpath}/${name}`)) throw new FamfsError('ENOTEMPTY', `directory "${relpath}" is not empty`);
        }
      }
      deleted.add(relpath);
      bodies.push({ type: 'delete', targetIndex: node.index, targetType: node.kind === 'file' ? 'file' : 'mkdir', relpath });
    }
    if (bodies.length === 0) return 0;
    const room = this.ensureLogRoom(h, bodies.length, false);
    this.enableExtensions();
    this.appendAll(room, bodies);
    return bodies.length;
  }

  /** The ancestors of `relpath` that do not exist, outermost first; ENOTDIR when one is a file. */
  private missingParents(relpath: string): string[] {
    const parts = relpath.split('/');
    const missing: string[] = [];
    let p = '';
    for (let i = 0; i < parts.length - 1; i++) {
      p = i === 0 ? parts[0] : `${p}/${parts[i]}`;
      if (missing.length > 0) {
        missing.push(p);
        continue;
      }
      const n = this.tree.lookup(p);
      if (!n) missing.push(p);
      else if (n.kind !== 'dir') throw new FamfsError('ENOTDIR', `"${p}" is a file`);
    }
    return missing;
  }

  /**
   * Mark the superblock as carrying famfs-csi extensions so plain famfs refuses the device.
   * Done before the first extension entry is written, never after.
   */
  enableExtensions(): void {
    if (this.extended) return;
    const next: Superblock = { ...this.sb, version: FAMFS_CSI_EXT_VERSION };
    this.media.write(SUPERBLOCK_OFFSET, encodeSuperblock(next));
    this.media.flush(SUPERBLOCK_OFFSET, SB.SIZE);
    this.sb = next;
    this.extended = true;
  }

  /**
   * Online log compaction (famfs-csi extension revision 2; docs/format.md). Writes the entries
   * still needed into the log region not in use, checks them by replaying them, then publishes
   * the next log generation with one flushed 64-byte record: a crash at any point leaves the old
   * generation or the new one, whole. Kept: every live file and directory, and each deleted one
   * (with its delete) whose delete some live host may not have replayed yet (memory still held).
   * Entries keep their log index, so inode numbers, acks and the reclaim horizon carry over.
   * A log that never had a delete is left alone (it stays readable by famfs).
   */
  compact(o: CompactOptions = {}): CompactResult {
    return this.exclusive(() => this.compactLocked(o));
  }

  private compactLocked(o: CompactOptions): CompactResult {
    const started = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - started) / 1e6;
    const h = this.prepareWrite();
    const progress = o.onProgress ?? (() => undefined);
    const gen = this.reader.activeLog.generation;
    const nothing = (reason: string, pendingKept = 0): CompactResult => {
      // Do not try again by threshold before the log has grown: nothing would come of it.
      this.compactedTo = h.nextIndex;
      return { compacted: false, reason, generation: gen, entriesBefore: h.nextIndex, entriesAfter: h.nextIndex, pendingKept, ms: ms() };
    };
    if (!this.extended) return nothing('the log never had a delete: nothing to reclaim, and it stays readable by famfs');
    if (this.tree.problems.length > 0 || this.tree.orphaned.length > 0) {
      throw new FamfsError(
        'ECORRUPT',
        `the log has ${this.tree.problems.length} entries replay skips; refusing to compact it (run famfs fsck and famfs repair first)`,
      );
    }
    const logLen = this.sb.logLen;
    const from = this.reader.activeLog.offset;
    const horizon = this.horizon();
    // Plan from what replay recorded: which log index each slot holds, and every delete.
    if (this.tree.slotIndexes.length !== h.nextIndex)
      throw new FamfsError('ECORRUPT', `replayed ${this.tree.slotIndexes.length} slots but the header says ${h.nextIndex}; refusing to compact`);
    // One flag per log index of this generation (a typed array: this runs while a create waits).
    const slots = this.tree.slotIndexes;
    const base = slots.length > 0 ? slots[0] : 0;
    const dropped = new Uint8Array(Math.max(0, this.tree.nextIndex - base));
    let pendingKept = 0;
    for (const d of this.tree.deletes) {
      if (d.deleteIndex < horizon) {
        dropped[d.deleteIndex - base] = 1;
        dropped[d.targetIndex - base] = 1;
      } else pendingKept++;
    }
    const kept: number[] = [];
    for (let slot = 0; slot < slots.length; slot++) if (dropped[slots[slot] - base] === 0) kept.push(slot);
    progress({ step: 'plan', done: kept.length, total: h.nextIndex });
    if (kept.length === h.nextIndex) return nothing(`no delete is known to every live host yet (${pendingKept} pending); nothing to reclaim`, pendingKept);
    // Entries are copied byte for byte (their CRC covers their log index); read only those kept.
    // From here on the other region is written: the line must already name the current generation.
    this.ensureCommitLine();
    const image = Buffer.alloc(kept.length * LE.SIZE);
    for (let k = 0; k < kept.length;) {
      let run = 1;
      while (k + run < kept.length && kept[k + run] === kept[k] + run) run++;
      const at = from + entryOffset(kept[k]);
      this.media.invalidate(at, run * LE.SIZE);
      this.media.read(at, run * LE.SIZE).copy(image, k * LE.SIZE);
      k += run;
    }

    const next = gen + 1;
    let altOffset = this.reader.activeLog.altOffset;
    if (next % 2 === 1 && altOffset === 0) {
      // The second region comes from free memory (no host maps it); it is reserved for good once
      // the record naming it is written. A crash before that leaves it free again.
      if (this.allocator.hasPending) this.allocator.reclaim(horizon);
      // Dirty memory first: the log region overwrites what it uses, clean memory is kept for creates.
      const fmap = this.allocator.place(logLen, undefined, undefined, 'dirty');
      this.claimUnits(fmap);
      altOffset = fmap.kind === 'simple' ? fmap.extents[0].offset : 0;
      progress({ step: 'region', done: altOffset });
    }
    const to = next % 2 === 0 ? LOG_OFFSET : altOffset;
    const step = Math.max(1, o.stepEntries ?? 1024);
    for (let k = 0; k < kept.length; k += step) {
      const n = Math.min(step, kept.length - k);
      this.media.write(to + entryOffset(k), image.subarray(k * LE.SIZE, (k + n) * LE.SIZE));
      progress({ step: 'copy', done: k + n, total: kept.length });
    }
    // Slots past the end are zeroed: nothing an earlier generation left there can pass as an entry.
    const tail = entryOffset(kept.length);
    this.zeroRange(to + tail, logLen - tail);
    progress({ step: 'zero', done: logLen - tail });
    this.media.write(to, encodeLogHeader(logLen, this.tree.nextIndex, kept.length));
    this.media.flush(to, tail);
    progress({ step: 'flush', done: tail });

    // Replay what is now in memory before anyone can see it: it must describe the same files.
    const check = new FamfsTree(this.tree.limits, { native: this.opts.nativeTree });
    check.generation = next;
    const target: ActiveLog = { generation: next, offset: to, altOffset };
    const r = new LogReader(
      this.media,
      logLen,
      () => true,
      () => target,
    ).catchUp(check, false);
    const mismatch = r.stop ? `replay stopped at slot ${r.stop.index}: ${r.stop.reason}` : compareTrees(this.tree, check, horizon);
    if (mismatch) throw new FamfsError('ECORRUPT', `compaction self-check failed, nothing was switched: ${mismatch}`);
    progress({ step: 'verify', done: check.slot });

    if (!this.compacted) {
      // Revision 2 before the first record: readers that know only revision 1 (or famfs) must
      // refuse the device rather than replay the famfs log region, which is stale from now on.
      const upgraded: Superblock = { ...this.sb, version: FAMFS_CSI_EXT2_VERSION };
      this.media.write(SUPERBLOCK_OFFSET, encodeSuperblock(upgraded));
      this.media.flush(SUPERBLOCK_OFFSET, SB.SIZE);
      this.sb = upgraded;
      this.compacted = true;
      progress({ step: 'superblock' });
    }
    this.checkFence();
    // Another writer of this master host (famfs compact next to a running controller) may have
    // appended since the plan: that entry is not in the new log, so do not switch.
    const moved = this.reader.header();
    if (moved.nextIndex !== h.nextIndex) {
      throw new FamfsError(
        'EAGAIN',
        `the log grew from ${h.nextIndex} to ${moved.nextIndex} entries during the compaction (another writer on this host); nothing was switched, try again`,
      );
    }
    writeLogGenRecord(this.media, {
      generation: next,
      region: next % 2 === 0 ? 0 : 1,
      fsUuid: this.sb.uuid,
      altOffset,
      epoch: this.opts.fenceEpoch ?? readExtBlock(this.media, this.sb.uuid)?.epoch ?? 0,
    });
    progress({ step: 'switch', done: next });
    // The second witness, before anything is written to the new generation's region or the old one.
    writeLogGenCommit(this.media, { generation: next, fsUuid: this.sb.uuid, altOffset });

    this.reader.relocate();
    this.tree.replaceWith(check);
    this.allocator.setLogRegion2(altOffset);
    this.allocator.rebuild(horizon);
    this.compactedTo = kept.length;
    progress({ step: 'done', done: next });
    return { compacted: true, generation: next, entriesBefore: h.nextIndex, entriesAfter: kept.length, pendingKept, ms: ms() };
  }

  /** The master may have enabled the extension after we opened the device: look again. */
  private rereadExtended(): boolean {
    if (!this.extended) this.rereadSuperblock();
    return this.extended;
  }

  /** Refresh our copy of the superblock from the device (only ever moves to a valid one). */
  private rereadSuperblock(): void {
    this.media.invalidate(SUPERBLOCK_OFFSET, SB.SIZE);
    const raw = this.media.read(SUPERBLOCK_OFFSET, SB.SIZE);
    const check = validateSuperblock(raw, this.media.size);
    if (!check.ok) throw new FamfsError('ECORRUPT', `superblock: ${check.problems.join('; ')} (run famfs fsck)`);
    this.sb = decodeSuperblock(raw);
    this.extended = this.extended || check.extended;
    this.compacted = this.compacted || check.compacted === true;
  }

  /**
   * The fencing epoch and master of the shared extension block, initialised on first use. A block
   * left by an earlier file system on this device is re-made (its host slots cleared), with an
   * epoch above the one it held.
   */
  extBlock(): ExtBlock {
    const block = readExtBlock(this.media, this.sb.uuid);
    if (block) return block;
    if (this.opts.readOnly) throw new FamfsError('EROFS', 'famfs-csi extension block missing and the device is open read-only');
    // Made under the writer lock and looked for again inside it: two processes of this host that
    // both saw it missing would both make it, and the second would clear the host slots the first
    // block's hosts had acked meanwhile (test/famfs-writelock.test.ts).
    return this.exclusive(() => {
      const now = readExtBlock(this.media, this.sb.uuid);
      if (now) return now;
      const stale = readAnyExtBlock(this.media);
      return initExtBlock(this.media, this.sb.uuid, this.sb.systemUuid, this.now(), undefined, (stale?.epoch ?? 0) + 1);
    });
  }

  /**
   * Become the writer: bump the fencing epoch (so a paused former writer's next append fails)
   * and record this host as famfs master in the superblock. Returns the new epoch to hold.
   */
  takeOver(hostUuid: string): number {
    if (this.opts.readOnly) throw new FamfsError('EROFS', 'device is open read-only');
    // Under the writer lock, from the superblock re-read to the catch-up: two processes of this host
    // (two controllers during a rollout, the CLI next to one) that both read epoch E would both
    // write E + 1 and both believe they hold it, and a superblock written from a stale read would
    // undo another writer's change (the master, the extension version).
    return this.exclusive(() => this.takeOverLocked(hostUuid));
  }

  private takeOverLocked(hostUuid: string): number {
    // Another host may have taken over (and rewritten the superblock) since we last looked.
    this.rereadSuperblock();
    // A new master writes the current block revision and raises the liveness window if told to.
    const block = upgradeExtBlock(this.media, this.extBlock(), this.opts.hostLiveMs);
    const epoch = block.epoch + 1;
    writeExtBlock(this.media, { ...block, epoch, masterUuid: hostUuid, epochTimeMs: Math.floor(this.now()) });
    if (this.sb.systemUuid !== hostUuid) {
      const next: Superblock = { ...this.sb, systemUuid: hostUuid };
      this.media.write(SUPERBLOCK_OFFSET, encodeSuperblock(next));
      this.media.flush(SUPERBLOCK_OFFSET, SB.SIZE);
      this.sb = next;
    }
    this.opts.hostUuid = hostUuid;
    this.opts.fenceEpoch = epoch;
    this.logChecked = false;
    // Another master may have zeroed or handed out memory meanwhile: trust only the shared map.
    this.cleanMap = 'unknown';
    this.allocator.forgetClean();
    this.staleClean = [];
    this.catchUp();
    return epoch;
  }

  /** Publish this host's replay position (see hosts.ts). */
  ackReplay(hostUuid: string, hostName: string): number {
    // The slot's read-modify-write (find or claim, beat + 1) under the host-slot lock: two
    // processes of this host acking under its UUID (a FUSE server and its successor during a
    // handover) would otherwise both write beat b + 1, one ack lost, or both claim free slots for
    // one host. Not under the writer lock: a master appending back to back (volume churn) kept it
    // from the master host's FUSE server, whose acks then failed until its self-fence ran out and
    // the log filled with deletes no compaction could drop (test/famfs-churn.test.ts). Making a
    // missing block (extBlock) still takes the writer lock, before the slot lock.
    const slotCount = this.extBlock().slotCount;
    return withHostSlotLock(this.media, () => ackReplay(this.media, slotCount, hostUuid, hostName, this.tree.nextIndex));
  }

  /** True once this file system has its extension block (host slots, fencing epoch). */
  hasExtBlock(): boolean {
    return readExtBlock(this.media, this.sb.uuid) !== undefined;
  }

  /** The device's host liveness window: a host derives its self-fence from it (hosts.ts fenceWindowMs). */
  hostLiveMs(): number {
    return readExtBlock(this.media, this.sb.uuid)?.hostLiveMs ?? DEFAULT_HOST_LIVE_MS;
  }

  hosts() {
    const block = readExtBlock(this.media, this.sb.uuid);
    return block ? readHostSlots(this.media, block.slotCount) : [];
  }

  /** Every host slot as this process judges it: live, or silent (on its own clock) for too long. */
  hostLiveness(): HostLiveness[] {
    const block = readExtBlock(this.media, this.sb.uuid);
    if (!block) return [];
    this.watch.observe(this.media, block.slotCount);
    return this.watch.liveness(this.liveWindow(block));
  }

  /** Eviction records the master left in shared memory, oldest first. */
  evictions(): EvictionRecord[] {
    const block = readExtBlock(this.media, this.sb.uuid);
    return block && block.revision >= 3 ? readEvictions(this.media) : [];
  }

  /**
   * The eviction records with what each timeout let the master reuse: the files deleted at or after
   * the host's last acked position and before the decision (memory reusable without that host).
   */
  evictionReport(): EvictionReport[] {
    const hosts = this.hosts();
    return this.evictions().map((e) => {
      const freed = this.tree.released.filter((r) => r.deleteIndex >= e.ackedIndex && r.deleteIndex < e.reclaimUpTo);
      const reusable = freed.map((r) => ({
        deleteIndex: r.deleteIndex,
        relpath: r.relpath,
        extents: r.extents,
        bytes: r.extents.reduce((n, x) => n + x.len, 0),
      }));
      return {
        ...e,
        name: hosts.find((h) => h.slot === e.slot && h.hostUuid === e.hostUuid)?.name ?? '',
        reusable,
        reusableBytes: reusable.reduce((n, r) => n + r.bytes, 0),
      };
    });
  }

  /**
   * Log index below which deletes are known to every live host. One slot-table read and one
   * memcmp when no slot moved; only changed slots are decoded. A host that timed out while it
   * held memory back gets an eviction record (master only) before the caller can reuse any of it.
   */
  horizon(): number {
    const block = readExtBlock(this.media, this.sb.uuid);
    if (!block) return this.tree.nextIndex;
    this.watch.observe(this.media, block.slotCount);
    const next = this.tree.nextIndex;
    // The master's own slot counts too: it is written by the FUSE server on the master's machine
    // (same system UUID), which maps files like any other host.
    const r = this.watch.horizon(next, this.liveWindow(block));
    if (r.timedOut.length > 0 && this.isMaster && !this.opts.readOnly && block.revision >= 3) {
      const known = readEvictions(this.media);
      for (const h of r.timedOut) {
        if (h.ackedIndex >= next) continue; // it held nothing back
        if (known.some((k) => k.hostUuid === h.hostUuid && k.ackedIndex === h.ackedIndex && k.slot === h.slot)) continue;
        known.push(
          appendEviction(this.media, {
            hostUuid: h.hostUuid,
            slot: h.slot,
            ackedIndex: h.ackedIndex,
            reclaimUpTo: next,
            atMs: Math.floor(this.now()),
            silentMs: Math.round(h.silentMs),
          }),
        );
      }
    }
    return r.horizon;
  }

  private liveWindow(block: ExtBlock): number {
    return Math.max(block.hostLiveMs, this.opts.hostLiveMs ?? 0);
  }

  private zeroRange(offset: number, length: number): void {
    if (this.media.zero) {
      this.media.zero(offset, length);
      return;
    }
    for (let off = 0; off < length; off += ZERO_CHUNK.length) this.media.write(offset + off, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, length - off)));
    this.media.flush(offset, length);
  }

  private checkNewName(relpath: string): void {
    if (this.tree.lookup(relpath)) throw new FamfsError('EEXIST', `"${relpath}" already exists`);
    const cut = relpath.lastIndexOf('/');
    if (cut < 0) return;
    const parent = this.tree.lookup(relpath.slice(0, cut));
    if (!parent) throw new FamfsError('ENOENT', `parent directory "${relpath.slice(0, cut)}" does not exist (famfs mkdir -p it first)`);
    if (parent.kind !== 'dir') throw new FamfsError('ENOTDIR', `"${relpath.slice(0, cut)}" is a file`);
  }

  /**
   * Make room for `entries` new entries (compacting first when the log is full, or past the
   * compactAt threshold with garbage in it) or fail with ELOGFULL. A create (`adds`) must also
   * leave the entries reserved for deleting every live file and directory. Returns the header to
   * append after (a compaction moves the log).
   */
  private ensureLogRoom(h: LogHeader, entries: number, adds: boolean): LogHeader {
    const need = this.entriesNeeded(entries, adds);
    const cap = h.lastIndex + 1;
    const at = this.opts.compactAt ?? 0.75;
    const full = h.nextIndex + need > cap;
    const garbage = this.tree.slot - this.tree.fileCount - this.tree.dirCount;
    const pastThreshold = at > 0 && h.nextIndex >= at * cap && h.nextIndex - this.compactedTo >= cap / 16 && garbage >= cap / 16;
    if (at > 0 && this.extended && garbage > 0 && (full || pastThreshold)) {
      this.compact();
      h = this.reader.header();
    }
    if (h.nextIndex + need > cap) {
      const reserve = need - entries;
      throw new FamfsError(
        'ELOGFULL',
        `famfs log full: ${h.nextIndex} of ${cap} entries used, ${entries} needed${reserve > 0 ? ` plus ${reserve} kept for deleting every live file and directory` : ''}` +
          `${this.extended ? ' after compaction' : ''} (delete volumes, wait for lagging hosts to replay pending deletes, or make a new file system with a larger --loglen)`,
      );
    }
    return h;
  }

  /** Entries a write of `entries` needs free: with the delete reserve, creates need twice theirs. */
  private entriesNeeded(entries: number, adds: boolean): number {
    if (!adds || !this.opts.reserveDeleteEntries) return entries;
    return entries + this.tree.fileCount + this.tree.dirCount + entries;
  }

  /**
   * Refuse now (ELOGFULL) what creating `entries` entries would refuse, compacting first when
   * that makes room; the CSI controller asks before the first of a volume's entries.
   */
  ensureCreateRoom(entries: number): void {
    this.exclusive(() => this.ensureLogRoom(this.prepareWrite(), entries, true));
  }

  /**
   * Run one write operation under the host-wide writer lock, from its catch-up to its last
   * published header. Without it two processes of this master host that both caught up to
   * next_index N would both write slot N: one entry lost, perhaps after hosts replayed it. Every
   * write re-catches up inside the lock (prepareWrite), so what another process appended is known
   * before anything is allocated, zeroed or marked clean. Nested writes (parents, a compaction
   * inside a create) nest on the medium's lock.
   */
  private exclusive<T>(fn: () => T): T {
    return withWriterLock(this.media, fn);
  }

  private readonly uuidScratch = Buffer.alloc(16);
  /** The entry an append writes (encoded here, copied to the device, not kept). */
  private readonly entryScratch = Buffer.alloc(LE.SIZE);
  /** The superblock UUID as bytes, for checkFence. */
  private uuidBytes: { text: string; bytes: Buffer } | undefined;

  /**
   * The extension block's bytes as the last fence check that passed read them, and the epoch they
   * hold: while the device holds exactly these bytes, the block decodes to the same epoch, so the
   * check is one compare in the native layer (fencedWriteFlush), made right before the store.
   */
  private fenceExt: { epoch: number; raw: Buffer } | undefined;

  private noteFenceBlock(block: Readonly<ExtBlock>): void {
    const raw = extBlockBytes(block);
    this.fenceExt = raw === undefined ? undefined : { epoch: block.epoch, raw };
  }

  private checkFence(): void {
    if (this.fenceStillHolds(undefined)) return;
    // A device re-made under us (mkfs -f, ours or famfs') is another file system: nothing we know applies.
    const raw = this.uuidScratch;
    readFresh(this.media, SUPERBLOCK_OFFSET + SB.uuid, raw);
    // Compared as bytes (every append checks): the text form only for the message.
    if (this.uuidBytes?.text !== this.sb.uuid) this.uuidBytes = { text: this.sb.uuid, bytes: uuidToBytes(this.sb.uuid) };
    if (!raw.equals(this.uuidBytes.bytes)) {
      const uuid = bytesToUuid(raw);
      throw new FamfsError('EFENCED', `the device now holds another file system (UUID ${uuid}, this writer opened ${this.sb.uuid}): it was re-made; reopen it`);
    }
    if (this.opts.fenceEpoch === undefined) return;
    const block = peekExtBlock(this.media, this.sb.uuid);
    if (!block || block.epoch !== this.opts.fenceEpoch) {
      throw new FamfsError(
        'EFENCED',
        `this writer holds fencing epoch ${this.opts.fenceEpoch} but the device is at ${block?.epoch ?? 'none'}: another master took over`,
      );
    }
    this.noteFenceBlock(block);
  }

  /**
   * checkFence's answer from the bytes it last passed on, in one native call, writing and flushing
   * `data` at `offset` when it holds (data undefined: only the check). False, nothing written, when
   * those bytes are not known or no longer on the device: the caller then runs checkFence (which
   * throws EFENCED, or passes on bytes that changed without changing the epoch) and writes.
   */
  private fenceStillHolds(data: Buffer | undefined, offset = 0): boolean {
    const u = this.uuidBytes;
    if (u === undefined || u.text !== this.sb.uuid) return false;
    const epoch = this.opts.fenceEpoch;
    if (epoch === undefined) return writeFlushIf(this.media, offset, data, SUPERBLOCK_OFFSET + SB.uuid, u.bytes);
    const e = this.fenceExt;
    if (e === undefined || e.epoch !== epoch) return false;
    return writeFlushIf(this.media, offset, data, SUPERBLOCK_OFFSET + SB.uuid, u.bytes, EXT_BLOCK_OFFSET, e.raw);
  }

  /** checkFence, then write and flush `data` at `offset` (EFENCED: nothing written). */
  private fencedWriteFlush(offset: number, data: Buffer): void {
    if (this.fenceStillHolds(data, offset)) return;
    this.checkFence();
    writeFlush(this.media, offset, data);
  }

  /**
   * checkFenceEpoch(epoch), then write and flush `data` at `offset` (EFENCED: nothing written). For
   * writers of data outside the log (the CSI controller's state image): one native call while the
   * extension block holds the bytes the last check passed on.
   */
  writeFlushFenced(offset: number, data: Buffer, epoch: number): void {
    const e = this.fenceExt;
    if (e !== undefined && e.epoch === epoch && writeFlushIf(this.media, offset, data, EXT_BLOCK_OFFSET, e.raw)) return;
    this.checkFenceEpoch(epoch);
    writeFlush(this.media, offset, data);
  }

  /** Writer preconditions, then catch up so decisions are made on the current log. */
  private prepareWrite(): LogHeader {
    if (this.opts.readOnly) throw new FamfsError('EROFS', 'device is open read-only');
    if (!this.isMaster) {
      throw new FamfsError(
        'ENOTMASTER',
        `this host (${this.opts.hostUuid ?? 'unknown'}) is not the famfs master (${this.sb.systemUuid}); only the master appends to the log`,
      );
    }
    this.checkFence();
    const r = this.catchUp();
    if (r.stop) throw new FamfsError('ECORRUPT', `log entry ${r.stop.index} is bad (${r.stop.reason}); refusing to append after it (run famfs fsck)`);
    const checked = this.logChecked;
    if (!checked) this.crossCheckLog();
    this.syncCleanMap();
    // The header the catch-up just read, unless the cross-check moved the counters or a new
    // generation was replayed (then read it again).
    return checked && r.header !== undefined && r.newGeneration === undefined ? r.header : this.reader.header();
  }

  /**
   * Before this master's first write: load the shared clean map (revision 4 blocks only) and clear
   * any bit left set on memory that is not free (a writer that does not keep the map placed a file
   * there). After that: clear the bits of files other writers placed since.
   */
  private syncCleanMap(): void {
    if (this.cleanMap === 'unknown') {
      const block = readExtBlock(this.media, this.sb.uuid);
      if (!block || block.revision < EXT_REVISION_CLEAN_MAP) {
        this.cleanMap = 'off';
        return;
      }
      const map = readCleanMap(this.media, this.sb.uuid, this.deviceUnits);
      const stale = this.allocator.setClean(map.runs);
      if (stale.length > 0) writeCleanUnits(this.media, this.sb.uuid, this.deviceUnits, stale, false);
      this.cleanMap = 'on';
      this.staleClean = [];
    }
    if (this.cleanMap === 'on' && this.staleClean.length > 0) {
      const stale = this.staleClean.flatMap((f) => fmapExtents(f).map((e) => ({ start: e.offset / ALLOC_UNIT, count: e.len / ALLOC_UNIT })));
      writeCleanUnits(this.media, this.sb.uuid, this.deviceUnits, stale, false);
      this.staleClean = [];
    }
  }

  /** Units about to be handed to a file: dirty in shared memory (flushed) first, then in the allocator. */
  private claimUnits(fmap: Fmap): void {
    if (this.cleanMap !== 'on') return;
    const clean = this.allocator.cleanParts(fmap);
    if (clean.length > 0) writeCleanUnits(this.media, this.sb.uuid, this.deviceUnits, clean, false);
    this.allocator.claim(fmap);
  }

  /**
   * Zero free memory that is not known clean, and mark it clean in shared memory (master only).
   * Free means past the reclaim horizon: no host maps it any more (memory a lagging host may still
   * read is pending, never free, so it is never zeroed under that host). Each step checks the
   * fence, zeroes and flushes its units, and only then sets their bits (flushed): a kill at any
   * point leaves them dirty, to be zeroed again, never clean with data in them.
   */
  zeroFree(o: ZeroFreeOptions = {}): ZeroFreeResult {
    const step = Math.max(ALLOC_UNIT, Math.floor((o.stepBytes ?? 64 * 1024 * 1024) / ALLOC_UNIT) * ALLOC_UNIT);
    const stepUnits = step / ALLOC_UNIT;
    const dirtyBytes = () => this.allocator.dirtyFreeRuns().reduce((n, r) => n + r.count * ALLOC_UNIT, 0);
    // The amount is fixed at the start; the units of each step are chosen afresh under the writer
    // lock after a catch-up, so memory another process of this host allocated since is never
    // zeroed or marked clean.
    const first = this.exclusive(() => {
      this.prepareWrite();
      this.reclaimReplayed();
      return this.cleanMap === 'on' ? dirtyBytes() : -1;
    });
    if (first < 0) return { zeroedBytes: 0, dirtyFreeBytes: dirtyBytes(), cleanMap: false };
    const total = Math.min(o.maxBytes ?? Infinity, first);
    let done = 0;
    // The dirty free runs, recomputed only when a catch-up applied entries (or moved the log).
    let runs: { start: number; count: number }[] = [];
    let seen = -1;
    let seenGen = -1;
    while (done < total) {
      const did = this.exclusive(() => {
        this.prepareWrite();
        if (this.cleanMap !== 'on') return 0;
        if (this.tree.slot !== seen || this.reader.activeLog.generation !== seenGen) {
          runs = this.allocator.dirtyFreeRuns();
          seen = this.tree.slot;
          seenGen = this.reader.activeLog.generation;
        }
        while (runs.length > 0 && runs[0].count === 0) runs.shift();
        const r = runs[0];
        if (r === undefined) return 0;
        const u = r.start;
        const count = Math.min(stepUnits, r.count, Math.ceil((total - done) / ALLOC_UNIT));
        // A master that lost its role must stop at once: the new one may have handed this memory out.
        this.checkFence();
        if (!(o.discard === true && this.media.discard?.(u * ALLOC_UNIT, count * ALLOC_UNIT) === true)) this.zeroRange(u * ALLOC_UNIT, count * ALLOC_UNIT);
        writeCleanUnits(this.media, this.sb.uuid, this.deviceUnits, [{ start: u, count }], true);
        this.allocator.noteZeroed(u, count);
        r.start += count;
        r.count -= count;
        return count * ALLOC_UNIT;
      });
      if (did === 0) break;
      done += did;
      this.zeroStats.freeZeroedBytes += did;
      o.onProgress?.({ done, total });
    }
    return { zeroedBytes: done, dirtyFreeBytes: dirtyBytes(), cleanMap: true };
  }

  /** Free bytes not known clean (what zeroFree still has to do), without touching the device. */
  dirtyFreeBytes(): number {
    return this.allocator.dirtyFreeRuns().reduce((n, r) => n + r.count * ALLOC_UNIT, 0);
  }

  /**
   * Before the first append of every master: do the header's counters agree with the entries?
   * next_index is not CRC-protected; a torn header write, a stale line or a bad repair can lower
   * it, and appending there would overwrite entries that hosts have replayed (and hand their
   * memory to the new file). Valid entries right past next_index are committed (roll forward:
   * hosts may serve them); anything else past them is a gap no counter explains, so we refuse.
   */
  /**
   * The committed-generation line must name the current generation before this master writes
   * anything to a log region (an append, or a compaction's copy into the other region). A crash
   * between a switch and its line leaves the line one behind; it is moved here. Then a record
   * damaged later can never make readers fall back to a region this master wrote past.
   */
  private ensureCommitLine(): void {
    const a = this.reader.activeLog;
    const s = inspectGenerations(this.media, this.sb.uuid);
    if (s.commit.state === 'valid' && s.commit.line.generation >= a.generation) return;
    this.checkFence();
    writeLogGenCommit(this.media, { generation: a.generation, fsUuid: this.sb.uuid, altOffset: a.generation > 0 ? a.altOffset : 0 });
  }

  private crossCheckLog(): void {
    const h = this.reader.header();
    const scan = this.reader.scanPastEnd(h.nextIndex, h.nextSeqnum);
    if (scan.nonEmptyAt !== undefined) {
      throw new FamfsError(
        'ECORRUPT',
        `log slot ${scan.nonEmptyAt} past the end of the log (next_index ${h.nextIndex}${scan.valid ? `, then ${scan.valid} valid entries` : ''}) is not empty: ` +
          'entries were lost or the counter is wrong; refusing to append (run famfs fsck, then famfs repair)',
      );
    }
    if (this.compacted) this.ensureCommitLine();
    if (scan.valid > 0) {
      const end = h.nextIndex + scan.valid;
      const base = this.reader.activeLog.offset;
      this.media.write(base + LH.nextSeqnum, encodeLogCounters(h.nextSeqnum + scan.valid, end));
      this.media.flush(base + LH.nextSeqnum, 16);
      this.rolledForward.push({ from: h.nextIndex, to: end });
      const r = this.catchUp();
      if (r.stop) throw new FamfsError('ECORRUPT', `log entry ${r.stop.index} is bad (${r.stop.reason}); refusing to append after it (run famfs fsck)`);
    }
    this.logChecked = true;
  }

  /**
   * Crash-safe append: entry, flush its lines; then the counters, flush their line. A crash in
   * between leaves an entry past next_index that replay never reads. Cost is independent of how
   * full the log is.
   */
  private append(h: LogHeader, body: EntryBody): LogEntry {
    return this.appendAll(h, [body])[0];
  }

  /**
   * Appends `bodies` as consecutive entries that one counter update publishes. Every slot they
   * take must be empty: slots past the end are zero (mkfs zeroes the log, compaction zeroes the new
   * region's tail, repair clears a torn slot), and anything else may be an entry hosts replayed
   * under a counter that has since gone backwards, never to be overwritten. The first write reads
   * all those slots fresh and writes only if every one is empty (one step); then the other entries;
   * then the fence is checked and the counters publish them all. A crash before the counters
   * leaves valid entries past next_index, which the next master's cross-check commits (as for a
   * single entry); replay never reads past next_index.
   */
  private appendAll(h: LogHeader, bodies: readonly EntryBody[]): LogEntry[] {
    const n = bodies.length;
    const slot = h.nextIndex;
    const index = h.nextSeqnum;
    if (slot !== this.tree.slot || index !== this.tree.nextIndex) {
      throw new FamfsError('ECORRUPT', `log moved under the writer (header ${slot}/${index}, replayed ${this.tree.slot}/${this.tree.nextIndex})`);
    }
    const base = this.reader.activeLog.offset;
    const at = base + entryOffset(slot);
    if (this.emptySlots.length < n * LE.SIZE) this.emptySlots = Buffer.alloc(n * LE.SIZE);
    for (let i = 0; i < n; i++) {
      const raw = encodeEntry(index + i, bodies[i], this.entryScratch);
      if (i > 0) writeFlush(this.media, at + i * LE.SIZE, raw);
      else if (!writeFlushIf(this.media, at, raw, at, n === 1 ? EMPTY_ENTRY : this.emptySlots.subarray(0, n * LE.SIZE))) {
        throw new FamfsError(
          'ECORRUPT',
          `log slot ${this.firstOccupied(at, slot, n)} (next_index${n > 1 ? ` or one of the ${n - 1} after it` : ''}) is not empty: ` +
            'it may hold an entry hosts have replayed; refusing to overwrite it (run famfs fsck, then famfs repair)',
        );
      }
    }
    // The fence is checked right before the counters publish the entries.
    const counters = encodeLogCounters(index + n, slot + n);
    this.fencedWriteFlush(base + LH.nextSeqnum, counters);
    this.reader.notePublished(counters);
    const entries: LogEntry[] = [];
    for (let i = 0; i < n; i++) {
      const entry: LogEntry = { index: index + i, seqnum: index + i, body: bodies[i] };
      const change = this.tree.apply(entry);
      this.noteChanges(change ? [change] : []);
      entries.push(entry);
    }
    return entries;
  }

  /** Zeros as long as the slots of the largest write so far (what appendAll's slots must read). */
  private emptySlots = Buffer.alloc(2 * LE.SIZE);

  /** The first of `n` slots from `slot` (at device offset `at`) that is not all zero, for the message. */
  private firstOccupied(at: number, slot: number, n: number): number {
    const b = Buffer.alloc(LE.SIZE);
    for (let i = 0; i < n; i++) {
      readFresh(this.media, at + i * LE.SIZE, b);
      if (!b.equals(EMPTY_ENTRY)) return slot + i;
    }
    return slot;
  }

  private noteChanges(changes: TreeChange[]): void {
    if (!this.ready) return;
    for (const c of changes) {
      if (c.node.kind !== 'file') continue;
      if (c.op === 'add') {
        if (this.allocator.noteAdded(c.node.fmap) && this.cleanMap === 'on') this.staleClean.push(c.node.fmap);
      } else this.allocator.noteReleased(c.deleteIndex, c.node.fmap);
    }
  }
}

function sameFmap(a: Fmap, b: Fmap): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'interleave' && b.kind === 'interleave' && (a.nstrips !== b.nstrips || a.chunkSize !== b.chunkSize)) return false;
  const x = fmapExtents(a);
  const y = fmapExtents(b);
  return x.length === y.length && x.every((e, i) => e.devindex === y[i].devindex && e.offset === y[i].offset && e.len === y[i].len);
}

/**
 * Why a replay of a compacted log does not describe the tree it was made from (undefined when
 * it does): the same nodes under the same log indexes and paths with the same maps, the same
 * next index, and every delete the horizon still holds back.
 */
function compareTrees(want: FamfsTree, got: FamfsTree, horizon: number): string | undefined {
  if (got.nextIndex !== want.nextIndex) return `next log index ${got.nextIndex}, want ${want.nextIndex}`;
  if (got.problems.length > 0) return `replay reports ${got.problems[0].message}`;
  if (got.byIndex.size !== want.byIndex.size) return `${got.byIndex.size} live nodes, want ${want.byIndex.size}`;
  for (const [index, w] of want.byIndex) {
    const g = got.byIndex.get(index);
    if (!g) return `entry ${index} ("${w.relpath}") is missing`;
    if (g.relpath !== w.relpath || g.kind !== w.kind || g.mode !== w.mode || g.uid !== w.uid || g.gid !== w.gid)
      return `entry ${index} ("${w.relpath}") differs`;
    if (g.kind === 'file' && w.kind === 'file' && (g.size !== w.size || !sameFmap(g.fmap, w.fmap))) return `file ${index} ("${w.relpath}") maps differently`;
  }
  const held = (t: FamfsTree) =>
    t.released
      .filter((x) => x.deleteIndex >= horizon)
      .map((x) => `${x.deleteIndex}:${JSON.stringify(x.extents)}`)
      .sort()
      .join(',');
  if (held(got) !== held(want)) return 'the deletes still held back for lagging hosts differ';
  return undefined;
}
