// Security (issue 6, item 7), with real mounts, real mount namespaces and a real unprivileged uid:
//   - a pod's target shows its own volume and nothing else (no sibling volumes, no .meta, no way up);
//   - a read-only publish refuses write(2), O_RDWR, mmap(PROT_WRITE); remount,rw is refused in a
//     pod-like user+mount namespace (the mount is locked read-only there); root with CAP_SYS_ADMIN
//     in the host's user namespace CAN remount its own copy rw, and its write still fails (EROFS:
//     famfs-fused's read-only guard);
//   - the CSI socket and the FUSE control socket are root-only, and uid 65534 cannot connect;
//   - staging/target paths cannot escape the kubelet directories (symlinks, "..");
//   - the chart: privileged only where mounting or the devdax device need it, the rest drop every
//     capability and cannot escalate.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { parseAllDocuments } from 'yaml';
import { findMount, readMountinfo } from '../pkg/mount/mountinfo';
import { ensureK8sTools, k8sTestsSkipped, repoRoot, runTool } from './helpers/toolchain';
import { canMount, codeOf, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';
import { errnoOf } from './soak/reliability-lib';

const SNW = mountCap('SINGLE_NODE_WRITER');

/** Runs a shell script in a new mount namespace (optionally a new user namespace, root mapped). */
function inNamespace(script: string, userNs: boolean): { status: number | null; out: string } {
  const args = userNs ? ['-U', '-r', '-m', '--propagation', 'private', 'sh', '-c', script] : ['-m', '--propagation', 'private', 'sh', '-c', script];
  const r = spawnSync('unshare', args, { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Tries to connect to a unix socket as uid/gid 65534; prints CONNECTED or the errno. */
function connectAsNobody(socket: string): string {
  const js = `const s=require('net').connect(process.argv[1]);s.on('connect',()=>{console.log('CONNECTED');s.destroy()});s.on('error',e=>console.log(e.code))`;
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', js, socket], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  return (r.stdout || r.stderr).trim();
}

(canMount ? describe : describe.skip)('security: isolation, read-only, sockets, paths', function () {
  this.timeout(60_000);
  let env: NodeTestEnv;
  let a: NodePlugin;
  let mine: string;
  let sibling: string;
  const staging = (id: string) => env.staging('node-a', id);

  before(async () => {
    env = new NodeTestEnv('security', 128 * MiB);
    a = await env.startNode('node-a');
    mine = env.createVolume('mine', 2 * MiB, { mode: 0o666 });
    sibling = env.createVolume('sibling', 2 * MiB, { mode: 0o666 });
    for (const id of [mine, sibling]) await a.call('NodeStageVolume', { volume_id: id, staging_target_path: staging(id), volume_capability: SNW });
  });
  after(async () => {
    await env?.close();
  });

  it("a pod's target shows only its own volume: one directory, one file, nothing above it", async () => {
    const target = env.target('pod-iso');
    await a.call('NodePublishVolume', { volume_id: mine, staging_target_path: staging(mine), target_path: target, volume_capability: SNW });
    fs.writeFileSync(path.join(target, 'data'), 'mine', { flag: 'r+' });
    // What a container sees: the target bound somewhere in its own mount namespace.
    const r = inNamespace(
      `mkdir -p /tmp/podview-$$ && mount --bind '${target}' /tmp/podview-$$ && ls -a /tmp/podview-$$ ; umount /tmp/podview-$$; rmdir /tmp/podview-$$`,
      false,
    );
    assert.equal(r.status, 0, r.out);
    assert.deepEqual(r.out.split('\n'), ['.', '..', 'data'], 'exactly the volume file');
    assert.ok(!r.out.includes('.meta') && !r.out.includes(sibling) && !r.out.includes('csi'));
    const m = await findMount(target);
    assert.equal(m?.root, `/csi/${mine}`, 'the bind exposes the volume directory, not the famfs root');
    // The pod cannot add names (no symlink out, no new file, no directory): famfs files are made by the master only.
    assert.notEqual(
      errnoOf(() => fs.symlinkSync('/etc/shadow', path.join(target, 'evil'))),
      'OK',
    );
    assert.notEqual(
      errnoOf(() => fs.writeFileSync(path.join(target, 'new'), 'x')),
      'OK',
    );
    assert.notEqual(
      errnoOf(() => fs.mkdirSync(path.join(target, 'd'))),
      'OK',
    );
    assert.notEqual(
      errnoOf(() => fs.renameSync(path.join(target, 'data'), path.join(target, 'moved'))),
      'OK',
    );
    assert.deepEqual(fs.readdirSync(target), ['data']);
    await a.call('NodeUnpublishVolume', { volume_id: mine, target_path: target });
  });

  it('a read-only publish: write(2), O_RDWR and mmap(PROT_WRITE) fail; remount,rw fails in a pod-like user namespace', async () => {
    const target = env.target('pod-ro');
    await a.call('NodePublishVolume', { volume_id: mine, staging_target_path: staging(mine), target_path: target, volume_capability: SNW, readonly: true });
    const file = path.join(target, 'data');
    assert.equal(
      errnoOf(() => fs.openSync(file, 'r+')),
      'EROFS',
    );
    assert.equal(
      errnoOf(() => fs.writeFileSync(file, 'x', { flag: 'a' })),
      'EROFS',
    );
    const py = `import mmap,os,sys,errno
fd=os.open(sys.argv[1],os.O_RDONLY)
try:
    mmap.mmap(fd,4096,mmap.MAP_SHARED,mmap.PROT_READ|mmap.PROT_WRITE);print("OK")
except OSError as e:
    print(errno.errorcode[e.errno])`;
    assert.equal(spawnSync('python3', ['-c', py, file], { encoding: 'utf8' }).stdout.trim(), 'EACCES');

    // A pod: its own user namespace (root inside, nobody outside) and mount namespace. The ro flag
    // of a mount inherited from a more privileged namespace is locked: remount,rw is refused.
    const pod = inNamespace(`mount -o remount,rw,bind '${target}' 2>&1; echo rc=$?; echo probe >> '${file}' 2>&1; echo wrc=$?`, true);
    assert.match(pod.out, /rc=(?!0)\d+/, `remount,rw inside a user namespace must fail: ${pod.out}`);
    assert.match(pod.out, /wrc=(?!0)\d+/, `and the write after it too: ${pod.out}`);

    // Root with CAP_SYS_ADMIN in the host user namespace can flip its own copy of the mount to rw, but
    // famfs-fused's read-only guard still refuses the write: this node serves the file only read-only.
    const root = inNamespace(`mount -o remount,rw,bind '${target}' 2>&1; echo rc=$?; echo probe >> '${file}' 2>&1; echo wrc=$?`, false);
    assert.match(root.out, /rc=0/, `remount,rw as host-namespace root succeeds (what the guard is for): ${root.out}`);
    assert.match(root.out, /wrc=(?!0)\d+/, `and the write after it fails: ${root.out}`);
    assert.match(root.out, /Read-only file system/, `with EROFS: ${root.out}`);
    assert.ok((await findMount(target))?.mountOptions.includes('ro'), "the host's (kubelet's) mount stays ro whatever a namespace did to its copy");
    await a.call('NodeUnpublishVolume', { volume_id: mine, target_path: target });
  });

  it('the CSI socket and the FUSE control socket are root-only; uid 65534 cannot connect', async () => {
    const csiSock = a.endpoint.replace(/^unix:\/\//, '');
    const ctlSock = a.driver.node!.fuse.socketPath;
    for (const s of [csiSock, ctlSock]) {
      const st = fs.statSync(s);
      assert.ok(st.isSocket());
      assert.equal(st.uid, 0, `${s} owned by root`);
      assert.equal(st.mode & 0o777, 0o600, `${s} mode 0${(st.mode & 0o777).toString(8)}`);
      assert.equal(connectAsNobody(s), 'EACCES', `uid 65534 connecting to ${s}`);
    }
    assert.equal(fs.statSync(path.dirname(ctlSock)).mode & 0o077, 0, 'the control socket directory is private');
    // Root still connects (the check above can fail).
    assert.equal(await codeOf(a.call('NodeGetCapabilities', {})), 'OK');
  });

  it('no request path escapes the kubelet directories (symlinks, "..", the root itself); nothing is mounted outside', async () => {
    const outside = fs.mkdtempSync(path.join(env.dir, 'outside-'));
    const link = path.join(env.kubelet, 'pods', 'evil-link');
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync(outside, link);
    const before = (await readMountinfo()).length;
    const tries = [
      path.join(link, 'mount'),
      link, // the last component itself a symlink out
      `${env.kubelet}/pods/../../outside/mount`,
      `${env.kubelet}/pods/x/../../../etc`,
      env.kubelet,
      '/etc',
      path.join(outside, 'mount'),
    ];
    for (const t of tries) {
      const code = await codeOf(a.call('NodePublishVolume', { volume_id: mine, staging_target_path: staging(mine), target_path: t, volume_capability: SNW }));
      assert.equal(code, 'INVALID_ARGUMENT', `publish to ${t}`);
      const code2 = await codeOf(a.call('NodeStageVolume', { volume_id: mine, staging_target_path: t, volume_capability: SNW }));
      assert.equal(code2, 'INVALID_ARGUMENT', `stage at ${t}`);
    }
    assert.deepEqual(fs.readdirSync(outside), [], 'nothing created outside');
    assert.equal((await readMountinfo()).length, before, 'nothing mounted');
  });
});

describe('security: the chart runs every container that can without privilege', function () {
  this.timeout(300_000);
  before(function () {
    if (k8sTestsSkipped()) this.skip();
    ensureK8sTools(['helm']);
  });

  it('privileged only for the node plugin, the FUSE server and (devdax) the controller; the rest drop all capabilities and cannot escalate', () => {
    const r = runTool('helm', ['template', 'rel', path.join(repoRoot(), 'charts', 'famfs-csi'), '--namespace', 'famfs']);
    assert.equal(r.status, 0, r.stderr);
    interface Ctr {
      name: string;
      securityContext?: { privileged?: boolean; allowPrivilegeEscalation?: boolean; runAsNonRoot?: boolean; capabilities?: { drop?: string[] } };
    }
    const rows: { workload: string; name: string; privileged: boolean; dropsAll: boolean; noEscalation: boolean; nonRoot: boolean }[] = [];
    for (const d of parseAllDocuments(r.stdout)) {
      const o = d.toJSON() as {
        kind?: string;
        metadata?: { name: string };
        spec?: { template?: { spec?: { containers?: Ctr[]; initContainers?: Ctr[]; securityContext?: { runAsNonRoot?: boolean } } } };
      } | null;
      const pod = o?.spec?.template?.spec;
      if (!pod) continue;
      for (const c of [...(pod.containers ?? []), ...(pod.initContainers ?? [])]) {
        const sc = c.securityContext ?? {};
        rows.push({
          workload: `${o.kind}/${o.metadata!.name}`,
          name: c.name,
          privileged: sc.privileged === true,
          dropsAll: sc.capabilities?.drop?.includes('ALL') === true,
          noEscalation: sc.allowPrivilegeEscalation === false,
          nonRoot: sc.runAsNonRoot === true || pod.securityContext?.runAsNonRoot === true,
        });
      }
    }
    assert.ok(rows.length >= 4, 'found the workloads');
    const privileged = rows.filter((x) => x.privileged).map((x) => `${x.workload}:${x.name}`);
    for (const p of privileged)
      assert.match(p, /node.*:(famfs-csi|node|plugin|fuse|famfs-fused)|controller.*:(famfs-csi|controller)/i, `unexpected privileged container ${p}`);
    for (const x of rows.filter((y) => !y.privileged)) {
      assert.ok(x.dropsAll && x.noEscalation, `${x.workload}:${x.name} must drop ALL capabilities and forbid escalation`);
    }
    console.log(
      `      containers: ${rows.length}, privileged: ${privileged.join(', ')}; runAsNonRoot: ${rows.filter((x) => x.nonRoot).length} (sidecars run as uid 0 without capabilities: the CSI socket is root-only 0600)`,
    );
  });
});
