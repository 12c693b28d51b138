#!/usr/bin/env node
/**
 * famfs-fused DEVICE MOUNTPOINT: serve a famfs device as a file tree through FUSE.
 *
 * Runs as its own process (so it outlives the CSI node plugin that spawned it). Without
 * --foreground it starts a detached copy of itself and returns once the mount answers on its
 * control socket. SIGTERM/SIGINT unmount cleanly.
 */
import type { DaemonOptions } from '../pkg/fuse/daemon.js';

// First of all, before any module loads (the import above is type-only): as a container's PID 1 (the chart) a signal with no handler
// is IGNORED, so a pod deleted while this process is still loading its modules (e.g. the kubelet
// restarting the container of a server that just handed over) would sit out the whole grace period.
// Nothing is held yet here: exit at once. serveForeground takes over signal handling when it starts.
const EARLY_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
const exitEarly = (): never => process.exit(0);
for (const s of EARLY_SIGNALS) process.on(s, exitEarly);

interface CliOptions extends Omit<DaemonOptions, 'directIo' | 'readOnly' | 'copyReads' | 'takeover'> {
  directIo?: boolean;
  readOnly?: boolean;
  copyReads?: boolean;
  takeover?: boolean;
  foreground?: boolean;
  logFile?: string;
}

/** Starts a detached foreground copy and waits until its control socket reports it serving. */
async function runDetached(mountpoint: string, o: CliOptions, argv: string[]): Promise<void> {
  const [fs, path, { controlRequest }, { controlSocketFor }, { startDetached }] = await Promise.all([
    import('fs'),
    import('path'),
    import('../pkg/fuse/control-client.js'),
    import('../pkg/fuse/daemon.js'),
    import('../pkg/fuse/supervisor.js'),
  ]);
  const socketPath = controlSocketFor(mountpoint, o.controlSocket);
  const logFile = o.logFile ?? path.join(path.dirname(socketPath), 'famfs-fused.log');
  fs.mkdirSync(path.dirname(logFile), { recursive: true, mode: 0o700 });
  const pid = await startDetached({
    args: [...process.execArgv, ...argv, '--foreground', '--control-socket', socketPath],
    logFile,
    mountpoint,
    timeoutMs: 30_000,
    // Let a server that mounted but never answered unmount cleanly.
    killSignal: 'SIGTERM',
    ready: async (childPid) => {
      try {
        const r = await controlRequest(socketPath, { op: 'status' }, 1000);
        // (with --takeover the old server answers until it hands over: wait for the new pid)
        return r.ok && (o.takeover !== true || r['pid'] === childPid);
      } catch {
        return false; // not up yet
      }
    },
  });
  process.stdout.write(`famfs-fused: ${mountpoint} mounted (pid ${pid}, control ${socketPath}, log ${logFile})\n`);
  process.exit(0);
}

async function main(): Promise<void> {
  // (Loaded here, after the signal handlers above: see the top of this file.)
  const [{ Command, InvalidArgumentError }, { DEFAULT_READAHEAD_KB }] = await Promise.all([import('commander'), import('../pkg/fuse/readahead.js')]);
  const intArg = (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a non-negative integer');
    return n;
  };
  const program = new Command()
    .name('famfs-fused')
    .description('Serve a famfs device (devdax or emulation file) as a FUSE file tree')
    .argument('<device>', '/dev/daxX.Y or an emulation file')
    .argument('<mountpoint>', 'directory to mount on')
    .option('--control-socket <path>', 'root-only control socket (default /run/famfs-fused/<id>/sock)')
    .option('--direct-io', 'direct I/O for every open (coherent across hosts; no shared mmap)')
    .option('--read-only', 'map the device read-only and mount ro')
    .option('--poll-ms <n>', 'how often to check the log for new entries (0: only on catchup)', intArg, 100)
    .option('--readahead-kb <n>', 'kernel readahead for the mount (0: kernel default)', intArg, DEFAULT_READAHEAD_KB)
    .option('--max-threads <n>', 'FUSE worker threads (0: 2 x CPUs, at least 4)', intArg, 0)
    .option('--copy-reads', 'copy read data through a guarded buffer instead of replying from the mapping')
    .option('--ack-heartbeat-ms <n>', 'republish the replay position at least this often, even when idle', intArg, 10_000)
    .option('--host-uuid <uuid>', 'this host for replay acknowledgements (default /opt/famfs/system_uuid)')
    .option('--log-file <path>', 'log file when detaching (default next to the control socket)')
    .option('--log-level <level>', 'pino log level', 'info')
    .option('--takeover', 'take the live FUSE connection over from the server already running on this mount (restart/upgrade without unmounting)')
    .option('--foreground', 'stay in the foreground (the CSI node plugin and tests use this)')
    .option(
      '--container',
      'run as a restartable container (the chart): take over a server already serving this mount (update), clear a dead mount a killed server left, create the mountpoint',
    )
    .option(
      '--fd-deposit <socket>',
      "keep a copy of the FUSE connection with the node plugin's holder at <socket>, so it outlives a crash of this process; adopt the connection a killed predecessor left there",
    )
    .option('--host-name <name>', "this host's name in the famfs host table (default $NODE_NAME, else the hostname)")
    .parse();
  const [device, mountpoint] = program.args as [string, string];
  const o = program.opts<CliOptions>();
  if (o.foreground === true) {
    const { serveForeground } = await import('../pkg/fuse/daemon.js');
    // serveForeground installs its own handlers synchronously, in this same tick: no gap.
    for (const s of EARLY_SIGNALS) process.off(s, exitEarly);
    await serveForeground(device, mountpoint, {
      ...o,
      directIo: o.directIo === true,
      readOnly: o.readOnly === true,
      copyReads: o.copyReads === true,
      takeover: o.takeover === true,
    });
  } else {
    await runDetached(mountpoint, o, process.argv.slice(1));
  }
}

main().catch((e: unknown) => {
  const err = e as { code?: string; message?: string };
  process.stderr.write(`famfs-fused: ${err.code ? `${err.code}: ` : ''}${err.message ?? String(e)}\n`);
  process.exit(1);
});
