// Static volumes for famfs paths (issue 14 item 1): a PV whose volumeAttributes.path names a famfs
// file or directory loaded with `famfs cp -r`. Controller over a real unix socket (serial rules for
// writers recorded in the shared-memory store, across a controller restart), node plugins with real
// FUSE mounts and bind mounts (read-only binds refuse writes), and bad input with the right codes.
import { strict as assert } from 'assert';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CsiClient } from '../pkg/csi/client';
import { CsiServer } from '../pkg/csi/server';
import { fmapExtents, writeFileData, flushFile, readFileData } from '../pkg/famfs';
import { canMount, codeOf, messageOf, MiB, mountCap, blockCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';

const code = codeOf;

describe('static volumes: a PV naming a famfs path', function () {
  this.timeout(120_000);
  let env: NodeTestEnv;
  let server: CsiServer | undefined;
  let client: CsiClient;
  const weights = crypto.randomBytes(3 * MiB + 11);

  async function startController(): Promise<void> {
    ({ server, client } = await env.startController());
  }
  async function stopController(): Promise<void> {
    client.close();
    await server?.stop(500);
    server = undefined;
  }

  before(async function () {
    env = new NodeTestEnv('static', 256 * MiB);
    // What `famfs cp -r` on the master leaves: a directory tree and a file, outside csi/.
    const m = env.master;
    m.mkdir('models/llm', { parents: true, mode: 0o755 });
    const f = m.creat('models/llm/weights.bin', weights.length, { mode: 0o644, zero: true });
    writeFileData(env.device, f, 0, weights);
    flushFile(env.device, f);
    m.creat('models/llm/config.json', 4096, { mode: 0o644, zero: true });
    m.creat('single.bin', 2 * MiB, { mode: 0o666, zero: true });
    await startController();
  });
  after(async () => {
    await stopController().catch(() => undefined);
    await env.close();
  });

  const cpub = (volumeId: string, node: string, mode: string, ctx: Record<string, string>, readonly = false, cap: object = mountCap(mode)) =>
    client.call('Controller', 'ControllerPublishVolume', { volume_id: volumeId, node_id: node, volume_capability: cap, readonly, volume_context: ctx });
  const cunpub = (volumeId: string, node: string) => client.call('Controller', 'ControllerUnpublishVolume', { volume_id: volumeId, node_id: node });

  describe('controller', () => {
    it('bad paths: INVALID_ARGUMENT or NOT_FOUND with a message that says what to fix, before any state', async () => {
      const cases: [string, string, RegExp][] = [
        ['', 'INVALID_ARGUMENT', /famfs root/],
        ['/', 'INVALID_ARGUMENT', /famfs root/],
        ['../etc', 'INVALID_ARGUMENT', /escapes with "\.\."/],
        ['models/../../x', 'INVALID_ARGUMENT', /escapes/],
        ['models//llm', 'INVALID_ARGUMENT', /empty or "\." component/],
        ['csi/vol-0123', 'INVALID_ARGUMENT', /inside csi\/.*use that volume's claim/],
        ['.meta/.log', 'INVALID_ARGUMENT', /\.meta/],
        ['models/llm/weights.bin/', 'INVALID_ARGUMENT', /is a file, but the volume attribute path ends with "\/"/],
        ['nope/data', 'NOT_FOUND', /famfs path nope\/data does not exist in pool test-pool; load it on the master first \(famfs cp -r/],
      ];
      for (const [p, want, msg] of cases) {
        const call = cpub('static-bad', 'node-a', 'SINGLE_NODE_WRITER', { path: p });
        assert.equal(await code(call), want, `path ${JSON.stringify(p)}`);
        assert.match(await messageOf(cpub('static-bad', 'node-a', 'SINGLE_NODE_WRITER', { path: p })), msg, `path ${JSON.stringify(p)}`);
      }
      assert.equal(
        await code(cpub('static-bad', 'node-a', 'SINGLE_NODE_WRITER', { path: 'models' }, false, blockCap('SINGLE_NODE_WRITER'))),
        'INVALID_ARGUMENT',
      );
      // argument before state: an unknown node with a bad path is still INVALID_ARGUMENT
      assert.equal(await code(cpub('static-bad', 'other-x', 'SINGLE_NODE_WRITER', { path: '../x' })), 'INVALID_ARGUMENT');
      assert.equal(await code(cpub('static-bad', 'other-x', 'SINGLE_NODE_WRITER', { path: 'models' })), 'NOT_FOUND');
    });

    it('serial rules for writers, many readers, kept across a controller restart; unpublish forgets it', async () => {
      const ctx = { path: 'models/llm' };
      assert.equal(await code(cpub('pv-models', 'node-a', 'SINGLE_NODE_WRITER', ctx)), 'OK');
      assert.equal(await code(cpub('pv-models', 'node-a', 'SINGLE_NODE_WRITER', ctx)), 'OK', 'idempotent');
      await stopController();
      await startController();
      const refused = await messageOf(cpub('pv-models', 'node-b', 'SINGLE_NODE_WRITER', ctx));
      assert.match(refused, /published to node node-a .*must wait until it is unpublished there/);
      assert.equal(await code(cpub('pv-models', 'node-b', 'MULTI_NODE_READER_ONLY', ctx, true)), 'FAILED_PRECONDITION');
      assert.equal(await code(cpub('pv-models', 'node-b', 'SINGLE_NODE_WRITER', { path: 'single.bin' })), 'FAILED_PRECONDITION', 'one handle, one path');
      await cunpub('pv-models', 'node-a');
      assert.equal(await code(cpub('pv-models', 'node-b', 'MULTI_NODE_READER_ONLY', ctx, true)), 'OK');
      assert.equal(await code(cpub('pv-models', 'node-a', 'MULTI_NODE_READER_ONLY', ctx, true)), 'OK', 'readers share');
      assert.equal(await code(cpub('pv-models', 'node-c', 'SINGLE_NODE_WRITER', ctx)), 'FAILED_PRECONDITION');
      await cunpub('pv-models', 'node-a');
      await cunpub('pv-models', 'node-b');
      assert.equal(await code(cpub('pv-models', 'node-c', 'SINGLE_NODE_WRITER', ctx)), 'OK');
      await cunpub('pv-models', 'node-c');
    });

    it('DeleteVolume of a static handle never frees the path (the driver did not allocate it)', async () => {
      env.master.catchUp();
      const before = fmapExtents((env.master.lookup('models/llm/weights.bin') as { fmap: Parameters<typeof fmapExtents>[0] }).fmap);
      for (const id of ['pv-models', 'models/llm', 'single.bin']) assert.equal(await code(client.call('Controller', 'DeleteVolume', { volume_id: id })), 'OK');
      env.master.catchUp();
      const after = env.master.lookup('models/llm/weights.bin');
      assert.ok(after?.kind === 'file');
      assert.deepEqual(fmapExtents(after.fmap), before);
      assert.ok(readFileData(env.device, after, 0, weights.length).equals(weights));
    });
  });

  describe('node: real FUSE and bind mounts', function () {
    let a: NodePlugin;
    before(async function () {
      if (!canMount) this.skip();
      a = await env.startNode('node-a');
    });

    const stage = (p: NodePlugin, id: string, mode: string, ctx: Record<string, string>, cap: object = mountCap(mode)) =>
      p.call('NodeStageVolume', { volume_id: id, staging_target_path: env.staging(p.nodeId, id), volume_capability: cap, volume_context: ctx });
    const publish = (p: NodePlugin, id: string, target: string, mode: string, ctx: Record<string, string>, readonly = false, cap: object = mountCap(mode)) =>
      p.call('NodePublishVolume', {
        volume_id: id,
        staging_target_path: env.staging(p.nodeId, id),
        target_path: target,
        volume_capability: cap,
        readonly,
        volume_context: ctx,
      });
    const unpublish = (p: NodePlugin, id: string, target: string) => p.call('NodeUnpublishVolume', { volume_id: id, target_path: target });
    const unstage = (p: NodePlugin, id: string) => p.call('NodeUnstageVolume', { volume_id: id, staging_target_path: env.staging(p.nodeId, id) });

    it('a directory volume shows the pod the whole tree; read-only for ReadOnlyMany (writes refused)', async () => {
      const ctx = { path: 'models' };
      await stage(a, 'pv-dir', 'MULTI_NODE_READER_ONLY', ctx);
      const t = env.target('pod-dir');
      await publish(a, 'pv-dir', t, 'MULTI_NODE_READER_ONLY', ctx, true);
      assert.deepEqual(fs.readdirSync(path.join(t, 'llm')).sort(), ['config.json', 'weights.bin']);
      assert.ok(fs.readFileSync(path.join(t, 'llm', 'weights.bin')).equals(weights));
      assert.throws(() => fs.writeFileSync(path.join(t, 'llm', 'weights.bin'), 'x'), /EROFS/);
      const stats = await a.call<{ usage: { total: string }[]; volume_condition: { abnormal: boolean; message: string } }>('NodeGetVolumeStats', {
        volume_id: 'pv-dir',
        volume_path: t,
      });
      assert.equal(stats.usage[0].total, String(weights.length + 4096));
      assert.equal(stats.volume_condition.abnormal, false, stats.volume_condition.message);
      await unpublish(a, 'pv-dir', t);
      assert.equal(fs.existsSync(t), false);
      await unstage(a, 'pv-dir');
      assert.deepEqual(
        (await env.mountsUnderDir()).filter((m) => m.startsWith(env.kubelet)),
        [],
      );
    });

    it('a file volume shows the file in the target directory; a writer writes it, the next reader sees the bytes', async () => {
      const ctx = { path: 'single.bin' };
      await stage(a, 'pv-file', 'SINGLE_NODE_WRITER', ctx);
      const t = env.target('pod-file');
      await publish(a, 'pv-file', t, 'SINGLE_NODE_WRITER', ctx);
      assert.deepEqual(fs.readdirSync(t), ['single.bin']);
      const data = crypto.randomBytes(4096);
      const fd = fs.openSync(path.join(t, 'single.bin'), 'r+');
      fs.writeSync(fd, data, 0, data.length, 0);
      fs.closeSync(fd);
      await unpublish(a, 'pv-file', t);
      assert.equal(fs.existsSync(t), false, 'target and the file inside it are gone');
      await unstage(a, 'pv-file'); // flushes the file (hand-over)
      env.master.catchUp();
      const f = env.master.lookup('single.bin');
      assert.ok(f?.kind === 'file');
      assert.ok(readFileData(env.device, f, 0, 4096).equals(data), 'the written bytes are in the shared memory after unstage');
      // block access binds the file itself
      await stage(a, 'pv-file-b', 'SINGLE_NODE_WRITER', ctx, blockCap('SINGLE_NODE_WRITER'));
      const tb = env.target('pod-file-b', 'dev');
      await publish(a, 'pv-file-b', tb, 'SINGLE_NODE_WRITER', ctx, false, blockCap('SINGLE_NODE_WRITER'));
      assert.ok(fs.readFileSync(tb).subarray(0, 4096).equals(data));
      await unpublish(a, 'pv-file-b', tb);
      await unstage(a, 'pv-file-b');
      assert.deepEqual(
        (await env.mountsUnderDir()).filter((m) => m.startsWith(env.kubelet)),
        [],
      );
    });

    it('a restarted plugin keeps static publishes (the path is not mistaken for a deleted volume)', async () => {
      const ctx = { path: 'models/llm/config.json' };
      await stage(a, 'pv-keep', 'MULTI_NODE_READER_ONLY', ctx);
      const t = env.target('pod-keep');
      await publish(a, 'pv-keep', t, 'MULTI_NODE_READER_ONLY', ctx, true);
      a = await env.restartPlugin(a);
      assert.equal(fs.statSync(path.join(t, 'config.json')).size, 4096);
      await unpublish(a, 'pv-keep', t);
      await unstage(a, 'pv-keep');
      assert.deepEqual(
        (await env.mountsUnderDir()).filter((m) => m.startsWith(env.kubelet)),
        [],
      );
    });

    it("bad paths at NodeStage: INVALID_ARGUMENT / NOT_FOUND (the pod's FailedMount event), nothing mounted", async () => {
      assert.equal(await code(stage(a, 'pv-bad', 'SINGLE_NODE_WRITER', { path: '../x' })), 'INVALID_ARGUMENT');
      assert.equal(await code(stage(a, 'pv-bad', 'SINGLE_NODE_WRITER', { path: 'csi' })), 'INVALID_ARGUMENT');
      assert.match(
        await messageOf(stage(a, 'pv-bad', 'SINGLE_NODE_WRITER', { path: 'missing/tree' })),
        /does not exist in pool test-pool; load it on the master first/,
      );
      assert.equal(await code(stage(a, 'pv-bad', 'SINGLE_NODE_WRITER', { path: 'single.bin/' })), 'INVALID_ARGUMENT');
      assert.equal(await code(stage(a, 'pv-bad', 'SINGLE_NODE_WRITER', { path: 'models' }, blockCap('SINGLE_NODE_WRITER'))), 'INVALID_ARGUMENT');
      assert.deepEqual(
        (await env.mountsUnderDir()).filter((m) => m.startsWith(env.kubelet)),
        [],
      );
    });
  });
});
