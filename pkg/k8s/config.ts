// Kubernetes settings of the driver process, read from the environment the Helm chart sets
// (charts/famfs-csi/templates/controller.yaml and node.yaml), so the command line stays the one
// documented for every mode: famfs-csi --mode ... --endpoint ... --device ... --node-id ...
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseDuration } from './lease-config';

export class K8sConfigError extends Error {
  readonly code = 'K8S_CONFIG_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'K8sConfigError';
  }
}

export interface LeaderElectionSettings {
  enabled: boolean;
  namespace: string;
  leaseName: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

type Env = Record<string, string | undefined>;

function duration(env: Env, key: string, fallback: string): number {
  const text = env[key] ?? fallback;
  try {
    return parseDuration(text);
  } catch {
    throw new K8sConfigError(`${key}=${JSON.stringify(text)} is not a duration like 15s or 1m30s`);
  }
}

/**
 * FAMFS_LEADER_ELECTION (true|false), FAMFS_LEASE_NAME, FAMFS_LEASE_DURATION, FAMFS_LEASE_RENEW_DEADLINE,
 * FAMFS_LEASE_RETRY_PERIOD, plus POD_NAMESPACE and POD_NAME from the downward API.
 */
export function leaderElectionFromEnv(env: Env, defaults: { pool: string }): LeaderElectionSettings {
  const flag = (env.FAMFS_LEADER_ELECTION ?? 'false').toLowerCase();
  if (flag !== 'true' && flag !== 'false') throw new K8sConfigError(`FAMFS_LEADER_ELECTION must be true or false, got ${JSON.stringify(flag)}`);
  const enabled = flag === 'true';
  const namespace = env.POD_NAMESPACE ?? '';
  const identity = env.POD_NAME ?? '';
  if (enabled && (!namespace || !identity)) {
    throw new K8sConfigError('leader election needs POD_NAMESPACE and POD_NAME (downward API) to be set');
  }
  return {
    enabled,
    namespace,
    identity,
    leaseName: env.FAMFS_LEASE_NAME ?? `famfs-csi-master-${defaults.pool}`,
    leaseDurationMs: duration(env, 'FAMFS_LEASE_DURATION', '15s'),
    renewDeadlineMs: duration(env, 'FAMFS_LEASE_RENEW_DEADLINE', '10s'),
    retryPeriodMs: duration(env, 'FAMFS_LEASE_RETRY_PERIOD', '2s'),
  };
}

/** Where the service account token lives in a pod. */
const IN_CLUSTER_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/** Where this process's Kubernetes API configuration comes from (kubeconfig.ts loads it). */
export type KubeConfigSource = { kind: 'file'; file: string } | { kind: 'in-cluster' };

/**
 * The Kubernetes API configuration this process should use, or undefined when there is none: an
 * explicit file, in a pod (service account), $KUBECONFIG, or ~/.kube/config, in that order. Decided
 * from the environment and the file system only, so that a driver without an API never loads
 * @kubernetes/client-node (~55 MiB of RssAnon). Unlike KubeConfig.loadFromDefault it does not invent
 * a localhost:8080 cluster, so a driver started by hand (npm start) stays standalone.
 */
export function kubeConfigSource(env: Env = process.env, explicitPath?: string): KubeConfigSource | undefined {
  if (explicitPath !== undefined) return { kind: 'file', file: explicitPath };
  if (env.KUBERNETES_SERVICE_HOST && fs.existsSync(IN_CLUSTER_TOKEN)) return { kind: 'in-cluster' };
  if (env.KUBECONFIG) {
    const files = env.KUBECONFIG.split(path.delimiter).filter((f) => f !== '' && fs.existsSync(f));
    if (files.length === 0) throw new K8sConfigError(`KUBECONFIG=${env.KUBECONFIG}: no such file`);
    return { kind: 'file', file: files[0] };
  }
  const home = path.join(os.homedir(), '.kube', 'config');
  return fs.existsSync(home) ? { kind: 'file', file: home } : undefined;
}
