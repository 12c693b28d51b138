// famfs-fused in the foreground: the FUSE server on its mountpoint plus its control socket, signal
// handling and a clean unmount on exit. cmd/famfs-fused.ts parses flags and calls serveForeground;
// with --takeover the new process adopts the live FUSE connection from the running one.
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { systemUuid } from '../famfs/host-uuid.js';
import { ControlServer, defaultControlSocket } from './control.js';
import { FdDepositClient } from './deposit.js';
import { guardFileFor } from './guard.js';
import { completeHandover, requestHandover } from './handover.js';
import { markServing, markSuperseded, planContainerStart, superseded } from './restart.js';
import { FamfsFuseServer, type AdoptedConnection, type FuseServerOptions } from './server.js';

export interface DaemonOptions {
  controlSocket?: string;
  directIo: boolean;
  readOnly: boolean;
  pollMs: number;
  ackHeartbeatMs: number;
  readaheadKb: number;
  maxThreads: number;
  /** Copy read data through a guarded buffer instead of replying from the mapping. */
  copyReads: boolean;
  /** This host for replay acknowledgements; default $FAMFS_SYSTEM_UUID or /opt/famfs/system_uuid. */
  hostUuid?: string;
  logLevel: string;
  /** Take the live FUSE connection over from the server already running on this mount. */
  takeover: boolean;
  /**
   * Run as a container Kubernetes restarts and replaces (restart.ts): take over a live server, clear a
   * dead mount a killed server left, create the mountpoint; after handing over, never take it back.
   */
  container?: boolean;
  /** This host's name in the famfs host table; default $NODE_NAME (the chart sets it), else the hostname. */
  hostName?: string;
  /**
   * The node plugin's fd deposit socket (deposit.ts): keep a copy of the FUSE connection there so it
   * outlives a crash of this process, and adopt the connection a killed predecessor left there.
   */
  fdDeposit?: string;
}

/** This host's famfs identity: the given one, else $FAMFS_SYSTEM_UUID or /opt/famfs/system_uuid (as every famfs tool). */
function hostUuid(given: string | undefined): string | undefined {
  if (given !== undefined) return given;
  try {
    return systemUuid();
  } catch {
    return undefined;
  }
}

/** The control socket of a mountpoint: the given path, else the default derived from the mountpoint. */
export function controlSocketFor(mountpoint: string, given?: string): string {
  return path.resolve(given ?? defaultControlSocket(mountpoint));
}

/** Serves `device` on `mountpoint` until a signal or a lost connection ends the process. */
export async function serveForeground(device: string, mountpoint: string, o: DaemonOptions): Promise<void> {
  const logger = pino({ name: 'famfs-fused', level: o.logLevel });
  // Signals during start-up (a pod deleted while this container starts): as a container's PID 1 a
  // signal with no handler is ignored, and the pod would sit out its whole grace period. Until we hold
  // a connection (a withdrawn deposit, a handed-over or fresh mount) nothing is lost by exiting at
  // once; after that, shut down cleanly as soon as the server is up (see the end of the set-up below).
  let holding = false;
  let pendingSignal: NodeJS.Signals | undefined;
  const onStartupSignal = (sig: NodeJS.Signals): void => {
    if (!holding) {
      logger.info({ signal: sig }, 'signal before serving anything: exiting');
      process.exit(0);
    }
    pendingSignal ??= sig;
  };
  const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
  for (const s of SIGNALS) process.on(s, onStartupSignal);
  const socketPath = controlSocketFor(mountpoint, o.controlSocket);
  let shuttingDown = false;
  let control: ControlServer | undefined;
  const serverOptions: FuseServerOptions = {
    device,
    mountpoint: path.resolve(mountpoint),
    readOnly: o.readOnly,
    directIo: o.directIo,
    pollMs: o.pollMs,
    ackHeartbeatMs: o.ackHeartbeatMs,
    readaheadKb: o.readaheadKb,
    maxThreads: o.maxThreads,
    zeroCopyReads: !o.copyReads,
    controlSocket: socketPath,
    // Next to the control socket: the same directory every restart, takeover and adoption uses.
    guardFile: guardFileFor(socketPath),
    hostUuid: hostUuid(o.hostUuid),
    // The node's name where there is one: hostnames repeat across hostNetwork pods of one machine.
    hostName: o.hostName ?? (process.env['NODE_NAME'] || os.hostname()),
    // With a deposit, serve on the one fd the holder keeps (see FuseServerOptions.cloneFd).
    cloneFd: o.fdDeposit === undefined,
    logger,
    onConnectionLost: () => void shutdown('connection lost', 1),
  };
  const deposit = o.fdDeposit !== undefined ? new FdDepositClient(path.resolve(o.fdDeposit), path.resolve(mountpoint), device, logger) : undefined;
  let server: FamfsFuseServer;
  let takeover = o.takeover;
  let orphan: AdoptedConnection | undefined;
  if (o.container === true && !takeover) {
    if (superseded(socketPath)) {
      // This pod's server handed its connection to a newer pod's (DaemonSet update) and the kubelet
      // restarted this container: taking the connection back would undo the update. Idle until the pod goes.
      // (The start-up signal handlers above stay: a signal exits at once.)
      logger.info({ socket: socketPath }, "this pod's FUSE server was superseded by a newer one: idle until terminated");
      setInterval(() => undefined, 1 << 30);
      return;
    }
    const withdraw =
      deposit &&
      ((): Promise<AdoptedConnection | undefined> => {
        holding = true;
        return deposit.withdraw();
      });
    const plan = await planContainerStart(path.resolve(mountpoint), socketPath, logger, 3000, withdraw);
    takeover = plan.kind === 'takeover';
    if (plan.kind === 'adopt') orphan = plan.conn;
  } else if (!takeover && deposit !== undefined) {
    holding = true;
    orphan = await deposit.withdraw();
  }
  holding = true;
  if (takeover) {
    // Restart/upgrade without unmounting: take the live connection from the running server.
    const conn = await requestHandover(socketPath);
    server = FamfsFuseServer.adopt(serverOptions, conn);
    // Deposit before the old server exits: the holder must never see the connection orphaned meanwhile.
    deposit?.keep(server);
    await completeHandover(server, socketPath, conn);
    logger.info({ oldPid: conn.params.pid }, 'took over the FUSE connection');
  } else if (orphan !== undefined) {
    // A killed server's connection, kept by the node plugin: serve it, so pods' I/O resumes where it stopped.
    try {
      server = FamfsFuseServer.adopt(serverOptions, orphan);
    } catch (e) {
      // Never retry the same broken connection forever: drop it; the next start mounts afresh.
      deposit?.drop();
      throw e;
    }
    deposit?.keep(server);
    server.finishAdoption();
    logger.warn(
      { deadPid: orphan.params.pid, connection: orphan.params.connectionId },
      "adopted the FUSE connection of a killed famfs-fused from the fd deposit (no remount): pods' pending I/O is resent to this server",
    );
  } else {
    server = FamfsFuseServer.start(serverOptions);
  }
  deposit?.keep(server);
  if (deposit !== undefined) setInterval(() => deposit.keep(server), 500).unref();
  const shutdown = async (why: string, code: number): Promise<void> => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ why }, 'shutting down');
    if (o.container === true) markServing(socketPath, false);
    // A clean stop unmounts: the node plugin must not keep the connection for a successor.
    deposit?.drop();
    server.stop();
    await control?.close();
    process.exit(code);
  };
  for (const s of SIGNALS) {
    process.off(s, onStartupSignal);
    process.on(s, () => void shutdown(s, 0));
  }
  if (pendingSignal !== undefined) {
    await shutdown(pendingSignal, 0);
    return;
  }
  try {
    control = await ControlServer.listen(socketPath, server, logger, {
      // The new server owns the connection now: leave without unmounting.
      onHandedOver: () => {
        shuttingDown = true;
        // The new server deposits the connection itself; ours just closes with this process.
        deposit?.disconnect();
        if (o.container === true) {
          markServing(socketPath, false);
          markSuperseded(socketPath);
        }
        void control?.close();
        setImmediate(() => process.exit(0));
      },
    });
  } catch (e) {
    logger.error({ err: (e as Error).message }, 'control socket failed');
    await shutdown('control socket failed', 1);
    return;
  }
  logger.info({ socket: socketPath }, 'control socket listening');
  if (o.container === true) markServing(socketPath, true);
  // Keep the process alive: the FUSE threads are not libuv handles.
  setInterval(() => undefined, 1 << 30);
}
