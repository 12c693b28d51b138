// The chart against a real kube-apiserver (etcd + kube-apiserver from scripts/k8s-cluster.sh):
// every object must be accepted by the server, the CRD must serve FamfsPool with its status schema
// and printer columns, and the chart's RBAC must grant exactly what the components need.
// Tools missing → built (cached); build failure → the test fails. Only FAMFS_SKIP_K8S=1 skips.
import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseAllDocuments } from 'yaml';
import { TestCluster } from './helpers/test-cluster';
import { ensureK8sTools, repoRoot, toolPath, type K8sTool } from './helpers/toolchain';
import { startClusterOrSkip } from './helpers/k8s-env';

interface RenderedContainer {
  name: string;
  args?: string[];
}

/** Container args of the controller Deployment as the chart renders them. */
function renderedControllerArgs(cl: TestCluster): Map<string, string[]> {
  const out = cl.must('helm', ['template', 'famfs-csi', CHART, '--namespace', NS, '--show-only', 'templates/controller.yaml']);
  const dep = parseAllDocuments(out)[0]?.toJS() as { spec: { template: { spec: { containers: RenderedContainer[] } } } };
  return new Map(dep.spec.template.spec.containers.map((c) => [c.name, c.args ?? []]));
}

/**
 * Runs a sidecar with the chart's arguments against the real API server and a CSI socket nobody
 * serves. Accepted flags get it as far as dialling the socket; a flag it does not know ends it at once.
 */
function sidecarReachesCsiDial(tool: K8sTool, args: string[], kubeconfig: string, sock: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(toolPath(tool), [...args, `--kubeconfig=${kubeconfig}`], {
      env: { ...process.env, POD_NAME: 'famfs-csi-controller-0', POD_NAMESPACE: NS, NAMESPACE: NS },
    });
    let log = '';
    const timer = setTimeout(() => finish(new Error(`${tool} did not try ${sock} within 20 s:\n${log.slice(-2000)}`)), 20_000);
    function finish(err?: Error): void {
      clearTimeout(timer);
      child.kill('SIGKILL');
      if (err) reject(err);
      else resolve(log);
    }
    const onData = (d: Buffer): void => {
      log += d.toString();
      if (log.includes(`Addr: "${sock}"`)) finish();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => finish(new Error(`${tool} exited (${String(code)}) before dialling the CSI socket:\n${log.slice(-2000)}`)));
  });
}

const CHART = path.join(repoRoot(), 'charts', 'famfs-csi');
const NS = 'famfs-system';
const CONTROLLER_SA = `system:serviceaccount:${NS}:famfs-csi-controller`;
const NODE_SA = `system:serviceaccount:${NS}:famfs-csi-node`;

describe('@slow kubernetes: chart installed into a real kube-apiserver', function () {
  let cluster: TestCluster | undefined;

  before(function () {
    cluster = startClusterOrSkip(this, ['etcd', 'kube-apiserver', 'kubectl', 'helm']);
    process.stderr.write(`      [k8s] apiserver ready in ${cluster.startMillis} ms at ${cluster.apiUrl}\n`);
  });

  after(function () {
    this.timeout(60_000);
    if (!cluster) return;
    const dir = cluster.dir;
    cluster.stop();
    assert.ok(!fs.existsSync(dir), 'k8s-cluster.sh stop removes the directory');
  });

  function c(): TestCluster {
    assert.ok(cluster, 'cluster not started');
    return cluster;
  }

  it('serves the API quickly, with RBAC enforced for unprivileged identities', function () {
    assert.ok(c().startMillis < 60_000, `start took ${c().startMillis} ms`);
    assert.equal(c().must('kubectl', ['get', '--raw', '/readyz']).trim(), 'ok');
    const version = c().must('kubectl', ['version', '-o', 'json']);
    assert.match(version, /"gitVersion": "v1\.36\./);
    // A kubeconfig-free call with only the bearer token, so the admin client cert is not sent along.
    const denied = c().run('kubectl', [
      '--kubeconfig',
      '/dev/null',
      '--server',
      c().apiUrl,
      '--certificate-authority',
      path.join(c().dir, 'pki', 'ca.crt'),
      '--token',
      c().nobodyToken,
      'get',
      'namespaces',
    ]);
    assert.notEqual(denied.status, 0);
    assert.match(denied.stderr, /forbidden/i);
  });

  it('helm install: every object, CRD included, is accepted by the server', function () {
    this.timeout(120_000);
    const out = c().must('helm', ['install', 'famfs-csi', CHART, '--namespace', NS, '--create-namespace', '--wait=false']);
    assert.match(out, /STATUS: deployed/);
    assert.match(out, /kubectl describe famfspool pool0/, 'NOTES.txt is rendered');
    const status = c().must('helm', ['status', 'famfs-csi', '-n', NS, '-o', 'json']);
    assert.equal((JSON.parse(status) as { info: { status: string } }).info.status, 'deployed');
  });

  it('kubectl shows the CSIDriver, StorageClasses, FamfsPool and workloads', function () {
    this.timeout(60_000);
    const listing = c().must('kubectl', ['get', 'csidriver,storageclass,famfspools.famfs.csi.cxl.io', '-o', 'name']);
    for (const want of [
      'csidriver.storage.k8s.io/famfs.csi.cxl.io',
      'storageclass.storage.k8s.io/famfs-serial',
      'storageclass.storage.k8s.io/famfs-readonly',
      'famfspool.famfs.csi.cxl.io/pool0',
    ]) {
      assert.ok(listing.split('\n').includes(want), `missing ${want} in:\n${listing}`);
    }
    const drv = JSON.parse(c().must('kubectl', ['get', 'csidriver', 'famfs.csi.cxl.io', '-o', 'json'])) as { spec: Record<string, unknown> };
    assert.equal(drv.spec.attachRequired, true);
    assert.equal(drv.spec.storageCapacity, true);
    assert.equal(drv.spec.podInfoOnMount, true);
    const workloads = c().must('kubectl', ['-n', NS, 'get', 'deployment,daemonset', '-o', 'name']);
    assert.match(workloads, /deployment.apps\/famfs-csi-controller/);
    assert.match(workloads, /daemonset.apps\/famfs-csi-node/);
    // The server defaulted and stored the privileged DaemonSet (allow-privileged is on, as on real clusters).
    const ds = JSON.parse(c().must('kubectl', ['-n', NS, 'get', 'daemonset', 'famfs-csi-node', '-o', 'json'])) as {
      spec: { template: { spec: { containers: { name: string; volumeMounts?: { name: string; mountPropagation?: string }[] }[] } } };
    };
    const plugin = ds.spec.template.spec.containers.find((x) => x.name === 'famfs-csi');
    assert.equal(plugin?.volumeMounts?.find((m) => m.name === 'kubelet-dir')?.mountPropagation, 'Bidirectional');
  });

  it('FamfsPool status is a subresource with a schema; printer columns answer "how full, who is master"', function () {
    this.timeout(60_000);
    const status = {
      status: {
        device: '/dev/dax0.0',
        size: '64Gi',
        sizeBytes: 68719476736,
        free: '60Gi',
        freeBytes: 64424509440,
        pendingFreeBytes: 0,
        largestFreeExtent: '59Gi',
        largestFreeExtentBytes: 63350767616,
        volumes: 2,
        log: { entriesUsed: 12, entriesTotal: 25000, usedPercent: 0 },
        master: { node: 'node-a', pod: 'famfs-csi-controller-0', leaseName: 'famfs-csi-master-pool0', fencingEpoch: 3 },
        nodesHealthy: '1/2',
        nodes: [
          { name: 'node-a', replayedEntries: 12, lagEntries: 0, healthy: true },
          { name: 'node-b', replayedEntries: 9, lagEntries: 3, healthy: false, message: 'replay stalled', memoryErrors: 1 },
        ],
      },
    };
    c().must('kubectl', ['patch', 'famfspool', 'pool0', '--subresource=status', '--type=merge', '-p', JSON.stringify(status)]);
    const table = c().must('kubectl', ['get', 'famfspools']);
    const [header, row] = table.trim().split('\n');
    assert.match(header ?? '', /NAME\s+DEVICE\s+SIZE\s+FREE\s+LARGEST-FREE\s+LOG-USED\s+LOG-TOTAL\s+MASTER\s+NODES-HEALTHY\s+AGE/);
    assert.match(row ?? '', /pool0\s+\/dev\/dax0\.0\s+64Gi\s+60Gi\s+59Gi\s+12\s+25000\s+node-a\s+1\/2/);
    const described = c().must('kubectl', ['describe', 'famfspool', 'pool0']);
    assert.match(described, /replay stalled/);
    assert.match(described, /Lag Entries:\s+3/);

    // The schema rejects nonsense: a negative size and a node without a name.
    const bad = c().run('kubectl', [
      'patch',
      'famfspool',
      'pool0',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status: { freeBytes: -1 } }),
    ]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /freeBytes/);
    const badSpec = c().run(
      'kubectl',
      ['apply', '-f', '-'],
      JSON.stringify({ apiVersion: 'famfs.csi.cxl.io/v1alpha1', kind: 'FamfsPool', metadata: { name: 'bad' }, spec: { device: 'dax0.0' } }),
    );
    assert.notEqual(badSpec.status, 0);
    assert.match(badSpec.stderr, /spec\.device/);
  });

  it('the chart RBAC grants the controller and node exactly what they need', function () {
    this.timeout(60_000);
    const can = (as: string, ...args: string[]): boolean => {
      const res = c().run('kubectl', ['auth', 'can-i', '--as', as, ...args]);
      return res.stdout.trim() === 'yes';
    };
    assert.ok(can(CONTROLLER_SA, 'create', 'persistentvolumes'));
    assert.ok(can(CONTROLLER_SA, 'patch', 'volumeattachments.storage.k8s.io', '--subresource=status'));
    assert.ok(can(CONTROLLER_SA, 'update', 'leases.coordination.k8s.io', '-n', NS));
    assert.ok(!can(CONTROLLER_SA, 'update', 'leases.coordination.k8s.io', '-n', 'default'), 'leases only in the release namespace');
    assert.ok(can(CONTROLLER_SA, 'create', 'csistoragecapacities.storage.k8s.io', '-n', NS));
    assert.ok(can(CONTROLLER_SA, 'update', 'famfspools.famfs.csi.cxl.io', '--subresource=status'));
    assert.ok(can(CONTROLLER_SA, 'create', 'events', '-n', 'default'));
    assert.ok(!can(CONTROLLER_SA, 'get', 'secrets', '-n', NS));
    assert.ok(!can(CONTROLLER_SA, 'create', 'pods', '-n', NS));
    assert.ok(can(NODE_SA, 'patch', 'famfspools.famfs.csi.cxl.io', '--subresource=status'));
    assert.ok(!can(NODE_SA, 'update', 'famfspools.famfs.csi.cxl.io'), 'node may not change the pool spec');
    assert.ok(!can(NODE_SA, 'create', 'persistentvolumes'));
    assert.ok(!can(NODE_SA, 'get', 'secrets', '-n', NS));
  });

  it('the examples/ manifests are accepted by the server (dry run)', function () {
    this.timeout(60_000);
    // Pods need their service account; without a controller-manager nobody creates "default".
    c().must('kubectl', ['-n', 'default', 'create', 'serviceaccount', 'default']);
    const out = c().must('kubectl', ['apply', '--dry-run=server', '-n', 'default', '-f', path.join(repoRoot(), 'examples')]);
    for (const want of [
      'persistentvolumeclaim/dataset',
      'job.batch/load-dataset',
      'persistentvolumeclaim/dataset-readonly',
      'deployment.apps/readers',
      'persistentvolumeclaim/handoff',
      'pod/producer',
      'pod/consumer',
    ]) {
      assert.ok(out.includes(want), `${want} missing from:\n${out}`);
    }
  });

  it('csi-provisioner and csi-attacher accept the exact arguments the chart gives them', async function () {
    this.timeout(15 * 60_000); // may build the sidecars on first use
    ensureK8sTools(['csi-provisioner', 'csi-attacher']);
    this.timeout(60_000);
    const sock = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-sock-')), 'csi.sock');
    const args = renderedControllerArgs(c());
    for (const [container, tool] of [
      ['csi-provisioner', 'csi-provisioner'],
      ['csi-attacher', 'csi-attacher'],
    ] as const) {
      const chartArgs = args.get(container);
      assert.ok(chartArgs && chartArgs.length > 3, `no args for ${container}`);
      // What the kubelet would do: expand $(VAR) references, and our socket instead of /csi/csi.sock.
      const local = chartArgs.map((a) => a.replace('$(POD_NAMESPACE)', NS).replace('/csi/csi.sock', sock));
      await sidecarReachesCsiDial(tool, local, c().kubeconfig, sock);
    }
  });

  it('helm uninstall removes the release', function () {
    this.timeout(120_000);
    c().must('helm', ['uninstall', 'famfs-csi', '-n', NS, '--wait=false']);
    const left = c().must('kubectl', ['get', 'csidriver,storageclass', '-o', 'name']);
    assert.ok(!/famfs/.test(left), `left behind: ${left}`);
    // Helm keeps CRDs on uninstall on purpose (user data lives in them); the pool object goes.
    assert.match(c().must('kubectl', ['get', 'crd', '-o', 'name']), /famfspools\.famfs\.csi\.cxl\.io/);
  });
});
