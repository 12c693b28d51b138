/**
 * One famfs instance on one Media: superblock, replayed tree, allocator and the (single) writer.
 *
 * Data flows one way: media → log → tree → allocator. Mutations append an entry to the log and
 * then apply that same decoded entry to the tree, exactly as a replaying host would.
 */
import { randomUUID } from 'crypto';
import { Allocator, InterleaveParams, SpaceSummary } from './allocator';
import { FamfsError } from './errors';
import { ackReplay, initExtBlock, readAnyExtBlock, readExtBlock, readHostSlots, reclaimHorizon, writeExtBlock } from './hosts';
import {
  ALLOC_UNIT,
  checkRelpath,
  DEFAULT_LOG_LEN,
  encodeEntry,
  encodeLogCounters,
  encodeLogHeader,
  encodeSuperblock,
  entryOffset,
  EntryBody,
  ExtBlock,
  FAMFS_CSI_EXT_VERSION,
  FAMFS_VERSION,
  FileFlags,
  LE,
  LH,
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
} from './layout';
import { Media } from './media';
import { CatchUpResult, LogReader } from './replay';
import { DirNode, FamfsTree, FileNode, TreeChange, reservedBytes } from './tree';

export interface MkfsOptions {
  logLen?: number;
  /** System UUID of the master host (famfs' /opt/famfs/system_uuid). */
  systemUuid: string;
  /** Device path recorded in the superblock (informational, max 63 bytes). */
  devicePath: string;
  /** Overwrite an existing famfs superblock. */
  force?: boolean;
  now?: () => number;
}

export interface OpenOptions {
  /** This host's system UUID; only the master (sb system UUID) may append. */
  hostUuid?: string;
  hostName?: string;
  readOnly?: boolean;
  /** The fencing epoch this writer holds; appends fail with EFENCED once the shared epoch moves on. */
  fenceEpoch?: number;
  /** A host silent for longer than this no longer holds back reclaim of deleted files' memory. */
  hostLiveMs?: number;
  now?: () => number;
}

export interface CreateFileOptions {
  mode?: number;
  uid?: number;
  gid?: number;
  flags?: number;
  interleave?: InterleaveParams;
  /** Zero the file's memory before it becomes visible (required when memory may be reused). */
  zero?: boolean;
  random?: () => number;
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
}

const MIN_DEVICE_SIZE = (n: number) => reservedBytes(n) + ALLOC_UNIT;
const ZERO_CHUNK = Buffer.alloc(4 << 20);

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
  /** Entries this master committed because they sat valid past next_index (see crossCheckLog). */
  readonly rolledForward: { from: number; to: number }[] = [];
  /** The header's counters were cross-checked against the entries since this host became master. */
  private logChecked = false;

  private constructor(
    readonly media: Media,
    private sb: Superblock,
    private extended: boolean,
    private readonly opts: OpenOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.tree = new FamfsTree({ deviceSize: sb.deviceSize, reservedBytes: reservedBytes(sb.logLen) });
    this.reader = new LogReader(media, sb.logLen, () => this.extended || this.rereadExtended());
    this.allocator = new Allocator(this.tree, sb.deviceSize, sb.logLen);
    this.reader.catchUp(this.tree);
    this.allocator.rebuild(this.horizon());
  }

  /** Write a fresh famfs: log first, superblock last, so a crash never leaves a half-made fs that validates. */
  static mkfs(media: Media, o: MkfsOptions): FamfsFs {
    const logLen = o.logLen ?? DEFAULT_LOG_LEN;
    if (!Number.isInteger(logLen) || logLen < MIN_LOG_LEN || (logLen & (logLen - 1)) !== 0) {
      throw new FamfsError('EINVAL', `log length ${logLen} must be a power of two of at least 8 MiB`);
    }
    const deviceSize = Math.floor(media.size / ALLOC_UNIT) * ALLOC_UNIT;
    if (deviceSize < MIN_DEVICE_SIZE(logLen)) {
      throw new FamfsError('EINVAL', `device of ${media.size} bytes is too small for a ${logLen}-byte log (need at least ${MIN_DEVICE_SIZE(logLen)})`);
    }
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
    initExtBlock(media, uuid, o.systemUuid, (o.now ?? Date.now)());
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
    return FamfsFs.open(media, { hostUuid: o.systemUuid, now: o.now });
  }

  static open(media: Media, opts: OpenOptions = {}): FamfsFs {
    media.invalidate(SUPERBLOCK_OFFSET, SB.SIZE);
    const raw = media.read(SUPERBLOCK_OFFSET, SB.SIZE);
    const check = validateSuperblock(raw, media.size);
    if (!check.ok) {
      const code = check.problems[0]?.startsWith('no famfs superblock') ? 'ENOTFAMFS' : 'ECORRUPT';
      throw new FamfsError(code, `${check.problems.join('; ')}${code === 'ENOTFAMFS' ? ' (run famfs mkfs first)' : ' (run famfs fsck for details)'}`);
    }
    return new FamfsFs(media, decodeSuperblock(raw), check.extended, opts);
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

  header(): LogHeader {
    return this.reader.header();
  }

  /** Replay whatever other writers appended since the last call; keeps the allocator in step. */
  catchUp(): CatchUpResult {
    const r = this.reader.catchUp(this.tree);
    this.noteChanges(r.changes);
    return r;
  }

  lookup(relpath: string) {
    return this.tree.lookup(relpath);
  }

  usage(): UsageReport {
    return {
      ...this.allocator.summary(),
      logEntriesUsed: this.tree.nextIndex,
      logEntriesTotal: this.logCapacity,
      files: this.tree.fileCount,
      directories: this.tree.dirCount,
    };
  }

  /** Bytes of the data area (device minus superblock and log): no file can ever be larger. */
  get dataAreaBytes(): number {
    return this.sb.deviceSize - reservedBytes(this.sb.logLen);
  }

  /** Log entries that can still be appended. */
  logEntriesLeft(): number {
    return this.logCapacity - this.tree.nextIndex;
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
    this.reclaimReplayed();
    this.allocator.place(size, interleave);
    const parts = relpath.split('/');
    let needed = 1;
    for (let i = 1; i < parts.length; i++) if (this.tree.lookup(parts.slice(0, i).join('/')) === undefined) needed++;
    const used = this.tree.nextIndex;
    if (used + needed > this.logCapacity) {
      throw new FamfsError('ELOGFULL', `famfs log full: ${used} of ${this.logCapacity} entries used, ${needed} needed`);
    }
  }

  /**
   * Throws EFENCED unless the device is still at fencing epoch `epoch` (undefined: not held at
   * all). For writers of data outside the log that must stop once another master took over.
   */
  checkFenceEpoch(epoch: number | undefined): void {
    const block = this.extBlock();
    if (epoch === undefined || block.epoch !== epoch) {
      throw new FamfsError('EFENCED', `this writer holds fencing epoch ${epoch ?? 'none'} but the device is at ${block.epoch}: another master took over`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Writer side (master only)
  // ---------------------------------------------------------------------------------------------

  mkdir(relpath: string, o: MkdirOptions = {}): DirNode[] {
    checkRelpath(relpath);
    const mode = checkMode(o.mode ?? 0o755);
    const uid = checkId(o.uid ?? 0, 'uid');
    const gid = checkId(o.gid ?? 0, 'gid');
    const h = this.prepareWrite();
    const parts = relpath.split('/');
    const missing: string[] = [];
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      const n = this.tree.lookup(p);
      if (!n) missing.push(p);
      else if (n.kind !== 'dir') throw new FamfsError('ENOTDIR', `"${p}" is a file`);
      else if (i === parts.length) throw new FamfsError('EEXIST', `directory "${relpath}" already exists`);
    }
    if (missing.length > 1 && !o.parents) throw new FamfsError('ENOENT', `parent directory "${parts.slice(0, -1).join('/')}" does not exist (use -p)`);
    this.ensureLogRoom(h, missing.length);
    const made: DirNode[] = [];
    let next = h;
    for (const p of missing) {
      const e = this.append(next, { type: 'mkdir', relpath: p, mode, uid, gid });
      made.push(this.tree.lookup(p) as DirNode);
      next = { ...next, nextIndex: e.index + 1, nextSeqnum: e.index + 1 };
    }
    return made;
  }

  creat(relpath: string, size: number, o: CreateFileOptions = {}): FileNode {
    checkRelpath(relpath);
    if (!Number.isSafeInteger(size) || size <= 0) throw new FamfsError('EINVAL', `file size ${size} must be a positive integer (famfs files are pre-allocated)`);
    const mode = checkMode(o.mode ?? 0o644);
    const uid = checkId(o.uid ?? 0, 'uid');
    const gid = checkId(o.gid ?? 0, 'gid');
    const h = this.prepareWrite();
    this.checkNewName(relpath);
    this.ensureLogRoom(h, 1);
    this.reclaimReplayed();
    const fmap = this.allocator.place(size, o.interleave, o.random);
    if (o.zero) {
      for (const e of fmap.kind === 'simple' ? fmap.extents : fmap.strips) this.zeroRange(e.offset, e.len);
    }
    this.append(h, { type: 'file', relpath, size, mode, uid, gid, flags: o.flags ?? FileFlags.ALL_HOSTS_RW, fmap });
    return this.tree.lookup(relpath) as FileNode;
  }

  /**
   * Delete a file or an empty directory (famfs-csi extension). The memory is not reusable until
   * every live host has replayed past the delete entry.
   */
  rm(relpath: string): void {
    checkRelpath(relpath);
    const h = this.prepareWrite();
    const node = this.tree.lookup(relpath);
    if (!node) throw new FamfsError('ENOENT', `"${relpath}" does not exist`);
    if (node.kind === 'dir' && node.children.size > 0) throw new FamfsError('ENOTEMPTY', `directory "${relpath}" is not empty`);
    this.ensureLogRoom(h, 1);
    this.enableExtensions();
    this.append(h, { type: 'delete', targetIndex: node.index, targetType: node.kind === 'file' ? 'file' : 'mkdir', relpath });
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
    const stale = readAnyExtBlock(this.media);
    return initExtBlock(this.media, this.sb.uuid, this.sb.systemUuid, this.now(), undefined, (stale?.epoch ?? 0) + 1);
  }

  /**
   * Become the writer: bump the fencing epoch (so a paused former writer's next append fails)
   * and record this host as famfs master in the superblock. Returns the new epoch to hold.
   */
  takeOver(hostUuid: string): number {
    if (this.opts.readOnly) throw new FamfsError('EROFS', 'device is open read-only');
    // Another host may have taken over (and rewritten the superblock) since we last looked.
    this.rereadSuperblock();
    const block = this.extBlock();
    const epoch = block.epoch + 1;
    writeExtBlock(this.media, { ...block, epoch, masterUuid: hostUuid, epochTimeMs: this.now() });
    if (this.sb.systemUuid !== hostUuid) {
      const next: Superblock = { ...this.sb, systemUuid: hostUuid };
      this.media.write(SUPERBLOCK_OFFSET, encodeSuperblock(next));
      this.media.flush(SUPERBLOCK_OFFSET, SB.SIZE);
      this.sb = next;
    }
    this.opts.hostUuid = hostUuid;
    this.opts.fenceEpoch = epoch;
    this.logChecked = false;
    this.catchUp();
    return epoch;
  }

  /** Publish this host's replay position (see hosts.ts). */
  ackReplay(hostUuid: string, hostName: string): number {
    const block = this.extBlock();
    return ackReplay(this.media, block.slotCount, hostUuid, hostName, this.tree.nextIndex, this.now());
  }

  hosts() {
    const block = readExtBlock(this.media, this.sb.uuid);
    return block ? readHostSlots(this.media, block.slotCount) : [];
  }

  /** Log index below which deletes are known to every live host. */
  horizon(): number {
    const block = readExtBlock(this.media, this.sb.uuid);
    if (!block) return this.tree.nextIndex;
    const slots = readHostSlots(this.media, block.slotCount).filter((s) => s.hostUuid !== this.opts.hostUuid);
    return reclaimHorizon(slots, this.tree.nextIndex, this.now(), this.opts.hostLiveMs ?? 60_000);
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

  private ensureLogRoom(h: LogHeader, entries: number): void {
    if (h.nextIndex + entries > h.lastIndex + 1) {
      throw new FamfsError('ELOGFULL', `famfs log full: ${h.nextIndex} of ${h.lastIndex + 1} entries used, ${entries} needed (make a new file system with a larger --loglen)`);
    }
  }

  private checkFence(): void {
    // A device re-made under us (mkfs -f, ours or famfs') is another file system: nothing we know applies.
    this.media.invalidate(SUPERBLOCK_OFFSET + SB.uuid, 16);
    const uuid = bytesToUuid(this.media.read(SUPERBLOCK_OFFSET + SB.uuid, 16));
    if (uuid !== this.sb.uuid) {
      throw new FamfsError('EFENCED', `the device now holds another file system (UUID ${uuid}, this writer opened ${this.sb.uuid}): it was re-made; reopen it`);
    }
    if (this.opts.fenceEpoch === undefined) return;
    const block = readExtBlock(this.media, this.sb.uuid);
    if (!block || block.epoch !== this.opts.fenceEpoch) {
      throw new FamfsError('EFENCED', `this writer holds fencing epoch ${this.opts.fenceEpoch} but the device is at ${block?.epoch ?? 'none'}: another master took over`);
    }
  }

  /** Writer preconditions, then catch up so decisions are made on the current log. */
  private prepareWrite(): LogHeader {
    if (this.opts.readOnly) throw new FamfsError('EROFS', 'device is open read-only');
    if (!this.isMaster) {
      throw new FamfsError('ENOTMASTER', `this host (${this.opts.hostUuid ?? 'unknown'}) is not the famfs master (${this.sb.systemUuid}); only the master appends to the log`);
    }
    this.checkFence();
    const r = this.catchUp();
    if (r.stop) throw new FamfsError('ECORRUPT', `log entry ${r.stop.index} is bad (${r.stop.reason}); refusing to append after it (run famfs fsck)`);
    if (!this.logChecked) this.crossCheckLog();
    return this.reader.header();
  }

  /**
   * Before the first append of every master: do the header's counters agree with the entries?
   * next_index is not CRC-protected; a torn header write, a stale line or a bad repair can lower
   * it, and appending there would overwrite entries that hosts have replayed (and hand their
   * memory to the new file). Valid entries right past next_index are committed (roll forward:
   * hosts may serve them); anything else past them is a gap no counter explains, so we refuse.
   */
  private crossCheckLog(): void {
    const h = this.reader.header();
    const scan = this.reader.scanPastEnd(h.nextIndex);
    if (scan.nonEmptyAt !== undefined) {
      throw new FamfsError(
        'ECORRUPT',
        `log slot ${scan.nonEmptyAt} past the end of the log (next_index ${h.nextIndex}${scan.valid ? `, then ${scan.valid} valid entries` : ''}) is not empty: ` +
          'entries were lost or the counter is wrong; refusing to append (run famfs fsck, then famfs repair)',
      );
    }
    if (scan.valid > 0) {
      const end = h.nextIndex + scan.valid;
      this.media.write(LOG_OFFSET + LH.nextSeqnum, encodeLogCounters(end, end));
      this.media.flush(LOG_OFFSET + LH.nextSeqnum, 16);
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
    const index = h.nextIndex;
    if (index !== this.tree.nextIndex) throw new FamfsError('ECORRUPT', `log moved under the writer (header ${index}, replayed ${this.tree.nextIndex})`);
    const raw = encodeEntry(index, body);
    const at = LOG_OFFSET + entryOffset(index);
    // Slots past the end are zero (mkfs zeroes the log; repair clears a torn slot). Anything else
    // may be an entry hosts replayed under a counter that has since gone backwards: never overwrite it.
    this.media.invalidate(at, LE.SIZE);
    if (this.media.read(at, LE.SIZE).some((b) => b !== 0)) {
      throw new FamfsError('ECORRUPT', `log slot ${index} (next_index) is not empty: it may hold an entry hosts have replayed; refusing to overwrite it (run famfs fsck, then famfs repair)`);
    }
    this.media.write(at, raw);
    this.media.flush(at, LE.SIZE);
    this.checkFence();
    this.media.write(LOG_OFFSET + LH.nextSeqnum, encodeLogCounters(index + 1, index + 1));
    this.media.flush(LOG_OFFSET + LH.nextSeqnum, 16);
    const entry: LogEntry = { index, seqnum: index, body };
    const change = this.tree.apply(entry);
    this.noteChanges(change ? [change] : []);
    return entry;
  }

  private noteChanges(changes: TreeChange[]): void {
    for (const c of changes) {
      if (c.node.kind !== 'file') continue;
      if (c.op === 'add') this.allocator.noteAdded(c.node.fmap);
      else this.allocator.noteReleased(c.deleteIndex, c.node.fmap);
    }
  }
}
