// Controller service over a real unix socket, on an in-memory famfs: idempotent create, capacity
// rounding and range errors, parameters, serial sharing in ControllerPublish, delete, list, capacity.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { CsiClient } from '../pkg/csi/client';
import { controllerService } from '../pkg/csi/controller';
import { CsiServer } from '../pkg/csi/server';
import { ControllerStore } from '../pkg/csi/store';
import { Volumes } from '../pkg/csi/volumes';
import type { CreateVolumeResponse, GetCapacityResponse, ListVolumesResponse } from '../pkg/csi/types';
import { BufferMedia } from './helpers/buffer-media';
import { FamfsFs } from '../pkg/famfs/fs';
import { codeOf } from './helpers/node-env';

const MiB = 1024 * 1024;
const KEY = 'famfs.csi.cxl.io/pool';
const mountCap = (mode: string) => ({ mount: { fs_type: '', mount_flags: [] }, access_mode: { mode } });

const code = codeOf;

describe('CSI Controller over a unix socket (in-memory famfs)', function () {
  this.timeout(30_000);
  let dir: string;
  let server: CsiServer;
  let client: CsiClient;
  const create = (name: string, required: number, extra: object = {}) =>
    client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name,
      capacity_range: { required_bytes: String(required) },
      volume_capabilities: [mountCap('SINGLE_NODE_WRITER')],
      ...extra,
    });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-ctrl-'));
    const uuid = '11111111-2222-3333-4444-555555555555';
    const famfs = FamfsFs.mkfs(new BufferMedia(Buffer.alloc(256 * MiB)), { systemUuid: uuid, devicePath: '/dev/shm/test' });
    server = new CsiServer({ endpoint: `unix://${dir}/csi.sock`, log: pino({ level: 'silent' }) });
    const store = new ControllerStore(famfs);
    store.takeMasterRole(uuid);
    server.addService(
      'Controller',
      controllerService({
        volumes: new Volumes(store),
        pool: 'p1',
        topologyKey: KEY,
        nodeExists: (id) => id === 'node-a' || id === 'node-b',
        condition: () => ({ abnormal: false, message: 'ok' }),
      }),
    );
    await server.start();
    client = new CsiClient(`unix://${dir}/csi.sock`, 5000);
  });
  after(async () => {
    client.close();
    await server.stop(500);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates a volume rounded up to 2 MiB, idempotently on name, with the pool topology', async () => {
    const a = await create('pvc-1', 3 * MiB);
    assert.equal(a.volume.capacity_bytes, String(4 * MiB));
    assert.deepEqual(a.volume.accessible_topology, [{ segments: { [KEY]: 'p1' } }]);
    const again = await create('pvc-1', 3 * MiB);
    assert.equal(again.volume.volume_id, a.volume.volume_id);
    assert.equal(await code(create('pvc-1', 64 * MiB)), 'ALREADY_EXISTS');
    assert.equal(await code(create('pvc-1', 3 * MiB, { parameters: { mode: '0600' } })), 'ALREADY_EXISTS');
  });

  it('answers bad inputs with the spec codes', async () => {
    assert.equal(await code(create('', MiB)), 'INVALID_ARGUMENT');
    assert.equal(await code(client.call('Controller', 'CreateVolume', { name: 'x' })), 'INVALID_ARGUMENT');
    assert.equal(await code(create('x', MiB, { parameters: { bogus: '1' } })), 'INVALID_ARGUMENT');
    assert.equal(await code(create('x', 1024 * MiB)), 'OUT_OF_RANGE');
    assert.equal(await code(create('x', 3 * MiB, { capacity_range: { required_bytes: String(3 * MiB), limit_bytes: String(3 * MiB) } })), 'OUT_OF_RANGE');
    assert.equal(await code(create('x', MiB, { accessibility_requirements: { requisite: [{ segments: { [KEY]: 'other' } }] } })), 'RESOURCE_EXHAUSTED');
    assert.equal(await code(create('x', MiB, { volume_capabilities: [mountCap('MULTI_NODE_MULTI_WRITER')] })), 'INVALID_ARGUMENT');
    assert.equal(await code(create('mw', MiB, { volume_capabilities: [mountCap('MULTI_NODE_MULTI_WRITER')], parameters: { sharing: 'multi-writer' } })), 'OK');
  });

  it('enforces serial sharing in ControllerPublish', async () => {
    const id = (await create('shared', 2 * MiB, { volume_capabilities: [mountCap('SINGLE_NODE_MULTI_WRITER')] })).volume.volume_id;
    const pub = (node: string, mode: string, readonly = false) =>
      client.call('Controller', 'ControllerPublishVolume', { volume_id: id, node_id: node, volume_capability: mountCap(mode), readonly });
    assert.equal(await code(pub('node-x', 'SINGLE_NODE_MULTI_WRITER')), 'NOT_FOUND');
    assert.equal(await code(pub('node-a', 'SINGLE_NODE_MULTI_WRITER')), 'OK');
    assert.equal(await code(pub('node-a', 'SINGLE_NODE_MULTI_WRITER')), 'OK');
    assert.equal(await code(pub('node-a', 'SINGLE_NODE_MULTI_WRITER', true)), 'ALREADY_EXISTS');
    assert.equal(await code(pub('node-b', 'SINGLE_NODE_MULTI_WRITER')), 'FAILED_PRECONDITION');
    assert.equal(await code(client.call('Controller', 'DeleteVolume', { volume_id: id })), 'FAILED_PRECONDITION');
    await client.call('Controller', 'ControllerUnpublishVolume', { volume_id: id, node_id: 'node-a' });
    assert.equal(await code(pub('node-b', 'SINGLE_NODE_MULTI_WRITER')), 'OK');
    await client.call('Controller', 'ControllerUnpublishVolume', { volume_id: id, node_id: 'node-b' });
    assert.equal(await code(pub('node-a', 'MULTI_NODE_READER_ONLY', true)), 'OK');
    assert.equal(await code(pub('node-b', 'MULTI_NODE_READER_ONLY', true)), 'OK');
    await client.call('Controller', 'ControllerUnpublishVolume', { volume_id: id, node_id: '' });
    assert.equal(await code(client.call('Controller', 'DeleteVolume', { volume_id: id })), 'OK');
  });

  it('lists volumes page by page and deletes idempotently', async () => {
    for (const n of ['l1', 'l2', 'l3']) await create(n, 2 * MiB);
    const all: string[] = [];
    let token = '';
    do {
      const page = await client.call<ListVolumesResponse>('Controller', 'ListVolumes', { max_entries: 2, starting_token: token });
      assert.ok(page.entries.length <= 2);
      all.push(...page.entries.map((e) => e.volume.volume_id));
      token = page.next_token;
    } while (token !== '');
    assert.equal(new Set(all).size, all.length);
    assert.equal(all.length, 5); // pvc-1, mw, l1..l3
    assert.equal(await code(client.call('Controller', 'ListVolumes', { starting_token: 'garbage' })), 'ABORTED');
    for (const id of all) await client.call('Controller', 'DeleteVolume', { volume_id: id });
    await client.call('Controller', 'DeleteVolume', { volume_id: all[0] });
    await client.call('Controller', 'DeleteVolume', { volume_id: 'not-ours' });
    const empty = await client.call<ListVolumesResponse>('Controller', 'ListVolumes', {});
    assert.equal(empty.entries.length, 0);
    assert.equal(await code(client.call('Controller', 'ControllerGetVolume', { volume_id: all[0] })), 'NOT_FOUND');
  });

  it('fills the device to RESOURCE_EXHAUSTED, and GetCapacity reports the shrinking space', async () => {
    // Larger than the whole data area: OUT_OF_RANGE, never satisfiable.
    assert.equal(await code(create('huge', 512 * MiB)), 'OUT_OF_RANGE');
    await create('keep', 8 * MiB);
    const before = await client.call<GetCapacityResponse>('Controller', 'GetCapacity', {});
    const free = Number(before.available_capacity);
    assert.ok(free > 0 && Number(before.maximum_volume_size?.value) <= free);
    assert.equal(await code(create('big', free + 2 * MiB)), 'RESOURCE_EXHAUSTED');
    await create('fill', free);
    const after = await client.call<GetCapacityResponse>('Controller', 'GetCapacity', {});
    assert.equal(after.available_capacity, '0');
    const other = await client.call<GetCapacityResponse>('Controller', 'GetCapacity', { accessible_topology: { segments: { [KEY]: 'nope' } } });
    assert.equal(other.available_capacity, '0');
  });
});
