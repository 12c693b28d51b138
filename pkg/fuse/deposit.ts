/**
 * The FUSE fd deposit: the kernel connection of a famfs mount outlives a crash of its server.
 *
 * Pods' bind mounts pin one FUSE connection; a container's mount namespace never sees a re-mount at
 * the host path, so once that connection is aborted the pod's volume answers ENOTCONN for good. The
 * kernel aborts a connection when the last open file on it closes — when the only process holding
 * /dev/fuse is famfs-fused, a kill -9 does exactly that. So famfs-fused hands a copy of its session
 * descriptor to a holder in another process (the CSI node plugin, another container of the same pod)
 * over a root-only unix socket next to its control socket:
 *
 *   famfs-fused (serving)  ── deposit fd + session params ──►  holder (node plugin)
 *   famfs-fused killed: the holder's copy keeps the connection; pods' requests wait in its queues
 *   famfs-fused restarted  ── withdraw ──► holder: copy of the fd ─► adopt it (no mount), ask the
 *                          kernel to resend what the dead server had read but not answered
 *                          (FUSE_NOTIFY_RESEND), deposit again
 *
 * Node ids need no hand-over: they derive from log indexes (inode-table.ts), and the server keeps no
 * per-open state (file handles are unused). A server deposits only its session fd and serves with
 * that one descriptor (no per-thread clones), so every request it has read is on a file the holder
 * also holds: none is failed with ECONNABORTED when the server dies.
 *
 * A holder that restarts comes back empty: a live server deposits again when it sees its connection
 * to the holder close. Both gone at once: nothing holds the connection, the kernel aborts it, and the
 * next server mounts afresh (restart.ts clears the dead mount; the node plugin restores bind mounts).
 * An orphaned deposit nobody withdraws within the orphan timeout is closed (pods then get an error
 * instead of waiting forever).
 */
import * as path from 'path';
import type { Logger } from 'pino';

import { findMount } from '../mount/mountinfo.js';
import { depositNative, type NativeDepositEntry, type NativeDepositHolder, type NativeHandoverParams } from './native.js';
import type { AdoptedConnection, FamfsFuseServer } from './server.js';

/** How long a holder keeps a dead server's connection for a new server (pods' I/O waits meanwhile). */
export const DEFAULT_ORPHAN_TIMEOUT_MS = 120_000;

/** The deposit socket that goes with a control socket (same root-only directory). */
export function depositSocketFor(controlSocket: string): string {
  return path.join(path.dirname(controlSocket), 'fd-deposit');
}

/** What a deposit says about its connection (the holder stores it as an opaque blob). */
interface DepositBlob extends NativeHandoverParams {
  mountpoint: string;
  device: string;
}

function parseBlob(blob: string): DepositBlob | undefined {
  try {
    const v = JSON.parse(blob) as Record<string, unknown>;
    const nums = ['protoMajor', 'protoMinor', 'maxReadahead', 'connectionId', 'pid'] as const;
    if (nums.some((k) => typeof v[k] !== 'number') || typeof v['mountpoint'] !== 'string' || typeof v['device'] !== 'string') return undefined;
    return v as unknown as DepositBlob;
  } catch {
    return undefined;
  }
}

/** "major:minor" of a FUSE connection id as mountinfo shows it (the id is the superblock's dev_t). */
export function connectionDevice(connectionId: number): string {
  return `${Math.floor(connectionId / 2 ** 20)}:${connectionId % 2 ** 20}`;
}

/** Holder side: runs in the node plugin. */
export class FdDepositHolder {
  private constructor(
    readonly socketPath: string,
    private readonly native: NativeDepositHolder,
    private readonly log: Logger,
  ) {}

  static start(socketPath: string, orphanTimeoutMs: number, log: Logger): FdDepositHolder {
    const n = depositNative();
    const h = new FdDepositHolder(socketPath, new n.FuseDepositHolder(socketPath, orphanTimeoutMs), log);
    log.info({ socket: socketPath, orphanTimeoutMs }, 'holding FUSE connections for famfs-fused (fd deposit)');
    return h;
  }

  entry(key: string): NativeDepositEntry | undefined {
    return this.native.status().find((e) => e.key === key);
  }

  /** Logs (and returns) the entries given up since the last call: their connections were aborted. */
  reapExpired(): string[] {
    const gone = this.native.takeExpired();
    for (const e of gone) {
      this.log.error(
        { mountpoint: e.key, connection: parseBlob(e.blob)?.connectionId },
        "no famfs-fused adopted the dead server's FUSE connection within the orphan timeout: released it (pods using it see ENOTCONN until they are restarted)",
      );
    }
    return gone.map((e) => e.key);
  }

  drop(key: string): boolean {
    return this.native.drop(key);
  }

  stop(): void {
    this.native.stop();
  }
}

/** Server side: famfs-fused deposits its connection and withdraws a dead predecessor's. */
export class FdDepositClient {
  private fd = -1;
  private deposited = false;
  private unreachableLogged = false;

  constructor(
    readonly socketPath: string,
    /** The mountpoint (resolved): one entry per mount. */
    readonly key: string,
    readonly device: string,
    private readonly log: Logger,
    private readonly timeoutMs = 3000,
  ) {}

  /**
   * The connection a killed server left with the holder, if any and still mounted at our mountpoint.
   * A deposit that no longer matches the mount (detached, replaced) is dropped.
   */
  async withdraw(): Promise<AdoptedConnection | undefined> {
    const n = depositNative();
    let s: number;
    try {
      s = n.fuseDepositConnect(this.socketPath);
    } catch {
      return undefined; // no holder (node plugin not running): nothing was kept
    }
    try {
      const r = n.fuseDepositRequest(s, 'W', this.key, '', [], this.timeoutMs);
      if (r.status === 'B') {
        this.log.warn({ mountpoint: this.key }, 'the fd deposit says another famfs-fused still holds this mount: not adopting its connection');
        return undefined;
      }
      if (r.status !== 'K' || r.fds.length === 0) return undefined;
      const blob = parseBlob(r.blob);
      const m = await findMount(this.key);
      const why =
        blob === undefined
          ? 'unreadable deposit'
          : blob.mountpoint !== this.key
            ? `deposited for ${blob.mountpoint}`
            : m === undefined || !m.fsType.startsWith('fuse') || m.device !== connectionDevice(blob.connectionId)
              ? `the mount at ${this.key} is no longer connection ${blob.connectionId}`
              : undefined;
      if (why !== undefined || blob === undefined) {
        for (const fd of r.fds) n.fuseCloseFd(fd);
        n.fuseDepositRequest(s, 'X', this.key, '', [], this.timeoutMs);
        this.log.warn({ mountpoint: this.key, why }, 'dropped a stale FUSE connection from the fd deposit');
        return undefined;
      }
      const { protoMajor, protoMinor, maxReadahead, connectionId, pid } = blob;
      return { fds: r.fds, params: { protoMajor, protoMinor, maxReadahead, connectionId, pid } };
    } finally {
      n.fuseCloseFd(s);
    }
  }

  /**
   * Makes sure the holder has our connection: deposits it if not yet, or again when the holder went
   * away (node plugin restarted). Cheap when nothing changed; call it periodically.
   */
  keep(server: FamfsFuseServer): void {
    const n = depositNative();
    if (this.fd >= 0 && n.fuseDepositHungUp(this.fd)) {
      this.log.warn({ socket: this.socketPath }, 'the fd deposit holder went away (node plugin restarted?): depositing again once it is back');
      this.disconnect();
    }
    if (this.fd >= 0 && this.deposited) return;
    const conn = server.connectionForDeposit();
    if (conn === undefined) return;
    try {
      if (this.fd < 0) this.fd = n.fuseDepositConnect(this.socketPath);
      const blob: DepositBlob = { ...conn.params, mountpoint: this.key, device: this.device };
      const r = n.fuseDepositRequest(this.fd, 'D', this.key, JSON.stringify(blob), [conn.fd], this.timeoutMs);
      if (r.status !== 'K') throw new Error(`the holder refused the deposit (${r.status}: ${r.blob})`);
      this.deposited = true;
      this.unreachableLogged = false;
      this.log.info(
        { socket: this.socketPath, connection: conn.params.connectionId },
        'FUSE connection deposited with the node plugin: it survives a crash of this server',
      );
    } catch (e) {
      if (!this.unreachableLogged) {
        this.unreachableLogged = true;
        this.log.warn(
          { socket: this.socketPath, err: (e as Error).message },
          'cannot deposit the FUSE connection (node plugin not running?): until it can, a crash of this server breaks running pods',
        );
      }
      this.disconnect();
    }
  }

  /** A clean stop: the connection goes with the mount, the holder must not keep it for a successor. */
  drop(): void {
    const n = depositNative();
    try {
      if (this.fd < 0) this.fd = n.fuseDepositConnect(this.socketPath);
      n.fuseDepositRequest(this.fd, 'X', this.key, '', [], this.timeoutMs);
    } catch {
      /* no holder: nothing to drop */
    }
    this.disconnect();
  }

  /** Closes our connection to the holder (the holder keeps the deposit, orphaned). */
  disconnect(): void {
    if (this.fd >= 0) depositNative().fuseCloseFd(this.fd);
    this.fd = -1;
    this.deposited = false;
  }
}
