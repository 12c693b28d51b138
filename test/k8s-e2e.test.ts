// End to end without a kubelet: etcd + kube-apiserver + kube-controller-manager on loopback, the chart
// installed by helm, the real famfs-csi controller (emulated device in /dev/shm) and the real
// csi-provisioner and csi-attacher as local processes, running with the chart's arguments and as the
// chart's service account (so its RBAC is proven sufficient). The scheduler's and the attach-detach
// controller's parts are played by the test: it sets the selected-node annotation and creates
// VolumeAttachments, exactly as those components would.
import { strict as assert } from 'assert';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseAllDocuments } from 'yaml';
import { TestCluster } from '../pkg/k8s/test-cluster';
import { ensureK8sTools, k8sTestsSkipped, repoRoot, toolPath } from '../pkg/k8s/toolchain';

const CHART = path.join(repoRoot(), 'charts', 'famfs-csi');
const NS = 'famfs-system';
const DRIVER = 'famfs.csi.cxl.io';
const POOL = 'pool0';
const TOPOLOGY_KEY = 'famfs.csi.cxl.io/pool';
const CONTROLLER_SA = `system:serviceaccount:${NS}:famfs-csi-controller`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Proc {
  name: string;
  child: ChildProcess;
  log: string;
}

describe('@slow kubernetes e2e: PVC → CreateVolume → Bound, serial attach, delete frees space', function () {
  let cluster: TestCluster | undefined;
  let work = '';
  let device = '';
  const procs: Proc[] = [];
  let pvName = '';

  function c(): TestCluster {
    assert.ok(cluster);
    return cluster;
  }
  const kubectl = (...args: string[]): string => c().must('kubectl', args);
  const json = <T>(...args: string[]): T => JSON.parse(kubectl(...args, '-o', 'json')) as T;

  function start(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const p: Proc = { name, child, log: '' };
    const onData = (d: Buffer): void => {
      p.log = (p.log + d.toString()).slice(-200_000);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    procs.push(p);
    return p;
  }

  function logs(): string {
    return procs.map((p) => `--- ${p.name} (exit ${String(p.child.exitCode)}) ---\n${p.log.slice(-3000)}`).join('\n');
  }

  async function until<T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = probe();
      if (v !== undefined) return v;
      for (const p of procs) if (p.child.exitCode !== null) throw new Error(`${p.name} exited while waiting for ${what}\n${logs()}`);
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${logs()}`);
      await sleep(250);
    }
  }

  before(async function () {
    if (k8sTestsSkipped()) {
      this.skip();
      return;
    }
    this.timeout(90 * 60_000);
    ensureK8sTools(['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl', 'helm', 'csi-provisioner', 'csi-attacher']);
    this.timeout(180_000);
    cluster = TestCluster.start({ controllerManager: true });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-e2e-'));
    device = path.join('/dev/shm', `famfs-e2e-${process.pid}-${Date.now()}`);

    c().must('helm', ['install', 'famfs-csi', CHART, '--namespace', NS, '--create-namespace', '--set', `pool.name=${POOL}`]);

    // Two nodes on the same memory, as the kubelet and node-driver-registrar would register them.
    for (const node of ['node-a', 'node-b']) {
      c().must('kubectl', ['apply', '-f', '-'], JSON.stringify({
        apiVersion: 'v1', kind: 'Node', metadata: { name: node, labels: { 'kubernetes.io/hostname': node, [TOPOLOGY_KEY]: POOL } },
      }));
      c().must('kubectl', ['apply', '-f', '-'], JSON.stringify({
        apiVersion: 'storage.k8s.io/v1', kind: 'CSINode', metadata: { name: node },
        spec: { drivers: [{ name: DRIVER, nodeID: node, topologyKeys: [TOPOLOGY_KEY] }] },
      }));
    }

    // The famfs controller, on an emulated device, with the identity node-a would have.
    const sock = path.join(work, 'csi.sock');
    start('famfs-csi', process.execPath, [path.join(repoRoot(), 'dist', 'cmd', 'famfs-csi.js'), '--mode', 'controller',
      '--endpoint', `unix://${sock}`, '--device', device, '--device-size', '1Gi', '--mkfs', '--node-id', 'node-a',
      '--driver-name', DRIVER, '--pool', POOL, '--state-dir', path.join(work, 'state')],
    { FAMFS_SYSTEM_UUID: '0e2e0e2e-0000-4000-8000-00000000000a' });
    await until('the CSI socket', () => (fs.existsSync(sock) ? true : undefined), 30_000);

    // The sidecars with the chart's own arguments, acting as the chart's controller service account.
    const sa = path.join(work, 'sa.kubeconfig');
    fs.writeFileSync(sa, fs.readFileSync(c().kubeconfig, 'utf8').replace('      client-key:', `      as: ${CONTROLLER_SA}\n      client-key:`));
    const rendered = c().must('helm', ['template', 'famfs-csi', CHART, '--namespace', NS, '--show-only', 'templates/controller.yaml']);
    const dep = parseAllDocuments(rendered)[0]?.toJS() as { spec: { template: { spec: { containers: { name: string; args?: string[] }[] } } } };
    const argsOf = (name: string): string[] =>
      (dep.spec.template.spec.containers.find((x) => x.name === name)?.args ?? []).map((a) => a
        .replace('$(POD_NAMESPACE)', NS)
        .replace('/csi/csi.sock', sock)
        // No Deployment pod owns these local processes; capacity objects get no owner, refreshed often.
        .replace(/^--capacity-ownerref-level=.*/, '--capacity-ownerref-level=-1')
        .replace(/^--capacity-poll-interval=.*/, '--capacity-poll-interval=2s'));
    const sidecarEnv = { POD_NAME: 'famfs-csi-controller-local', POD_NAMESPACE: NS, NAMESPACE: NS };
    start('csi-provisioner', toolPath('csi-provisioner'), [...argsOf('csi-provisioner'), `--kubeconfig=${sa}`], sidecarEnv);
    start('csi-attacher', toolPath('csi-attacher'), [...argsOf('csi-attacher'), `--kubeconfig=${sa}`], sidecarEnv);
  });

  after(async function () {
    this.timeout(60_000);
    for (const p of procs) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => (p.child.exitCode === null && p.child.signalCode === null ? new Promise((r) => p.child.once('exit', r)) : undefined)));
    cluster?.stop();
    if (device) fs.rmSync(device, { force: true });
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  /** Free bytes the provisioner published for the pool (CSIStorageCapacity from the driver's GetCapacity). */
  function publishedCapacity(): number | undefined {
    const list = json<{ items: { capacity?: string; nodeTopology?: { matchLabels?: Record<string, string> } }[] }>('-n', NS, 'get', 'csistoragecapacities');
    const item = list.items.find((i) => i.nodeTopology?.matchLabels?.[TOPOLOGY_KEY] === POOL && i.capacity !== undefined);
    if (!item?.capacity) return undefined;
    const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(item.capacity);
    assert.ok(m, `capacity ${item.capacity}`);
    return Number(m[1]) * ({ Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[m[2] as 'Ki' | 'Mi' | 'Gi'] ?? 1);
  }

  let capacityBefore = 0;

  it('publishes the pool capacity as CSIStorageCapacity', async function () {
    this.timeout(120_000);
    capacityBefore = await until('CSIStorageCapacity for the pool', publishedCapacity, 90_000);
    assert.ok(capacityBefore > 512 * 1024 ** 2 && capacityBefore <= 1024 ** 3, `capacity ${capacityBefore}`);
  });

  it('a PVC becomes Bound through CreateVolume, with the provisioning events on it', async function () {
    this.timeout(180_000);
    c().must('kubectl', ['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'PersistentVolumeClaim',
      // selected-node: what the scheduler writes for a WaitForFirstConsumer claim once its pod has a node.
      metadata: { name: 'data', namespace: 'default', annotations: { 'volume.kubernetes.io/selected-node': 'node-a' } },
      spec: { storageClassName: 'famfs-serial', accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '64Mi' } } },
    }));
    const bound = await until('PVC data Bound', () => {
      const pvc = json<{ status?: { phase?: string }; spec: { volumeName?: string } }>('-n', 'default', 'get', 'pvc', 'data');
      return pvc.status?.phase === 'Bound' ? pvc.spec.volumeName : undefined;
    }, 150_000);
    assert.ok(bound);
    pvName = bound;
    const pv = json<{ spec: { csi: { driver: string; volumeHandle: string }; nodeAffinity?: unknown; capacity: { storage: string } } }>('get', 'pv', pvName);
    assert.equal(pv.spec.csi.driver, DRIVER);
    assert.match(pv.spec.csi.volumeHandle, /^vol-[0-9a-f]{40}$/);
    assert.match(JSON.stringify(pv.spec.nodeAffinity), new RegExp(`"key":"${TOPOLOGY_KEY}".*"values":\\["${POOL}"\\]`));
    const described = kubectl('-n', 'default', 'describe', 'pvc', 'data');
    process.stderr.write(`      [e2e] kubectl describe pvc data:\n${described.replace(/^/gm, '        ')}\n`);
    assert.match(described, /Status:\s+Bound/);
    assert.match(described, /ProvisioningSucceeded\s+.*Successfully provisioned volume/);
    const after = await until('capacity to drop by 64Mi', () => {
      const v = publishedCapacity();
      return v !== undefined && v <= capacityBefore - 64 * 1024 ** 2 ? v : undefined;
    }, 60_000);
    process.stderr.write(`      [e2e] pool capacity ${capacityBefore} → ${after} bytes\n`);
  });

  function va(name: string): { status?: { attached?: boolean; attachError?: { message?: string } } } | undefined {
    const r = c().run('kubectl', ['get', 'volumeattachment', name, '-o', 'json']);
    return r.status === 0 ? (JSON.parse(r.stdout) as { status?: { attached?: boolean; attachError?: { message?: string } } }) : undefined;
  }

  function createVa(name: string, node: string): void {
    c().must('kubectl', ['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttachment', metadata: { name },
      spec: { attacher: DRIVER, nodeName: node, source: { persistentVolumeName: pvName } },
    }));
  }

  it("a second node's writer attachment is refused while the first holds it, and succeeds after release", async function () {
    this.timeout(300_000);
    assert.ok(pvName, 'needs the bound volume of the previous test');
    createVa('famfs-va-a', 'node-a');
    await until('node-a attached', () => (va('famfs-va-a')?.status?.attached === true ? true : undefined), 60_000);
    createVa('famfs-va-b', 'node-b');
    const refusal = await until('node-b refused', () => va('famfs-va-b')?.status?.attachError?.message, 60_000);
    process.stderr.write(`      [e2e] node-b attach refused: ${refusal}\n`);
    assert.equal(va('famfs-va-b')?.status?.attached ?? false, false);
    assert.match(refusal, /FailedPrecondition|node-a/i);

    kubectl('delete', 'volumeattachment', 'famfs-va-a', '--wait=false');
    await until('node-a detached', () => (va('famfs-va-a') === undefined ? true : undefined), 60_000);
    await until('node-b attached after the release', () => (va('famfs-va-b')?.status?.attached === true ? true : undefined), 240_000);
    process.stderr.write(`      [e2e] ${kubectl('get', 'volumeattachments').replace(/^/gm, '        ')}\n`);
    kubectl('delete', 'volumeattachment', 'famfs-va-b', '--wait=false');
    await until('node-b detached', () => (va('famfs-va-b') === undefined ? true : undefined), 60_000);
  });

  it('deleting the PVC deletes the volume and frees the space', async function () {
    this.timeout(180_000);
    assert.ok(pvName);
    kubectl('-n', 'default', 'delete', 'pvc', 'data', '--wait=false');
    await until('the PV to be deleted', () => (c().run('kubectl', ['get', 'pv', pvName]).status !== 0 ? true : undefined), 120_000);
    const back = await until('capacity to come back', () => {
      const v = publishedCapacity();
      return v !== undefined && v >= capacityBefore ? v : undefined;
    }, 60_000);
    assert.equal(back, capacityBefore);
  });
});
