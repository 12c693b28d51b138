// The node's famfs FUSE server: one per device, mounted at <state-dir>/mnt/<pool>, controlled over a
// root-only socket. Volumes are directories inside this mount; staging and publishing are bind
// mounts of them.
//
// The server is spawned DETACHED (its own session, stdio to a log file, not a child we wait on), so
// it outlives a restart or upgrade of the node plugin: pods' bind mounts pin the FUSE connection,
// and a dead server turns every one of them into ENOTCONN that no later mount can repair
// (design-hazards §1). The plugin finds its server again through a pid file and the control socket.
import { spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { Logger } from 'pino';
import { controlRequest } from '../fuse/control-client';
import type { ControlReply, ControlRequest } from '../fuse/control-protocol';
import { unmountAll } from '../mount/mount';
import { findMount, probePath } from '../mount/mountinfo';

/** sun_path holds 108 bytes including the NUL. */
const MAX_SOCKET_PATH = 107;
const START_TIMEOUT_MS = 20_000;

export interface FuseMountOptions {
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
}

export type FuseHealth =
  | { state: 'serving'; failed: boolean; failureMessage: string | null; logIndex: number }
  | { state: 'absent' }
  | { state: 'dead'; message: string };

export class FuseMountError extends Error {
  override readonly name = 'FuseMountError';
  constructor(
    readonly code: 'ESTART' | 'ECONTROL' | 'EDEAD' | 'EEXTERNAL',
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
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((a) => a.endsWith('famfs-fused.js') || a.endsWith('famfs-fused'));
  } catch {
    return false;
  }
}

export class FuseMount {
  readonly mountpoint: string;
  readonly socketPath: string;
  readonly logFile: string;
  readonly pidFile: string;
  private starting: Promise<'alive' | 'started'> | undefined;

  constructor(private readonly opts: FuseMountOptions) {
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
  }

  /** famfs path of a volume's directory, file etc. → host path inside the mount. */
  hostPath(relpath: string): string {
    return path.join(this.mountpoint, relpath);
  }

  async control(req: ControlRequest, timeoutMs = 10_000): Promise<ControlReply> {
    try {
      return await controlRequest(this.socketPath, req, timeoutMs);
    } catch (e) {
      throw new FuseMountError('ECONTROL', `famfs FUSE server at ${this.mountpoint} does not answer: ${(e as Error).message}`, { cause: e });
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
    const probe = await probePath(this.mountpoint);
    if (probe.health === 'disconnected') return { state: 'dead', message: `FUSE mount ${this.mountpoint} is dead (transport endpoint not connected)` };
    const m = await findMount(this.mountpoint);
    if (m === undefined || !m.fsType.startsWith('fuse')) return { state: 'absent' };
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
    return { state: 'serving', failed, failureMessage, logIndex: Number(reply['logIndex'] ?? 0) };
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

  /** True when the server belongs to someone else (see FuseMountOptions.external). */
  get external(): boolean {
    return this.opts.external !== undefined;
  }

  private async ensureOnce(): Promise<'alive' | 'started'> {
    const log = this.opts.log;
    const h = await this.health();
    if (h.state === 'serving') return 'alive';
    if (this.opts.external !== undefined) return this.waitForExternal(h);
    if (h.state === 'dead') {
      log.warn({ mountpoint: this.mountpoint, why: h.message }, 'famfs FUSE mount is dead: detaching it and starting a new server');
      const pid = this.serverPid();
      if (pid !== undefined) {
        // Alive but unreachable or disconnected: it no longer serves anyone; replace it.
        process.kill(pid, 'SIGKILL');
        log.warn({ pid }, 'killed an unresponsive famfs-fused');
      }
      await unmountAll(this.mountpoint, { lazy: true });
    }
    await fs.promises.mkdir(this.mountpoint, { recursive: true, mode: 0o755 });
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
    throw new FuseMountError(
      'EEXTERNAL',
      `the external famfs FUSE server (famfs-fused container) is not up after ${waitMs} ms: ${why}; this plugin does not start one (--external-fuse); check the famfs-fused container's log`,
    );
  }

  private async spawnServer(): Promise<void> {
    const script = this.opts.fusedScript ?? path.join(__dirname, '..', '..', 'cmd', 'famfs-fused.js');
    const out = fs.openSync(this.logFile, 'a', 0o600);
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
    ];
    let child;
    try {
      // detached: a new session, so the plugin's death (or its process group's) does not reach it.
      child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, out] });
    } finally {
      fs.closeSync(out);
    }
    let exit: string | undefined;
    child.once('exit', (code, signal) => (exit = signal ?? String(code)));
    child.once('error', (e) => (exit = e.message));
    child.unref();
    if (child.pid !== undefined) fs.writeFileSync(this.pidFile, `${child.pid}\n`, { mode: 0o600 });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (exit !== undefined) throw new FuseMountError('ESTART', `famfs-fused exited (${exit}) before serving ${this.mountpoint}; see ${this.logFile}: ${this.logTail()}`);
      const h = await this.health();
      if (h.state === 'serving') {
        this.opts.log.info({ pid: child.pid, mountpoint: this.mountpoint, device: this.opts.devicePath, log: this.logFile }, 'famfs FUSE server started');
        return;
      }
      await sleep(50);
    }
    if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    throw new FuseMountError('ESTART', `famfs-fused did not serve ${this.mountpoint} within ${START_TIMEOUT_MS} ms; see ${this.logFile}`);
  }

  private logTail(): string {
    try {
      const text = fs.readFileSync(this.logFile, 'utf8');
      return text.slice(-600).trim();
    } catch {
      return '';
    }
  }

  /**
   * Stops the server (SIGTERM: it unmounts cleanly) and waits for it. Not part of normal operation —
   * the server is meant to outlive the plugin — but used by node drain tooling and tests.
   */
  async stopServer(timeoutMs = 10_000): Promise<boolean> {
    if (this.opts.external !== undefined) return false; // not ours to stop
    const pid = this.serverPid();
    if (pid === undefined) {
      await unmountAll(this.mountpoint, { lazy: true }).catch(() => 0);
      return false;
    }
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && pidAlive(pid)) await sleep(50);
    if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    await unmountAll(this.mountpoint, { lazy: true }).catch(() => 0);
    fs.rmSync(this.pidFile, { force: true });
    return true;
  }
}
