// Two controllers on one device (two mappings of one emulated devdax, two host identities, two
// gRPC servers): the second takes over, finds every record the first committed in the shared
// memory, and the first — paused, never told it lost the lease — can no longer append a log entry
// or commit a metadata image. Also: a torn image commit falls back to the previous generation.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { crc32 } from 'zlib';
import { validateStateDoc } from '../pkg/csi/store';
import { SharedStateImage, STATE_IMAGE_RELPATH } from '../pkg/csi/store-image';
import type { ControllerGetVolumeResponse, CreateVolumeResponse, ListVolumesResponse } from '../pkg/csi/types';
import { openDevice } from '../pkg/device';
import { createEmulatedDevice, removeEmulatedDevice } from '../testkit/emulated-device';
import { grpcOutcome as failure, startController, stopControllers, type Controller } from './helpers/shared-controller';
import { CSI_IMAGE, FamfsFs, fmapExtents, type FileNode } from '../pkg/famfs';

const MiB = 1024 * 1024;
const HOST_A = '31111111-2222-4333-8444-555555555555';
const HOST_B = '32222222-2222-4333-8444-555555555555';
const DEV = `csi-failover-test-${process.pid}`;
const cap = (mode = 'SINGLE_NODE_WRITER') => ({ mount: { fs_type: '', mount_flags: [] }, access_mode: { mode } });

describe('CSI controller failover on shared memory (two controllers, one device)', function () {
  this.timeout(60_000);
  let dir: string;
  let a: Controller;
  let b: Controller;
  const create = (c: Controller, name: string, extra: object = {}) =>
    c.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name,
      capacity_range: { required_bytes: String(2 * MiB) },
      volume_capabilities: [cap()],
      ...extra,
    });
  /** What the shared memory says, read by a third, independent mapping. */
  const onDevice = (): { nextIndex: number; generation: number; volumes: number } => {
    const dev = openDevice(a.device.path, { readOnly: true });
    try {
      const f = FamfsFs.open(dev, { readOnly: true });
      const img = new SharedStateImage(f, dev, validateStateDoc).load();
      return { nextIndex: f.header().nextIndex, generation: img?.header.generation ?? 0, volumes: Object.keys(img?.doc.volumes ?? {}).length };
    } finally {
      dev.close();
    }
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-failover-'));
    const devA = createEmulatedDevice(DEV, 256 * MiB, { fresh: true });
    a = await startController(dir, 'a', devA, FamfsFs.mkfs(devA, { systemUuid: HOST_A, devicePath: devA.path }));
    a.state.takeMasterRole(HOST_A);
  });
  after(async () => {
    await stopControllers([a, b]);
    removeEmulatedDevice(DEV);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('hands the writer role over: the new leader sees every record, the old one appends nothing', async () => {
    const v1 = (await create(a, 'pvc-1', { parameters: { mode: '0640', sharing: 'multi-writer' } })).volume.volume_id;
    const v2 = (await create(a, 'pvc-2')).volume.volume_id;
    await a.client.call('Controller', 'ControllerPublishVolume', { volume_id: v1, node_id: 'node-a', volume_capability: cap('MULTI_NODE_MULTI_WRITER') });
    const before = onDevice();
    assert.equal(before.volumes, 2);

    // Controller B on another "host": its own mapping, its own identity.
    const devB = openDevice(a.device.path);
    b = await startController(dir, 'b', devB, FamfsFs.open(devB, { hostUuid: HOST_B }));
    assert.equal((await failure(create(b, 'early'))).code, 'UNAVAILABLE', 'a standby refuses changes');
    const epochB = b.state.takeMasterRole(HOST_B);
    assert.ok(epochB > (a.state.fencingEpoch ?? 0));
    const taken = onDevice();
    assert.equal(taken.generation, before.generation + 1, 'the new leader commits once under its epoch');

    // B sees what A committed: published nodes, parameters (sharing is not in famfs itself).
    const list = await b.client.call<ListVolumesResponse>('Controller', 'ListVolumes', {});
    const e1 = list.entries.find((e) => e.volume.volume_id === v1);
    assert.deepEqual(e1?.status?.published_node_ids, ['node-a']);
    assert.equal(e1?.volume.volume_context?.['famfs.csi.cxl.io/sharing'], 'multi-writer');
    assert.equal((await failure(create(b, 'pvc-1', { parameters: { mode: '0640' } }))).code, 'ALREADY_EXISTS', 'sharing survived the move');
    assert.equal((await create(b, 'pvc-1', { parameters: { mode: '0640', sharing: 'multi-writer' } })).volume.volume_id, v1);
    assert.equal((await failure(b.client.call('Controller', 'DeleteVolume', { volume_id: v1 }))).code, 'FAILED_PRECONDITION', 'still published');

    // A was paused past its lease and never heard about it: every change fails, nothing is written.
    const mark = onDevice();
    const r = await failure(create(a, 'pvc-3'));
    assert.equal(r.code, 'UNAVAILABLE');
    assert.match(r.message, /not the famfs master/);
    assert.equal((await failure(a.client.call('Controller', 'DeleteVolume', { volume_id: v2 }))).code, 'UNAVAILABLE');
    assert.equal((await failure(a.client.call('Controller', 'ControllerUnpublishVolume', { volume_id: v1, node_id: 'node-a' }))).code, 'UNAVAILABLE');
    assert.deepEqual(onDevice(), mark, 'no log entry and no image generation from the fenced controller');
    assert.equal(a.state.isMaster, false, 'fenced on the spot');

    // B goes on; ControllerGetVolume on B shows the live state.
    await b.client.call('Controller', 'ControllerUnpublishVolume', { volume_id: v1, node_id: 'node-a' });
    await b.client.call('Controller', 'DeleteVolume', { volume_id: v2 });
    const got = await b.client.call<ControllerGetVolumeResponse>('Controller', 'ControllerGetVolume', { volume_id: v1 });
    assert.deepEqual(got.status.published_node_ids, []);

    // B loses the lease cleanly: it refuses at once, without touching the device.
    b.state.dropMasterRole('lease lost (test)');
    const m2 = onDevice();
    assert.equal((await failure(create(b, 'pvc-4'))).code, 'UNAVAILABLE');
    assert.deepEqual(onDevice(), m2);

    // A wins again and reads B's last generation.
    a.state.takeMasterRole(HOST_A);
    const listA = await a.client.call<ListVolumesResponse>('Controller', 'ListVolumes', {});
    assert.deepEqual(listA.entries.map((e) => e.volume.volume_id).sort(), [v1]);
    assert.deepEqual(await failure(create(a, 'pvc-3')), { code: 'OK', message: '' });
  });

  it('a torn image commit leaves the previous generation; damage to the newest committed half is refused, never read as an older state', async () => {
    const img = new SharedStateImage(a.famfs, a.device, validateStateDoc);
    const newest = img.load();
    assert.ok(newest);
    assert.deepEqual(newest.problems, [], 'the older half is retired, not a problem');
    const file = a.famfs.lookup(STATE_IMAGE_RELPATH) as FileNode;
    const base = fmapExtents(file.fmap)[0].offset; // the image file is contiguous
    const halfOff = base + newest.header.half * img.halfSize;
    const otherOff = base + (1 - newest.header.half) * img.halfSize;
    const save = (at: number, n: number) => Buffer.from(a.device.read(at, n));
    const put = (at: number, b: Buffer) => {
      a.device.write(at, b);
      a.device.flush(at, b.length);
    };
    // The retired header, field by field from docs/format.md (layout revision 3).
    const retired = save(otherOff, CSI_IMAGE.HEADER_SIZE);
    assert.equal(retired.toString('latin1', 0, 8), 'FCSISTAT');
    assert.equal(retired.readUInt32LE(8), 3, 'revision 3: retired');
    assert.ok(Number(retired.readBigUInt64LE(16)) < newest.header.generation, 'its own (older) generation');
    assert.ok(Number(retired.readBigUInt64LE(24)) <= newest.header.epoch, 'its epoch');
    assert.equal(retired.readUInt32LE(32), 0, 'no body');
    assert.equal(retired.readUInt32LE(36), 0);
    assert.equal(Number(retired.readBigUInt64LE(40)), file.index, 'the file it belongs to');
    assert.equal(Number(retired.readBigUInt64LE(48)), newest.header.generation, 'superseded by the newest checkpoint');
    assert.equal(retired.readUInt32LE(56), 0, 'reserved');
    assert.equal(retired.readUInt32LE(60), crc32(retired.subarray(0, 60)) >>> 0);
    // A crash in the next checkpoint, after its body and before its header: the other half still
    // carries its retired header, so the newest committed state stays.
    const otherHeader = save(otherOff, CSI_IMAGE.HEADER_SIZE);
    const otherBody = save(otherOff + CSI_IMAGE.BODY_OFFSET, 64);
    put(otherOff + CSI_IMAGE.BODY_OFFSET, Buffer.alloc(64, 0x7b));
    assert.equal(new SharedStateImage(a.famfs, a.device, validateStateDoc).load()?.header.generation, newest.header.generation);
    // A crash while its header is written (a half-written line): caught by the header CRC.
    const torn = save(halfOff, CSI_IMAGE.HEADER_SIZE);
    torn.writeBigUInt64LE(BigInt(newest.header.generation + 1), CSI_IMAGE.generation);
    put(otherOff, torn); // the CRC field is still the newest header's: it fails
    const afterTorn = new SharedStateImage(a.famfs, a.device, validateStateDoc).load();
    assert.equal(afterTorn?.header.generation, newest.header.generation);
    assert.match(afterTorn?.problems.join(';') ?? '', /header CRC/);
    put(otherOff, otherHeader);
    put(otherOff + CSI_IMAGE.BODY_OFFSET, otherBody);
    // Damage to the newest committed half: no older state is taken for it (changes acknowledged
    // since would vanish); the reader says so, and the controller refuses until it is rebuilt.
    for (const at of [halfOff + CSI_IMAGE.BODY_OFFSET + 7, halfOff + CSI_IMAGE.epoch]) {
      const orig = save(at, 1);
      put(at, Buffer.from([orig[0] ^ 0xff]));
      const r = new SharedStateImage(a.famfs, a.device, validateStateDoc).read();
      assert.equal(r.loaded, undefined);
      assert.ok(r.unreadable, 'unreadable');
      put(at, orig);
    }
    // The next leader's checkpoint goes to the other half and retires this one.
    a.state.takeMasterRole(HOST_A);
    const healed = new SharedStateImage(a.famfs, a.device, validateStateDoc).load();
    assert.deepEqual(healed?.problems, []);
    assert.ok(healed.header.generation > newest.header.generation);
    assert.equal(healed.header.half, 1 - newest.header.half);
  });
});
