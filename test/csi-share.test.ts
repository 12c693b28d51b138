// Zero-copy read-only sharing (issue 14 item 2): a ReadOnlyMany claim whose dataSource is the
// loader's claim shares the loader's memory. Controller over a real unix socket on an emulated
// device (state in the shared-memory store, across a controller restart), a node plugin with real
// FUSE and bind mounts. Checks: no copy and no new famfs file, the source frozen while shared, the
// share refused while a writer is attached, memory freed only with the last of them, a copy on
// request, and no empty read-only volume.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CsiClient } from '../pkg/csi/client';
import { objectDirRelpath, objectFileRelpath } from '../pkg/csi/names';
import { CsiServer } from '../pkg/csi/server';
import { ControllerStore } from '../pkg/csi/store';
import { flushFile, readFileData, writeFileData, type FileNode } from '../pkg/famfs';
import { fmapCapacity } from '../pkg/famfs/fmap';
import { PY_WRITE_ATTEMPTS } from './helpers/write-attempts';
import { canMount, codeOf, MASTER_UUID, messageOf, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';

const code = codeOf;

/**
 * A privileged pod (root with CAP_SYS_ADMIN, its own mount namespace) that remounts its read-only
 * bind `target` rw and tries to change `target`/`file`: operation -> "OK" or the errno name.
 */
function privilegedPod(target: string, file = 'data'): Record<string, string> {
  const py = `${PY_WRITE_ATTEMPTS}f = os.path.join(sys.argv[1], sys.argv[2])
${String.raw`
def mmap_write():
    fd = os.open(f, os.O_RDWR)
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)  # no flush on close: the dirty page stays in the page cache after the process exits
    m[0:7] = b'PWNED!!'
attempt('write', write)
attempt('O_RDWR', lambda: os.close(os.open(f, os.O_RDWR)))
attempt('mmap(PROT_WRITE, MAP_SHARED)', mmap_write)
attempt('truncate', lambda: os.truncate(f, 0))
print(json.dumps(out))`}`;
  const r = spawnSync(
    'unshare',
    ['-m', '--propagation', 'private', 'sh', '-c', 'mount -o remount,bind,rw "$1" || exit 97; exec python3 -c "$2" "$1" "$3"', 'sh', target, py, file],
    { encoding: 'utf8', timeout: 30_000 },
  );
  assert.equal(r.status, 0, `remount,bind,rw succeeds for CAP_SYS_ADMIN and the attempts run: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as Record<string, string>;
}
const REFUSED = { write: 'EROFS', O_RDWR: 'EROFS', 'mmap(PROT_WRITE, MAP_SHARED)': 'EROFS', truncate: 'EROFS' };
const SHARE_OF = 'famfs.csi.cxl.io/share-of';

interface VolumeOut {
  volume_id: string;
  capacity_bytes: string;
  volume_context: Record<string, string>;
}

describe('zero-copy read-only sharing through dataSource', function () {
  this.timeout(120_000);
  let env: NodeTestEnv;
  let server: CsiServer | undefined;
  let client: CsiClient;
  const data = crypto.randomBytes(5 * MiB + 3);

  async function startController(): Promise<void> {
    ({ server, client } = await env.startController());
  }
  async function stopController(): Promise<void> {
    client.close();
    await server?.stop(500);
    server = undefined;
  }
  async function restartController(): Promise<void> {
    client.close();
    await server?.stop(500);
    await startController();
  }

  const create = async (name: string, mode: string, extra: object = {}) =>
    (
      await client.call<{ volume: VolumeOut }>('Controller', 'CreateVolume', {
        name,
        capacity_range: { required_bytes: String(MiB) },
        volume_capabilities: [mountCap(mode)],
        ...extra,
      })
    ).volume;
  const fromVolume = (id: string) => ({ volume_content_source: { volume: { volume_id: id } } });
  const cpub = (id: string, node: string, mode: string, readonly = false) =>
    client.call('Controller', 'ControllerPublishVolume', { volume_id: id, node_id: node, volume_capability: mountCap(mode), readonly });
  const cunpub = (id: string, node: string) => client.call('Controller', 'ControllerUnpublishVolume', { volume_id: id, node_id: node });
  const del = (id: string) => client.call('Controller', 'DeleteVolume', { volume_id: id });
  const fileOf = (id: string): FileNode | undefined => {
    env.master.catchUp();
    const n = env.master.lookup(objectFileRelpath(id));
    return n?.kind === 'file' ? n : undefined;
  };

  /** The loader Job's claim: written through its file, as a loader pod would. */
  async function loader(name: string): Promise<string> {
    const v = await create(name, 'SINGLE_NODE_WRITER', { capacity_range: { required_bytes: String(data.length) } });
    const f = fileOf(v.volume_id)!;
    writeFileData(env.device, f, 0, data);
    flushFile(env.device, f);
    return v.volume_id;
  }

  before(async () => {
    env = new NodeTestEnv('share', 256 * MiB);
    await startController();
  });
  after(async () => {
    client.close();
    await server?.stop(500);
    await env.close();
  });

  it('an empty read-only volume is INVALID_ARGUMENT naming the two flows', async () => {
    for (const mode of ['MULTI_NODE_READER_ONLY', 'SINGLE_NODE_READER_ONLY']) {
      const call = create('empty-ro', mode);
      assert.equal(await code(call), 'INVALID_ARGUMENT');
      const msg = await messageOf(create('empty-ro', mode));
      assert.match(msg, /empty \(zeroes\) forever/);
      assert.match(msg, /dataSource: \{kind: PersistentVolumeClaim/);
      assert.match(msg, /static PersistentVolume with csi\.volumeAttributes\.path/);
    }
    assert.equal(fileOf('vol-' + '0'.repeat(40)), undefined);
  });

  it('shares instead of copying: no new file, no memory used, same bytes, capacity of the source', async () => {
    const src = await loader('loader-1');
    const before = env.master.usage();
    const nextIndex = env.master.tree.nextIndex;
    const share = await create('readers-1', 'MULTI_NODE_READER_ONLY', fromVolume(src));
    assert.equal(share.volume_context[SHARE_OF], src);
    assert.equal(share.capacity_bytes, String(fileOf(src)!.size));
    env.master.catchUp();
    assert.equal(env.master.lookup(objectDirRelpath(share.volume_id)), undefined, 'no famfs directory for the share');
    assert.equal(env.master.tree.nextIndex, nextIndex, 'no log entry appended');
    assert.equal(env.master.usage().freeBytes, before.freeBytes, 'no memory allocated');
    // idempotent
    assert.equal((await create('readers-1', 'MULTI_NODE_READER_ONLY', fromVolume(src))).volume_id, share.volume_id);
    // the same name as a share of another source is ALREADY_EXISTS
    assert.equal(await code(create('readers-1', 'SINGLE_NODE_WRITER')), 'ALREADY_EXISTS');
    const list = await client.call<{ entries: { volume: VolumeOut }[] }>('Controller', 'ListVolumes', {});
    assert.ok(list.entries.some((e) => e.volume.volume_id === share.volume_id));
  });

  it('the source is frozen while shared; a share is refused while a writer is attached', async () => {
    const src = await loader('loader-2');
    assert.equal(await code(cpub(src, 'node-a', 'SINGLE_NODE_WRITER')), 'OK');
    const refused = await messageOf(create('readers-2', 'MULTI_NODE_READER_ONLY', fromVolume(src)));
    assert.match(refused, /attached for writing on node-a; a read-only share freezes its source.*cloneMode: "copy"/);
    assert.equal(await code(create('readers-2', 'MULTI_NODE_READER_ONLY', fromVolume(src))), 'FAILED_PRECONDITION');
    await cunpub(src, 'node-a');
    const share = await create('readers-2', 'MULTI_NODE_READER_ONLY', fromVolume(src));
    await restartController(); // the shares are in the shared-memory store, not in this process
    const frozen = await messageOf(cpub(src, 'node-a', 'SINGLE_NODE_WRITER'));
    assert.match(frozen, /is frozen: 1 read-only share\(s\) show its memory/);
    assert.equal(await code(cpub(src, 'node-a', 'SINGLE_NODE_WRITER')), 'FAILED_PRECONDITION');
    assert.equal(await code(cpub(src, 'node-a', 'MULTI_NODE_READER_ONLY', true)), 'OK', 'readers of the source are fine');
    assert.equal(await code(cpub(share.volume_id, 'node-b', 'MULTI_NODE_READER_ONLY', true)), 'OK');
    assert.equal(await code(cpub(share.volume_id, 'node-c', 'SINGLE_NODE_WRITER')), 'FAILED_PRECONDITION');
    await cunpub(src, 'node-a');
    await cunpub(share.volume_id, 'node-b');
    await del(share.volume_id);
    assert.equal(await code(cpub(src, 'node-a', 'SINGLE_NODE_WRITER')), 'OK', 'writable again once the last share is gone');
    await cunpub(src, 'node-a');
  });

  it('memory is freed only when the last of source and shares is deleted, across a controller restart', async () => {
    const src = await loader('loader-3');
    const s1 = await create('readers-3a', 'MULTI_NODE_READER_ONLY', fromVolume(src));
    const s2 = await create('readers-3b', 'MULTI_NODE_READER_ONLY', fromVolume(s1.volume_id)); // a share of a share
    assert.equal(s2.volume_context[SHARE_OF], src);
    const srcFile = fileOf(src)!;
    await del(src);
    assert.equal(await code(client.call('Controller', 'ControllerGetVolume', { volume_id: src })), 'NOT_FOUND', 'the deleted source is gone for the CO');
    assert.ok(fileOf(src), 'but its memory stays: the shares show it');
    await restartController();
    await del(s1.volume_id);
    assert.ok(fileOf(src), 'one share left');
    const got = await client.call<{ volume: VolumeOut }>('Controller', 'ControllerGetVolume', { volume_id: s2.volume_id });
    assert.equal(got.volume.volume_context[SHARE_OF], src);
    assert.ok(readFileData(env.device, srcFile, 0, data.length).equals(data));
    await del(s2.volume_id);
    assert.equal(fileOf(src), undefined, 'the last share freed the source');
    env.master.catchUp();
    assert.equal(env.master.lookup(objectDirRelpath(src)), undefined);
    assert.equal(await code(del(s2.volume_id)), 'OK', 'idempotent');
  });

  /** The records in the shared-memory store, as a controller taking over reads them (stop the controller first). */
  const storeAtTakeover = (): ControllerStore => {
    const store = new ControllerStore(env.master);
    store.takeMasterRole(MASTER_UUID);
    return store;
  };

  it("a source deleted while shared whose shares' records are gone is freed at the next takeover (no leak)", async () => {
    const src = await loader('loader-orphan');
    const share = await create('readers-orphan', 'MULTI_NODE_READER_ONLY', fromVolume(src));
    await del(src); // hidden, kept for the share
    const srcFile = fileOf(src);
    assert.ok(srcFile);
    const before = env.master.usage();
    // The share's record is lost (the only thing that would ever free the source): no DeleteVolume will come.
    await stopController();
    const store = storeAtTakeover();
    assert.ok(store.volume(src)?.deletePending, 'the source is hidden, waiting for its share');
    assert.ok(store.removeVolume(share.volume_id));
    store.commit();
    await startController(); // takeover
    assert.equal(fileOf(src), undefined, "the orphaned source's memory was not freed at takeover");
    env.master.catchUp();
    assert.equal(env.master.lookup(objectDirRelpath(src)), undefined, 'its directory is gone too');
    const after = env.master.usage();
    assert.equal(
      after.freeBytes + after.pendingFreeBytes,
      before.freeBytes + before.pendingFreeBytes + fmapCapacity(srcFile.fmap),
      'its memory went back to the pool',
    );
    for (const id of [src, share.volume_id]) {
      assert.equal(await code(client.call('Controller', 'ControllerGetVolume', { volume_id: id })), 'NOT_FOUND', id);
      assert.equal(await code(del(id)), 'OK', `DeleteVolume ${id} stays idempotent`);
    }
  });

  it('a share whose source file vanished behind the driver is swept at takeover; the CO gets NOT_FOUND, not a dangling volume', async () => {
    const src = await loader('loader-vanish');
    const share = await create('readers-vanish', 'MULTI_NODE_READER_ONLY', fromVolume(src));
    await stopController();
    env.deleteVolume(src); // an operator's famfs rm on the master
    await startController();
    assert.equal(await code(client.call('Controller', 'ControllerGetVolume', { volume_id: share.volume_id })), 'NOT_FOUND');
    const list = await client.call<{ entries: { volume: VolumeOut }[] }>('Controller', 'ListVolumes', {});
    assert.ok(!list.entries.some((e) => [src, share.volume_id].includes(e.volume.volume_id)), 'ListVolumes still lists the share or its source');
    assert.equal(await code(cpub(share.volume_id, 'node-b', 'MULTI_NODE_READER_ONLY', true)), 'NOT_FOUND', 'nothing to publish');
    assert.equal(await code(del(share.volume_id)), 'OK');
    await stopController();
    const store = storeAtTakeover();
    assert.equal(store.volume(share.volume_id), undefined, "the share's record is left");
    assert.equal(store.volume(src), undefined, "the source's record is left");
    await startController();
  });

  it('cloneMode: copy gives a read-only claim its own copy', async () => {
    const src = await loader('loader-4');
    const copy = await create('readers-4', 'MULTI_NODE_READER_ONLY', { ...fromVolume(src), parameters: { cloneMode: 'copy' } });
    assert.equal(copy.volume_context[SHARE_OF], undefined);
    const f = fileOf(copy.volume_id)!;
    assert.ok(f, 'a file of its own');
    assert.ok(readFileData(env.device, f, 0, data.length).equals(data));
    assert.equal(await code(cpub(src, 'node-a', 'SINGLE_NODE_WRITER')), 'OK', 'a copy does not freeze the source');
    await cunpub(src, 'node-a');
    assert.equal(await code(create('x', 'MULTI_NODE_READER_ONLY', { ...fromVolume(src), parameters: { cloneMode: 'sometimes' } })), 'INVALID_ARGUMENT');
  });

  describe('on a node: real FUSE and bind mounts', function () {
    let a: NodePlugin;
    before(async function () {
      if (!canMount) this.skip();
      a = await env.startNode('node-a');
    });

    /** Stages a read-only share on node-a and publishes it read-only at the target of `pod`. */
    async function publishShare(share: VolumeOut, pod: string): Promise<{ staging: string; t: string }> {
      const staging = env.staging('node-a', share.volume_id);
      const cap = mountCap('MULTI_NODE_READER_ONLY');
      const ctx = share.volume_context;
      await a.call('NodeStageVolume', { volume_id: share.volume_id, staging_target_path: staging, volume_capability: cap, volume_context: ctx });
      const t = env.target(pod);
      await a.call('NodePublishVolume', {
        volume_id: share.volume_id,
        staging_target_path: staging,
        target_path: t,
        volume_capability: cap,
        readonly: true,
        volume_context: ctx,
      });
      return { staging, t };
    }

    it("the pod sees the loader's bytes at data, read-only", async () => {
      const src = await loader('loader-5');
      const share = await create('readers-5', 'MULTI_NODE_READER_ONLY', fromVolume(src));
      const { staging, t } = await publishShare(share, 'pod-share');
      assert.ok(fs.readFileSync(path.join(t, 'data')).subarray(0, data.length).equals(data));
      assert.throws(() => fs.writeFileSync(path.join(t, 'data'), 'x'), /EROFS/);
      await a.call('NodeUnpublishVolume', { volume_id: share.volume_id, target_path: t });
      await a.call('NodeUnstageVolume', { volume_id: share.volume_id, staging_target_path: staging });
      assert.deepEqual(
        (await env.mountsUnderDir()).filter((m) => m.startsWith(env.kubelet)),
        [],
      );
    });

    /** The guard famfs-fused holds now (its status). */
    const guardNow = async (): Promise<{ readOnly: string[]; writable: string[] }> => {
      const st = await a.driver.node!.fuse.control({ op: 'guard-show' });
      assert.ok(st.ok, JSON.stringify(st));
      const g = st as unknown as { readOnly: string[]; writable: string[] };
      return { readOnly: g.readOnly, writable: g.writable };
    };

    it('a privileged reader that remounts its share rw cannot write it (EROFS), across a node plugin restart and a kill -9 of famfs-fused', async () => {
      const src = await loader('loader-priv');
      const share = await create('readers-priv', 'MULTI_NODE_READER_ONLY', fromVolume(src));
      const { staging, t } = await publishShare(share, 'pod-privileged');
      const srcFile = fileOf(src)!;
      const unchanged = (what: string): void =>
        assert.ok(readFileData(env.device, srcFile, 0, data.length).equals(data), `${what}: the loader's bytes in the memory are unchanged`);
      assert.deepEqual(privilegedPod(t), REFUSED);
      unchanged('guarded');
      assert.deepEqual((await guardNow()).readOnly, [objectDirRelpath(src)], 'the share guards its source directory');

      a = await env.restartPlugin(a);
      assert.deepEqual(privilegedPod(t), REFUSED, 'after a node plugin restart');
      const pid = a.driver.node!.fuse.serverPid()!;
      assert.ok(pid > 0);
      for (let i = 0; i < 100 && !a.driver.node!.fuse.depositHeld(); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(a.driver.node!.fuse.depositHeld(), 'the plugin holds the FUSE connection');
      process.kill(pid, 'SIGKILL');
      // The plugin starts a new famfs-fused that adopts the held connection (no remount).
      let next: number | undefined;
      for (let i = 0; i < 200; i++) {
        next = a.driver.node!.fuse.serverPid();
        if (next !== undefined && next !== pid && (await a.driver.node!.fuse.health()).state === 'serving') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(next !== undefined && next !== pid, 'a new famfs-fused serves');
      assert.deepEqual(privilegedPod(t), REFUSED, 'after kill -9 of famfs-fused and adoption');
      unchanged('after both restarts');
      assert.ok(fs.readFileSync(path.join(t, 'data')).subarray(0, data.length).equals(data), 'the reader still reads them');

      await a.call('NodeUnpublishVolume', { volume_id: share.volume_id, target_path: t });
      await a.call('NodeUnstageVolume', { volume_id: share.volume_id, staging_target_path: staging });
      assert.deepEqual(await guardNow(), { readOnly: [], writable: [] }, 'nothing guarded once the share is gone from the node');
    });

    it("a famfs-fused restarted with an unreadable guard file refuses every change until the node plugin's next health check sends the guard again", async () => {
      const id = (await create('rwo-failclosed', 'SINGLE_NODE_WRITER')).volume_id;
      const cap = mountCap('SINGLE_NODE_WRITER');
      const staging = env.staging('node-a', id);
      await a.call('NodeStageVolume', { volume_id: id, staging_target_path: staging, volume_capability: cap });
      const t = env.target('pod-failclosed');
      await a.call('NodePublishVolume', { volume_id: id, staging_target_path: staging, target_path: t, volume_capability: cap });
      const write = (): string | undefined => {
        try {
          const fd = fs.openSync(path.join(t, 'data'), 'r+');
          fs.writeSync(fd, 'ok', 0);
          fs.closeSync(fd);
          return undefined;
        } catch (e) {
          return (e as NodeJS.ErrnoException).code;
        }
      };
      assert.equal(write(), undefined, 'a read-write publish writes');
      const fuse = a.driver.node!.fuse;
      for (let i = 0; i < 100 && !fuse.depositHeld(); i++) await new Promise((r) => setTimeout(r, 100));
      const pid = fuse.serverPid()!;
      fs.writeFileSync(path.join(path.dirname(fuse.socketPath), 'ro-guard.json'), '{torn');
      process.kill(pid, 'SIGKILL');
      let serving = false;
      for (let i = 0; i < 200 && !serving; i++) {
        await new Promise((r) => setTimeout(r, 100));
        serving = fuse.serverPid() !== undefined && fuse.serverPid() !== pid && (await fuse.health()).state === 'serving';
      }
      assert.ok(serving, 'a new famfs-fused adopted the connection');
      assert.equal(write(), 'EROFS', 'fail closed: the new server could not read its guard');
      assert.deepEqual(await a.driver.node!.health(), { ok: true });
      let after: string | undefined = 'EROFS';
      for (let i = 0; i < 50 && after !== undefined; i++) {
        await new Promise((r) => setTimeout(r, 100));
        after = write();
      }
      assert.equal(after, undefined, 'the plugin saw the guard differ from what it sent and sent it again');
      await a.call('NodeUnpublishVolume', { volume_id: id, target_path: t });
      await a.call('NodeUnstageVolume', { volume_id: id, staging_target_path: staging });
      await del(id);
    });

    it('a static directory published read-only is guarded; a read-write static volume of one file in it lifts the guard for that file only', async () => {
      env.master.mkdir('guarded-models', { mode: 0o755 });
      env.master.creat('guarded-models/w.bin', 2 * MiB, { mode: 0o666, zero: true });
      env.master.creat('guarded-models/cfg', 2 * MiB, { mode: 0o666, zero: true });
      const stage = (id: string, mode: string, p: string) =>
        a.call('NodeStageVolume', {
          volume_id: id,
          staging_target_path: env.staging('node-a', id),
          volume_capability: mountCap(mode),
          volume_context: { path: p },
        });
      const pub = (id: string, mode: string, p: string, t: string, readonly: boolean) =>
        a.call('NodePublishVolume', {
          volume_id: id,
          staging_target_path: env.staging('node-a', id),
          target_path: t,
          volume_capability: mountCap(mode),
          readonly,
          volume_context: { path: p },
        });
      const tr = env.target('pod-static-ro');
      await stage('pv-guarded-dir', 'MULTI_NODE_READER_ONLY', 'guarded-models');
      await pub('pv-guarded-dir', 'MULTI_NODE_READER_ONLY', 'guarded-models', tr, true);
      assert.deepEqual(privilegedPod(tr, 'w.bin'), REFUSED);
      assert.deepEqual(privilegedPod(tr, 'cfg'), REFUSED);
      const tw = env.target('pod-static-rw');
      await stage('pv-guarded-file', 'SINGLE_NODE_WRITER', 'guarded-models/w.bin');
      await pub('pv-guarded-file', 'SINGLE_NODE_WRITER', 'guarded-models/w.bin', tw, false);
      assert.deepEqual(await guardNow(), { readOnly: ['guarded-models'], writable: ['guarded-models/w.bin'] });
      const fd = fs.openSync(path.join(tw, 'w.bin'), 'r+');
      fs.writeSync(fd, 'writer', 0);
      fs.closeSync(fd);
      assert.deepEqual(privilegedPod(tr, 'cfg'), REFUSED, 'the rest of the directory stays guarded');
      assert.equal(privilegedPod(tr, 'w.bin')['write'], 'OK', 'the file published read-write on this node is writable here');
      await a.call('NodeUnpublishVolume', { volume_id: 'pv-guarded-file', target_path: tw });
      await a.call('NodeUnstageVolume', { volume_id: 'pv-guarded-file', staging_target_path: env.staging('node-a', 'pv-guarded-file') });
      assert.deepEqual(await guardNow(), { readOnly: ['guarded-models'], writable: [] });
      assert.deepEqual(privilegedPod(tr, 'w.bin'), REFUSED, 'guarded again once the writer is gone');
      await a.call('NodeUnpublishVolume', { volume_id: 'pv-guarded-dir', target_path: tr });
      await a.call('NodeUnstageVolume', { volume_id: 'pv-guarded-dir', staging_target_path: env.staging('node-a', 'pv-guarded-dir') });
      assert.deepEqual(await guardNow(), { readOnly: [], writable: [] });
    });

    it('a read-write publish on the node lifts the guard; when it goes, its mmap writes are in the memory and the guard is set again', async () => {
      const id = (await create('rwo-guard', 'SINGLE_NODE_WRITER')).volume_id;
      const cap = mountCap('SINGLE_NODE_WRITER');
      const staging = env.staging('node-a', id);
      await a.call('NodeStageVolume', { volume_id: id, staging_target_path: staging, volume_capability: cap });
      const reader = env.target('pod-rwo-reader');
      const writer = env.target('pod-rwo-writer');
      const pub = (target: string, readonly: boolean) =>
        a.call('NodePublishVolume', { volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap, readonly });
      await pub(reader, true);
      assert.deepEqual(privilegedPod(reader), REFUSED, 'only read-only targets: guarded');
      const before = readFileData(env.device, fileOf(id)!, 0, 16);
      await pub(writer, false);
      assert.deepEqual((await guardNow()).readOnly, [], 'a read-write target lifts it');
      // The writer dirties a page through a shared mapping and exits without msync or close flushing it.
      const w = spawnSync(
        'python3',
        [
          '-c',
          `import mmap,os,sys
fd=os.open(sys.argv[1],os.O_RDWR); m=mmap.mmap(fd,4096,mmap.MAP_SHARED,mmap.PROT_READ|mmap.PROT_WRITE); os.close(fd); m[0:7]=b'MMAPPED'`,
          path.join(writer, 'data'),
        ],
        { encoding: 'utf8' },
      );
      assert.equal(w.status, 0, w.stderr);
      await a.call('NodeUnpublishVolume', { volume_id: id, target_path: writer });
      assert.deepEqual((await guardNow()).readOnly, [objectDirRelpath(id)], 'the last read-write target gone: guarded again');
      assert.equal(
        readFileData(env.device, fileOf(id)!, 0, 7).toString(),
        'MMAPPED',
        "the writer's mmap write reached the memory (written back while the file was writable)",
      );
      assert.notDeepEqual(before.subarray(0, 7), Buffer.from('MMAPPED'));
      assert.deepEqual(privilegedPod(reader), REFUSED, 'the reader cannot write again');
      assert.equal(readFileData(env.device, fileOf(id)!, 0, 7).toString(), 'MMAPPED', 'nothing the reader tried changed the memory');
      await a.call('NodeUnpublishVolume', { volume_id: id, target_path: reader });
      await a.call('NodeUnstageVolume', { volume_id: id, staging_target_path: staging });
      await del(id);
    });
  });
});
