// Restarts (issue 6, item 5): node plugin and FUSE server restarts with published volumes, a
// NodeUnpublish after the mount died, and a node that was away while the master created and
// deleted volumes. The last one is the memory-safety property of design-hazards §2, checked on
// offsets: while a node that may still map a deleted volume has not acknowledged the delete, the
// master must not hand that memory to a new volume.
import { strict as assert } from 'assert';
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import { createHash, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { objectFileRelpath } from '../pkg/csi/names';
import { FamfsFs } from '../pkg/famfs/fs';
import type { Fmap } from '../pkg/famfs/layout';
import { systemUuid } from '../pkg/famfs/host-uuid';
import { canMount, codeOf, MASTER_UUID, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';
import { deviceBytes, POD_BLOCK, PodIoLoop, podExpected } from './helpers/pod-io';
import { errnoOf, fuseStatus, sleep, waitFor } from './soak/reliability-lib';
import { NODE_PUBLISHED_FILE, NODE_PUBLISHED_JOURNAL, PUBLISHED_TOMBSTONE, readNodeRecords } from '../pkg/mount/mount-records';
import { startControllerProcess, stopProcess, type DriverProcess } from '../testkit/csi-load-process';

const SNW = mountCap('SINGLE_NODE_WRITER');
const FUSED = path.join(__dirname, '..', 'cmd', 'famfs-fused.js');

function ranges(fmap: Fmap): [number, number][] {
  return (fmap.kind === 'simple' ? fmap.extents : fmap.strips).map((e) => [e.offset, e.offset + e.len]);
}
function overlaps(a: Fmap, b: Fmap): boolean {
  return ranges(a).some(([s1, e1]) => ranges(b).some(([s2, e2]) => s1 < e2 && s2 < e1));
}

(canMount ? describe : describe.skip)('reliability: restarts of the node plugin and the FUSE server', function () {
  this.timeout(120_000);
  let env: NodeTestEnv;
  let a: NodePlugin;

  const staging = (id: string) => env.staging('node-a', id);
  const stage = (p: NodePlugin, id: string) => p.call('NodeStageVolume', { volume_id: id, staging_target_path: staging(id), volume_capability: SNW });
  const publish = (p: NodePlugin, id: string, target: string) =>
    p.call('NodePublishVolume', { volume_id: id, staging_target_path: staging(id), target_path: target, volume_capability: SNW });

  /** Writes fresh bytes through the target and reads them back. */
  function roundTrip(target: string): void {
    const data = randomBytes(16 * 1024);
    fs.writeFileSync(path.join(target, 'data'), data, { flag: 'r+' });
    assert.ok(fs.readFileSync(path.join(target, 'data')).subarray(0, data.length).equals(data));
  }

  before(async () => {
    env = new NodeTestEnv('restart', 256 * MiB);
    a = await env.startNode('node-a');
  });
  after(async () => {
    await env?.close();
  });

  it('node plugin restarts (x5) with published volumes: the mounts stay and keep serving', async () => {
    const id = env.createVolume('plug', 4 * MiB, { mode: 0o666 });
    await stage(a, id);
    const target = env.target('pod-plug');
    await publish(a, id, target);
    roundTrip(target);
    const pid = a.driver.node!.fuse.serverPid();
    for (let i = 0; i < 5; i++) {
      a = await env.restartPlugin(a);
      roundTrip(target);
    }
    assert.equal(a.driver.node!.fuse.serverPid(), pid, 'the FUSE server outlived every plugin restart');
    await publish(a, id, target); // idempotent after the restart
  });

  /** Kills the node's famfs-fused with SIGKILL and waits until the process is gone. */
  async function killServer(p: NodePlugin): Promise<number> {
    const pid = p.driver.node!.fuse.serverPid();
    assert.ok(pid !== undefined, 'a famfs-fused serves the node');
    process.kill(pid, 'SIGKILL');
    assert.ok(await waitFor(() => !fs.existsSync(`/proc/${pid}`), 5000), `famfs-fused ${pid} did not die`);
    return pid;
  }

  /** The bytes of a volume's file in the device memory itself (not through any mount). */
  function memoryOf(id: string, len: number): Buffer {
    env.master.catchUp();
    const f = env.master.lookup(objectFileRelpath(id)) as { fmap: Fmap };
    return deviceBytes(env.devicePath, f.fmap.kind === 'simple' ? f.fmap.extents : f.fmap.strips, len);
  }

  it('FUSE server killed (-9) x5 while 3 pods write and read: the connection outlives the server, no pod sees an error, the bytes stay right', async () => {
    // Three pods on three volumes keep several requests in the server's hands at every moment, so kills
    // land while some are read but not answered: those must be resent, never failed (a server reading
    // through per-thread cloned fds failed them with ECONNABORTED within two kills here).
    const blocks = 64;
    const pods: { id: string; initial: Buffer; loop: PodIoLoop }[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const id = env.createVolume(`fused-${i}`, 4 * MiB, { mode: 0o666 });
        await stage(a, id);
        const target = env.target(`pod-fused-${i}`);
        await publish(a, id, target);
        pods.push({ id, initial: memoryOf(id, blocks * POD_BLOCK), loop: new PodIoLoop(path.join(target, 'data'), blocks) });
      }
      for (const p of pods) await p.loop.started();
      const failed = () => pods.find((p) => p.loop.error !== undefined || p.loop.exited !== undefined)?.loop;
      assert.ok(await waitFor(() => pods.every((p) => p.loop.rounds >= 32) || failed() !== undefined, 30_000), 'the pod loops run');
      for (let kill = 0; kill < 5; kill++) {
        assert.ok(await waitFor(() => a.driver.node!.fuse.depositHeld(), 10_000), 'the plugin holds the connection');
        await sleep(Math.floor(Math.random() * 200));
        const old = await killServer(a);
        const marks = pods.map((p) => p.loop.rounds);
        assert.ok(
          await waitFor(() => pods.every((p, i) => p.loop.rounds >= (marks[i] ?? 0) + 32) || failed() !== undefined, 60_000),
          `the pods made no progress after kill ${kill + 1} (rounds ${pods.map((p) => p.loop.rounds).join(', ')})`,
        );
        assert.equal(failed()?.error, undefined, `a pod's I/O failed after kill ${kill + 1} of famfs-fused`);
        const now = a.driver.node!.fuse.serverPid();
        assert.ok(now !== undefined && now !== old, 'a new famfs-fused serves the connection');
      }
      let stall = 0;
      for (const p of pods) {
        const final = await p.loop.stop();
        assert.equal(p.loop.error, undefined);
        assert.ok(final.rounds > 5 * 32, `rounds: ${final.rounds}`);
        assert.ok(memoryOf(p.id, blocks * POD_BLOCK).equals(podExpected(p.initial, blocks, final.rounds)), "the device memory holds exactly the pod's writes");
        stall = Math.max(stall, final.maxGapMs);
      }
      console.log(
        `      kill -9 of famfs-fused x5 under 3 pods' I/O: ${pods.map((p) => p.loop.final?.rounds).join('/')} rounds, no error, longest stall ${stall} ms`,
      );
    } finally {
      for (const p of pods) p.loop.kill();
    }
  });

  it('a read pending when famfs-fused is killed (-9) completes with the right bytes', async () => {
    const id = env.createVolume('pending', 4 * MiB, { mode: 0o666 });
    await stage(a, id);
    const target = env.target('pod-pending');
    await publish(a, id, target);
    const pattern = randomBytes(256 * 1024);
    fs.writeFileSync(path.join(target, 'data'), pattern, { flag: 'r+' });
    // Cold page cache: the read must reach the server.
    await a.driver.node!.fuse.invalidate(objectFileRelpath(id));
    const pid = a.driver.node!.fuse.serverPid()!;
    process.kill(pid, 'SIGSTOP');
    const reader = spawn(
      process.execPath,
      [
        '-e',
        `const b=require('fs').readFileSync(process.argv[1]).subarray(0,${pattern.length});process.stdout.write(require('crypto').createHash('sha256').update(b).digest('hex'))`,
        path.join(target, 'data'),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    reader.stdout.on('data', (d: Buffer) => (out += d.toString()));
    reader.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => reader.once('close', (code) => r(code)));
    try {
      await sleep(500);
      assert.equal(reader.exitCode, null, `the read did not block on the stopped server: ${out}${err}`);
      process.kill(pid, 'SIGKILL');
      const code = await Promise.race([exited, sleep(60_000).then(() => 'timeout')]);
      assert.equal(code, 0, `the pending read failed: ${err.trim()}`);
      assert.equal(out, createHash('sha256').update(pattern).digest('hex'), 'the pending read returned the right bytes');
    } finally {
      if (reader.exitCode === null) reader.kill('SIGKILL');
    }
  });

  it('node plugin restarted while famfs-fused lives: the fd deposit is made again, a later kill -9 still keeps the pod going', async () => {
    const id = env.createVolume('redeposit', 4 * MiB, { mode: 0o666 });
    await stage(a, id);
    const target = env.target('pod-redeposit');
    await publish(a, id, target);
    const pod = new PodIoLoop(path.join(target, 'data'), 16);
    try {
      await pod.started();
      for (let i = 0; i < 2; i++) a = await env.restartPlugin(a);
      assert.ok(await waitFor(() => a.driver.node!.fuse.depositHeld(), 10_000), 'the restarted plugin holds the FUSE connection again');
      await killServer(a);
      const mark = pod.rounds;
      assert.ok(await waitFor(() => pod.rounds >= mark + 32 || pod.error !== undefined, 60_000), 'the pod progresses after the kill');
      await pod.stop();
      assert.equal(pod.error, undefined);
    } finally {
      pod.kill();
    }
  });

  it('node plugin and famfs-fused both dead: the documented fallback (the pod sees ENOTCONN, a new mount, the plugin restores the mounts, NodeUnpublish succeeds)', async () => {
    const id = env.createVolume('both-dead', 4 * MiB, { mode: 0o666 });
    await stage(a, id);
    const keep = env.target('pod-both-keep');
    const drop = env.target('pod-both-drop');
    await publish(a, id, keep);
    await publish(a, id, drop);
    roundTrip(keep);
    const pod = new PodIoLoop(path.join(keep, 'data'), 16);
    try {
      await pod.started();
      await env.stopPlugin(a);
      env.plugins.splice(env.plugins.indexOf(a), 1);
      const pid = a.driver.node!.fuse.serverPid();
      assert.ok(pid !== undefined);
      process.kill(pid, 'SIGKILL');
      assert.ok(await waitFor(() => pod.error !== undefined, 10_000), 'nothing holds the connection: the pod sees the failure');
      assert.match(pod.error ?? '', /ENOTCONN|ECONNABORTED/);
      assert.equal(
        errnoOf(() => fs.readFileSync(path.join(keep, 'data'))),
        'ENOTCONN',
        'a dead server breaks the bind mount',
      );
      a = await env.startNode('node-a', a.stateDir);
      assert.notEqual(a.driver.node!.fuse.serverPid(), undefined);
      roundTrip(keep);
      await a.call('NodeUnpublishVolume', { volume_id: id, target_path: drop });
      assert.equal(fs.existsSync(drop), false);
    } finally {
      pod.kill();
    }
  });

  it("the chart's layout (famfs-fused container, plugin --external-fuse): a killed famfs-fused restarted by its supervisor adopts the held connection; unadopted past the orphan timeout, the pod gets an error instead of hanging, and the next start mounts afresh", async () => {
    const stateDir = path.join(env.dir, 'state-ext');
    const startPlugin = (orphanMs: number) =>
      env.startNode('node-ext', stateDir, { externalFuse: true, externalFuseWaitMs: 30_000, fuseOrphanTimeoutMs: orphanMs });
    let p = await startPlugin(60_000);
    const fuse = () => p.driver.node!.fuse;
    const logFile = path.join(env.dir, 'fused-container.log');
    // What the kubelet runs (charts/famfs-csi node.yaml), and runs again when it exits.
    const container = (): ChildProcess => {
      const out = fs.openSync(logFile, 'a');
      try {
        const args = ['--foreground', '--container', '--control-socket', fuse().socketPath, '--fd-deposit', fuse().depositSocket];
        return spawn(process.execPath, [FUSED, env.devicePath, fuse().mountpoint, ...args], { stdio: ['ignore', out, out] });
      } finally {
        fs.closeSync(out);
      }
    };
    const kill9 = async (c: ChildProcess) => {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    };
    let fused = container();
    const id = env.createVolume('container', 4 * MiB, { mode: 0o666 });
    const staging = env.staging('node-ext', id);
    const target = env.target('pod-container');
    await p.call('NodeStageVolume', { volume_id: id, staging_target_path: staging, volume_capability: SNW });
    await p.call('NodePublishVolume', { volume_id: id, staging_target_path: staging, target_path: target, volume_capability: SNW });
    let pod = new PodIoLoop(path.join(target, 'data'), 16);
    try {
      await pod.started();
      assert.ok(await waitFor(() => fuse().depositHeld(), 10_000), 'the plugin holds the connection');
      // Root only: whoever may withdraw the fd owns every pod's volume on this node.
      assert.equal(fs.statSync(fuse().depositSocket).mode & 0o777, 0o600);
      assert.equal(fs.statSync(path.dirname(fuse().depositSocket)).mode & 0o777, 0o700);
      const asNobody = spawnSync(
        process.execPath,
        ['-e', `require('net').connect(process.argv[1]).on('error', (e) => { process.stdout.write(e.code); process.exit(0); })`, fuse().depositSocket],
        { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 10_000 },
      );
      assert.equal(asNobody.stdout, 'EACCES', `uid 65534 reaching the fd deposit: ${asNobody.stdout}${asNobody.stderr}`);
      // 1. kill -9, the container restarts: it adopts the held connection, the pod goes on.
      await kill9(fused);
      fused = container();
      const mark = pod.rounds;
      assert.ok(
        await waitFor(() => pod.rounds >= mark + 32 || pod.error !== undefined, 60_000),
        `the pod progresses after the restart: ${fs.readFileSync(logFile, 'utf8').slice(-800)}`,
      );
      assert.equal(pod.error, undefined);
      assert.match(fs.readFileSync(logFile, 'utf8'), /adopted the FUSE connection of a killed famfs-fused/);
      await pod.stop();

      // 2. Nobody restarts the server: after the orphan timeout the plugin lets the connection go.
      await env.stopPlugin(p);
      env.plugins.splice(env.plugins.indexOf(p), 1);
      p = await startPlugin(1500);
      assert.ok(await waitFor(() => fuse().depositHeld(), 10_000), 'famfs-fused deposited again with the restarted plugin');
      pod = new PodIoLoop(path.join(target, 'data'), 16);
      await pod.started();
      await kill9(fused);
      const t0 = Date.now();
      assert.ok(await waitFor(() => pod.error !== undefined, 30_000), 'the pod is not left waiting forever');
      const waited = Date.now() - t0;
      assert.match(pod.error ?? '', /ENOTCONN|ECONNABORTED/);
      assert.ok(waited >= 1000, `the connection was held for the orphan timeout first (${waited} ms)`);
      console.log(`      orphan timeout 1500 ms: the pod got "${pod.error}" after ${waited} ms`);
      // The next start finds a dead mount: it detaches it and mounts afresh; the plugin restores the binds.
      fused = container();
      await env.stopPlugin(p);
      env.plugins.splice(env.plugins.indexOf(p), 1);
      p = await startPlugin(60_000);
      assert.match(fs.readFileSync(logFile, 'utf8'), /left a dead mount: detached it, mounting afresh/);
      roundTrip(target);
    } finally {
      pod.kill();
      if (fused.exitCode === null && fused.signalCode === null) {
        const gone = new Promise((r) => fused.once('exit', r));
        fused.kill('SIGTERM');
        await gone;
      }
    }
  });

  it('a node whose FUSE server was down while the master created and deleted volumes catches up, and shows none of the deleted', async () => {
    const gone = env.createVolume('gone-while-away', 2 * MiB);
    await a.driver.node!.fuse.stopServer();
    const born = env.createVolume('born-while-away', 2 * MiB);
    env.deleteVolume(gone);
    const bornThenGone = env.createVolume('born-and-gone', 2 * MiB);
    env.deleteVolume(bornThenGone);
    a = await env.restartPlugin(a);
    await stage(a, born); // starts a new server, which replays the whole log
    const mnt = a.driver.node!.fuse;
    assert.ok(fs.existsSync(mnt.hostPath(objectFileRelpath(born))));
    assert.equal(fs.existsSync(mnt.hostPath(objectFileRelpath(gone))), false);
    assert.equal(fs.existsSync(mnt.hostPath(objectFileRelpath(bornThenGone))), false);
    assert.equal(await codeOf(stage(a, gone)), 'NOT_FOUND');
    assert.equal((await fuseStatus(a)).logIndex, env.master.catchUp().nextIndex);
  });

  it('a stale node holds back reuse of deleted memory until it catches up (or times out): checked on offsets', async () => {
    const me = systemUuid();
    const mnt = a.driver.node!.fuse;
    // The node is current and has acknowledged everything so far.
    const x = env.createVolume('x-deleted', 8 * MiB);
    await stage(a, x);
    const ackedBefore = () => env.master.hosts().find((h) => h.hostUuid === me)?.ackedIndex ?? -1;
    assert.ok(await waitFor(() => ackedBefore() === env.master.catchUp().nextIndex, 5000), 'the node acked the current log');
    await a.call('NodeUnstageVolume', { volume_id: x, staging_target_path: staging(x) });
    const xFmap = (env.master.lookup(objectFileRelpath(x)) as { fmap: Fmap }).fmap;

    // The node goes stale: its FUSE server is frozen (alive, heartbeat fresh, replay position old).
    const pid = mnt.serverPid()!;
    process.kill(pid, 'SIGSTOP');
    let placements = 0;
    try {
      env.deleteVolume(x);
      // Every new volume of X's size must stay off X's memory while the node has not acked the delete.
      for (let i = 0; i < 6; i++) {
        const y = env.createVolume(`y-${i}`, 8 * MiB);
        const yFmap = (env.master.lookup(objectFileRelpath(y)) as { fmap: Fmap }).fmap;
        assert.equal(
          overlaps(xFmap, yFmap),
          false,
          `y-${i} at ${JSON.stringify(ranges(yFmap))} reuses deleted x at ${JSON.stringify(ranges(xFmap))} before the stale node acked`,
        );
        placements++;
      }
      // The safety valve: a host the master watched silent for hostLiveMs (60 s, on the master's own
      // clock) counts as gone. A master whose clock moves 60 s on may reuse the memory — this
      // proves the check above could fail.
      let mono = 0;
      const future = FamfsFs.open(env.device, { hostUuid: MASTER_UUID, monotonicNow: () => mono });
      assert.ok(future.horizon() <= ackedBefore(), 'a new master first treats every host as live');
      mono += 60_001;
      assert.ok(future.horizon() > ackedBefore(), 'past hostLiveMs the stale host no longer holds back reclaim');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // Thawed, the node replays the delete and acks; now the memory may be reused.
    assert.ok(await waitFor(() => ackedBefore() === env.master.catchUp().nextIndex, 5000), 'the thawed node acked the delete');
    assert.equal(fs.existsSync(mnt.hostPath(objectFileRelpath(x))), false);
    // Negative control, asserted: once acked, x's memory is free again, so creating volumes of its
    // size reaches it (the first one under a first-fit allocator, at the latest when the space runs
    // out). Were it never reused, the check above would prove nothing about the stale node.
    let reusedBy: string | undefined;
    for (let i = 0; reusedBy === undefined; i++) {
      let z: string;
      try {
        z = env.createVolume(`z-after-ack-${i}`, 8 * MiB);
      } catch (e) {
        assert.fail(`after the ack, ${i} new volumes filled the device and none reused x's memory ${JSON.stringify(ranges(xFmap))}: ${(e as Error).message}`);
      }
      const zFmap = (env.master.lookup(objectFileRelpath(z)) as { fmap: Fmap }).fmap;
      if (overlaps(xFmap, zFmap)) reusedBy = `z-after-ack-${i}`;
    }
    console.log(
      `      stale-node reuse check: ${placements} placements kept off deleted memory while the node was stale; after its ack ${reusedBy} reuses x's memory`,
    );
    assert.equal(env.master.usage().collisions ?? 0, 0);
  });
});

// The node plugin as a process of its own (as in the chart), so that it can be killed (SIGKILL) in the
// middle of a call, and its state dir rewritten between runs as an older release left it.
(canMount ? describe : describe.skip)('reliability: the node plugin process killed or upgraded with its publish records', function () {
  this.timeout(900_000);
  const NODE_UUID = '7e57a0de-0000-4000-8000-0000000000e1';
  let env: NodeTestEnv;
  let dir: string;
  let node: DriverProcess | undefined;
  const vols: string[] = [];
  const stagingOf = (id: string): string => env.staging('node-1', id);
  const call = <T = unknown>(method: string, req: object): Promise<T> => (node as DriverProcess).client.call<T>('Node', method, req, 60_000);
  const publish = (id: string, target: string): Promise<unknown> =>
    call('NodePublishVolume', { volume_id: id, staging_target_path: stagingOf(id), target_path: target, volume_capability: SNW });
  const start = async (): Promise<void> => {
    node = await startControllerProcess({
      device: env.devicePath,
      dir,
      hostUuid: NODE_UUID,
      mode: 'node',
      logLevel: 'info',
      extraArgs: ['--allowed-path-root', env.kubelet],
    });
  };
  const stateDir = (): string => path.join(dir, 'state');
  /** Whatever is bound at `p`, asked of the kernel (device number differs from the parent's). */
  const bound = (p: string): boolean => {
    try {
      return fs.statSync(p).dev !== fs.statSync(path.dirname(p)).dev;
    } catch {
      return false;
    }
  };

  before(async () => {
    env = new NodeTestEnv('journal', 256 * MiB);
    dir = path.join(env.dir, 'node-proc');
    fs.mkdirSync(dir);
    await start();
    for (let i = 0; i < 4; i++) {
      const id = env.createVolume(`jr-${i}`, 2 * MiB, { mode: 0o666 });
      vols.push(id);
      await call('NodeStageVolume', { volume_id: id, staging_target_path: stagingOf(id), volume_capability: SNW });
    }
  });
  after(async () => {
    if (node !== undefined) await stopProcess(node, 'SIGKILL');
    await env?.close();
  });

  /** Every target answers NodeGetVolumeStats (healthy), NodeUnpublish unmounts and removes it. */
  async function statsAndUnpublish(targets: { id: string; target: string }[]): Promise<void> {
    for (const t of targets) {
      const st = await call<{ volume_condition?: { abnormal: boolean; message: string } }>('NodeGetVolumeStats', { volume_id: t.id, volume_path: t.target });
      assert.equal(st.volume_condition?.abnormal, false, `${t.target}: ${st.volume_condition?.message}`);
    }
    for (const t of targets) {
      await call('NodeUnpublishVolume', { volume_id: t.id, target_path: t.target });
      assert.equal(bound(t.target), false, `${t.target} unmounted`);
      assert.equal(fs.existsSync(t.target), false, `${t.target} removed`);
    }
  }

  it("upgrade with pods running: a plugin of this release takes over 0.1.0's node-published.json, keeps the live mounts, and unpublishes each", async () => {
    const targets = Array.from({ length: 20 }, (_, i) => ({ id: vols[i % vols.length], target: env.target(`pod-up-${i}`) }));
    for (const t of targets) await publish(t.id, t.target);
    const records = readNodeRecords(stateDir()).published;
    assert.equal(Object.keys(records).length, targets.length);
    await stopProcess(node as DriverProcess);
    // The state dir as 0.1.0 left it: its document, written as it wrote it, and no journal.
    fs.rmSync(path.join(stateDir(), NODE_PUBLISHED_JOURNAL));
    fs.writeFileSync(path.join(stateDir(), NODE_PUBLISHED_FILE), JSON.stringify({ version: 1, published: records }, null, 2) + '\n');
    await start();
    assert.match((node as DriverProcess).output(), /publish records migrated to the record journal/);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(stateDir(), NODE_PUBLISHED_FILE), 'utf8')), PUBLISHED_TOMBSTONE);
    for (const t of targets) {
      assert.ok(bound(t.target), `${t.target} stayed bound across the upgrade`);
      const data = randomBytes(4096);
      fs.writeFileSync(path.join(t.target, 'data'), data, { flag: 'r+' });
      assert.ok(fs.readFileSync(path.join(t.target, 'data')).subarray(0, 4096).equals(data));
      await publish(t.id, t.target); // idempotent: the migrated record matches
    }
    await statsAndUnpublish(targets);
    assert.deepEqual(readNodeRecords(stateDir()).published, {});
  });

  it('killed (SIGKILL) with 1,000 publish records and publishes in flight: the restarted plugin reports every volume healthy and unpublishes each', async () => {
    const targets = Array.from({ length: 1000 }, (_, i) => ({ id: vols[i % vols.length], target: env.target(`pod-k${i}`) }));
    for (const t of targets) await publish(t.id, t.target);
    assert.equal(Object.keys(readNodeRecords(stateDir()).published).length, 1000);
    // A storm of publishes (one per volume at a time), killed after some were answered.
    const storm = Array.from({ length: 200 }, (_, i) => ({ id: vols[i % vols.length], target: env.target(`pod-storm-${i}`) }));
    const answered = new Set<string>();
    const lanes = vols.map(async (id) => {
      for (const t of storm.filter((s) => s.id === id)) {
        try {
          await publish(t.id, t.target);
          answered.add(t.target);
        } catch {
          return; // the plugin died under it
        }
      }
    });
    const killAt = 20 + Math.floor(Math.random() * 40);
    await waitFor(() => answered.size >= killAt, 120_000);
    (node as DriverProcess).child.kill('SIGKILL');
    await Promise.all(lanes);
    await stopProcess(node as DriverProcess);
    await start();
    const after = readNodeRecords(stateDir()).published;
    for (const t of targets) assert.ok(after[t.target] !== undefined, `${t.target}: record kept`);
    for (const t of answered) assert.ok(after[t] !== undefined, `${t}: answered publish, record kept`);
    await statsAndUnpublish([...targets, ...storm.filter((s) => answered.has(s.target))]);
    // The ones in flight when it died: recorded or not, unpublish takes them down.
    for (const t of storm.filter((s) => !answered.has(s.target))) {
      await call('NodeUnpublishVolume', { volume_id: t.id, target_path: t.target });
      assert.equal(bound(t.target), false);
    }
    assert.deepEqual(readNodeRecords(stateDir()).published, {});
    for (const id of vols) await call('NodeUnstageVolume', { volume_id: id, staging_target_path: stagingOf(id) });
    console.log(`      killed after ${answered.size} of ${storm.length} storm publishes were answered`);
  });
});
