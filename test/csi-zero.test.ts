/**
 * CreateVolume without zeroing on its path (issue 15 item 3), through the real controller over gRPC:
 * the controller zeroes freed memory in the background once the reclaim horizon passed, a create
 * that had to zero memory itself says so in famfs_csi_create_zero_waits_total, a kill -9 of the
 * controller mid-zeroing never leaves memory marked clean with data in it, and a host that still
 * maps a deleted volume keeps its bytes until it acks the delete.
 */
import { strict as assert } from 'assert';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';

import { CsiClient } from '../pkg/csi/client';
import { DEFAULT_DRIVER_NAME, startDriver, type RunningDriver } from '../pkg/csi/driver';
import { objectFileRelpath } from '../pkg/csi/names';
import type { CreateVolumeResponse } from '../pkg/csi/types';
import { openDevice, type DaxDevice } from '../pkg/device';
import { ALLOC_UNIT, FamfsFs, type FileNode } from '../pkg/famfs';
import { startControllerProcess, stopProcess, type DriverProcess } from '../testkit/csi-load-process';
import { allZero, assertCleanUnitsAreZero, fileBytes, fillPattern, overlaps } from './helpers/clean-map';
import { canMount, FusedHost, sleep } from './helpers/fused-host';

const MiB = 1024 * 1024;
const CONTROLLER = '61111111-2222-4333-8444-555555555555';
const HOST = '61111111-2222-4333-8444-5555555555aa';
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await sleep(25);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** The value of one series in the registry's Prometheus text. */
async function metric(d: RunningDriver, series: string): Promise<number> {
  const text = await d.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line !== undefined, `no ${series} in /metrics`);
  return Number(line.split(' ')[1]);
}

describe('CreateVolume without zeroing: background zeroing in the controller (real gRPC)', function () {
  this.timeout(180_000);
  let dir: string;
  const devices: string[] = [];
  const drivers: RunningDriver[] = [];
  const procs: DriverProcess[] = [];
  const opened: DaxDevice[] = [];
  const hosts: FusedHost[] = [];

  /** A fresh emulated device with a famfs that starts dirty (as a real devdax that held data does). */
  function device(size: number, zeroed = false): string {
    const p = `/dev/shm/famfs-csi-zero-${process.pid}-${randomBytes(4).toString('hex')}`;
    devices.push(p);
    const dev = openDevice(p, { create: { size } });
    try {
      FamfsFs.mkfs(dev, { systemUuid: CONTROLLER, devicePath: p, zeroed });
    } finally {
      dev.close();
    }
    return p;
  }

  function mapped(p: string): DaxDevice {
    const d = openDevice(p);
    opened.push(d);
    return d;
  }

  async function controller(devicePath: string, zeroIntervalMs: number): Promise<{ d: RunningDriver; client: CsiClient }> {
    const sub = fs.mkdtempSync(path.join(dir, 'ctl-'));
    process.env.FAMFS_SYSTEM_UUID = CONTROLLER;
    const d = await startDriver({
      mode: 'controller',
      endpoint: `unix://${path.join(sub, 'csi.sock')}`,
      devicePath,
      deviceSize: 0,
      mkfs: false,
      nodeId: 'ctrl',
      driverName: DEFAULT_DRIVER_NAME,
      stateDir: path.join(sub, 'state'),
      pool: 'default',
      zeroIntervalMs,
      log: pino({ level: 'silent' }),
    });
    drivers.push(d);
    return { d, client: new CsiClient(d.config.endpoint, 30_000) };
  }

  async function create(client: CsiClient, name: string, size: number): Promise<string> {
    const r = await client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name,
      capacity_range: { required_bytes: String(size) },
      volume_capabilities: [cap],
    });
    return r.volume.volume_id;
  }

  /** The volume's famfs file as a reader of the device sees it now. */
  function fileOf(dev: DaxDevice, volumeId: string): FileNode {
    const f = FamfsFs.open(dev, { readOnly: true }).lookup(objectFileRelpath(volumeId));
    assert.ok(f?.kind === 'file', `no file for ${volumeId}`);
    return f;
  }

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-zero-'));
  });

  afterEach(async () => {
    for (const h of hosts.splice(0)) await h.stop().catch(() => undefined);
    for (const d of drivers.splice(0)) await d.stop();
    for (const p of procs.splice(0)) await stopProcess(p, 'SIGKILL');
  });

  after(() => {
    for (const d of opened) d.close();
    for (const p of devices) fs.rmSync(p, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
    delete process.env.FAMFS_SYSTEM_UUID;
  });

  it('a create that had to zero says so in famfs_csi_create_zero_waits_total; with background zeroing none waits, and none shows the previous tenant', async () => {
    const p = device(256 * MiB);
    const dev = mapped(p);
    {
      // Background zeroing off: the device starts dirty, so every create zeroes (and waits).
      const { d, client } = await controller(p, 0);
      // The takeover made the controller's state image file (it waited too).
      const waits0 = await metric(d, 'famfs_csi_create_zero_waits_total');
      const bytes0 = await metric(d, 'famfs_csi_create_zero_wait_bytes_total');
      const a = await create(client, 'tenant-a', 64 * MiB);
      assert.equal(await metric(d, 'famfs_csi_create_zero_waits_total'), waits0 + 1);
      const fa = fileOf(dev, a);
      fillPattern(dev, fa);
      await client.call('Controller', 'DeleteVolume', { volume_id: a });
      const b = await create(client, 'tenant-b', 64 * MiB);
      const fb = fileOf(dev, b);
      assert.ok(overlaps(fa, fb));
      assert.ok(allZero(fileBytes(dev, fb)), "tenant-b shows tenant-a's bytes");
      assert.equal(await metric(d, 'famfs_csi_create_zero_waits_total'), waits0 + 2);
      assert.equal(await metric(d, 'famfs_csi_create_zero_wait_bytes_total'), bytes0 + 128 * MiB);
      fillPattern(dev, fb, 0x3c);
      client.close();
      await drivers.pop()?.stop();
    }
    // Background zeroing on: the controller zeroes the free memory once, then after each delete.
    const { d, client } = await controller(p, 50);
    await waitFor('the free memory to be zeroed', async () => (await metric(d, 'famfs_csi_free_bytes{state="dirty"}')) === 0);
    assert.ok((await metric(d, 'famfs_csi_free_bytes{state="clean"}')) > 100 * MiB);
    const ids: string[] = [];
    for (const v of (await client.call<{ entries: { volume: { volume_id: string } }[] }>('Controller', 'ListVolumes', {})).entries)
      ids.push(v.volume.volume_id);
    assert.equal(ids.length, 1, 'tenant-b survived the restart');
    for (let round = 0; round < 3; round++) {
      const before = ids.map((id) => fileOf(dev, id));
      // Zeroed bytes, not the dirty gauge alone: a delete's memory counts as free (dirty) only once
      // the zeroer (a few ms after the delete) found it past the reclaim horizon.
      const zeroed0 = await metric(d, 'famfs_csi_free_zeroed_bytes_total');
      for (const id of ids.splice(0)) await client.call('Controller', 'DeleteVolume', { volume_id: id });
      await waitFor(
        'the deleted memory to be zeroed',
        async () =>
          (await metric(d, 'famfs_csi_free_zeroed_bytes_total')) >= zeroed0 + 64 * MiB && (await metric(d, 'famfs_csi_free_bytes{state="dirty"}')) === 0,
      );
      const id = await create(client, `round-${round}`, 64 * MiB);
      const f = fileOf(dev, id);
      assert.ok(
        before.some((x) => overlaps(x, f)),
        "the new volume reuses the deleted one's memory",
      );
      assert.ok(allZero(fileBytes(dev, f)), `round ${round}: a volume shows the previous tenant's bytes`);
      fillPattern(dev, f, 0x10 + round);
      ids.push(id);
    }
    assert.equal(await metric(d, 'famfs_csi_create_zero_waits_total'), 0, 'with the zeroer caught up, no create zeroes');
    assert.ok((await metric(d, 'famfs_csi_free_zeroed_bytes_total')) >= 3 * 64 * MiB);
    client.close();
  });

  it('kill -9 of the controller while it zeroes, again and again: memory marked clean always reads zero; after a restart all free memory becomes clean and CreateVolume reads zeros', async () => {
    const p = device(640 * MiB, true);
    const dev = mapped(p);
    let ctl = await startControllerProcess({ device: p, dir: fs.mkdtempSync(path.join(dir, 'p-')), hostUuid: CONTROLLER });
    procs.push(ctl);
    const big = 560 * MiB;
    const id = await (async () => {
      const r = await ctl.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
        name: 'big',
        capacity_range: { required_bytes: String(big) },
        volume_capabilities: [cap],
      });
      return r.volume.volume_id;
    })();
    const victim = fileOf(dev, id);
    fillPattern(dev, victim, 0xc3);
    await ctl.client.call('Controller', 'DeleteVolume', { volume_id: id });
    const fsUuid = FamfsFs.open(dev, { readOnly: true }).superblock.uuid;
    const units = Math.floor(dev.size / ALLOC_UNIT);
    for (let round = 0; round < 2; round++) {
      // The zeroer starts right after the delete (and at start): kill it somewhere inside.
      await sleep(Math.floor(Math.random() * 60));
      ctl.child.kill('SIGKILL');
      await new Promise<void>((resolve) =>
        ctl.child.exitCode !== null || ctl.child.signalCode !== null ? resolve() : ctl.child.once('exit', () => resolve()),
      );
      procs.pop();
      assertCleanUnitsAreZero(dev, fsUuid, units);
      ctl = await startControllerProcess({ device: p, dir: fs.mkdtempSync(path.join(dir, 'p-')), hostUuid: CONTROLLER });
      procs.push(ctl);
    }
    // The restarted controller finishes: every free unit ends up clean in the shared map.
    const free = FamfsFs.open(dev, { readOnly: true }).usage().freeBytes / ALLOC_UNIT;
    await waitFor('every free unit to be clean', () => assertCleanUnitsAreZero(dev, fsUuid, units) >= free);
    const r = await ctl.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name: 'next',
      capacity_range: { required_bytes: String(big) },
      volume_capabilities: [cap],
    });
    const next = fileOf(dev, r.volume.volume_id);
    assert.ok(overlaps(victim, next));
    assert.ok(allZero(fileBytes(dev, next)), "after kill -9 mid-zeroing, the next volume shows the previous tenant's bytes");
  });

  (canMount ? it : it.skip)('a host that still maps a deleted volume keeps its bytes until it acks the delete; then the memory is zeroed', async () => {
    const p = device(256 * MiB, true);
    const dev = mapped(p);
    const { d, client } = await controller(p, 50);
    const host = await FusedHost.startHost(p, fs.mkdtempSync(path.join(dir, 'h-')), HOST);
    hosts.push(host);
    const id = await create(client, 'mapped', 32 * MiB);
    const f = fileOf(dev, id);
    fillPattern(dev, f, 0x6b);
    await host.catchUpTo(objectFileRelpath(id));
    // The host has acked the volume's creation; now it stops (a paused VM, a long GC pause).
    await sleep(1200);
    host.proc.kill('SIGSTOP');
    await client.call('Controller', 'DeleteVolume', { volume_id: id });
    // Many zeroer passes go by: the memory is pending (the host has not acked the delete), never zeroed.
    await sleep(1500);
    assert.ok(
      fileBytes(dev, f).every((b) => b === 0x6b),
      'the controller zeroed memory a host still maps',
    );
    assert.ok((await metric(d, 'famfs_csi_free_bytes{state="dirty"}')) === 0, 'everything else free is clean');
    host.proc.kill('SIGCONT');
    await waitFor('the memory to be zeroed once the host acked the delete', () => allZero(fileBytes(dev, f)));
    client.close();
  });
});
