// Snapshots, clones and volumes from snapshots over a real unix socket, on an emulated devdax
// (a /dev/shm file mapped by the native addon, so copies use the device's own copy path): the
// bytes really are copied, the tail really is zeroed, and the codes follow the spec.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import { CsiClient } from '../pkg/csi/client';
import { controllerService } from '../pkg/csi/controller';
import { objectFileRelpath } from '../pkg/csi/names';
import { CsiServer } from '../pkg/csi/server';
import { ControllerStore } from '../pkg/csi/store';
import { Volumes } from '../pkg/csi/volumes';
import type {
  ControllerGetVolumeResponse,
  CreateSnapshotResponse,
  CreateVolumeResponse,
  GetSnapshotResponse,
  ListSnapshotsResponse,
  VolumeContentSource,
} from '../pkg/csi/types';
import { type DaxDevice } from '../pkg/device';
import { createEmulatedDevice, removeEmulatedDevice } from '../testkit/emulated-device';
import { FamfsFs, flushFile, readFileData, writeFileData, type FileNode } from '../pkg/famfs';
import { codeOf } from './helpers/node-env';

const MiB = 1024 * 1024;
const KEY = 'famfs.csi.cxl.io/pool';
const UUID = '21111111-2222-4333-8444-555555555555';
const DEV = `csi-snap-test-${process.pid}`;
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

const code = codeOf;

describe('CSI snapshots and clones over a unix socket (emulated devdax)', function () {
  this.timeout(60_000);
  let dir: string;
  let device: DaxDevice;
  let famfs: FamfsFs;
  let server: CsiServer;
  let client: CsiClient;
  const file = (id: string): FileNode => famfs.lookup(objectFileRelpath(id)) as FileNode;
  const createVol = (name: string, required: number, extra: object = {}) =>
    client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name,
      capacity_range: { required_bytes: String(required) },
      volume_capabilities: [cap],
      ...extra,
    });
  const snap = (name: string, source: string) => client.call<CreateSnapshotResponse>('Controller', 'CreateSnapshot', { name, source_volume_id: source });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-snap-'));
    device = createEmulatedDevice(DEV, 512 * MiB, { fresh: true });
    famfs = FamfsFs.mkfs(device, { systemUuid: UUID, devicePath: device.path });
    const store = new ControllerStore(famfs);
    store.takeMasterRole(UUID);
    server = new CsiServer({ endpoint: `unix://${dir}/csi.sock`, log: pino({ level: 'silent' }) });
    server.addService(
      'Controller',
      controllerService({
        volumes: new Volumes(store, { copySliceBytes: 4 * MiB }),
        pool: 'p1',
        topologyKey: KEY,
        nodeExists: () => true,
        condition: () => ({ abnormal: false, message: 'ok' }),
      }),
    );
    await server.start();
    client = new CsiClient(`unix://${dir}/csi.sock`, 10_000);
  });
  after(async () => {
    client.close();
    await server.stop(500);
    device.close();
    removeEmulatedDevice(DEV);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('advertises snapshots and cloning, not expansion', async () => {
    const caps = await client.call<{ capabilities: { rpc: { type: string } }[] }>('Controller', 'ControllerGetCapabilities', {});
    const types = caps.capabilities.map((c) => c.rpc.type);
    for (const t of ['CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS', 'CLONE_VOLUME', 'VOLUME_CONDITION']) assert.ok(types.includes(t), t);
    // csi-sanity v5.4.0 fails on capabilities it does not know; GetSnapshot is served unadvertised.
    assert.ok(!types.includes('GET_SNAPSHOT'));
    assert.ok(!types.includes('EXPAND_VOLUME'));
    assert.equal(await code(client.call('Controller', 'ControllerExpandVolume', { volume_id: 'x', capacity_range: { required_bytes: '1' } })), 'UNIMPLEMENTED');
  });

  it('snapshots a volume as a copy, restores it into a bigger volume with a zeroed tail, and clones', async () => {
    const src = (await createVol('src', 6 * MiB)).volume.volume_id;
    const pattern = Buffer.alloc(6 * MiB);
    for (let i = 0; i < pattern.length; i += 4) pattern.writeUInt32LE((i * 2654435761) >>> 0, i);
    writeFileData(device, file(src), 0, pattern);
    flushFile(device, file(src));

    const s1 = (await snap('snap-1', src)).snapshot;
    assert.equal(s1.ready_to_use, true);
    assert.equal(s1.size_bytes, String(6 * MiB));
    assert.equal(s1.source_volume_id, src);
    assert.ok(Number(s1.creation_time.seconds) > 1_700_000_000);
    // Idempotent on name; another source under the same name is ALREADY_EXISTS.
    assert.equal((await snap('snap-1', src)).snapshot.snapshot_id, s1.snapshot_id);
    const other = (await createVol('other', 2 * MiB)).volume.volume_id;
    assert.equal(await code(snap('snap-1', other)), 'ALREADY_EXISTS');
    assert.equal(await code(snap('snap-x', 'vol-' + '0'.repeat(40))), 'NOT_FOUND');
    assert.equal(await code(snap('snap-x', '../../etc')), 'NOT_FOUND');

    // The source changes after the snapshot: the snapshot keeps the old bytes.
    writeFileData(device, file(src), 0, Buffer.alloc(MiB, 0xee));
    assert.deepEqual(readFileData(device, file(s1.snapshot_id), 0, 6 * MiB), pattern);

    const restoreFrom = { volume_content_source: { snapshot: { snapshot_id: s1.snapshot_id } } };
    const restored = (await createVol('restored', 10 * MiB, restoreFrom)).volume;
    assert.equal(restored.capacity_bytes, String(10 * MiB));
    assert.deepEqual((restored.content_source as VolumeContentSource).snapshot, { snapshot_id: s1.snapshot_id });
    assert.deepEqual(readFileData(device, file(restored.volume_id), 0, 6 * MiB), pattern);
    assert.ok(
      readFileData(device, file(restored.volume_id), 6 * MiB, 4 * MiB).every((b) => b === 0),
      'tail past the snapshot is zero',
    );
    // Same name, same source: the same volume; another source or none: ALREADY_EXISTS.
    assert.equal((await createVol('restored', 10 * MiB, restoreFrom)).volume.volume_id, restored.volume_id);
    assert.equal(await code(createVol('restored', 10 * MiB)), 'ALREADY_EXISTS');
    assert.equal(await code(createVol('restored', 10 * MiB, { volume_content_source: { volume: { volume_id: src } } })), 'ALREADY_EXISTS');
    // No capacity asked: the source's size. Smaller than the source under the limit: OUT_OF_RANGE.
    const fit = (await client.call<CreateVolumeResponse>('Controller', 'CreateVolume', { name: 'fit', volume_capabilities: [cap], ...restoreFrom })).volume;
    assert.equal(fit.capacity_bytes, String(6 * MiB));
    assert.equal(
      await code(createVol('small', 2 * MiB, { ...restoreFrom, capacity_range: { required_bytes: String(2 * MiB), limit_bytes: String(4 * MiB) } })),
      'OUT_OF_RANGE',
    );
    assert.equal(await code(createVol('nosnap', 2 * MiB, { volume_content_source: { snapshot: { snapshot_id: 'snap-' + 'f'.repeat(40) } } })), 'NOT_FOUND');
    assert.equal(await code(createVol('nosnap', 2 * MiB, { volume_content_source: { snapshot: { snapshot_id: '' } } })), 'INVALID_ARGUMENT');

    // Clone: the source's current bytes.
    const clone = (await createVol('clone', 8 * MiB, { volume_content_source: { volume: { volume_id: src } } })).volume;
    assert.deepEqual((clone.content_source as VolumeContentSource).volume, { volume_id: src });
    const expect = Buffer.concat([Buffer.alloc(MiB, 0xee), pattern.subarray(MiB)]);
    assert.deepEqual(readFileData(device, file(clone.volume_id), 0, 6 * MiB), expect);
    assert.ok(readFileData(device, file(clone.volume_id), 6 * MiB, 2 * MiB).every((b) => b === 0));
    assert.equal(await code(createVol('noclone', 2 * MiB, { volume_content_source: { volume: { volume_id: 'vol-' + '1'.repeat(40) } } })), 'NOT_FOUND');

    const got = await client.call<ControllerGetVolumeResponse>('Controller', 'ControllerGetVolume', { volume_id: clone.volume_id });
    assert.deepEqual(got.status.volume_condition, { abnormal: false, message: 'ok' });
  });

  it('lists snapshots page by page, filters by id and source, and deletes idempotently', async () => {
    const src = (await createVol('list-src', 2 * MiB)).volume.volume_id;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await snap(`ls-${i}`, src)).snapshot.snapshot_id);
    const seen: string[] = [];
    let token = '';
    do {
      const page = await client.call<ListSnapshotsResponse>('Controller', 'ListSnapshots', { max_entries: 2, starting_token: token, source_volume_id: src });
      assert.ok(page.entries.length <= 2);
      seen.push(...page.entries.map((e) => e.snapshot.snapshot_id));
      token = page.next_token;
    } while (token !== '');
    assert.deepEqual([...seen].sort(), [...ids].sort());
    assert.equal(await code(client.call('Controller', 'ListSnapshots', { starting_token: 'bogus' })), 'ABORTED');
    const one = await client.call<ListSnapshotsResponse>('Controller', 'ListSnapshots', { snapshot_id: ids[2] });
    assert.deepEqual(
      one.entries.map((e) => e.snapshot.snapshot_id),
      [ids[2]],
    );
    const none = await client.call<ListSnapshotsResponse>('Controller', 'ListSnapshots', { snapshot_id: 'snap-' + 'a'.repeat(40) });
    assert.equal(none.entries.length, 0);
    const got = await client.call<GetSnapshotResponse>('Controller', 'GetSnapshot', { snapshot_id: ids[0] });
    assert.equal(got.snapshot.source_volume_id, src);
    assert.equal(await code(client.call('Controller', 'GetSnapshot', { snapshot_id: 'snap-' + 'a'.repeat(40) })), 'NOT_FOUND');

    // The source can go; its snapshots are independent copies.
    await client.call('Controller', 'DeleteVolume', { volume_id: src });
    for (const id of ids) await client.call('Controller', 'DeleteSnapshot', { snapshot_id: id });
    await client.call('Controller', 'DeleteSnapshot', { snapshot_id: ids[0] });
    await client.call('Controller', 'DeleteSnapshot', { snapshot_id: 'whatever' });
    assert.equal(await code(client.call('Controller', 'DeleteSnapshot', { snapshot_id: '' })), 'INVALID_ARGUMENT');
    const after = await client.call<ListSnapshotsResponse>('Controller', 'ListSnapshots', { source_volume_id: src });
    assert.equal(after.entries.length, 0);
  });
});
