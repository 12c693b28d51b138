// kill -9 of the controller process at random points of a create/delete storm, many times.
// After every kill: fsck finds the log valid and nothing cross-linked; a new controller process
// comes up on the same memory; every volume whose CreateVolume was acknowledged (and not deleted
// since) exists exactly once with its size; calls that were in flight are retried as a CO would;
// and at the end, once everything is deleted, the free space is what it was at the start.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import type { CsiCallError } from '../pkg/csi/client';
import type { CreateVolumeResponse, GetCapacityResponse, ListVolumesResponse } from '../pkg/csi/types';
import { removeEmulatedDevice } from '../testkit/emulated-device';
import { freshDevice, inspectDevice, MiB, startControllerProcess, stopProcess, type DriverProcess } from '../testkit/csi-load-process';

const HOST = '51111111-2222-4333-8444-555555555555';
const KILLS = Number(process.env.CSI_CRASH_KILLS ?? 20);
const NAMES = 40;
const WORKERS = 12;
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const sizeOf = (name: string): number => (2 + (Number(name.slice(4)) % 4) * 2) * MiB;

describe('CSI controller: kill -9 during a create/delete storm @slow', function () {
  this.timeout(600_000);
  const devName = `csi-crash-${process.pid}`;
  let dir: string;
  let device: string;
  let proc: DriverProcess | undefined;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-crash-'));
    device = freshDevice(devName, 512 * MiB, 16 * MiB, HOST);
  });
  after(async () => {
    if (proc) await stopProcess(proc, 'SIGKILL');
    removeEmulatedDevice(devName);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`loses nothing acknowledged across ${KILLS} kills`, async () => {
    /** name → volume id, for creates acknowledged and not deleted since. */
    const acked = new Map<string, string>();
    /** Names with a call in flight at the kill: their outcome is unknown until retried. */
    const uncertain = new Map<string, 'create' | 'delete'>();
    const idOf = new Map<string, string>();
    const stats = { creates: 0, deletes: 0, inFlightAtKill: 0, emptyDirs: 0, interruptedAppends: 0 };

    proc = await startControllerProcess({ device, dir, hostUuid: HOST });
    const initialFree = Number((await proc.client.call<GetCapacityResponse>('Controller', 'GetCapacity', {})).available_capacity);
    const create = (p: DriverProcess, name: string) =>
      p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', { name, capacity_range: { required_bytes: String(sizeOf(name)) }, volume_capabilities: [cap] });

    for (let round = 0; round < KILLS; round++) {
      const p = proc;
      let stop = false;
      const busy = new Set<string>();
      const worker = async (): Promise<void> => {
        while (!stop) {
          const name = `vol-${Math.floor(Math.random() * NAMES)}`;
          if (busy.has(name)) continue;
          busy.add(name);
          const op: 'create' | 'delete' = Math.random() < 0.6 ? 'create' : 'delete';
          try {
            if (op === 'create') {
              const v = (await create(p, name)).volume;
              idOf.set(name, v.volume_id);
              acked.set(name, v.volume_id);
              uncertain.delete(name);
              stats.creates++;
            } else if (idOf.has(name)) {
              await p.client.call('Controller', 'DeleteVolume', { volume_id: idOf.get(name) });
              acked.delete(name);
              uncertain.delete(name);
              stats.deletes++;
            }
          } catch (e) {
            const code = (e as CsiCallError).code;
            if (code === status.RESOURCE_EXHAUSTED) continue;
            // The process died under the call: the CO does not know what happened.
            uncertain.set(name, op);
            acked.delete(name);
            stats.inFlightAtKill++;
          } finally {
            busy.delete(name);
          }
        }
      };
      const workers = Array.from({ length: WORKERS }, worker);
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 700));
      p.child.kill('SIGKILL');
      await new Promise<void>((resolve) => (p.child.exitCode !== null || p.child.signalCode !== null ? resolve() : p.child.once('exit', () => resolve())));
      stop = true;
      await Promise.all(workers);
      p.client.close();

      // The memory as another host sees it right after the crash.
      const seen = inspectDevice(device);
      assert.deepEqual(seen.fsck.errors, [], `round ${round}: fsck errors`);
      assert.equal(seen.fsck.space?.collisions, 0, `round ${round}: double allocation`);
      if (seen.fsck.warnings.some((w) => /interrupted/.test(w))) stats.interruptedAppends++;
      stats.emptyDirs += seen.emptyDirs.length;
      for (const [name, id] of acked) assert.ok(seen.volumeIds.includes(id), `round ${round}: acknowledged ${name} (${id}) is gone`);

      // Restart, then retry what was in flight, as the external-provisioner would.
      proc = await startControllerProcess({ device, dir, hostUuid: HOST });
      for (const [name, op] of uncertain) {
        if (op === 'create') acked.set(name, (await create(proc, name)).volume.volume_id);
        else if (idOf.has(name)) {
          await proc.client.call('Controller', 'DeleteVolume', { volume_id: idOf.get(name) });
          acked.delete(name);
        }
      }
      uncertain.clear();
      // Exactly the acknowledged volumes exist, each once, each with its size.
      const list = await proc.client.call<ListVolumesResponse>('Controller', 'ListVolumes', {});
      const ids = list.entries.map((e) => e.volume.volume_id);
      assert.equal(new Set(ids).size, ids.length, `round ${round}: a volume listed twice`);
      assert.deepEqual([...ids].sort(), [...acked.values()].sort(), `round ${round}: listed volumes differ from acknowledged ones`);
      for (const e of list.entries) {
        const name = [...acked].find(([, id]) => id === e.volume.volume_id)?.[0] as string;
        assert.equal(Number(e.volume.capacity_bytes), sizeOf(name));
        assert.equal(e.status?.volume_condition?.abnormal, false);
      }
    }

    // Everything goes; the space must all come back (pending frees are reclaimed: no other host).
    for (const id of acked.values()) await proc.client.call('Controller', 'DeleteVolume', { volume_id: id });
    const end = await proc.client.call<GetCapacityResponse>('Controller', 'GetCapacity', {});
    const final = inspectDevice(device);
    console.log(`      crash storm: ${KILLS} kills, ${stats.creates} creates and ${stats.deletes} deletes acknowledged, ` +
      `${stats.inFlightAtKill} calls cut by a kill, ${stats.interruptedAppends} interrupted appends seen, ` +
      `${stats.emptyDirs} empty volume directories seen after kills, log ${final.fsck.log?.entriesUsed}/${final.fsck.log?.entriesTotal}, leaked ${initialFree - Number(end.available_capacity)} bytes`);
    assert.equal(Number(end.available_capacity), initialFree, 'leaked space');
    assert.deepEqual(final.volumeIds, []);
    assert.deepEqual(final.fsck.errors, []);
  });
});
