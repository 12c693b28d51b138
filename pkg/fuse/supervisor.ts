// The life of a famfs FUSE server, in one place: started detached, waited for on its control
// socket, found again after a restart of whoever started it, replaced when dead, asked to flush or
// invalidate a file. cmd/famfs-fused.ts (without --foreground) and the CSI node plugin both use it.
//
// The node plugin's server: one per device, mounted at <state-dir>/mnt/<pool>, controlled over a
// root-only socket. Volumes are directories inside this mount; staging and publishing are bind
// mounts of them.
//
// The server is spawned DETACHED (its own session, stdio to a log file, not a child we wait on), so
// it outlives a restart or upgrade of the node plugin: pods' bind mounts pin the FUSE connection,
// and a dead server turns every one of them into ENOTCONN that no later mount can repair
// (design-hazards §1). The plugin finds its server again through a pid file and the control socket.
//
// The plugin also holds a copy of the server's FUSE connection (fd deposit, deposit.ts), so a
// killed server does not take the connection with it: pods' I/O waits, a new server adopts the
// connection (started here at once, or by the chart's famfs-fused container restarting) and resumes it.
import { spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { Logger } from 'pino';
import { forEachDeviceRun } from '../famfs/fmap.js';
import type { FamfsFs } from '../famfs/fs.js';
import { unmountAll } from '../mount/mount.js';
import { findMount, isFuseMount, probePath } from '../mount/mountinfo.js';
import { controlRequest } from './control-client.js';
import type { ControlReply, ControlRequest } from './control-protocol.js';
import { DEFAULT_ORPHAN_TIMEOUT_MS, depositSocketFor, FdDepositHolder } from './deposit.js';

/** sun_path holds 108 bytes including the NUL. */
const MAX_SOCKET_PATH = 107;
const START_TIMEOUT_MS = 20_000;

export interface FuseSupervisorOptions {
  stateDir: string;
  pool: string;
  devicePath: string;
  /** This host's identity for replay acknowledgements (lets the master reuse deleted memory safely). */
  hostUuid: string;
  log: Logger;
  /** famfs-fused entry script; defaults to dist/cmd/famfs-fused.js next to this module. */
  fusedScript?: string;
  /** How often the server polls the log (ms). */
  pollMs?: number;
  /**
   * The server is run by someone else (the chart's famfs-fused container, on this same mountpoint
   * and control socket): wait up to waitMs for it to serve, never spawn, replace or stop one.
   */
  external?: { waitMs: number };
  /**
   * A mapping of the same memory and a famfs view of it, to flush a file's cache lines when no
   * server runs (cache lines are physical: any mapping flushes them).
   */
  fallback?: { media: { flush(offset: number, length: number): void }; famfs: FamfsFs };
  /**
   * Hold a copy of the server's FUSE connection (deposit.ts) so it outlives a crash of the server;
   * false: don't. orphanTimeoutMs: how long a dead server's connection waits for a new server.
   */
  fdDeposit?: false | { orphanTimeoutMs?: number };
}

export type FuseHealth =
  | {
      state: 'serving';
      failed: boolean;
      failureMessage: string | null;
      logIndex: number;
      rewrittenEntries: number[];
      fenced: boolean;
      /** How many paths its read-only guard holds (undefined: a server without one). */
      guard?: { readOnly: number; writable: number };
    }
  | { state: 'absent' }
  /** held: the server died but this plugin holds its connection; a new server adopts it (pods' I/O waits, no remount). */
  | { state: 'dead'; message: string; held?: boolean };

/** How a flush reached the memory: the server, nothing to flush (the file is gone), or the fallback mapping. */
export type FlushRoute = 'fuse' | 'vanished' | 'plugin-mapping';

export class FuseSupervisorError extends Error {
  override readonly name = 'FuseSupervisorError';
  constructor(
    /** ELOG: the fallback's famfs log cannot be read (transient); EFLUSH/EINVALIDATE: the server or mapping refused. */
    readonly code: 'ESTART' | 'ECONTROL' | 'EDEAD' | 'EEXTERNAL' | 'EFLUSH' | 'EINVALIDATE' | 'ELOG',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Pool names become path components: keep them readable when safe, hash them otherwise. */
function poolDirName(pool: string): string {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(pool) ? pool : createHash('sha256').update(pool).digest('hex').slice(0, 16);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when /proc says `pid` runs famfs-fused (a recycled pid must never be signalled). */
function isFusedProcess(pid: number): boolean {
  try {
    return fs
      .readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .some((a) => a.endsWith('famfs-fused.js') || a.endsWith('famfs-fused'));
  } catch {
    return false;
  }
}

function guardCounts(g: unknown): { guard?: { readOnly: number; writable: number } } {
  if (typeof g !== 'object' || g === null) return {};
  const o = g as Record<string, unknown>;
  return typeof o['readOnly'] === 'number' && typeof o['writable'] === 'number' ? { guard: { readOnly: o['readOnly'], writable: o['writable'] } } : {};
}

/** Supervises one famfs-fused process serving one mountpoint (see the file comment). */
export class FuseSupervisor {
  readonly mountpoint: string;
  readonly socketPath: string;
  readonly logFile: string;
  readonly pidFile: string;
  private starting: Promise<'alive' | 'started'> | undefined;
  private readonly holder: FdDepositHolder | undefined;
  private watch: NodeJS.Timeout | undefined;
  private lastAutoStart = 0;

  constructor(private readonly opts: FuseSupervisorOptions) {
    const name = poolDirName(opts.pool);
    this.mountpoint = path.join(opts.stateDir, 'mnt', name);
    const runDir = path.join(opts.stateDir, 'fused', name);
    let socketPath = path.join(runDir, 'sock');
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      socketPath = path.join('/run/famfs-csi', createHash('sha256').update(runDir).digest('hex').slice(0, 16), 'sock');
    }
    this.socketPath = socketPath;
    this.logFile = path.join(runDir, 'famfs-fused.log');
    this.pidFile = path.join(runDir, 'pid');
    if (opts.fdDeposit !== false) {
      try {
        fs.mkdirSync(path.dirname(this.depositSocket), { recursive: true, mode: 0o700 });
        fs.chmodSync(path.dirname(this.depositSocket), 0o700);
        this.holder = FdDepositHolder.start(this.depositSocket, opts.fdDeposit?.orphanTimeoutMs ?? DEFAULT_ORPHAN_TIMEOUT_MS, opts.log);
      } catch (e) {
        opts.log.warn(
          { socket: this.depositSocket, err: (e as Error).message },
          "cannot hold the FUSE connection (fd deposit): a crash of famfs-fused will break running pods' volumes",
        );
      }
      this.watch = setInterval(() => this.watchDeposit(), 100);
      this.watch.unref();
    }
  }

  /** The fd deposit socket famfs-fused deposits its connection at (next to its control socket). */
  get depositSocket(): string {
    return depositSocketFor(this.socketPath);
  }

  /** True while this plugin holds the FUSE connection of a live server (deposited, not orphaned). */
  depositHeld(): boolean {
    const e = this.holder?.entry(path.resolve(this.mountpoint));
    return e !== undefined && !e.orphaned;
  }

  /** The held connection of a server that died, waiting for a new server; undefined otherwise. */
  private orphan(): { orphanedMs: number } | undefined {
    const e = this.holder?.entry(path.resolve(this.mountpoint));
    return e?.orphaned === true ? { orphanedMs: e.orphanedMs } : undefined;
  }

  /**
   * `p` (a probe of the mount), or 'orphaned' as soon as the server dies while it runs: a probe of a
   * held connection waits for the next server, and whoever waits for the probe must not wait with it.
   */
  private async unlessOrphaned<T>(p: Promise<T>): Promise<T | 'orphaned'> {
    if (this.holder === undefined) return p;
    let timer: NodeJS.Timeout | undefined;
    const orphaned = new Promise<'orphaned'>((resolve) => {
      timer = setInterval(() => {
        if (this.orphan() !== undefined) resolve('orphaned');
      }, 50);
    });
    try {
      return await Promise.race([p, orphaned]);
    } finally {
      clearInterval(timer);
    }
  }

  /**
   * The server died and we hold its connection: pods wait. Start a new server at once (it adopts the
   * connection), unless the server is someone else's (the famfs-fused container restarts by itself).
   */
  private watchDeposit(): void {
    this.holder?.reapExpired();
    if (this.opts.external !== undefined || this.starting !== undefined || this.orphan() === undefined) return;
    if (Date.now() - this.lastAutoStart < 1000) return;
    this.lastAutoStart = Date.now();
    this.opts.log.warn(
      { mountpoint: this.mountpoint },
      "famfs-fused died; this plugin holds its FUSE connection: starting a new server to adopt it (pods' I/O resumes)",
    );
    this.ensure().then(
      (r) => this.opts.log.info({ mountpoint: this.mountpoint, result: r }, 'famfs FUSE server restarted on the held connection'),
      (e: unknown) =>
        this.opts.log.error({ mountpoint: this.mountpoint, err: (e as Error).message }, 'restarting famfs-fused on the held connection failed; will retry'),
    );
  }

  /** Stops holding connections (a plugin shutting down: servers keep running, nothing is unmounted). */
  close(): void {
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
    this.holder?.stop();
  }

  /** famfs path of a volume's directory, file etc. → host path inside the mount. */
  hostPath(relpath: string): string {
    return path.join(this.mountpoint, relpath);
  }

  async control(req: ControlRequest, timeoutMs = 10_000): Promise<ControlReply> {
    try {
      return await controlRequest(this.socketPath, req, timeoutMs);
    } catch (e) {
      throw new FuseSupervisorError('ECONTROL', `famfs FUSE server at ${this.mountpoint} does not answer: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The server's pid from its pid file, if that process is still a famfs-fused. */
  serverPid(): number | undefined {
    let pid: number;
    try {
      pid = Number(fs.readFileSync(this.pidFile, 'utf8').trim());
    } catch {
      return undefined;
    }
    return Number.isInteger(pid) && pid > 0 && pidAlive(pid) && isFusedProcess(pid) ? pid : undefined;
  }

  /** What the kernel and the control socket say about the mount, without changing anything. */
  async health(): Promise<FuseHealth> {
    // Never probe a held connection nobody serves: the probe would wait for the next server.
    const orphan = this.orphan();
    if (orphan !== undefined) {
      return {
        state: 'dead',
        held: true,
        message: `famfs-fused for ${this.mountpoint} died ${orphan.orphanedMs} ms ago; this plugin holds its FUSE connection until a new server adopts it (pods' I/O waits meanwhile)`,
      };
    }
    const probe = await this.unlessOrphaned(probePath(this.mountpoint));
    if (probe === 'orphaned') return this.health();
    if (probe.health === 'disconnected') return { state: 'dead', message: `FUSE mount ${this.mountpoint} is dead (transport endpoint not connected)` };
    // Whether a FUSE filesystem is mounted there: asked of the path (statfs's magic) when it answers,
    // rather than of the mount table, which costs tens of milliseconds to read with thousands of
    // binds on a node (NodeStage comes through here). A path that answers an error (a fenced
    // server's EIO, say) is looked up in the table.
    const fuse = probe.health === 'ok' ? await isFuseMount(this.mountpoint).catch(() => undefined) : undefined;
    const mounted = fuse ?? (await findMount(this.mountpoint))?.fsType.startsWith('fuse') === true;
    if (!mounted) return { state: 'absent' };
    let reply: ControlReply;
    try {
      reply = await this.control({ op: 'status' }, 3000);
    } catch (e) {
      return { state: 'dead', message: `famfs FUSE server for ${this.mountpoint} is dead or unreachable: ${(e as Error).message}` };
    }
    if (!reply.ok) return { state: 'dead', message: `status: ${reply.error}` };
    const failed = reply['failed'] === true;
    const failureMessage = typeof reply['failureMessage'] === 'string' ? reply['failureMessage'] : null;
    if (reply['serving'] === false) return { state: 'dead', message: `FUSE server for ${this.mountpoint} lost its kernel connection` };
    const rewritten = Array.isArray(reply['rewrittenEntries']) ? (reply['rewrittenEntries'] as { index?: unknown }[]).map((w) => Number(w.index)) : [];
    return {
      state: 'serving',
      failed,
      failureMessage,
      logIndex: Number(reply['logIndex'] ?? 0),
      rewrittenEntries: rewritten,
      fenced: reply['fenced'] === true,
      ...guardCounts(reply['guard']),
    };
  }

  /**
   * Makes sure a server serves the mountpoint: reuses a live one, or clears a dead mount (lazy
   * unmount) and a stale server, then spawns a new detached one. Concurrent callers share one start.
   */
  ensure(): Promise<'alive' | 'started'> {
    this.starting ??= this.ensureOnce().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  /** True when the server belongs to someone else (see FuseSupervisorOptions.external). */
  get external(): boolean {
    return this.opts.external !== undefined;
  }

  private async ensureOnce(): Promise<'alive' | 'started'> {
    const log = this.opts.log;
    const h = await this.health();
    if (h.state === 'serving') return 'alive';
    if (this.opts.external !== undefined) return this.waitForExternal(h);
    if (h.state === 'dead' && h.held === true) {
      // Keep the mount: the new server adopts the held connection (it withdraws it from our deposit).
      await this.spawnServer();
      return 'started';
    }
    if (h.state === 'dead') {
      log.warn({ mountpoint: this.mountpoint, why: h.message }, 'famfs FUSE mount is dead: detaching it and starting a new server');
      const pid = this.serverPid();
      if (pid !== undefined) {
        // Alive but unreachable or disconnected: it no longer serves anyone; replace it.
        try {
          process.kill(pid, 'SIGKILL');
          log.warn({ pid }, 'killed an unresponsive famfs-fused');
        } catch {
          /* it died meanwhile */
        }
      }
      await unmountAll(this.mountpoint, { lazy: true });
    }
    await fs.promises.mkdir(this.mountpoint, { recursive: true, mode: 0o755 });
    // Root only above the mount: volumes' files are 0666 by default (pkg/csi/params.ts), and only
    // pods that mount a volume may reach its file (through their bind mount), not host users.
    await fs.promises.chmod(path.dirname(this.mountpoint), 0o700);
    await fs.promises.mkdir(path.dirname(this.logFile), { recursive: true, mode: 0o700 });
    await this.spawnServer();
    return 'started';
  }

  /** Waits for the external server to serve; its container restarts it, we only look. */
  private async waitForExternal(first: FuseHealth): Promise<'alive'> {
    const waitMs = this.opts.external?.waitMs ?? 0;
    const deadline = Date.now() + waitMs;
    let h = first;
    while (Date.now() < deadline) {
      await sleep(100);
      h = await this.health();
      if (h.state === 'serving') {
        this.opts.log.info({ mountpoint: this.mountpoint, socket: this.socketPath }, 'external famfs FUSE server is serving');
        return 'alive';
      }
    }
    const why = h.state === 'dead' ? h.message : `nothing is mounted at ${this.mountpoint} or nobody answers on ${this.socketPath}`;
    throw new FuseSupervisorError(
      'EEXTERNAL',
      `the external famfs FUSE server (famfs-fused container) is not up after ${waitMs} ms: ${why}; this plugin does not start one (--external-fuse); check the famfs-fused container's log`,
    );
  }

  private async spawnServer(): Promise<void> {
    const script = this.opts.fusedScript ?? path.join(__dirname, '..', '..', 'cmd', 'famfs-fused.js');
    const args = [
      script,
      this.opts.devicePath,
      this.mountpoint,
      '--foreground',
      '--control-socket',
      this.socketPath,
      '--host-uuid',
      this.opts.hostUuid,
      '--poll-ms',
      String(this.opts.pollMs ?? 100),
      ...(this.holder !== undefined ? ['--fd-deposit', this.depositSocket] : []),
    ];
    const pid = await startDetached({
      args,
      logFile: this.logFile,
      pidFile: this.pidFile,
      mountpoint: this.mountpoint,
      timeoutMs: START_TIMEOUT_MS,
      ready: async () => (await this.health()).state === 'serving',
    });
    this.opts.log.info({ pid, mountpoint: this.mountpoint, device: this.opts.devicePath, log: this.logFile }, 'famfs FUSE server started');
  }

  /**
   * Writes a file's dirty CPU cache lines back to the shared memory: through the server when it
   * runs (it owns the mapping pods write through), else through the fallback mapping.
   */
  async flush(relpath: string): Promise<FlushRoute> {
    const h = await this.health();
    if (h.state === 'serving') {
      // Pages dirtied through a shared mmap reach the FUSE server only on writeback: force it, so
      // that the flush below covers them (write(2) through FUSE is already write-through).
      await this.writeBack(this.hostPath(relpath));
      const r = await this.control({ op: 'flush', path: relpath });
      if (r.ok) return 'fuse';
      if (r.code === 'ENOENT') return 'vanished';
      throw new FuseSupervisorError('EFLUSH', `flushing ${relpath} failed: ${r.error} (${r.code}); the device may have failed`);
    }
    const fallback = this.opts.fallback;
    if (fallback === undefined) {
      throw new FuseSupervisorError(
        'EFLUSH',
        `flushing ${relpath}: no famfs FUSE server serves ${this.mountpoint} and there is no other mapping of the device`,
      );
    }
    try {
      fallback.famfs.catchUp();
    } catch (e) {
      throw new FuseSupervisorError('ELOG', `cannot read the famfs log on ${this.opts.devicePath}: ${(e as Error).message}`, { cause: e });
    }
    const file = fallback.famfs.lookup(relpath);
    if (file?.kind !== 'file') return 'vanished';
    try {
      forEachDeviceRun(file.fmap, 0, file.size, (off, _fo, len) => fallback.media.flush(off, len));
    } catch (e) {
      throw new FuseSupervisorError('EFLUSH', `flushing ${relpath} through the plugin's mapping failed: ${(e as Error).message}`, { cause: e });
    }
    return 'plugin-mapping';
  }

  private async writeBack(hostFile: string): Promise<void> {
    let fh: fs.promises.FileHandle | undefined;
    try {
      fh = await fs.promises.open(hostFile, 'r');
      await fh.sync();
    } catch (e) {
      this.opts.log.warn({ file: hostFile, err: (e as Error).message }, 'writeback of the page cache before flush failed');
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }

  /** Drops the server's CPU cache lines and page cache of a file, so the next read comes from the memory. */
  async invalidate(relpath: string): Promise<void> {
    const r = await this.control({ op: 'invalidate', path: relpath });
    if (!r.ok) throw new FuseSupervisorError('EINVALIDATE', `invalidating ${relpath} failed: ${r.error} (${r.code})`);
  }

  /**
   * Stops the server (SIGTERM: it unmounts cleanly) and waits for it. Not part of normal operation —
   * the server is meant to outlive the plugin — but used by node drain tooling and tests.
   */
  async stopServer(timeoutMs = 10_000): Promise<boolean> {
    if (this.opts.external !== undefined) return false; // not ours to stop
    const pid = this.serverPid();
    if (pid === undefined) {
      this.holder?.drop(path.resolve(this.mountpoint));
      await unmountAll(this.mountpoint, { lazy: true }).catch(() => 0);
      return false;
    }
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && pidAlive(pid)) await sleep(50);
    if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    // Stopped on purpose: never keep its connection for a successor (a clean server already dropped it).
    this.holder?.drop(path.resolve(this.mountpoint));
    await unmountAll(this.mountpoint, { lazy: true }).catch(() => 0);
    fs.rmSync(this.pidFile, { force: true });
    return true;
  }
}

export interface DetachedStart {
  /** Arguments to node: the famfs-fused script, its arguments, and --foreground. */
  args: string[];
  /** The server's stdout and stderr (appended to). */
  logFile: string;
  /** Where to record the server's pid, if anywhere. */
  pidFile?: string;
  /** For messages: what the server mounts. */
  mountpoint: string;
  timeoutMs: number;
  /** Polled until it says the new server serves (it gets the new server's pid). */
  ready: (pid: number | undefined) => Promise<boolean>;
  /** Sent to a server that did not become ready in time (default SIGKILL). */
  killSignal?: NodeJS.Signals;
}

/**
 * Starts famfs-fused DETACHED (a new session, stdio to its log file, not a child anyone waits on)
 * and waits until `ready` says it serves. Returns its pid; throws ESTART with the log's tail when
 * it exits first or does not become ready in time.
 */
export async function startDetached(o: DetachedStart): Promise<number | undefined> {
  const out = fs.openSync(o.logFile, 'a', 0o600);
  let child;
  try {
    // detached: a new session, so the starter's death (or its process group's) does not reach it.
    child = spawn(process.execPath, o.args, { detached: true, stdio: ['ignore', out, out] });
  } finally {
    fs.closeSync(out);
  }
  let exit: string | undefined;
  child.once('exit', (code, signal) => (exit = signal ?? String(code)));
  child.once('error', (e) => (exit = e.message));
  child.unref();
  if (o.pidFile !== undefined && child.pid !== undefined) fs.writeFileSync(o.pidFile, `${child.pid}\n`, { mode: 0o600 });
  const deadline = Date.now() + o.timeoutMs;
  while (Date.now() < deadline) {
    if (exit !== undefined)
      throw new FuseSupervisorError('ESTART', `famfs-fused exited (${exit}) before serving ${o.mountpoint}; see ${o.logFile}: ${logTail(o.logFile)}`);
    if (await o.ready(child.pid)) return child.pid;
    await sleep(50);
  }
  if (child.pid !== undefined) process.kill(child.pid, o.killSignal ?? 'SIGKILL');
  throw new FuseSupervisorError('ESTART', `famfs-fused did not serve ${o.mountpoint} within ${o.timeoutMs} ms; see ${o.logFile}`);
}

function logTail(logFile: string): string {
  try {
    return fs.readFileSync(logFile, 'utf8').slice(-600).trim();
  } catch {
    return '';
  }
}
