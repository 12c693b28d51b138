// The Helm chart, rendered by the real helm binary and checked object by object.
// Needs helm from scripts/k8s-tools.sh (built on demand); FAMFS_SKIP_K8S=1 skips, nothing else does.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseAllDocuments } from 'yaml';
import { ensureK8sTools, k8sTestsSkipped, repoRoot, runTool } from './helpers/toolchain';
import { depositSocketFor } from '../pkg/fuse/deposit';
import { DEFAULT_READAHEAD_KB } from '../pkg/fuse/readahead';

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

interface SecurityContext {
  privileged?: boolean;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  capabilities?: { drop?: string[]; add?: string[] };
}

interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string }[];
  securityContext?: SecurityContext;
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string }[];
}

interface PodSpec {
  serviceAccountName: string;
  containers: Container[];
  volumes: { name: string; hostPath?: { path: string; type?: string }; emptyDir?: object }[];
  nodeSelector?: Record<string, string>;
}

interface Workload extends K8sObject {
  spec: { replicas?: number; template: { spec: PodSpec } };
}

interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

const CHART = path.join(repoRoot(), 'charts', 'famfs-csi');
const NAMESPACE = 'famfs-system';

function helm(args: string[]): string {
  const res = runTool('helm', args);
  assert.equal(res.status, 0, `helm ${args.join(' ')} failed:\n${res.stderr}${res.stdout}`);
  return res.stdout;
}

/** Renders the chart with `--set` pairs or a values file and parses every document. */
function render(opts: { set?: string[]; valuesYaml?: string; includeCrds?: boolean } = {}): K8sObject[] {
  const args = ['template', 'rel', CHART, '--namespace', NAMESPACE];
  for (const s of opts.set ?? []) args.push('--set', s);
  if (opts.includeCrds) args.push('--include-crds');
  let tmp: string | undefined;
  if (opts.valuesYaml !== undefined) {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-helm-'));
    fs.writeFileSync(path.join(tmp, 'values.yaml'), opts.valuesYaml);
    args.push('--values', path.join(tmp, 'values.yaml'));
  }
  try {
    const docs = parseAllDocuments(helm(args));
    const objs: K8sObject[] = [];
    for (const d of docs) {
      assert.equal(d.errors.length, 0, `YAML error in rendered chart: ${d.errors.map((e) => e.message).join('; ')}`);
      const o = d.toJS() as K8sObject | null;
      if (o !== null) objs.push(o);
    }
    return objs;
  } finally {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function find<T extends K8sObject>(objs: K8sObject[], kind: string, nameSuffix = ''): T {
  const hits = objs.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
  assert.equal(hits.length, 1, `expected exactly one ${kind} *${nameSuffix}, found ${hits.map((h) => h.metadata.name).join(', ') || 'none'}`);
  return hits[0] as T;
}

function container(w: Workload, name: string): Container {
  const c = w.spec.template.spec.containers.find((x) => x.name === name);
  assert.ok(c, `${w.kind} ${w.metadata.name} has no container ${name}`);
  return c;
}

function hasContainer(w: Workload, name: string): boolean {
  return w.spec.template.spec.containers.some((x) => x.name === name);
}

function mount(c: Container, name: string): { mountPath: string; mountPropagation?: string } {
  const m = (c.volumeMounts ?? []).find((x) => x.name === name);
  assert.ok(m, `container ${c.name} does not mount ${name}`);
  return m;
}

const SIDECARS = ['csi-provisioner', 'csi-attacher', 'liveness-probe', 'node-driver-registrar'];

function assertUnprivilegedSidecar(c: Container): void {
  const sc = c.securityContext ?? {};
  assert.notEqual(sc.privileged, true, `${c.name} must not be privileged`);
  assert.equal(sc.allowPrivilegeEscalation, false, `${c.name} must forbid privilege escalation`);
  assert.equal(sc.readOnlyRootFilesystem, true, `${c.name} root fs must be read-only`);
  assert.deepEqual(sc.capabilities?.drop, ['ALL'], `${c.name} must drop all capabilities`);
  assert.equal(sc.capabilities?.add, undefined, `${c.name} must not add capabilities`);
}

describe('helm chart charts/famfs-csi', function () {
  before(function () {
    if (k8sTestsSkipped()) {
      this.skip();
      return;
    }
    this.timeout(30 * 60_000); // a cold helm build takes ~2 min on 2 cores
    ensureK8sTools(['helm']);
  });

  it('passes helm lint --strict with default and custom values', function () {
    this.timeout(60_000);
    const out = helm(['lint', CHART, '--strict']);
    assert.match(out, /0 chart\(s\) failed/);
    const custom = helm(['lint', CHART, '--strict', '--set', 'kubeletDir=/var/lib/k0s/kubelet,node.fuse.enabled=false,metrics.serviceMonitor.enabled=true']);
    assert.match(custom, /0 chart\(s\) failed/);
  });

  describe('default values', () => {
    let objs: K8sObject[];
    before(function () {
      this.timeout(60_000);
      objs = render();
    });

    it('renders the expected set of objects, namespaced ones in the release namespace', () => {
      const kinds = objs.map((o) => o.kind).sort();
      assert.deepEqual(kinds, [
        'CSIDriver',
        'ClusterRole',
        'ClusterRole',
        'ClusterRoleBinding',
        'ClusterRoleBinding',
        'DaemonSet',
        'Deployment',
        'FamfsPool',
        'Role',
        'RoleBinding',
        'Service',
        'Service',
        'ServiceAccount',
        'ServiceAccount',
        'StorageClass',
        'StorageClass',
      ]);
      const clusterScoped = new Set(['CSIDriver', 'ClusterRole', 'ClusterRoleBinding', 'StorageClass', 'FamfsPool']);
      for (const o of objs) {
        if (clusterScoped.has(o.kind)) assert.equal(o.metadata.namespace, undefined, `${o.kind} ${o.metadata.name} is cluster-scoped`);
        else assert.equal(o.metadata.namespace, NAMESPACE, `${o.kind} ${o.metadata.name} namespace`);
      }
    });

    it('CSIDriver: attach required (serial sharing enforced by VolumeAttachments), pod info, capacity', () => {
      const d = find<K8sObject & { spec: Record<string, unknown> }>(objs, 'CSIDriver');
      assert.equal(d.metadata.name, 'famfs.csi.cxl.io');
      assert.equal(d.spec.attachRequired, true);
      assert.equal(d.spec.podInfoOnMount, true);
      assert.equal(d.spec.storageCapacity, true);
      assert.equal(d.spec.fsGroupPolicy, 'None');
      assert.deepEqual(d.spec.volumeLifecycleModes, ['Persistent']);
    });

    it('controller Deployment: driver with its own /healthz, provisioner with topology and capacity, attacher, leader election', () => {
      const dep = find<Workload>(objs, 'Deployment', '-controller');
      assert.equal(dep.spec.replicas, 2);
      const names = dep.spec.template.spec.containers.map((c) => c.name);
      assert.deepEqual(names, ['famfs-csi', 'csi-provisioner', 'csi-attacher']);
      const drv = container(dep, 'famfs-csi');
      for (const a of [
        '--mode=controller',
        '--endpoint=unix:///csi/csi.sock',
        '--device=/dev/dax0.0',
        '--node-id=$(NODE_NAME)',
        '--driver-name=famfs.csi.cxl.io',
        '--state-dir=/var/lib/famfs-csi',
        '--pool=pool0',
        '--metrics-address=:9810',
        '--health-address=:29652',
      ]) {
        assert.ok(drv.args?.includes(a), `controller driver args lack ${a}: ${drv.args?.join(' ')}`);
      }
      assert.equal(drv.env?.find((e) => e.name === 'FAMFS_LEADER_ELECTION')?.value, 'true');
      const prov = container(dep, 'csi-provisioner');
      for (const a of [
        '--strict-topology',
        '--immediate-topology=false',
        '--extra-create-metadata',
        '--enable-capacity',
        '--capacity-ownerref-level=2',
        '--leader-election',
        '--csi-address=/csi/csi.sock',
      ]) {
        assert.ok(prov.args?.includes(a), `provisioner args lack ${a}`);
      }
      assert.ok(container(dep, 'csi-attacher').args?.includes('--leader-election'));
      assert.deepEqual(dep.spec.template.spec.nodeSelector, { 'famfs.csi.cxl.io/master-capable': 'true' });
      assert.equal(dep.spec.template.spec.serviceAccountName, 'famfs-csi-controller');
    });

    it('node DaemonSet: privileged plugin and FUSE server, Bidirectional kubelet dir, registration, /dev', () => {
      const ds = find<Workload>(objs, 'DaemonSet', '-node');
      const names = ds.spec.template.spec.containers.map((c) => c.name);
      assert.deepEqual(names, ['famfs-csi', 'famfs-fused']);
      // Only on nodes labelled as attached to the memory: elsewhere the plugin could not open the device.
      assert.deepEqual(ds.spec.template.spec.nodeSelector, { 'famfs.csi.cxl.io/attached': 'true' });
      // The pause container is the pod's PID 1: a SIGTERM stops famfs-fused and the plugin even while they
      // start (as PID 1 they ignored it then, and an updated pod sat out its grace period: real-node tier).
      assert.equal((ds.spec.template.spec as unknown as { shareProcessNamespace?: boolean }).shareProcessNamespace, true);
      const drv = container(ds, 'famfs-csi');
      assert.equal(drv.securityContext?.privileged, true);
      assert.ok(drv.args?.includes('--mode=node'));
      assert.deepEqual(mount(drv, 'kubelet-dir'), { name: 'kubelet-dir', mountPath: '/var/lib/kubelet', mountPropagation: 'Bidirectional' });
      assert.equal(mount(drv, 'dev').mountPath, '/dev');
      assert.equal(mount(drv, 'state-dir').mountPropagation, 'Bidirectional');

      const fused = container(ds, 'famfs-fused');
      assert.equal(fused.securityContext?.privileged, true);
      // No shell: a `$(dirname "$(VAR)")` in a shell line is a Kubernetes variable reference, not a command substitution.
      assert.deepEqual((fused as Container & { command?: string[] }).command, ['famfs-fused']);
      assert.deepEqual(fused.args?.slice(0, 5), [
        '$(FAMFS_DEVICE)',
        '$(FAMFS_FUSE_MOUNTPOINT)',
        '--foreground',
        '--container',
        '--control-socket=$(FAMFS_CONTROL_SOCKET)',
      ]);
      for (const a of fused.args ?? []) assert.ok(!/\$\([a-z]/.test(a), `shell syntax Kubernetes would expand: ${a}`);
      // The paths the node plugin looks for its FUSE server at (pkg/fuse/supervisor.ts).
      assert.equal(fused.env?.find((e) => e.name === 'FAMFS_FUSE_MOUNTPOINT')?.value, '/var/lib/famfs-csi/mnt/pool0');
      assert.equal(fused.env?.find((e) => e.name === 'FAMFS_CONTROL_SOCKET')?.value, '/var/lib/famfs-csi/fused/pool0/sock');
      // The fd deposit: famfs-fused deposits its FUSE connection where the plugin holds it (next to the control socket).
      assert.ok(fused.args?.includes('--fd-deposit=$(FAMFS_FD_DEPOSIT)'));
      // The chart's readahead is the server's own default (the measured best, docs/fuse.md).
      assert.ok(fused.args?.includes(`--readahead-kb=${DEFAULT_READAHEAD_KB}`), `${fused.args?.join(' ')}`);
      assert.equal(fused.env?.find((e) => e.name === 'FAMFS_FD_DEPOSIT')?.value, depositSocketFor('/var/lib/famfs-csi/fused/pool0/sock'));
      assert.ok(drv.args?.includes('--fuse-orphan-timeout=120000'));
      assert.ok(drv.args?.includes('--allowed-path-root=/var/lib/kubelet'));
      // Host identity: famfs names the master by /opt/famfs/system_uuid, so it must be the host's file.
      for (const c of [drv, fused]) assert.equal(mount(c, 'famfs-identity').mountPath, '/opt/famfs');
      assert.equal(mount(fused, 'state-dir').mountPropagation, 'Bidirectional');
      // The FUSE server must not depend on the plugin's socket: it lives on when the plugin restarts.
      assert.ok(!(fused.volumeMounts ?? []).some((m) => m.name === 'plugin-dir'));

      // The plugin registers itself (pkg/csi/registration.ts) and serves the kubelet's liveness probe.
      for (const a of [
        '--kubelet-registration-dir=/registration',
        '--kubelet-registration-path=/var/lib/kubelet/plugins/famfs.csi.cxl.io/csi.sock',
        '--health-address=:29653',
      ]) {
        assert.ok(drv.args?.includes(a), `node plugin args lack ${a}: ${drv.args?.join(' ')}`);
      }
      assert.equal(mount(drv, 'registration-dir').mountPath, '/registration');
      const vols = new Map(ds.spec.template.spec.volumes.map((v) => [v.name, v.hostPath?.path]));
      assert.equal(vols.get('registration-dir'), '/var/lib/kubelet/plugins_registry');
      assert.equal(vols.get('plugin-dir'), '/var/lib/kubelet/plugins/famfs.csi.cxl.io');
      assert.equal(vols.get('dev'), '/dev');
    });

    it('privileges only where needed: every sidecar unprivileged, no capabilities, read-only root', () => {
      const privileged: string[] = [];
      for (const w of [find<Workload>(objs, 'Deployment'), find<Workload>(objs, 'DaemonSet')]) {
        for (const c of w.spec.template.spec.containers) {
          if (SIDECARS.includes(c.name)) assertUnprivilegedSidecar(c);
          if (c.securityContext?.privileged === true) privileged.push(`${w.kind}/${c.name}`);
          // Only the node plugin needs mount propagation back to the host.
          for (const m of c.volumeMounts ?? []) {
            if (m.mountPropagation === 'Bidirectional') assert.equal(w.kind, 'DaemonSet', `${c.name} mounts ${m.name} Bidirectional`);
          }
        }
      }
      assert.deepEqual(privileged.sort(), ['DaemonSet/famfs-csi', 'DaemonSet/famfs-fused', 'Deployment/famfs-csi']);
    });

    it('RBAC is least privilege: no wildcards, no secrets, leases namespaced, node role read-mostly', () => {
      const roles = objs.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role') as (K8sObject & { rules: PolicyRule[] })[];
      for (const r of roles) {
        for (const rule of r.rules) {
          assert.ok(!rule.verbs.includes('*') && !rule.resources.includes('*') && !rule.apiGroups.includes('*'), `${r.metadata.name} has a wildcard`);
          assert.ok(!rule.resources.includes('secrets'), `${r.metadata.name} grants secrets`);
        }
      }
      const grants = (name: string, group: string, resource: string, verb: string): boolean =>
        roles
          .filter((r) => r.metadata.name.endsWith(name))
          .some((r) => r.rules.some((x) => x.apiGroups.includes(group) && x.resources.includes(resource) && x.verbs.includes(verb)));
      const clusterRole = (suffix: string) => find<K8sObject & { rules: PolicyRule[] }>(objs, 'ClusterRole', suffix);
      assert.ok(grants('-controller', '', 'persistentvolumes', 'create'));
      assert.ok(grants('-controller', 'storage.k8s.io', 'volumeattachments/status', 'patch'));
      assert.ok(grants('-controller', 'famfs.csi.cxl.io', 'famfspools/status', 'update'));
      const nsRole = find<K8sObject & { rules: PolicyRule[] }>(objs, 'Role', '-controller');
      assert.ok(nsRole.rules.some((x) => x.resources.includes('leases') && x.verbs.includes('update')));
      assert.ok(nsRole.rules.some((x) => x.resources.includes('csistoragecapacities') && x.verbs.includes('create')));
      assert.ok(!clusterRole('-controller').rules.some((x) => x.resources.includes('leases')), 'leases must only be granted in the namespace');
      const node = clusterRole('-node');
      assert.ok(!node.rules.some((x) => x.resources.includes('persistentvolumes')), 'node plugin must not touch PVs');
      assert.ok(!node.rules.some((x) => x.resources.includes('famfspools') && x.verbs.some((v) => v !== 'get' && v !== 'list' && v !== 'watch')));
    });

    it('StorageClasses: serial and read-only sharing, waiting for the first consumer', () => {
      type SC = K8sObject & {
        provisioner: string;
        parameters: Record<string, string>;
        volumeBindingMode: string;
        reclaimPolicy: string;
        allowVolumeExpansion: boolean;
      };
      const scs = objs.filter((o) => o.kind === 'StorageClass') as SC[];
      const byName = new Map(scs.map((s) => [s.metadata.name, s]));
      const serial = byName.get('famfs-serial');
      const ro = byName.get('famfs-readonly');
      assert.ok(serial && ro);
      assert.equal(serial.provisioner, 'famfs.csi.cxl.io');
      // Only keys the driver accepts (pkg/csi/params.ts); read-only sharing is the ROX access mode.
      assert.deepEqual(serial.parameters, { sharing: 'serial' });
      assert.equal(ro.parameters, undefined);
      for (const s of scs) {
        assert.equal(s.volumeBindingMode, 'WaitForFirstConsumer');
        assert.equal(s.allowVolumeExpansion, false);
      }
      assert.equal(ro.reclaimPolicy, 'Delete', 'shares are freed with the last of them: Retain would leak');
    });

    it('metrics Services select the controller and node pods; no ServiceMonitor unless asked', () => {
      const svcs = objs.filter((o) => o.kind === 'Service') as (K8sObject & { spec: { selector: Record<string, string>; ports: { port: number }[] } })[];
      const comp = svcs.map((s) => [s.spec.selector['app.kubernetes.io/component'], s.spec.ports[0]?.port]).sort();
      assert.deepEqual(comp, [
        ['controller', 9810],
        ['node', 9811],
      ]);
      assert.ok(!objs.some((o) => o.kind === 'ServiceMonitor'));
    });

    it('the FamfsPool object matches the CRD shipped in crds/', function () {
      this.timeout(60_000);
      const withCrds = render({ includeCrds: true });
      type CRD = K8sObject & {
        spec: { group: string; scope: string; names: { kind: string }; versions: { name: string; subresources?: { status?: object } }[] };
      };
      const crd = find<CRD>(withCrds, 'CustomResourceDefinition');
      assert.equal(crd.metadata.name, 'famfspools.famfs.csi.cxl.io');
      assert.equal(crd.spec.scope, 'Cluster');
      const pool = find<K8sObject & { spec: { device: string } }>(objs, 'FamfsPool');
      assert.equal(pool.apiVersion, `${crd.spec.group}/${crd.spec.versions[0]?.name}`);
      assert.ok(crd.spec.versions[0]?.subresources?.status, 'status must be a subresource (controller writes it separately)');
      assert.equal(pool.metadata.name, 'pool0');
      assert.equal(pool.spec.device, '/dev/dax0.0');
    });
  });

  describe('custom values', () => {
    it('kubeletDir, driver name, pool and device flow into every path and argument', function () {
      this.timeout(60_000);
      const objs = render({
        valuesYaml: [
          'driverName: famfs.example.org',
          'kubeletDir: /var/lib/k0s/kubelet/',
          'pool: { name: rack7, device: /dev/dax3.1, stateDir: /srv/famfs, createResource: true }',
          'image: { famfs: { repository: reg.local/famfs, tag: "9.9.9" } }',
        ].join('\n'),
      });
      const ds = find<Workload>(objs, 'DaemonSet');
      const drv = container(ds, 'famfs-csi');
      assert.equal(drv.image, 'reg.local/famfs:9.9.9');
      assert.ok(drv.args?.includes('--device=/dev/dax3.1'));
      assert.ok(drv.args?.includes('--driver-name=famfs.example.org'));
      assert.ok(drv.args?.includes('--pool=rack7'));
      assert.equal(mount(drv, 'kubelet-dir').mountPath, '/var/lib/k0s/kubelet');
      assert.ok(drv.args?.includes('--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/famfs.example.org/csi.sock'));
      assert.equal(container(ds, 'famfs-fused').env?.find((e) => e.name === 'FAMFS_FUSE_MOUNTPOINT')?.value, '/srv/famfs/mnt/rack7');
      assert.ok(drv.args?.includes('--allowed-path-root=/var/lib/k0s/kubelet'));
      assert.equal(find(objs, 'CSIDriver').metadata.name, 'famfs.example.org');
      for (const sc of objs.filter((o) => o.kind === 'StorageClass') as (K8sObject & { provisioner: string })[]) {
        assert.equal(sc.provisioner, 'famfs.example.org');
      }
      assert.equal(find(objs, 'FamfsPool').metadata.name, 'rack7');
    });

    it('upstreamSidecars: node-driver-registrar and livenessprobe instead of the built-in registration and /healthz', function () {
      this.timeout(60_000);
      const up = render({ set: ['upstreamSidecars.nodeDriverRegistrar=true', 'upstreamSidecars.livenessProbe=true'] });
      const ds = find<Workload>(up, 'DaemonSet');
      assert.deepEqual(
        ds.spec.template.spec.containers.map((c) => c.name),
        ['famfs-csi', 'famfs-fused', 'node-driver-registrar', 'liveness-probe'],
      );
      const drv = container(ds, 'famfs-csi');
      assert.ok(!drv.args?.some((a) => a.startsWith('--kubelet-registration') || a.startsWith('--health-address')), drv.args?.join(' '));
      const reg = container(ds, 'node-driver-registrar');
      assert.ok(reg.args?.includes('--kubelet-registration-path=/var/lib/kubelet/plugins/famfs.csi.cxl.io/csi.sock'));
      assert.equal(mount(reg, 'registration-dir').mountPath, '/registration');
      assert.ok(container(ds, 'liveness-probe').args?.includes('--health-port=29653'));
      const dep = find<Workload>(up, 'Deployment');
      assert.deepEqual(
        dep.spec.template.spec.containers.map((c) => c.name),
        ['famfs-csi', 'csi-provisioner', 'csi-attacher', 'liveness-probe'],
      );
      for (const c of [...ds.spec.template.spec.containers, ...dep.spec.template.spec.containers]) if (SIDECARS.includes(c.name)) assertUnprivilegedSidecar(c);
    });

    it('hostNetwork binds the HTTP endpoints to the pod IP; kubeApiServer reaches every API client', function () {
      this.timeout(60_000);
      const objs = render({ set: ['hostNetwork=true', 'kubeApiServer=127.0.0.1:6443'] });
      for (const w of [find<Workload>(objs, 'DaemonSet'), find<Workload>(objs, 'Deployment')]) {
        const spec = w.spec.template.spec as unknown as { hostNetwork?: boolean; dnsPolicy?: string };
        assert.equal(spec.hostNetwork, true, w.kind);
        assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet', w.kind);
        const drv = container(w, 'famfs-csi');
        assert.ok(
          drv.args?.some((a) => /^--health-address=\$\(POD_IP\):\d+$/.test(a)),
          drv.args?.join(' '),
        );
        assert.ok(
          drv.args?.some((a) => /^--metrics-address=\$\(POD_IP\):\d+$/.test(a)),
          drv.args?.join(' '),
        );
        // Declared ports would be host ports: the surge pod of an update could never be scheduled next to the old one.
        for (const x of w.spec.template.spec.containers)
          assert.equal((x as Container & { ports?: unknown[] }).ports, undefined, `${w.kind}/${x.name} declares ports`);
      }
      const dep = find<Workload>(objs, 'Deployment');
      for (const name of ['famfs-csi', 'csi-provisioner', 'csi-attacher']) {
        const env = container(dep, name).env ?? [];
        assert.equal(env.find((e) => e.name === 'KUBERNETES_SERVICE_HOST')?.value, '127.0.0.1', name);
        assert.equal(env.find((e) => e.name === 'KUBERNETES_SERVICE_PORT')?.value, '6443', name);
      }
      const bad = runTool('helm', ['template', 't', CHART, '--set', 'kubeApiServer=nohost']);
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /kubeApiServer "nohost": expected host:port/);
    });

    it('switches: no FUSE container, no leader election, no metrics, ServiceMonitor, single replica', function () {
      this.timeout(60_000);
      const off = render({ set: ['node.fuse.enabled=false', 'controller.leaderElection.enabled=false', 'metrics.enabled=false', 'controller.replicas=1'] });
      const ds = find<Workload>(off, 'DaemonSet');
      assert.ok(!hasContainer(ds, 'famfs-fused'));
      const dep = find<Workload>(off, 'Deployment');
      assert.equal(dep.spec.replicas, 1);
      assert.ok(!container(dep, 'csi-provisioner').args?.includes('--leader-election'));
      assert.equal(container(dep, 'famfs-csi').env?.find((e) => e.name === 'FAMFS_LEADER_ELECTION')?.value, 'false');
      assert.ok(!off.some((o) => o.kind === 'Service'));

      const sm = render({ set: ['metrics.serviceMonitor.enabled=true', 'metrics.serviceMonitor.labels.release=prom'] });
      const monitors = sm.filter((o) => o.kind === 'ServiceMonitor');
      assert.equal(monitors.length, 2);
      for (const m of monitors) assert.equal(m.metadata.labels?.release, 'prom');

      const noRbac = render({ set: ['rbac.create=false', 'serviceAccount.create=false', 'pool.createResource=false'] });
      assert.ok(!noRbac.some((o) => /Role|ServiceAccount|FamfsPool/.test(o.kind)));
    });

    it('refuses a StorageClass without a sharing mode or with an unknown one (enabled or not), and duplicate names', function () {
      this.timeout(60_000);
      const res = runTool('helm', ['template', 'rel', CHART, '--set', 'storageClasses[0].name=x,storageClasses[0].enabled=true']);
      assert.notEqual(res.status, 0);
      assert.match(res.stderr, /storageClasses\[0\] \(x\): sharing is required \(serial, readonly or multi-writer\)/);
      const bad = runTool('helm', [
        'template',
        'rel',
        CHART,
        '--set',
        'storageClasses[0].name=x,storageClasses[0].enabled=true,storageClasses[0].sharing=shared',
      ]);
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /storageClasses\[0\] \(x\): sharing "shared" is not a famfs sharing mode; use serial .*, readonly .* or multi-writer/);
      const disabled = runTool('helm', [
        'template',
        'rel',
        CHART,
        '--set-json',
        'storageClasses=[{"name":"famfs-serial","enabled":true,"sharing":"serial"},{"name":"famfs-readonly","enabled":false,"sharing":"read-only"}]',
      ]);
      assert.notEqual(disabled.status, 0, 'a typo in a disabled class is refused too');
      assert.match(disabled.stderr, /storageClasses\[1\] \(famfs-readonly\): sharing "read-only" is not a famfs sharing mode/);
      const twice = runTool('helm', [
        'template',
        'rel',
        CHART,
        '--set-json',
        'storageClasses=[{"name":"famfs-serial","sharing":"serial"},{"name":"famfs-serial","sharing":"readonly"}]',
      ]);
      assert.notEqual(twice.status, 0);
      assert.match(twice.stderr, /storageClasses\[1\]\.name "famfs-serial" is used twice/);
      for (const sharing of ['serial', 'readonly', 'multi-writer']) {
        const good = runTool('helm', ['template', 'rel', CHART, '--set', `storageClasses[0].name=x,storageClasses[0].sharing=${sharing}`]);
        assert.equal(good.status, 0, `sharing=${sharing}: ${good.stderr}`);
      }
    });

    it('refuses controller.replicas > 1 with leader election off (two masters); 1 replica without it, or many with it, render', function () {
      this.timeout(60_000);
      const two = runTool('helm', ['template', 'rel', CHART, '--set', 'controller.leaderElection.enabled=false']);
      assert.notEqual(two.status, 0);
      assert.match(
        two.stderr,
        /controller\.replicas=2 with controller\.leaderElection\.enabled=false: every replica would take the famfs master role.*Set controller\.replicas=1/,
      );
      const three = runTool('helm', ['template', 'rel', CHART, '--set', 'controller.leaderElection.enabled=false,controller.replicas=3']);
      assert.match(three.stderr, /controller\.replicas=3 with/);
      assert.equal(find<Workload>(render({ set: ['controller.leaderElection.enabled=false', 'controller.replicas=1'] }), 'Deployment').spec.replicas, 1);
      assert.equal(find<Workload>(render({ set: ['controller.replicas=3'] }), 'Deployment').spec.replicas, 3);
    });

    it('snapshotter.enabled ships csi-snapshotter (unprivileged, leader-elected), its RBAC and a VolumeSnapshotClass; off by default', function () {
      this.timeout(60_000);
      const off = render();
      assert.ok(!hasContainer(find<Workload>(off, 'Deployment'), 'csi-snapshotter'));
      assert.ok(!JSON.stringify(off).includes('snapshot.storage.k8s.io'), 'no snapshot RBAC or class unless asked');
      const on = render({ set: ['controller.snapshotter.enabled=true'] });
      const snap = container(find<Workload>(on, 'Deployment'), 'csi-snapshotter');
      assertUnprivilegedSidecar(snap);
      assert.ok(snap.args?.includes('--csi-address=/csi/csi.sock'));
      assert.ok(snap.args?.includes('--leader-election'));
      mount(snap, 'socket-dir');
      const role = on.find((o) => o.kind === 'ClusterRole' && o.metadata.name.endsWith('-controller')) as K8sObject & { rules: PolicyRule[] };
      const can = (resource: string, verb: string) =>
        role.rules.some((r) => r.apiGroups.includes('snapshot.storage.k8s.io') && r.resources.includes(resource) && r.verbs.includes(verb));
      assert.ok(
        can('volumesnapshotcontents', 'update') &&
          can('volumesnapshotcontents/status', 'patch') &&
          can('volumesnapshotclasses', 'list') &&
          can('volumesnapshots', 'get'),
      );
      assert.ok(!can('volumesnapshots', 'delete'), "the sidecar never deletes users' VolumeSnapshots");
      const cls = find<K8sObject & { driver: string; deletionPolicy: string }>(on, 'VolumeSnapshotClass');
      assert.equal(cls.driver, 'famfs.csi.cxl.io');
      assert.equal(cls.deletionPolicy, 'Delete');
    });

    it('passes driver parameters through and adds a multi-writer class on request', function () {
      this.timeout(60_000);
      const objs = render({
        valuesYaml:
          'storageClasses:\n  - { name: famfs-striped, enabled: true, sharing: multi-writer, parameters: { nstrips: 4, nbuckets: 8, mode: "0600" } }\n',
      });
      const sc = find<K8sObject & { parameters: Record<string, string> }>(objs, 'StorageClass');
      assert.deepEqual(sc.parameters, { sharing: 'multi-writer', nstrips: '4', nbuckets: '8', mode: '0600' });
    });
  });
});
