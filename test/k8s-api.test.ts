// pkg/k8s against a real kube-apiserver: Lease leader election (hand-over, no two leaders, step-down
// when renewal fails, fencing when the process was paused), Events on PVCs/PVs as kubectl describe
// shows them, and the FamfsPool status written by a controller and several nodes at once.
import { strict as assert } from 'assert';
import * as net from 'net';
import * as path from 'path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { EventReason, EventRecorder, pvRef, pvcRef } from '../pkg/k8s/events';
import { FamfsPoolClient, formatBytes } from '../pkg/k8s/famfspool';
import { LeaderElector, parseDuration, type LeaderElectorOptions } from '../pkg/k8s/lease';
import { leaderElectionFromEnv } from '../pkg/k8s/config';
import { createMetrics } from '../pkg/k8s/metrics';
import { PoolReporter } from '../pkg/k8s/pool-reporter';
import { TestCluster } from './helpers/test-cluster';
import { repoRoot } from './helpers/toolchain';
import { startClusterOrSkip } from './helpers/k8s-env';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** A TCP relay to the API server that the test can cut, to make one client lose the API. */
class CuttableProxy {
  private readonly sockets = new Set<net.Socket>();
  private cut = false;
  private readonly server: net.Server;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = net.createServer((client) => {
      if (this.cut) {
        client.destroy();
        return;
      }
      const upstream = net.connect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => s.destroy());
      }
      client.pipe(upstream).pipe(client);
    });
  }

  listen(): Promise<void> {
    return new Promise((r) =>
      this.server.listen(0, '127.0.0.1', () => {
        this.port = (this.server.address() as net.AddressInfo).port;
        r();
      }),
    );
  }

  sever(): void {
    this.cut = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.cut = false;
  }

  close(): Promise<void> {
    this.sever();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** Records leadership intervals of several candidates and fails on any overlap. */
class LeadershipLog {
  readonly events: { who: string; what: 'start' | 'stop'; epoch: number; at: number }[] = [];
  private current: string | undefined;
  overlaps = 0;

  callbacks(who: string): Pick<LeaderElectorOptions, 'onStartedLeading' | 'onStoppedLeading'> {
    return {
      onStartedLeading: ({ epoch }) => {
        if (this.current !== undefined) this.overlaps++;
        this.current = who;
        this.events.push({ who, what: 'start', epoch, at: Date.now() });
      },
      onStoppedLeading: ({ epoch }) => {
        if (this.current === who) this.current = undefined;
        this.events.push({ who, what: 'stop', epoch, at: Date.now() });
      },
    };
  }

  leader(): string | undefined {
    return this.current;
  }
}

describe('@slow kubernetes: pkg/k8s against a real kube-apiserver', function () {
  let cluster: TestCluster | undefined;
  let kc: KubeConfig;
  const ns = 'famfs-test';

  before(async function () {
    cluster = startClusterOrSkip(this, ['etcd', 'kube-apiserver', 'kubectl']);
    kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    cluster.must('kubectl', ['create', 'namespace', ns]);
  });

  after(function () {
    this.timeout(60_000);
    cluster?.stop();
  });

  function c(): TestCluster {
    assert.ok(cluster);
    return cluster;
  }

  /** A KubeConfig for the same admin user whose traffic goes through `proxy`. */
  function viaProxy(proxy: CuttableProxy): KubeConfig {
    const k = new KubeConfig();
    k.loadFromFile(c().kubeconfig);
    const cl = k.getCurrentCluster();
    assert.ok(cl);
    const clusters = k.clusters.map((x) => (x.name === cl.name ? { ...x, server: `https://127.0.0.1:${proxy.port}` } : x));
    k.loadFromOptions({ clusters, users: k.users, contexts: k.contexts, currentContext: k.currentContext });
    return k;
  }

  function apiTarget(): { host: string; port: number } {
    const u = new URL(c().apiUrl);
    return { host: u.hostname, port: Number(u.port) };
  }

  describe('Lease leader election', () => {
    // Short, but with room for a loaded 2-core CI machine: a leader must renew within renewDeadline.
    const fast = { leaseDurationMs: 5000, renewDeadlineMs: 3500, retryPeriodMs: 400 };
    // Every elector a test makes is stopped afterwards, even when the test fails half-way.
    const live = new Set<LeaderElector>();
    function elector(o: LeaderElectorOptions): LeaderElector {
      const e = new LeaderElector(o);
      live.add(e);
      return e;
    }
    afterEach(async function () {
      this.timeout(30_000);
      await Promise.all([...live].map((e) => e.stop()));
      live.clear();
    });

    it('parses durations like the chart values', () => {
      assert.equal(parseDuration('15s'), 15_000);
      assert.equal(parseDuration('1m30s'), 90_000);
      assert.equal(parseDuration('250ms'), 250);
      assert.throws(() => parseDuration('15'), { code: 'INVALID_CONFIG' });
      assert.throws(() => new LeaderElector({ kubeConfig: kc, namespace: ns, name: 'x', identity: 'a', leaseDurationMs: 2000, renewDeadlineMs: 2000 }), {
        code: 'INVALID_CONFIG',
      });
    });

    it('one candidate acquires a new Lease (epoch 0), renews it, and releases it on stop', async function () {
      this.timeout(30_000);
      const log = new LeadershipLog();
      const a = elector({ kubeConfig: kc, namespace: ns, name: 'solo', identity: 'pod-a', ...fast, ...log.callbacks('a') });
      a.start();
      await waitFor('a to lead', () => log.leader() === 'a', 10_000);
      assert.equal(a.currentEpoch(), 0);
      const lease1 = JSON.parse(c().must('kubectl', ['-n', ns, 'get', 'lease', 'solo', '-o', 'json'])) as {
        spec: { holderIdentity: string; renewTime: string; leaseDurationSeconds: number };
      };
      assert.equal(lease1.spec.holderIdentity, 'pod-a');
      assert.equal(lease1.spec.leaseDurationSeconds, 5);
      await sleep(1000);
      const lease2 = JSON.parse(c().must('kubectl', ['-n', ns, 'get', 'lease', 'solo', '-o', 'json'])) as { spec: { renewTime: string } };
      assert.ok(Date.parse(lease2.spec.renewTime) > Date.parse(lease1.spec.renewTime), 'renewTime advances');
      await a.stop();
      assert.equal(a.holdsLease(), false);
      assert.deepEqual(
        log.events.map((e) => e.what),
        ['start', 'stop'],
      );
      const released = JSON.parse(c().must('kubectl', ['-n', ns, 'get', 'lease', 'solo', '-o', 'json'])) as { spec: { holderIdentity?: string } };
      assert.equal(released.spec.holderIdentity, undefined);
    });

    it('three candidates: exactly one leads; hand-overs raise the epoch and never overlap', async function () {
      this.timeout(60_000);
      const log = new LeadershipLog();
      const electors = ['a', 'b', 'c'].map((id) =>
        elector({ kubeConfig: kc, namespace: ns, name: 'trio', identity: `pod-${id}`, ...fast, ...log.callbacks(id) }),
      );
      for (const e of electors) e.start();
      await waitFor('a leader', () => log.leader() !== undefined, 10_000);
      await sleep(1500); // let the others campaign against a held lease
      assert.equal(electors.filter((e) => e.holdsLease()).length, 1);

      const epochs: number[] = [];
      const stopped = new Set<LeaderElector>();
      for (let round = 0; round < 2; round++) {
        const leader = electors.find((e) => e.holdsLease());
        assert.ok(leader, `round ${round}: nobody leads`);
        epochs.push(leader.currentEpoch());
        const t0 = Date.now();
        await leader.stop(); // releases: a standby takes over without waiting for expiry
        stopped.add(leader);
        await waitFor('a new leader', () => electors.some((e) => !stopped.has(e) && e.holdsLease()), 10_000);
        assert.ok(Date.now() - t0 < fast.leaseDurationMs + 1000, 'release lets a standby in before expiry');
      }
      const last = electors.find((e) => e.holdsLease());
      assert.ok(last);
      epochs.push(last.currentEpoch());
      assert.deepEqual(
        epochs,
        [...epochs].sort((x, y) => x - y),
      );
      assert.equal(new Set(epochs).size, 3, `epochs strictly increase: ${epochs.join(',')}`);
      assert.equal(log.overlaps, 0);
      await last.stop();
    });

    it('a leader cut off from the API steps down before anyone else takes over', async function () {
      this.timeout(60_000);
      const proxy = new CuttableProxy(apiTarget());
      await proxy.listen();
      const log = new LeadershipLog();
      const a = elector({ kubeConfig: viaProxy(proxy), namespace: ns, name: 'cut', identity: 'pod-a', ...fast, ...log.callbacks('a') });
      a.start();
      await waitFor('a to lead', () => log.leader() === 'a', 10_000);
      const b = elector({ kubeConfig: kc, namespace: ns, name: 'cut', identity: 'pod-b', ...fast, ...log.callbacks('b') });
      b.start();
      await sleep(1000);
      assert.equal(log.leader(), 'a');

      proxy.sever();
      await waitFor('b to lead', () => log.leader() === 'b', 15_000);
      const aStop = log.events.find((e) => e.who === 'a' && e.what === 'stop');
      const bStart = log.events.find((e) => e.who === 'b' && e.what === 'start');
      assert.ok(aStop && bStart);
      assert.ok(aStop.at <= bStart.at, 'a stepped down before b started');
      assert.ok(bStart.epoch > 0);
      assert.equal(log.overlaps, 0);
      assert.equal(a.holdsLease(), false);

      // a gets the API back: it must stay a follower while b renews.
      proxy.restore();
      await sleep(1500);
      assert.equal(a.holdsLease(), false);
      assert.equal(b.holdsLease(), true);
      await Promise.all([a.stop(), b.stop()]);
      await proxy.close();
    });

    it('a leader whose process was paused past the renew deadline is fenced at once', async function () {
      this.timeout(30_000);
      const a = elector({ kubeConfig: kc, namespace: ns, name: 'paused', identity: 'pod-a', ...fast });
      a.start();
      await waitFor('a to lead', () => a.holdsLease(), 10_000);
      const epoch = a.currentEpoch();
      // Block this thread (no timers, no I/O) like SIGSTOP would, longer than renewDeadline.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, fast.renewDeadlineMs + 300);
      // First thing after waking, before any renewal could run: the writer's check must refuse.
      assert.equal(a.holdsLease(), false);
      assert.throws(() => a.currentEpoch(), { code: 'NOT_LEADER' });
      await a.stop();
      assert.equal(epoch, 0);
    });
  });

  describe('Events', () => {
    it('events on a PVC fold repeats and show in kubectl describe; PV events land in default', async function () {
      this.timeout(30_000);
      const core = kc.makeApiClient(CoreV1Api);
      const pvc = await core.createNamespacedPersistentVolumeClaim({
        namespace: ns,
        body: {
          metadata: { name: 'data' },
          spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } }, storageClassName: 'famfs-serial' },
        },
      });
      const rec = new EventRecorder({ kubeConfig: kc, component: 'famfs-csi-controller', instance: 'node-a' });
      const ref = pvcRef(ns, 'data', pvc.metadata?.uid);
      await rec.record(ref, 'Normal', EventReason.VolumePlaced, 'volume vol-1 placed at offset 0x200000, size 1Gi');
      await rec.record(ref, 'Warning', EventReason.LogNearlyFull, 'famfs log 92% full (23000 of 25000 entries)');
      const again = await rec.record(ref, 'Warning', EventReason.LogNearlyFull, 'famfs log 92% full (23000 of 25000 entries)');
      assert.equal(again.count, 2);
      const described = c().must('kubectl', ['-n', ns, 'describe', 'pvc', 'data']);
      assert.match(described, /Normal\s+VolumePlaced\s+.*volume vol-1 placed at offset 0x200000, size 1Gi/);
      assert.match(described, /Warning\s+LogNearlyFull\s+.*\(x2 over .*famfs log 92% full/);

      await core.createPersistentVolume({
        body: {
          metadata: { name: 'pv-famfs-1' },
          spec: { capacity: { storage: '1Gi' }, accessModes: ['ReadWriteOnce'], csi: { driver: 'famfs.csi.cxl.io', volumeHandle: 'vol-1' } },
        },
      });
      await rec.record(pvRef('pv-famfs-1'), 'Warning', EventReason.MemoryError, 'uncorrectable memory error at offset 0x201000');
      const pvDescribed = c().must('kubectl', ['describe', 'pv', 'pv-famfs-1']);
      assert.match(pvDescribed, /Warning\s+MemoryError\s+.*uncorrectable memory error at offset 0x201000/);
      const evs = c().must('kubectl', ['-n', 'default', 'get', 'events', '--field-selector', 'involvedObject.name=pv-famfs-1', '-o', 'name']);
      assert.equal(evs.trim().split('\n').length, 1);
    });
  });

  describe('FamfsPool status', () => {
    before(function () {
      this.timeout(30_000);
      c().must('kubectl', ['apply', '-f', path.join(repoRoot(), 'charts', 'famfs-csi', 'crds', 'famfspools.famfs.csi.cxl.io.yaml')]);
      c().must('kubectl', ['wait', '--for=condition=Established', 'crd/famfspools.famfs.csi.cxl.io', '--timeout=20s']);
    });

    it('formats sizes the way kubectl users read them', () => {
      assert.equal(formatBytes(64 * 2 ** 30), '64Gi');
      assert.equal(formatBytes(1.5 * 2 ** 30), '1.5Gi');
      assert.equal(formatBytes(2 ** 20 + 1), '1Mi');
      assert.equal(formatBytes(1000), '1000');
      assert.equal(formatBytes(0), '0');
    });

    it('controller and nodes write their parts concurrently without clobbering each other', async function () {
      this.timeout(30_000);
      const ctl = new FamfsPoolClient({ kubeConfig: kc, pool: 'pool-t', fieldManager: 'famfs-csi-controller' });
      const pool = await ctl.ensure({ device: '/dev/dax0.0', driverName: 'famfs.csi.cxl.io' });
      assert.equal(pool.spec.device, '/dev/dax0.0');
      await ctl.ensure({ device: '/dev/dax0.0' }); // idempotent

      const figures = {
        device: '/dev/dax0.0',
        sizeBytes: 64 * 2 ** 30,
        freeBytes: 64 * 2 ** 30 - 2 ** 21,
        pendingFreeBytes: 0,
        largestFreeExtentBytes: 64 * 2 ** 30 - 2 ** 21,
        volumes: 0,
        logEntriesUsed: 1,
        logEntriesTotal: 25000,
        master: { node: 'node-a', pod: 'ctl-0', leaseName: 'famfs-master', fencingEpoch: 4 },
      };
      await ctl.writePoolStatus(figures);
      const nodes = ['node-a', 'node-b', 'node-c'].map((n) => new FamfsPoolClient({ kubeConfig: kc, pool: 'pool-t', fieldManager: `famfs-csi-node-${n}` }));
      await Promise.all(nodes.map((n, i) => n.writeNodeStatus({ name: `node-${'abc'[i]}`, replayedEntries: 1, lagEntries: 0, healthy: true })));
      await nodes[1].writeNodeStatus({
        name: 'node-b',
        replayedEntries: 1,
        lagEntries: 2,
        healthy: false,
        message: 'replay stalled: bad log entry 2',
        memoryErrors: 1,
      });
      // Capacity changes: a 1 GiB volume is placed.
      const after = await ctl.writePoolStatus({ ...figures, freeBytes: figures.freeBytes - 2 ** 30, volumes: 1, logEntriesUsed: 3 });

      assert.equal(after.status?.nodes?.length, 3, 'the controller write keeps every node entry');
      assert.equal(after.status?.nodesHealthy, '2/3');
      assert.equal(after.status?.log?.entriesUsed, 3);
      const b = after.status?.nodes?.find((n) => n.name === 'node-b');
      assert.equal(b?.healthy, false);
      assert.equal(b?.lagEntries, 2);
      assert.ok(b?.lastHeartbeatTime);

      const [header, row] = c().must('kubectl', ['get', 'famfspool', 'pool-t']).trim().split('\n');
      assert.match(header ?? '', /SIZE\s+FREE\s+LARGEST-FREE\s+LOG-USED\s+LOG-TOTAL\s+MASTER\s+NODES-HEALTHY/);
      assert.match(row ?? '', /pool-t\s+\/dev\/dax0\.0\s+64Gi\s+63Gi\s+64Gi\s+3\s+25000\s+node-a\s+2\/3/);
      // What famfs repair quarantined is status too (the CRD schema keeps it, kubectl shows it).
      const q = await ctl.writePoolStatus({
        ...figures,
        freeBytes: figures.freeBytes - 2 ** 30,
        volumes: 1,
        logEntriesUsed: 3,
        quarantinedEntries: 1,
        quarantinedBytes: 2 ** 21,
      });
      assert.deepEqual(q.status?.quarantine, { entries: 1, bytes: 2 ** 21 });
      const described = c().must('kubectl', ['describe', 'famfspool', 'pool-t']);
      assert.match(described, /Quarantine:\s+Bytes:\s+2097152\s+Entries:\s+1/);
      assert.match(described, /replay stalled: bad log entry 2/);
      assert.match(described, /Fencing Epoch:\s+4/);

      // Field ownership: each node owns its entry, the controller the figures.
      const managed = JSON.parse(c().must('kubectl', ['get', 'famfspool', 'pool-t', '--show-managed-fields', '-o', 'json'])) as {
        metadata: { managedFields: { manager: string }[] };
      };
      const managers = managed.metadata.managedFields.map((m) => m.manager).sort();
      for (const m of ['famfs-csi-controller', 'famfs-csi-node-node-a', 'famfs-csi-node-node-b', 'famfs-csi-node-node-c'])
        assert.ok(managers.includes(m), `${m} in ${managers.join(',')}`);
    });

    it('invalid figures are refused locally and by the server schema', async function () {
      this.timeout(30_000);
      const ctl = new FamfsPoolClient({ kubeConfig: kc, pool: 'pool-t', fieldManager: 'famfs-csi-controller' });
      await assert.rejects(
        ctl.writePoolStatus({
          device: '/dev/dax0.0',
          sizeBytes: -1,
          freeBytes: 0,
          pendingFreeBytes: 0,
          largestFreeExtentBytes: 0,
          volumes: 0,
          logEntriesUsed: 0,
          logEntriesTotal: 1,
          master: { node: 'x', fencingEpoch: 0 },
        }),
        { code: 'INVALID' },
      );
      const node = new FamfsPoolClient({ kubeConfig: kc, pool: 'pool-t', fieldManager: 'famfs-csi-node-bad' });
      await assert.rejects(node.writeNodeStatus({ name: 'node-z', replayedEntries: -5, lagEntries: 0, healthy: true }), { code: 'INVALID' });
      const missing = new FamfsPoolClient({ kubeConfig: kc, pool: 'no-such-pool', fieldManager: 'x' });
      await assert.rejects(missing.get(), { code: 'NOT_FOUND' });
    });
  });
  describe('PoolReporter (status + metrics + edge-triggered events)', () => {
    it("reads the chart's leader-election environment", () => {
      const le = leaderElectionFromEnv(
        {
          FAMFS_LEADER_ELECTION: 'true',
          POD_NAMESPACE: 'famfs-system',
          POD_NAME: 'ctl-0',
          FAMFS_LEASE_NAME: 'famfs-csi-master-pool0',
          FAMFS_LEASE_DURATION: '15s',
          FAMFS_LEASE_RENEW_DEADLINE: '10s',
          FAMFS_LEASE_RETRY_PERIOD: '2s',
        },
        { pool: 'pool0' },
      );
      assert.deepEqual(le, {
        enabled: true,
        namespace: 'famfs-system',
        identity: 'ctl-0',
        leaseName: 'famfs-csi-master-pool0',
        leaseDurationMs: 15_000,
        renewDeadlineMs: 10_000,
        retryPeriodMs: 2_000,
      });
      assert.equal(leaderElectionFromEnv({}, { pool: 'p' }).enabled, false);
      assert.throws(() => leaderElectionFromEnv({ FAMFS_LEADER_ELECTION: 'true' }, { pool: 'p' }), { code: 'K8S_CONFIG_INVALID' });
      assert.throws(() => leaderElectionFromEnv({ FAMFS_LEASE_DURATION: 'soon' }, { pool: 'p' }), { code: 'K8S_CONFIG_INVALID' });
    });

    it('publishes figures everywhere and warns once per crossing of the log threshold', async function () {
      this.timeout(60_000);
      const client = new FamfsPoolClient({ kubeConfig: kc, pool: 'pool-r', fieldManager: 'famfs-csi-controller' });
      await client.ensure({ device: '/dev/dax1.0' });
      const metrics = createMetrics();
      const events = new EventRecorder({ kubeConfig: kc, component: 'famfs-csi-controller', instance: 'ctl-0' });
      const rep = new PoolReporter({ poolName: 'pool-r', client, metrics, events, logNearlyFullPercent: 90 });
      const base = {
        device: '/dev/dax1.0',
        sizeBytes: 2 ** 33,
        freeBytes: 2 ** 33,
        pendingFreeBytes: 0,
        largestFreeExtentBytes: 2 ** 33,
        volumes: 0,
        logEntriesUsed: 10,
        logEntriesTotal: 100,
        master: { node: 'node-a', fencingEpoch: 1 },
      };
      const warnings = (): string[] =>
        c()
          .must('kubectl', [
            '-n',
            'default',
            'get',
            'events',
            '--field-selector',
            'involvedObject.name=pool-r,reason=LogNearlyFull',
            '-o',
            'jsonpath={range .items[*]}{.count}{"\\n"}{end}',
          ])
          .split('\n')
          .filter(Boolean);

      await rep.publish(base);
      assert.deepEqual(warnings(), []);
      await rep.publish({ ...base, logEntriesUsed: 91 }); // crosses 90%
      await rep.publish({ ...base, logEntriesUsed: 93 }); // still above: no new warning
      assert.deepEqual(warnings(), ['1']);
      let pool = await client.get();
      assert.equal(pool.status?.conditions?.find((x) => x.type === 'LogNearlyFull')?.status, 'True');
      await rep.publish({ ...base, logEntriesUsed: 50 }); // clearly below: re-armed
      pool = await client.get();
      assert.equal(pool.status?.conditions?.find((x) => x.type === 'LogNearlyFull')?.status, 'False');
      await rep.publish({ ...base, logEntriesUsed: 95 }); // crosses again: a second warning (new figures)
      assert.deepEqual(warnings(), ['1', '1']);
      assert.match(c().must('kubectl', ['describe', 'famfspool', 'pool-r']), /Warning\s+LogNearlyFull\s+.*famfs metadata log 95% full/);

      const text = await metrics.registry.metrics();
      assert.match(text, /famfs_log_entries_used\{pool="pool-r"\} 95$/m);
      assert.match(text, /famfs_master_epoch\{pool="pool-r"\} 1$/m);

      // A node falls behind and sees a memory error: one event each, its entry in the status, the counter.
      const nodeRep = new PoolReporter({
        poolName: 'pool-r',
        client: new FamfsPoolClient({ kubeConfig: kc, pool: 'pool-r', fieldManager: 'famfs-csi-node-node-b' }),
        metrics,
        events,
        replayLagWarnEntries: 5,
      });
      await nodeRep.publishNode({ name: 'node-b', replayedEntries: 80, lagEntries: 15, healthy: true, memoryErrors: 1, message: 'SIGBUS at 0x4000' });
      await nodeRep.publishNode({ name: 'node-b', replayedEntries: 81, lagEntries: 14, healthy: true, memoryErrors: 1 });
      const described = c().must('kubectl', ['describe', 'famfspool', 'pool-r']);
      assert.match(described, /Warning\s+ReplayBehind\s+.*node node-b is 15 log entries behind/);
      assert.match(described, /Warning\s+MemoryError\s+.*node node-b: 1 memory error\(s\) in the pool: SIGBUS at 0x4000/);
      assert.doesNotMatch(described, /x2 over/, 'no repeated warnings while the state does not change');
      const after = await metrics.registry.metrics();
      assert.match(after, /famfs_node_replay_lag_entries\{pool="pool-r",node="node-b"\} 14$/m);
      assert.match(after, /famfs_memory_errors_total\{pool="pool-r",source="node"\} 1$/m);
    });
  });
});
