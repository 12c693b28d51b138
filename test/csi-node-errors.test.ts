// Bad input to the Node service over a real unix socket: every row gets the spec's status code and a
// message naming what is wrong, and nothing is mounted or created by a refused request.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import type { CsiCallError } from '../pkg/csi/client';
import { readMountinfo } from '../pkg/mount/mountinfo';
import { canMount, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';

interface Row {
  what: string;
  method: string;
  req: (c: Ctx) => object;
  code: keyof typeof status;
  message: RegExp;
}

interface Ctx {
  id: string;
  staging: string;
  target: string;
  kubelet: string;
  outside: string;
  escape: string;
}

const SNW = mountCap('SINGLE_NODE_WRITER');
const MISSING_ID = 'vol-' + '0'.repeat(40);

const ROWS: Row[] = [
  // NodeStageVolume
  {
    what: 'stage: no volume_id',
    method: 'NodeStageVolume',
    req: (c) => ({ staging_target_path: c.staging, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /volume_id is required/,
  },
  {
    what: 'stage: no staging path',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /staging_target_path is required/,
  },
  {
    what: 'stage: no capability',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging }),
    code: 'INVALID_ARGUMENT',
    message: /volume_capability is required/,
  },
  {
    what: 'stage: no access type',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, volume_capability: { access_mode: { mode: 'SINGLE_NODE_WRITER' } } }),
    code: 'INVALID_ARGUMENT',
    message: /access_type/,
  },
  {
    what: 'stage: no access mode',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, volume_capability: { mount: {} } }),
    code: 'INVALID_ARGUMENT',
    message: /access_mode is required/,
  },
  {
    what: 'stage: MULTI_NODE_SINGLE_WRITER',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, volume_capability: mountCap('MULTI_NODE_SINGLE_WRITER') }),
    code: 'INVALID_ARGUMENT',
    message: /not supported by famfs/,
  },
  {
    what: 'stage: multi-writer without opt-in',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, volume_capability: mountCap('MULTI_NODE_MULTI_WRITER') }),
    code: 'FAILED_PRECONDITION',
    message: /sharing: multi-writer/,
  },
  {
    what: 'stage: fs_type ext4',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, volume_capability: mountCap('SINGLE_NODE_WRITER', { fs_type: 'ext4' }) }),
    code: 'INVALID_ARGUMENT',
    message: /fs_type "ext4"/,
  },
  {
    what: 'stage: unknown mount flag',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, volume_capability: mountCap('SINGLE_NODE_WRITER', { mount_flags: ['suid'] }) }),
    code: 'INVALID_ARGUMENT',
    message: /mount flags "suid"/,
  },
  {
    what: 'stage: relative path',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: 'staging/x', volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /must be an absolute path/,
  },
  {
    what: 'stage: ".." in path',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: `${c.kubelet}/../../etc`, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /must not contain "\.\."/,
  },
  {
    what: 'stage: outside the allowed root',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.outside, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /outside the directories/,
  },
  {
    what: 'stage: symlink out of the root',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: `${c.escape}/staging`, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /outside the directories/,
  },
  {
    what: 'stage: the root itself',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.kubelet, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /outside the directories/,
  },
  {
    what: 'stage: NUL in path',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: `${c.staging}\0x`, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /NUL/,
  },
  {
    what: 'stage: unknown volume',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: MISSING_ID, staging_target_path: c.staging, volume_capability: SNW }),
    code: 'NOT_FOUND',
    message: /does not exist/,
  },
  {
    what: 'stage: id that is a path',
    method: 'NodeStageVolume',
    req: (c) => ({ volume_id: '../../etc/passwd', staging_target_path: c.staging, volume_capability: SNW }),
    code: 'NOT_FOUND',
    message: /does not exist/,
  },
  // NodePublishVolume
  {
    what: 'publish: no volume_id',
    method: 'NodePublishVolume',
    req: (c) => ({ staging_target_path: c.staging, target_path: c.target, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /volume_id is required/,
  },
  {
    what: 'publish: no target',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /target_path is required/,
  },
  {
    what: 'publish: no capability',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, target_path: c.target }),
    code: 'INVALID_ARGUMENT',
    message: /volume_capability is required/,
  },
  {
    what: 'publish: no staging path',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, target_path: c.target, volume_capability: SNW }),
    code: 'FAILED_PRECONDITION',
    message: /staging_target_path is required/,
  },
  // arguments before state: a malformed request is INVALID_ARGUMENT whatever is (not) staged
  {
    what: 'publish: relative target, no staging path',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, target_path: 'pods/x/mount', volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /must be an absolute path/,
  },
  {
    what: 'publish: relative target, not staged',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, target_path: 'pods/x/mount', volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /must be an absolute path/,
  },
  {
    what: 'publish: relative target, unknown volume',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: MISSING_ID, staging_target_path: c.staging, target_path: 'pods/x/mount', volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /must be an absolute path/,
  },
  {
    what: 'publish: no access mode, no staging path',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, target_path: c.target, volume_capability: { mount: {} } }),
    code: 'INVALID_ARGUMENT',
    message: /access_mode is required/,
  },
  {
    what: 'publish: relative staging path',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: 'staging/x', target_path: c.target, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /must be an absolute path/,
  },
  {
    what: 'stage: relative path, unknown volume',
    method: 'NodeStageVolume',
    req: () => ({ volume_id: MISSING_ID, staging_target_path: 'staging/x', volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /must be an absolute path/,
  },
  {
    what: 'unstage: relative path, unknown volume',
    method: 'NodeUnstageVolume',
    req: () => ({ volume_id: MISSING_ID, staging_target_path: 'staging/x' }),
    code: 'INVALID_ARGUMENT',
    message: /must be an absolute path/,
  },
  {
    what: 'unpublish: relative target, unknown volume',
    method: 'NodeUnpublishVolume',
    req: () => ({ volume_id: MISSING_ID, target_path: 'pods/x' }),
    code: 'INVALID_ARGUMENT',
    message: /must be an absolute path/,
  },
  {
    what: 'publish: target outside root',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, target_path: c.outside, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /target_path .* outside/,
  },
  {
    what: 'publish: target with ".."',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, target_path: `${c.kubelet}/pods/../../x`, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /"\.\."/,
  },
  {
    what: 'publish: target = staging',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, target_path: c.staging, volume_capability: SNW }),
    code: 'INVALID_ARGUMENT',
    message: /must differ/,
  },
  {
    what: 'publish: unknown volume',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: MISSING_ID, staging_target_path: c.staging, target_path: c.target, volume_capability: SNW }),
    code: 'NOT_FOUND',
    message: /does not exist/,
  },
  {
    what: 'publish: not staged',
    method: 'NodePublishVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: c.staging, target_path: c.target, volume_capability: SNW }),
    code: 'FAILED_PRECONDITION',
    message: /not staged/,
  },
  {
    what: 'publish: non-numeric mount group',
    method: 'NodePublishVolume',
    req: (c) => ({
      volume_id: c.id,
      staging_target_path: c.staging,
      target_path: c.target,
      volume_capability: mountCap('SINGLE_NODE_WRITER', { volume_mount_group: 'wheel' }),
    }),
    code: 'INVALID_ARGUMENT',
    message: /numeric group id/,
  },
  // NodeUnpublishVolume
  {
    what: 'unpublish: no volume_id',
    method: 'NodeUnpublishVolume',
    req: (c) => ({ target_path: c.target }),
    code: 'INVALID_ARGUMENT',
    message: /volume_id is required/,
  },
  {
    what: 'unpublish: no target',
    method: 'NodeUnpublishVolume',
    req: (c) => ({ volume_id: c.id }),
    code: 'INVALID_ARGUMENT',
    message: /target_path is required/,
  },
  {
    what: 'unpublish: relative target',
    method: 'NodeUnpublishVolume',
    req: (c) => ({ volume_id: c.id, target_path: 'pods/x' }),
    code: 'INVALID_ARGUMENT',
    message: /absolute/,
  },
  {
    what: 'unpublish: target outside root',
    method: 'NodeUnpublishVolume',
    req: (c) => ({ volume_id: c.id, target_path: '/etc' }),
    code: 'INVALID_ARGUMENT',
    message: /outside/,
  },
  {
    what: 'unpublish: unknown volume',
    method: 'NodeUnpublishVolume',
    req: (c) => ({ volume_id: MISSING_ID, target_path: c.target }),
    code: 'NOT_FOUND',
    message: /does not exist/,
  },
  // NodeUnstageVolume
  {
    what: 'unstage: no volume_id',
    method: 'NodeUnstageVolume',
    req: (c) => ({ staging_target_path: c.staging }),
    code: 'INVALID_ARGUMENT',
    message: /volume_id is required/,
  },
  {
    what: 'unstage: no staging path',
    method: 'NodeUnstageVolume',
    req: (c) => ({ volume_id: c.id }),
    code: 'INVALID_ARGUMENT',
    message: /staging_target_path is required/,
  },
  {
    what: 'unstage: ".." in path',
    method: 'NodeUnstageVolume',
    req: (c) => ({ volume_id: c.id, staging_target_path: `${c.staging}/../..` }),
    code: 'INVALID_ARGUMENT',
    message: /"\.\."/,
  },
  {
    what: 'unstage: unknown volume',
    method: 'NodeUnstageVolume',
    req: (c) => ({ volume_id: MISSING_ID, staging_target_path: c.staging }),
    code: 'NOT_FOUND',
    message: /does not exist/,
  },
  // NodeGetVolumeStats
  {
    what: 'stats: no volume_id',
    method: 'NodeGetVolumeStats',
    req: (c) => ({ volume_path: c.target }),
    code: 'INVALID_ARGUMENT',
    message: /volume_id is required/,
  },
  {
    what: 'stats: no volume_path',
    method: 'NodeGetVolumeStats',
    req: (c) => ({ volume_id: c.id }),
    code: 'INVALID_ARGUMENT',
    message: /volume_path is required/,
  },
  {
    what: 'stats: unknown volume',
    method: 'NodeGetVolumeStats',
    req: (c) => ({ volume_id: MISSING_ID, volume_path: c.target }),
    code: 'NOT_FOUND',
    message: /does not exist/,
  },
  {
    what: 'stats: not on that path',
    method: 'NodeGetVolumeStats',
    req: (c) => ({ volume_id: c.id, volume_path: c.target }),
    code: 'NOT_FOUND',
    message: /not staged or published/,
  },
  // A relative volume_path is well formed but never a place this plugin staged or published a
  // volume: the spec's NOT_FOUND ("does not exist on the specified volume_path"), and what
  // csi-sanity v5.4.0 expects for "some/path", known volume or not. A path that cannot name a file
  // (NUL, longer than PATH_MAX) or climbs with ".." is INVALID_ARGUMENT, checked before the volume.
  {
    what: 'stats: relative path',
    method: 'NodeGetVolumeStats',
    req: (c) => ({ volume_id: c.id, volume_path: 'some/path' }),
    code: 'NOT_FOUND',
    message: /not staged or published at "some\/path"/,
  },
  {
    what: 'stats: relative path, unknown volume',
    method: 'NodeGetVolumeStats',
    req: () => ({ volume_id: MISSING_ID, volume_path: 'some/path' }),
    code: 'NOT_FOUND',
    message: /does not exist/,
  },
  {
    what: 'stats: NUL in the path (unknown volume: argument before state)',
    method: 'NodeGetVolumeStats',
    req: (c) => ({ volume_id: MISSING_ID, volume_path: `${c.target}\0x` }),
    code: 'INVALID_ARGUMENT',
    message: /volume_path contains a NUL/,
  },
  {
    what: 'stats: ".." component',
    method: 'NodeGetVolumeStats',
    req: (c) => ({ volume_id: c.id, volume_path: `${c.kubelet}/../etc` }),
    code: 'INVALID_ARGUMENT',
    message: /volume_path .* must not contain "\.\." components/,
  },
  {
    what: 'stats: relative path with ".." (unknown volume)',
    method: 'NodeGetVolumeStats',
    req: () => ({ volume_id: MISSING_ID, volume_path: '../some/path' }),
    code: 'INVALID_ARGUMENT',
    message: /volume_path "\.\.\/some\/path" must not contain "\.\." components/,
  },
  {
    what: 'stats: path longer than PATH_MAX (unknown volume)',
    method: 'NodeGetVolumeStats',
    req: (c) => ({ volume_id: MISSING_ID, volume_path: `${c.kubelet}/${'x'.repeat(5000)}` }),
    code: 'INVALID_ARGUMENT',
    message: /volume_path is \d+ bytes; the limit is 4096/,
  },
  // Not offered
  {
    what: 'expand: unsupported',
    method: 'NodeExpandVolume',
    req: (c) => ({ volume_id: c.id, volume_path: c.target }),
    code: 'UNIMPLEMENTED',
    message: /not supported/,
  },
];

(canMount ? describe : describe.skip)('CSI Node service: bad input gets the spec status code (table)', function () {
  this.timeout(60_000);
  let env: NodeTestEnv;
  let node: NodePlugin;
  let ctx: Ctx;

  before(async () => {
    env = new NodeTestEnv('node-err', 128 * MiB);
    node = await env.startNode('node-err');
    const id = env.createVolume('errors', 2 * MiB);
    const outside = path.join(env.dir, 'outside');
    fs.mkdirSync(outside);
    const escape = path.join(env.kubelet, 'escape');
    fs.symlinkSync(outside, escape);
    ctx = { id, staging: env.staging('node-err', id), target: env.target('pod-err'), kubelet: env.kubelet, outside: path.join(outside, 'target'), escape };
  });
  after(async () => {
    await env?.close();
  });

  for (const row of ROWS) {
    it(`${row.what} → ${row.code}`, async () => {
      let err: CsiCallError | undefined;
      try {
        await node.client.call('Node', row.method, row.req(ctx), 20_000);
      } catch (e) {
        err = e as CsiCallError;
      }
      assert.ok(err !== undefined, `${row.method} succeeded`);
      assert.equal(status[err.code], row.code, `${row.method}: ${err.details}`);
      assert.match(err.details, row.message);
    });
  }

  it('left nothing mounted and created no target', async () => {
    assert.deepEqual(
      (await readMountinfo()).filter((m) => m.mountPoint.startsWith(env.kubelet)).map((m) => m.mountPoint),
      [],
    );
    assert.equal(fs.existsSync(ctx.target), false);
    assert.deepEqual(fs.readdirSync(path.dirname(ctx.outside)), []);
    // And the plugin is still healthy after all of it.
    await node.client.call('Identity', 'Probe', {});
  });
});
