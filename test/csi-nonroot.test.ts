// Non-root pods out of the box (issue 14 item 7): a volume made with the default parameters is read
// and written by a non-root process through its publish (with or without fsGroup), read-only publishes
// stay read-only, and the same non-root user cannot reach the file through the node's FUSE mount:
// only the pod's own bind mount leads to it. Real controller (unix socket), real node plugin, real
// FUSE and bind mounts, real processes under setpriv.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CsiClient } from '../pkg/csi/client';
import { objectFileRelpath } from '../pkg/csi/names';
import { CsiServer } from '../pkg/csi/server';
import { canMount, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';

/** Runs `js` (argv[1] = the path) as uid/gid `uid` with no supplementary groups but `groups`. */
function asUser(uid: number, js: string, p: string, groups: number[] = []): { out: string; err: string; code: number | null } {
  const r = spawnSync('setpriv', [...setprivArgs(uid, groups), process.execPath, '-e', js, p], { encoding: 'utf8', timeout: 20_000 });
  return { out: r.stdout.trim(), err: r.stderr, code: r.status };
}

function setprivArgs(uid: number, groups: number[]): string[] {
  return [`--reuid=${uid}`, `--regid=${uid}`, groups.length > 0 ? `--groups=${groups.join(',')}` : '--clear-groups'];
}

/**
 * Like a container: in its own mount namespace the publish target is bound at a path of the pod's
 * (as the runtime binds it at the volumeMount's mountPath), and the non-root process opens
 * <that path>/<rel>. The kubelet's directories on the way to the target play no part, as in a pod.
 */
function inPod(uid: number, js: string, target: string, rel: string, groups: number[] = []): { out: string; err: string; code: number | null } {
  const podDir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-pod-'));
  fs.chmodSync(podDir, 0o755);
  try {
    const script = 'mount --bind "$1" "$2" && shift 2 && exec setpriv "$@"';
    const r = spawnSync(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        script,
        'sh',
        target,
        podDir,
        ...setprivArgs(uid, groups),
        process.execPath,
        '-e',
        js,
        path.join(podDir, rel),
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
    return { out: r.stdout.trim(), err: r.stderr, code: r.status };
  } finally {
    fs.rmdirSync(podDir);
  }
}

const WRITE_READ = `
const fs = require('fs');
try {
  const fd = fs.openSync(process.argv[1], 'r+');
  fs.writeSync(fd, Buffer.from('written by a non-root pod'), 0, 25, 0);
  const b = Buffer.alloc(25);
  fs.readSync(fd, b, 0, 25, 0);
  fs.closeSync(fd);
  console.log('OK ' + b.toString());
} catch (e) { console.log(e.code); }`;

const READ = `
const fs = require('fs');
try { const fd = fs.openSync(process.argv[1], 'r'); fs.closeSync(fd); console.log('READ'); } catch (e) { console.log(e.code); }
try { fs.openSync(process.argv[1], 'r+'); console.log('WRITABLE'); } catch (e) { console.log(e.code); }`;

describe('non-root pods with the default StorageClass parameters', function () {
  this.timeout(120_000);
  let env: NodeTestEnv;
  let server: CsiServer;
  let client: CsiClient;
  let node: NodePlugin;

  before(async function () {
    if (!canMount) this.skip();
    env = new NodeTestEnv('nonroot', 128 * MiB);
    ({ server, client } = await env.startController(() => true));
    node = await env.startNode('node-a');
  });
  after(async () => {
    client?.close();
    await server?.stop(500);
    await env?.close();
  });

  async function publish(name: string, mode: string, opts: { group?: string; readonly?: boolean } = {}): Promise<{ id: string; target: string }> {
    const v = (
      await client.call<{ volume: { volume_id: string; volume_context: Record<string, string> } }>('Controller', 'CreateVolume', {
        name,
        capacity_range: { required_bytes: String(2 * MiB) },
        volume_capabilities: [mountCap('SINGLE_NODE_WRITER')],
      })
    ).volume;
    const cap = mountCap(mode, opts.group !== undefined ? { volume_mount_group: opts.group } : {});
    const staging = env.staging('node-a', v.volume_id);
    await node.call('NodeStageVolume', { volume_id: v.volume_id, staging_target_path: staging, volume_capability: cap, volume_context: v.volume_context });
    const target = env.target(`pod-${name}`);
    await node.call('NodePublishVolume', {
      volume_id: v.volume_id,
      staging_target_path: staging,
      target_path: target,
      volume_capability: cap,
      readonly: opts.readonly === true,
      volume_context: v.volume_context,
    });
    return { id: v.volume_id, target };
  }

  it('a non-root pod (runAsUser 1000, no fsGroup) reads and writes its ReadWriteOnce volume', async () => {
    const { target } = await publish('rwo', 'SINGLE_NODE_WRITER');
    const r = inPod(1000, WRITE_READ, target, 'data');
    assert.equal(r.out, 'OK written by a non-root pod', r.err);
  });

  it('with fsGroup (volume_mount_group) the publish is accepted and the pod writes', async () => {
    const { target } = await publish('fsgroup', 'SINGLE_NODE_WRITER', { group: '2000' });
    const r = inPod(1000, WRITE_READ, target, 'data', [2000]);
    assert.equal(r.out, 'OK written by a non-root pod', r.err);
  });

  it('a read-only publish is readable by a non-root pod and not writable (ro bind)', async () => {
    const { target } = await publish('ro', 'SINGLE_NODE_READER_ONLY', { readonly: true });
    const r = inPod(1000, READ, target, 'data');
    assert.deepEqual(r.out.split('\n'), ['READ', 'EROFS'], r.err);
  });

  it("the same non-root user cannot reach the file through the node's famfs mount (only through a mount of the volume)", async () => {
    const { id } = await publish('reach', 'SINGLE_NODE_WRITER');
    const fuse = node.driver.node!.fuse;
    const hostPath = fuse.hostPath(objectFileRelpath(id));
    const guard = path.dirname(fuse.mountpoint);
    assert.equal(fs.statSync(guard).mode & 0o777, 0o700, `${guard} must be root-only`);
    // Open every directory above the guard, as on a node (/var/lib is 0755): the guard alone must stop it.
    const opened: [string, number][] = [];
    for (let d = path.dirname(guard); d.startsWith(env.dir); d = path.dirname(d)) {
      opened.push([d, fs.statSync(d).mode & 0o777]);
      fs.chmodSync(d, 0o755);
    }
    try {
      const r = asUser(1000, READ, hostPath);
      assert.deepEqual(r.out.split('\n'), ['EACCES', 'EACCES'], `uid 1000 opening ${hostPath}: ${r.out} ${r.err}`);
      // negative control: the same user with the guard open reaches the file (so the guard is what stops it)
      fs.chmodSync(guard, 0o755);
      const open = asUser(1000, READ, hostPath);
      assert.equal(open.out.split('\n')[0], 'READ', `control: ${open.out} ${open.err}`);
    } finally {
      fs.chmodSync(guard, 0o700);
      for (const [d, mode] of opened) fs.chmodSync(d, mode);
    }
  });
});
