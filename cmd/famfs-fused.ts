#!/usr/bin/env node
/**
 * famfs-fused DEVICE MOUNTPOINT: serve a famfs device as a file tree through FUSE.
 *
 * Runs as its own process (so it outlives the CSI node plugin that spawned it). Without
 * --foreground it starts a detached copy of itself and returns once the mount answers on its
 * control socket. SIGTERM/SIGINT unmount cleanly.
 */
import { spawn } from 'child_process';
import { Command, InvalidArgumentError } from 'commander';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { systemUuid } from '../pkg/famfs/identity.js';

import {
  completeHandover,
  ControlServer,
  controlRequest,
  defaultControlSocket,
  FamfsFuseServer,
  requestHandover,
  type FuseServerOptions,
} from '../pkg/fuse/index.js';

interface CliOptions {
  controlSocket?: string;
  directIo?: boolean;
  readOnly?: boolean;
  pollMs: number;
  ackHeartbeatMs: number;
  foreground?: boolean;
  readaheadKb: number;
  maxThreads: number;
  copyReads?: boolean;
  hostUuid?: string;
  logFile?: string;
  logLevel: string;
  takeover?: boolean;
}

function intArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a non-negative integer');
  return n;
}

/** This host's famfs identity: --host-uuid, else $FAMFS_SYSTEM_UUID or /opt/famfs/system_uuid (as every famfs tool). */
function hostUuid(given: string | undefined): string | undefined {
  if (given !== undefined) return given;
  try {
    return systemUuid();
  } catch {
    return undefined;
  }
}

async function runForeground(device: string, mountpoint: string, o: CliOptions): Promise<void> {
  const logger = pino({ name: 'famfs-fused', level: o.logLevel });
  const socketPath = path.resolve(o.controlSocket ?? defaultControlSocket(mountpoint));
  let shuttingDown = false;
  let control: ControlServer | undefined;
  const serverOptions: FuseServerOptions = {
    device,
    mountpoint: path.resolve(mountpoint),
    readOnly: o.readOnly === true,
    directIo: o.directIo === true,
    pollMs: o.pollMs,
    ackHeartbeatMs: o.ackHeartbeatMs,
    readaheadKb: o.readaheadKb,
    maxThreads: o.maxThreads,
    zeroCopyReads: o.copyReads !== true,
    controlSocket: socketPath,
    hostUuid: hostUuid(o.hostUuid),
    hostName: os.hostname(),
    logger,
    onConnectionLost: () => void shutdown('connection lost', 1),
  };
  let server: FamfsFuseServer;
  if (o.takeover === true) {
    // Restart/upgrade without unmounting: take the live connection from the running server.
    const conn = await requestHandover(socketPath);
    server = FamfsFuseServer.adopt(serverOptions, conn);
    await completeHandover(server, socketPath, conn);
    logger.info({ oldPid: conn.params.pid }, 'took over the FUSE connection');
  } else {
    server = FamfsFuseServer.start(serverOptions);
  }
  const shutdown = async (why: string, code: number): Promise<void> => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ why }, 'shutting down');
    server.stop();
    await control?.close();
    process.exit(code);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM', 0));
  process.on('SIGINT', () => void shutdown('SIGINT', 0));
  process.on('SIGHUP', () => void shutdown('SIGHUP', 0));
  try {
    control = await ControlServer.listen(socketPath, server, logger, {
      // The new server owns the connection now: leave without unmounting.
      onHandedOver: () => {
        shuttingDown = true;
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
  // Keep the process alive: the FUSE threads are not libuv handles.
  setInterval(() => undefined, 1 << 30);
}

/** Starts a detached foreground copy and waits until its control socket reports it serving. */
async function runDetached(device: string, mountpoint: string, o: CliOptions, argv: string[]): Promise<void> {
  const socketPath = path.resolve(o.controlSocket ?? defaultControlSocket(mountpoint));
  const logFile = o.logFile ?? path.join(path.dirname(socketPath), 'famfs-fused.log');
  fs.mkdirSync(path.dirname(logFile), { recursive: true, mode: 0o700 });
  const out = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, [...process.execArgv, ...argv, '--foreground', '--control-socket', socketPath], {
    detached: true,
    stdio: ['ignore', out, out],
  });
  let exited: number | null = null;
  child.on('exit', (code) => (exited = code ?? 1));
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (exited !== null) {
      process.stderr.write(`famfs-fused: server exited with status ${exited}; see ${logFile}\n`);
      process.exit(1);
    }
    try {
      const r = await controlRequest(socketPath, { op: 'status' }, 1000);
      // (with --takeover the old server answers until it hands over: wait for the new pid)
      if (r.ok && (o.takeover !== true || r['pid'] === child.pid)) {
        child.unref();
        process.stdout.write(`famfs-fused: ${mountpoint} mounted (pid ${child.pid}, control ${socketPath}, log ${logFile})\n`);
        process.exit(0);
      }
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  process.stderr.write(`famfs-fused: no answer from ${socketPath} after 30 s; see ${logFile}\n`);
  child.kill('SIGTERM');
  process.exit(1);
}

async function main(): Promise<void> {
  const program = new Command()
    .name('famfs-fused')
    .description('Serve a famfs device (devdax or emulation file) as a FUSE file tree')
    .argument('<device>', '/dev/daxX.Y or an emulation file')
    .argument('<mountpoint>', 'directory to mount on')
    .option('--control-socket <path>', 'root-only control socket (default /run/famfs-fused/<id>/sock)')
    .option('--direct-io', 'direct I/O for every open (coherent across hosts; no shared mmap)')
    .option('--read-only', 'map the device read-only and mount ro')
    .option('--poll-ms <n>', 'how often to check the log for new entries (0: only on catchup)', intArg, 100)
    .option('--readahead-kb <n>', 'kernel readahead for the mount (0: kernel default)', intArg, 4096)
    .option('--max-threads <n>', 'FUSE worker threads (0: 2 x CPUs, at least 4)', intArg, 0)
    .option('--copy-reads', 'copy read data through a guarded buffer instead of replying from the mapping')
    .option('--ack-heartbeat-ms <n>', 'republish the replay position at least this often, even when idle', intArg, 10_000)
    .option('--host-uuid <uuid>', 'this host for replay acknowledgements (default /opt/famfs/system_uuid)')
    .option('--log-file <path>', 'log file when detaching (default next to the control socket)')
    .option('--log-level <level>', 'pino log level', 'info')
    .option('--takeover', 'take the live FUSE connection over from the server already running on this mount (restart/upgrade without unmounting)')
    .option('--foreground', 'stay in the foreground (the CSI node plugin and tests use this)')
    .parse();
  const [device, mountpoint] = program.args as [string, string];
  const o = program.opts<CliOptions>();
  if (o.foreground === true) {
    await runForeground(device, mountpoint, o);
  } else {
    await runDetached(device, mountpoint, o, process.argv.slice(1));
  }
}

main().catch((e: unknown) => {
  const err = e as { code?: string; message?: string };
  process.stderr.write(`famfs-fused: ${err.code ? `${err.code}: ` : ''}${err.message ?? String(e)}\n`);
  process.exit(1);
});
