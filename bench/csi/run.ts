/**
 * bench/csi: the CSI controller over its unix socket, against two floors measured in the same run,
 * interleaved (A B C A B C ...) so the machine's load falls on all three alike:
 *
 *   famfs-csi      the controller process on an emulated device (CreateVolume allocates, records
 *                  and zeroes a 2 MiB famfs file; DeleteVolume removes it)
 *   grpc-js floor  a do-nothing CSI controller on famfs-csi's own gRPC stack (bench/csi/floor-grpcjs.ts):
 *                  what our stack costs per call
 *   Go floor       a do-nothing CSI controller on the CSI spec's Go bindings and grpc-go
 *                  (bench/csi/go-floor, built by scripts/bench-go-floor.sh): what the reference
 *                  stack (csi-driver-host-path's) costs per call
 *
 * Tables: sequential create+delete pairs (p50/p99, pairs/s, server CPU per pair, RssAnon per round)
 * with famfs-csi's ratio to each floor and to csi-driver-host-path's figures quoted in issue 15;
 * 16 pairs in flight; famfs-csi by live-volume count (is a call's cost flat as volumes accumulate?);
 * large zeroing and clones are bench/zero's.
 *
 * The live-volume table runs on a second controller with its own sparse emulated device (room for
 * the largest level, a log long enough for its entries and their delete reserve): the volumes are
 * kept, then pairs are measured on top of them at each level. A level is run only while creates
 * leave the device's memory untouched (its allocated bytes, st_blocks of the tmpfs file): where a
 * create still zeroes its 2 MiB, 100,000 volumes would need 200 GiB of RAM, so the table stops and
 * says so.
 *
 * Run: npm run build && node dist/bench/csi/run.js [--live-only]
 *   BENCH_VOLUMES (1000 sequential pairs per server), BENCH_INFLIGHT (2000 pairs, 16 in flight),
 *   BENCH_LIVE (100,1000,10000,100000 live-volume levels)
 */
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CsiClient } from '../../pkg/csi/client';
import type { CreateVolumeResponse } from '../../pkg/csi/types';
import { cpuSeconds, freshDevice, MiB, percentile, rssBytes, startControllerProcess, stopProcess, type DriverProcess } from '../../testkit/csi-load-process';
import { removeEmulatedDevice } from '../../testkit/emulated-device';

const HOST = '81111111-2222-4333-8444-555555555555';
const N = Number(process.env.BENCH_VOLUMES ?? 1000);
const INFLIGHT_PAIRS = Number(process.env.BENCH_INFLIGHT ?? 2000);
const CONCURRENCY = 16;
const ROUNDS = 4;
const LIVE = (process.env.BENCH_LIVE ?? '100,1000,10000,100000')
  .split(',')
  .map(Number)
  .sort((a, b) => a - b);
/** Pairs measured at each live-volume level. */
const FLAT_PAIRS = 1000;
const ROOT = path.resolve(__dirname, '..', '..', '..');
/** csi-driver-host-path v1.18.0 on this machine, same workload (issue 15). */
const HOSTPATH = { createP50: 0.81, seqPerS: 529, inflightPerS: 394 };
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const f2 = (x: number): string => x.toFixed(2);

interface Server {
  name: string;
  pid: number;
  client: CsiClient;
  stop(): Promise<void>;
}

async function startFloor(name: string, argv: string[], sock: string): Promise<Server> {
  const child: ChildProcess = spawn(argv[0], [...argv.slice(1), `unix://${sock}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const client = new CsiClient(`unix://${sock}`, 60_000);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}: ${err}`);
    try {
      if (fs.existsSync(sock)) {
        await client.call('Identity', 'Probe', {}, 1000);
        break;
      }
    } catch {
      // not up yet: retried until the deadline
    }
    if (Date.now() > deadline) throw new Error(`${name} did not come up: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    name,
    pid: child.pid ?? 0,
    client,
    stop: async () => {
      client.close();
      if (child.exitCode !== null) return;
      const done = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await done;
    },
  };
}

interface Seq {
  create: number[];
  del: number[];
  seconds: number;
  cpu: number;
  rss: number[];
}

async function pairs(s: Server, n: number, prefix: string, out: Seq): Promise<void> {
  const c0 = cpuSeconds(s.pid);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    let t = process.hrtime.bigint();
    const v = await s.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
      name: `${prefix}-${i}`,
      capacity_range: { required_bytes: String(2 * MiB) },
      volume_capabilities: [cap],
    });
    out.create.push(ms(t));
    t = process.hrtime.bigint();
    await s.client.call('Controller', 'DeleteVolume', { volume_id: v.volume.volume_id });
    out.del.push(ms(t));
  }
  out.seconds += ms(t0) / 1000;
  out.cpu += cpuSeconds(s.pid) - c0;
  out.rss.push(rssBytes(s.pid));
}

async function inflight(s: Server, n: number, prefix: string): Promise<{ seconds: number; cpu: number }> {
  const c0 = cpuSeconds(s.pid);
  const t0 = process.hrtime.bigint();
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < n; i = next++) {
      const v = await s.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
        name: `${prefix}-${i}`,
        capacity_range: { required_bytes: String(2 * MiB) },
        volume_capabilities: [cap],
      });
      await s.client.call('Controller', 'DeleteVolume', { volume_id: v.volume.volume_id });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { seconds: ms(t0) / 1000, cpu: cpuSeconds(s.pid) - c0 };
}

async function main(): Promise<void> {
  const devName = `bench-csi-${process.pid}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-csi-'));
  const device = freshDevice(devName, 4096 * MiB, 64 * MiB, HOST);
  const servers: Server[] = [];
  let famfs: DriverProcess | undefined;
  try {
    famfs = await startControllerProcess({ device, dir, hostUuid: HOST });
    const f = famfs;
    servers.push({ name: 'famfs-csi', pid: f.child.pid ?? 0, client: f.client, stop: () => stopProcess(f) });
    servers.push(
      await startFloor('grpc-js floor', [process.execPath, path.join(ROOT, 'dist', 'bench', 'csi', 'floor-grpcjs.js')], path.join(dir, 'floor-js.sock')),
    );
    const go = spawnSync(path.join(ROOT, 'scripts', 'bench-go-floor.sh'), { encoding: 'utf8' });
    let goNote = '';
    if (go.status === 0) servers.push(await startFloor('Go floor', [go.stdout.trim().split('\n').pop() as string], path.join(dir, 'floor-go.sock')));
    else goNote = `Go floor not built: ${go.stderr.trim().split('\n').slice(-2).join(' ')}`;

    // Warm-up (JIT, connections; famfs-csi has far more code to compile than a floor: with 50 pairs
    // its first round measured the compiler), then the rounds, interleaved.
    const seq = new Map(servers.map((s) => [s.name, { create: [], del: [], seconds: 0, cpu: 0, rss: [] }]));
    for (const s of servers) await pairs(s, 500, 'warm', { create: [], del: [], seconds: 0, cpu: 0, rss: [] });
    for (let r = 0; r < ROUNDS; r++) for (const s of servers) await pairs(s, Math.ceil(N / ROUNDS), `seq-${r}`, seq.get(s.name) as Seq);
    const par = new Map<string, { seconds: number; cpu: number }>();
    for (let r = 0; r < 2; r++) {
      for (const s of servers) {
        const x = await inflight(s, Math.ceil(INFLIGHT_PAIRS / 2), `par-${r}`);
        const acc = par.get(s.name) ?? { seconds: 0, cpu: 0 };
        par.set(s.name, { seconds: acc.seconds + x.seconds, cpu: acc.cpu + x.cpu });
      }
    }

    const rowOf = (name: string) => {
      const s = seq.get(name) as Seq;
      const p = par.get(name) as { seconds: number; cpu: number };
      const pairsDone = s.create.length;
      return {
        p50: percentile(s.create, 50),
        p99: percentile(s.create, 99),
        del50: percentile(s.del, 50),
        seqRate: pairsDone / s.seconds,
        parRate: (2 * Math.ceil(INFLIGHT_PAIRS / 2)) / p.seconds,
        cpuPair: (s.cpu / pairsDone) * 1000,
        rss: s.rss,
      };
    };
    const rows = new Map(servers.map((s) => [s.name, rowOf(s.name)]));
    const me = rows.get('famfs-csi') as ReturnType<typeof rowOf>;
    console.log(
      `\nbench/csi — CreateVolume(2 MiB)+DeleteVolume over unix sockets, ${os.cpus().length} CPUs, load average ${os.loadavg()[0]?.toFixed(1)}; ${N} sequential pairs per server in ${ROUNDS} interleaved rounds, ${INFLIGHT_PAIRS} pairs ${CONCURRENCY} in flight\n`,
    );
    console.log('| server | create p50 | create p99 | delete p50 | seq pairs/s | 16-in-flight pairs/s | server CPU per pair | RssAnon per round |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---|');
    for (const [name, r] of rows) {
      console.log(
        `| ${name} | ${f2(r.p50)} ms | ${f2(r.p99)} ms | ${f2(r.del50)} ms | ${r.seqRate.toFixed(0)} | ${r.parRate.toFixed(0)} | ${f2(r.cpuPair)} ms | ${r.rss.map((x) => (x / MiB).toFixed(0)).join('→')} MiB |`,
      );
    }
    console.log(
      `| csi-driver-host-path v1.18.0 (issue 15, not runnable here) | ${f2(HOSTPATH.createP50)} ms | | | ${HOSTPATH.seqPerS} | ${HOSTPATH.inflightPerS} | | |`,
    );
    if (goNote) console.log(`\n${goNote}`);
    console.log('\n| famfs-csi ratio | create p50 | seq pairs/s | 16-in-flight pairs/s | CPU per pair | target |');
    console.log('|---|---:|---:|---:|---:|---|');
    for (const [name, r] of rows) {
      if (name === 'famfs-csi') continue;
      console.log(
        `| to the ${name} | ${(me.p50 / r.p50).toFixed(2)}× | ${(me.seqRate / r.seqRate).toFixed(2)}× | ${(me.parRate / r.parRate).toFixed(2)}× | ${(me.cpuPair / r.cpuPair).toFixed(2)}× | grpc-js: within 1.3× |`,
      );
    }
    console.log(
      `| to csi-driver-host-path's figures | ${(me.p50 / HOSTPATH.createP50).toFixed(2)}× | ${(me.seqRate / HOSTPATH.seqPerS).toFixed(2)}× | ${(me.parRate / HOSTPATH.inflightPerS).toFixed(2)}× | | ≥ 2× the rates, create p50 ≤ 0.4 ms |`,
    );
  } finally {
    for (const s of servers) await s.stop();
    if (famfs !== undefined && servers.length === 0) await stopProcess(famfs);
    removeEmulatedDevice(devName);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  await flatTable();
}

/** Log length (a power of two) for `live` volumes: two entries each, as many kept for their deletes, and room to churn. */
function logLenFor(live: number): number {
  const bytes = (4 * live + 65536) * 544;
  let len = 64 * MiB;
  while (len < bytes) len *= 2;
  return len;
}

/** Bytes of memory the emulated device's file holds (tmpfs allocates a page when it is first written). */
function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

/**
 * famfs-csi by live-volume count: one controller on a fresh sparse device; volumes are created (16
 * in flight) up to each level and kept, then FLAT_PAIRS create+delete pairs are measured on top.
 */
async function flatTable(): Promise<void> {
  const devName = `bench-csi-flat-${process.pid}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-csi-flat-'));
  const top = LIVE[LIVE.length - 1] ?? 0;
  const device = freshDevice(devName, (top + 4096) * 2 * MiB, logLenFor(top), HOST);
  let ctl: DriverProcess | undefined;
  const rows: { live: number; p50: number; p99: number; cpuMs: number; rss: number; deviceMiB: number; fillS: number }[] = [];
  let stopped = '';
  try {
    ctl = await startControllerProcess({ device, dir, hostUuid: HOST });
    const c = ctl;
    const pid = c.child.pid ?? 0;
    const s: Server = { name: 'famfs-csi', pid, client: c.client, stop: () => stopProcess(c) };
    // Steady state before the first level: the code warm (JIT), the state image past its first growth.
    await pairs(s, 1000, 'warm', { create: [], del: [], seconds: 0, cpu: 0, rss: [] });
    let live = 0;
    for (const level of LIVE) {
      const before = allocatedBytes(device);
      const t0 = process.hrtime.bigint();
      let next = live;
      const worker = async (): Promise<void> => {
        for (let i = next++; i < level; i = next++) {
          await c.client.call('Controller', 'CreateVolume', {
            name: `live-${i}`,
            capacity_range: { required_bytes: String(2 * MiB) },
            volume_capabilities: [cap],
          });
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const fillS = ms(t0) / 1000;
      const added = level - live;
      live = level;
      const x: Seq = { create: [], del: [], seconds: 0, cpu: 0, rss: [] };
      await pairs(s, FLAT_PAIRS, `flat-${level}`, x);
      rows.push({
        live: level,
        p50: percentile(x.create, 50),
        p99: percentile(x.create, 99),
        cpuMs: (x.cpu / FLAT_PAIRS) * 1000,
        rss: x.rss[0] ?? 0,
        deviceMiB: allocatedBytes(device) / MiB,
        fillS,
      });
      // A create that touches its memory (zeroing at create) would fill RAM long before 100,000
      // volumes: stop while the next level still fits.
      const perCreate = added > 0 ? (allocatedBytes(device) - before) / added : 0;
      const nextLevel = LIVE[LIVE.indexOf(level) + 1];
      if (nextLevel !== undefined && perCreate * (nextLevel - level) > os.freemem() / 4) {
        stopped = `levels above ${level} not run: each create touched ${(perCreate / MiB).toFixed(2)} MiB of the device (zeroing at create), ${nextLevel} volumes would need ${((perCreate * nextLevel) / 2 ** 30).toFixed(0)} GiB of RAM`;
        break;
      }
    }
  } finally {
    if (ctl !== undefined) await stopProcess(ctl);
    removeEmulatedDevice(devName);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(
    `\n| live volumes (famfs-csi, sparse device, load average ${os.loadavg()[0]?.toFixed(1)}) | create p50 | create p99 | server CPU per pair | RssAnon | device memory touched | p50 / p50 at the fewest | CPU / CPU at the fewest |`,
  );
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of rows)
    console.log(
      `| ${x.live} | ${f2(x.p50)} ms | ${f2(x.p99)} ms | ${f2(x.cpuMs)} ms | ${(x.rss / MiB).toFixed(0)} MiB | ${x.deviceMiB.toFixed(0)} MiB | ${(x.p50 / (rows[0]?.p50 ?? 1)).toFixed(2)} | ${(x.cpuMs / (rows[0]?.cpuMs ?? 1)).toFixed(2)} |`,
    );
  console.log(`(target: within 1.3× of each other, RssAnon ≤ 100 MiB at 10,000 volumes; ${FLAT_PAIRS} pairs per level, volumes created 16 in flight)`);
  if (stopped) console.log(stopped);
}

// --live-only: just the live-volume table (its levels take most of this bench's time).
(process.argv.includes('--live-only') ? flatTable() : main()).catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
