// The driver as a process runs it: startDriver (pkg/csi) plus everything Kubernetes adds when an API
// is configured — the master role following a Lease, FamfsPool status, Events (VolumePlaced,
// MemoryError) and the famfs metrics — and, without an API, memory errors logged and counted.
// cmd/famfs-csi.ts parses flags and calls startDriverProcess; Kubernetes is optional: without any
// configuration (npm start on a workstation) the driver serves CSI alone.
import type { Logger } from 'pino';
import type { VolumePlacement } from '../csi/controller';
import { startDriver, type DriverConfig, type RunningDriver } from '../csi/driver';
import { DriverMetrics } from '../csi/metrics';
import { systemUuid } from '../famfs/host-uuid';
import type { KubeConfig } from '@kubernetes/client-node';
import { kubeConfigSource, leaderElectionFromEnv } from './config';
import type { ControllerIntegration } from './driver-integration';
import type { EventRecorder } from './events';
import { rewrittenMessage } from '../csi/node';
import { createMetrics } from './metrics';

/** The Kubernetes part, loaded when an API is configured. */
type K8s = typeof import('./driver-k8s.js');

/** What the process decides; the Kubernetes hooks of DriverConfig are filled in here. */
export type DriverProcessConfig = Omit<DriverConfig, 'deferMasterRole' | 'metrics' | 'onMemoryError' | 'onVolumeCreated' | 'nodes'>;

export interface DriverProcessOptions {
  driver: DriverProcessConfig;
  /** --kubeconfig; default in-cluster, $KUBECONFIG, ~/.kube/config; none: standalone. */
  kubeconfigPath?: string;
  /**
   * Controller: the node ids of the pool (--nodes), for a controller without a Kubernetes API. With an
   * API and no list, the nodes are those whose CSINode object lists the driver.
   */
  knownNodes?: string[];
  /** Controller: how often the master publishes FamfsPool status (ms). */
  poolStatusIntervalMs: number;
  /** Node: how often to ask the FUSE server about rewritten log entries (ms, default 5000). */
  rewriteCheckIntervalMs?: number;
  log: Logger;
}

export interface DriverProcess {
  readonly driver: RunningDriver;
  /** Whether a Kubernetes API is configured (Lease, FamfsPool status, Events). */
  readonly kubernetes: boolean;
  /** Stops leading first (releases the Lease), then the reporters, then the CSI server and device. */
  stop(): Promise<void>;
}

/**
 * "Volume placed at offset X" on the claim, when the provisioner told us which claim it is
 * (csi-provisioner --extra-create-metadata adds csi.storage.k8s.io/pvc/name and .../pvc/namespace).
 */
function volumePlaced(k8s: K8s, events: EventRecorder, v: VolumePlacement): void {
  const name = v.parameters['csi.storage.k8s.io/pvc/name'];
  const namespace = v.parameters['csi.storage.k8s.io/pvc/namespace'];
  if (!name || !namespace) return;
  events.emit(k8s.pvcRef(namespace, name), 'Normal', k8s.EventReason.VolumePlaced, `famfs volume ${v.volumeId}: ${v.sizeBytes} bytes at ${v.placement}`);
}

/**
 * Which node ids the controller publishes to (ControllerPublishVolume answers NOT_FOUND for others):
 * an explicit list; else, with an API, the nodes whose CSINode object lists this driver with that
 * node id; else none (all-in-one mode knows its own node anyway).
 */
function nodesOf(list: string[] | undefined, kube: { k8s: K8s; kubeConfig: KubeConfig } | undefined, driverName: string): Pick<DriverConfig, 'nodes'> {
  if (list !== undefined) {
    const known = new Set(list);
    return { nodes: { exists: (id) => known.has(id), source: `the nodes given with --nodes: ${list.join(', ') || 'none'}` } };
  }
  if (kube !== undefined) {
    return { nodes: { exists: kube.k8s.csiNodeLookup(kube.kubeConfig, driverName), source: `no CSINode object lists driver ${driverName} with that node id` } };
  }
  return {};
}

export async function startDriverProcess(o: DriverProcessOptions): Promise<DriverProcess> {
  const { driver: cfg, log } = o;
  const source = kubeConfigSource(process.env, o.kubeconfigPath);
  // Loaded only with an API to talk to (see driver-k8s.ts).
  const k8s: K8s | undefined = source === undefined ? undefined : await import('./driver-k8s.js');
  const kube = k8s !== undefined && source !== undefined ? { k8s, kubeConfig: k8s.loadKubeConfigFrom(source) } : undefined;
  const controls = cfg.mode === 'controller' || cfg.mode === 'all';
  const election = controls ? leaderElectionFromEnv(process.env, { pool: cfg.pool }) : undefined;
  if (election?.enabled && kube === undefined) {
    throw new Error('FAMFS_LEADER_ELECTION=true but no Kubernetes API is configured (not in a pod, no KUBECONFIG, no --kubeconfig)');
  }
  const driverMetrics = new DriverMetrics();
  // The famfs series join the driver's registry: one /metrics endpoint, no duplicate names.
  const k8sMetrics = createMetrics({ registry: driverMetrics.registry });
  const component = cfg.mode === 'node' ? 'famfs-csi-node' : 'famfs-csi-controller';
  const events = kube ? new kube.k8s.EventRecorder({ kubeConfig: kube.kubeConfig, component, instance: election?.identity || cfg.nodeId, log }) : undefined;
  // Assigned once the driver runs; the closures below are made before that.
  // eslint-disable-next-line prefer-const
  let running: RunningDriver | undefined;
  // The device mapping of this process, and on a node the FUSE server's view (it meets poison first).
  const pollFailure = async (): Promise<string | undefined> => running?.deviceFailure() ?? (await running?.node?.memoryFailure());
  const memoryErrors =
    kube && events
      ? new kube.k8s.MemoryErrorReporter({
          kubeConfig: kube.kubeConfig,
          events,
          driverName: cfg.driverName,
          pool: cfg.pool,
          role: controls ? 'controller' : 'node',
          nodeId: cfg.nodeId,
          metrics: k8sMetrics,
          check: pollFailure,
          log,
        })
      : undefined;
  let memoryErrorsLogged = false;

  const driver = await startDriver({
    ...cfg,
    ...nodesOf(o.knownNodes, kube, cfg.driverName),
    deferMasterRole: election?.enabled === true,
    metrics: driverMetrics,
    onMemoryError: (e) => {
      if (memoryErrors) memoryErrors.report(e);
      else if (!memoryErrorsLogged) {
        memoryErrorsLogged = true;
        k8sMetrics.memoryErrors.inc({ pool: cfg.pool, source: e.source });
        log.error({ ...e }, 'memory error (no Kubernetes API: no Event raised)');
      }
    },
    ...(kube !== undefined && events !== undefined ? { onVolumeCreated: (v: VolumePlacement) => volumePlaced(kube.k8s, events, v) } : {}),
  });

  let integration: ControllerIntegration | undefined;
  if (kube !== undefined && driver.store !== undefined && election !== undefined) {
    integration = kube.k8s.startControllerIntegration({
      store: driver.store,
      pool: cfg.pool,
      device: cfg.devicePath,
      nodeId: cfg.nodeId,
      hostUuid: systemUuid(),
      kubeConfig: kube.kubeConfig,
      leaderElection: election,
      metrics: k8sMetrics,
      statusIntervalMs: o.poolStatusIntervalMs,
      log: log.child({ component: 'k8s' }),
    });
    log.info(
      { leaderElection: election.enabled, lease: election.enabled ? `${election.namespace}/${election.leaseName}` : undefined },
      'Kubernetes integration started',
    );
  } else if (kube === undefined) {
    log.info('no Kubernetes API configured: standalone (no Lease, FamfsPool status or Events)');
  }
  running = driver;
  memoryErrors?.start();
  if (memoryErrors === undefined) {
    const t = setInterval(() => {
      void pollFailure().then(
        (why) => {
          if (why !== undefined && !memoryErrorsLogged) {
            memoryErrorsLogged = true;
            k8sMetrics.memoryErrors.inc({ pool: cfg.pool, source: controls ? 'controller' : 'node' });
            log.error({ message: why }, 'memory error (no Kubernetes API: no Event raised)');
          }
        },
        () => undefined,
      );
    }, 5000);
    t.unref();
  }

  // A log entry this node's FUSE server had replayed was rewritten: loud, once per entry (log,
  // metric, Warning Event on the FamfsPool and the Node); NodeGetVolumeStats reports it as well.
  const rewrittenSeen = new Set<number>();
  const rewriteTimer =
    cfg.mode === 'node' || cfg.mode === 'all'
      ? setInterval(() => {
          void Promise.resolve(running?.node?.rewrittenEntries())
            .then((all) => {
              const fresh = (all ?? []).filter((i) => !rewrittenSeen.has(i));
              if (fresh.length === 0) return;
              for (const i of fresh) rewrittenSeen.add(i);
              k8sMetrics.logEntriesRewritten.inc({ pool: cfg.pool }, fresh.length);
              const message = `node ${cfg.nodeId}: ${rewrittenMessage(fresh)}`;
              log.error({ event: 'log-entry-rewritten', indexes: fresh, pool: cfg.pool }, message);
              if (kube !== undefined && events !== undefined) {
                const { EventReason, FAMFSPOOL_GROUP, FAMFSPOOL_KIND, FAMFSPOOL_VERSION } = kube.k8s;
                events.emit(
                  { apiVersion: `${FAMFSPOOL_GROUP}/${FAMFSPOOL_VERSION}`, kind: FAMFSPOOL_KIND, name: cfg.pool },
                  'Warning',
                  EventReason.LogEntryRewritten,
                  message,
                );
                events.emit({ apiVersion: 'v1', kind: 'Node', name: cfg.nodeId, uid: cfg.nodeId }, 'Warning', EventReason.LogEntryRewritten, message);
              }
            })
            .catch(() => undefined);
        }, o.rewriteCheckIntervalMs ?? 5000)
      : undefined;
  rewriteTimer?.unref();

  return {
    driver,
    kubernetes: kube !== undefined,
    async stop() {
      if (rewriteTimer) clearInterval(rewriteTimer);
      await Promise.all([integration?.stop(), memoryErrors?.stop()]).catch((e: unknown) =>
        log.warn({ err: String(e) }, 'Kubernetes integration did not stop cleanly'),
      );
      await driver.stop();
    },
  };
}
