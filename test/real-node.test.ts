// The real-node tier: kubelets and containerd run the chart (scripts/cluster.sh up: two nodes on
// loopback, one shared emulated famfs device), and pods use famfs volumes through PVCs, as a user's
// cluster would. Everything is real: images built from the Dockerfile, the kubelet's plugin registration,
// VolumeAttachments, NodeStage/NodePublish, FUSE, bind mounts into containers.
//
// Skipped only with FAMFS_SKIP_K8S=1 (like every Kubernetes test) or FAMFS_SKIP_REAL_NODES=1; needs root.
import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { ensureK8sTools, k8sTestsSkipped, repoRoot } from './helpers/toolchain';
import { NAMESPACE, RealCluster, RELEASE } from './helpers/real-cluster';

const BUSYBOX = 'famfs-csi.local/busybox:1';
const NS = 'default';

/** The pattern pods write and read: 65536 lines "00000\n".."65535\n" (busybox `seq -w 0 65535`). */
const PATTERN = Array.from({ length: 65536 }, (_, i) => `${String(i).padStart(5, '0')}\n`).join('');
const PATTERN_BYTES = PATTERN.length;
const PATTERN_SHA = createHash('sha256').update(PATTERN).digest('hex');

interface PodOpts {
  node: string;
  claim?: string;
  readOnly?: boolean;
  fsGroup?: number;
  restart?: 'Never' | 'Always';
  /** Other claims mounted at /other/<claim>. */
  more?: string[];
}

function podYaml(name: string, cmd: string, o: PodOpts): string {
  const vols: string[] = [];
  const mounts: string[] = [];
  if (o.claim) {
    vols.push(`    - name: v\n      persistentVolumeClaim: { claimName: ${o.claim}${o.readOnly ? ', readOnly: true' : ''} }`);
    mounts.push(`        - { name: v, mountPath: /data${o.readOnly ? ', readOnly: true' : ''} }`);
  }
  for (const [i, c] of (o.more ?? []).entries()) {
    vols.push(`    - name: m${i}\n      persistentVolumeClaim: { claimName: ${c} }`);
    mounts.push(`        - { name: m${i}, mountPath: /other/${c} }`);
  }
  return `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${NS}, labels: { famfs-test: real-node } }
spec:
  hostNetwork: true
  restartPolicy: ${o.restart ?? 'Never'}
  terminationGracePeriodSeconds: 1
  nodeSelector: { kubernetes.io/hostname: "${o.node}" }
${o.fsGroup !== undefined ? `  securityContext: { fsGroup: ${o.fsGroup} }\n` : ''}  containers:
    - name: c
      image: ${BUSYBOX}
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", ${JSON.stringify(cmd)}]
${mounts.length ? `      volumeMounts:\n${mounts.join('\n')}\n` : ''}${vols.length ? `  volumes:\n${vols.join('\n')}\n` : ''}`;
}

function pvcYaml(name: string, cls: string, mode: string, size = '8Mi', dataSource?: string): string {
  return `apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: ${name}, namespace: ${NS}, labels: { famfs-test: real-node } }
spec:
  storageClassName: ${cls}
  accessModes: [${mode}]
  resources: { requests: { storage: ${size} } }
${dataSource ? `  dataSource: { kind: PersistentVolumeClaim, name: ${dataSource} }\n` : ''}`;
}

interface FamfsPoolStatus {
  freeBytes?: number;
  pendingFreeBytes?: number;
  sizeBytes?: number;
}

const suite = k8sTestsSkipped() || process.env['FAMFS_SKIP_REAL_NODES'] === '1' ? describe.skip : describe;

suite('real nodes: kubelet + containerd run the chart; pods use famfs volumes through PVCs @slow', function () {
  this.timeout(10 * 60_000);
  let c: RealCluster;
  let nodeA: string;
  let nodeB: string;
  let initialFree = 0;
  const transcripts: string[] = [];
  const t0 = Date.now();

  const transcript = (title: string, text: string): void => {
    transcripts.push(`---- ${title}\n${text.trimEnd()}\n`);
  };

  const pool = (): FamfsPoolStatus => c.json<{ status?: FamfsPoolStatus }>(['get', 'famfspool', 'pool0']).status ?? {};

  before(function () {
    if (process.getuid?.() !== 0) throw new Error('the real-node tier needs root (containerd, kubelet, mounts); set FAMFS_SKIP_REAL_NODES=1 to skip it');
    this.timeout(40 * 60_000); // a cold run builds kubelet, the sidecars and the images first
    ensureK8sTools(['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl', 'helm', 'csi-provisioner', 'csi-attacher']);
    c = RealCluster.up(2);
    [nodeA, nodeB] = c.nodes as [string, string];
    process.stderr.write(`      [real-node] cluster up in ${c.upSeconds.toFixed(0)} s: nodes ${c.nodes.join(', ')}\n`);
  });

  after(function () {
    this.timeout(5 * 60_000);
    if (c === undefined) return;
    const log = path.join(repoRoot(), '.cache', 'logs', 'real-node-transcripts.txt');
    fs.mkdirSync(path.dirname(log), { recursive: true });
    fs.writeFileSync(log, transcripts.join('\n'));
    process.stdout.write(
      `\n      [real-node] transcripts (also in ${path.relative(repoRoot(), log)}):\n${transcripts.join('\n').replace(/^/gm, '      | ')}\n`,
    );
    const dir = c.dir;
    const device = c.device;
    const id = fs.existsSync(path.join(dir, 'id')) ? fs.readFileSync(path.join(dir, 'id'), 'utf8').trim() : '';
    const d = c.down();
    process.stderr.write(`      [real-node] tier took ${((Date.now() - t0) / 1000).toFixed(0)} s (cluster up ${c.upSeconds.toFixed(0)} s)\n`);
    assert.equal(d.status, 0, `cluster.sh down failed:\n${d.output}`);
    // down leaves nothing behind: no directory, no device file, no cgroup, no process.
    assert.ok(!fs.existsSync(dir), `${dir} still exists`);
    assert.ok(!fs.existsSync(device), `${device} still exists`);
    assert.ok(id.length > 0);
    for (const h of ['pids', 'memory', 'cpu', 'freezer', 'unified']) {
      assert.ok(!fs.readdirSync(`/sys/fs/cgroup/${h}`).some((e) => e.startsWith(`${id}-`)), `cgroup ${h}/${id}-* left behind`);
    }
    const procs = fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir);
        } catch {
          return false;
        }
      });
    assert.deepEqual(procs, [], `processes of the cluster left behind: ${procs.join(' ')}`);
    assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(dir), 'mounts of the cluster left on the host');
  });

  it("every pod of the chart is Ready; each node's CSINode lists the driver with its topology key", async function () {
    this.timeout(3 * 60_000);
    const pods = c.json<{
      items: {
        metadata: { name: string };
        spec: { nodeName: string; containers: { name: string }[] };
        status: { conditions?: { type: string; status: string }[] };
      }[];
    }>(['-n', NAMESPACE, 'get', 'pods']).items;
    const ready = (p: (typeof pods)[number]): boolean => p.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') === true;
    const nodePods = pods.filter((p) => p.metadata.name.startsWith(`${RELEASE}-node-`));
    const controllers = pods.filter((p) => p.metadata.name.startsWith(`${RELEASE}-controller-`));
    assert.deepEqual(nodePods.map((p) => p.spec.nodeName).sort(), [...c.nodes].sort(), 'one node plugin pod per node');
    assert.equal(controllers.length, 1);
    assert.deepEqual(
      controllers[0]?.spec.containers.map((x) => x.name),
      ['famfs-csi', 'csi-provisioner', 'csi-attacher'],
    );
    assert.deepEqual(
      nodePods[0]?.spec.containers.map((x) => x.name),
      ['famfs-csi', 'famfs-fused'],
    );
    for (const p of pods) assert.ok(ready(p), `${p.metadata.name} not Ready:\n${c.describe('pod', p.metadata.name, NAMESPACE)}`);
    transcript('kubectl get pods -A -o wide (chart installed)', c.kubectl(['get', 'pods', '-A', '-o', 'wide']));
    for (const n of c.nodes) {
      // The kubelet wrote this after the plugin registered itself through plugins_registry (no registrar sidecar).
      const csinode = await c.waitFor(`CSINode ${n} with the driver`, 60_000, () => {
        const o = c.json<{ spec: { drivers?: { name: string; nodeID: string; topologyKeys?: string[] }[] } }>(['get', 'csinode', n]);
        return o.spec.drivers?.find((d) => d.name === 'famfs.csi.cxl.io');
      });
      assert.equal(csinode.nodeID, n);
      assert.deepEqual(csinode.topologyKeys, ['famfs.csi.cxl.io/pool']);
      const labels = c.json<{ metadata: { labels: Record<string, string> } }>(['get', 'node', n]).metadata.labels;
      assert.equal(labels['famfs.csi.cxl.io/pool'], 'pool0', `node ${n} lacks the topology label`);
    }
    const st = await c.waitFor('FamfsPool status', 60_000, () => (pool().freeBytes !== undefined ? pool() : undefined));
    initialFree = st.freeBytes ?? 0;
    assert.ok(initialFree > 0);
  });

  it('serial sharing: a pod on node A writes a pattern; a pod on node B reads exactly those bytes', async function () {
    this.timeout(5 * 60_000);
    c.apply(pvcYaml('serial', 'famfs-serial', 'ReadWriteOnce'));
    c.apply(
      podYaml('writer', `seq -w 0 65535 | dd of=/data/data conv=notrunc,fsync 2>/dev/null && head -c ${PATTERN_BYTES} /data/data | sha256sum`, {
        node: nodeA,
        claim: 'serial',
      }),
    );
    await c.waitPodPhase('writer', ['Succeeded', 'Failed'], 180_000);
    assert.equal(c.podPhase('writer'), 'Succeeded', c.logs('writer'));
    assert.match(c.logs('writer'), new RegExp(PATTERN_SHA));
    const va1 = c.json<{ items: { spec: { nodeName: string } }[] }>(['get', 'volumeattachments']).items.map((v) => v.spec.nodeName);
    transcript('kubectl get pods -o wide (writer done on node A)', c.kubectl(['get', 'pods', '-o', 'wide']));
    c.kubectl(['delete', 'pod', 'writer', '--wait=true']);
    // Hand-off: A unstages (flush), the attacher detaches A and attaches B, B stages (invalidate).
    c.apply(podYaml('reader', `head -c ${PATTERN_BYTES} /data/data | sha256sum; head -c 12 /data/data`, { node: nodeB, claim: 'serial' }));
    await c.waitPodPhase('reader', ['Succeeded', 'Failed'], 180_000);
    const out = c.logs('reader');
    assert.equal(c.podPhase('reader'), 'Succeeded', out);
    assert.match(out, new RegExp(`^${PATTERN_SHA}`), `node B read other bytes:\n${out}`);
    assert.ok(out.includes('00000\n00001\n'), out);
    assert.ok(va1.includes(nodeA), `no VolumeAttachment to ${nodeA} while the writer ran: ${va1.join(',')}`);
    transcript('kubectl describe pvc serial', c.describe('pvc', 'serial', NS));
    transcript('kubectl describe pod reader (node B)', c.describe('pod', 'reader', NS));
    c.kubectl(['delete', 'pod', 'reader', '--wait=true']);
  });

  it('a mount the plugin refuses shows a FailedMount event that says what to do', async function () {
    this.timeout(3 * 60_000);
    // A class whose files only their owner (uid 0) may use: a pod with fsGroup 4242 cannot, and famfs cannot
    // chown per pod; the plugin refuses and names the StorageClass parameters that fix it.
    c.apply(`apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: { name: famfs-private, labels: { famfs-test: real-node } }
provisioner: famfs.csi.cxl.io
parameters: { sharing: serial, mode: "0600" }
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
`);
    c.apply(pvcYaml('grouped', 'famfs-private', 'ReadWriteOnce'));
    c.apply(podYaml('fsgroup', 'sleep 3600', { node: nodeA, claim: 'grouped', fsGroup: 4242 }));
    const ev = await c.waitFor('a FailedMount event for pod fsgroup', 120_000, () => {
      const evs = c.json<{ items: { reason: string; message: string; involvedObject: { name: string } }[] }>(['-n', NS, 'get', 'events']).items;
      return evs.find((e) => e.involvedObject.name === 'fsgroup' && e.reason === 'FailedMount');
    });
    assert.match(ev.message, /fsGroup 4242/);
    assert.match(ev.message, /gid/); // names the StorageClass parameters to set
    transcript('kubectl describe pod fsgroup (FailedMount)', c.describe('pod', 'fsgroup', NS));
    c.kubectl(['delete', 'pod', 'fsgroup', '--wait=true']);
    c.kubectl(['delete', 'pvc', 'grouped', '--wait=false']);
  });

  /** The containerd id of a container of one of the chart's node pods on `node`. */
  const chartContainer = (node: string, container: string): { pod: string; id: string; restarts: number } => {
    const pods = c
      .json<{
        items: {
          metadata: { name: string };
          spec: { nodeName: string };
          status: { containerStatuses?: { name: string; containerID?: string; restartCount: number }[] };
        }[];
      }>(['-n', NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/component=node'])
      .items.filter((p) => p.spec.nodeName === node);
    assert.equal(pods.length, 1, `node pods on ${node}: ${pods.map((p) => p.metadata.name).join(',')}`);
    const st = pods[0]?.status.containerStatuses?.find((x) => x.name === container);
    assert.ok(st?.containerID, `${container} on ${node} has no container id`);
    return { pod: pods[0]?.metadata.name ?? '', id: st.containerID.replace(/^containerd:\/\//, ''), restarts: st.restartCount };
  };

  const killContainer = (node: string, container: string): number => {
    const before = chartContainer(node, container);
    const r = c.ctr(node, ['tasks', 'kill', '-s', 'SIGKILL', before.id]);
    assert.equal(r.status, 0, `ctr tasks kill: ${r.stderr}`);
    return before.restarts;
  };

  const waitRestarted = async (node: string, container: string, restartsBefore: number): Promise<void> => {
    await c.waitFor(`${container} on ${node} restarted and Ready`, 120_000, () => {
      const pods = c
        .json<{ items: { spec: { nodeName: string }; status: { containerStatuses?: { name: string; ready: boolean; restartCount: number }[] } }[] }>([
          '-n',
          NAMESPACE,
          'get',
          'pods',
          '-l',
          'app.kubernetes.io/component=node',
        ])
        .items.filter((p) => p.spec.nodeName === node);
      const st = pods[0]?.status.containerStatuses?.find((x) => x.name === container);
      return st !== undefined && st.restartCount > restartsBefore && st.ready ? true : undefined;
    });
  };

  /** A pod that reads its volume in a loop and prints one line per round: "ok <sha prefix>" or "err <message>". */
  const readerLoop = `while true; do if ls /data >/dev/null 2>/tmp/e && head -c ${PATTERN_BYTES} /data/data >/tmp/x 2>>/tmp/e; then echo "ok $(sha256sum </tmp/x | cut -c1-16)"; else echo "err $(cat /tmp/e)"; fi; sleep 0.3; done`;
  const loopLines = (pod: string): string[] => c.logs(pod).split('\n').filter(Boolean);

  it('fault: kill -9 of the node plugin container while a pod reads: the pod keeps reading', async function () {
    this.timeout(4 * 60_000);
    c.apply(pvcYaml('steady', 'famfs-serial', 'ReadWriteOnce'));
    c.apply(podYaml('steady-load', `seq -w 0 65535 | dd of=/data/data conv=notrunc,fsync 2>/dev/null`, { node: nodeA, claim: 'steady' }));
    await c.waitPodPhase('steady-load', ['Succeeded', 'Failed'], 180_000);
    assert.equal(c.podPhase('steady-load'), 'Succeeded', c.logs('steady-load'));
    c.kubectl(['delete', 'pod', 'steady-load', '--wait=true']);
    c.apply(podYaml('steady', readerLoop, { node: nodeA, claim: 'steady', restart: 'Always' }));
    await c.waitPodPhase('steady', ['Running'], 120_000);
    await c.waitFor("the reader's first rounds", 30_000, () => (loopLines('steady').length >= 3 ? true : undefined));
    const restarts = killContainer(nodeA, 'famfs-csi');
    const mark = loopLines('steady').length;
    await waitRestarted(nodeA, 'famfs-csi', restarts);
    await new Promise((r) => setTimeout(r, 2000));
    const after = loopLines('steady').slice(mark);
    assert.ok(after.length >= 3, `the reader stalled: ${after.length} rounds since the kill`);
    const want = `ok ${PATTERN_SHA.slice(0, 16)}`;
    assert.deepEqual(
      [...new Set(loopLines('steady'))],
      [want],
      `reads failed or changed around the plugin's restart:\n${loopLines('steady').slice(-10).join('\n')}`,
    );
  });

  it('fault: kill -9 of the FUSE server container: no wedged node, no manual umount; the volume serves again', async function () {
    this.timeout(5 * 60_000);
    const restarts = killContainer(nodeA, 'famfs-fused');
    await waitRestarted(nodeA, 'famfs-fused', restarts);
    const want = `ok ${PATTERN_SHA.slice(0, 16)}`;
    // The running pod either resumed (its mount survived) or says why it cannot read (never a hang).
    const mark = loopLines('steady').length;
    await c.waitFor('the reader to report after the FUSE server restart', 60_000, () => (loopLines('steady').length >= mark + 3 ? true : undefined));
    const tail = loopLines('steady').slice(-3);
    for (const l of tail) assert.ok(l === want || /^err .*(not connected|Input\/output error|No such device)/i.test(l), `unclear outcome: ${l}`);
    transcript('reader on node A after kill -9 of famfs-fused (last lines)', tail.join('\n'));
    // The node is not wedged: the same volume serves a new pod on that node, nobody ran umount.
    c.kubectl(['delete', 'pod', 'steady', '--wait=true']);
    c.apply(podYaml('steady2', readerLoop, { node: nodeA, claim: 'steady', restart: 'Always' }));
    await c.waitPodPhase('steady2', ['Running'], 120_000);
    await c.waitFor(
      'the new reader to read the bytes',
      60_000,
      () => (loopLines('steady2').includes(want) ? true : undefined),
      () => loopLines('steady2').slice(-5).join('\n') + c.describe('pod', 'steady2', NS),
    );
  });

  it('helm upgrade to a new image tag while a pod reads: the FUSE server is taken over, the pod keeps its data access', async function () {
    this.timeout(6 * 60_000);
    const want = `ok ${PATTERN_SHA.slice(0, 16)}`;
    const mark = loopLines('steady2').length;
    const oldPods = c
      .kubectl(['-n', NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/component=node', '-o', 'jsonpath={.items[*].metadata.name}'])
      .split(' ');
    const up = c.run('helm', [
      'upgrade',
      RELEASE,
      path.join(repoRoot(), 'charts', 'famfs-csi'),
      '-n',
      NAMESPACE,
      '--reset-then-reuse-values',
      '--set',
      'image.famfs.tag=next',
    ]);
    assert.equal(up.status, 0, up.stderr);
    c.kubectl(['-n', NAMESPACE, 'rollout', 'status', `daemonset/${RELEASE}-node`, '--timeout=240s']);
    c.kubectl(['-n', NAMESPACE, 'rollout', 'status', `deployment/${RELEASE}-controller`, '--timeout=180s']);
    // The old pods go once the new ones are Ready (their FUSE servers took over); wait for them to be gone.
    const newPods = await c.waitFor(
      'the old node pods to be gone',
      120_000,
      () => {
        const now = c
          .kubectl(['-n', NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/component=node', '-o', 'jsonpath={.items[*].metadata.name}'])
          .split(' ')
          .filter(Boolean);
        return now.length === c.nodes.length && !now.some((p) => oldPods.includes(p)) ? now : undefined;
      },
      () => c.kubectl(['-n', NAMESPACE, 'get', 'pods', '-o', 'wide']),
    );
    await new Promise((r) => setTimeout(r, 3000));
    const during = loopLines('steady2').slice(mark);
    assert.ok(during.length >= 5, `the reader stalled during the upgrade: ${during.length} rounds`);
    const fusedLogs = (): string =>
      newPods.map((p) => `== ${p}\n${c.run('kubectl', ['-n', NAMESPACE, 'logs', p, '-c', 'famfs-fused', '--tail=15']).stdout}`).join('\n');
    assert.deepEqual(
      [...new Set(during)],
      [want],
      `reads failed during the upgrade:\n${during
        .filter((l) => l !== want)
        .slice(0, 5)
        .join('\n')}\n${fusedLogs()}`,
    );
    transcript('kubectl get pods -A -o wide (after helm upgrade)', c.kubectl(['get', 'pods', '-A', '-o', 'wide']));
    c.kubectl(['delete', 'pod', 'steady2', '--wait=true']);
  });

  it('a node without the memory label gets no node plugin (no crash loop), and registers again when labelled', async function () {
    this.timeout(4 * 60_000);
    c.kubectl(['label', 'node', nodeB, 'famfs.csi.cxl.io/attached-']);
    await c.waitFor(`no node plugin pod on ${nodeB}`, 120_000, () => {
      const on = c
        .json<{ items: { spec: { nodeName: string } }[] }>(['-n', NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/component=node'])
        .items.filter((p) => p.spec.nodeName === nodeB);
      return on.length === 0 ? true : undefined;
    });
    c.kubectl(['label', 'node', nodeB, 'famfs.csi.cxl.io/attached=true']);
    c.kubectl(['-n', NAMESPACE, 'rollout', 'status', `daemonset/${RELEASE}-node`, '--timeout=180s']);
    await c.waitFor(`the driver registered again on ${nodeB}`, 60_000, () => {
      const o = c.json<{ spec: { drivers?: { name: string }[] | null } }>(['get', 'csinode', nodeB]);
      return o.spec.drivers?.some((d) => d.name === 'famfs.csi.cxl.io') ? true : undefined;
    });
  });

  it('cleanup: deleting pods and PVCs returns every byte to the pool, leaves no mount and no VolumeAttachment', async function () {
    this.timeout(4 * 60_000);
    c.kubectl(['delete', 'pod', '-l', 'famfs-test=real-node', '--wait=true']);
    c.kubectl(['delete', 'pvc', '-l', 'famfs-test=real-node', '--wait=true']);
    await c.waitFor(
      'no PersistentVolumes',
      120_000,
      () => (c.json<{ items: unknown[] }>(['get', 'pv']).items.length === 0 ? true : undefined),
      () => c.kubectl(['get', 'pv']),
    );
    c.kubectl(['delete', 'storageclass', '-l', 'famfs-test=real-node', '--wait=true']);
    await c.waitFor('no VolumeAttachments', 120_000, () => (c.json<{ items: unknown[] }>(['get', 'volumeattachments']).items.length === 0 ? true : undefined));
    await c.waitFor(
      `FamfsPool freeBytes back to ${initialFree}`,
      120_000,
      () => (pool().freeBytes === initialFree && (pool().pendingFreeBytes ?? 0) === 0 ? true : undefined),
      () => JSON.stringify(pool()),
    );
    for (const n of c.nodes) {
      const left = c.nodeMounts(n, path.join(c.dir, 'mnt', 'kubelet', 'pods')).filter((m) => m.includes('kubernetes.io~csi'));
      assert.deepEqual(left, [], `CSI mounts left on ${n}`);
      const staged = c.nodeMounts(n, path.join(c.dir, 'mnt', 'kubelet', 'plugins', 'kubernetes.io', 'csi'));
      assert.deepEqual(staged, [], `staging mounts left on ${n}`);
    }
    transcript('kubectl describe famfspool pool0', c.describe('famfspool', 'pool0'));
  });
});
