// DeleteVolume retried after a kill -9 of the controller process in the middle of its delete: the
// killed master had written and flushed a famfs delete entry (append step 3) but not yet moved the
// log counters (step 5). The crash storm hit it (seed 3684085209, round 8): the restarted
// controller's catch-up still showed the file, rm() committed the entry past next_index before
// appending (a master rolls valid entries forward, never overwrites them) and then found nothing to
// delete: DeleteVolume answered NOT_FOUND, and a CO would have kept the PV forever.
//
// The window between the entry flush and the counter store is a few instructions wide, so no
// signal from outside lands in it reliably: the test kills the controller process with SIGKILL,
// then leaves on the device exactly what a kill in that window leaves (the delete entry the master
// writes for the volume's file, or for its directory once the file's delete was committed, at
// next_index, counters unchanged), and restarts the controller on it.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import type { CsiCallError } from '../pkg/csi/client';
import { objectDirRelpath, objectFileRelpath } from '../pkg/csi/names';
import type { CreateVolumeResponse, GetCapacityResponse, ListVolumesResponse } from '../pkg/csi/types';
import { openDevice } from '../pkg/device';
import { decodeLogHeader, encodeEntry, entryOffset, FamfsFs, LE, LH, LOG_OFFSET } from '../pkg/famfs';
import { removeEmulatedDevice } from '../testkit/emulated-device';
import { freshDevice, inspectDevice, MiB, startControllerProcess, stopProcess, type DriverProcess } from '../testkit/csi-load-process';

const HOST = '61111111-2222-4333-8444-555555555555';
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return `${status[(e as CsiCallError).code]}: ${(e as CsiCallError).details}`;
  }
}

/**
 * What a kill between append steps 3 and 5 leaves: the delete entry of `relpath` written and
 * flushed at next_index, the counters not moved. Returns that index.
 */
function halfAppendedDelete(device: string, relpath: string): number {
  const dev = openDevice(device);
  try {
    const f = FamfsFs.open(dev, { readOnly: true });
    const target = f.lookup(relpath);
    assert.ok(target !== undefined, `${relpath} is not live`);
    const next = decodeLogHeader(dev.read(LOG_OFFSET, LH.SIZE)).nextIndex;
    assert.ok(
      dev.read(LOG_OFFSET + entryOffset(next), LE.SIZE).every((b) => b === 0),
      `slot ${next} is not empty`,
    );
    const entry = encodeEntry(next, { type: 'delete', targetIndex: target.index, targetType: target.kind === 'file' ? 'file' : 'mkdir', relpath });
    dev.write(LOG_OFFSET + entryOffset(next), entry);
    dev.flush(LOG_OFFSET + entryOffset(next), LE.SIZE);
    return next;
  } finally {
    dev.close();
  }
}

describe('CSI controller: DeleteVolume retried after a kill -9 between the delete entry and the log counters', function () {
  this.timeout(300_000);
  const devName = `csi-kill-delete-${process.pid}-${Date.now().toString(36)}`;
  let dir: string;
  let device: string;
  const started: DriverProcess[] = [];
  const start = async (): Promise<DriverProcess> => {
    const p = await startControllerProcess({ device, dir, hostUuid: HOST });
    started.push(p);
    return p;
  };
  const create = (p: DriverProcess, name: string) =>
    p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name,
      capacity_range: { required_bytes: String(8 * MiB) },
      volume_capabilities: [cap],
    });
  const capacity = async (p: DriverProcess) => Number((await p.client.call<GetCapacityResponse>('Controller', 'GetCapacity', {})).available_capacity);

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-kill-delete-'));
    device = freshDevice(devName, 256 * MiB, 8 * MiB, HOST);
    // One ordinary delete first: the master upgrades the superblock to the delete extension before
    // its first delete entry, as the killed master in the storm had long done.
    const p = await start();
    const warmup = await create(p, 'warm-up');
    await p.client.call('Controller', 'DeleteVolume', { volume_id: warmup.volume.volume_id });
    await stopProcess(p);
  });
  after(async () => {
    for (const p of started) await stopProcess(p, 'SIGKILL');
    if (device !== undefined) removeEmulatedDevice(devName);
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const cut of ['file', 'directory'] as const) {
    it(`the ${cut}'s delete entry committed, the counters not: the retried DeleteVolume succeeds, frees the memory, and a second one is OK`, async () => {
      let p = await start();
      const free = await capacity(p);
      const id = (await create(p, `acknowledged-${cut}`)).volume.volume_id;
      assert.ok((await capacity(p)) <= free - 8 * MiB, 'the volume took no memory');
      const file = inspectDevice(device);
      assert.ok(file.volumeIds.includes(id));
      await stopProcess(p, 'SIGKILL'); // kill -9 of the controller process

      if (cut === 'directory') {
        // The file's delete was committed whole (counters moved) before the kill.
        const dev = openDevice(device);
        try {
          FamfsFs.open(dev, { hostUuid: HOST }).rm(objectFileRelpath(id));
        } finally {
          dev.close();
        }
      }
      const at = halfAppendedDelete(device, cut === 'file' ? objectFileRelpath(id) : objectDirRelpath(id));
      const killed = inspectDevice(device);
      assert.ok(
        killed.fsck.warnings.some((w) => /interrupted/.test(w)),
        `not the state a kill mid-append leaves (delete entry at ${at}): ${killed.fsck.warnings.join(' | ')}`,
      );
      assert.ok(killed.image?.volumes[id] !== undefined, 'the controller record is gone before the retry');

      p = await start();
      assert.equal(await codeOf(p.client.call('Controller', 'DeleteVolume', { volume_id: id })), 'OK', 'the retried DeleteVolume');
      const after = inspectDevice(device);
      assert.equal(after.fsck.clean, true, after.fsck.errors.join(' | '));
      assert.deepEqual(after.fsck.warnings, []);
      assert.equal(after.volumeIds.includes(id), false, 'the volume file is still in famfs');
      assert.deepEqual(after.emptyDirs, [], 'the volume directory was left behind');
      assert.equal(after.image?.volumes[id], undefined, 'the controller record survived the delete');
      const listed = await p.client.call<ListVolumesResponse>('Controller', 'ListVolumes', {});
      assert.deepEqual(
        listed.entries.map((e) => e.volume.volume_id),
        [],
      );
      // Its memory comes back (pending until this master's own host slot acks the delete).
      const deadline = Date.now() + 60_000;
      while ((await capacity(p)) !== free && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      assert.equal(await capacity(p), free, 'the volume memory did not come back');
      assert.equal(await codeOf(p.client.call('Controller', 'DeleteVolume', { volume_id: id })), 'OK', 'a second DeleteVolume');
      await stopProcess(p);
    });
  }
});
