// The real-node tier: kubelets and containerd run the chart (scripts/cluster.sh up: two nodes on
// loopback, one shared emulated famfs device), and pods use famfs volumes through PVCs, as a user's
// cluster would. Everything is real: images built from the Dockerfile, the kubelet's plugin registration,
// VolumeAttachments, NodeStage/NodePublish, FUSE, bind mounts into containers.
//
// Skipped only with FAMFS_SKIP_K8S=1 (like every Kubernetes test) or FAMFS_SKIP_REAL_NODES=1; needs root.
import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ensureK8sTools, k8sTestsSkipped, repoRoot } from './helpers/toolchain';
import { ConcurrentIts, type ScenarioOutcome } from './helpers/concurrent-its';
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
  /** Run as this non-root uid (and gid) under the `restricted` Pod Security profile: runAsNonRoot, no capabilities. */
  user?: number;
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
  const podSec: string[] = [];
  if (o.user !== undefined) podSec.push(`runAsNonRoot: true, runAsUser: ${o.user}, runAsGroup: ${o.user}, seccompProfile: { type: RuntimeDefault }`);
  if (o.fsGroup !== undefined) podSec.push(`fsGroup: ${o.fsGroup}`);
  const restricted = o.user !== undefined ? `      securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: [ALL] } }\n` : '';
  return `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${NS}, labels: { famfs-test: real-node } }
spec:
  hostNetwork: true
  restartPolicy: ${o.restart ?? 'Never'}
  terminationGracePeriodSeconds: 1
  nodeSelector: { kubernetes.io/hostname: "${o.node}" }
${podSec.length ? `  securityContext: { ${podSec.join(', ')} }\n` : ''}  containers:
    - name: c
      image: ${BUSYBOX}
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", ${JSON.stringify(cmd)}]
${restricted}${mounts.length ? `      volumeMounts:\n${mounts.join('\n')}\n` : ''}${vols.length ? `  volumes:\n${vols.join('\n')}\n` : ''}`;
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

/** What the helm-upgrade case reads of a node pod in the watch: its deletion and its containers' states. */
interface WatchedPod {
  metadata: { name: string; deletionTimestamp?: string; deletionGracePeriodSeconds?: number };
  spec: { nodeName?: string };
  status: { containerStatuses?: { name: string; restartCount: number; state: { terminated?: { exitCode: number; finishedAt: string } } }[] };
}

/**
 * An old node pod's containers must have exited this many seconds after the pod was deleted, at most: they
 * act on SIGTERM at once (~1-2 s here, more under load); the grace period they would otherwise sit out is 30 s.
 */
const STOP_BOUND_S = 15;

/**
 * From a watch of the node pods: when pod `name` was told to stop (its first deletionTimestamp minus the
 * grace period the deletion gave), and how many seconds after that each of its containers exited, as its
 * last state in the watch says (timestamps have 1 s resolution). A container not seen terminated counts as late.
 */
function oldPodStop(
  name: string,
  events: { type: string; object: WatchedPod }[],
): { pod: string; node: string; containers: { afterS: number; text: string }[]; text: string } {
  const seen = events.filter((e) => e.object.metadata.name === name).map((e) => e.object);
  const deleted = seen.find((p) => p.metadata.deletionTimestamp !== undefined);
  const last = seen[seen.length - 1];
  if (deleted?.metadata.deletionTimestamp === undefined || last === undefined) {
    return {
      pod: name,
      node: '?',
      containers: [{ afterS: Infinity, text: 'its deletion is not in the watch' }],
      text: `${name}: its deletion is not in the watch (${seen.length} events)`,
    };
  }
  const told = Date.parse(deleted.metadata.deletionTimestamp) - (deleted.metadata.deletionGracePeriodSeconds ?? 0) * 1000;
  const containers = (last.status.containerStatuses ?? []).map((cs) => {
    const t = cs.state.terminated;
    if (t === undefined) return { afterS: Infinity, text: `${cs.name}: not terminated in the pod's last state (${JSON.stringify(cs.state)})` };
    const afterS = (Date.parse(t.finishedAt) - told) / 1000;
    return { afterS, text: `${cs.name}: exit ${t.exitCode} ${afterS} s after the deletion (restarts ${cs.restartCount})` };
  });
  if (containers.length === 0) containers.push({ afterS: Infinity, text: 'no container status in its last state' });
  const node = last.spec.nodeName ?? '?';
  return {
    pod: name,
    node,
    containers,
    text: `${name} on ${node}, deleted ${new Date(told).toISOString()} with a ${deleted.metadata.deletionGracePeriodSeconds ?? 0} s grace period: ${containers.map((x) => x.text).join('; ')}`,
  };
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
  let casesStart = 0;
  const loadNow = (): string =>
    os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ');
  const loadAtStart = loadNow();

  const scenarioTimes: ScenarioOutcome[] = [];
  const together = new ConcurrentIts('independent cases', (o) => {
    scenarioTimes.push(o);
    process.stderr.write(
      `      [real-node] ${o.error === undefined ? 'done' : 'FAILED'} after ${o.seconds.toFixed(0)} s of the concurrent group: ${o.title}\n`,
    );
  });

  const transcript = (title: string, text: string): void => {
    transcripts.push(`---- ${title}\n${text.trimEnd()}\n`);
  };

  const pool = (): FamfsPoolStatus => c.json<{ status?: FamfsPoolStatus }>(['get', 'famfspool', 'pool0']).status ?? {};

  before(function () {
    if (process.getuid?.() !== 0) throw new Error('the real-node tier needs root (containerd, kubelet, mounts); set FAMFS_SKIP_REAL_NODES=1 to skip it');
    this.timeout(40 * 60_000); // a cold run builds kubelet, the sidecars and the images first
    ensureK8sTools(['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl', 'helm', 'csi-provisioner', 'csi-attacher']);
    // FAMFS_REAL_CLUSTER_DIR=DIR: run against the cluster `scripts/cluster.sh up --dir DIR` keeps running
    // (iterating on one case with --grep); the tier then neither starts nor stops one.
    const keep = process.env['FAMFS_REAL_CLUSTER_DIR'];
    c = keep ? RealCluster.attach(keep) : RealCluster.up(2);
    [nodeA, nodeB] = c.nodes as [string, string];
    process.stderr.write(
      `      [real-node] ${c.attached ? `attached to the cluster in ${c.dir}` : `cluster up in ${c.upSeconds.toFixed(0)} s (${c.phases})`}: nodes ${c.nodes.join(', ')}\n`,
    );
    casesStart = Date.now();
  });

  after(async function () {
    this.timeout(5 * 60_000);
    if (c === undefined) return;
    // No scenario of the concurrent group may still run when the cluster goes (each has its own timeouts).
    await together.settled();
    const casesEnd = Date.now();
    // What the coordinator quotes: the tier's seconds per phase and the machine load they were measured at.
    const load =
      `load ${loadAtStart} at the start, ${loadNow()} at the end (1/5/15 min; ${os.cpus().length} CPUs); ` +
      `${c.calls.count} kubectl/helm runs took ${c.calls.seconds.toFixed(0)} s of the cases, ${c.calls.apiReads} API reads from the test process`;
    const group = scenarioTimes.length
      ? `; the concurrent group took ${Math.max(...scenarioTimes.map((o) => o.seconds)).toFixed(0)} s (${scenarioTimes
          .map((o) => `${o.seconds.toFixed(0)} s ${o.title.replace(/:.*/, '')}`)
          .join(', ')})`
      : '';
    const log = path.join(repoRoot(), '.cache', 'logs', 'real-node-transcripts.txt');
    fs.mkdirSync(path.dirname(log), { recursive: true });
    fs.writeFileSync(log, transcripts.join('\n'));
    process.stdout.write(
      `\n      [real-node] transcripts (also in ${path.relative(repoRoot(), log)}):\n${transcripts.join('\n').replace(/^/gm, '      | ')}\n`,
    );
    if (c.attached) {
      c.close();
      process.stderr.write(
        `      [real-node] cases took ${((casesEnd - casesStart) / 1000).toFixed(0)} s${group}; ${load}; the cluster in ${c.dir} keeps running\n`,
      );
      return;
    }
    const dir = c.dir;
    const device = c.device;
    const id = fs.existsSync(path.join(dir, 'id')) ? fs.readFileSync(path.join(dir, 'id'), 'utf8').trim() : '';
    const d = c.down();
    // The issue's limits: the tier adds at most 15 min to a cold `npm test` and 4 min with .cache warm. Cold
    // means building kubelet, kube-scheduler, kube-controller-manager and the images (the phases below).
    process.stderr.write(
      `      [real-node] tier took ${((Date.now() - t0) / 1000).toFixed(0)} s: cluster up ${c.upSeconds.toFixed(0)} s (${c.phases}), ` +
        `cases ${((casesEnd - casesStart) / 1000).toFixed(0)} s${group}, down ${((Date.now() - casesEnd) / 1000).toFixed(0)} s; ${load}\n`,
    );
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
        status: {
          conditions?: { type: string; status: string }[];
          containerStatuses?: { name: string; restartCount: number; lastState?: { terminated?: { exitCode: number; reason?: string } } }[];
        };
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
    // Nothing restarted on the way to Ready (a container that crashed once after install would hide here).
    for (const p of pods) {
      for (const st of p.status.containerStatuses ?? []) {
        const prev = st.restartCount > 0 ? c.run('kubectl', ['-n', NAMESPACE, 'logs', p.metadata.name, '-c', st.name, '--previous', '--tail=30']) : undefined;
        assert.equal(
          st.restartCount,
          0,
          `${p.metadata.name}/${st.name} restarted after install (last exit ${JSON.stringify(st.lastState?.terminated)}):\n${prev?.stdout ?? ''}${prev?.stderr ?? ''}`,
        );
      }
    }
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

  // famfs CLI writes on the master (famfs cp, famfs rm) append to the log next to the controller, which has no
  // lock against another writer process on its host: they run while no other case creates or deletes volumes.
  let staticLoaded = false;
  let staticDone = false;
  it('static path volumes: famfs mkdir -p and famfs cp -r load a tree on the master next to the running controller', function () {
    this.timeout(2 * 60_000);
    // Load it the famfs way, on node A (the famfs master: the superblock names its host UUID), next to the
    // running controller, as docs/volumes.md says: famfs mkdir -p, famfs cp -r.
    const src = path.join(c.dir, 'rn-set');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'w.bin'), PATTERN);
    fs.writeFileSync(path.join(src, 'sub', 'readme.txt'), 'loaded once\n');
    for (const args of [
      ['mkdir', '-p', c.device, 'models'],
      ['cp', '-r', src, c.device, 'models'],
    ]) {
      const r = c.famfs(nodeA, args);
      assert.equal(r.status, 0, `famfs ${args.join(' ')}: ${r.stderr}${r.stdout}`);
    }
    fs.rmSync(src, { recursive: true });
    staticLoaded = true;
  });

  // The cases below share nothing (own claims, pods, classes, names) and break nothing node-wide: they run at
  // the same time (test/helpers/concurrent-its.ts), each still its own test with its own failure. A new case
  // of that kind is one more together.it(...); a case that kills, upgrades or relabels goes after the group.
  together.it('serial sharing: a pod on node A writes a pattern; a pod on node B reads exactly those bytes', async () => {
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
    // The hand-off goes through VolumeAttachments: the attach/detach controller attached this claim's volume
    // to node A for the writer (its event on the pod; the VolumeAttachment itself is gone soon after the pod ends).
    const serialPv = pvOf('serial');
    await attachedFor('writer', serialPv);
    transcript('kubectl get pods -o wide (writer done on node A)', c.kubectl(['get', 'pods', '-o', 'wide']));
    c.kubectl(['delete', 'pod', 'writer', '--wait=true', '--timeout=180s']);
    // Hand-off: A unstages (flush), the attacher detaches A and attaches B, B stages (invalidate).
    c.apply(podYaml('reader', `head -c ${PATTERN_BYTES} /data/data | sha256sum; head -c 12 /data/data`, { node: nodeB, claim: 'serial' }));
    await c.waitPodPhase('reader', ['Succeeded', 'Failed'], 180_000);
    const out = c.logs('reader');
    assert.equal(c.podPhase('reader'), 'Succeeded', out);
    assert.match(out, new RegExp(`^${PATTERN_SHA}`), `node B read other bytes:\n${out}`);
    assert.ok(out.includes('00000\n00001\n'), out);
    await attachedFor('reader', serialPv);
    transcript('kubectl describe pvc serial', c.describe('pvc', 'serial', NS));
    transcript('kubectl describe pod reader (node B)', c.describe('pod', 'reader', NS));
    c.kubectl(['delete', 'pod', 'reader', '--wait=true', '--timeout=180s']);
  });

  together.it('a mount the plugin refuses shows a FailedMount event that says what to do', async () => {
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
    const ev = await c.waitFor('a FailedMount event for pod fsgroup', 120_000, async () => {
      const evs = await c.eventsAsync(NS);
      return evs.find((e) => e.involvedObject.name === 'fsgroup' && e.reason === 'FailedMount');
    });
    assert.match(ev.message, /fsGroup 4242/);
    assert.match(ev.message, /gid/); // names the StorageClass parameters to set
    transcript('kubectl describe pod fsgroup (FailedMount)', c.describe('pod', 'fsgroup', NS));
    c.kubectl(['delete', 'pod', 'fsgroup', '--wait=true', '--timeout=180s']);
    c.kubectl(['delete', 'pvc', 'grouped', '--wait=false']);
  });

  /** A pod that must run to completion; returns its log. */
  const runPod = async (name: string, cmd: string, o: PodOpts): Promise<string> => {
    c.apply(podYaml(name, cmd, o));
    await c.waitPodPhase(name, ['Succeeded', 'Failed'], 180_000);
    const out = c.logs(name);
    assert.equal(c.podPhase(name), 'Succeeded', `${name}:\n${out}\n${c.describe('pod', name, NS)}`);
    return out;
  };

  /** `key value...` lines a pod printed, as a map (the last line of each key wins). */
  const fields = (out: string): Map<string, string> => new Map(out.split('\n').map((l) => [l.split(' ')[0] ?? '', l.slice(l.indexOf(' ') + 1)]));

  /**
   * Shell for a reader of a read-only volume: the checksum of what it reads, then every way to write it,
   * each as "<what> <exit status> <first error line>", then the checksum again, then READY and sleep.
   */
  const readOnlyProbe = (file: string, bytes: number): string =>
    [
      `echo "sum $(head -c ${bytes} ${file} | sha256sum | cut -d' ' -f1)"`,
      // write(2) through an O_WRONLY open of the file (dd), an O_RDWR open (sh <>), a new file next to it.
      `dd if=/dev/zero of=${file} bs=1 count=1 conv=notrunc 2>/tmp/e; echo "write $? $(head -n1 /tmp/e)"`,
      `(exec 3<>${file}) 2>/tmp/e; echo "rdwr $? $(head -n1 /tmp/e)"`,
      `(: >$(dirname ${file})/new) 2>/tmp/e; echo "create $? $(head -n1 /tmp/e)"`,
      `mount -o remount,rw $(dirname ${file}) 2>/tmp/e; echo "remount $? $(head -n1 /tmp/e)"`,
      `mount -o remount,bind,rw $(dirname ${file}) 2>/tmp/e; echo "rebind $? $(head -n1 /tmp/e)"`,
      `echo "after $(head -c ${bytes} ${file} | sha256sum | cut -d' ' -f1)"`,
      `echo "mount $(grep " $(dirname ${file}) " /proc/self/mountinfo | cut -d' ' -f6)"`,
      'echo READY; sleep 3600',
    ].join('; ');

  /**
   * Asserts what readOnlyProbe printed: the expected bytes, every write refused, nothing changed. `erofs`:
   * the file's mode would let the pod write it, so the refusal must come from the read-only mount (EROFS).
   */
  const assertReadOnly = (pod: string, out: string, sha: string, erofs = true): void => {
    const f = fields(out);
    assert.equal(f.get('sum'), sha, `${pod} read other bytes:\n${out}`);
    for (const k of ['write', 'rdwr', 'create']) {
      const [rc, ...msg] = (f.get(k) ?? '').split(' ');
      assert.notEqual(rc, '0', `${pod}: ${k} on a read-only volume succeeded:\n${out}`);
      assert.match(msg.join(' '), /Read-only file system|Permission denied/, `${pod}: ${k} failed for another reason:\n${out}`);
    }
    for (const k of ['remount', 'rebind']) {
      const [rc, ...msg] = (f.get(k) ?? '').split(' ');
      assert.notEqual(rc, '0', `${pod}: mount -o ${k === 'rebind' ? 'remount,bind,rw' : 'remount,rw'} succeeded:\n${out}`);
      assert.match(msg.join(' '), /denied|not permitted|must be superuser|are you root/i, `${pod}: ${k} failed for another reason:\n${out}`);
    }
    if (erofs) assert.match(f.get('write') ?? '', /Read-only file system/, `${pod}: the file itself must be refused by the ro bind (EROFS):\n${out}`);
    else assert.match(f.get('write') ?? '', /Permission denied/, `${pod}: the file's mode must refuse this user (EACCES):\n${out}`);
    assert.match(f.get('mount') ?? '', /(^|,)ro(,|$)/, `${pod}: the volume is not mounted ro:\n${out}`);
    assert.equal(f.get('after'), sha, `${pod}: the bytes changed:\n${out}`);
  };

  /** The VolumeAttachments of a PV: node -> attached. */
  const attachments = (pv: string): Map<string, boolean> =>
    new Map(
      c
        .json<{ items: { spec: { nodeName: string; source: { persistentVolumeName?: string } }; status?: { attached?: boolean } }[] }>([
          'get',
          'volumeattachments',
        ])
        .items.filter((v) => v.spec.source.persistentVolumeName === pv)
        .map((v) => [v.spec.nodeName, v.status?.attached === true]),
    );

  /**
   * The node's own view (the kubelet's mount namespace) of the famfs binds whose root is under `root`:
   * staging and publish binds. A read-only volume must be read-only there, not only in the plugin's
   * namespace (a bind's attributes do not follow it when mount propagation copies it).
   */
  const famfsBinds = (node: string, root: string): { mountPoint: string; ro: boolean }[] =>
    c
      .onNode(node, ['cat', '/proc/self/mountinfo'])
      .stdout.split('\n')
      .map((l) => l.split(' '))
      .filter((f) => f[f.indexOf('-') + 1] === 'fuse.famfs' && (f[3] === root || (f[3] ?? '').startsWith(`${root}/`)) && (f[4] ?? '').startsWith(c.dir))
      .map((f) => ({ mountPoint: f[4] ?? '', ro: (f[5] ?? '').split(',').includes('ro') }));

  const assertReadOnlyBinds = (root: string, nodes: string[]): void => {
    for (const n of nodes) {
      const binds = famfsBinds(n, root);
      assert.ok(binds.length >= 2, `node ${n}: expected staging and publish binds of ${root}, found ${JSON.stringify(binds)}`);
      const rw = binds.filter((b) => !b.ro);
      assert.deepEqual(rw, [], `node ${n}: binds of the read-only volume ${root} are writable in the node's mount namespace`);
    }
  };

  /**
   * Waits for the attach/detach controller's SuccessfulAttachVolume event of `pod` naming `pv`: the
   * VolumeAttachment of that volume to the pod's node was attached for it.
   */
  const attachedFor = async (pod: string, pv: string): Promise<void> => {
    await c.waitFor(
      `a SuccessfulAttachVolume event of pod ${pod} for ${pv}`,
      60_000,
      async () => {
        const evs = await c.eventsAsync(NS);
        return evs.some((e) => e.involvedObject.name === pod && e.reason === 'SuccessfulAttachVolume' && e.message.includes(`"${pv}"`)) ? true : undefined;
      },
      () => c.describe('pod', pod, NS),
    );
  };

  const pvOf = (claim: string): string => c.kubectl(['-n', NS, 'get', 'pvc', claim, '-o', 'jsonpath={.spec.volumeName}']);

  /** Waits until both pods print READY (they then sleep: they hold their volumes at the same time). */
  const waitReady = async (pods: string[]): Promise<Map<string, string>> => {
    const outs = new Map<string, string>();
    for (const p of pods) {
      await c.waitPodPhase(p, ['Running'], 180_000);
      outs.set(
        p,
        await c.waitFor(
          `${p} to print READY`,
          60_000,
          async () => {
            const log = await c.logsAsync(p);
            return /^READY$/m.test(log) ? log : undefined;
          },
          () => c.logs(p),
        ),
      );
    }
    for (const p of pods) assert.equal(c.podPhase(p), 'Running', `${p} is no longer running:\n${c.describe('pod', p, NS)}`);
    return outs;
  };

  together.it('read-only sharing: a data set loaded once on node A is read by pods on both nodes at once; their writes and remounts fail', async () => {
    // The flow docs/volumes.md recommends: a loader fills a serial claim, a ReadOnlyMany claim with it as
    // dataSource shares its memory (no copy), and readers on every node mount the share.
    c.apply(pvcYaml('dataset', 'famfs-serial', 'ReadWriteOnce'));
    await runPod('loader', `seq -w 0 65535 | dd of=/data/data conv=notrunc,fsync 2>/dev/null`, { node: nodeA, claim: 'dataset' });
    c.kubectl(['delete', 'pod', 'loader', '--wait=true', '--timeout=180s']);
    c.apply(pvcYaml('dataset-ro', 'famfs-readonly', 'ReadOnlyMany', '8Mi', 'dataset'));
    // Root reader on A; a non-root one (restricted profile, no fsGroup) on B: both read the share.
    c.apply(podYaml('ro-a', readOnlyProbe('/data/data', PATTERN_BYTES), { node: nodeA, claim: 'dataset-ro', readOnly: true }));
    c.apply(podYaml('ro-b', readOnlyProbe('/data/data', PATTERN_BYTES), { node: nodeB, claim: 'dataset-ro', readOnly: true, user: 1000 }));
    const outs = await waitReady(['ro-a', 'ro-b']);
    for (const [p, out] of outs) assertReadOnly(p, out, PATTERN_SHA);
    assert.match(c.logs('ro-b'), /^sum /m);
    // Both nodes hold the share at once (two VolumeAttachments), and the source is not copied: same memory.
    const pv = pvOf('dataset-ro');
    const att = attachments(pv);
    assert.deepEqual([...att.keys()].sort(), [nodeA, nodeB].sort(), `attachments of ${pv}: ${JSON.stringify([...att])}`);
    assert.ok([...att.values()].every(Boolean), `attachments of ${pv}: ${JSON.stringify([...att])}`);
    const sourceVol = c.json<{ spec: { csi: { volumeHandle: string } } }>(['get', 'pv', pvOf('dataset')]).spec.csi.volumeHandle;
    assertReadOnlyBinds(`/csi/${sourceVol}`, [nodeA, nodeB]);
    // The source is frozen while shared: a writer of the loader's claim is refused at attach, with the reason.
    c.apply(podYaml('refrozen', 'sleep 3600', { node: nodeA, claim: 'dataset' }));
    const ev = await c.waitFor('a FailedAttachVolume event for pod refrozen', 120_000, async () => {
      const evs = await c.eventsAsync(NS);
      return evs.find((e) => e.involvedObject.name === 'refrozen' && e.reason === 'FailedAttachVolume' && /frozen/.test(e.message));
    });
    assert.match(ev.message, /read-only share/);
    transcript('kubectl get pods -o wide (read-only readers on both nodes)', c.kubectl(['get', 'pods', '-o', 'wide']));
    transcript('kubectl describe pvc dataset-ro (zero-copy share)', c.describe('pvc', 'dataset-ro', NS));
    transcript('kubectl describe pod refrozen (a writer of a shared source)', c.describe('pod', 'refrozen', NS));
    transcript('ro-b (non-root reader on node B) output', c.logs('ro-b'));
    c.kubectl(['delete', 'pod', 'ro-a', 'ro-b', 'refrozen', '--wait=false']); // nothing later needs them gone (cleanup waits for every pod)
  });

  together.it(
    'a privileged reader of a read-only share (CAP_SYS_ADMIN): remount,bind,rw succeeds, but writes, O_RDWR and truncate fail with EROFS and other readers see the same bytes',
    async () => {
      // Self-contained: its own claims and pods. A privileged container may remount its read-only bind rw
      // (the kernel lets it); the node's famfs-fused must still refuse every change to the shared file.
      c.apply(pvcYaml('priv-src', 'famfs-serial', 'ReadWriteOnce'));
      await runPod('priv-loader', `seq -w 0 65535 | dd of=/data/data conv=notrunc,fsync 2>/dev/null`, { node: nodeA, claim: 'priv-src' });
      c.kubectl(['delete', 'pod', 'priv-loader', '--wait=true', '--timeout=180s']);
      c.apply(pvcYaml('priv-ro', 'famfs-readonly', 'ReadOnlyMany', '8Mi', 'priv-src'));
      const f = '/data/data';
      const probe = [
        `echo "sum $(head -c ${PATTERN_BYTES} ${f} | sha256sum | cut -d' ' -f1)"`,
        `mount -o remount,bind,rw /data 2>/tmp/e; echo "rebind $? $(head -n1 /tmp/e)"`,
        `echo "mount $(grep " /data " /proc/self/mountinfo | cut -d' ' -f6)"`,
        `dd if=/dev/zero of=${f} bs=1 count=1 conv=notrunc 2>/tmp/e; echo "write $? $(head -n1 /tmp/e)"`,
        `(exec 3<>${f}) 2>/tmp/e; echo "rdwr $? $(head -n1 /tmp/e)"`,
        `truncate -s 0 ${f} 2>/tmp/e; echo "truncate $? $(head -n1 /tmp/e)"`,
        `echo "after $(head -c ${PATTERN_BYTES} ${f} | sha256sum | cut -d' ' -f1)"`,
        'echo READY; sleep 3600',
      ].join('; ');
      const privileged = podYaml('priv-reader', probe, { node: nodeB, claim: 'priv-ro', readOnly: true }).replace(
        '      command:',
        '      securityContext: { privileged: true }\n      command:',
      );
      assert.match(privileged, /privileged: true/);
      c.apply(privileged);
      const out = (await waitReady(['priv-reader'])).get('priv-reader') ?? '';
      const got = fields(out);
      assert.equal(got.get('sum'), PATTERN_SHA, `priv-reader read other bytes:\n${out}`);
      assert.match(got.get('rebind') ?? '', /^0 /, `a privileged container can remount its bind rw (what this case is about):\n${out}`);
      assert.match(got.get('mount') ?? '', /(^|,)rw(,|$)/, `its bind is rw now:\n${out}`);
      for (const k of ['write', 'rdwr', 'truncate']) {
        assert.match(got.get(k) ?? '', /^[1-9]\d* .*Read-only file system/, `priv-reader: ${k} through the rw-remounted bind must fail with EROFS:\n${out}`);
      }
      assert.equal(got.get('after'), PATTERN_SHA, `the shared bytes changed:\n${out}`);
      // Another reader, on the other node, reads the loader's bytes.
      const other = await runPod('priv-other', `echo "sum $(head -c ${PATTERN_BYTES} ${f} | sha256sum | cut -d' ' -f1)"`, {
        node: nodeA,
        claim: 'priv-ro',
        readOnly: true,
      });
      assert.equal(fields(other).get('sum'), PATTERN_SHA, `another reader sees other bytes:\n${other}`);
      transcript('priv-reader (privileged reader of a share on node B) output', out);
      c.kubectl(['delete', 'pod', 'priv-reader', 'priv-other', '--wait=false']);
    },
  );

  together.it("isolation: a pod sees only its own volume; another volume's bytes are unreachable from it", async () => {
    // Two volumes on node A: "secret" holds a marker the isolated pod must never see, "mine" its own marker.
    c.apply(pvcYaml('secret', 'famfs-serial', 'ReadWriteOnce'));
    c.apply(pvcYaml('mine', 'famfs-serial', 'ReadWriteOnce'));
    // The whole 8 MiB file in short lines (a multi-MiB line of zeros makes busybox grep crawl).
    const fill = (marker: string): string => `yes ${marker} | head -c 8388608 | dd of=/data/data conv=notrunc,fsync 2>/dev/null; head -c 9 /data/data`;
    const secretMarker = 'SECRET-B7'; // never on the container image or in the test's own command lines below
    // The secret's writer runs (and stays) on node A, so both volumes are staged on the same node's FUSE mount.
    c.apply(podYaml('secret-holder', `${fill(secretMarker)}; echo; echo READY; sleep 3600`, { node: nodeA, claim: 'secret' }));
    const mineOut = await runPod('mine-fill', fill('MINE-A3'), { node: nodeA, claim: 'mine' });
    assert.equal(mineOut, 'MINE-A3\nM');
    await waitReady(['secret-holder']);
    const secretVol = c.json<{ spec: { csi: { volumeHandle: string } } }>(['get', 'pv', pvOf('secret')]).spec.csi.volumeHandle;
    const mineVol = c.json<{ spec: { csi: { volumeHandle: string } } }>(['get', 'pv', pvOf('mine')]).spec.csi.volumeHandle;
    const stateMnt = path.join(c.dir, 'mnt', 'state', 'mnt', 'pool0');
    // Every path a curious pod would try. The marker is built at run time so the command line never holds it.
    const probe = [
      'echo "ls $(ls -A /data | tr "\\n" " ")"',
      // statfs type: 65735546 is FUSE (the famfs mount); the directory above /data is the container's own root.
      'echo "fs $(stat -f -c %t /data) up $(stat -f -c %t /data/..)"',
      'echo "mi $(grep " /data " /proc/self/mountinfo | cut -d" " -f4,5,9,10)"',
      // The mount's root inside the famfs FUSE file system, with the other volume's id put in.
      `root=$(grep " /data " /proc/self/mountinfo | cut -d" " -f4); echo "root $root"`,
      `for p in /data/../${secretVol} /data/../csi/${secretVol}/data /data/../../csi/${secretVol}/data $(echo $root | sed s/${mineVol}/${secretVol}/)/data ${stateMnt}/csi/${secretVol}/data ${stateMnt} /proc/1/root${stateMnt} /proc/self/root/../csi /dev/shm/${path.basename(c.device)}; do if ls $p >/dev/null 2>&1; then echo "reach $p"; else echo "noreach $p"; fi; done`,
      // Every regular file the pod can read (all of / but the kernel's /proc and /sys and the device nodes in
      // /dev; -type f: not the busybox applet symlinks, which would read the same binary 400 times).
      `search() { find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type f -print | xargs grep -l "$1" 2>/dev/null | head -5 | tr "\\n" " "; }`,
      `echo "secret [$(search $(printf 'SECRET-%s' B7))]"`,
      `echo "own [$(search $(printf 'MINE-%s' A3))]"`,
    ].join('; ');
    const out = await runPod('isolated', probe, { node: nodeA, claim: 'mine' });
    const f = fields(out);
    transcript('pod isolated (its view of the file systems)', out);
    assert.equal(f.get('ls')?.trim(), 'data', `the pod sees more than its one file:\n${out}`);
    assert.match(f.get('fs') ?? '', /^65735546 up (?!65735546)/, `/data is not the famfs FUSE mount, or the directory above it is:\n${out}`);
    assert.ok((f.get('root') ?? '').includes(mineVol), `mountinfo root of /data does not name its volume:\n${out}`);
    const reach = out.split('\n').filter((l) => l.startsWith('reach '));
    assert.deepEqual(reach, [], `paths to the other volume or the node's famfs mount are reachable:\n${out}`);
    assert.equal(out.split('\n').filter((l) => l.startsWith('noreach ')).length, 9, out);
    assert.equal(f.get('secret'), '[]', `the other volume's bytes are readable from the pod:\n${out}`);
    // Control: the same search finds the pod's own volume, so an empty result above means unreachable.
    assert.equal(f.get('own'), '[/data/data ]', `control: the search did not find the pod's own bytes:\n${out}`);
    c.kubectl(['delete', 'pod', 'secret-holder', 'mine-fill', 'isolated', '--wait=false']); // nothing later needs them gone (cleanup waits for every pod)
  });

  together.it('static path volumes: a tree loaded with famfs cp on the master is read by pods on both nodes through a PV naming its path', async () => {
    assert.ok(staticLoaded, 'the tree was not loaded (the static path volumes load test failed or did not run)');
    const staticPv = (name: string, p: string, mode: string): string => `apiVersion: v1
kind: PersistentVolume
metadata: { name: ${name}, labels: { famfs-test: real-node } }
spec:
  storageClassName: ""
  capacity: { storage: 8Mi }
  accessModes: [${mode}]
  persistentVolumeReclaimPolicy: Retain
  csi:
    driver: famfs.csi.cxl.io
    volumeHandle: ${name}
    readOnly: ${mode === 'ReadOnlyMany'}
    volumeAttributes: { path: "${p}" }
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: ${name}, namespace: ${NS}, labels: { famfs-test: real-node } }
spec:
  storageClassName: ""
  volumeName: ${name}
  accessModes: [${mode}]
  resources: { requests: { storage: 8Mi } }
`;
    c.apply(staticPv('static-set', 'models/rn-set', 'ReadOnlyMany'));
    // A path nobody loaded: the pod's event (FailedAttachVolume: the controller checks it at attach) says what to do.
    c.apply(staticPv('static-missing', 'models/not-loaded', 'ReadOnlyMany'));
    // A file volume: the pod sees that one file in its mount directory.
    c.apply(staticPv('static-file', 'models/rn-set/w.bin', 'ReadOnlyMany'));
    const probe = `echo "tree $(cd /data && find . | sort | tr '\\n' ' ')"; echo "readme $(cat /data/sub/readme.txt)"; ${readOnlyProbe('/data/w.bin', PATTERN_BYTES)}`;
    c.apply(podYaml('static-a', probe, { node: nodeA, claim: 'static-set', readOnly: true }));
    c.apply(podYaml('static-b', probe, { node: nodeB, claim: 'static-set', readOnly: true, user: 1000 }));
    c.apply(podYaml('static-missing', 'sleep 3600', { node: nodeB, claim: 'static-missing', readOnly: true }));
    c.apply(
      podYaml('static-file', `echo "ls $(ls -A /data)"; ${readOnlyProbe('/data/w.bin', PATTERN_BYTES)}`, { node: nodeA, claim: 'static-file', readOnly: true }),
    );
    const file = fields((await waitReady(['static-file'])).get('static-file') ?? '');
    assert.equal(file.get('ls'), 'w.bin', `a static file volume shows more or other than the file:\n${c.logs('static-file')}`);
    assertReadOnly('static-file', c.logs('static-file'), PATTERN_SHA);
    const outs = await waitReady(['static-a', 'static-b']);
    for (const [p, out] of outs) {
      const f = fields(out);
      assert.equal(f.get('tree'), '. ./sub ./sub/readme.txt ./w.bin ', `${p}: the pod does not see the tree famfs has:\n${out}`);
      assert.equal(f.get('readme'), 'loaded once', out);
      // famfs cp makes 0644 root files: the non-root reader is refused by the mode (EACCES) before the ro mount.
      assertReadOnly(p, out, PATTERN_SHA, p === 'static-a');
    }
    assertReadOnlyBinds('/models/rn-set', [nodeA, nodeB]);
    const att = attachments('static-set');
    assert.deepEqual([...att.keys()].sort(), [nodeA, nodeB].sort(), `attachments of static-set: ${JSON.stringify([...att])}`);
    const ev = await c.waitFor('a FailedAttachVolume or FailedMount event for pod static-missing', 120_000, async () => {
      const evs = await c.eventsAsync(NS);
      return evs.find((e) => e.involvedObject.name === 'static-missing' && /^Failed(Mount|AttachVolume)$/.test(e.reason) && /not-loaded/.test(e.message));
    });
    assert.match(ev.message, /does not exist/);
    assert.match(ev.message, /famfs cp -r/); // the fix: load it on the master first
    transcript('kubectl describe pod static-missing (a static path nobody loaded)', c.describe('pod', 'static-missing', NS));
    transcript('static-b (non-root reader of a static directory on node B) output', c.logs('static-b'));
    // Done: pods, claims and PVs go (Retain: the driver never frees a path it did not allocate), then the
    // loader removes its files on the master, so the pool gets its memory back.
    c.kubectl(['delete', 'pod', 'static-a', 'static-b', 'static-missing', 'static-file', '--wait=true', '--timeout=180s']);
    c.kubectl(['-n', NS, 'delete', 'pvc', 'static-set', 'static-missing', 'static-file', '--wait=true', '--timeout=180s']);
    c.kubectl(['delete', 'pv', 'static-set', 'static-missing', 'static-file', '--wait=true', '--timeout=180s']);
    for (const pv of ['static-set', 'static-file']) {
      await c.waitFor(`no VolumeAttachment of ${pv}`, 120_000, () => (attachments(pv).size === 0 ? true : undefined));
    }
    staticDone = true;
  });

  together.it('non-root pods (restricted profile) write and read their ReadWriteOnce volume with the default class, with and without fsGroup', async () => {
    c.apply(pvcYaml('nonroot', 'famfs-serial', 'ReadWriteOnce'));
    const w = await runPod(
      'nonroot-w',
      `id; seq -w 0 65535 | dd of=/data/data conv=notrunc,fsync 2>/tmp/e || cat /tmp/e; echo "sum $(head -c ${PATTERN_BYTES} /data/data | sha256sum | cut -d' ' -f1)"`,
      { node: nodeA, claim: 'nonroot', user: 1000, fsGroup: 2000 },
    );
    assert.match(w, /^uid=1000 gid=1000 groups=.*\b2000\b/m, w);
    assert.equal(fields(w).get('sum'), PATTERN_SHA, `the non-root writer (fsGroup 2000) could not write its volume:\n${w}`);
    c.kubectl(['delete', 'pod', 'nonroot-w', '--wait=true', '--timeout=180s']);
    // Another non-root user without fsGroup, on the other node: reads the bytes, and writes too (RWO).
    const r = await runPod(
      'nonroot-r',
      `id; echo "sum $(head -c ${PATTERN_BYTES} /data/data | sha256sum | cut -d' ' -f1)"; printf 'overwritten' | dd of=/data/data conv=notrunc,fsync 2>/tmp/e; echo "write $? $(head -n1 /tmp/e)"; echo "head $(head -c 11 /data/data)"`,
      { node: nodeB, claim: 'nonroot', user: 1001 },
    );
    assert.match(r, /^uid=1001 gid=1001/m, r);
    assert.equal(fields(r).get('sum'), PATTERN_SHA, `node B's non-root reader read other bytes:\n${r}`);
    assert.match(fields(r).get('write') ?? '', /^0 /, `node B's non-root pod could not write its RWO volume:\n${r}`);
    assert.equal(fields(r).get('head'), 'overwritten', r);
    transcript('nonroot-r (uid 1001, no fsGroup, node B) output', r);
    c.kubectl(['delete', 'pod', 'nonroot-r', '--wait=false']); // nothing later needs them gone (cleanup waits for every pod)
  });

  it('static path volumes: deleting the PVs leaves the loaded files; famfs rm on the master removes them', function () {
    this.timeout(2 * 60_000);
    assert.ok(staticDone, 'the static path volumes case did not get to delete its PVs');
    const ls = c.famfs(nodeA, ['ls', c.device]);
    assert.match(ls.stdout, /models\/rn-set\/w\.bin/, `DeleteVolume or unpublish freed a static path:\n${ls.stdout}${ls.stderr}`);
    for (const p of ['models/rn-set/sub/readme.txt', 'models/rn-set/sub', 'models/rn-set/w.bin', 'models/rn-set', 'models']) {
      const r = c.famfs(nodeA, ['rm', c.device, p]);
      assert.equal(r.status, 0, `famfs rm ${p}: ${r.stderr}${r.stdout}`);
    }
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
  const loopLinesAsync = async (pod: string): Promise<string[]> => (await c.logsAsync(pod)).split('\n').filter(Boolean);

  it('fault: kill -9 of the node plugin container while a pod reads: the pod keeps reading', async function () {
    this.timeout(4 * 60_000);
    c.apply(pvcYaml('steady', 'famfs-serial', 'ReadWriteOnce'));
    c.apply(podYaml('steady-load', `seq -w 0 65535 | dd of=/data/data conv=notrunc,fsync 2>/dev/null`, { node: nodeA, claim: 'steady' }));
    await c.waitPodPhase('steady-load', ['Succeeded', 'Failed'], 180_000);
    assert.equal(c.podPhase('steady-load'), 'Succeeded', c.logs('steady-load'));
    c.kubectl(['delete', 'pod', 'steady-load', '--wait=true', '--timeout=180s']);
    c.apply(podYaml('steady', readerLoop, { node: nodeA, claim: 'steady', restart: 'Always' }));
    await c.waitPodPhase('steady', ['Running'], 120_000);
    await c.waitFor("the reader's first rounds", 30_000, async () => ((await loopLinesAsync('steady')).length >= 3 ? true : undefined));
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

  it('fault: kill -9 of the FUSE server container while a pod reads: the pod keeps reading (the node plugin held the connection), no wedged node, no manual umount', async function () {
    this.timeout(5 * 60_000);
    const want = `ok ${PATTERN_SHA.slice(0, 16)}`;
    const fusedLog = () => c.logs(chartContainer(nodeA, 'famfs-fused').pod, NAMESPACE, 'famfs-fused');
    // The node plugin holds famfs-fused's connection (fd deposit). After the plugin's own restart (the
    // case before) famfs-fused deposits it again: wait for that, the last word of its log on the deposit.
    await c.waitFor(
      "famfs-fused's FUSE connection deposited with the node plugin",
      60_000,
      () => {
        const events = fusedLog()
          .split('\n')
          .filter((l) => /FUSE connection deposited|fd deposit holder went away/.test(l));
        return events.length > 0 && /FUSE connection deposited/.test(events[events.length - 1] ?? '') ? true : undefined;
      },
      fusedLog,
    );
    const mark = loopLines('steady').length;
    const t0 = Date.now();
    const restarts = killContainer(nodeA, 'famfs-fused');
    await waitRestarted(nodeA, 'famfs-fused', restarts);
    await c.waitFor('the reader to go on after the FUSE server restart', 60_000, async () =>
      (await loopLinesAsync('steady')).length >= mark + 3 ? true : undefined,
    );
    const resumedMs = Date.now() - t0;
    // Every round, across the kill and the restart, read the pattern: no "Transport endpoint is not connected".
    assert.deepEqual(
      [...new Set(loopLines('steady'))],
      [want],
      `reads failed or changed around the FUSE server's restart:\n${loopLines('steady').slice(-10).join('\n')}`,
    );
    // Adopted, not remounted: the restarted container served the connection the plugin held.
    assert.match(fusedLog(), /adopted the FUSE connection of a killed famfs-fused/);
    transcript(
      'reader on node A across kill -9 of famfs-fused (last lines)',
      `${loopLines('steady').slice(-3).join('\n')}\n(3 more rounds ${resumedMs} ms after the kill, container restart included)`,
    );
    // The node is not wedged: the same volume serves a new pod on that node, nobody ran umount.
    c.kubectl(['delete', 'pod', 'steady', '--wait=true', '--timeout=180s']);
    c.apply(podYaml('steady2', readerLoop, { node: nodeA, claim: 'steady', restart: 'Always' }));
    await c.waitPodPhase('steady2', ['Running'], 120_000);
    await c.waitFor(
      'the new reader to read the bytes',
      60_000,
      async () => ((await loopLinesAsync('steady2')).includes(want) ? true : undefined),
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
    // Every state the node pods go through, the old pods' last one (all containers terminated) included.
    const watch = c.watch<WatchedPod>(`/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=${encodeURIComponent('app.kubernetes.io/component=node')}`);
    // (Established before the upgrade: the synchronous kubectl runs below hold the event loop; the stream waits in the socket.)
    await c.waitFor('the watch of the node pods to list them', 30_000, () =>
      oldPods.every((p) => watch.events.some((e) => e.object.metadata.name === p)) ? true : undefined,
    );
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
    watch.stop();
    assert.equal(watch.failure(), undefined, `the watch of the node pods broke: ${String(watch.failure())}`);
    // The old pods go as soon as they are told to: every container of an old node pod has exited within
    // STOP_BOUND_S of the pod's deletion (its grace period is 30 s). An old famfs-fused that the kubelet
    // restarted after its handover and that got the SIGTERM while it was starting sat the 30 s out.
    const stops = oldPods.map((name) => oldPodStop(name, watch.events));
    const late = stops.flatMap((s) => s.containers.filter((x) => !(x.afterS <= STOP_BOUND_S)).map((x) => `${s.pod} on ${s.node}: ${x.text}`));
    assert.deepEqual(
      late,
      [],
      `old node pods' containers did not exit within ${STOP_BOUND_S} s of the pod's deletion:\n${stops.map((s) => s.text).join('\n')}`,
    );
    transcript("old node pods: seconds from deletion to each container's exit (helm upgrade)", stops.map((s) => s.text).join('\n'));
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
    c.kubectl(['delete', 'pod', 'steady2', '--wait=true', '--timeout=180s']);
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
    // Every delete that waits has a timeout: a pod that cannot go (a wedged mount) fails the case instead of
    // hanging the tier (a synchronous kubectl run is beyond mocha's timeout).
    c.kubectl(['delete', 'pod', '-l', 'famfs-test=real-node', '--wait=true', '--timeout=180s']);
    c.kubectl(['delete', 'pvc', '-l', 'famfs-test=real-node', '--wait=true', '--timeout=180s']);
    await c.waitFor(
      'no PersistentVolumes',
      120_000,
      () => (c.json<{ items: unknown[] }>(['get', 'pv']).items.length === 0 ? true : undefined),
      () => c.kubectl(['get', 'pv']),
    );
    c.kubectl(['delete', 'storageclass', '-l', 'famfs-test=real-node', '--wait=true', '--timeout=180s']);
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
