// A local cluster with real kubelets and containerd (scripts/cluster.sh) for the real-node e2e tier:
// start it in a fresh directory, run kubectl against it, look into a node's mount namespace, stop it.
import { spawnSync, type SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as https from 'https';
import * as os from 'os';
import * as path from 'path';
import { parse as parseYaml } from 'yaml';
import { repoRoot, toolPath } from './toolchain';

export const NAMESPACE = 'famfs-system';
export const RELEASE = 'famfs-csi';

export interface KubeResult {
  status: number;
  stdout: string;
  stderr: string;
}

function script(): string {
  return path.join(repoRoot(), 'scripts', 'cluster.sh');
}

export class RealCluster {
  readonly kubeconfig: string;
  /** The API server's URL (https://127.0.0.1:PORT). */
  readonly server: string;
  readonly device: string;
  readonly nodes: string[];
  /** Seconds per phase of `up` (DIR/times: packages, tools, images, control-plane, nodes, install). */
  readonly phases: string;
  private stopped = false;

  private constructor(
    readonly dir: string,
    readonly upSeconds: number,
    readonly upOutput: string,
    /** Started earlier by someone else (attach): down() leaves it running. */
    readonly attached = false,
  ) {
    const env = fs.readFileSync(path.join(dir, 'env'), 'utf8');
    const get = (k: string): string => {
      const m = new RegExp(`^export ${k}=(.*)$`, 'm').exec(env);
      if (!m?.[1]) throw new Error(`${dir}/env lacks ${k}`);
      return m[1];
    };
    this.kubeconfig = get('KUBECONFIG');
    const server = /^\s*server:\s*(\S+)\s*$/m.exec(fs.readFileSync(this.kubeconfig, 'utf8'));
    if (!server?.[1]) throw new Error(`${this.kubeconfig} names no server`);
    this.server = server[1];
    this.device = get('FAMFS_DEVICE');
    const times = path.join(dir, 'times');
    this.phases = fs.existsSync(times) ? fs.readFileSync(times, 'utf8').trim() : '(no phase times)';
    this.nodes = this.kubectl(['get', 'nodes', '-o', 'jsonpath={.items[*].metadata.name}']).split(' ').filter(Boolean).sort(byAddress);
  }

  /** `scripts/cluster.sh up --nodes N --dir <fresh dir>`; throws with the script's output when it fails. */
  static up(nodes: number): RealCluster {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-rn-'));
    const t0 = Date.now();
    const r = spawnSync(script(), ['up', '--nodes', String(nodes), '--dir', dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.status !== 0) {
      const down = spawnSync(script(), ['down', '--dir', dir], { encoding: 'utf8' });
      throw new Error(`cluster.sh up failed (${String(r.status)}):\n${r.stderr.slice(-6000)}\n${r.stdout}\n(down: ${down.status} ${down.stderr.slice(-1000)})`);
    }
    return new RealCluster(dir, (Date.now() - t0) / 1000, r.stdout);
  }

  /**
   * A cluster that `scripts/cluster.sh up --dir DIR` started earlier and keeps running (FAMFS_REAL_CLUSTER_DIR:
   * iterate on the tier without a new cluster per run). Its down() does nothing: whoever started it stops it.
   */
  static attach(dir: string): RealCluster {
    if (!fs.existsSync(path.join(dir, 'env'))) throw new Error(`${dir} holds no running cluster (scripts/cluster.sh up --dir ${dir})`);
    return new RealCluster(dir, 0, '', true);
  }

  env(): NodeJS.ProcessEnv {
    // kubectl's discovery cache in the cluster's directory: one per API server port would otherwise pile up in ~/.kube/cache.
    return { ...process.env, KUBECONFIG: this.kubeconfig, KUBECACHEDIR: path.join(this.dir, 'kube-cache') };
  }

  /** kubectl/helm runs so far and their wall seconds (the tier's own polling is part of its time: the log shows it). */
  readonly calls = { count: 0, seconds: 0, apiReads: 0 };

  run(tool: 'kubectl' | 'helm', args: readonly string[], input?: string): KubeResult {
    const t = Date.now();
    const r: SpawnSyncReturns<string> = spawnSync(toolPath(tool), args, { env: this.env(), encoding: 'utf8', input, maxBuffer: 64 << 20 });
    this.calls.count++;
    this.calls.seconds += (Date.now() - t) / 1000;
    if (r.error) throw r.error;
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  /** kubectl that must succeed; returns stdout. */
  kubectl(args: readonly string[], input?: string): string {
    const r = this.run('kubectl', args, input);
    if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  apply(yaml: string): void {
    this.kubectl(['apply', '-f', '-'], yaml);
  }

  json<T = unknown>(args: readonly string[]): T {
    return JSON.parse(this.kubectl([...args, '-o', 'json'])) as T;
  }

  /**
   * Polls `check` (which returns a value when done; it may be async) every 500 ms; throws `what` with the
   * last state.
   */
  async waitFor<T>(what: string, timeoutMs: number, check: () => T | undefined | Promise<T | undefined>, state?: () => string): Promise<T> {
    const end = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        const v = await check();
        if (v !== undefined) return v;
      } catch (e) {
        last = e;
      }
      if (Date.now() > end) {
        const extra = state ? `\n${safe(state)}` : '';
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}${extra}`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Phase of a pod ('' when it does not exist). */
  podPhase(name: string, ns = 'default'): string {
    const r = this.run('kubectl', ['-n', ns, 'get', 'pod', name, '-o', 'jsonpath={.status.phase}']);
    return r.status === 0 ? r.stdout : '';
  }

  /** podPhase through the API from this process (what polls use: no kubectl run, the event loop stays free). */
  async podPhaseAsync(name: string, ns = 'default'): Promise<string> {
    const r = await this.api(`/api/v1/namespaces/${ns}/pods/${name}`);
    if (r.status === 404) return '';
    return (JSON.parse(apiOk(r, `pod ${ns}/${name}`)) as { status?: { phase?: string } }).status?.phase ?? '';
  }

  async waitPodPhase(name: string, phases: string[], timeoutMs: number, ns = 'default'): Promise<string> {
    return this.waitFor(
      `pod ${ns}/${name} to be ${phases.join(' or ')}`,
      timeoutMs,
      async () => {
        const p = await this.podPhaseAsync(name, ns);
        return phases.includes(p) ? p : undefined;
      },
      () => this.describe('pod', name, ns),
    );
  }

  /** A container's log through the API (as `kubectl logs`; throws while the container has not started). */
  async logsAsync(pod: string, ns = 'default', container?: string): Promise<string> {
    const r = await this.api(`/api/v1/namespaces/${ns}/pods/${pod}/log${container ? `?container=${encodeURIComponent(container)}` : ''}`);
    return apiOk(r, `the log of ${ns}/${pod}${container ? `/${container}` : ''}`);
  }

  /** The events of a namespace through the API. */
  async eventsAsync(ns = 'default'): Promise<KubeEvent[]> {
    const r = await this.api(`/api/v1/namespaces/${ns}/events`);
    return (JSON.parse(apiOk(r, `the events of ${ns}`)) as { items: KubeEvent[] }).items;
  }

  /**
   * GET of an API path with the kubeconfig's admin credentials, from this process over one kept-alive
   * connection. A kubectl run costs ~0.1 s of CPU and blocks the test's event loop while it runs: the
   * concurrent cases poll through this instead.
   */
  async api(apiPath: string): Promise<{ status: number; body: string }> {
    const agent = (this.agent ??= this.makeAgent());
    this.calls.apiReads++;
    const url = new URL(apiPath, this.server);
    return new Promise((resolve, reject) => {
      const req = https.get(url, { agent, headers: { Accept: 'application/json' }, timeout: 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`GET ${apiPath}: no answer in 30 s`)));
      req.on('error', reject);
    });
  }

  /**
   * A watch of an API collection (e.g. `/api/v1/namespaces/NS/pods?labelSelector=...`): every event the
   * API server streams, in order, the objects as they were at that moment (a pod's last status before it
   * is removed is in its DELETED event, which polling can miss). stop() ends it.
   */
  watch<T>(apiPath: string): { events: { type: string; object: T }[]; failure(): Error | undefined; stop(): void } {
    const agent = (this.agent ??= this.makeAgent());
    this.calls.apiReads++;
    const url = new URL(apiPath, this.server);
    url.searchParams.set('watch', '1');
    const events: { type: string; object: T }[] = [];
    let rest = '';
    let stopped = false;
    let failed: Error | undefined;
    // An error before stop() (the stream broke, an answer that is not JSON) is the caller's to report.
    const fail = (e: Error): void => {
      if (!stopped) failed ??= e;
    };
    const req = https.get(url, { agent, headers: { Accept: 'application/json' } }, (res) => {
      if (res.statusCode !== 200) fail(new Error(`watch ${apiPath}: HTTP ${res.statusCode ?? 0}`));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const lines = (rest + chunk).split('\n');
        rest = lines.pop() ?? '';
        try {
          for (const l of lines) if (l.trim() !== '') events.push(JSON.parse(l) as { type: string; object: T });
        } catch (e) {
          fail(e as Error);
        }
      });
      res.on('error', fail);
      res.on('end', () => fail(new Error(`watch ${apiPath}: the API server ended the stream`)));
    });
    req.on('error', fail);
    return {
      events,
      failure: () => failed,
      stop: () => {
        stopped = true;
        req.destroy();
      },
    };
  }

  private agent: https.Agent | undefined;

  private makeAgent(): https.Agent {
    const kc = parseYaml(fs.readFileSync(this.kubeconfig, 'utf8')) as {
      clusters: { cluster: { 'certificate-authority': string } }[];
      users: { user: { 'client-certificate': string; 'client-key': string } }[];
    };
    const cluster = kc.clusters[0]?.cluster;
    const user = kc.users[0]?.user;
    if (!cluster || !user) throw new Error(`${this.kubeconfig}: no cluster or user`);
    return new https.Agent({
      keepAlive: true,
      maxSockets: 8,
      ca: fs.readFileSync(cluster['certificate-authority']),
      cert: fs.readFileSync(user['client-certificate']),
      key: fs.readFileSync(user['client-key']),
    });
  }

  /** Closes the API connections (kept alive, they would keep the test process running). */
  close(): void {
    this.agent?.destroy();
    this.agent = undefined;
  }

  logs(pod: string, ns = 'default', container?: string): string {
    return this.kubectl(['-n', ns, 'logs', pod, ...(container ? ['-c', container] : [])]);
  }

  describe(kind: string, name: string, ns?: string): string {
    const r = this.run('kubectl', [...(ns ? ['-n', ns] : []), 'describe', kind, name]);
    return r.stdout + r.stderr;
  }

  /** The directory of node `name` (its containerd, kubelet, state). */
  nodeDir(name: string): string {
    return path.join(this.dir, 'nodes', name);
  }

  /** pid of a process that lives in node `name`'s mount namespace (its containerd). */
  nodePid(name: string): number {
    return Number(fs.readFileSync(path.join(this.nodeDir(name), 'containerd.pid'), 'utf8').trim());
  }

  /** Runs a command in node `name`'s mount namespace (what a shell on that machine would see). */
  onNode(name: string, cmd: string[]): KubeResult {
    const r = spawnSync('nsenter', ['-t', String(this.nodePid(name)), '-m', '--', ...cmd], { encoding: 'utf8' });
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  /** Mount points under the cluster directory as node `name` sees them. */
  nodeMounts(name: string, under: string): string[] {
    const r = this.onNode(name, ['cat', '/proc/self/mountinfo']);
    return r.stdout
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(under));
  }

  /** The famfs CLI of this checkout on node `name`, as that host (its /opt/famfs/system_uuid): `famfs cp` on the master. */
  famfs(name: string, args: string[]): KubeResult {
    return this.onNode(name, [process.execPath, path.join(repoRoot(), 'dist', 'cmd', 'famfs.js'), ...args]);
  }

  /** `ctr` against node `name`'s containerd. */
  ctr(name: string, args: string[]): KubeResult {
    const r = spawnSync('ctr', ['--address', path.join(this.nodeDir(name), 'containerd', 'containerd.sock'), '-n', 'k8s.io', ...args], { encoding: 'utf8' });
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  down(): { status: number; output: string } {
    this.close();
    if (this.stopped || this.attached) return { status: 0, output: '' };
    this.stopped = true;
    const r = spawnSync(script(), ['down', '--dir', this.dir], { encoding: 'utf8' });
    return { status: r.status ?? -1, output: r.stdout + r.stderr };
  }
}

export interface KubeEvent {
  reason: string;
  message: string;
  involvedObject: { name: string; kind?: string };
}

/** The body of a 2xx answer; otherwise throws with the status and what the server said. */
function apiOk(r: { status: number; body: string }, what: string): string {
  if (r.status < 200 || r.status > 299) throw new Error(`${what}: HTTP ${r.status}: ${r.body.slice(0, 300)}`);
  return r.body;
}

function byAddress(a: string, b: string): number {
  const n = (s: string): number => Number(s.split('.').pop());
  return n(a) - n(b) || a.localeCompare(b);
}

function safe(f: () => string): string {
  try {
    return f();
  } catch (e) {
    return `(state unavailable: ${(e as Error).message})`;
  }
}
