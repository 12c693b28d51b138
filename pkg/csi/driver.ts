// Assembles a running famfs-csi instance from its configuration: the device (an emulated one in
// /dev/shm is created and formatted when missing), the gRPC services for the chosen mode, and the
// metrics/health HTTP endpoints. cmd/famfs-csi.ts only parses flags and calls startDriver().
import * as fs from 'fs';
import type * as http from 'http';
import * as path from 'path';
import type { Logger } from 'pino';
import { openDevice, type DaxDevice } from '../device';
import { FamfsError } from '../famfs/errors';
import { FamfsFs } from '../famfs/fs';
import { systemUuid } from '../famfs/host-uuid';
import { controllerService, type VolumePlacement } from './controller';
import { identityService, type Health } from './identity';
import { DriverMetrics, startHttpEndpoints } from './metrics';
import { NodeService } from './node';
import { CsiClient } from './client';
import { DEFAULT_ALLOWED_PATH_ROOTS } from './node-paths';
import { KubeletRegistration } from './registration';
import { CsiServer, parseEndpoint, socketIsLive } from './server';
import { ControllerStore } from './store';
import { Volumes } from './volumes';
import { BackgroundZeroer } from './zeroer';

export type DriverMode = 'controller' | 'node' | 'all';

export const DEFAULT_DRIVER_NAME = 'famfs.csi.cxl.io';
export const DEFAULT_ENDPOINT = 'unix:///tmp/famfs-csi/csi.sock';
export const DEFAULT_DEVICE = '/dev/shm/famfs-csi-default.img';
export const DEFAULT_DEVICE_SIZE = 8 * 1024 ** 3;
export const DEFAULT_STATE_DIR = '/var/lib/famfs-csi';
export const DEFAULT_POOL = 'default';
/** Topology segment key every node attached to the same famfs memory pool reports. */
export const POOL_TOPOLOGY_KEY = 'famfs.csi.cxl.io/pool';

export interface DriverConfig {
  mode: DriverMode;
  endpoint: string;
  devicePath: string;
  /** Size used when the emulated device file has to be created. */
  deviceSize: number;
  /** Format the device when it holds no famfs (always done for a device file created by this run). */
  mkfs: boolean;
  nodeId: string;
  driverName: string;
  stateDir: string;
  pool: string;
  metricsAddress?: string;
  healthAddress?: string;
  /** Node mode: directories under which staging and target paths may lie (default: kubelet's). */
  allowedPathRoots?: string[];
  /** Node mode: the famfs-fused entry script (default: the one shipped next to this module). */
  fusedScript?: string;
  /** Controller: do not take the writer role at start; the Lease elector calls store.takeMasterRole(). */
  deferMasterRole?: boolean;
  /** Node mode: a famfs-fused run by someone else (the chart's container) serves the mount; never spawn one. */
  externalFuse?: boolean;
  /** Node mode, with externalFuse: how long an RPC waits for that server (ms). */
  externalFuseWaitMs?: number;
  /** Node mode: how long a killed famfs-fused's FUSE connection is held for a new server (ms; 0: not held). */
  fuseOrphanTimeoutMs?: number;
  /**
   * Node mode: register with the kubelet ourselves (no node-driver-registrar): serve the Registration
   * service in `registrationDir` (<kubelet dir>/plugins_registry as this process sees it), naming
   * `csiEndpoint` (this plugin's CSI socket as the kubelet sees it) as where to reach us.
   */
  kubeletRegistration?: { registrationDir: string; csiEndpoint: string };
  /**
   * Another instance serves our unix endpoint (a DaemonSet update starts the new pod next to the old
   * one): wait up to this long for it to go before doing anything, instead of failing. 0: fail at once.
   */
  waitForPredecessorMs?: number;
  /**
   * Told when the controller or the node plugin meets a memory error (failed device), with the
   * volume it concerns when known: Kubernetes Events and metrics hang off this. May repeat.
   */
  onMemoryError?: (e: { source: 'controller' | 'node'; volumeId?: string; message: string }) => void;
  /**
   * Controller mode: which node ids are nodes of this pool (ControllerPublishVolume answers NOT_FOUND
   * for any other) and where that knowledge comes from, for the error message. In a cluster: the
   * CSINode objects (pkg/k8s/csinode.ts); standalone: the --nodes list. Absent: no node is known.
   * All-in-one mode knows exactly one node, its own, and ignores this.
   */
  nodes?: { exists: (nodeId: string) => boolean | Promise<boolean>; source: string };
  /** Controller: told after each successful CreateVolume (placement for a VolumePlaced Event). */
  onVolumeCreated?: (v: VolumePlacement) => void;
  /** Metrics registry holder; a new one when absent (cmd passes one it also adds k8s series to). */
  metrics?: DriverMetrics;
  /**
   * Controller: how often the master looks for freed memory to zero in the background (ms; default
   * 200, and after every delete). 0: never (CreateVolume then zeroes what it takes, and waits).
   */
  zeroIntervalMs?: number;
  log: Logger;
}

export interface RunningDriver {
  readonly config: DriverConfig;
  readonly device: DaxDevice;
  readonly fs: FamfsFs;
  readonly server: CsiServer;
  /** The controller's store (controller and all modes): the master role the Lease hands over. */
  readonly store?: ControllerStore;
  /** The controller's volume and snapshot operations (controller and all modes). */
  readonly volumes?: Volumes;
  /** The Node service, in node and all modes. */
  readonly node?: NodeService;
  readonly metrics: DriverMetrics;
  /** Node mode with kubeletRegistration: what the kubelet said. */
  readonly registration?: KubeletRegistration;
  /** What /healthz answers: health, registration, and a Probe through our own CSI socket. */
  liveness(): Promise<Health>;
  /** Why the device failed (memory error), or undefined while it is healthy. */
  deviceFailure(): string | undefined;
  stop(): Promise<void>;
}

/** Opens the device, creating a sparse emulation file in /dev/shm when it is missing there. */
function openOrCreateDevice(cfg: DriverConfig): { device: DaxDevice; created: boolean } {
  const exists = fs.existsSync(cfg.devicePath);
  if (!exists && !path.resolve(cfg.devicePath).startsWith('/dev/shm/')) {
    throw new Error(`device ${cfg.devicePath} does not exist (only emulated devices under /dev/shm are created on demand)`);
  }
  const device = openDevice(cfg.devicePath, exists ? {} : { create: { size: cfg.deviceSize } });
  return { device, created: !exists };
}

function openFamfs(cfg: DriverConfig, device: DaxDevice, created: boolean): FamfsFs {
  const hostUuid = systemUuid();
  try {
    // reserveDeleteEntries: DeleteVolume must never fail for log space (docs/format.md).
    return FamfsFs.open(device, { hostUuid, hostName: cfg.nodeId, reserveDeleteEntries: true });
  } catch (e) {
    if (!(e instanceof FamfsError && e.code === 'ENOTFAMFS') || !(created || cfg.mkfs)) throw e;
  }
  cfg.log.info({ device: cfg.devicePath, size: device.size }, 'no famfs on the device: formatting it');
  FamfsFs.mkfs(device, { systemUuid: hostUuid, devicePath: cfg.devicePath });
  return FamfsFs.open(device, { hostUuid, hostName: cfg.nodeId, reserveDeleteEntries: true });
}

/** Waits while another process serves the unix endpoint (see DriverConfig.waitForPredecessorMs). */
async function waitForPredecessor(cfg: DriverConfig): Promise<void> {
  const ep = parseEndpoint(cfg.endpoint);
  if (ep.kind !== 'unix' || !(cfg.waitForPredecessorMs && cfg.waitForPredecessorMs > 0)) return;
  if (!(await socketIsLive(ep.path))) return;
  cfg.log.info({ endpoint: cfg.endpoint, waitMs: cfg.waitForPredecessorMs }, 'another plugin serves this socket (update in progress): waiting for it to exit');
  const deadline = Date.now() + cfg.waitForPredecessorMs;
  while (await socketIsLive(ep.path)) {
    if (Date.now() > deadline) throw new Error(`${ep.path}: another plugin still serves it after ${cfg.waitForPredecessorMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
  cfg.log.info({ endpoint: cfg.endpoint }, 'the previous plugin is gone: starting');
}

export async function startDriver(cfg: DriverConfig): Promise<RunningDriver> {
  const log = cfg.log;
  // Before touching the device or any mount: the old plugin may still be restoring or serving them.
  await waitForPredecessor(cfg);
  await fs.promises.mkdir(cfg.stateDir, { recursive: true, mode: 0o700 });
  const { device, created } = openOrCreateDevice(cfg);
  let famfs: FamfsFs;
  try {
    famfs = openFamfs(cfg, device, created);
  } catch (e) {
    device.close();
    throw e;
  }
  log.info({ device: cfg.devicePath, kind: device.kind, size: device.size, master: famfs.isMaster, created }, 'device open');

  const node =
    cfg.mode === 'node' || cfg.mode === 'all'
      ? new NodeService({
          nodeId: cfg.nodeId,
          pool: cfg.pool,
          topologyKey: POOL_TOPOLOGY_KEY,
          stateDir: cfg.stateDir,
          devicePath: cfg.devicePath,
          device,
          famfs,
          hostUuid: systemUuid(),
          allowedPathRoots: cfg.allowedPathRoots ?? [...DEFAULT_ALLOWED_PATH_ROOTS],
          log: log.child({ component: 'node' }),
          ...(cfg.fusedScript !== undefined ? { fusedScript: cfg.fusedScript } : {}),
          ...(cfg.externalFuse === true ? { externalFuse: true } : {}),
          ...(cfg.externalFuseWaitMs !== undefined ? { externalFuseWaitMs: cfg.externalFuseWaitMs } : {}),
          ...(cfg.fuseOrphanTimeoutMs !== undefined ? { fuseOrphanTimeoutMs: cfg.fuseOrphanTimeoutMs } : {}),
          ...(cfg.onMemoryError !== undefined
            ? { onMemoryError: (e: { volumeId?: string; message: string }) => cfg.onMemoryError?.({ source: 'node', ...e }) }
            : {}),
        })
      : undefined;
  const deviceHealth = (): Health => {
    if (device.closed) return { state: 'unhealthy', message: `device ${cfg.devicePath} is closed` };
    if (device.failed) return { state: 'unhealthy', message: `device ${cfg.devicePath} failed: ${device.failureMessage ?? 'memory error'}` };
    return { state: 'ready' };
  };
  // Probe: the device, and on a node the FUSE mount that staged volumes live in.
  const health = async (): Promise<Health> => {
    const h = deviceHealth();
    if (h.state !== 'ready' || node === undefined) return h;
    const n = await node.health();
    return n.ok ? h : { state: 'unhealthy', message: n.message };
  };
  const deviceFailure = (): string | undefined => (device.failed ? `device ${cfg.devicePath} failed: ${device.failureMessage ?? 'memory error'}` : undefined);
  const metrics = cfg.metrics ?? new DriverMetrics();
  const server = new CsiServer({ endpoint: cfg.endpoint, log: log.child({ component: 'grpc' }), onRpc: metrics.observeRpc });
  server.addService('Identity', identityService({ driverName: cfg.driverName, manifest: { mode: cfg.mode, pool: cfg.pool, node: cfg.nodeId }, health }));
  let store: ControllerStore | undefined;
  let volumes: Volumes | undefined;
  let zeroer: BackgroundZeroer | undefined;
  if (cfg.mode === 'controller' || cfg.mode === 'all') {
    const controllerLog = log.child({ component: 'controller' });
    store = new ControllerStore(famfs, { log: controllerLog });
    // An emulation file gets holes punched instead of zeros written: a sparse device stays sparse.
    zeroer = new BackgroundZeroer(store, {
      log: controllerLog,
      discard: device.kind === 'file',
      ...(cfg.zeroIntervalMs !== undefined ? { intervalMs: cfg.zeroIntervalMs } : {}),
    });
    const z = zeroer;
    volumes = new Volumes(store, { log: controllerLog, onFreed: () => z.kick() });
    metrics.watchZeroing(() => {
      const u = famfs.allocator.summary();
      return { stats: famfs.zeroStats, cleanFreeBytes: u.cleanFreeBytes, dirtyFreeBytes: famfs.dirtyFreeBytes() };
    });
    // Without leader election this process is the only controller: it takes the famfs writer role
    // (fencing epoch) now. With a Lease, the elector calls store.takeMasterRole/dropMasterRole.
    if (cfg.deferMasterRole !== true) store.takeMasterRole(systemUuid());
    server.addService(
      'Controller',
      controllerService({
        volumes,
        pool: cfg.pool,
        topologyKey: POOL_TOPOLOGY_KEY,
        ...(cfg.mode === 'all'
          ? { nodeExists: (id: string) => id === cfg.nodeId, nodeSource: `all-in-one mode serves node ${cfg.nodeId} only` }
          : cfg.nodes !== undefined
            ? { nodeExists: cfg.nodes.exists, nodeSource: cfg.nodes.source }
            : {
                nodeExists: () => false,
                nodeSource: 'this controller knows no nodes: run it with a Kubernetes API (CSINode objects) or list them with --nodes',
              }),
        condition: () => {
          const h = deviceHealth();
          return h.state === 'ready' ? { abnormal: false, message: 'ok' } : { abnormal: true, message: h.message };
        },
        deviceFailure,
        ...(cfg.onMemoryError !== undefined ? { onDeviceFailure: (message: string) => cfg.onMemoryError?.({ source: 'controller', message }) } : {}),
        ...(cfg.onVolumeCreated !== undefined ? { onVolumeCreated: cfg.onVolumeCreated } : {}),
      }),
    );
  }
  if (node !== undefined) {
    server.addService('Node', node.handlers());
    // Before serving: put back (or tear down) what was staged and published before a restart.
    await node.restore();
  }
  await server.start();
  // After the takeover (if any) and a first look: a fresh device or a restart finds work at once.
  zeroer?.start();
  zeroer?.kick();

  let registration: KubeletRegistration | undefined;
  const httpServers: http.Server[] = [];
  const probeOwnSocket = parseEndpoint(cfg.endpoint).kind === 'unix';
  // Liveness for the kubelet's httpGet probe (no livenessprobe sidecar): what a sidecar would see —
  // the Probe RPC answered through the socket the kubelet and sidecars use — plus the registration.
  // A deleted or unreachable socket fails it, so the kubelet restarts the container, which rebinds.
  const liveness = async (): Promise<Health> => {
    const reg = registration?.health();
    if (reg !== undefined && reg.state !== 'ready') return reg;
    if (!probeOwnSocket) return health();
    // A new connection each time: an open channel would keep working after the socket file is gone.
    const client = new CsiClient(cfg.endpoint, 3000);
    try {
      const r = await client.call<{ ready?: { value?: boolean } | null }>('Identity', 'Probe', {}, 3000);
      return r.ready?.value === false ? { state: 'starting', message: 'Probe answered not ready' } : { state: 'ready' };
    } catch (e) {
      const err = e as { details?: string; message?: string };
      return { state: 'unhealthy', message: `Probe through ${cfg.endpoint} failed: ${err.details || err.message || String(e)}` };
    } finally {
      client.close();
    }
  };
  try {
    if (node !== undefined && cfg.kubeletRegistration !== undefined) {
      registration = await KubeletRegistration.start({
        ...cfg.kubeletRegistration,
        driverName: cfg.driverName,
        log: log.child({ component: 'registration' }),
      });
    }
    if (cfg.metricsAddress) httpServers.push(await startHttpEndpoints({ address: cfg.metricsAddress, metrics, health: liveness }));
    if (cfg.healthAddress && cfg.healthAddress !== cfg.metricsAddress)
      httpServers.push(await startHttpEndpoints({ address: cfg.healthAddress, health: liveness }));
  } catch (e) {
    await Promise.all(httpServers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    await registration?.stop();
    await server.stop(0);
    node?.close();
    device.close();
    throw e;
  }

  let stopped = false;
  return {
    config: cfg,
    device,
    fs: famfs,
    server,
    ...(store !== undefined ? { store } : {}),
    ...(volumes !== undefined ? { volumes } : {}),
    ...(node !== undefined ? { node } : {}),
    metrics,
    ...(registration !== undefined ? { registration } : {}),
    liveness,
    deviceFailure,
    async stop() {
      if (stopped) return;
      stopped = true;
      zeroer?.stop();
      // Unregister first: the kubelet stops sending RPCs to a socket that is about to go.
      await registration?.stop();
      await server.stop();
      await Promise.all(httpServers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      node?.close();
      device.close();
      log.info('driver stopped');
    },
  };
}
