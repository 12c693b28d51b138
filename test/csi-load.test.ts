// Load: 200 concurrent CreateVolume calls, names repeated on purpose, mixed with deletes, for
// CSI_LOAD_SECONDS (default 30) against a controller process over its unix socket. Then: no
// volume listed twice, every listed volume is one of ours with its size, fsck clean with nothing
// cross-linked, no stray directory, all space back once everything is deleted, and the
// controller's memory bounded. Prints throughput and latency percentiles.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import type { CsiCallError } from '../pkg/csi/client';
import { volumeIdForName } from '../pkg/csi/names';
import type { CreateVolumeResponse, GetCapacityResponse, ListVolumesResponse } from '../pkg/csi/types';
import { removeEmulatedDevice } from '../testkit/emulated-device';
import { freshDevice, inspectDevice, MiB, percentile, rssBytes, startControllerProcess, stopProcess, type DriverProcess } from '../testkit/csi-load-process';

const HOST = '61111111-2222-4333-8444-555555555555';
const SECONDS = Number(process.env.CSI_LOAD_SECONDS ?? 30);
const CONCURRENCY = 200;
const NAMES = 300;
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const sizeOf = (i: number): number => (2 + (i % 3) * 2) * MiB;

describe('CSI controller under load @slow', function () {
  this.timeout(SECONDS * 1000 + 300_000);
  const devName = `csi-load-${process.pid}`;
  let dir: string;
  let device: string;
  let proc: DriverProcess | undefined;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-load-'));
    // 64 MiB log: 123,361 entries, room for the whole run without compaction.
    device = freshDevice(devName, 2048 * MiB, 64 * MiB, HOST);
  });
  after(async () => {
    if (proc) await stopProcess(proc);
    removeEmulatedDevice(devName);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`serves ${CONCURRENCY} concurrent create/delete callers for ${SECONDS} s without duplicates, leaks or overlaps`, async () => {
    const p = await startControllerProcess({ device, dir, hostUuid: HOST });
    proc = p;
    const initialFree = Number((await p.client.call<GetCapacityResponse>('Controller', 'GetCapacity', {})).available_capacity);
    const lat = { create: [] as number[], delete: [] as number[] };
    const codes = new Map<string, number>();
    const rss: number[] = [];
    const sampler = setInterval(() => rss.push(rssBytes(p.child.pid as number)), 500);
    const end = Date.now() + SECONDS * 1000;
    let wrongId = 0;

    const worker = async (): Promise<void> => {
      while (Date.now() < end) {
        const i = Math.floor(Math.random() * NAMES);
        const name = `pvc-load-${i}`;
        const t0 = process.hrtime.bigint();
        try {
          if (Math.random() < 0.65) {
            const v = (
              await p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
                name,
                capacity_range: { required_bytes: String(sizeOf(i)) },
                volume_capabilities: [cap],
              })
            ).volume;
            if (v.volume_id !== volumeIdForName(name) || Number(v.capacity_bytes) !== sizeOf(i)) wrongId++;
            lat.create.push(Number(process.hrtime.bigint() - t0) / 1e6);
          } else {
            await p.client.call('Controller', 'DeleteVolume', { volume_id: volumeIdForName(name) });
            lat.delete.push(Number(process.hrtime.bigint() - t0) / 1e6);
          }
          codes.set('OK', (codes.get('OK') ?? 0) + 1);
        } catch (e) {
          const c = status[(e as CsiCallError).code] ?? 'UNKNOWN';
          codes.set(c, (codes.get(c) ?? 0) + 1);
        }
      }
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const elapsed = (Date.now() - t0) / 1000;
    clearInterval(sampler);

    const ops = lat.create.length + lat.delete.length;
    const fmt = (xs: number[]) => `p50 ${percentile(xs, 50).toFixed(2)} ms, p99 ${percentile(xs, 99).toFixed(2)} ms`;
    console.log(
      `      load: ${ops} calls in ${elapsed.toFixed(1)} s = ${(ops / elapsed).toFixed(0)} calls/s at concurrency ${CONCURRENCY}; ` +
        `CreateVolume ${fmt(lat.create)}; DeleteVolume ${fmt(lat.delete)}; codes ${JSON.stringify(Object.fromEntries(codes))}; ` +
        `controller anonymous RSS ${(Math.min(...rss) / MiB).toFixed(0)}..${(Math.max(...rss) / MiB).toFixed(0)} MiB`,
    );
    assert.deepEqual([...codes.keys()], ['OK'], 'every call succeeded (names repeat: creates are idempotent, deletes of missing volumes are OK)');
    assert.equal(wrongId, 0);

    // No duplicates; every listed volume is one of our names with its size.
    const list = await p.client.call<ListVolumesResponse>('Controller', 'ListVolumes', {});
    const ids = list.entries.map((e) => e.volume.volume_id);
    assert.equal(new Set(ids).size, ids.length);
    const byId = new Map(Array.from({ length: NAMES }, (_, i) => [volumeIdForName(`pvc-load-${i}`), i] as const));
    for (const e of list.entries) {
      const i = byId.get(e.volume.volume_id);
      assert.ok(i !== undefined, `unknown volume ${e.volume.volume_id}`);
      assert.equal(Number(e.volume.capacity_bytes), sizeOf(i));
    }
    const seen = inspectDevice(device);
    assert.deepEqual(seen.fsck.errors, []);
    assert.equal(seen.fsck.space?.collisions, 0, 'no two volumes share memory');
    assert.deepEqual(seen.volumeIds, [...ids].sort());
    assert.deepEqual(seen.emptyDirs, []);
    assert.deepEqual(Object.keys(seen.image?.volumes ?? {}).sort(), [...ids].sort(), 'the metadata image holds exactly the live volumes');

    // Memory bounded: after warm-up the controller does not keep growing.
    const warm = rss.slice(Math.floor(rss.length / 4));
    assert.ok(Math.max(...rss) < 512 * MiB, `controller RSS reached ${Math.max(...rss)} bytes`);
    assert.ok(Math.max(...warm) < Math.min(...warm) * 1.5 + 64 * MiB, 'controller memory keeps growing');

    for (const id of ids) await p.client.call('Controller', 'DeleteVolume', { volume_id: id });
    const after = await p.client.call<GetCapacityResponse>('Controller', 'GetCapacity', {});
    assert.equal(Number(after.available_capacity), initialFree, 'all space back');
  });
});
