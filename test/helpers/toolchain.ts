// Where the Kubernetes test tools live and how to get them.
//
// etcd, kube-apiserver, kubectl, helm and the CSI sidecars are compiled from Go modules by
// scripts/k8s-tools.sh into the git-ignored .cache/tools/bin. Tests that need them either find them
// there, build them (the script caches, so this costs minutes once and nothing afterwards), or are
// skipped — but only when the user says so with FAMFS_SKIP_K8S=1. A missing tool is never a silent pass.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export type K8sTool = 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'kubectl' | 'helm' | 'csi-provisioner' | 'csi-attacher' | 'csi-snapshotter';

/** scripts/k8s-tools.sh targets; each builds the tools listed for it. */
const TARGET_OF: Record<K8sTool, string> = {
  etcd: 'etcd',
  'kube-apiserver': 'kube',
  'kube-controller-manager': 'kube',
  kubectl: 'kube',
  helm: 'helm',
  'csi-provisioner': 'sidecars',
  'csi-attacher': 'sidecars',
  'csi-snapshotter': 'sidecars',
};

export class K8sToolError extends Error {
  readonly code = 'K8S_TOOL_UNAVAILABLE';
  constructor(message: string) {
    super(message);
    this.name = 'K8sToolError';
  }
}

/** Repository root, found from this file whether it runs from pkg/k8s (ts) or dist/pkg/k8s (js). */
export function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'scripts', 'k8s-tools.sh'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new K8sToolError(`cannot find scripts/k8s-tools.sh above ${__dirname}`);
    dir = parent;
  }
}

export function toolsBinDir(): string {
  return process.env.K8S_BIN ?? path.join(repoRoot(), '.cache', 'tools', 'bin');
}

export function toolPath(tool: K8sTool): string {
  return path.join(toolsBinDir(), tool);
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** True when the user asked to skip the Kubernetes tests (FAMFS_SKIP_K8S=1). */
export function k8sTestsSkipped(): boolean {
  return process.env.FAMFS_SKIP_K8S === '1';
}

/**
 * Makes sure every tool exists, building the missing ones with scripts/k8s-tools.sh (output goes to
 * stderr so a long first build shows progress). Throws K8sToolError when a build fails.
 */
export function ensureK8sTools(tools: readonly K8sTool[]): void {
  const missing = tools.filter((t) => !isExecutable(toolPath(t)));
  if (missing.length === 0) return;
  const targets = [...new Set(missing.map((t) => TARGET_OF[t]))];
  process.stderr.write(`[k8s] building missing tools (${missing.join(', ')}): scripts/k8s-tools.sh ${targets.join(' ')}\n`);
  const res = spawnSync(path.join(repoRoot(), 'scripts', 'k8s-tools.sh'), targets, { stdio: ['ignore', 'inherit', 'inherit'] });
  const still = tools.filter((t) => !isExecutable(toolPath(t)));
  if (res.status !== 0 || still.length > 0) {
    throw new K8sToolError(
      `scripts/k8s-tools.sh ${targets.join(' ')} failed (status ${String(res.status)}); missing: ${still.join(', ') || 'none'}. ` +
        'See .cache/logs/k8s-tools-*.log, or set FAMFS_SKIP_K8S=1 to skip the Kubernetes tests.',
    );
  }
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs a tool synchronously and returns its output; never throws for a non-zero exit. */
export function runTool(tool: K8sTool, args: readonly string[], env: NodeJS.ProcessEnv = process.env, input?: string): RunResult {
  const res = spawnSync(toolPath(tool), args, { env, encoding: 'utf8', input, maxBuffer: 64 * 1024 * 1024 });
  if (res.error) throw new K8sToolError(`${tool}: ${res.error.message}`);
  return { status: res.status ?? -1, stdout: res.stdout, stderr: res.stderr };
}
