// VolumeSnapshots in a cluster (issue 14 item 3): etcd + kube-apiserver + kube-controller-manager, the chart installed by helm
// with controller.snapshotter.enabled, the VolumeSnapshot CRDs (from the external-snapshotter client
// module the csi-snapshotter build downloads), the real famfs-csi controller, the real csi-provisioner
// and the real csi-snapshotter as local processes with the chart's arguments, acting as the chart's
// service account (so its RBAC is proven sufficient). The snapshot-controller's part (a
// VolumeSnapshotContent for the VolumeSnapshot, then the VolumeSnapshot's status) is played by the
// test, exactly as that controller writes them. A claim's bytes are snapshotted and restored into a
// new claim, and the restored file holds the same bytes.
import { strict as assert } from 'assert';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { objectFileRelpath } from '../pkg/csi/names';
import { openDevice } from '../pkg/device';
import { FamfsFs, flushFile, readFileData, writeFileData, type FileNode } from '../pkg/famfs';
import { startClusterOrSkip } from './helpers/k8s-env';
import { chartControllerArgs, impersonatingKubeconfig, LocalProcs, registerNode } from './helpers/k8s-local';
import type { TestCluster } from './helpers/test-cluster';
import { repoRoot, toolPath } from './helpers/toolchain';

const CHART = path.join(repoRoot(), 'charts', 'famfs-csi');
const NS = 'famfs-system';
const DRIVER = 'famfs.csi.cxl.io';
const POOL = 'pool0';
const TOPOLOGY_KEY = 'famfs.csi.cxl.io/pool';
const CONTROLLER_SA = `system:serviceaccount:${NS}:famfs-csi-controller`;
const MiB = 1024 ** 2;

/** The VolumeSnapshot CRDs of the newest external-snapshotter client module in the Go module cache. */
function snapshotCrds(): string[] {
  const base = path.join(repoRoot(), '.cache', 'go', 'mod', 'github.com', 'kubernetes-csi', 'external-snapshotter', 'client');
  const versions = fs.existsSync(base) ? fs.readdirSync(base).filter((d) => /^v8@v8\.\d+\.\d+$/.test(d)) : [];
  const newest = versions
    .sort((a, b) => {
      const [x, y] = [a, b].map((v) => v.split('@v')[1].split('.').map(Number));
      return x[1] - y[1] || x[2] - y[2];
    })
    .pop();
  assert.ok(newest, `no external-snapshotter client module under ${base} (scripts/k8s-tools.sh sidecars downloads it)`);
  const dir = path.join(base, newest, 'config', 'crd');
  return ['volumesnapshotclasses', 'volumesnapshotcontents', 'volumesnapshots'].map((k) => path.join(dir, `snapshot.storage.k8s.io_${k}.yaml`));
}

describe('@slow kubernetes: VolumeSnapshot through the real csi-snapshotter, restored into a new claim', function () {
  let cluster: TestCluster | undefined;
  let work = '';
  let device = '';
  const procs = new LocalProcs();
  const until = procs.until.bind(procs);
  const data = crypto.randomBytes(3 * MiB + 123);

  const c = (): TestCluster => {
    assert.ok(cluster);
    return cluster;
  };
  const kubectl = (...args: string[]): string => c().must('kubectl', args);
  const apply = (obj: object): string => c().must('kubectl', ['apply', '-f', '-'], JSON.stringify(obj));
  const get = <T>(...args: string[]): T | undefined => {
    const r = c().run('kubectl', [...args, '-o', 'json']);
    return r.status === 0 ? (JSON.parse(r.stdout) as T) : undefined;
  };

  /** The famfs file of a volume handle, as a host replaying the log sees it. */
  function volumeFile(handle: string): { file: FileNode; close: () => void; dev: ReturnType<typeof openDevice> } {
    const dev = openDevice(device);
    const f = FamfsFs.open(dev, { readOnly: true }).lookup(objectFileRelpath(handle));
    assert.ok(f?.kind === 'file', `volume ${handle} has a famfs file`);
    return { file: f, dev, close: () => dev.close() };
  }

  async function boundHandle(pvc: string): Promise<string> {
    const pv = await until(
      `PVC ${pvc} Bound`,
      () => {
        const o = get<{ status?: { phase?: string }; spec: { volumeName?: string } }>('-n', 'default', 'get', 'pvc', pvc);
        return o?.status?.phase === 'Bound' ? o.spec.volumeName : undefined;
      },
      150_000,
    );
    const o = get<{ spec: { csi: { volumeHandle: string } } }>('get', 'pv', pv);
    assert.ok(o);
    return o.spec.csi.volumeHandle;
  }

  before(async function () {
    // kube-controller-manager: its PV controller hands claims to the provisioner (storage-provisioner annotation).
    cluster = startClusterOrSkip(
      this,
      ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl', 'helm', 'csi-provisioner', 'csi-snapshotter'],
      { controllerManager: true },
      180_000,
    );
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-k8s-snap-'));
    device = path.join('/dev/shm', `famfs-k8s-snap-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
    for (const crd of snapshotCrds()) kubectl('apply', '-f', crd);
    await until('the VolumeSnapshot CRDs to be served', () => (c().run('kubectl', ['get', 'volumesnapshotclasses']).status === 0 ? true : undefined), 60_000);

    const values = ['controller.snapshotter.enabled=true', 'controller.leaderElection.enabled=false', 'controller.replicas=1', `pool.name=${POOL}`];
    c().must('helm', ['install', 'famfs-csi', CHART, '--namespace', NS, '--create-namespace', ...values.flatMap((v) => ['--set', v])]);
    registerNode(c(), 'node-a', { driver: DRIVER, topologyKey: TOPOLOGY_KEY, pool: POOL });

    const sa = impersonatingKubeconfig(c(), path.join(work, 'sa.kubeconfig'), CONTROLLER_SA);
    const sock = path.join(work, 'csi.sock');
    procs.start(
      'famfs-csi',
      process.execPath,
      [
        path.join(repoRoot(), 'dist', 'cmd', 'famfs-csi.js'),
        '--mode',
        'controller',
        '--endpoint',
        `unix://${sock}`,
        '--device',
        device,
        '--device-size',
        '512Mi',
        '--mkfs',
        '--node-id',
        'node-a',
        '--driver-name',
        DRIVER,
        '--pool',
        POOL,
        '--state-dir',
        path.join(work, 'state'),
      ],
      {
        FAMFS_SYSTEM_UUID: '5a5a5a5a-0000-4000-8000-00000000000a',
        KUBECONFIG: sa,
        POD_NAME: 'famfs-csi-controller-0',
        POD_NAMESPACE: NS,
        FAMFS_LEADER_ELECTION: 'false',
      },
    );
    await until('the CSI socket', () => (fs.existsSync(sock) ? true : undefined), 60_000);

    const argsOf = chartControllerArgs(c(), { chart: CHART, namespace: NS, values, sock });
    const env = { POD_NAME: 'famfs-csi-controller-local', POD_NAMESPACE: NS, NAMESPACE: NS };
    procs.start('csi-provisioner', toolPath('csi-provisioner'), [...argsOf('csi-provisioner'), `--kubeconfig=${sa}`], env);
    procs.start('csi-snapshotter', toolPath('csi-snapshotter'), [...argsOf('csi-snapshotter'), `--kubeconfig=${sa}`], env);
  });

  after(async function () {
    this.timeout(60_000);
    await procs.killAll();
    cluster?.stop();
    if (device) fs.rmSync(device, { force: true });
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('a VolumeSnapshot of a claim, restored into a new claim, has the same bytes', async function () {
    this.timeout(300_000);
    // The claim, written as its pod would (through the volume's file in the shared memory).
    apply({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'src', namespace: 'default', annotations: { 'volume.kubernetes.io/selected-node': 'node-a' } },
      spec: { storageClassName: 'famfs-serial', accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '8Mi' } } },
    });
    const srcHandle = await boundHandle('src');
    const src = volumeFile(srcHandle);
    writeFileData(src.dev, src.file, 0, data);
    flushFile(src.dev, src.file);
    src.close();

    // The VolumeSnapshot, and the content the snapshot-controller would make for it.
    apply({
      apiVersion: 'snapshot.storage.k8s.io/v1',
      kind: 'VolumeSnapshot',
      metadata: { name: 'snap', namespace: 'default' },
      spec: { volumeSnapshotClassName: 'famfs-snapshots', source: { persistentVolumeClaimName: 'src' } },
    });
    const snap = get<{ metadata: { uid: string } }>('-n', 'default', 'get', 'volumesnapshot', 'snap');
    assert.ok(snap);
    const contentName = `snapcontent-${snap.metadata.uid}`;
    apply({
      apiVersion: 'snapshot.storage.k8s.io/v1',
      kind: 'VolumeSnapshotContent',
      metadata: { name: contentName },
      spec: {
        deletionPolicy: 'Delete',
        driver: DRIVER,
        volumeSnapshotClassName: 'famfs-snapshots',
        source: { volumeHandle: srcHandle },
        volumeSnapshotRef: { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshot', name: 'snap', namespace: 'default', uid: snap.metadata.uid },
      },
    });
    // The real csi-snapshotter calls CreateSnapshot and records the answer on the content.
    const status = await until(
      'the csi-snapshotter to make the snapshot',
      () => {
        const o = get<{ status?: { snapshotHandle?: string; readyToUse?: boolean; restoreSize?: number; creationTime?: number } }>(
          'get',
          'volumesnapshotcontent',
          contentName,
        );
        return o?.status?.readyToUse === true ? o.status : undefined;
      },
      120_000,
    );
    assert.match(status.snapshotHandle ?? '', /^snap-[0-9a-f]{40}$/);
    assert.equal(status.restoreSize, 8 * MiB);
    // The snapshot-controller's second part: the VolumeSnapshot is bound and ready.
    kubectl(
      '-n',
      'default',
      'patch',
      'volumesnapshot',
      'snap',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status: { boundVolumeSnapshotContentName: contentName, readyToUse: true, restoreSize: String(status.restoreSize) } }),
    );

    // Restore: a new claim from the snapshot, made by the real csi-provisioner.
    apply({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'restored', namespace: 'default', annotations: { 'volume.kubernetes.io/selected-node': 'node-a' } },
      spec: {
        storageClassName: 'famfs-serial',
        accessModes: ['ReadWriteOnce'],
        resources: { requests: { storage: '8Mi' } },
        dataSource: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: 'snap' },
      },
    });
    const restoredHandle = await boundHandle('restored');
    assert.notEqual(restoredHandle, srcHandle);
    const restored = volumeFile(restoredHandle);
    try {
      assert.ok(readFileData(restored.dev, restored.file, 0, data.length).equals(data), 'the restored claim holds the snapshotted bytes');
      const tail = readFileData(restored.dev, restored.file, data.length, 4096);
      assert.ok(
        tail.every((b) => b === 0),
        'and zeroes after them',
      );
    } finally {
      restored.close();
    }
    process.stderr.write(`      [snap] ${srcHandle} → snapshot ${status.snapshotHandle} → ${restoredHandle}: ${data.length} bytes equal\n`);
  });
});
