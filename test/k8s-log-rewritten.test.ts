// Issue 10: a log entry a node's FUSE server replayed is rewritten (what a master that trusted a
// lowered next_index did). The node plugin, run as the driver process runs it (startDriverProcess,
// with a real kube-apiserver), counts it in famfs_log_entries_rewritten_total and raises one
// LogEntryRewritten Warning Event on the FamfsPool and one on the Node.
import { strict as assert } from 'assert';
import * as path from 'path';
import { CoreV1Api, KubeConfig, type CoreV1Event } from '@kubernetes/client-node';
import pino from 'pino';
import { CsiClient } from '../pkg/csi/client';
import { objectFileRelpath } from '../pkg/csi/names';
import { fmapExtents } from '../pkg/famfs/fmap';
import { encodeEntry, FileFlags } from '../pkg/famfs/layout';
import type { FileNode } from '../pkg/famfs/tree';
import { startDriverProcess, type DriverProcess } from '../pkg/k8s/driver-runtime';
import { startClusterOrSkip } from './helpers/k8s-env';
import { canMount, MiB, mountCap, NodeTestEnv } from './helpers/node-env';
import type { TestCluster } from './helpers/test-cluster';
import { putEntry, waitFor } from './soak/reliability-lib';

const POOL = 'rewrite-pool';

(canMount ? describe : describe.skip)('@slow k8s: a rewritten log entry becomes a metric and LogEntryRewritten Events', function () {
  let cluster: TestCluster | undefined;
  let env: NodeTestEnv | undefined;
  let proc: DriverProcess | undefined;
  let client: CsiClient | undefined;

  before(function () {
    cluster = startClusterOrSkip(this, ['etcd', 'kube-apiserver', 'kubectl']);
  });
  after(async function () {
    this.timeout(60_000);
    client?.close();
    await proc?.stop().catch(() => undefined);
    await proc?.driver.node?.fuse.stopServer().catch(() => false);
    await env?.close();
    cluster?.stop();
  });

  it('node: once per entry, counted and raised on the FamfsPool and the Node', async function () {
    this.timeout(120_000);
    const c = cluster;
    assert.ok(c);
    env = new NodeTestEnv('rewrite-k8s', 128 * MiB);
    const endpoint = `unix://${path.join(env.dir, 'node.sock')}`;
    proc = await startDriverProcess({
      driver: {
        mode: 'node',
        endpoint,
        devicePath: env.devicePath,
        deviceSize: 0,
        mkfs: false,
        nodeId: 'node-rw',
        driverName: 'famfs.csi.cxl.io',
        stateDir: path.join(env.dir, 'state'),
        pool: POOL,
        allowedPathRoots: [env.kubelet],
        log: pino({ level: 'silent' }),
      },
      kubeconfigPath: c.kubeconfig,
      poolStatusIntervalMs: 60_000,
      rewriteCheckIntervalMs: 100,
      log: pino({ level: 'silent' }),
    });
    assert.equal(proc.kubernetes, true);
    client = new CsiClient(endpoint, 30_000);
    const id = env.createVolume('pvc-rw', 4 * MiB);
    await client.call('Node', 'NodeStageVolume', {
      volume_id: id,
      staging_target_path: env.staging('node-rw', id),
      volume_capability: mountCap('SINGLE_NODE_WRITER'),
    });

    env.master.catchUp();
    const node = env.master.lookup(objectFileRelpath(id)) as FileNode;
    putEntry(
      env.device,
      node.index,
      encodeEntry(node.index, {
        type: 'file',
        relpath: objectFileRelpath(id),
        size: 4 * MiB,
        mode: 0o666,
        uid: 0,
        gid: 0,
        flags: FileFlags.ALL_HOSTS_RW,
        fmap: { kind: 'simple', extents: [{ devindex: 0, offset: fmapExtents(node.fmap)[0].offset + 32 * MiB, len: 4 * MiB }] },
      }),
    );

    const kc = new KubeConfig();
    kc.loadFromFile(c.kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const events = async (): Promise<CoreV1Event[]> => (await core.listEventForAllNamespaces({ fieldSelector: 'reason=LogEntryRewritten' })).items;
    const got = await waitFor(
      async () => {
        const e = await events();
        return e.length >= 2 ? e : undefined;
      },
      20_000,
      200,
    );
    assert.ok(got, 'no LogEntryRewritten Event within 20 s');
    // More polls must not add Events or counts: reported once per entry.
    await new Promise((r) => setTimeout(r, 1000));
    const all = await events();
    const on = (kind: string, name: string) => all.filter((e) => e.involvedObject.kind === kind && e.involvedObject.name === name);
    assert.equal(on('FamfsPool', POOL).length, 1, JSON.stringify(all.map((e) => e.involvedObject)));
    assert.equal(on('Node', 'node-rw').length, 1);
    for (const e of all) {
      assert.equal(e.type, 'Warning');
      assert.equal(e.count, 1);
      assert.match(String(e.message), new RegExp(`famfs log entry ${node.index}, which this node's FUSE server replayed, was rewritten`));
    }
    const text = await proc.driver.metrics.registry.metrics();
    const line = text.split('\n').find((l) => l.startsWith('famfs_log_entries_rewritten_total{') && l.includes(`pool="${POOL}"`));
    assert.match(String(line), / 1$/, `metric: ${line}`);
  });
});
