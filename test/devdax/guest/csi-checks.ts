/**
 * Guest check: the CSI node path on the real devdax (issue 7, item 4).
 *
 * Guest A (the famfs master) runs a famfs-csi controller and a famfs-csi node plugin, as a cluster
 * would: the controller creates a volume and attaches it to A (ControllerPublish); A's node plugin
 * stages and publishes it and writes a payload through the target path (through the FUSE server,
 * into the devdax), then unpublishes and unstages (the hand-off flush). Attaching to B is refused
 * while A holds it (serial sharing), then allowed once A is detached.
 * Guest B runs famfs-csi in "node" mode: it stages and publishes the volume that A's controller
 * made, and a pod-like process in its own mount namespace reads exactly A's bytes through a bind
 * mount of the target path. The host checks the volume file's extents in the backing file.
 */
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { CsiClient } from '../../../pkg/csi/client.js';
import type { CreateVolumeResponse } from '../../../pkg/csi/types.js';
import { assertThat, awaitSignal, hostVerify, payload, result, runGuestCheck, signal, type GuestContext } from './report.js';

const PROJ = path.resolve(__dirname, '..', '..', '..', '..');
const MiB = 1024 * 1024;
const VOLUME_BYTES = 4 * MiB;
const PAYLOAD_BYTES = 3 * MiB + 4321;
const CAP = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const KUBELET = '/var/lib/kubelet';

interface VolumeInfo {
  volumeId: string;
  context: Record<string, string>;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Starts famfs-csi as its own process and waits for its socket. */
/** Every plugin this check started, so none outlives it whatever fails. */
const started: ChildProcess[] = [];

async function startPlugin(ctx: GuestContext, mode: 'controller' | 'node', sock: string): Promise<ChildProcess> {
  fs.mkdirSync(path.dirname(sock), { recursive: true });
  const logFile = path.join(ctx.run, ctx.role, `famfs-csi-${mode}.log`);
  const log = fs.openSync(logFile, 'a');
  const child = spawn(
    process.execPath,
    [
      path.join(PROJ, 'dist', 'cmd', 'famfs-csi.js'),
      '--mode',
      mode,
      '--device',
      ctx.dax,
      '--endpoint',
      `unix://${sock}`,
      '--node-id',
      `guest-${ctx.role.toLowerCase()}`,
      '--state-dir',
      `/tmp/famfs-csi-${mode}`,
      '--pool',
      'devdax',
      // The controller (on the master) formats the device when this check runs alone.
      // No Kubernetes here: the controller publishes only to the nodes it is told about.
      ...(mode === 'controller' ? ['--mkfs', '--nodes', 'guest-a,guest-b'] : []),
    ],
    { stdio: ['ignore', log, log] },
  );
  started.push(child);
  const deadline = Date.now() + 60_000;
  while (!fs.existsSync(sock)) {
    if (child.exitCode !== null) throw new Error(`famfs-csi exited ${child.exitCode}: ${fs.readFileSync(logFile, 'utf8').slice(-800)}`);
    if (Date.now() > deadline) throw new Error('famfs-csi did not open its socket in 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return child;
}

/** SIGTERM, as kubelet stops a pod; reports how long the plugin took to exit (SIGKILL after 20 s). */
async function stopPlugin(ctx: GuestContext, child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const t0 = Date.now();
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 20_000)))]);
  clearTimeout(timer); // a pending timer would keep this process alive for nothing
  const ms = Date.now() - t0;
  const name = `plugin-${child.spawnargs[3] ?? 'famfs-csi'}-sigterm-exit`;
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    result(ctx, name, 'fail', `famfs-csi was still running ${ms} ms after SIGTERM (killed)`);
  } else {
    result(ctx, name, 'ok', `famfs-csi exited ${ms} ms after SIGTERM (code ${child.exitCode}, signal ${child.signalCode})`, { ms });
  }
}

async function step(ctx: GuestContext, name: string, fn: () => Promise<string>): Promise<boolean> {
  try {
    result(ctx, name, 'ok', await fn());
    return true;
  } catch (e) {
    result(ctx, name, 'fail', errText(e));
    return false;
  }
}

/** Keeps the logs of the FUSE servers the plugin started (they live in the guest's tmpfs). */
function keepFusedLogs(ctx: GuestContext): void {
  const root = '/tmp/famfs-csi-node/fused';
  if (!fs.existsSync(root)) return;
  for (const pool of fs.readdirSync(root)) {
    const log = path.join(root, pool, 'famfs-fused.log');
    if (fs.existsSync(log)) fs.copyFileSync(log, path.join(ctx.run, ctx.role, `csi-famfs-fused-${pool}.log`));
  }
}

async function stageAndPublish(client: CsiClient, vol: VolumeInfo, pod: string): Promise<{ staging: string; target: string }> {
  const staging = path.join(KUBELET, 'plugins', 'kubernetes.io', 'csi', 'famfs', vol.volumeId, 'globalmount');
  const target = path.join(KUBELET, 'pods', pod, 'volumes', 'kubernetes.io~csi', 'pv', 'mount');
  // As kubelet does: it makes the pod's volume directory, the plugin makes (and removes) the target.
  fs.mkdirSync(path.dirname(target), { recursive: true });
  await client.call('Node', 'NodeStageVolume', { volume_id: vol.volumeId, staging_target_path: staging, volume_capability: CAP, volume_context: vol.context });
  await client.call('Node', 'NodePublishVolume', {
    volume_id: vol.volumeId,
    staging_target_path: staging,
    target_path: target,
    volume_capability: CAP,
    volume_context: vol.context,
    readonly: false,
  });
  return { staging, target };
}

async function unpublishAndUnstage(client: CsiClient, vol: VolumeInfo, paths: { staging: string; target: string }): Promise<void> {
  await client.call('Node', 'NodeUnpublishVolume', { volume_id: vol.volumeId, target_path: paths.target });
  await client.call('Node', 'NodeUnstageVolume', { volume_id: vol.volumeId, staging_target_path: paths.staging });
}

async function guestA(ctx: GuestContext): Promise<void> {
  // As on a cluster: a controller (Deployment) and a node plugin (DaemonSet) on this host.
  const ctlSock = '/run/famfs-csi/controller.sock';
  const nodeSock = '/run/famfs-csi/node.sock';
  // The controller first: it formats the device when this check runs alone.
  const controller = await startPlugin(ctx, 'controller', ctlSock);
  signal(ctx, 'csi-controller-up');
  const nodePlugin = await startPlugin(ctx, 'node', nodeSock);
  const ctl = new CsiClient(`unix://${ctlSock}`, 60_000);
  const node = new CsiClient(`unix://${nodeSock}`, 60_000);
  try {
    let v: VolumeInfo;
    try {
      const res = await ctl.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
        name: `pvc-devdax-${ctx.nonce}`,
        capacity_range: { required_bytes: String(VOLUME_BYTES) },
        volume_capabilities: [CAP],
      });
      v = { volumeId: res.volume.volume_id, context: res.volume.volume_context ?? {} };
      result(ctx, 'create-volume', 'ok', `${v.volumeId}: ${JSON.stringify(v.context)}`);
    } catch (e) {
      result(ctx, 'create-volume', 'fail', errText(e));
      return;
    }
    const attach = (nodeId: string) =>
      ctl.call('Controller', 'ControllerPublishVolume', { volume_id: v.volumeId, node_id: nodeId, volume_capability: CAP, readonly: false });
    const detach = (nodeId: string) => ctl.call('Controller', 'ControllerUnpublishVolume', { volume_id: v.volumeId, node_id: nodeId });
    const bytes = payload(ctx, 'csi-volume', PAYLOAD_BYTES);
    await step(ctx, 'a-writes-through-target', async () => {
      await attach('guest-a');
      const paths = await stageAndPublish(node, v, 'pod-a');
      const fd = fs.openSync(path.join(paths.target, 'data'), 'r+');
      try {
        fs.writeSync(fd, bytes, 0, bytes.length, 0);
      } finally {
        fs.closeSync(fd);
      }
      await unpublishAndUnstage(node, v, paths);
      return `attached to guest-a; A staged, published, wrote ${bytes.length} bytes to data through the target, unpublished and unstaged`;
    });
    // Serial sharing: the volume moves to guest-b only once guest-a let go of it.
    await step(ctx, 'serial-attach-refused', async () => {
      try {
        await attach('guest-b');
      } catch (e) {
        const code = (e as { code?: number }).code;
        assertThat(code === 9, `ControllerPublish to guest-b while attached to guest-a gave code ${code}: ${errText(e)}`);
        return `FAILED_PRECONDITION while attached to guest-a: ${errText(e)}`;
      }
      throw new Error('ControllerPublish to guest-b succeeded while the volume was attached to guest-a');
    });
    await step(ctx, 'attach-b', async () => {
      await detach('guest-a');
      await attach('guest-b');
      return 'detached from guest-a, attached to guest-b';
    });
    fs.writeFileSync(path.join(ctx.run, 'A', 'csi-volume.json'), JSON.stringify(v));
    signal(ctx, 'csi-volume-ready');
    await awaitSignal(ctx, 'csi-volume-read', 240);
    await step(ctx, 'detach-b', async () => {
      await detach('guest-b');
      return 'detached from guest-b';
    });
  } finally {
    ctl.close();
    node.close();
    await Promise.all([stopPlugin(ctx, controller), stopPlugin(ctx, nodePlugin)]);
    keepFusedLogs(ctx);
  }
}

async function guestB(ctx: GuestContext): Promise<void> {
  // The node plugin starts while A's controller works (as on a real cluster, it is already running).
  await awaitSignal(ctx, 'csi-controller-up', 120);
  const sock = '/run/famfs-csi/node.sock';
  const plugin = await startPlugin(ctx, 'node', sock);
  const client = new CsiClient(`unix://${sock}`, 60_000);
  try {
    await awaitSignal(ctx, 'csi-volume-ready', 240);
    const vol = JSON.parse(fs.readFileSync(path.join(ctx.run, 'A', 'csi-volume.json'), 'utf8')) as VolumeInfo;
    const bytes = payload(ctx, 'csi-volume', PAYLOAD_BYTES);
    const expected = path.join(ctx.work, 'csi-expected.bin');
    fs.writeFileSync(expected, bytes);
    let paths: { staging: string; target: string } | undefined;
    await step(ctx, 'b-stage-publish', async () => {
      paths = await stageAndPublish(client, vol, 'pod-b');
      const entries = fs.readdirSync(paths.target);
      assertThat(entries.includes('data'), `target holds ${entries.join(', ')}`);
      return `B staged and published ${vol.volumeId} on ${paths.target}`;
    });
    if (paths === undefined) return;
    const target = paths.target;
    await step(ctx, 'b-target-read', async () => {
      const seen = fs.readFileSync(path.join(target, 'data'));
      assertThat(seen.length === VOLUME_BYTES, `data is ${seen.length} bytes, expected ${VOLUME_BYTES}`);
      assertThat(seen.subarray(0, bytes.length).equals(bytes), "B's read through the target differs from A's bytes");
      return `B reads A's ${bytes.length} bytes through the target path`;
    });
    await step(ctx, 'pod-namespace-read', async () => {
      // A pod: its own mount namespace, the volume bind-mounted where the container expects it.
      const script =
        `set -e; mkdir -p /tmp/pod-root/vol; mount --bind "${target}" /tmp/pod-root/vol; ` +
        `head -c ${bytes.length} /tmp/pod-root/vol/data | cmp - "${expected}"; ` +
        `grep -c ' /tmp/pod-root/vol ' /proc/self/mounts`;
      const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8' });
      assertThat(r.status === 0, `pod-like process failed (${r.status}): ${r.stdout} ${r.stderr}`);
      const leaked = fs.readFileSync('/proc/self/mounts', 'utf8').includes(' /tmp/pod-root/vol ');
      assertThat(!leaked, "the pod's bind mount leaked into the host namespace");
      return "a process in its own mount namespace reads exactly A's bytes through a bind mount of the target";
    });
    await step(ctx, 'b-unpublish-unstage', async () => {
      await unpublishAndUnstage(client, vol, paths as { staging: string; target: string });
      assertThat(!fs.readFileSync('/proc/self/mounts', 'utf8').includes(vol.volumeId), 'a mount of the volume is left behind');
      return 'unpublished and unstaged, no mount left';
    });
    // The host: the volume file's bytes in the backing file (famfs ls gives its extents).
    const file = vol.context['famfs.csi.cxl.io/file'];
    if (file !== undefined) {
      const ls = spawnSync(process.execPath, [path.join(PROJ, 'dist', 'cmd', 'famfs.js'), 'ls', '--json', ctx.dax], { encoding: 'utf8' });
      const entry = (JSON.parse(ls.stdout) as { entries: { path: string; extents?: { offset: number; len: number }[] }[] }).entries.find(
        (e) => e.path === file,
      );
      const ext = entry?.extents?.[0];
      if (ext !== undefined && ext.len >= bytes.length) {
        try {
          result(ctx, 'csi-host', 'ok', await hostVerify(ctx, 'csi-volume', ext.offset, bytes));
        } catch (e) {
          result(ctx, 'csi-host', 'fail', errText(e));
        }
      } else {
        result(ctx, 'csi-host', 'skip', `${file}: first extent does not hold the whole payload (${JSON.stringify(entry?.extents)})`);
      }
    }
  } finally {
    client.close();
    await stopPlugin(ctx, plugin);
    keepFusedLogs(ctx);
    signal(ctx, 'csi-volume-read');
  }
}

runGuestCheck(async (ctx) => {
  try {
    if (ctx.role === 'A') await guestA(ctx);
    else await guestB(ctx);
  } finally {
    for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});
