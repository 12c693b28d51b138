/**
 * What the Kubernetes tests without a kubelet share: the famfs-csi controller and the chart's
 * sidecars run as local processes beside a TestCluster, acting as the chart's controller service
 * account, on nodes the test registers the way the kubelet and the node registrar would.
 */
import { strict as assert } from 'assert';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import { parseAllDocuments } from 'yaml';
import type { TestCluster } from './test-cluster';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface LocalProc {
  name: string;
  child: ChildProcess;
  log: string;
  /** Killed on purpose: its exit does not fail a wait. */
  expectedExit?: boolean;
}

/** Local processes of one test, their output, and waits that fail as soon as one of them dies. */
export class LocalProcs {
  readonly procs: LocalProc[] = [];

  start(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): LocalProc {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const p: LocalProc = { name, child, log: '' };
    const onData = (d: Buffer): void => {
      p.log = (p.log + d.toString()).slice(-200_000);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    this.procs.push(p);
    return p;
  }

  /** The end of every process's output, for failure messages. */
  logs(): string {
    return this.procs.map((p) => `--- ${p.name} (exit ${String(p.child.exitCode)}) ---\n${p.log.slice(-3000)}`).join('\n');
  }

  /** Polls `probe` until it returns a value; fails on timeout or when a process exits unexpectedly. */
  async until<T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = probe();
      if (v !== undefined) return v;
      for (const p of this.procs)
        if (p.child.exitCode !== null && !p.expectedExit) throw new Error(`${p.name} exited while waiting for ${what}\n${this.logs()}`);
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.logs()}`);
      await sleep(250);
    }
  }

  /** SIGKILL every process and wait for all of them to exit. */
  async killAll(): Promise<void> {
    for (const p of this.procs) p.child.kill('SIGKILL');
    await Promise.all(
      this.procs.map((p) => (p.child.exitCode === null && p.child.signalCode === null ? new Promise((r) => p.child.once('exit', r)) : Promise.resolve())),
    );
  }
}

/** Writes a copy of the cluster's kubeconfig to `file` that acts as `user` (e.g. the chart's controller service account). */
export function impersonatingKubeconfig(cluster: TestCluster, file: string, user: string): string {
  fs.writeFileSync(file, fs.readFileSync(cluster.kubeconfig, 'utf8').replace('      client-key:', `      as: ${user}\n      client-key:`));
  return file;
}

/** A Node in `pool` and its CSINode listing `driver`, as the kubelet and the node registrar would register them. */
export function registerNode(cluster: TestCluster, node: string, o: { driver: string; topologyKey: string; pool: string }): void {
  const apply = (obj: object) => cluster.must('kubectl', ['apply', '-f', '-'], JSON.stringify(obj));
  apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: node, labels: { 'kubernetes.io/hostname': node, [o.topologyKey]: o.pool } } });
  apply({
    apiVersion: 'storage.k8s.io/v1',
    kind: 'CSINode',
    metadata: { name: node },
    spec: { drivers: [{ name: o.driver, nodeID: node, topologyKeys: [o.topologyKey] }] },
  });
}

/**
 * The arguments the chart (rendered with `values`) gives container `name` of the controller
 * Deployment, for a local process: the namespace filled in, the CSI socket at `sock`, and no owner
 * for capacity objects (no Deployment pod owns a local process). `adjust` rewrites any further argument.
 */
export function chartControllerArgs(
  cluster: TestCluster,
  o: { chart: string; namespace: string; values?: string[]; sock: string; adjust?: (arg: string) => string },
): (name: string) => string[] {
  const rendered = cluster.must('helm', [
    'template',
    'famfs-csi',
    o.chart,
    '--namespace',
    o.namespace,
    '--show-only',
    'templates/controller.yaml',
    ...(o.values ?? []).flatMap((v) => ['--set', v]),
  ]);
  const dep = parseAllDocuments(rendered)[0]?.toJS() as { spec: { template: { spec: { containers: { name: string; args?: string[] }[] } } } };
  return (name) => {
    const ct = dep.spec.template.spec.containers.find((x) => x.name === name);
    assert.ok(ct, `the chart runs ${name}`);
    return (ct.args ?? []).map((a) =>
      (o.adjust ?? ((x: string) => x))(
        a
          .replace('$(POD_NAMESPACE)', o.namespace)
          .replace('/csi/csi.sock', o.sock)
          .replace(/^--capacity-ownerref-level=.*/, '--capacity-ownerref-level=-1'),
      ),
    );
  };
}
