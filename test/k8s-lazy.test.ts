// @kubernetes/client-node costs ~55 MiB of RssAnon, more than the driver itself: the famfs-csi binary
// loads it (and pkg/k8s's API modules) only when a Kubernetes API is configured. Checked on the real
// binary: a preload reports at exit which of client-node's modules the process loaded.
import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const MAIN = path.join(__dirname, '..', 'cmd', 'famfs-csi.js');
const STARTUP_MS = 90_000;
// Counts the loaded modules under @kubernetes/client-node when the process exits (SIGTERM: exit 0).
const PRELOAD =
  'data:text/javascript,import { createRequire } from "module"; const r = createRequire("file:///"); ' +
  'process.on("exit", () => process.stderr.write("CLIENT_NODE_MODULES " + Object.keys(r.cache).filter((k) => k.includes("@kubernetes/client-node")).length + "\\n"));';

/** Starts the controller, waits for its socket, stops it with SIGTERM; the number of client-node modules it loaded. */
async function clientNodeModulesLoaded(dir: string, env: NodeJS.ProcessEnv, extraArgs: string[] = []): Promise<number> {
  const sock = path.join(dir, 'csi.sock');
  const device = `/dev/shm/famfs-k8s-lazy-${process.pid}-${path.basename(dir)}.img`;
  const child = spawn(
    process.execPath,
    [
      '--import',
      PRELOAD,
      MAIN,
      '--mode',
      'controller',
      '--endpoint',
      `unix://${sock}`,
      '--device',
      device,
      '--device-size',
      '256Mi',
      '--state-dir',
      path.join(dir, 'state'),
      '--node-id',
      'node-a',
      ...extraArgs,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env },
  );
  let output = '';
  child.stdout?.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (output += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const end = Date.now() + STARTUP_MS;
    // Started when it says so (its SIGTERM handler is in place from then on): the hint for a human
    // standalone, the integration's log line with an API.
    const started = /CSI on unix|Kubernetes integration started/;
    while (!started.test(output) && child.exitCode === null && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    assert.ok(fs.existsSync(sock) && started.test(output), `famfs-csi did not serve: ${output}`);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, output);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    fs.rmSync(device, { force: true });
  }
  const m = /CLIENT_NODE_MODULES (\d+)/.exec(output);
  assert.ok(m, `the preload reported nothing: ${output}`);
  return Number(m[1]);
}

describe('famfs-csi binary: the Kubernetes client is loaded only with an API configured', function () {
  this.timeout(240_000);
  let dir: string;
  let env: NodeJS.ProcessEnv;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-lazy-'));
    // No API: no in-cluster token variables, no KUBECONFIG, a HOME without ~/.kube/config.
    env = { ...process.env, HOME: dir };
    delete env.KUBECONFIG;
    delete env.KUBERNETES_SERVICE_HOST;
  });

  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('standalone: no module of @kubernetes/client-node is loaded', async () => {
    assert.equal(await clientNodeModulesLoaded(dir, env), 0);
  });

  it('with --kubeconfig: the client is loaded (the check above can see it)', async () => {
    const kubeconfig = path.join(dir, 'kubeconfig');
    // An API nobody serves: the controller starts anyway and logs the failed calls.
    fs.writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]',
        'users: [{name: u, user: {token: t}}]',
        'contexts: [{name: x, context: {cluster: c, user: u}}]',
        'current-context: x',
      ].join('\n'),
    );
    assert.ok((await clientNodeModulesLoaded(dir, env, ['--kubeconfig', kubeconfig])) > 0);
  });
});
