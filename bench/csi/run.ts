/**
 * bench/csi: controller latency over the real unix socket, against a famfs-csi controller process
 * on an emulated device.
 *
 *   1. BENCH_VOLUMES (default 1000) × CreateVolume (2 MiB, zeroed as always) + DeleteVolume, one
 *      at a time: p50/p99 of each, volumes per second.
 *   2. The famfs floor in-process on the same kind of device: creat of 2 MiB with and without
 *      zeroing, so the share of zeroing (write + flush of every line) is visible.
 *   3. One large volume (BENCH_LARGE_MIB, default 1024): CreateVolume zeroing rate, and a clone of
 *      it (memory-to-memory copy) rate.
 *
 * Run: npm run build && node dist/bench/csi/run.js
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { volumeIdForName } from '../../pkg/csi/names';
import type { CreateVolumeResponse } from '../../pkg/csi/types';
import { createEmulatedDevice, removeEmulatedDevice } from '../../testkit/emulated-device';
import { FamfsFs } from '../../pkg/famfs';
import { freshDevice, MiB, percentile, startControllerProcess, stopProcess } from '../../testkit/csi-load-process';

const HOST = '81111111-2222-4333-8444-555555555555';
const N = Number(process.env.BENCH_VOLUMES ?? 1000);
const LARGE = Number(process.env.BENCH_LARGE_MIB ?? 1024) * MiB;
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const f2 = (x: number): string => x.toFixed(2);

function famfsFloor(): { zero: number[]; nozero: number[] } {
  const name = `bench-csi-floor-${process.pid}`;
  const dev = createEmulatedDevice(name, 4096 * MiB, { fresh: true });
  try {
    const f = FamfsFs.mkfs(dev, { systemUuid: HOST, devicePath: dev.path, logLen: 16 * MiB });
    const zero: number[] = [];
    const nozero: number[] = [];
    for (let i = 0; i < Math.min(N, 1000); i++) {
      let t = process.hrtime.bigint();
      f.creat(`z${i}`, 2 * MiB, { zero: true });
      zero.push(ms(t));
      t = process.hrtime.bigint();
      f.creat(`n${i}`, 2 * MiB, { zero: false });
      nozero.push(ms(t));
    }
    return { zero, nozero };
  } finally {
    dev.close();
    removeEmulatedDevice(name);
  }
}

async function main(): Promise<void> {
  const devName = `bench-csi-${process.pid}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-csi-'));
  const device = freshDevice(devName, Math.max(4096 * MiB, 2 * LARGE + 512 * MiB), 64 * MiB, HOST);
  const p = await startControllerProcess({ device, dir, hostUuid: HOST });
  try {
    const create: number[] = [];
    const del: number[] = [];
    for (let i = 0; i < 50; i++) {
      await p.client.call('Controller', 'CreateVolume', { name: `warm-${i}`, capacity_range: { required_bytes: String(2 * MiB) }, volume_capabilities: [cap] });
      await p.client.call('Controller', 'DeleteVolume', { volume_id: volumeIdForName(`warm-${i}`) });
    }
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) {
      let t = process.hrtime.bigint();
      const v = await p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
        name: `pvc-bench-${i}`, capacity_range: { required_bytes: String(2 * MiB) }, volume_capabilities: [cap],
      });
      create.push(ms(t));
      t = process.hrtime.bigint();
      await p.client.call('Controller', 'DeleteVolume', { volume_id: v.volume.volume_id });
      del.push(ms(t));
    }
    const total = ms(t0) / 1000;

    let t = process.hrtime.bigint();
    const big = await p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', { name: 'large', capacity_range: { required_bytes: String(LARGE) }, volume_capabilities: [cap] });
    const zeroS = ms(t) / 1000;
    t = process.hrtime.bigint();
    const clone = await p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name: 'large-clone', capacity_range: { required_bytes: String(LARGE) }, volume_capabilities: [cap], volume_content_source: { volume: { volume_id: big.volume.volume_id } },
    });
    const cloneS = ms(t) / 1000;
    await p.client.call('Controller', 'DeleteVolume', { volume_id: clone.volume.volume_id });
    await p.client.call('Controller', 'DeleteVolume', { volume_id: big.volume.volume_id });

    const floor = famfsFloor();
    const GB = 1e9;
    console.log(`\nbench/csi — controller and node plugin over unix sockets, ${os.cpus().length} CPUs, emulated device in /dev/shm\n`);
    console.log('Baseline: kubernetes-csi/csi-driver-host-path was to run the same workload in this run, but the Go module');
    console.log('proxy here answers 403 for github.com/kubernetes-csi/csi-driver-host-path (every version), so it cannot be built.\n');
    console.log('| measurement | p50 | p99 | rate |');
    console.log('|---|---:|---:|---:|');
    console.log(`| CreateVolume 2 MiB (zeroed), ${N} volumes | ${f2(percentile(create, 50))} ms | ${f2(percentile(create, 99))} ms | |`);
    console.log(`| DeleteVolume | ${f2(percentile(del, 50))} ms | ${f2(percentile(del, 99))} ms | |`);
    console.log(`| Create+Delete pairs, sequential | | | ${(N / total).toFixed(0)} volumes/s |`);
    console.log(`| famfs creat 2 MiB with zeroing (in-process floor) | ${f2(percentile(floor.zero, 50))} ms | ${f2(percentile(floor.zero, 99))} ms | |`);
    console.log(`| famfs creat 2 MiB without zeroing (in-process floor) | ${f2(percentile(floor.nozero, 50))} ms | ${f2(percentile(floor.nozero, 99))} ms | |`);
    console.log(`| CreateVolume ${LARGE / MiB} MiB (zeroing) | ${f2(zeroS * 1000)} ms | | ${(LARGE / zeroS / GB).toFixed(2)} GB/s |`);
    console.log(`| CreateVolume ${LARGE / MiB} MiB clone (memory-to-memory copy) | ${f2(cloneS * 1000)} ms | | ${(LARGE / cloneS / GB).toFixed(2)} GB/s |`);
  } finally {
    await stopProcess(p);
    removeEmulatedDevice(devName);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
