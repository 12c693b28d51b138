// ControllerPublishVolume only publishes to nodes of the pool (spec: NOT_FOUND for an unknown node),
// with the famfs-csi controller as a real process: standalone it knows the nodes given with --nodes
// (none without it); in a cluster, the nodes whose CSINode object lists the driver with that node id.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { CreateVolumeResponse } from '../pkg/csi/types';
import { removeEmulatedDevice } from '../testkit/emulated-device';
import type { TestCluster } from './helpers/test-cluster';
import { freshDevice, MiB, startControllerProcess, stopProcess, type DriverProcess } from '../testkit/csi-load-process';
import { startClusterOrSkip } from './helpers/k8s-env';
import { codeOf, messageOf } from './helpers/node-env';

const HOST = '61111111-2222-4333-8444-555555555555';
const DRIVER = 'famfs.csi.cxl.io';
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

describe('CSI controller process: ControllerPublishVolume to unknown nodes', function () {
  this.timeout(180_000);
  const devName = `csi-nodes-${process.pid}-${Date.now().toString(36)}`;
  let dir: string;
  let device: string;
  let proc: DriverProcess | undefined;
  let cluster: TestCluster | undefined;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-nodes-'));
    device = freshDevice(devName, 128 * MiB, 8 * MiB, HOST);
  });
  afterEach(async () => {
    if (proc) await stopProcess(proc);
    proc = undefined;
  });
  after(() => {
    cluster?.stop();
    removeEmulatedDevice(devName);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const volume = async (p: DriverProcess, name: string): Promise<string> =>
    (
      await p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
        name,
        capacity_range: { required_bytes: String(2 * MiB) },
        volume_capabilities: [cap],
      })
    ).volume.volume_id;
  const publish = (p: DriverProcess, volumeId: string, nodeId: string) =>
    p.client.call('Controller', 'ControllerPublishVolume', { volume_id: volumeId, node_id: nodeId, volume_capability: cap, readonly: false });
  const unpublish = (p: DriverProcess, volumeId: string, nodeId: string) =>
    p.client.call('Controller', 'ControllerUnpublishVolume', { volume_id: volumeId, node_id: nodeId });

  it('standalone without --nodes knows no node: NOT_FOUND, saying how to name them', async () => {
    proc = await startControllerProcess({ device, dir, hostUuid: HOST });
    const id = await volume(proc, 'standalone');
    assert.equal(await codeOf(publish(proc, id, 'node-zz')), 'NOT_FOUND');
    assert.match(await messageOf(publish(proc, id, 'node-zz')), /--nodes/);
    // Arguments before state: a malformed capability is INVALID_ARGUMENT even for an unknown node.
    assert.equal(
      await codeOf(proc.client.call('Controller', 'ControllerPublishVolume', { volume_id: id, node_id: 'node-zz', volume_capability: { mount: {} } })),
      'INVALID_ARGUMENT',
    );
  });

  it('standalone with --nodes: those nodes only', async () => {
    proc = await startControllerProcess({ device, dir, hostUuid: HOST, extraArgs: ['--nodes', 'node-a,node-b'] });
    const id = await volume(proc, 'listed');
    assert.equal(await codeOf(publish(proc, id, 'node-a')), 'OK');
    await unpublish(proc, id, 'node-a');
    assert.equal(await codeOf(publish(proc, id, 'node-b')), 'OK');
    await unpublish(proc, id, 'node-b');
    assert.equal(await codeOf(publish(proc, id, 'node-zz')), 'NOT_FOUND');
    assert.match(await messageOf(publish(proc, id, 'node-zz')), /node-zz is not a node of pool/);
  });

  it('in a cluster: a node without the driver in its CSINode object is NOT_FOUND @slow', async function () {
    cluster = startClusterOrSkip(this, ['etcd', 'kube-apiserver', 'kubectl']);
    this.timeout(180_000);
    const csiNode = (name: string, drivers: { name: string; nodeID: string }[]) =>
      cluster!.must(
        'kubectl',
        ['apply', '-f', '-'],
        JSON.stringify({ apiVersion: 'storage.k8s.io/v1', kind: 'CSINode', metadata: { name }, spec: { drivers } }),
      );
    csiNode('node-a', [{ name: DRIVER, nodeID: 'node-a' }]);
    csiNode('node-b', [{ name: 'other.csi.example.com', nodeID: 'node-b' }]);
    // A node whose node id differs from its name (found by searching every CSINode).
    csiNode('node-c', [{ name: DRIVER, nodeID: 'famfs-host-c' }]);
    proc = await startControllerProcess({ device, dir, hostUuid: HOST, extraArgs: ['--kubeconfig', cluster.kubeconfig, '--driver-name', DRIVER] });
    const id = await volume(proc, 'in-cluster');
    assert.equal(await codeOf(publish(proc, id, 'node-a')), 'OK');
    await unpublish(proc, id, 'node-a');
    assert.equal(await codeOf(publish(proc, id, 'famfs-host-c')), 'OK');
    await unpublish(proc, id, 'famfs-host-c');
    assert.equal(await codeOf(publish(proc, id, 'node-b')), 'NOT_FOUND', 'node-b runs another driver only');
    assert.match(await messageOf(publish(proc, id, 'node-b')), /CSINode/);
    assert.equal(await codeOf(publish(proc, id, 'node-c')), 'NOT_FOUND', 'node-c serves the driver as famfs-host-c, not as node-c');
    assert.equal(await codeOf(publish(proc, id, 'node-nowhere')), 'NOT_FOUND', 'no CSINode at all');
  });
});
