// Node service with real FUSE servers, real bind mounts and real unix sockets: the test process is
// the famfs master, node plugins run in node mode with their own state dirs and FUSE mounts.
import { strict as assert } from 'assert';
import { spawn, spawnSync } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { objectFileRelpath } from '../pkg/csi/names';
import type { NodeGetCapabilitiesResponse, NodeGetInfoResponse, NodeGetVolumeStatsResponse } from '../pkg/csi/types';
import { NODE_PUBLISHED_JOURNAL, readNodeRecords } from '../pkg/mount/mount-records';
import { findMount } from '../pkg/mount/mountinfo';
import { blockCap, canMount, codeOf, messageOf, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';

const SNW = mountCap('SINGLE_NODE_WRITER');

function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
  return undefined;
}

/** mmap(PROT_READ|PROT_WRITE, MAP_SHARED) of `file` opened read-only: prints the errno name or OK. */
function mmapWritable(file: string): string {
  const py = [
    'import mmap, os, sys, errno',
    'fd = os.open(sys.argv[1], os.O_RDONLY)',
    'try:',
    '    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)',
    '    print("OK")',
    'except OSError as e:',
    '    print(errno.errorcode[e.errno])',
  ].join('\n');
  const r = spawnSync('python3', ['-c', py, file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python3 failed: ${r.stderr}`);
  return r.stdout.trim();
}

(canMount ? describe : describe.skip)('CSI Node service (real FUSE and bind mounts)', function () {
  this.timeout(60_000);
  let env: NodeTestEnv;
  let a: NodePlugin;

  const stage = (p: NodePlugin, id: string, staging: string, cap: object = SNW, ctx: Record<string, string> = {}) =>
    p.call('NodeStageVolume', { volume_id: id, staging_target_path: staging, volume_capability: cap, volume_context: ctx });
  const unstage = (p: NodePlugin, id: string, staging: string) => p.call('NodeUnstageVolume', { volume_id: id, staging_target_path: staging });
  const publish = (p: NodePlugin, id: string, staging: string, target: string, cap: object = SNW, readonly = false) =>
    p.call('NodePublishVolume', { volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap, readonly });
  const unpublish = (p: NodePlugin, id: string, target: string) => p.call('NodeUnpublishVolume', { volume_id: id, target_path: target });

  before(async () => {
    env = new NodeTestEnv('node');
    a = await env.startNode('node-a');
  });
  after(async () => {
    await env?.close();
  });

  it('reports capabilities and the pool topology', async () => {
    const caps = await a.call<NodeGetCapabilitiesResponse>('NodeGetCapabilities', {});
    assert.deepEqual(caps.capabilities.map((c) => c.rpc.type).sort(), [
      'GET_VOLUME_STATS',
      'SINGLE_NODE_MULTI_WRITER',
      'STAGE_UNSTAGE_VOLUME',
      'VOLUME_CONDITION',
      'VOLUME_MOUNT_GROUP',
    ]);
    const info = await a.call<NodeGetInfoResponse>('NodeGetInfo', {});
    assert.equal(info.node_id, 'node-a');
    assert.deepEqual(info.accessible_topology?.segments, { 'famfs.csi.cxl.io/pool': 'test-pool' });
  });

  it('stages, publishes, serves I/O through the target, reports stats, and tears down idempotently', async () => {
    const id = env.createVolume('life', 4 * MiB);
    const staging = env.staging('node-a', id);
    const target = env.target('pod-life');
    await stage(a, id, staging);
    await stage(a, id, staging); // idempotent
    const sm = await findMount(staging);
    assert.equal(sm?.fsType, 'fuse.famfs');
    assert.equal(sm?.root, `/csi/${id}`);

    await publish(a, id, staging, target);
    await publish(a, id, staging, target); // same args: OK
    assert.equal(await codeOf(publish(a, id, staging, target, SNW, true)), 'ALREADY_EXISTS');
    assert.deepEqual(fs.readdirSync(target), ['data']);
    assert.equal(fs.statSync(path.join(target, 'data')).size, 4 * MiB);

    const payload = randomBytes(64 * 1024);
    const fd = fs.openSync(path.join(target, 'data'), 'r+');
    fs.writeSync(fd, payload, 0, payload.length, MiB);
    fs.closeSync(fd);
    const back = Buffer.alloc(payload.length);
    const rfd = fs.openSync(path.join(target, 'data'), 'r');
    fs.readSync(rfd, back, 0, back.length, MiB);
    fs.closeSync(rfd);
    assert.ok(back.equals(payload));
    // And the bytes are in the shared memory itself, where another host would read them.
    env.master.catchUp();
    const file = env.master.lookup(objectFileRelpath(id));
    assert.ok(file !== undefined && file.kind === 'file');

    const stats = await a.call<NodeGetVolumeStatsResponse>('NodeGetVolumeStats', { volume_id: id, volume_path: target });
    assert.deepEqual(
      stats.usage.map((u) => [u.unit, u.total, u.used, u.available]),
      [['BYTES', String(4 * MiB), String(4 * MiB), '0']],
    );
    assert.equal(stats.volume_condition?.abnormal, false);
    assert.equal(await codeOf(a.call('NodeGetVolumeStats', { volume_id: id, volume_path: path.join(env.kubelet, 'elsewhere') })), 'NOT_FOUND');

    assert.equal(await codeOf(unstage(a, id, staging)), 'FAILED_PRECONDITION'); // still published
    await unpublish(a, id, target);
    assert.equal(fs.existsSync(target), false, 'the plugin removes the target it created');
    await unpublish(a, id, target); // idempotent
    await unstage(a, id, staging);
    assert.equal(await findMount(staging), undefined);
    await unstage(a, id, staging); // idempotent
    assert.deepEqual(await env.mountsUnderDir().then((m) => m.filter((x) => x.startsWith(env.kubelet))), []);
  });

  it('enforces read-only publishes in the kernel: write(2), O_RDWR and mmap(PROT_WRITE) fail', async () => {
    const id = env.createVolume('ro', 2 * MiB, { mode: 0o666 });
    const staging = env.staging('node-a', id);
    await stage(a, id, staging);
    const rw = env.target('pod-rw');
    const ro = env.target('pod-ro');
    await publish(a, id, staging, rw);
    await publish(a, id, staging, ro, SNW, true);
    const roFile = path.join(ro, 'data');
    assert.equal(
      errnoOf(() => fs.openSync(roFile, 'r+')),
      'EROFS',
    );
    assert.equal(
      errnoOf(() => fs.writeFileSync(roFile, 'x', { flag: 'a' })),
      'EROFS',
    );
    assert.equal(mmapWritable(roFile), 'EACCES');
    assert.equal(fs.readFileSync(roFile).length, 2 * MiB, 'still readable');
    assert.ok((await findMount(ro))?.mountOptions.includes('ro'));
    // The writable publish next to it writes, and the read-only one sees the bytes.
    fs.writeFileSync(path.join(rw, 'data'), 'written-through-rw', { flag: 'r+' });
    assert.equal(fs.readFileSync(roFile).subarray(0, 18).toString(), 'written-through-rw');
    await unpublish(a, id, ro);
    await unpublish(a, id, rw);

    // Reader-only modes are read-only whatever the readonly flag says; block access gives a file.
    const blk = env.target('pod-blk', 'dev');
    await publish(a, id, staging, blk, blockCap('SINGLE_NODE_READER_ONLY'));
    assert.ok(fs.statSync(blk).isFile());
    assert.equal(fs.statSync(blk).size, 2 * MiB);
    assert.equal(
      errnoOf(() => fs.openSync(blk, 'r+')),
      'EROFS',
    );
    await unpublish(a, id, blk);
    assert.equal(fs.existsSync(blk), false);
    await unstage(a, id, staging);
  });

  it('follows the spec table for a second target and checks volume_mount_group against the file', async () => {
    const id = env.createVolume('rwop', 2 * MiB, { mode: 0o660, gid: 2000 });
    const staging = env.staging('node-a', id);
    await stage(a, id, staging, mountCap('SINGLE_NODE_SINGLE_WRITER'));
    const t1 = env.target('pod-1');
    await publish(a, id, staging, t1, mountCap('SINGLE_NODE_SINGLE_WRITER'));
    assert.equal(await codeOf(publish(a, id, staging, env.target('pod-2'), mountCap('SINGLE_NODE_SINGLE_WRITER'))), 'FAILED_PRECONDITION');
    await unpublish(a, id, t1);
    await unstage(a, id, staging);

    await stage(a, id, staging, mountCap('SINGLE_NODE_MULTI_WRITER'));
    const g1 = env.target('pod-g1');
    const g2 = env.target('pod-g2');
    await publish(a, id, staging, g1, mountCap('SINGLE_NODE_MULTI_WRITER', { volume_mount_group: '2000' }));
    await publish(a, id, staging, g2, mountCap('SINGLE_NODE_MULTI_WRITER')); // another target: OK for multi-writer
    const msg = await messageOf(publish(a, id, staging, env.target('pod-g3'), mountCap('SINGLE_NODE_MULTI_WRITER', { volume_mount_group: '3000' })));
    assert.match(msg, /gid 2000.*fsGroup 3000/);
    assert.equal(
      await codeOf(publish(a, id, staging, env.target('pod-g3'), mountCap('SINGLE_NODE_MULTI_WRITER', { volume_mount_group: '3000' }))),
      'FAILED_PRECONDITION',
    );
    await unpublish(a, id, g1);
    await unpublish(a, id, g2);
    await unpublish(a, id, env.target('pod-g3')); // never published: OK, nothing left behind
    assert.equal(fs.existsSync(env.target('pod-g3')), false);
    await unstage(a, id, staging);
  });

  it('answers ABORTED to a second operation on a volume while one is in flight, and the first still completes', async () => {
    const id = env.createVolume('concurrent', 2 * MiB);
    const staging = env.staging('node-a', id);
    const codes = await Promise.all([codeOf(stage(a, id, staging)), codeOf(stage(a, id, staging)), codeOf(stage(a, id, staging))]);
    assert.equal(codes.filter((c) => c === 'OK').length >= 1, true, codes.join());
    assert.ok(codes.includes('ABORTED'), codes.join());
    assert.deepEqual(
      codes.filter((c) => c !== 'OK' && c !== 'ABORTED'),
      [],
    );
    assert.equal((await findMount(staging))?.root, `/csi/${id}`);
    await stage(a, id, staging); // a retry after ABORTED succeeds
    await unstage(a, id, staging);
  });

  it("hands a file over between two nodes: A flushes on unstage, B invalidates on stage and reads exactly A's bytes", async () => {
    const b = await env.startNode('node-b');
    const id = env.createVolume('handoff', 8 * MiB);
    const cap = mountCap('SINGLE_NODE_MULTI_WRITER');
    const sa = env.staging('node-a', id);
    const sb = env.staging('node-b', id);
    // B reads first, so its page cache holds the old (zero) content.
    await stage(b, id, sb, cap);
    const tb0 = env.target('pod-b0');
    await publish(b, id, sb, tb0, cap);
    assert.ok(fs.readFileSync(path.join(tb0, 'data')).subarray(0, 4096).equals(Buffer.alloc(4096)));
    await unpublish(b, id, tb0);
    await unstage(b, id, sb);

    await stage(a, id, sa, cap);
    const ta = env.target('pod-a');
    await publish(a, id, sa, ta, cap);
    const bytes = randomBytes(8 * MiB);
    fs.writeFileSync(path.join(ta, 'data'), bytes, { flag: 'r+' });
    await unpublish(a, id, ta);
    await unstage(a, id, sa);

    await stage(b, id, sb, cap);
    const tb = env.target('pod-b');
    await publish(b, id, sb, tb, cap);
    const seen = fs.readFileSync(path.join(tb, 'data'));
    assert.equal(seen.length, bytes.length);
    assert.ok(seen.equals(bytes), 'node B reads exactly what node A wrote');
    await unpublish(b, id, tb);
    await unstage(b, id, sb);
    assert.notEqual(a.driver.node?.fuse.mountpoint, b.driver.node?.fuse.mountpoint, 'each node has its own FUSE mount');
  });

  it('keeps mounts across a plugin restart, and restores them after the FUSE server died', async () => {
    const id = env.createVolume('restart', 2 * MiB);
    const staging = env.staging('node-a', id);
    const target = env.target('pod-restart');
    await stage(a, id, staging);
    await publish(a, id, staging, target);
    fs.writeFileSync(path.join(target, 'data'), 'before-restart', { flag: 'r+' });
    const fusePid = a.driver.node?.fuse.serverPid();
    assert.ok(fusePid !== undefined);

    // 1. Plugin restart: the detached FUSE server survives, nothing needs restoring.
    a = await env.restartPlugin(a);
    assert.equal(a.driver.node?.fuse.serverPid(), fusePid, 'same FUSE server after the plugin restart');
    assert.equal(fs.readFileSync(path.join(target, 'data')).subarray(0, 14).toString(), 'before-restart');

    // 2. The FUSE server dies while nothing else holds its connection (the plugin's fd deposit released,
    //    as when the plugin died too): the binds answer ENOTCONN; Probe and VolumeCondition say so.
    a.driver.node?.fuse.close();
    process.kill(fusePid, 'SIGKILL');
    await waitFor(() => errnoOf(() => fs.statSync(path.join(target, 'data'))) === 'ENOTCONN');
    assert.equal(await codeOf(a.client.call('Identity', 'Probe', {})), 'FAILED_PRECONDITION');
    const st = await a.call<NodeGetVolumeStatsResponse>('NodeGetVolumeStats', { volume_id: id, volume_path: target });
    assert.equal(st.volume_condition?.abnormal, true);
    assert.match(st.volume_condition?.message ?? '', /dead/);

    // 3. Plugin restart: a new FUSE server, staging and target bound again, data still there.
    a = await env.restartPlugin(a);
    const newPid = a.driver.node?.fuse.serverPid();
    assert.ok(newPid !== undefined && newPid !== fusePid);
    assert.equal(fs.readFileSync(path.join(target, 'data')).subarray(0, 14).toString(), 'before-restart');
    assert.equal(await codeOf(a.client.call('Identity', 'Probe', {})), 'OK');
    await unpublish(a, id, target);
    await unstage(a, id, staging);
  });

  it('unpublishes and unstages after the FUSE server was killed (lazy unmount, fallback flush)', async () => {
    const id = env.createVolume('deadfuse', 2 * MiB);
    const staging = env.staging('node-a', id);
    const target = env.target('pod-dead');
    await stage(a, id, staging);
    await publish(a, id, staging, target);
    const pid = a.driver.node?.fuse.serverPid();
    assert.ok(pid !== undefined);
    // Nothing else holds the connection (fd deposit released): the mounts die with the server.
    a.driver.node!.fuse.close();
    process.kill(pid, 'SIGKILL');
    await waitFor(() => errnoOf(() => fs.statSync(target)) === 'ENOTCONN');
    await unpublish(a, id, target);
    assert.equal(fs.existsSync(target), false);
    await unstage(a, id, staging);
    assert.equal(await findMount(staging), undefined);
    // The next stage brings a new FUSE server up by itself.
    await stage(a, id, staging);
    assert.equal(fs.statSync(path.join(staging, 'data')).size, 2 * MiB);
    await unstage(a, id, staging);
  });

  it('publishes only from a live staging bind: one unmounted or whose FUSE server died is staged again first, and the target serves the volume', async () => {
    const id = env.createVolume('stagedead', 2 * MiB);
    const staging = env.staging('node-a', id);
    const target = env.target('pod-stagedead');
    await stage(a, id, staging);
    fs.writeFileSync(path.join(staging, 'data'), 'staged-bytes', { flag: 'r+' });
    const servesVolume = (what: string): void =>
      assert.equal(fs.readFileSync(path.join(target, 'data')).subarray(0, 12).toString(), 'staged-bytes', `${what}: the target shows the volume's file`);

    // 1. The staging bind is gone (unmounted behind the plugin's back): a plain directory is left.
    assert.equal(spawnSync('umount', [staging]).status, 0);
    assert.equal(fs.existsSync(path.join(staging, 'data')), false);
    await publish(a, id, staging, target);
    servesVolume('after the staging bind was unmounted');
    await unpublish(a, id, target);

    // 2. The FUSE server behind the staging bind died with nothing else holding its connection: the
    //    bind answers ENOTCONN, and a bind made from it would too.
    const pid = a.driver.node?.fuse.serverPid();
    assert.ok(pid !== undefined);
    a.driver.node!.fuse.close();
    process.kill(pid, 'SIGKILL');
    await waitFor(() => errnoOf(() => fs.statfsSync(staging)) === 'ENOTCONN');
    await publish(a, id, staging, target);
    servesVolume('after the FUSE server died');
    assert.notEqual(a.driver.node?.fuse.serverPid(), pid, 'a new FUSE server serves');
    assert.equal(
      errnoOf(() => fs.statfsSync(staging)),
      undefined,
      'the staging bind was made again',
    );
    await unpublish(a, id, target);
    await unstage(a, id, staging);
  });

  it('publish records lost in a machine crash: unpublish still finds the bind at the target (asked of the path), unmounts and removes it', async () => {
    const id = env.createVolume('lostrec', 2 * MiB);
    const staging = env.staging('node-a', id);
    const target = env.target('pod-lostrec');
    const blockTarget = env.target('pod-lostrec', 'dev');
    await stage(a, id, staging);
    const journal = path.join(a.stateDir, NODE_PUBLISHED_JOURNAL);
    const before = fs.statSync(journal).size;
    await publish(a, id, staging, target);
    await publish(a, id, staging, blockTarget, blockCap('SINGLE_NODE_MULTI_WRITER'));
    // A machine crash before the page cache reached the disk: the journal lost both publishes' frames
    // but a few bytes (a torn frame). The restarted plugin drops the tail and works from the paths.
    assert.ok(fs.statSync(journal).size > before + 7);
    fs.truncateSync(journal, before + 7);
    a = await env.restartPlugin(a);
    assert.deepEqual(readNodeRecords(a.stateDir).published, {});
    for (const t of [target, blockTarget]) {
      assert.ok(await findMount(t), `${t} is still bound after the restart`);
      await unpublish(a, id, t);
      assert.equal(await findMount(t), undefined, `${t} unmounted without a record`);
      assert.equal(fs.existsSync(t), false);
      await unpublish(a, id, t); // idempotent: nothing mounted, the volume exists
    }
    await unstage(a, id, staging);
    assert.equal(await findMount(staging), undefined);
  });

  it('unpublishes while the FUSE server is stopped (SIGSTOP): nothing on the unpublish path waits for it', async () => {
    const id = env.createVolume('stopped', 2 * MiB);
    const staging = env.staging('node-a', id);
    const target = env.target('pod-stopped');
    const blockTarget = env.target('pod-stopped', 'dev');
    await stage(a, id, staging);
    await publish(a, id, staging, target);
    await publish(a, id, staging, blockTarget, blockCap('SINGLE_NODE_MULTI_WRITER'));
    const pid = a.driver.node?.fuse.serverPid();
    assert.ok(pid !== undefined);
    // Past the attribute cache (an lstat of the bind would now wait for the stopped server).
    await new Promise((r) => setTimeout(r, 1500));
    // The plugin runs in this process: a synchronous call that waited for the server would block
    // this test too, so a watchdog process wakes the server up in any case (the call then fails its
    // deadline instead of hanging the run).
    const watchdog = spawn('sh', ['-c', `sleep 30; kill -CONT ${pid}`], { detached: true, stdio: 'ignore' });
    watchdog.unref();
    process.kill(pid, 'SIGSTOP');
    try {
      for (const t of [target, blockTarget]) {
        // A deadline, not a timing target: a check that waits for the server never answers until SIGCONT.
        await a.client.call('Node', 'NodeUnpublishVolume', { volume_id: id, target_path: t }, 20_000);
        assert.equal(fs.existsSync(t), false, `${t} removed`);
      }
    } finally {
      process.kill(pid, 'SIGCONT');
      watchdog.kill();
    }
    assert.equal(await findMount(target), undefined);
    assert.equal(await findMount(blockTarget), undefined);
    await unstage(a, id, staging);
  });

  it('tears down, on restart, what belongs to a volume deleted while the plugin was away', async () => {
    const id = env.createVolume('gone', 2 * MiB);
    const staging = env.staging('node-a', id);
    const target = env.target('pod-gone');
    await stage(a, id, staging);
    await publish(a, id, staging, target);
    await env.stopPlugin(a);
    env.plugins.splice(env.plugins.indexOf(a), 1);
    env.deleteVolume(id);
    a = await env.startNode('node-a');
    assert.equal(await findMount(target), undefined);
    assert.equal(await findMount(staging), undefined);
    assert.equal(fs.existsSync(target), false);
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail('timed out waiting for a condition');
}
