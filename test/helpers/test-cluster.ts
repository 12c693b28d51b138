// A real etcd + kube-apiserver on loopback for tests, driven through scripts/k8s-cluster.sh.
// No kubelet or controller-manager: objects are stored, validated and authorized for real, but no
// pod ever runs. That is what the chart, the sidecars and the client-node code need to be tested.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { K8sToolError, repoRoot, runTool, toolsBinDir, type K8sTool, type RunResult } from './toolchain';

export class TestClusterError extends Error {
  readonly code = 'TEST_CLUSTER_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'TestClusterError';
  }
}

function script(): string {
  return path.join(repoRoot(), 'scripts', 'k8s-cluster.sh');
}

/** Parses the `export KEY=value` lines k8s-cluster.sh writes to DIR/env. */
function parseEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m && m[1] !== undefined && m[2] !== undefined) out[m[1]] = m[2];
  }
  return out;
}

export class TestCluster {
  private stopped = false;

  private constructor(
    readonly dir: string,
    readonly kubeconfig: string,
    readonly apiUrl: string,
    /** Bearer token of an identity with no RBAC grants at all (for "forbidden" checks). */
    readonly nobodyToken: string,
    readonly startMillis: number,
  ) {}

  /**
   * Starts a cluster in a fresh directory (or `dir`); returns once /readyz answers. With
   * `controllerManager`, kube-controller-manager runs too (claims get Bound, service accounts appear).
   */
  static start(opts: { dir?: string; controllerManager?: boolean } = {}): TestCluster {
    const d = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-k8s-'));
    const t0 = Date.now();
    const childEnv = { ...process.env, K8S_BIN: toolsBinDir(), K8S_CONTROLLER_MANAGER: opts.controllerManager ? '1' : '0' };
    const res = spawnSync(script(), ['start', d], { encoding: 'utf8', env: childEnv });
    if (res.status !== 0) {
      spawnSync(script(), ['stop', d]);
      throw new TestClusterError(`k8s-cluster.sh start failed (status ${String(res.status)}):\n${res.stderr}`);
    }
    const env = parseEnvFile(path.join(d, 'env'));
    const kubeconfig = env.KUBECONFIG;
    const api = env.FAMFS_K8S_API;
    const token = env.FAMFS_K8S_NOBODY_TOKEN;
    if (!kubeconfig || !api || !token) throw new TestClusterError(`incomplete ${d}/env`);
    return new TestCluster(d, kubeconfig, api, token, Date.now() - t0);
  }

  /** Environment for child processes that should talk to this cluster. */
  env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return { ...process.env, KUBECONFIG: this.kubeconfig, ...extra };
  }

  run(tool: Extract<K8sTool, 'kubectl' | 'helm'>, args: readonly string[], input?: string): RunResult {
    return runTool(tool, args, this.env(), input);
  }

  /** Like run, but throws unless the command succeeds; returns stdout. */
  must(tool: Extract<K8sTool, 'kubectl' | 'helm'>, args: readonly string[], input?: string): string {
    const res = this.run(tool, args, input);
    if (res.status !== 0) throw new K8sToolError(`${tool} ${args.join(' ')} exited ${res.status}:\n${res.stderr}${res.stdout}`);
    return res.stdout;
  }

  /** The apiserver's log so far (for failure messages). */
  apiserverLog(lines = 40): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'apiserver.log'), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    const res = spawnSync(script(), ['stop', this.dir], { encoding: 'utf8' });
    if (res.status !== 0) throw new TestClusterError(`k8s-cluster.sh stop failed: ${res.stderr}`);
  }
}
