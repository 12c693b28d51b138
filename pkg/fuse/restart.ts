/**
 * How a famfs FUSE server starts when it runs as a container that Kubernetes restarts and replaces
 * (famfs-fused --container, the chart's famfs-fused container):
 *
 *   - a server already answers on the control socket (a DaemonSet update started this container next to
 *     the old one): take its connection over, so pods' bind mounts never see the mount go away;
 *   - the node plugin holds the connection of a server that was killed (fd deposit, deposit.ts): adopt
 *     it, so running pods' bind mounts keep working (their pending requests are served by us);
 *   - the mountpoint is a dead FUSE mount (the previous server was killed with -9 and nobody held its
 *     connection): detach it (lazy unmount) and mount afresh, so the node is never wedged on
 *     "Transport endpoint is not connected" and nobody has to run umount by hand;
 *   - otherwise: create the mountpoint if needed and mount.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Logger } from 'pino';

import { unmountAll } from '../mount/mount.js';
import { probePath } from '../mount/mountinfo.js';
import { controlRequest } from './control-client.js';
import type { AdoptedConnection } from './server.js';

export type StartPlan = { kind: 'takeover'; pid: number } | { kind: 'adopt'; conn: AdoptedConnection } | { kind: 'mount'; clearedDeadMount: boolean };

/** True when a famfs-fused answers `status` on the control socket. */
async function liveServerPid(controlSocket: string, timeoutMs: number): Promise<number | undefined> {
  if (!fs.existsSync(controlSocket)) return undefined;
  try {
    const r = await controlRequest(controlSocket, { op: 'status' }, timeoutMs);
    return r.ok && typeof r['pid'] === 'number' ? r['pid'] : undefined;
  } catch {
    return undefined;
  }
}

/** Decides how to start (see above) and prepares the mountpoint for a fresh mount. */
export async function planContainerStart(
  mountpoint: string,
  controlSocket: string,
  log: Logger,
  timeoutMs = 3000,
  withdrawOrphan?: () => Promise<AdoptedConnection | undefined>,
): Promise<StartPlan> {
  // (Its pid is the one in its own pid namespace: 1 in a container, like ours. We have not listened
  // yet, so whoever answers is another process.)
  const pid = await liveServerPid(controlSocket, timeoutMs);
  if (pid !== undefined) {
    log.info({ pid, controlSocket }, 'a famfs FUSE server already serves this mount: taking its connection over');
    return { kind: 'takeover', pid };
  }
  // Before probing the mount: a held connection with no server would make the probe wait for us.
  const conn = await withdrawOrphan?.();
  if (conn !== undefined) {
    log.warn({ mountpoint, connection: conn.params.connectionId }, 'the previous famfs FUSE server died; its connection was held: adopting it');
    return { kind: 'adopt', conn };
  }
  const probe = await probePath(mountpoint);
  let clearedDeadMount = false;
  if (probe.health === 'disconnected') {
    // The server that served this mount is gone and took the connection with it: detach the dead mount.
    const n = await unmountAll(mountpoint, { lazy: true });
    clearedDeadMount = true;
    log.warn({ mountpoint, unmounted: n }, 'the previous famfs FUSE server died and left a dead mount: detached it, mounting afresh');
  }
  await fs.promises.mkdir(mountpoint, { recursive: true, mode: 0o755 });
  // The node's famfs mount sits under a root-only directory: pods reach volumes only through their
  // own bind mounts, nobody else on the node walks into the whole file system.
  await fs.promises.chmod(path.dirname(mountpoint), 0o700);
  return { kind: 'mount', clearedDeadMount };
}

/**
 * Marker of a pod whose server handed its connection over (POD_UID from the downward API; without it,
 * no marker: outside Kubernetes nothing restarts the old server).
 */
function supersededMarker(controlSocket: string, podUid = process.env['POD_UID']): string | undefined {
  if (podUid === undefined || !/^[A-Za-z0-9-]{1,64}$/.test(podUid)) return undefined;
  return `${controlSocket}.superseded-${podUid}`;
}

export function markSuperseded(controlSocket: string): void {
  const m = supersededMarker(controlSocket);
  if (m !== undefined) fs.writeFileSync(m, `${new Date().toISOString()}\n`, { mode: 0o600 });
}

export function superseded(controlSocket: string): boolean {
  const m = supersededMarker(controlSocket);
  return m !== undefined && fs.existsSync(m);
}

/**
 * Readiness of a container-mode server: a file next to the control socket, named after the pod, that
 * exists while this pod's server owns the connection. The chart's readinessProbe tests it, so a
 * DaemonSet update deletes the old pod only after the new pod's server has taken the connection over.
 */
export function servingMarker(controlSocket: string, podUid = process.env['POD_UID']): string | undefined {
  const m = supersededMarker(controlSocket, podUid);
  return m === undefined ? undefined : m.replace(/\.superseded-/, '.serving-');
}

export function markServing(controlSocket: string, serving: boolean): void {
  const m = servingMarker(controlSocket);
  if (m === undefined) return;
  if (serving) fs.writeFileSync(m, `${process.pid}\n`, { mode: 0o600 });
  else fs.rmSync(m, { force: true });
}
