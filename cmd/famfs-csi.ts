#!/usr/bin/env node
// famfs-csi: the CSI driver binary. One binary for every role:
//   --mode controller   Identity + Controller (runs on the famfs master host)
//   --mode node         Identity + Node (a DaemonSet on every host attached to the memory)
//   --mode all          everything in one process (npm start; csi-sanity; single-host setups)

// Before the imports below load anything: as a container's PID 1 (the chart) a signal with no handler
// is ignored, so a pod deleted while this process starts (loading, waiting for a predecessor's socket,
// replaying the log) would sit out its whole grace period. Until main() installs the clean shutdown,
// a signal exits at once: nothing is served yet.
const exitEarly = (): never => process.exit(0);
process.on('SIGTERM', exitEarly);
process.on('SIGINT', exitEarly);

import * as os from 'os';
import { Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import {
  DEFAULT_DEVICE,
  DEFAULT_DEVICE_SIZE,
  DEFAULT_DRIVER_NAME,
  DEFAULT_ENDPOINT,
  DEFAULT_POOL,
  DEFAULT_STATE_DIR,
  type DriverMode,
} from '../pkg/csi/driver';
import { packageVersion } from '../pkg/csi/identity';
import { ALLOC_UNIT_BYTES } from '../pkg/csi/params';
import { startDriverProcess } from '../pkg/k8s/driver-runtime';
import { parseSize } from '../pkg/size';

function sizeArg(value: string): number {
  try {
    return parseSize(value, 'kubernetes', '--device-size', { multipleOf: ALLOC_UNIT_BYTES, min: ALLOC_UNIT_BYTES });
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/** A whole number of milliseconds (or a port): "abc", "1.5" or "-1" are usage errors, not NaN. */
function countArg(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new InvalidArgumentError('must be a non-negative integer');
  return Number(value);
}

async function main(): Promise<void> {
  const program = new Command()
    .name('famfs-csi')
    .description('Kubernetes CSI driver for famfs: files in shared fabric-attached (CXL) memory')
    .version(packageVersion())
    .addOption(new Option('--mode <mode>', 'which CSI services to serve').choices(['controller', 'node', 'all']).default('all'))
    .option('--endpoint <endpoint>', 'gRPC endpoint: unix:///path/csi.sock', DEFAULT_ENDPOINT)
    .option('--device <path>', 'famfs device (/dev/daxX.Y, or an emulation file; one under /dev/shm is created and formatted when missing)', DEFAULT_DEVICE)
    .option('--device-size <size>', 'size of an emulated device created on demand (e.g. 8Gi)', sizeArg, DEFAULT_DEVICE_SIZE)
    .option('--mkfs', 'format the device if it holds no famfs file system', false)
    .option('--node-id <id>', "this node's id (Kubernetes node name)", os.hostname())
    .option('--driver-name <name>', 'CSI driver name (CSIDriver object name)', DEFAULT_DRIVER_NAME)
    .option('--state-dir <dir>', 'where the node plugin persists what it staged and published', DEFAULT_STATE_DIR)
    .option('--pool <name>', 'name of the memory pool (topology segment shared by every node on this memory)', DEFAULT_POOL)
    .option('--metrics-address <host:port>', 'serve Prometheus /metrics (and /healthz) on this address')
    .option('--health-address <host:port>', 'serve /healthz on this address')
    .option('--health-port <port>', 'shorthand for --health-address :<port>', countArg)
    .option('--kubeconfig <file>', 'Kubernetes API to report to (default: in-cluster, $KUBECONFIG, ~/.kube/config; none: standalone)')
    .option('--pool-status-interval <ms>', 'controller: how often the master publishes FamfsPool status', countArg, 10_000)
    .option(
      '--zero-interval <ms>',
      'controller: how often the master zeroes freed memory in the background (and after each delete); 0: never, CreateVolume zeroes what it takes',
      countArg,
      200,
    )
    .option('--external-fuse', "node: a famfs-fused run elsewhere (the chart's container) serves <state-dir>/mnt/<pool>; wait for it, never spawn one", false)
    .option(
      '--fuse-orphan-timeout <ms>',
      "node: how long the FUSE connection of a killed famfs-fused is held for a new server (pods' I/O waits meanwhile); 0: hold nothing",
      countArg,
      120_000,
    )
    .option('--external-fuse-wait <ms>', 'node, with --external-fuse: how long an RPC waits for that server before UNAVAILABLE', countArg, 5000)
    .option(
      '--kubelet-registration-dir <dir>',
      'node: register with the kubelet through this directory (<kubelet dir>/plugins_registry as mounted here); needs --kubelet-registration-path',
    )
    .option(
      '--wait-for-predecessor <ms>',
      'when another plugin serves --endpoint (DaemonSet update), wait this long for it to exit instead of failing',
      (v: string) => Number(v),
      0,
    )
    .option('--kubelet-registration-path <path>', "node: this plugin's CSI socket as the kubelet sees it (<kubelet dir>/plugins/<driver>/csi.sock)")
    .option(
      '--allowed-path-root <dir>',
      'node: a directory under which staging and target paths may lie (repeatable; default /var/lib/kubelet)',
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .option(
      '--nodes <ids>',
      'controller without a Kubernetes API: the node ids of this pool, comma-separated (ControllerPublishVolume answers NOT_FOUND for others); in a cluster the CSINode objects say',
      (v: string) =>
        v
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== ''),
    )
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'))
    .parse();

  const o = program.opts<{
    mode: DriverMode;
    endpoint: string;
    device: string;
    deviceSize: number;
    mkfs: boolean;
    nodeId: string;
    driverName: string;
    stateDir: string;
    pool: string;
    metricsAddress?: string;
    healthAddress?: string;
    healthPort?: number;
    allowedPathRoot?: string[];
    logLevel: string;
    kubeconfig?: string;
    externalFuse: boolean;
    externalFuseWait: number;
    fuseOrphanTimeout: number;
    poolStatusInterval: number;
    zeroInterval: number;
    kubeletRegistrationDir?: string;
    kubeletRegistrationPath?: string;
    nodes?: string[];
    waitForPredecessor: number;
  }>();
  if ((o.kubeletRegistrationDir === undefined) !== (o.kubeletRegistrationPath === undefined)) {
    program.error('famfs-csi: --kubelet-registration-dir and --kubelet-registration-path go together (the directory to register in, the CSI socket to name)');
  }
  if (o.kubeletRegistrationDir !== undefined && o.mode !== 'node') {
    program.error('famfs-csi: --kubelet-registration-dir is for --mode node (only node plugins register with a kubelet)');
  }
  const log = pino({ level: o.logLevel, base: { app: 'famfs-csi', mode: o.mode, node: o.nodeId } });
  const healthAddress = o.healthAddress ?? (o.healthPort !== undefined ? `:${o.healthPort}` : undefined);

  const proc = await startDriverProcess({
    driver: {
      mode: o.mode,
      endpoint: o.endpoint,
      devicePath: o.device,
      deviceSize: o.deviceSize,
      mkfs: o.mkfs,
      nodeId: o.nodeId,
      driverName: o.driverName,
      stateDir: o.stateDir,
      pool: o.pool,
      ...(o.metricsAddress !== undefined ? { metricsAddress: o.metricsAddress } : {}),
      ...(healthAddress !== undefined ? { healthAddress } : {}),
      ...(o.allowedPathRoot !== undefined ? { allowedPathRoots: o.allowedPathRoot } : {}),
      ...(o.externalFuse ? { externalFuse: true, externalFuseWaitMs: o.externalFuseWait } : {}),
      fuseOrphanTimeoutMs: o.fuseOrphanTimeout,
      ...(o.kubeletRegistrationDir !== undefined && o.kubeletRegistrationPath !== undefined
        ? { kubeletRegistration: { registrationDir: o.kubeletRegistrationDir, csiEndpoint: o.kubeletRegistrationPath } }
        : {}),
      ...(o.waitForPredecessor > 0 ? { waitForPredecessorMs: o.waitForPredecessor } : {}),
      zeroIntervalMs: o.zeroInterval,
      log,
    },
    ...(o.kubeconfig !== undefined ? { kubeconfigPath: o.kubeconfig } : {}),
    poolStatusIntervalMs: o.poolStatusInterval,
    ...(o.nodes !== undefined ? { knownNodes: o.nodes } : {}),
    log,
  });
  if (process.stderr.isTTY || !proc.kubernetes) {
    // One line for whoever started this by hand: what is listening and how to talk to it.
    const sock = o.endpoint.replace(/^unix:\/\//, '');
    process.stderr.write(
      `famfs-csi ${o.mode}: CSI on ${o.endpoint}, pool ${o.pool} on ${o.device}. Next: csi-sanity --csi.endpoint=${sock}, ` +
        `or grpcurl -unix -import-path proto -proto csi.proto ${sock} csi.v1.Identity/Probe; ` +
        `look inside with: node dist/cmd/famfs.js ls ${o.device}\n`,
    );
  }

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    // Stop leading first (release the Lease), then the reporters, then the CSI server and device.
    proc.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        log.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.off('SIGTERM', exitEarly);
  process.off('SIGINT', exitEarly);
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((e: unknown) => {
  // Startup errors are for a human reading the pod log: the message, not a stack.
  process.stderr.write(`famfs-csi: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
