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
import { spawnSync } from 'child_process';
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
const NODE_ROUNDS = Number(process.env.BENCH_NODE_ROUNDS ?? 200);
const NODE_HOST = '7e57a0de-0000-4000-8000-0000000000ee';
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

    // NodePublish/NodeUnpublish: a node plugin process with its own FUSE server, one staged volume,
    // publish/unpublish to a target again and again (a bind mount each time).
    const nodeDir = path.join(dir, 'node');
    fs.mkdirSync(nodeDir);
    const node = await startControllerProcess({ device, dir: nodeDir, hostUuid: NODE_HOST, mode: 'node', extraArgs: ['--allowed-path-root', nodeDir] });
    const publish: number[] = [];
    const unpublish: number[] = [];
    try {
      const vol = await p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', { name: 'node-bench', capacity_range: { required_bytes: String(2 * MiB) }, volume_capabilities: [cap] });
      const volumeId = vol.volume.volume_id;
      const staging = path.join(nodeDir, 'staging');
      fs.mkdirSync(staging);
      await node.client.call('Node', 'NodeStageVolume', { volume_id: volumeId, staging_target_path: staging, volume_capability: cap, volume_context: vol.volume.volume_context });
      const target = path.join(nodeDir, 'target');
      for (let i = 0; i < NODE_ROUNDS; i++) {
        let tt = process.hrtime.bigint();
        await node.client.call('Node', 'NodePublishVolume', { volume_id: volumeId, staging_target_path: staging, target_path: target, volume_capability: cap, readonly: false, volume_context: vol.volume.volume_context });
        publish.push(ms(tt));
        tt = process.hrtime.bigint();
        await node.client.call('Node', 'NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
        unpublish.push(ms(tt));
      }
      await node.client.call('Node', 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: staging });
      await p.client.call('Controller', 'DeleteVolume', { volume_id: volumeId });
    } finally {
      await stopProcess(node);
      // The node plugin's FUSE server outlives the plugin by design; unmounting ends it.
      spawnSync('umount', ['-l', path.join(nodeDir, 'state', 'mnt', 'default')]);
    }

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
    console.log(`| NodePublishVolume (bind mount), ${NODE_ROUNDS} rounds | ${f2(percentile(publish, 50))} ms | ${f2(percentile(publish, 99))} ms | |`);
    console.log(`| NodeUnpublishVolume | ${f2(percentile(unpublish, 50))} ms | ${f2(percentile(unpublish, 99))} ms | |`);
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
