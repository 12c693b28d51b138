// Zero-copy read-only sharing (issue 14 item 2): a ReadOnlyMany claim whose dataSource is the
// loader's claim shares the loader's memory. Controller over a real unix socket on an emulated
// device (state in the shared-memory store, across a controller restart), a node plugin with real
// FUSE and bind mounts. Checks: no copy and no new famfs file, the source frozen while shared, the
// share refused while a writer is attached, memory freed only with the last of them, a copy on
// request, and no empty read-only volume.
import { strict as assert } from 'assert';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CsiClient } from '../pkg/csi/client';
import { objectDirRelpath, objectFileRelpath } from '../pkg/csi/names';
import { CsiServer } from '../pkg/csi/server';
import { ControllerStore } from '../pkg/csi/store';
import { flushFile, readFileData, writeFileData, type FileNode } from '../pkg/famfs';
import { fmapCapacity } from '../pkg/famfs/fmap';
import { canMount, codeOf, MASTER_UUID, messageOf, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';

const code = codeOf;
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

    it("the pod sees the loader's bytes at data, read-only", async () => {
      const src = await loader('loader-5');
      const share = await create('readers-5', 'MULTI_NODE_READER_ONLY', fromVolume(src));
      const staging = env.staging('node-a', share.volume_id);
      const cap = mountCap('MULTI_NODE_READER_ONLY');
      await a.call('NodeStageVolume', {
        volume_id: share.volume_id,
        staging_target_path: staging,
        volume_capability: cap,
        volume_context: share.volume_context,
      });
      const t = env.target('pod-share');
      await a.call('NodePublishVolume', {
        volume_id: share.volume_id,
        staging_target_path: staging,
        target_path: t,
        volume_capability: cap,
        readonly: true,
        volume_context: share.volume_context,
      });
      assert.ok(fs.readFileSync(path.join(t, 'data')).subarray(0, data.length).equals(data));
      assert.throws(() => fs.writeFileSync(path.join(t, 'data'), 'x'), /EROFS/);
      await a.call('NodeUnpublishVolume', { volume_id: share.volume_id, target_path: t });
      await a.call('NodeUnstageVolume', { volume_id: share.volume_id, staging_target_path: staging });
      assert.deepEqual(
        (await env.mountsUnderDir()).filter((m) => m.startsWith(env.kubelet)),
        [],
      );
    });
  });
});
