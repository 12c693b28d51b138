// Kubernetes settings of the driver process, read from the environment the Helm chart sets
// (charts/famfs-csi/templates/controller.yaml and node.yaml), so the command line stays the one
// documented for every mode: famfs-csi --mode ... --endpoint ... --device ... --node-id ...
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { KubeConfig } from '@kubernetes/client-node';
import { parseDuration } from './lease';

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

/** In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config (what kubectl would use). */
export function loadKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new K8sConfigError('no Kubernetes API configured (not in a pod, no KUBECONFIG)');
  return kc;
}

/** Where the service account token lives in a pod. */
const IN_CLUSTER_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * The Kubernetes API this process should talk to, or undefined when there is none: in a pod (service
 * account), $KUBECONFIG, or ~/.kube/config, in that order. Unlike KubeConfig.loadFromDefault it does
 * not invent a localhost:8080 cluster, so a driver started by hand (npm start) stays standalone.
 */
export function kubeConfigIfAny(env: Env = process.env, explicitPath?: string): KubeConfig | undefined {
  const kc = new KubeConfig();
  if (explicitPath !== undefined) {
    kc.loadFromFile(explicitPath);
  } else if (env.KUBERNETES_SERVICE_HOST && fs.existsSync(IN_CLUSTER_TOKEN)) {
    kc.loadFromCluster();
  } else if (env.KUBECONFIG) {
    const files = env.KUBECONFIG.split(path.delimiter).filter((f) => f !== '' && fs.existsSync(f));
    if (files.length === 0) throw new K8sConfigError(`KUBECONFIG=${env.KUBECONFIG}: no such file`);
    kc.loadFromFile(files[0]);
  } else {
    const home = path.join(os.homedir(), '.kube', 'config');
    if (!fs.existsSync(home)) return undefined;
    kc.loadFromFile(home);
  }
  if (!kc.getCurrentCluster()) throw new K8sConfigError('the Kubernetes configuration names no current cluster');
  return kc;
}
