// The controller's records in the shared memory (pkg/csi/store-image.ts): one change record per
// change (not the whole document per call), the move to a larger file when the records outgrow a
// half, and what happens when no half can be read: the controller refuses every change
// (UNAVAILABLE, saying how to rebuild) instead of starting from an empty document that would drop
// the publish records and with them the serial-writer guard; `famfs csi-rebuild-state` rebuilds
// the records from the famfs log and the node plugins' records.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { crc32 } from 'zlib';
import { validateStateDoc } from '../pkg/csi/store';
import { SharedStateImage, STATE_IMAGE_RELPATH } from '../pkg/csi/store-image';
import type { CreateVolumeResponse } from '../pkg/csi/types';
import { openDevice } from '../pkg/device';
import { CSI_ACK, CSI_IMAGE, FamfsFs, fmapExtents, type FileNode, type Media } from '../pkg/famfs';
import { NodeStateStore } from '../pkg/mount/mount-records';
import { createEmulatedDevice, removeEmulatedDevice } from '../testkit/emulated-device';
import { grpcOutcome as outcome, startController, stopControllers, type Controller } from './helpers/shared-controller';

const MiB = 1024 * 1024;
const HOST_A = '41111111-2222-4333-8444-555555555555';
const HOST_B = '42222222-2222-4333-8444-555555555555';
const CLI = path.resolve(__dirname, '..', 'cmd', 'famfs.js');
const cap = (mode = 'SINGLE_NODE_WRITER') => ({ mount: { fs_type: '', mount_flags: [] }, access_mode: { mode } });

describe('controller records: change records, growth, unreadable image and rebuild', function () {
  this.timeout(120_000);
  const DEV = `csi-state-test-${process.pid}`;
  let dir: string;
  let a: Controller;
  let b: Controller;
  const create = (c: Controller, name: string) =>
    c.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name,
      capacity_range: { required_bytes: String(2 * MiB) },
      volume_capabilities: [cap()],
    });
  const publish = (c: Controller, id: string, node: string) =>
    c.client.call('Controller', 'ControllerPublishVolume', { volume_id: id, node_id: node, volume_capability: cap() });
  /** Reads the image through a third, independent mapping (as another host would). */
  const onDevice = () => {
    const dev = openDevice(a.device.path, { readOnly: true });
    try {
      const f = FamfsFs.open(dev, { readOnly: true });
      return new SharedStateImage(f, dev, validateStateDoc).read();
    } finally {
      dev.close();
    }
  };
  /** Device offset of half `h`'s header (the image file is contiguous). */
  const headerAt = (c: Controller, h: 0 | 1): number => {
    const file = c.famfs.lookup(STATE_IMAGE_RELPATH) as FileNode;
    return fmapExtents(file.fmap)[0].offset + h * (Math.floor(file.size / 2 / 4096) * 4096);
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-state-'));
    const devA = createEmulatedDevice(DEV, 512 * MiB, { fresh: true });
    a = await startController(dir, 'a', devA, FamfsFs.mkfs(devA, { systemUuid: HOST_A, devicePath: devA.path }));
    a.state.takeMasterRole(HOST_A);
    const devB = openDevice(devA.path);
    b = await startController(dir, 'b', devB, FamfsFs.open(devB, { hostUuid: HOST_B }));
  });
  after(async () => {
    await stopControllers([a, b]);
    removeEmulatedDevice(DEV);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes one change record per change, not a new image per call; the next master sees them all', async () => {
    const before = onDevice().loaded;
    assert.ok(before);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await create(a, `pvc-rec-${i}`)).volume.volume_id);
    await publish(a, ids[0], 'node-a');
    const after = onDevice().loaded;
    assert.ok(after);
    assert.equal(after.header.generation, before.header.generation, 'no checkpoint was written for these calls');
    assert.equal(after.deltas, before.deltas + 21, 'one change record per create, one for the publish');
    assert.equal(Object.keys(after.doc.volumes).length, Object.keys(before.doc.volumes).length + 20);
    assert.deepEqual(Object.keys(after.doc.volumes[ids[0]].published), ['node-a']);

    // B takes over: the records are its, the serial-writer guard with them.
    b.state.takeMasterRole(HOST_B);
    assert.equal((await outcome(publish(b, ids[0], 'node-b'))).code, 'FAILED_PRECONDITION');
    for (const id of ids.slice(1)) assert.equal((await outcome(b.client.call('Controller', 'DeleteVolume', { volume_id: id }))).code, 'OK');
    a.state.takeMasterRole(HOST_A);
  });

  it('moves to a larger file when the records outgrow a half, and reads the same records there', () => {
    // A small image (two 1 MiB halves) on this device, driven directly: ~1.2 MiB of records.
    const img = new SharedStateImage<{ version: 2; volumes: Record<string, unknown>; snapshots: Record<string, unknown> }>(
      a.famfs,
      a.device,
      (d) => d as never,
      'csi/.grow-test',
    );
    const epoch = a.state.fencingEpoch!;
    const fence = (): void => a.famfs.checkFenceEpoch(epoch);
    a.famfs.creat('csi/.grow-test', 2 * MiB, { zero: true, mode: 0o600 });
    const doc = { version: 2 as const, volumes: {} as Record<string, unknown>, snapshots: {} };
    img.commit(doc, epoch, fence);
    const pad = 'x'.repeat(4000);
    for (let i = 0; i < 300; i++) {
      doc.volumes[`v${i}`] = { i, pad };
      if (!img.append({ path: ['volumes', `v${i}`], value: doc.volumes[`v${i}`] }, epoch, fence)) img.commit(doc, epoch, fence);
    }
    assert.equal(img.currentRelpath, 'csi/.grow-test.1', 'the image moved to a new file');
    assert.equal(a.famfs.lookup('csi/.grow-test'), undefined, 'the old file was removed');
    const again = new SharedStateImage(a.famfs, a.device, (d) => d as typeof doc, 'csi/.grow-test').read();
    assert.equal(again.unreadable, undefined);
    assert.equal(Object.keys(again.loaded?.doc.volumes ?? {}).length, 300);
    a.famfs.rm('csi/.grow-test.1');
  });

  it('a torn change record ends the half there: the records before it are read', async () => {
    // A crash while the record is written: it is torn, and the ack line was not moved past it.
    const half = onDevice().loaded!.header.half;
    const ackAt = headerAt(a, half) + CSI_ACK.OFFSET;
    const ackBefore = Buffer.from(a.device.read(ackAt, CSI_ACK.SIZE));
    const v = (await create(a, 'pvc-torn')).volume.volume_id;
    const loaded = onDevice().loaded!;
    assert.ok(loaded.doc.volumes[v]);
    const ackAfter = Buffer.from(a.device.read(ackAt, CSI_ACK.SIZE));
    assert.equal(ackAfter.readBigUInt64LE(CSI_ACK.count), ackBefore.readBigUInt64LE(CSI_ACK.count) + 1n, 'the ack line counts the record');
    // Find the last record (the create of pvc-torn) and tear it: flip its last payload byte.
    const img = new SharedStateImage(a.famfs, a.device, validateStateDoc);
    img.read();
    const c = (img as unknown as { current: { tail: number; header: { half: 0 | 1 } } }).current;
    const at = headerAt(a, c.header.half) + c.tail - 9;
    const orig = a.device.read(at, 1);
    a.device.write(at, Buffer.from([orig[0] ^ 0x55]));
    a.device.flush(at, 1);
    a.device.write(ackAt, ackBefore);
    a.device.flush(ackAt, CSI_ACK.SIZE);
    const torn = onDevice();
    assert.equal(torn.unreadable, undefined);
    assert.equal(torn.loaded?.doc.volumes[v], undefined, 'the torn record is not applied');
    assert.match(torn.problems.join(';'), /failed its CRC/);
    a.device.write(at, orig);
    a.device.flush(at, 1);
    a.device.write(ackAt, ackAfter);
    a.device.flush(ackAt, CSI_ACK.SIZE);
    assert.ok(onDevice().loaded?.doc.volumes[v]);
    assert.equal((await outcome(a.client.call('Controller', 'DeleteVolume', { volume_id: v }))).code, 'OK');
  });

  /** What ListVolumes shows: every volume and the nodes it is published to (the serial-writer guard). */
  const listed = async (c: Controller): Promise<string[]> => {
    const r = await c.client.call<{ entries: { volume: { volume_id: string }; status?: { published_node_ids?: string[] } }[] }>(
      'Controller',
      'ListVolumes',
      {},
    );
    return r.entries.map((e) => `${e.volume.volume_id}:${[...(e.status?.published_node_ids ?? [])].sort().join(',')}`).sort();
  };
  /**
   * After damage to the newest state, a new master either shows everything that was acknowledged
   * or refuses (UNAVAILABLE, naming the rebuild command), reads included: never a silent loss.
   */
  const neverSilentlyLost = async (c: Controller, want: string[], what: string): Promise<void> => {
    const list = await outcome(listed(c));
    if (list.code === 'OK') {
      assert.deepEqual(await listed(c), want, `${what}: ListVolumes lost acknowledged records without an error`);
      return;
    }
    assert.equal(list.code, 'UNAVAILABLE', `${what}: ${list.code} ${list.message}`);
    assert.match(list.message, /famfs csi-rebuild-state/, what);
    // Nor one volume's publish records, nor the snapshots' records.
    const published = want.find((w) => !w.endsWith(':'))!.split(':')[0];
    const one = await outcome(c.client.call('Controller', 'ControllerGetVolume', { volume_id: published }));
    assert.equal(one.code, 'UNAVAILABLE', `${what}: ControllerGetVolume ${one.code} ${one.message}`);
    assert.equal((await outcome(c.client.call('Controller', 'ListSnapshots', {}))).code, 'UNAVAILABLE', `${what}: ListSnapshots`);
    const refused = await outcome(create(c, `pvc-refused-${what.replace(/\W+/g, '-')}`));
    assert.equal(refused.code, 'UNAVAILABLE', `${what}: a change while records are missing`);
    assert.match(refused.message, /famfs csi-rebuild-state/, what);
  };
  const flip = (at: number): Buffer => {
    const orig = Buffer.from(a.device.read(at, 1));
    a.device.write(at, Buffer.from([orig[0] ^ 0x5a]));
    a.device.flush(at, 1);
    return orig;
  };
  const putBack = (at: number, orig: Buffer): void => {
    a.device.write(at, orig);
    a.device.flush(at, 1);
  };

  it('the newest half damaged (header or checkpoint body): the next master never goes back a checkpoint silently, losing what was acknowledged since', async () => {
    a.state.takeMasterRole(HOST_A); // a checkpoint: the newest half now holds every record
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await create(a, `pvc-newest-${i}`)).volume.volume_id);
    await publish(a, ids[0], 'node-a');
    a.state.takeMasterRole(HOST_A); // and another: the records above are in the newest checkpoint
    await publish(a, ids[1], 'node-a');
    const want = await listed(a);
    assert.ok(want.includes(`${ids[0]}:node-a`) && want.includes(`${ids[1]}:node-a`));
    const newest = onDevice().loaded!.header.half;
    for (const [what, at] of [
      ['header', headerAt(a, newest) + CSI_IMAGE.generation],
      ['checkpoint body', headerAt(a, newest) + CSI_IMAGE.BODY_OFFSET + 20],
    ] as const) {
      const orig = flip(at);
      b.state.takeMasterRole(HOST_B);
      await neverSilentlyLost(b, want, `newest ${what} damaged`);
      putBack(at, orig);
      a.state.takeMasterRole(HOST_A);
      assert.deepEqual(await listed(a), want, `${what}: the records are all back once the damage is undone`);
    }
  });

  it('a damaged change record with acknowledged records after it: never read as a torn append that ends the half', async () => {
    a.state.takeMasterRole(HOST_A);
    const loaded = onDevice().loaded!;
    const first = headerAt(a, loaded.header.half) + Math.ceil((CSI_IMAGE.BODY_OFFSET + loaded.header.length) / 8) * 8;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await create(a, `pvc-rec-damage-${i}`)).volume.volume_id);
    await publish(a, ids[2], 'node-a');
    const want = await listed(a);
    const at = first + 32 + 5; // a byte of the first record's payload
    const orig = flip(at);
    b.state.takeMasterRole(HOST_B);
    await neverSilentlyLost(b, want, 'first change record damaged');
    putBack(at, orig);
    a.state.takeMasterRole(HOST_A);
    assert.deepEqual(await listed(a), want);
  });

  it('damage to the last change record, which the ack line counts as acknowledged: never read as a torn append', async () => {
    a.state.takeMasterRole(HOST_A);
    const id = (await create(a, 'pvc-last-record')).volume.volume_id;
    await publish(a, id, 'node-a'); // the last record
    const want = await listed(a);
    const img = new SharedStateImage(a.famfs, a.device, validateStateDoc);
    img.read();
    const c = (img as unknown as { current: { tail: number; header: { half: 0 | 1 } } }).current;
    const at = headerAt(a, c.header.half) + c.tail - 9;
    const orig = flip(at);
    b.state.takeMasterRole(HOST_B);
    await neverSilentlyLost(b, want, 'last change record damaged');
    putBack(at, orig);
    a.state.takeMasterRole(HOST_A);
    assert.deepEqual(await listed(a), want);
  });

  it('a reader racing the writer (a record appended between its reads) never mistakes the newest record for a lost one', async () => {
    a.state.takeMasterRole(HOST_A);
    await create(a, 'pvc-race-0');
    const epoch = a.state.fencingEpoch!;
    const writer = new SharedStateImage(a.famfs, a.device, validateStateDoc);
    assert.ok(writer.read().loaded);
    // A follower's mapping where the master appends one more record (and moves the ack line)
    // right after the follower read the change-record region: what a follower on another host sees.
    let raced = 0;
    const racing: Media = {
      size: a.device.size,
      read: (offset: number, length: number) => {
        const got = a.device.read(offset, length);
        if (length > 1 << 20 && raced++ === 0) {
          assert.equal(
            writer.append({ path: ['volumes', 'race-probe'] }, epoch, () => a.famfs.checkFenceEpoch(epoch)),
            true,
          );
        }
        return got;
      },
      write: (offset: number, data: Uint8Array) => a.device.write(offset, data),
      flush: (offset: number, length: number) => a.device.flush(offset, length),
      invalidate: (offset: number, length: number) => a.device.invalidate(offset, length),
    };
    const follower = new SharedStateImage(a.famfs, racing, validateStateDoc).read();
    assert.equal(raced > 0, true, 'the append happened between the reads');
    assert.equal(follower.unreadable, undefined, follower.problems.join('; '));
    a.state.takeMasterRole(HOST_A);
  });

  let guarded = '';
  it('refuses every change (UNAVAILABLE, says how to rebuild) when both halves are damaged', async () => {
    guarded = (await create(a, 'pvc-guarded')).volume.volume_id;
    await publish(a, guarded, 'node-a');
    a.state.takeMasterRole(HOST_A); // a checkpoint in the other half: both halves hold something
    for (const h of [0, 1] as const) {
      const at = headerAt(a, h) + CSI_IMAGE.generation;
      const orig = a.device.read(at, 1);
      a.device.write(at, Buffer.from([orig[0] ^ 0xff]));
      a.device.flush(at, 1);
    }
    assert.ok(onDevice().unreadable);
    b.state.takeMasterRole(HOST_B);
    const refused = await outcome(create(b, 'pvc-after-damage'));
    assert.equal(refused.code, 'UNAVAILABLE');
    assert.match(refused.message, /controller state image unreadable/);
    assert.match(refused.message, /famfs csi-rebuild-state/);
    assert.equal((await outcome(publish(b, guarded, 'node-b'))).code, 'UNAVAILABLE', 'no second writer while the guard is unknown');
    assert.equal((await outcome(b.client.call('Controller', 'DeleteVolume', { volume_id: guarded }))).code, 'UNAVAILABLE');
    assert.equal(onDevice().unreadable !== undefined, true, 'nothing was written over the damaged halves');
  });

  it('refuses the same way when both halves are of a revision it does not know', async () => {
    for (const h of [0, 1] as const) {
      const at = headerAt(a, h);
      const hdr = Buffer.from(a.device.read(at, CSI_IMAGE.HEADER_SIZE));
      hdr.writeUInt32LE(99, CSI_IMAGE.revision);
      hdr.writeUInt32LE(crc32(hdr.subarray(0, CSI_IMAGE.headerCrc)) >>> 0, CSI_IMAGE.headerCrc);
      a.device.write(at, hdr);
      a.device.flush(at, CSI_IMAGE.HEADER_SIZE);
    }
    b.state.takeMasterRole(HOST_B);
    const refused = await outcome(create(b, 'pvc-after-revision'));
    assert.equal(refused.code, 'UNAVAILABLE');
    assert.match(refused.message, /unknown revision 99/);
  });

  it("famfs csi-rebuild-state recovers the publish records from the node plugins' records", async () => {
    const nodeDir = path.join(dir, 'node-a-state');
    const nodeStore = new NodeStateStore(nodeDir);
    await nodeStore.update((d) => {
      d.staged['/var/lib/kubelet/plugins/x/globalmount'] = {
        volumeId: guarded,
        stagingPath: '/var/lib/kubelet/plugins/x/globalmount',
        famfsMount: '/mnt',
        readOnly: false,
        accessMode: 'SINGLE_NODE_WRITER',
        stagedAt: 'now',
      };
    });
    const r = spawnSync(process.execPath, [CLI, 'csi-rebuild-state', '--json', '--node-state', `node-a=${nodeDir}`, a.device.path], {
      encoding: 'utf8',
      env: { ...process.env, FAMFS_SYSTEM_UUID: HOST_B },
    });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const report = JSON.parse(r.stdout) as { published: { volumeId: string; nodeId: string }[]; replaced: string };
    assert.deepEqual(
      report.published.map((p) => [p.volumeId, p.nodeId]),
      [[guarded, 'node-a']],
    );
    assert.match(report.replaced, /unknown revision 99/);
    // The controller restarts (takes the role again) and reads the rebuilt records.
    b.state.takeMasterRole(HOST_B);
    assert.equal(b.state.unreadableReason, undefined);
    const second = await outcome(publish(b, guarded, 'node-b'));
    assert.equal(second.code, 'FAILED_PRECONDITION', 'the serial-writer guard is back');
    assert.equal((await outcome(publish(b, guarded, 'node-a'))).code, 'OK');
    assert.equal((await outcome(create(b, 'pvc-after-rebuild'))).code, 'OK');
  });

  it('csi-rebuild-state refuses a node state directory without records (exit 2, nothing written)', () => {
    const before = onDevice().loaded?.header.generation;
    const r = spawnSync(process.execPath, [CLI, 'csi-rebuild-state', '--node-state', `node-z=${path.join(dir, 'nowhere')}`, a.device.path], {
      encoding: 'utf8',
      env: { ...process.env, FAMFS_SYSTEM_UUID: HOST_B },
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /no node-state\.json there/);
    assert.equal(onDevice().loaded?.header.generation, before);
  });
});
