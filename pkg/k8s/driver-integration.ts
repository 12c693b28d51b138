// Everything the controller does with the Kubernetes API, behind one call for cmd/famfs-csi.ts:
//   - the famfs master role follows a Lease when the chart enables leader election (FAMFS_* env);
//     without it this process is master from the start, as before;
//   - while master, the FamfsPool status is published every interval (space, log, hosts' replay lag),
//     with the matching metrics and Events.
// Usage (controller or all mode, after startDriver with deferMasterRole = settings.enabled):
//   const k8s = startControllerIntegration({ store: driver.store, ... });  ...  await k8s.stop();
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { leaderElectionFromEnv, type LeaderElectionSettings } from './config';
import { loadKubeConfig } from './kubeconfig';
import { EventRecorder } from './events';
import { MasterElection, type MasterRole } from './leadership';
import type { FamfsMetrics } from './metrics';
import { PoolStatusLoop, type FamfsView } from './pool-status-loop';

/** The controller's store (pkg/csi/store.ts ControllerStore): the master role plus a view of famfs. */
export interface ControllerStoreView extends MasterRole {
  readonly fs: FamfsView;
  readonly fencingEpoch: number | undefined;
}

export interface ControllerIntegrationOptions {
  store: ControllerStoreView;
  pool: string;
  device: string;
  nodeId: string;
  hostUuid: string;
  /** Defaults to the in-cluster / KUBECONFIG configuration. */
  kubeConfig?: KubeConfig;
  /** Defaults to the chart's environment (leaderElectionFromEnv(process.env)). */
  leaderElection?: LeaderElectionSettings;
  statusIntervalMs?: number;
  metrics?: FamfsMetrics;
  log?: Logger;
}

export interface ControllerIntegration {
  /** Whether this process waits for the Lease before acting as master (pass as deferMasterRole). */
  readonly leaderElection: boolean;
  readonly election: MasterElection | undefined;
  readonly statusLoop: PoolStatusLoop;
  stop(): Promise<void>;
}

/** Reads the env settings early, so startDriver can be told whether to defer leadership. */
export function controllerLeaderElectionSettings(pool: string, env: NodeJS.ProcessEnv = process.env): LeaderElectionSettings {
  return leaderElectionFromEnv(env, { pool });
}

export function startControllerIntegration(o: ControllerIntegrationOptions): ControllerIntegration {
  const kubeConfig = o.kubeConfig ?? loadKubeConfig();
  const settings = o.leaderElection ?? controllerLeaderElectionSettings(o.pool);
  const events = new EventRecorder({ kubeConfig, component: 'famfs-csi-controller', instance: settings.identity || o.nodeId, log: o.log });
  const election = settings.enabled
    ? new MasterElection({ kubeConfig, settings, role: o.store, hostUuid: o.hostUuid, pool: o.pool, metrics: o.metrics, log: o.log })
    : undefined;
  const statusLoop = new PoolStatusLoop({
    kubeConfig,
    pool: o.pool,
    device: o.device,
    fs: o.store.fs,
    intervalMs: o.statusIntervalMs,
    metrics: o.metrics,
    events,
    log: o.log,
    master: () => {
      const epoch = election ? election.epoch : o.store.fencingEpoch;
      if (epoch === undefined) return undefined;
      return { node: o.nodeId, pod: settings.identity || undefined, leaseName: election ? settings.leaseName : undefined, fencingEpoch: epoch };
    },
  });
  election?.start();
  statusLoop.start();
  return {
    leaderElection: settings.enabled,
    election,
    statusLoop,
    async stop() {
      await statusLoop.stop();
      await election?.stop();
    },
  };
}
