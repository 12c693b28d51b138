// The famfs master role follows the Lease (pkg/k8s/leadership.ts): two "hosts" — two mappings of the
// same emulated device, two host UUIDs, two real ControllerStores — campaign on a Lease in a real
// kube-apiserver. At no sampled instant are both writers; each hand-over raises the famfs fencing
// epoch in the shared memory; a host whose takeover fails hands the Lease on instead of sitting on it.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { KubeConfig } from '@kubernetes/client-node';
import { openDevice } from '../pkg/device';
import { FamfsFs } from '../pkg/famfs/fs';
import { ControllerStore } from '../pkg/csi/store';
import type { LeaderElectionSettings } from '../pkg/k8s/config';
import { MasterElection, type MasterRole } from '../pkg/k8s/leadership';
import { EventRecorder } from '../pkg/k8s/events';
import { FamfsPoolClient, type FamfsPoolStatus } from '../pkg/k8s/famfspool';
import { createMetrics } from '../pkg/k8s/metrics';
import { PoolStatusLoop } from '../pkg/k8s/pool-status-loop';
import { startControllerIntegration } from '../pkg/k8s/driver-integration';
import { TestCluster } from './helpers/test-cluster';
import { repoRoot } from './helpers/toolchain';
import { startClusterOrSkip } from './helpers/k8s-env';

const HOST_A = '0a0a0a0a-0000-4000-8000-00000000000a';
const HOST_B = '0b0b0b0b-0000-4000-8000-00000000000b';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('@slow kubernetes: famfs master role follows the Lease', function () {
  let cluster: TestCluster | undefined;
  let kc: KubeConfig;
  let devicePath = '';
  const elections: MasterElection[] = [];

  before(function () {
    cluster = startClusterOrSkip(this, ['etcd', 'kube-apiserver', 'kubectl']);
    kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    cluster.must('kubectl', ['create', 'namespace', 'famfs-system']);
    devicePath = path.join('/dev/shm', `famfs-master-${process.pid}-${Date.now()}`);
  });

  after(async function () {
    this.timeout(60_000);
    await Promise.all(elections.map((e) => e.stop()));
    cluster?.stop();
    if (devicePath) fs.rmSync(devicePath, { force: true });
  });

  function settings(identity: string, leaseName: string): LeaderElectionSettings {
    return { enabled: true, namespace: 'famfs-system', leaseName, identity, leaseDurationMs: 4000, renewDeadlineMs: 3000, retryPeriodMs: 300 };
  }

  function election(role: MasterRole, identity: string, hostUuid: string, leaseName: string): MasterElection {
    const e = new MasterElection({ kubeConfig: kc, settings: settings(identity, leaseName), role, hostUuid, pool: 'pool0', metrics: createMetrics() });
    elections.push(e);
    return e;
  }

  it('hands the writer role over with the Lease: never two writers, epochs rise in shared memory', async function () {
    this.timeout(90_000);
    const devA = openDevice(devicePath, { create: { size: 256 * 1024 * 1024 } });
    const fsA = FamfsFs.mkfs(devA, { systemUuid: HOST_A, devicePath });
    const devB = openDevice(devicePath);
    const fsB = FamfsFs.open(devB, { hostUuid: HOST_B, hostName: 'host-b' });
    const a = new ControllerStore(fsA);
    const b = new ControllerStore(fsB);

    // Sample both writers' view continuously: they must never both hold the role.
    let overlap = 0;
    let samples = 0;
    const sampler = setInterval(() => {
      samples++;
      if (a.isMaster && b.isMaster) overlap++;
    }, 5);

    const ea = election(a, 'ctl-a', HOST_A, 'famfs-master-pool0');
    ea.start();
    for (let i = 0; i < 100 && !a.isMaster; i++) await sleep(100);
    assert.ok(a.isMaster, 'A leads');
    const epochA = a.fencingEpoch ?? -1;
    assert.equal(ea.epoch, epochA);

    const eb = election(b, 'ctl-b', HOST_B, 'famfs-master-pool0');
    eb.start();
    await sleep(1500);
    assert.ok(!b.isMaster, 'B waits while A renews');

    await ea.stop(); // A releases: B takes the Lease and the famfs master role
    assert.ok(!a.isMaster);
    for (let i = 0; i < 100 && !b.isMaster; i++) await sleep(100);
    assert.ok(b.isMaster, 'B took over');
    const epochB = b.fencingEpoch ?? -1;
    assert.ok(epochB > epochA, `epoch rose in shared memory: ${epochA} → ${epochB}`);

    // A comes back as a candidate: it must stay a follower while B renews.
    const ea2 = election(a, 'ctl-a', HOST_A, 'famfs-master-pool0');
    ea2.start();
    await sleep(1500);
    assert.ok(!a.isMaster);
    await eb.stop();
    for (let i = 0; i < 100 && !a.isMaster; i++) await sleep(100);
    assert.ok(a.isMaster, 'A took the role back');
    assert.ok((a.fencingEpoch ?? -1) > epochB);
    await ea2.stop();
    clearInterval(sampler);
    assert.ok(samples > 100, `sampled ${samples} times`);
    assert.equal(overlap, 0, 'two writers at once');
  });

  it('a host whose famfs takeover fails resigns the Lease so another host takes over', async function () {
    this.timeout(60_000);
    const calls: string[] = [];
    const broken: MasterRole = {
      takeMasterRole: () => {
        calls.push('broken:takeover');
        throw new Error('device not attached on this host');
      },
      dropMasterRole: () => calls.push('broken:lost'),
    };
    let healthyLeading = false;
    const healthy: MasterRole = {
      takeMasterRole: () => {
        calls.push('healthy:takeover');
        healthyLeading = true;
        return 7;
      },
      dropMasterRole: () => {
        healthyLeading = false;
      },
    };
    const eBroken = election(broken, 'ctl-broken', HOST_A, 'famfs-master-resign');
    eBroken.start();
    for (let i = 0; i < 100 && !calls.includes('broken:takeover'); i++) await sleep(100);
    const eHealthy = election(healthy, 'ctl-healthy', HOST_B, 'famfs-master-resign');
    eHealthy.start();
    for (let i = 0; i < 150 && !healthyLeading; i++) await sleep(100);
    assert.ok(healthyLeading, `healthy host took over; calls: ${calls.join(',')}`);
    assert.equal(eHealthy.epoch, 7);
    assert.equal(eBroken.epoch, undefined);
    const lease = JSON.parse(cluster?.must('kubectl', ['-n', 'famfs-system', 'get', 'lease', 'famfs-master-resign', '-o', 'json']) ?? '{}') as {
      spec: { holderIdentity?: string };
    };
    assert.equal(lease.spec.holderIdentity, 'ctl-healthy');
  });
  it("kubectl shows the pool as famfs sees it: capacity change, log use, every host's replay lag", async function () {
    this.timeout(60_000);
    const cl = cluster;
    assert.ok(cl);
    cl.must('kubectl', ['apply', '-f', path.join(repoRoot(), 'charts', 'famfs-csi', 'crds', 'famfspools.famfs.csi.cxl.io.yaml')]);
    cl.must('kubectl', ['wait', '--for=condition=Established', 'crd/famfspools.famfs.csi.cxl.io', '--timeout=20s']);
    const dev = path.join('/dev/shm', `famfs-pool-${process.pid}-${Date.now()}`);
    try {
      const A = FamfsFs.mkfs(openDevice(dev, { create: { size: 256 * 1024 * 1024 } }), { systemUuid: HOST_A, devicePath: dev });
      const B = FamfsFs.open(openDevice(dev), { hostUuid: HOST_B, hostName: 'host-b' });
      A.enableExtensions();
      A.ackReplay(HOST_A, 'host-a');
      B.catchUp();
      B.ackReplay(HOST_B, 'host-b');
      const metrics = createMetrics();
      const loop = new PoolStatusLoop({
        kubeConfig: kc,
        pool: 'shm-pool',
        device: dev,
        fs: A,
        metrics,
        master: () => ({ node: 'host-a', pod: 'ctl-a', leaseName: 'famfs-master-pool0', fencingEpoch: 3 }),
      });
      const row = (): string => cl.must('kubectl', ['get', 'famfspool', 'shm-pool', '--no-headers']).trim();

      assert.equal(await loop.tick(), true);
      const before = row();
      assert.match(before, /^shm-pool\s+\S+\s+256Mi\s+\S+\s+\S+\s+\d+\s+\d+\s+host-a\s+2\/2/);

      A.creat('dataset', 64 * 1024 * 1024); // a volume is placed: free shrinks, the log grows, host-b falls behind
      await loop.tick();
      const after = row();
      process.stderr.write(`      [pool] before: ${before}\n      [pool] after:  ${after}\n`);
      const free = (r: string): string => r.split(/\s+/)[3] ?? '';
      assert.notEqual(free(after), free(before), 'FREE column changed');
      const pool = JSON.parse(cl.must('kubectl', ['get', 'famfspool', 'shm-pool', '-o', 'json'])) as {
        status: { freeBytes: number; log: { entriesUsed: number }; nodes: { name: string; lagEntries: number; replayedEntries: number }[] };
      };
      assert.equal(pool.status.log.entriesUsed, 1);
      assert.equal(pool.status.nodes.find((n) => n.name === 'host-b')?.lagEntries, 1);
      const described = cl.must('kubectl', ['describe', 'famfspool', 'shm-pool']);
      assert.match(described, /Name:\s+host-b/);

      B.catchUp(); // host-b replays and acknowledges: its lag goes back to 0
      B.ackReplay(HOST_B, 'host-b');
      await loop.tick();
      const caught = JSON.parse(cl.must('kubectl', ['get', 'famfspool', 'shm-pool', '-o', 'json'])) as {
        status: { freeBytes: number; nodes: { name: string; lagEntries: number }[] };
      };
      assert.equal(caught.status.nodes.find((n) => n.name === 'host-b')?.lagEntries, 0);
      // The metric and the FamfsPool status come from the same tick: the same free figure. (No
      // component label: the series join the driver's registry, and Prometheus takes the component
      // from the chart's metrics Service labels.)
      assert.ok(caught.status.freeBytes > 0 && caught.status.freeBytes < 256 * 1024 * 1024, `freeBytes ${caught.status.freeBytes}`);
      assert.match(await metrics.registry.metrics(), new RegExp(`^famfs_pool_free_bytes\\{pool="shm-pool"\\} ${caught.status.freeBytes}$`, 'm'));
      assert.equal(
        await new PoolStatusLoop({ kubeConfig: kc, pool: 'shm-pool', device: dev, fs: A, master: () => undefined }).tick(),
        false,
        'a non-master publishes nothing',
      );
    } finally {
      fs.rmSync(dev, { force: true });
    }
  });
  it('a host the master timed out shows in the FamfsPool status and as a HostTimedOut Event, with the memory reused after it', async function () {
    this.timeout(60_000);
    const cl = cluster;
    assert.ok(cl);
    cl.must('kubectl', ['apply', '-f', path.join(repoRoot(), 'charts', 'famfs-csi', 'crds', 'famfspools.famfs.csi.cxl.io.yaml')]);
    cl.must('kubectl', ['wait', '--for=condition=Established', 'crd/famfspools.famfs.csi.cxl.io', '--timeout=20s']);
    const dev = path.join('/dev/shm', `famfs-evict-${process.pid}-${Date.now()}`);
    try {
      // A 1 s liveness window: host-b is timed out after the master watched it silent for 1 s.
      const A = FamfsFs.mkfs(openDevice(dev, { create: { size: 256 * 1024 * 1024 } }), { systemUuid: HOST_A, devicePath: dev, hostLiveMs: 1000 });
      const B = FamfsFs.open(openDevice(dev), { hostUuid: HOST_B, hostName: 'host-b' });
      A.creat('vol-gone', 8 * 1024 * 1024);
      B.catchUp();
      B.ackReplay(HOST_B, 'host-b');
      const events = new EventRecorder({ kubeConfig: kc, component: 'famfs-csi-controller', instance: 'ctl-a' });
      const loop = new PoolStatusLoop({
        kubeConfig: kc,
        pool: 'evict-pool',
        device: dev,
        fs: A,
        events,
        master: () => ({ node: 'host-a', pod: 'ctl-a', leaseName: 'famfs-master-evict', fencingEpoch: 1 }),
      });
      await loop.tick(); // the master watches host-b's slot from here on
      A.rm('vol-gone');
      await sleep(1200); // host-b stays silent (stalled) past the window
      A.creat('vol-new', 8 * 1024 * 1024); // the horizon leaves host-b out: vol-gone's memory is reusable
      await loop.tick();
      const pool = JSON.parse(cl.must('kubectl', ['get', 'famfspool', 'evict-pool', '-o', 'json'])) as {
        status: {
          evictions?: { host: string; hostUuid: string; at: string; silentSeconds: number; reusable: string[]; reusableBytes: number }[];
          nodes: { name: string; healthy: boolean }[];
        };
      };
      const ev = pool.status.evictions ?? [];
      assert.equal(ev.length, 1, JSON.stringify(pool.status));
      assert.equal(ev[0].host, 'host-b');
      assert.equal(ev[0].hostUuid, HOST_B);
      assert.ok(Math.abs(Date.parse(ev[0].at) - Date.now()) < 30_000);
      assert.deepEqual(ev[0].reusable, ['vol-gone']);
      assert.equal(ev[0].reusableBytes, 8 * 1024 * 1024);
      assert.equal(pool.status.nodes.find((n) => n.name === 'host-b')?.healthy, false);
      const messages = cl
        .must('kubectl', [
          'get',
          'events',
          '-A',
          '--field-selector',
          'involvedObject.name=evict-pool,reason=HostTimedOut',
          '-o',
          'jsonpath={range .items[*]}{.message}{"\\n"}{end}',
        ])
        .split('\n')
        .filter(Boolean);
      assert.equal(messages.length, 1, messages.join('\n'));
      assert.match(messages[0], /host host-b .* timed out at .*vol-gone/);
      await loop.tick();
      assert.equal(
        cl.must('kubectl', ['get', 'events', '-A', '--field-selector', 'involvedObject.name=evict-pool,reason=HostTimedOut', '--no-headers']).trim().split('\n')
          .length,
        1,
        'one Event per timeout',
      );
    } finally {
      fs.rmSync(dev, { force: true });
    }
  });
  it('one call wires a real controller state: Lease → famfs master → FamfsPool status', async function () {
    this.timeout(60_000);
    const cl = cluster;
    assert.ok(cl);
    cl.must('kubectl', ['apply', '-f', path.join(repoRoot(), 'charts', 'famfs-csi', 'crds', 'famfspools.famfs.csi.cxl.io.yaml')]);
    const dev = path.join('/dev/shm', `famfs-integ-${process.pid}-${Date.now()}`);
    try {
      const fsA = FamfsFs.mkfs(openDevice(dev, { create: { size: 256 * 1024 * 1024 } }), { systemUuid: HOST_A, devicePath: dev });
      const volumes = new ControllerStore(fsA);
      const k8s = startControllerIntegration({
        store: volumes,
        pool: 'integ',
        device: dev,
        nodeId: 'host-a',
        hostUuid: HOST_A,
        kubeConfig: kc,
        statusIntervalMs: 200,
        leaderElection: settings('ctl-integ', 'famfs-csi-master-integ'),
      });
      try {
        for (let i = 0; i < 100 && !volumes.isMaster; i++) await sleep(100);
        assert.ok(volumes.isMaster, 'the Lease made this state the famfs master');
        // Read through the API client, not kubectl: a spawnSync'd kubectl blocks this process' event
        // loop for seconds on a loaded machine, past the 3 s renew deadline, and the elector then
        // rightly gives the master role up before the comparison below.
        const reader = new FamfsPoolClient({ kubeConfig: kc, pool: 'integ', fieldManager: 'test-reader' });
        let status: FamfsPoolStatus | undefined;
        for (let i = 0; i < 100; i++) {
          status = (await reader.get().catch(() => undefined))?.status;
          if (status?.master?.fencingEpoch !== undefined) break;
          await sleep(100);
        }
        assert.equal(status?.master?.node, 'host-a');
        assert.equal(status?.master?.fencingEpoch, volumes.fencingEpoch);
        assert.equal(status?.master?.leaseName, 'famfs-csi-master-integ');
        assert.equal(status?.size, '256Mi');
      } finally {
        await k8s.stop();
      }
      assert.ok(!volumes.isMaster, 'stopping released the master role');
    } finally {
      fs.rmSync(dev, { force: true });
    }
  });
});
