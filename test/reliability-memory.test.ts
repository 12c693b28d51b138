// Memory errors under live mounts (issue 6, item 4). The emulated device is a file in /dev/shm;
// shrinking it under the live mappings turns every access past the cut into SIGBUS, exactly as a
// poisoned or vanished CXL range does (design-hazards §7). With a node plugin serving two published
// volumes (one below the cut, one above) and a controller on the same device:
//   - the pod reading the poisoned volume gets EIO through its bind mount, nothing dies;
//   - the FUSE server marks the device failed; NodeGetVolumeStats' VolumeCondition and the node's
//     Probe say so; once the controller touches the memory, ControllerGetVolume answers OK with an
//     abnormal VolumeCondition, writes (CreateVolume, DeleteVolume) are UNAVAILABLE with the reason,
//     Probe fails, and the memory error is reported (the hook Kubernetes Events hang off);
//   - NodeUnpublish works on the failed volume; NodeUnstage of the writer unmounts and succeeds
//     (the flush cannot happen: reported for that volume); the FUSE server unmounts on SIGTERM.
import { strict as assert } from 'assert';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import pino from 'pino';
import { CsiClient } from '../pkg/csi/client';
import { startDriver, type RunningDriver } from '../pkg/csi/driver';
import { objectFileRelpath } from '../pkg/csi/names';
import type { ControllerGetVolumeResponse, NodeGetVolumeStatsResponse } from '../pkg/csi/types';
import { findMount } from '../pkg/mount/mountinfo';
import { canMount, codeOf, messageOf, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';
import { errnoOf, fuseStatus, waitFor } from './soak/reliability-lib';

const SNW = mountCap('SINGLE_NODE_WRITER');

(canMount ? describe : describe.skip)('reliability: memory errors under live mounts', function () {
  this.timeout(120_000);
  let env: NodeTestEnv;
  let a: NodePlugin;
  let ctl: RunningDriver;
  let ctlClient: CsiClient;
  const memoryErrors: { source: string; volumeId?: string; message: string }[] = [];
  const nodeMemoryErrors: { volumeId?: string; message: string }[] = [];

  before(async () => {
    env = new NodeTestEnv('memerr', 256 * MiB);
    a = await env.startNode('node-a');
    a.driver.node!.addMemoryErrorListener((e) => nodeMemoryErrors.push(e));
  });
  after(async () => {
    ctlClient?.close();
    await ctl?.stop().catch(() => undefined);
    await env?.close();
  });

  const stageAndPublish = async (id: string, pod: string): Promise<string> => {
    const staging = env.staging('node-a', id);
    await a.call('NodeStageVolume', { volume_id: id, staging_target_path: staging, volume_capability: SNW });
    const target = env.target(pod);
    await a.call('NodePublishVolume', { volume_id: id, staging_target_path: staging, target_path: target, volume_capability: SNW });
    return target;
  };

  it('poison under a published volume: EIO to the pod, failed device on every health surface, clean unpublish and SIGTERM unmount', async () => {
    const nearId = env.createVolume('near', 4 * MiB, { mode: 0o666 });
    const farId = env.createVolume('far', 8 * MiB, { mode: 0o666 });
    const far = env.master.lookup(objectFileRelpath(farId));
    assert.ok(far?.kind === 'file' && far.fmap.kind === 'simple');
    const farOffset = far.fmap.extents[0].offset;
    // The far volume's bytes go straight into the memory, so no page cache holds them.
    const farBytes = randomBytes(64 * 1024);
    env.device.write(farOffset, farBytes);
    env.device.flush(farOffset, farBytes.length);

    const nearTarget = await stageAndPublish(nearId, 'pod-near');
    const farTarget = await stageAndPublish(farId, 'pod-far');
    fs.writeFileSync(path.join(nearTarget, 'data'), 'near-bytes', { flag: 'r+' });

    // A controller on the same device (it takes the writer role; the test writes nothing after this).
    const ctlEndpoint = `unix://${path.join(env.dir, 'controller.sock')}`;
    ctl = await startDriver({
      mode: 'controller',
      endpoint: ctlEndpoint,
      devicePath: env.devicePath,
      deviceSize: 0,
      mkfs: false,
      nodeId: 'ctl',
      driverName: 'famfs.csi.cxl.io',
      stateDir: path.join(env.dir, 'ctl-state'),
      pool: 'test-pool',
      onMemoryError: (e) => memoryErrors.push(e),
      log: pino({ level: 'silent' }),
    });
    ctlClient = new CsiClient(ctlEndpoint, 10_000);
    const healthy = await ctlClient.call<ControllerGetVolumeResponse>('Controller', 'ControllerGetVolume', { volume_id: farId });
    assert.equal(healthy.status?.volume_condition?.abnormal, false);

    // Poison: everything from the far volume on is gone.
    fs.truncateSync(env.devicePath, farOffset);

    assert.equal(
      errnoOf(() => fs.readFileSync(path.join(farTarget, 'data'))),
      'EIO',
      'the pod reading poisoned memory gets EIO',
    );
    const st = await fuseStatus(a);
    assert.equal(st.failed, true, 'the FUSE server marks the device failed');
    assert.match(String(st.failureMessage), /memory error/);
    assert.equal(st.serving, true, 'and keeps serving (metadata, EIO for data)');
    assert.deepEqual(fs.readdirSync(farTarget), ['data'], 'the pod still sees its directory');

    const stats = await a.call<NodeGetVolumeStatsResponse>('NodeGetVolumeStats', { volume_id: farId, volume_path: farTarget });
    assert.equal(stats.volume_condition?.abnormal, true);
    assert.match(String(stats.volume_condition?.message), /memory error/);
    const nodeProbe = a.client.call('Identity', 'Probe', {});
    assert.equal(await codeOf(nodeProbe), 'FAILED_PRECONDITION');
    assert.match(await messageOf(a.client.call('Identity', 'Probe', {})), /memory error/);

    // The controller learns it when it touches the memory: its own mapping faults on the way to
    // the bytes, and from then on its device is failed.
    assert.equal(ctl.device.failed, false, 'the controller has not touched the poisoned range yet');
    assert.throws(
      () => ctl.device.read(farOffset, 4096),
      (e: unknown) => (e as { code?: string }).code === 'EFAULT_DEVICE',
    );
    // ControllerGetVolume answers from what the controller last saw, without touching the memory
    // again: OK, with an abnormal VolumeCondition naming the failed device.
    const sick = await ctlClient.call<ControllerGetVolumeResponse>('Controller', 'ControllerGetVolume', { volume_id: farId });
    assert.equal(sick.volume?.volume_id, farId);
    assert.equal(sick.status?.volume_condition?.abnormal, true);
    assert.match(String(sick.status?.volume_condition?.message), /failed/);
    // Writes cannot happen: UNAVAILABLE (the CO backs off and retries), with the reason.
    const create = ctlClient.call('Controller', 'CreateVolume', {
      name: 'on-failed',
      capacity_range: { required_bytes: String(2 * MiB) },
      volume_capabilities: [SNW],
    });
    assert.equal(await codeOf(create), 'UNAVAILABLE');
    assert.match(
      await messageOf(
        ctlClient.call('Controller', 'CreateVolume', { name: 'on-failed', capacity_range: { required_bytes: String(2 * MiB) }, volume_capabilities: [SNW] }),
      ),
      /device failed \(memory error\)/,
    );
    assert.equal(await codeOf(ctlClient.call('Controller', 'DeleteVolume', { volume_id: nearId })), 'UNAVAILABLE');
    assert.deepEqual(memoryErrors.filter((e) => e.source === 'controller').length > 0, true, 'the controller reported the memory error (Events hang off this)');
    assert.equal(await codeOf(ctlClient.call('Identity', 'Probe', {})), 'FAILED_PRECONDITION');

    // Teardown still works on the failed volume.
    await a.call('NodeUnpublishVolume', { volume_id: farId, target_path: farTarget });
    assert.equal(fs.existsSync(farTarget), false);
    await a.call('NodeUnpublishVolume', { volume_id: nearId, target_path: nearTarget });
    // NodeUnstage of a writer flushes its cache lines; on failed memory that cannot happen, so it
    // unmounts and succeeds (the volume can be released), and reports the memory error.
    const farStaging = env.staging('node-a', farId);
    await a.call('NodeUnstageVolume', { volume_id: farId, staging_target_path: farStaging });
    assert.equal(await findMount(farStaging), undefined, 'the failed writer volume is unstaged');
    assert.ok(
      nodeMemoryErrors.some((e) => e.volumeId === farId && /without flushing/.test(e.message)),
      'the node reported the lost flush for that volume',
    );

    const node = a.driver.node!;
    const pid = node.fuse.serverPid();
    assert.ok(pid !== undefined);
    assert.equal(await node.fuse.stopServer(), true);
    assert.ok(await waitFor(() => !fs.existsSync(`/proc/${pid}`), 5000), 'the FUSE server exited on SIGTERM');
    assert.equal(await findMount(node.fuse.mountpoint), undefined, 'and unmounted');
    assert.match(fs.readFileSync(node.fuse.logFile, 'utf8'), /famfs unmounted/);
    // The plugin and the controller (both in this process) are alive and answer.
    assert.equal(await codeOf(a.call('NodeGetCapabilities', {})), 'OK');
    assert.equal(await codeOf(ctlClient.call('Controller', 'ControllerGetCapabilities', {})), 'OK');
  });

  it('device loss (the backing shrinks to nothing) on a healthy pair: both notice, writes are UNAVAILABLE, nothing crashes', async () => {
    // Its own device, node plugin and controller: the test above already failed the first ones, so
    // asserting on them would only repeat what it made true.
    const env2 = new NodeTestEnv('memloss', 128 * MiB);
    const errors2: { source: string; message: string }[] = [];
    let ctl2: RunningDriver | undefined;
    let client2: CsiClient | undefined;
    try {
      const b = await env2.startNode('node-b');
      const id = env2.createVolume('lost', 4 * MiB, { mode: 0o666 });
      const staging = env2.staging('node-b', id);
      await b.call('NodeStageVolume', { volume_id: id, staging_target_path: staging, volume_capability: SNW });
      const target = env2.target('pod-lost');
      await b.call('NodePublishVolume', { volume_id: id, staging_target_path: staging, target_path: target, volume_capability: SNW });
      const endpoint = `unix://${path.join(env2.dir, 'controller.sock')}`;
      ctl2 = await startDriver({
        mode: 'controller',
        endpoint,
        devicePath: env2.devicePath,
        deviceSize: 0,
        mkfs: false,
        nodeId: 'ctl',
        driverName: 'famfs.csi.cxl.io',
        stateDir: path.join(env2.dir, 'ctl-state'),
        pool: 'test-pool',
        onMemoryError: (e) => errors2.push(e),
        log: pino({ level: 'silent' }),
      });
      client2 = new CsiClient(endpoint, 10_000);
      const create = (name: string) =>
        client2!.call('Controller', 'CreateVolume', { name, capacity_range: { required_bytes: String(2 * MiB) }, volume_capabilities: [SNW] });

      // Healthy before the loss: so everything asserted after it is the loss's doing.
      assert.equal(ctl2.device.failed, false);
      assert.equal(await codeOf(create('before-loss')), 'OK');
      assert.equal(await codeOf(client2.call('Identity', 'Probe', {})), 'OK');
      assert.equal(await codeOf(b.client.call('Identity', 'Probe', {})), 'OK');
      assert.equal((await fuseStatus(b)).failed, false);
      assert.equal(errors2.length, 0, `memory errors before the loss: ${JSON.stringify(errors2)}`);

      fs.truncateSync(env2.devicePath, 0);

      // The pod's read faults inside guarded native code: EIO, and the FUSE server is failed.
      assert.equal(
        errnoOf(() => fs.readFileSync(path.join(target, 'data'))),
        'EIO',
      );
      assert.equal((await fuseStatus(b)).failed, true, 'the FUSE server marks the device failed');
      assert.equal(await codeOf(b.client.call('Identity', 'Probe', {})), 'FAILED_PRECONDITION');
      // Every controller RPC that reads the log faults too: a status, never a crash.
      const got = await codeOf(create('after-loss'));
      assert.equal(got, 'UNAVAILABLE');
      assert.equal(ctl2.device.failed, true);
      assert.ok(
        errors2.some((e) => e.source === 'controller'),
        'the controller reported the memory error (Events hang off this)',
      );
      assert.equal(await codeOf(client2.call('Identity', 'Probe', {})), 'FAILED_PRECONDITION');
      // Arguments before state: bad input is still INVALID_ARGUMENT on the failed device.
      assert.equal(await codeOf(create('')), 'INVALID_ARGUMENT');
      assert.equal(await codeOf(client2.call('Controller', 'DeleteVolume', { volume_id: '' })), 'INVALID_ARGUMENT');
      assert.equal(
        await codeOf(client2.call('Controller', 'ControllerPublishVolume', { volume_id: id, node_id: 'ctl', volume_capability: { mount: {} } })),
        'INVALID_ARGUMENT',
      );
      // Both processes are alive and answer what needs no memory.
      assert.equal(await codeOf(b.call('NodeGetCapabilities', {})), 'OK');
      assert.equal(await codeOf(client2.call('Controller', 'ControllerGetCapabilities', {})), 'OK');
      await b.call('NodeUnpublishVolume', { volume_id: id, target_path: target });
      assert.equal(fs.existsSync(target), false);
      console.log(`      CreateVolume after device loss: ${got}`);
    } finally {
      client2?.close();
      await ctl2?.stop().catch(() => undefined);
      await env2.close();
    }
  });
});
