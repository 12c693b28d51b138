// The node plugin with --external-fuse (the chart's layout: famfs-fused runs in a container of its
// own on <state-dir>/mnt/<pool> and <state-dir>/fused/<pool>/sock). While that server is not up, the
// plugin answers UNAVAILABLE with a message naming it and never starts a server itself; once it
// serves, staging and publishing go through it, and the plugin never stops it.
import { strict as assert } from 'assert';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import pino from 'pino';
import { CsiClient } from '../pkg/csi/client';
import { startDriver, type RunningDriver } from '../pkg/csi/driver';
import { findMount } from '../pkg/mount/mountinfo';
import { canMount, codeOf, messageOf, MiB, mountCap, NodeTestEnv } from './helpers/node-env';

const SNW = mountCap('SINGLE_NODE_WRITER');
const FUSED = path.join(__dirname, '..', 'cmd', 'famfs-fused.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

(canMount ? describe : describe.skip)('node plugin with an external FUSE server (--external-fuse)', function () {
  this.timeout(60_000);
  let env: NodeTestEnv;
  let driver: RunningDriver | undefined;
  let client: CsiClient | undefined;
  let fused: ChildProcess | undefined;

  before(() => {
    env = new NodeTestEnv('extfuse', 128 * MiB);
  });
  after(async () => {
    client?.close();
    await driver?.stop().catch(() => undefined);
    if (fused && fused.exitCode === null) {
      fused.kill('SIGTERM');
      await new Promise((r) => fused?.once('exit', r));
    }
    await env?.close();
  });

  it('UNAVAILABLE while the server is down (nothing spawned), stage/publish through it once it serves, never stops it', async () => {
    const id = env.createVolume('ext', 4 * MiB, { mode: 0o666 });
    const stateDir = path.join(env.dir, 'state-ext');
    const endpoint = `unix://${path.join(env.dir, 'ext.sock')}`;
    const start = (externalFuseWaitMs: number) =>
      startDriver({
        mode: 'node',
        endpoint,
        devicePath: env.devicePath,
        deviceSize: 0,
        mkfs: false,
        nodeId: 'node-ext',
        driverName: 'famfs.csi.cxl.io',
        stateDir,
        pool: 'test-pool',
        allowedPathRoots: [env.kubelet],
        externalFuse: true,
        externalFuseWaitMs,
        log: pino({ level: 'silent' }),
      });
    driver = await start(600);
    client = new CsiClient(endpoint, 30_000);
    let fuse = driver.node!.fuse;
    const staging = env.staging('node-ext', id);
    const stage = { volume_id: id, staging_target_path: staging, volume_capability: SNW };

    const t0 = Date.now();
    const refused = client.call('Node', 'NodeStageVolume', stage);
    assert.equal(await codeOf(refused), 'UNAVAILABLE');
    assert.ok(Date.now() - t0 >= 500, 'it waited for the server first');
    assert.match(await messageOf(client.call('Node', 'NodeStageVolume', stage)), /external famfs FUSE server .*not up/);
    assert.equal(fs.existsSync(fuse.pidFile), false, 'no server was spawned');
    assert.equal(await findMount(fuse.mountpoint), undefined, 'nothing mounted by the plugin');
    assert.equal(await findMount(staging), undefined, 'nothing staged');

    // The plugin restarts with a wait that covers a famfs-fused start (seconds for a Node.js
    // process on a loaded machine: 600 ms was only enough on an idle one) and finds nothing to restore.
    client.close();
    await driver.stop();
    driver = await start(30_000);
    client = new CsiClient(endpoint, 30_000);
    fuse = driver.node!.fuse;
    assert.equal(fs.existsSync(fuse.pidFile), false, 'a plugin start spawns no server either');
    assert.equal(await findMount(fuse.mountpoint), undefined, 'nor mounts anything');

    // The chart's famfs-fused container, played by a process of ours on the same paths.
    fs.mkdirSync(fuse.mountpoint, { recursive: true });
    fs.mkdirSync(path.dirname(fuse.socketPath), { recursive: true, mode: 0o700 });
    fused = spawn(
      process.execPath,
      [FUSED, env.devicePath, fuse.mountpoint, '--foreground', '--control-socket', fuse.socketPath, '--host-uuid', '7e57a0de-0000-4000-8000-0000000000ee'],
      { stdio: 'ignore' },
    );
    // Started while an RPC waits: the plugin picks it up within its wait.
    await sleep(50);
    await client.call('Node', 'NodeStageVolume', stage);
    const target = env.target('pod-ext');
    await client.call('Node', 'NodePublishVolume', { ...stage, target_path: target });
    fs.writeFileSync(path.join(target, 'data'), 'through the external server', { flag: 'r+' });
    assert.equal(fs.readFileSync(path.join(target, 'data'), 'utf8').slice(0, 27), 'through the external server');
    assert.equal(fs.existsSync(fuse.pidFile), false, 'still nothing spawned by the plugin');

    await client.call('Node', 'NodeUnpublishVolume', { volume_id: id, target_path: target });
    await client.call('Node', 'NodeUnstageVolume', { volume_id: id, staging_target_path: staging });
    assert.equal(await fuse.stopServer(), false, 'the plugin does not stop a server it does not own');
    assert.equal(fused.exitCode, null, 'the external server still runs');
    assert.equal((await fuse.health()).state, 'serving');
  });
});
