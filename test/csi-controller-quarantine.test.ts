// Issue 10, item 3: a CSI volume whose famfs entry repair could not prove (quarantined as
// lost+found.N) is not silently forgotten by the controller: ControllerGetVolume says what happened
// and where its memory is, the record survives a new leader, DeleteVolume never frees the memory.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { CsiClient, type CsiCallError } from '../pkg/csi/client';
import { controllerService } from '../pkg/csi/controller';
import { objectFileRelpath } from '../pkg/csi/names';
import { CsiServer } from '../pkg/csi/server';
import { ControllerStore } from '../pkg/csi/store';
import type { CreateVolumeResponse } from '../pkg/csi/types';
import { Volumes } from '../pkg/csi/volumes';
import { entryOffset, FamfsFs, fmapExtents, LE, LOG_OFFSET, repair, type FileNode } from '../pkg/famfs';
import { createEmulatedDevice, removeEmulatedDevice } from '../testkit/emulated-device';

const MiB = 1024 * 1024;
const HOST = '33333333-2222-4333-8444-555555555555';
const DEV = `csi-quarantine-test-${process.pid}`;
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

describe('CSI controller: a volume whose log entry famfs repair quarantined', function () {
  this.timeout(60_000);
  let dir: string;
  let server: CsiServer | undefined;
  let client: CsiClient | undefined;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-quarantine-'));
  });
  after(async () => {
    client?.close();
    await server?.stop(200);
    removeEmulatedDevice(DEV);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is reported by ControllerGetVolume with its quarantine, survives a new leader, and DeleteVolume keeps its memory reserved', async () => {
    const device = createEmulatedDevice(DEV, 128 * MiB, { fresh: true });
    const famfs = FamfsFs.mkfs(device, { systemUuid: HOST, devicePath: device.path });
    const start = async (name: string, f: FamfsFs) => {
      const store = new ControllerStore(f);
      store.takeMasterRole(HOST);
      server = new CsiServer({ endpoint: `unix://${dir}/${name}.sock`, log: pino({ level: 'silent' }) });
      server.addService(
        'Controller',
        controllerService({
          volumes: new Volumes(store),
          pool: 'p',
          topologyKey: 'k',
          nodeExists: () => true,
          condition: () => ({ abnormal: false, message: 'ok' }),
        }),
      );
      await server.start();
      client = new CsiClient(`unix://${dir}/${name}.sock`, 10_000);
      return client;
    };
    let c = await start('a', famfs);
    const id = (
      await c.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
        name: 'pvc-q',
        capacity_range: { required_bytes: String(4 * MiB) },
        volume_capabilities: [cap],
      })
    ).volume.volume_id;
    famfs.catchUp();
    const file = famfs.lookup(objectFileRelpath(id)) as FileNode;
    // Two damaged bytes in the volume's entry (its name and its uid): no CRC proof, so quarantine.
    for (const [pos, mask] of [
      [LE.payload + 24 + 5, 0x01],
      [LE.payload + 12, 0x01],
    ] as const) {
      const at = LOG_OFFSET + entryOffset(file.index) + pos;
      device.write(at, Buffer.from([device.read(at, 1)[0] ^ mask]));
      device.flush(at, 1);
    }
    assert.deepEqual(
      repair(device, { hostUuid: HOST }).quarantined.map((q) => q.index),
      [file.index],
    );

    // A new leader (restart) over the repaired device.
    client?.close();
    await server?.stop(200);
    c = await start('b', FamfsFs.open(device, { hostUuid: HOST }));
    const got = await c.call('Controller', 'ControllerGetVolume', { volume_id: id }).then(
      () => ({ code: 'OK', message: '' }),
      (e: CsiCallError) => ({ code: status[e.code] ?? 'UNKNOWN', message: e.details }),
    );
    assert.equal(got.code, 'NOT_FOUND');
    assert.match(got.message, new RegExp(`quarantined .*lost\\+found\\.${file.index}`), got.message);
    // The CO deletes it: the memory stays reserved (quarantine) until the operator releases it.
    await c.call('Controller', 'DeleteVolume', { volume_id: id });
    const after = FamfsFs.open(device, { readOnly: true });
    assert.deepEqual(fmapExtents((after.lookup(`lost+found.${file.index}`) as FileNode).fmap), fmapExtents(file.fmap));
    device.close();
  });
});
