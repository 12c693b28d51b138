// A memory error seen by the CSI controller becomes a MemoryError Warning Event on the PV, the PVC
// bound to it and the FamfsPool, against a real kube-apiserver; `kubectl describe pvc` shows it. The
// controller is the real driver (startDriver) on an emulated device whose backing file is cut, so the
// failure is a real SIGBUS in its own mapping, not a simulated flag.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as os from 'os';
import { CoreV1Api, KubeConfig, type CoreV1Event } from '@kubernetes/client-node';
import pino from 'pino';
import { CsiClient } from '../pkg/csi/client';
import { startDriver, type RunningDriver } from '../pkg/csi/driver';
import { EventRecorder } from '../pkg/k8s/events';
import { MemoryErrorReporter } from '../pkg/k8s/memory-errors';
import { createMetrics } from '../pkg/k8s/metrics';
import { TestCluster } from './helpers/test-cluster';
import { startClusterOrSkip } from './helpers/k8s-env';

const DRIVER = 'famfs.csi.cxl.io';
const POOL = 'memerr-pool';
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('@slow k8s: memory errors become MemoryError Events on the PV, its PVC and the FamfsPool', function () {
  let cluster: TestCluster | undefined;
  let driver: RunningDriver | undefined;
  let client: CsiClient | undefined;
  let reporter: MemoryErrorReporter | undefined;
  let dir = '';
  let device = '';

  before(function () {
    cluster = startClusterOrSkip(this, ['etcd', 'kube-apiserver', 'kubectl']);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-memerr-k8s-'));
    device = `/dev/shm/famfs-memerr-k8s-${process.pid}.img`;
  });

  after(async function () {
    this.timeout(60_000);
    client?.close();
    await reporter?.stop();
    await driver?.stop().catch(() => undefined);
    cluster?.stop();
    if (device) fs.rmSync(device, { force: true });
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('controller: writes on the failed device are UNAVAILABLE and raise one MemoryError per object', async function () {
    this.timeout(120_000);
    const c = cluster;
    assert.ok(c);
    const kc = new KubeConfig();
    kc.loadFromFile(c.kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const metrics = createMetrics();
    const events = new EventRecorder({ kubeConfig: kc, component: 'famfs-csi-controller', instance: 'ctl-test' });
    reporter = new MemoryErrorReporter({ kubeConfig: kc, events, driverName: DRIVER, pool: POOL, role: 'controller', nodeId: 'node-a', metrics });
    const r = reporter;

    const endpoint = `unix://${path.join(dir, 'csi.sock')}`;
    driver = await startDriver({
      mode: 'controller',
      endpoint,
      devicePath: device,
      deviceSize: 256 * MiB,
      mkfs: true,
      nodeId: 'node-a',
      driverName: DRIVER,
      stateDir: path.join(dir, 'state'),
      pool: POOL,
      onMemoryError: (e) => r.report(e),
      log: pino({ level: 'silent' }),
    });
    client = new CsiClient(endpoint, 10_000);
    const cap = [{ mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }];
    const created = await client.call<{ volume: { volume_id: string } }>('Controller', 'CreateVolume', {
      name: 'pvc-memerr',
      capacity_range: { required_bytes: String(8 * MiB) },
      volume_capabilities: cap,
    });
    const volumeId = created.volume.volume_id;

    // The PV and PVC Kubernetes would hold for it (no controller-manager: the binding is written by hand).
    const pvc = await core.createNamespacedPersistentVolumeClaim({
      namespace: 'default',
      body: {
        metadata: { name: 'memerr' },
        spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'famfs-serial', volumeName: 'pvc-memerr', resources: { requests: { storage: '8Mi' } } },
      },
    });
    await core.createPersistentVolume({
      body: {
        metadata: { name: 'pvc-memerr' },
        spec: {
          capacity: { storage: '8Mi' },
          accessModes: ['ReadWriteOnce'],
          storageClassName: 'famfs-serial',
          persistentVolumeReclaimPolicy: 'Delete',
          csi: { driver: DRIVER, volumeHandle: volumeId },
          claimRef: { namespace: 'default', name: 'memerr', uid: pvc.metadata?.uid },
        },
      },
    });

    // The memory goes away under the controller: its next touch of the log faults.
    fs.truncateSync(device, 0);
    const code = await client
      .call('Controller', 'CreateVolume', { name: 'after', capacity_range: { required_bytes: String(2 * MiB) }, volume_capabilities: cap })
      .then(
        () => 'OK',
        (e: { code: number }) => e.code,
      );
    assert.equal(code, 14, 'UNAVAILABLE');
    assert.ok(driver.deviceFailure());
    // Retries (as the provisioner does) must not add events.
    for (let i = 0; i < 3; i++) await client.call('Controller', 'DeleteVolume', { volume_id: volumeId }).catch(() => undefined);
    await r.flush();
    await sleep(500); // emit() is fire and forget

    const memoryEvents = async (): Promise<CoreV1Event[]> => (await core.listEventForAllNamespaces({ fieldSelector: 'reason=MemoryError' })).items;
    const got = await memoryEvents();
    const on = (kind: string, name: string) => got.filter((e) => e.involvedObject.kind === kind && e.involvedObject.name === name);
    assert.equal(on('PersistentVolume', 'pvc-memerr').length, 1, JSON.stringify(got.map((e) => e.involvedObject)));
    assert.equal(on('PersistentVolumeClaim', 'memerr').length, 1);
    assert.equal(on('FamfsPool', POOL).length, 1);
    for (const e of got) {
      assert.equal(e.type, 'Warning');
      assert.equal(e.count, 1, 'reported once, not per retry');
      assert.match(String(e.message), /memory error|failed/);
    }
    const described = c.must('kubectl', ['-n', 'default', 'describe', 'pvc', 'memerr']);
    process.stderr.write(`      [k8s] kubectl describe pvc memerr (events):\n${described.slice(described.indexOf('Events:')).replace(/^/gm, '        ')}\n`);
    assert.match(described, /Warning\s+MemoryError/);
    const text = await metrics.registry.metrics();
    const line = text.split('\n').find((l) => l.startsWith('famfs_memory_errors_total{') && l.includes('source="controller"'));
    assert.match(String(line), / 1$/, 'one memory error counted');
  });
});
