/**
 * The famfs FUSE server, TypeScript half: opens the device, replays the log into an inode
 * table, starts the C++ session (which serves every request on its own threads), and keeps
 * the table current by polling the log header. Control operations (catch up, flush,
 * invalidate, direct I/O, status) are methods here; control.ts puts them on a socket.
 */
import type { Logger } from 'pino';

import { openDevice, type DaxDevice } from '../device/index.js';
import { fmapExtents } from '../famfs/fmap.js';
import { FamfsFs } from '../famfs/fs.js';
import { fenceWindowMs } from '../famfs/hosts.js';
import type { CatchUpResult } from '../famfs/replay.js';
import { FuseError } from './errors.js';
import { EMPTY_GUARD, loadGuard, saveGuard, type ReadOnlyGuard } from './guard.js';
import { buildInodeTable, resolvePath, ROOT_INO } from './inode-table.js';
import { fenceClockMs, fuseSessionClass, type NativeFault, type NativeFuseSession, type NativeHandoverParams, type NativeSessionStatus } from './native.js';
import { DEFAULT_READAHEAD_KB, setReadahead } from './readahead.js';

export interface FuseServerOptions {
  /** /dev/daxX.Y or an emulation file. */
  device: string;
  mountpoint: string;
  /** Map the device read-only and mount `ro`: writes fail with EROFS. */
  readOnly?: boolean;
  /** Start with direct I/O for every open (coherent across hosts, no page cache). */
  directIo?: boolean;
  /** How often to look at the log header for new entries; 0 disables polling. */
  pollMs?: number;
  /** Republish the replay position at least this often when idle (default 10 s). */
  ackHeartbeatMs?: number;
  /** Reply to reads from the mapping without a user-space copy (default true). */
  zeroCopyReads?: boolean;
  maxThreads?: number;
  /**
   * One /dev/fuse descriptor per worker thread (default true). False: every worker reads the session
   * fd, the only one an fd deposit holds (deposit.ts): requests read by a server that dies then stay
   * on a file the holder keeps, for the next server to have resent.
   */
  cloneFd?: boolean;
  /** Kernel readahead for the mount in KiB (default DEFAULT_READAHEAD_KB); 0 leaves the kernel default. */
  readaheadKb?: number;
  attrTimeout?: number;
  entryTimeout?: number;
  /**
   * Where the read-only guard (guard.ts) is kept across restarts: read before the first request is
   * served, written by every `guard` control op. Undefined: nothing guarded, nothing kept.
   */
  guardFile?: string;
  /** The control socket path, advertised in the root's user.famfs.* xattrs. */
  controlSocket?: string;
  /** This host's identity for publishing its replay position (design-hazards §2). */
  hostUuid?: string;
  hostName?: string;
  /** Called once if the kernel connection ends without stop() (unmounted from outside). */
  onConnectionLost?: () => void;
  logger: Logger;
}

/** A connection received from a running server (see handover.ts). */
export interface AdoptedConnection {
  /** fds[0] is the session fd; the rest are the old server's clones, closed after it exits. */
  fds: number[];
  params: NativeHandoverParams;
  /**
   * Planned handover only: the connection the old server sent the fds on, and whether it keeps that
   * open until its process is gone (servers of this release do; older ones close it at once).
   */
  peer?: { fd: number; heldUntilExit: boolean };
}

export interface CatchupResult {
  /** Log index reached (entries replayed). */
  index: number;
  added: number;
  removed: number;
  /** Kernel invalidation notices sent for this update. */
  notices: number;
  stop?: { index: number; reason: string };
}

export interface ServerStatus {
  device: string;
  mountpoint: string;
  logIndex: number;
  /** Log generation replayed (0: famfs' own log; each compaction adds one). */
  logGeneration: number;
  files: number;
  directories: number;
  failed: boolean;
  failureMessage: string | null;
  serving: boolean;
  directIo: boolean;
  directIoFiles: string[];
  /** How many paths the read-only guard holds (guard.ts; the paths: guardNow, `guard-show`): status stays small. */
  guard: { readOnly: number; writable: number; file: string | null };
  replayStop: { index: number; reason: string } | null;
  /**
   * Log entries this host replayed that were rewritten since (a master appended over them): the
   * log no longer describes what this host serves, and another file may now sit on its memory.
   */
  rewrittenEntries: { index: number; nowValid: boolean; servedPath: string | null }[];
  /** Past the self-fence deadline: data I/O answers EIO until the next replay and ack. */
  fenced: boolean;
  native: NativeSessionStatus;
}

/**
 * How often a host re-publishes its replay position when nothing changed. Well under the
 * master's host liveness window (60 s), so only a host that is really gone stops counting; never
 * more than a quarter of the self-fence window (see ackCycle).
 */
const DEFAULT_ACK_HEARTBEAT_MS = 10_000;

export class FamfsFuseServer {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastFaults = 0;
  private lastPollError = '';
  private replayStop: { index: number; reason: string } | null = null;
  private lastAckMs = 0;
  /** Self-fence deadline on fenceClockMs()'s clock; null while this host takes no part in reclaim. */
  private fenceDeadline: number | null = null;
  private fenceWindow = fenceWindowMs(60_000);
  /** The replay after an ack moved the tree past the acked position: ack again on the next poll. */
  private ackDue = false;
  private fenceReported = false;
  private readonly directFiles = new Set<string>();
  private lostReported = false;
  private adopted: AdoptedConnection | undefined;
  private readonly rewritesReported = new Set<string>();
  private guard: ReadOnlyGuard = EMPTY_GUARD;
  /** Inode numbers the guard resolved to in the table the session serves now. */
  private guardInos: { readOnly: number[]; writable: number[] } = { readOnly: [], writable: [] };
  /** Between handoverTo and its confirmation or cancel: guard changes go to the new server. */
  private handingOver = false;

  private constructor(
    private readonly opts: FuseServerOptions,
    private readonly device: DaxDevice,
    private readonly fs: FamfsFs,
    private readonly session: NativeFuseSession,
  ) {}

  /** Opens the device, replays the log, mounts, and starts following the log. */
  static start(opts: FuseServerOptions): FamfsFuseServer {
    return FamfsFuseServer.launch(opts, undefined);
  }

  /** Like start, but serves a connection handed over by a running server instead of mounting. */
  static adopt(opts: FuseServerOptions, conn: AdoptedConnection): FamfsFuseServer {
    return FamfsFuseServer.launch(opts, conn);
  }

  private static launch(opts: FuseServerOptions, adopted: AdoptedConnection | undefined): FamfsFuseServer {
    const log = opts.logger;
    const device = openDevice(opts.device, { readOnly: opts.readOnly === true });
    let session: NativeFuseSession | undefined;
    try {
      const fs = FamfsFs.open(device, { readOnly: true, hostUuid: opts.hostUuid, hostName: opts.hostName, watchRewrites: true });
      const sb = fs.superblock;
      const xattrs: Record<string, string> = { 'user.famfs.device': opts.device };
      if (opts.controlSocket !== undefined) {
        // famfs' own tools recognise a famfs FUSE mount by this xattr naming a directory that
        // holds a socket called `sock`; our control socket lives at <that dir>/sock by default.
        xattrs['user.famfs.shadow'] = opts.controlSocket.replace(/\/[^/]*$/, '') || '/';
        xattrs['user.famfs.control'] = opts.controlSocket;
      }
      const Session = fuseSessionClass();
      session = new Session(device.nativeHandle, opts.mountpoint, {
        fsname: 'famfs',
        subtype: 'famfs',
        readOnly: opts.readOnly === true,
        directIo: opts.directIo === true,
        zeroCopyReads: opts.zeroCopyReads !== false,
        maxThreads: opts.maxThreads ?? 0,
        cloneFd: opts.cloneFd !== false,
        attrTimeout: opts.attrTimeout ?? 1,
        entryTimeout: opts.entryTimeout ?? 1,
        mountTime: Math.floor(Date.now() / 1000),
        rootXattrs: xattrs,
      });
      const server = new FamfsFuseServer(opts, device, fs, session);
      server.adopted = adopted;
      // The guard before the first request (guard.ts says why it is kept in a file): a restarted or
      // adopting server never serves a file read-write that this host serves read-only.
      if (opts.guardFile !== undefined) {
        const { guard, problem } = loadGuard(opts.guardFile);
        if (problem !== undefined)
          log.error({ file: opts.guardFile, err: problem }, 'read-only guard unreadable: every file is read-only until the node plugin sends the guard again');
        server.guard = guard;
      }
      // Publish our position and arm the self-fence before the first request is served, so a
      // server that starts (or adopts a connection) never answers from an unproven table.
      if (server.takesPart()) server.armFence(server.publishAndReplay().t0);
      const table = buildInodeTable(fs.tree, { logOffset: fs.activeLog.offset, logLen: sb.logLen });
      server.applyGuard();
      try {
        if (adopted) session.adopt(adopted.fds[0], adopted.params, table, fs.tree.nextIndex);
        else session.start(table, fs.tree.nextIndex);
      } catch (e) {
        if (adopted) throw new FuseError('EHANDOVER', `adopting the FUSE connection of ${opts.mountpoint}: ${(e as Error).message}`);
        throw new FuseError('EMOUNT', `mounting famfs on ${opts.mountpoint}: ${(e as Error).message}`);
      }
      server.refreshStatfs();
      const ra = opts.readaheadKb ?? DEFAULT_READAHEAD_KB;
      if (ra > 0 && !adopted) {
        const now = setReadahead(opts.mountpoint, ra);
        if (now === undefined) log.warn({ mountpoint: opts.mountpoint }, 'could not raise readahead');
      }
      const st = session.status();
      log.info(
        {
          device: opts.device,
          mountpoint: opts.mountpoint,
          logIndex: fs.tree.nextIndex,
          files: fs.tree.fileCount,
          dirs: fs.tree.dirCount,
          threads: st.threads,
          directIo: st.directIo,
          flushMethod: st.flushMethod,
        },
        adopted ? 'famfs FUSE connection adopted (no remount)' : 'famfs mounted',
      );
      const pollMs = opts.pollMs ?? 100;
      if (pollMs > 0) {
        server.timer = setInterval(() => server.poll(), pollMs);
        server.timer.unref();
      }
      return server;
    } catch (e) {
      session?.stop();
      device.close();
      throw e;
    }
  }

  /** Replays new log entries and swaps the inode table if anything changed. */
  catchup(): CatchupResult {
    this.assertRunning();
    const before = this.fs.tree.nextIndex;
    if (this.fenceDeadline !== null && fenceClockMs() >= this.fenceDeadline && !this.fenceReported) {
      this.fenceReported = true;
      this.opts.logger.warn(
        { overdueMs: Math.round(fenceClockMs() - this.fenceDeadline), logIndex: before },
        'self-fenced: this host did not ack within its fence window (stalled?); reads and writes answer EIO until it has replayed the log and acked',
      );
    }
    let r: ReturnType<FamfsFs['catchUp']>;
    try {
      r = this.fs.catchUp();
    } finally {
      this.reportRewrites();
    }
    let added = 0;
    let removed = 0;
    for (const c of r.changes) {
      if (c.op === 'add') added++;
      else removed++;
    }
    let notices = 0;
    // A compaction (new log generation) keeps every live node's log index, hence its inode:
    // open handles stay valid, and only what really changed is added or removed.
    if (r.nextIndex !== before || r.changes.length > 0 || r.newGeneration !== undefined) {
      const sb = this.fs.superblock;
      notices = this.swapTable(buildInodeTable(this.fs.tree, { logOffset: this.fs.activeLog.offset, logLen: sb.logLen }), r.nextIndex);
      this.refreshStatfs();
      this.ackCycle();
      this.opts.logger.info(
        { index: r.nextIndex, added, removed, notices, ...(r.newGeneration !== undefined ? { generation: r.newGeneration } : {}) },
        r.newGeneration !== undefined ? 'compacted log generation replayed' : 'log replayed',
      );
    } else if (
      this.ackDue ||
      this.fenceReported ||
      fenceClockMs() - this.lastAckMs >= Math.min(this.opts.ackHeartbeatMs ?? DEFAULT_ACK_HEARTBEAT_MS, this.fenceWindow / 4)
    ) {
      // Idle or stuck at a bad entry, this host still maps files: keep its slot alive so the
      // master goes on holding back memory deleted after our position (design hazard 2), and
      // keep the self-fence armed.
      this.ackCycle();
    }
    if (r.stop && (this.replayStop === null || this.replayStop.index !== r.stop.index)) {
      this.opts.logger.warn({ stop: r.stop }, 'log replay stopped at a bad entry; will retry');
    }
    this.replayStop = r.stop ?? null;
    return { index: r.nextIndex, added, removed, notices, ...(r.stop ? { stop: r.stop } : {}) };
  }

  /** The host giving a file up: write its CPU cache lines back to the shared memory. */
  flush(relpath: string): void {
    const ino = this.fileIno(relpath);
    // Fenced, this file's memory may belong to another volume now: writing lines back could land there.
    if (this.isFenced())
      throw new FuseError(
        'EIO',
        `flush ${relpath}: this host is self-fenced (not acked within its fence window); it answers again once it has replayed the log and acked`,
      );
    const r = this.session.flushFile(ino);
    if (!r.ok) this.cacheOpFailed('flush', relpath, r.error, r.fault);
  }

  /** The host taking a file over: drop its CPU lines and this host's page cache of it. */
  invalidate(relpath: string): void {
    const ino = this.fileIno(relpath);
    const r = this.session.invalidateFile(ino);
    if (!r.ok) this.cacheOpFailed('invalidate', relpath, r.error, r.fault);
  }

  /** Direct I/O for the whole mount, or for one file (applies to opens from now on). */
  setDirectIo(on: boolean, relpath?: string): void {
    this.assertRunning();
    if (relpath === undefined) {
      this.session.setDirectIo(on);
      return;
    }
    const ino = this.fileIno(relpath);
    this.session.setFileDirectIo(ino, on);
    if (on) this.directFiles.add(relpath);
    else this.directFiles.delete(relpath);
  }

  /**
   * Replaces the read-only guard: kept in the guard file first (a restart must find it), then
   * applied. Refused with EAGAIN while handing the connection over: the new server read the file
   * when it adopted the connection, so a change now would be lost to it; the caller asks again.
   */
  setGuard(g: ReadOnlyGuard): void {
    this.assertRunning();
    if (this.handingOver) throw new FuseError('EAGAIN', 'this server is handing its FUSE connection over to a new one; send the guard again in a moment');
    if (this.opts.guardFile !== undefined) saveGuard(this.opts.guardFile, g);
    this.guard = g;
    this.applyGuard();
    this.opts.logger.info({ readOnly: g.readOnly.length, writable: g.writable.length }, 'read-only guard set');
  }

  /** The read-only guard as held now, and where it is kept. */
  guardNow(): ReadOnlyGuard & { file: string | null } {
    return { ...this.guard, file: this.opts.guardFile ?? null };
  }

  status(): ServerStatus {
    const native = this.session.status();
    return {
      device: this.opts.device,
      mountpoint: this.opts.mountpoint,
      logIndex: this.fs.tree.nextIndex,
      logGeneration: this.fs.activeLog.generation,
      files: this.fs.tree.fileCount,
      directories: this.fs.tree.dirCount,
      failed: native.failed || this.device.failed,
      failureMessage: native.failureMessage ?? this.device.failureMessage ?? null,
      serving: native.serving,
      directIo: native.directIo,
      directIoFiles: [...this.directFiles],
      guard: { readOnly: this.guard.readOnly.length, writable: this.guard.writable.length, file: this.opts.guardFile ?? null },
      replayStop: this.replayStop,
      rewrittenEntries: this.fs.rewrittenEntries().map((w) => ({ index: w.index, nowValid: w.nowValid, servedPath: this.servedPath(w.index) })),
      fenced: native.fenced,
      native,
    };
  }

  /** Old side of a handover: stop answering and send our /dev/fuse fds to `path`. */
  handoverTo(path: string): void {
    this.assertRunning();
    try {
      this.session.handoverTo(path);
    } catch (e) {
      throw new FuseError('EHANDOVER', `handover to ${path}: ${(e as Error).message}`);
    }
    this.handingOver = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Old side: the new server never confirmed; serve again. */
  cancelHandover(): void {
    this.handingOver = false;
    this.session.cancelHandover();
    const pollMs = this.opts.pollMs ?? 100;
    if (!this.stopped && pollMs > 0 && this.timer === undefined) {
      this.timer = setInterval(() => this.poll(), pollMs);
      this.timer.unref();
    }
  }

  /** Old side: the new server owns the connection; never unmount it. The process should exit. */
  abandon(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.session.abandon();
  }

  /** New side, once the old server has exited: recover its unanswered requests, drop its fds. */
  finishAdoption(): void {
    if (this.adopted) this.session.finishAdoption(this.adopted.fds.slice(1));
    this.adopted = undefined;
  }

  /** The session's /dev/fuse descriptor and its negotiated parameters, for the fd deposit; undefined when not serving. */
  connectionForDeposit(): { fd: number; params: NativeHandoverParams } | undefined {
    if (this.stopped) return undefined;
    const fd = this.session.sessionFd();
    if (fd < 0) return undefined;
    const params = this.session.handoverParams();
    return params.connectionId > 0 ? { fd, params } : undefined;
  }

  /** Unmounts (severing the connection if something still holds it) and closes the device. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.session.stop();
    this.device.close();
    this.opts.logger.info({ mountpoint: this.opts.mountpoint }, 'famfs unmounted');
  }

  private poll(): void {
    if (this.stopped) return;
    const st = this.session.status();
    if (st.counters.faults !== this.lastFaults) {
      this.lastFaults = st.counters.faults;
      this.opts.logger.error({ faults: st.faults, failureMessage: st.failureMessage }, 'memory error while serving: device marked failed, I/O answers EIO');
    }
    if (!st.serving) {
      if (!this.lostReported) {
        this.lostReported = true;
        this.opts.logger.error({ mountpoint: this.opts.mountpoint }, 'FUSE connection ended (unmounted or aborted from outside)');
        this.opts.onConnectionLost?.();
      }
      return;
    }
    if (st.failed) return; // the log lives on the same memory; nothing more to learn from it
    try {
      this.catchup();
      this.lastPollError = '';
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.lastPollError) {
        this.lastPollError = msg;
        this.opts.logger.error({ err: msg }, 'log catch-up failed; will retry');
      }
    }
  }

  /** What this host serves from log entry `index` (our replay's view, never the rewritten bytes). */
  private servedPath(index: number): string | null {
    return this.fs.tree.byIndex.get(index)?.relpath ?? null;
  }

  /** Say it loudly, once per rewrite: pods on this host may be reading memory given to another file. */
  private reportRewrites(): void {
    for (const w of this.fs.rewrittenEntries()) {
      const key = `${w.index}:${w.nowCrc}`;
      if (this.rewritesReported.has(key)) continue;
      this.rewritesReported.add(key);
      const node = this.fs.tree.byIndex.get(w.index);
      this.opts.logger.error(
        {
          event: 'log-entry-rewritten',
          index: w.index,
          replayedCrc: `0x${w.replayedCrc.toString(16)}`,
          nowCrc: `0x${w.nowCrc.toString(16)}`,
          nowValid: w.nowValid,
          served: node ? { path: node.relpath, ...(node.kind === 'file' ? { extents: fmapExtents(node.fmap) } : {}) } : null,
        },
        `famfs log entry ${w.index}, which this host replayed${node ? ` (it serves "${node.relpath}")` : ''}, was ${w.nowValid ? 'rewritten by a writer' : 'damaged'}: ` +
          'the log no longer describes what this host serves; run famfs fsck on the master, and do not create volumes until it is understood',
      );
    }
  }

  /** The guard's paths as inode numbers of the current tree (a path not replayed yet resolves later). */
  private resolveGuard(): { readOnly: number[]; writable: number[] } {
    const inos = (paths: string[]): number[] => {
      const out: number[] = [];
      for (const p of paths) {
        const r = p === '' ? { ino: ROOT_INO } : resolvePath(this.fs.tree, p);
        if (r !== undefined) out.push(r.ino);
      }
      return out;
    };
    return { readOnly: inos(this.guard.readOnly), writable: inos(this.guard.writable) };
  }

  private applyGuard(): void {
    this.guardInos = this.resolveGuard();
    this.session.setGuard(this.guardInos.readOnly, this.guardInos.writable);
  }

  /**
   * Swaps the session's table with the guard following it: a guarded path created, or deleted and
   * made again, has a new inode number. While the old table may still serve a request, the guard
   * holds the read-only inodes of both trees and only the writable ones both agree on.
   */
  private swapTable(table: ReturnType<typeof buildInodeTable>, nextIndex: number): number {
    if (this.guard.readOnly.length === 0) return this.session.update(table, nextIndex);
    const before = this.guardInos;
    const after = this.resolveGuard();
    const keep = new Set(after.writable);
    this.session.setGuard(
      [...new Set([...before.readOnly, ...after.readOnly])],
      before.writable.filter((i) => keep.has(i)),
    );
    const notices = this.session.update(table, nextIndex);
    this.guardInos = after;
    this.session.setGuard(after.readOnly, after.writable);
    return notices;
  }

  private refreshStatfs(): void {
    const u = this.fs.usage();
    this.session.setStatfs({
      totalBytes: u.deviceBytes,
      freeBytes: u.freeBytes,
      totalInodes: u.logEntriesTotal,
      freeInodes: Math.max(0, u.logEntriesTotal - u.logEntriesUsed),
    });
  }

  /**
   * Hosts that publish a replay position take part in reclaim, and so fence themselves. A host with
   * no identity or a read-only mapping cannot publish. Published before any delete too: the master
   * uses it to hold deleted memory back, and fsck and a new master to tell a lowered next_index (a
   * host acked past it) from an interrupted append; the slots live in bytes famfs never reads. A
   * device without the extension block (made by famfs itself, no master of ours yet) has no slots
   * to publish in and has never had a delete: nothing to fence against until a master makes one.
   */
  private takesPart(): boolean {
    return this.opts.hostUuid !== undefined && !this.device.readOnly && this.fs.hasExtBlock();
  }

  private isFenced(): boolean {
    return this.fenceDeadline !== null && fenceClockMs() >= this.fenceDeadline;
  }

  /**
   * One clock, host side (docs/format.md "One clock"): read the fence clock, publish the replay
   * position, then replay once more. Returns the clock reading when the fence may be armed from
   * it: the master either saw this ack (and holds back every delete at or above it) or judged us
   * gone before it, and then every delete whose memory it reused was appended before this replay.
   */
  private publishAndReplay(): { t0: number | undefined; moved: boolean } {
    const t0 = fenceClockMs();
    try {
      this.fs.ackReplay(this.opts.hostUuid!, this.opts.hostName ?? '');
      this.fenceWindow = fenceWindowMs(this.fs.hostLiveMs());
    } catch (e) {
      this.opts.logger.warn({ err: (e as Error).message }, 'could not publish replay position; the self-fence stays where it was');
      return { t0: undefined, moved: false };
    }
    this.lastAckMs = fenceClockMs();
    const before = this.fs.tree.nextIndex;
    let r: CatchUpResult;
    try {
      r = this.fs.catchUp();
    } finally {
      this.reportRewrites();
    }
    const moved = r.nextIndex !== before || r.changes.length > 0 || r.newGeneration !== undefined;
    // The tree went past the position just published: publish again on the next poll.
    this.ackDue = moved;
    return { t0: r.stop ? undefined : t0, moved };
  }

  /** Arm the self-fence from `t0` (undefined: leave it; a fresh server stays fenced). */
  private armFence(t0: number | undefined): void {
    if (t0 === undefined) {
      if (this.fenceDeadline === null) {
        this.fenceDeadline = 0;
        this.session.setFenceDeadline(0);
      }
      return;
    }
    this.fenceDeadline = t0 + this.fenceWindow;
    this.session.setFenceDeadline(this.fenceDeadline);
    if (this.fenceReported) {
      this.fenceReported = false;
      this.opts.logger.info({ logIndex: this.fs.tree.nextIndex }, 'self-fence lifted: replayed the current log and acked');
    }
  }

  /** Publish the replay position, show what the second replay found, and re-arm the fence. */
  private ackCycle(): void {
    if (!this.takesPart()) return;
    const { t0, moved } = this.publishAndReplay();
    if (moved) {
      const sb = this.fs.superblock;
      this.swapTable(buildInodeTable(this.fs.tree, { logOffset: this.fs.activeLog.offset, logLen: sb.logLen }), this.fs.tree.nextIndex);
      this.refreshStatfs();
    }
    this.armFence(t0);
  }

  private fileIno(relpath: string): number {
    this.assertRunning();
    const r = resolvePath(this.fs.tree, relpath);
    if (!r) throw new FuseError('ENOENT', `no such famfs path: ${relpath}`);
    if (r.kind !== 'file') throw new FuseError('EISDIR', `${relpath} is a directory`);
    return r.ino;
  }

  private cacheOpFailed(op: string, relpath: string, error: string | undefined, fault: NativeFault | undefined): never {
    if (error === 'ENOENT') throw new FuseError('ENOENT', `no such famfs file: ${relpath}`);
    const detail = fault ? { signo: fault.signo, code: fault.code, addr: `0x${fault.addr.toString(16)}` } : undefined;
    this.opts.logger.error({ op, relpath, fault: detail }, 'memory error during cache operation');
    throw new FuseError('EIO', `${op} ${relpath}: memory error; the device is marked failed`);
  }

  private assertRunning(): void {
    if (this.stopped) throw new FuseError('ESTOPPED', 'the FUSE server is stopped');
  }
}
