// End to end without a kubelet: etcd + kube-apiserver + kube-controller-manager on loopback, the chart
// installed by helm, the real famfs-csi controller (emulated device in /dev/shm) and the real
// csi-provisioner and csi-attacher as local processes, running with the chart's arguments and as the
// chart's service account (so its RBAC is proven sufficient). The scheduler's and the attach-detach
// controller's parts are played by the test: it sets the selected-node annotation and creates
// VolumeAttachments, exactly as those components would.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import { CsiClient, type CsiCallError } from '../pkg/csi/client';
import { TestCluster } from './helpers/test-cluster';
import { repoRoot, toolPath } from './helpers/toolchain';
import { startClusterOrSkip } from './helpers/k8s-env';
import { chartControllerArgs, impersonatingKubeconfig, LocalProcs, registerNode, type LocalProc } from './helpers/k8s-local';

const CHART = path.join(repoRoot(), 'charts', 'famfs-csi');
const NS = 'famfs-system';
const DRIVER = 'famfs.csi.cxl.io';
const POOL = 'pool0';
const TOPOLOGY_KEY = 'famfs.csi.cxl.io/pool';
const CONTROLLER_SA = `system:serviceaccount:${NS}:famfs-csi-controller`;
const LEASE = `famfs-csi-master-${POOL}`;
/** The two controller replicas: different hosts (famfs identities) on the same memory. */
const REPLICAS = {
  a: { pod: 'famfs-csi-controller-a', node: 'node-a', uuid: '0e2e0e2e-0000-4000-8000-00000000000a' },
  b: { pod: 'famfs-csi-controller-b', node: 'node-b', uuid: '0e2e0e2e-0000-4000-8000-00000000000b' },
} as const;
const MiB = 1024 ** 2;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function spawnSyncNode(args: string[]): string {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
  if (r.status !== 0 && r.status !== 1) throw new Error(`node ${args.join(' ')} exited ${String(r.status)}: ${r.stderr}`);
  return r.stdout;
}

describe('@slow kubernetes e2e: PVC → CreateVolume → Bound, serial attach, delete frees space', function () {
  let cluster: TestCluster | undefined;
  let work = '';
  let device = '';
  const procs = new LocalProcs();
  const until = procs.until.bind(procs);
  let pvName = '';
  let controllerA: LocalProc | undefined;
  let controllerB: LocalProc | undefined;
  let sockB = '';

  function c(): TestCluster {
    assert.ok(cluster);
    return cluster;
  }
  const kubectl = (...args: string[]): string => c().must('kubectl', args);
  const json = <T>(...args: string[]): T => JSON.parse(kubectl(...args, '-o', 'json')) as T;

  /** Who holds the controller Lease ('' when nobody). */
  function leaseHolder(): string {
    const r = c().run('kubectl', ['-n', NS, 'get', 'lease', LEASE, '-o', 'jsonpath={.spec.holderIdentity}']);
    return r.status === 0 ? r.stdout.trim() : '';
  }

  /** famfs' own view of the device (read-only): log entries used, fencing epoch, master host. */
  function famfsView(): { entriesUsed: number; epoch: number; master: string; clean: boolean } {
    const r = spawnSyncNode([path.join(repoRoot(), 'dist', 'cmd', 'famfs.js'), 'fsck', '--json', device]);
    const j = JSON.parse(r) as { clean: boolean; log: { entriesUsed: number }; fencingEpoch: number; superblock: { systemUuid: string } };
    return { entriesUsed: j.log.entriesUsed, epoch: j.fencingEpoch, master: j.superblock.systemUuid, clean: j.clean };
  }

  function poolStatus(): { freeBytes?: number; master?: { node?: string; pod?: string; fencingEpoch?: number } } | undefined {
    const r = c().run('kubectl', ['get', 'famfspool', POOL, '-o', 'json']);
    if (r.status !== 0) return undefined;
    return (JSON.parse(r.stdout) as { status?: { freeBytes?: number; master?: { node?: string; pod?: string; fencingEpoch?: number } } }).status;
  }

  /** A kubectl output into the test log, for the transcript. */
  function show(title: string, text: string): void {
    process.stderr.write(`      [e2e] $ ${title}\n${text.replace(/\n$/, '').replace(/^/gm, '        ')}\n`);
  }

  before(async function () {
    cluster = startClusterOrSkip(
      this,
      ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl', 'helm', 'csi-provisioner', 'csi-attacher'],
      { controllerManager: true },
      180_000,
    );
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-e2e-'));
    device = path.join('/dev/shm', `famfs-e2e-${process.pid}-${Date.now()}`);

    c().must('helm', ['install', 'famfs-csi', CHART, '--namespace', NS, '--create-namespace', '--set', `pool.name=${POOL}`]);

    // Two nodes on the same memory, as the kubelet and node-driver-registrar would register them.
    for (const node of ['node-a', 'node-b']) registerNode(c(), node, { driver: DRIVER, topologyKey: TOPOLOGY_KEY, pool: POOL });

    // The sidecars' and the controllers' identity: the chart's controller service account.
    const sa = impersonatingKubeconfig(c(), path.join(work, 'sa.kubeconfig'), CONTROLLER_SA);

    // Two famfs controller replicas with leader election (the chart's env, shorter durations), on
    // one emulated device, with the identities node-a and node-b would have. A starts first (and
    // formats the device), so it takes the Lease and the famfs master role.
    const sock = path.join(work, 'csi.sock');
    const startController = (r: 'a' | 'b', socket: string): LocalProc =>
      procs.start(
        `famfs-csi-${r}`,
        process.execPath,
        [
          path.join(repoRoot(), 'dist', 'cmd', 'famfs-csi.js'),
          '--mode',
          'controller',
          '--endpoint',
          `unix://${socket}`,
          '--device',
          device,
          '--device-size',
          '1Gi',
          '--mkfs',
          '--node-id',
          REPLICAS[r].node,
          '--driver-name',
          DRIVER,
          '--pool',
          POOL,
          '--state-dir',
          path.join(work, `state-${r}`),
          '--pool-status-interval',
          '1000',
        ],
        {
          FAMFS_SYSTEM_UUID: REPLICAS[r].uuid,
          KUBECONFIG: sa,
          POD_NAME: REPLICAS[r].pod,
          POD_NAMESPACE: NS,
          FAMFS_LEADER_ELECTION: 'true',
          FAMFS_LEASE_NAME: LEASE,
          FAMFS_LEASE_DURATION: '4s',
          FAMFS_LEASE_RENEW_DEADLINE: '3s',
          FAMFS_LEASE_RETRY_PERIOD: '500ms',
        },
      );
    controllerA = startController('a', sock);
    await until('the CSI socket', () => (fs.existsSync(sock) ? true : undefined), 30_000);
    await until('replica a to hold the Lease', () => (leaseHolder() === REPLICAS.a.pod ? true : undefined), 30_000);
    sockB = path.join(work, 'csi-b.sock');
    controllerB = startController('b', sockB);
    await until("replica b's CSI socket", () => (fs.existsSync(sockB) ? true : undefined), 30_000);

    // The sidecars with the chart's own arguments, acting as the chart's controller service account.
    // Capacity objects refreshed often.
    const argsOf = chartControllerArgs(c(), {
      chart: CHART,
      namespace: NS,
      sock,
      adjust: (a) => a.replace(/^--capacity-poll-interval=.*/, '--capacity-poll-interval=2s'),
    });
    const sidecarEnv = { POD_NAME: 'famfs-csi-controller-local', POD_NAMESPACE: NS, NAMESPACE: NS };
    procs.start('csi-provisioner', toolPath('csi-provisioner'), [...argsOf('csi-provisioner'), `--kubeconfig=${sa}`], sidecarEnv);
    procs.start('csi-attacher', toolPath('csi-attacher'), [...argsOf('csi-attacher'), `--kubeconfig=${sa}`], sidecarEnv);
  });

  after(async function () {
    this.timeout(60_000);
    await procs.killAll();
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
  let poolFreeBefore = 0;

  it('publishes the pool capacity as CSIStorageCapacity', async function () {
    this.timeout(120_000);
    capacityBefore = await until('CSIStorageCapacity for the pool', publishedCapacity, 90_000);
    assert.ok(capacityBefore > 512 * 1024 ** 2 && capacityBefore <= 1024 ** 3, `capacity ${capacityBefore}`);
    poolFreeBefore = await until('FamfsPool status from the master', () => poolStatus()?.freeBytes, 60_000);
    assert.equal(poolStatus()?.master?.node, REPLICAS.a.node);
    show(`kubectl get famfspool`, kubectl('get', 'famfspool'));
  });

  it('a PVC becomes Bound through CreateVolume, with the provisioning events on it', async function () {
    this.timeout(180_000);
    c().must(
      'kubectl',
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        // selected-node: what the scheduler writes for a WaitForFirstConsumer claim once its pod has a node.
        metadata: { name: 'data', namespace: 'default', annotations: { 'volume.kubernetes.io/selected-node': 'node-a' } },
        spec: { storageClassName: 'famfs-serial', accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '64Mi' } } },
      }),
    );
    const bound = await until(
      'PVC data Bound',
      () => {
        const pvc = json<{ status?: { phase?: string }; spec: { volumeName?: string } }>('-n', 'default', 'get', 'pvc', 'data');
        return pvc.status?.phase === 'Bound' ? pvc.spec.volumeName : undefined;
      },
      150_000,
    );
    assert.ok(bound);
    pvName = bound;
    const pv = json<{ spec: { csi: { driver: string; volumeHandle: string }; nodeAffinity?: unknown; capacity: { storage: string } } }>('get', 'pv', pvName);
    assert.equal(pv.spec.csi.driver, DRIVER);
    assert.match(pv.spec.csi.volumeHandle, /^vol-[0-9a-f]{40}$/);
    assert.match(JSON.stringify(pv.spec.nodeAffinity), new RegExp(`"key":"${TOPOLOGY_KEY}".*"values":\\["${POOL}"\\]`));
    // The driver's own event: where in the memory the volume was placed (emitted asynchronously).
    await until(
      'the VolumePlaced event',
      () => (kubectl('-n', 'default', 'get', 'events', '--field-selector', 'reason=VolumePlaced', '-o', 'name').trim() !== '' ? true : undefined),
      30_000,
    );
    const described = kubectl('-n', 'default', 'describe', 'pvc', 'data');
    process.stderr.write(`      [e2e] kubectl describe pvc data:\n${described.replace(/^/gm, '        ')}\n`);
    assert.match(described, /Status:\s+Bound/);
    assert.match(described, /ProvisioningSucceeded\s+.*Successfully provisioned volume/);
    assert.match(described, new RegExp(`VolumePlaced\\s+.*famfs volume ${pv.spec.csi.volumeHandle}: 67108864 bytes at offset 0x`));
    const after = await until(
      'capacity to drop by 64Mi',
      () => {
        const v = publishedCapacity();
        return v !== undefined && v <= capacityBefore - 64 * 1024 ** 2 ? v : undefined;
      },
      60_000,
    );
    process.stderr.write(`      [e2e] pool capacity ${capacityBefore} → ${after} bytes\n`);
    const free = await until(
      'FamfsPool free to drop by 64Mi',
      () => {
        const f = poolStatus()?.freeBytes;
        return f !== undefined && f <= poolFreeBefore - 64 * MiB ? f : undefined;
      },
      60_000,
    );
    const pool = kubectl('describe', 'famfspool', POOL);
    show(`kubectl describe famfspool ${POOL}   # after the PVC is bound`, pool);
    assert.match(pool, new RegExp(`Free Bytes:\\s+${free}`));
  });

  function va(name: string): { status?: { attached?: boolean; attachError?: { message?: string } } } | undefined {
    const r = c().run('kubectl', ['get', 'volumeattachment', name, '-o', 'json']);
    return r.status === 0 ? (JSON.parse(r.stdout) as { status?: { attached?: boolean; attachError?: { message?: string } } }) : undefined;
  }

  function createVa(name: string, node: string): void {
    c().must(
      'kubectl',
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'storage.k8s.io/v1',
        kind: 'VolumeAttachment',
        metadata: { name },
        spec: { attacher: DRIVER, nodeName: node, source: { persistentVolumeName: pvName } },
      }),
    );
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
    show('kubectl get volumeattachments', kubectl('get', 'volumeattachments'));
    show('kubectl describe volumeattachment famfs-va-b', kubectl('describe', 'volumeattachment', 'famfs-va-b'));
    kubectl('delete', 'volumeattachment', 'famfs-va-b', '--wait=false');
    await until('node-b detached', () => (va('famfs-va-b') === undefined ? true : undefined), 60_000);
  });

  it('deleting the PVC deletes the volume and frees the space', async function () {
    this.timeout(180_000);
    assert.ok(pvName);
    kubectl('-n', 'default', 'delete', 'pvc', 'data', '--wait=false');
    await until('the PV to be deleted', () => (c().run('kubectl', ['get', 'pv', pvName]).status !== 0 ? true : undefined), 120_000);
    const back = await until(
      'capacity to come back',
      () => {
        const v = publishedCapacity();
        return v !== undefined && v >= capacityBefore ? v : undefined;
      },
      60_000,
    );
    assert.equal(back, capacityBefore);
    await until('FamfsPool free to come back', () => ((poolStatus()?.freeBytes ?? 0) >= poolFreeBefore ? true : undefined), 60_000);
    const pool = kubectl('describe', 'famfspool', POOL);
    show(`kubectl describe famfspool ${POOL}   # after the PVC is deleted`, pool);
    assert.match(pool, new RegExp(`Free Bytes:\\s+${poolFreeBefore}`));
  });

  it('two controller replicas: the Lease and the famfs master role move together, the old leader never appends again', async function () {
    this.timeout(180_000);
    assert.ok(controllerA && controllerB);
    const a = new CsiClient(`unix://${path.join(work, 'csi.sock')}`, 10_000);
    const b = new CsiClient(`unix://${sockB}`, 10_000);
    const create = (cl: CsiClient, name: string) =>
      cl.call('Controller', 'CreateVolume', {
        name,
        capacity_range: { required_bytes: String(4 * MiB) },
        parameters: { sharing: 'serial' },
        volume_capabilities: [{ mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
      });
    const codeOf = async (p: Promise<unknown>): Promise<string> =>
      p.then(
        () => 'OK',
        (e: CsiCallError) => status[e.code] ?? String(e.code),
      );
    try {
      const before = famfsView();
      assert.equal(before.master, REPLICAS.a.uuid);
      // The follower refuses writes (UNAVAILABLE: not the famfs master) and appends nothing.
      assert.equal(await codeOf(create(b, 'from-follower')), 'UNAVAILABLE');
      assert.equal(famfsView().entriesUsed, before.entriesUsed);

      // The leader is paused (a long GC pause, a frozen VM): its renewals stop, b takes the Lease
      // and with it the famfs master role (a new fencing epoch in the shared memory).
      controllerA.child.kill('SIGSTOP');
      await until('b to hold the Lease', () => (leaseHolder() === REPLICAS.b.pod ? true : undefined), 60_000);
      const taken = await until(
        'b to be famfs master',
        () => {
          const v = famfsView();
          return v.master === REPLICAS.b.uuid && v.epoch > before.epoch ? v : undefined;
        },
        30_000,
      );
      process.stderr.write(
        `      [e2e] a paused: Lease → ${REPLICAS.b.pod}, famfs master ${REPLICAS.a.uuid} → ${REPLICAS.b.uuid}, fencing epoch ${before.epoch} → ${taken.epoch}\n`,
      );
      assert.equal(await codeOf(create(b, 'from-new-leader')), 'OK');
      const afterB = famfsView();
      assert.ok(afterB.entriesUsed > taken.entriesUsed, 'the new leader appends');

      // The old leader wakes up late and is asked to write at once, before its elector noticed
      // anything: the fencing epoch in the memory refuses it. Again after its elector ran.
      controllerA.child.kill('SIGCONT');
      const late = await codeOf(create(a, 'from-old-leader'));
      assert.equal(late, 'UNAVAILABLE', 'the woken old leader must not append');
      await sleep(2000);
      assert.equal(await codeOf(create(a, 'from-old-leader-2')), 'UNAVAILABLE');
      const afterA = famfsView();
      assert.equal(afterA.entriesUsed, afterB.entriesUsed, 'not one log entry from the old leader');
      assert.equal(afterA.epoch, taken.epoch);
      assert.ok(afterA.clean, 'fsck clean');
      assert.match(controllerA.log, /EFENCED|another master took over|famfs master role dropped|no longer the famfs master/);
      process.stderr.write(`      [e2e] old leader after waking: CreateVolume ${late}; log entries ${afterB.entriesUsed} → ${afterA.entriesUsed}\n`);

      const pool = await until(
        'FamfsPool to show b as master',
        () => {
          const st = poolStatus();
          return st?.master?.node === REPLICAS.b.node && st.master.fencingEpoch === taken.epoch ? st : undefined;
        },
        30_000,
      );
      assert.ok(pool);
      show(
        `kubectl -n ${NS} get lease ${LEASE}`,
        kubectl('-n', NS, 'get', 'lease', LEASE, '-o', 'custom-columns=HOLDER:.spec.holderIdentity,TRANSITIONS:.spec.leaseTransitions'),
      );
      show(`kubectl describe famfspool ${POOL}   # after the failover`, kubectl('describe', 'famfspool', POOL));

      // The new leader is killed outright: a (now a follower) takes everything back, epoch again higher.
      controllerB.expectedExit = true;
      controllerB.child.kill('SIGKILL');
      await until('a to hold the Lease again', () => (leaseHolder() === REPLICAS.a.pod ? true : undefined), 60_000);
      const back = await until(
        'a to be famfs master again',
        () => {
          const v = famfsView();
          return v.master === REPLICAS.a.uuid && v.epoch > taken.epoch ? v : undefined;
        },
        30_000,
      );
      assert.equal(await codeOf(create(a, 'from-a-again')), 'OK');
      process.stderr.write(
        `      [e2e] b killed: Lease → ${REPLICAS.a.pod}, fencing epoch ${taken.epoch} → ${back.epoch}, log entries ${afterA.entriesUsed} → ${famfsView().entriesUsed}\n`,
      );
    } finally {
      a.close();
      b.close();
    }
  });
});
