/**
 * famfs FUSE server benchmark: sequential I/O through the mount against a raw memcpy from the
 * same mapping, measured in the same run.
 *
 *   node dist/bench/fuse/run.js [--file-mib 1024] [--runtime 1] [--repeat 1] [--cold-reps 3] [--direct-reps 5] [--shapes]
 *                               [--only cold|direct|paths] [--compare-addon PATH] [--json PATH]
 *
 * Needs root, /dev/fuse and fio (apt-get install fio). Prints three tables:
 *  1. cold reads of the whole file (buffered read and mmap, what a model loader does first) by
 *     kernel readahead and by server shape (worker threads, one fd or one per thread), each sample
 *     between two single-thread memcpy runs of the same memory: median and spread of the ratios
 *     over --cold-reps interleaved rounds, and the CPU each costs per GB next to memcpy's;
 *  2. 1 MiB direct read and direct write with one job (the issue 15 targets): --direct-reps
 *     interleaved rounds after an untimed warm-up pass, each round opening with single-thread
 *     memcpy out of and into the same memory, median [min-max] of the ratios, the load of every
 *     round, and the CPU each costs per GB next to memcpy's; --compare-addon adds the same rows
 *     served by a second server running another build of the native addon (A/B in the same rounds);
 *  3. every other path (direct with 4 jobs and 4 KiB, warm cached, warm mmap, writes) at the
 *     default readahead, as GB/s and ratios to the raw memcpy with as many threads as fio jobs.
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { openDevice } from '../../pkg/device/index.js';
import { FamfsFs } from '../../pkg/famfs/fs.js';
import { forEachDeviceRun } from '../../pkg/famfs/fmap.js';
import { controlRequest } from '../../pkg/fuse/control-client.js';
import { DEFAULT_READAHEAD_KB, readaheadPath } from '../../pkg/fuse/readahead.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const FUSED = path.join(__dirname, '..', '..', 'cmd', 'famfs-fused.js');
/** Readahead windows the cold table compares (KiB); the default is always one of them. */
const READAHEADS_KB = [128, 1024, 4096];

interface Args {
  fileMib: number;
  runtime: number;
  /** Runs per row of the second table; the best is kept (the machine may be shared with other work). */
  repeat: number;
  /** Interleaved rounds of the cold table (median and spread). */
  coldReps: number;
  /** Interleaved rounds of the direct table. */
  directReps: number;
  /** Also compare 2 and 8 worker threads in the cold table. */
  shapes: boolean;
  /** Print only one table: 'cold' (the first), 'direct' (the second) or 'paths' (the third). */
  only?: 'cold' | 'direct' | 'paths';
  /** Another build's famfs_native.node: the direct table also measures a server running it. */
  compareAddon?: string;
  json?: string;
}

function parseArgs(): Args {
  const a: Args = { fileMib: 1024, runtime: 1, repeat: 1, coldReps: 3, directReps: 5, shapes: false };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--file-mib') a.fileMib = Number(argv[++i]);
    else if (k === '--runtime') a.runtime = Number(argv[++i]);
    else if (k === '--json') a.json = argv[++i];
    else if (k === '--repeat') a.repeat = Math.max(1, Number(argv[++i]));
    else if (k === '--cold-reps') a.coldReps = Math.max(1, Number(argv[++i]));
    else if (k === '--direct-reps') a.directReps = Math.max(1, Number(argv[++i]));
    else if (k === '--compare-addon') a.compareAddon = path.resolve(argv[++i]);
    else if (k === '--shapes') a.shapes = true;
    else if (k === '--only') {
      const v = argv[++i];
      if (v !== 'cold' && v !== 'direct' && v !== 'paths') throw new Error(`--only takes cold, direct or paths, not ${v}`);
      a.only = v;
    } else if (k === '--quick') {
      a.fileMib = 256;
      a.runtime = 1;
    } else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

interface Row {
  what: string;
  bs: string;
  jobs: number;
  state: 'cold' | 'warm';
  gbps: number;
  ratio: number;
  cpuPerGb: number;
}

const TICK_SECONDS = 1 / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim() || '100');

class Daemon {
  private constructor(
    readonly proc: ChildProcess,
    readonly mountpoint: string,
    readonly socket: string,
  ) {}

  static async start(device: string, dir: string, name: string, extra: string[], addon?: string): Promise<Daemon> {
    const mountpoint = path.join(dir, `mnt-${name}`);
    const socket = path.join(dir, `ctl-${name}`, 'sock');
    fs.mkdirSync(mountpoint, { recursive: true });
    const proc = spawn(process.execPath, [FUSED, device, mountpoint, '--foreground', '--control-socket', socket, '--log-level', 'warn', ...extra], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: addon === undefined ? process.env : { ...process.env, FAMFS_NATIVE_ADDON: addon },
    });
    for (let i = 0; i < 300; i++) {
      try {
        if ((await controlRequest(socket, { op: 'status' }, 500)).ok) return new Daemon(proc, mountpoint, socket);
      } catch {
        /* starting */
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill('SIGKILL');
    throw new Error(`famfs-fused ${name} did not start`);
  }

  async invalidate(rel: string): Promise<void> {
    const r = await controlRequest(this.socket, { op: 'invalidate', path: rel });
    if (!r.ok) throw new Error(`invalidate ${rel}: ${r.error}`);
  }

  /** CPU seconds (user + system, every thread) the server has used so far. */
  cpuSeconds(): number {
    const stat = fs.readFileSync(`/proc/${this.proc.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14 and 15 of proc(5) (utime, stime) are 12 and 13 after the state field
    return (Number(f[11]) + Number(f[12])) * TICK_SECONDS;
  }

  async stop(): Promise<void> {
    const done = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await done;
  }
}

interface FioJob {
  file: string;
  rw: 'read' | 'write';
  bs: string;
  jobs: number;
  direct: boolean;
  engine?: 'psync' | 'mmap';
  fileBytes: number;
  /** 0: one pass over the file (cold); otherwise time-based seconds. */
  runtime: number;
  /** Where the file starts inside `file` (reading the device itself). */
  baseOffset?: number;
}

interface FioResult {
  /** bytes/s, aggregate over jobs */
  bps: number;
  /** CPU seconds fio's jobs used (user + system: page faults and page-cache copies count here) */
  cpuSeconds: number;
  bytes: number;
}

function fioRun(j: FioJob): FioResult {
  const per = Math.floor(j.fileBytes / j.jobs / MIB) * MIB;
  const args = [
    '--output-format=json',
    '--name=famfs',
    `--filename=${j.file}`,
    `--rw=${j.rw}`,
    `--bs=${j.bs}`,
    `--numjobs=${j.jobs}`,
    '--thread',
    '--group_reporting',
    `--direct=${j.direct ? 1 : 0}`,
    `--ioengine=${j.engine ?? 'psync'}`,
    `--size=${per}`,
    `--offset=${j.baseOffset ?? 0}`,
    `--offset_increment=${per}`,
    '--fallocate=none',
    '--invalidate=0',
    '--allow_file_create=0',
  ];
  if (j.runtime > 0) args.push('--time_based', `--runtime=${j.runtime}`);
  const out = execFileSync('fio', args, { maxBuffer: 64 * MIB }).toString();
  type Dir = { bw_bytes: number; io_bytes: number };
  const parsed = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { read: Dir; write: Dir; usr_cpu: number; sys_cpu: number; job_runtime: number }[] };
  const job = parsed.jobs[0];
  const d = j.rw === 'read' ? job.read : job.write;
  return { bps: d.bw_bytes, bytes: d.io_bytes, cpuSeconds: ((job.usr_cpu + job.sys_cpu) / 100) * (job.job_runtime / 1000) * j.jobs };
}

interface MemcpyResult {
  bytesPerSec: number;
  cpuSeconds: number;
}

/**
 * The physical limit: C++ threads memcpy'ing 1 MiB pieces out of a mapping of the same memory
 * (`into`: from a 1 MiB buffer into it, overwriting it: the store side a write has to pay).
 */
function rawMemcpy(device: string, offset: number, length: number, threads: number, passes: number, into = false): MemcpyResult {
  // The bench-only addon (binding.gyp target famfs_bench), built next to the production one.
  const file = path.join(__dirname, '..', '..', '..', 'build', 'Release', 'famfs_bench.node');
  if (!fs.existsSync(file)) throw new Error(`${file} is missing (build it: node native/build.js --force)`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const addon = require(file) as {
    memcpyBandwidth?: (path: string, off: number, len: number, chunk: number, threads: number, passes: number, into: boolean) => unknown;
  };
  if (typeof addon.memcpyBandwidth !== 'function') throw new Error(`${file} has no memcpyBandwidth (stale build: node native/build.js --force)`);
  const r = addon.memcpyBandwidth(device, offset, length, MIB, threads, passes, into) as MemcpyResult;
  if (typeof r !== 'object' || typeof r.cpuSeconds !== 'number')
    throw new Error(`${file} is stale (memcpyBandwidth returns no CPU time): node native/build.js --force`);
  return r;
}

function gb(bps: number): string {
  return (bps / 1e9).toFixed(2);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** median [min-max] */
function spread(xs: number[], d: number, unit = ''): string {
  return `${median(xs).toFixed(d)}${unit} [${Math.min(...xs).toFixed(d)}-${Math.max(...xs).toFixed(d)}]`;
}

function kbLabel(kb: number): string {
  return kb >= 1024 ? `${kb / 1024} MiB` : `${kb} KiB`;
}

/** One row of the cold table: a server shape and a readahead window. */
interface ColdCase {
  label: string;
  daemon: Daemon;
  readaheadKb: number;
  /** GB/s of each round, cached read and mmap read */
  read: number[];
  mmap: number[];
  /** ratio of each round to the memcpy runs either side of it */
  readRatio: number[];
  mmapRatio: number[];
  /** CPU seconds per GB (reader + server) of each round */
  readCpu: number[];
  mmapCpu: number[];
}

/** One row of the direct table, a sample per round. */
interface DirectCase {
  label: string;
  rw: 'read' | 'write';
  daemon: Daemon;
  gbps: number[];
  /** ratio to memcpy out of the file's memory (the issue's target) and into it */
  ratioFrom: number[];
  ratioInto: number[];
  /** CPU seconds per GB, fio + server */
  cpu: number[];
}

async function main(): Promise<void> {
  const args = parseArgs();
  try {
    execFileSync('fio', ['--version']);
  } catch {
    throw new Error('fio is required: apt-get install fio');
  }
  const fileBytes = args.fileMib * MIB;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-fuse-bench-'));
  const devPath = `/dev/shm/famfs-fusebench-${process.pid}`;
  const dev = openDevice(devPath, { create: { size: Math.max(8 * GIB, 2 * fileBytes + GIB) } });
  const daemons: Daemon[] = [];
  const loads: number[] = [os.loadavg()[0]];
  try {
    const famfs = FamfsFs.mkfs(dev, { systemUuid: '00000000-0000-4000-8000-00000000be9c', devicePath: devPath });
    const file = famfs.creat('bench.bin', fileBytes, { mode: 0o666 });
    // Fill the memory (tmpfs allocates pages on first touch) with non-zero bytes.
    const pattern = Buffer.alloc(4 * MIB, 0x5a);
    let devOffset = 0;
    forEachDeviceRun(file.fmap, 0, file.size, (off, fileOff, len) => {
      if (fileOff === 0) devOffset = off;
      for (let p = 0; p < len; p += pattern.length) dev.write(off + p, pattern.subarray(0, Math.min(pattern.length, len - p)));
    });
    dev.close();
    if (file.fmap.kind !== 'simple' || file.fmap.extents.length !== 1) throw new Error('bench file should be one extent');

    // The memcpy reference copies the file's first 256 MiB (a warm-up pass, then two timed ones):
    // far past any CPU cache, so the same GB/s as the whole file, in a quarter of the time.
    const memcpyBytes = Math.min(fileBytes, 256 * MIB);
    const zc = await Daemon.start(devPath, dir, 'zc', []);
    daemons.push(zc);
    const f = (d: Daemon) => path.join(d.mountpoint, 'bench.bin');

    // ---- table 1: cold reads by readahead and server shape, interleaved with memcpy
    // Server shapes next to the default (2 x CPUs worker threads, a cloned fd each): fewer and
    // more workers, and all workers on the one session fd (the chart's fd-deposit setup).
    // The chart runs the one-fd shape; the worker counts moved the medians less than the spread
    // (docs/fuse.md) and are measured with --shapes.
    const shapes: { label: string; extra: string[] }[] = [
      ...(args.shapes
        ? [
            { label: '2 workers', extra: ['--max-threads', '2'] },
            { label: '8 workers', extra: ['--max-threads', '8'] },
          ]
        : []),
      { label: 'one fd (fd deposit)', extra: ['--fd-deposit', path.join(dir, 'no-holder.sock'), '--log-level', 'error'] },
    ];
    const cases: ColdCase[] = [];
    const newCase = (label: string, daemon: Daemon, readaheadKb: number): ColdCase => ({
      label,
      daemon,
      readaheadKb,
      read: [],
      mmap: [],
      readRatio: [],
      mmapRatio: [],
      readCpu: [],
      mmapCpu: [],
    });
    const doCold = args.only === undefined || args.only === 'cold';
    const doDirect = args.only === undefined || args.only === 'direct';
    const doPaths = args.only === undefined || args.only === 'paths';
    for (const kb of doCold ? READAHEADS_KB : []) cases.push(newCase(`default server, readahead ${kbLabel(kb)}`, zc, kb));
    for (const s of doCold ? shapes : []) {
      const d = await Daemon.start(devPath, dir, s.label.replace(/[^a-z0-9]+/g, '-'), s.extra);
      daemons.push(d);
      cases.push(newCase(`${s.label}, readahead ${kbLabel(DEFAULT_READAHEAD_KB)}`, d, DEFAULT_READAHEAD_KB));
    }
    const memcpy1: MemcpyResult[] = [];
    // Two passes: about 0.1 s of copying on a quiet machine, long enough for the clock.
    const memcpy = () => {
      const r = rawMemcpy(devPath, devOffset, memcpyBytes, 1, 2);
      memcpy1.push(r);
      return r.bytesPerSec;
    };
    const coldRun = async (c: ColdCase, engine: 'psync' | 'mmap'): Promise<{ bps: number; cpuPerGb: number }> => {
      fs.writeFileSync(readaheadPath(c.daemon.mountpoint), `${c.readaheadKb}\n`);
      await c.daemon.invalidate('bench.bin');
      const cpu0 = c.daemon.cpuSeconds();
      const r = fioRun({ file: f(c.daemon), rw: 'read', bs: '1M', jobs: 1, direct: false, engine, fileBytes, runtime: 0 });
      const cpu = r.cpuSeconds + c.daemon.cpuSeconds() - cpu0;
      return { bps: r.bps, cpuPerGb: cpu / (r.bytes / 1e9) };
    };
    const coldT0 = Date.now();
    let before = doCold ? memcpy() : 0;
    for (let round = 0; round < args.coldReps; round++) {
      // the order rotates each round so no case always follows the same neighbour
      for (let i = 0; i < cases.length; i++) {
        const c = cases[(i + round) % cases.length];
        const rd = await coldRun(c, 'psync');
        const mm = await coldRun(c, 'mmap');
        const after = memcpy();
        const ref = (before + after) / 2;
        before = after;
        c.read.push(rd.bps / 1e9);
        c.mmap.push(mm.bps / 1e9);
        c.readRatio.push(rd.bps / ref);
        c.mmapRatio.push(mm.bps / ref);
        c.readCpu.push(rd.cpuPerGb);
        c.mmapCpu.push(mm.cpuPerGb);
        process.stderr.write(
          `cold ${c.label.padEnd(40)} read ${gb(rd.bps)} mmap ${gb(mm.bps)} GB/s, memcpy ${gb(ref)} GB/s, load ${os.loadavg()[0].toFixed(1)}\n`,
        );
      }
      loads.push(os.loadavg()[0]);
    }
    for (const d of daemons.slice(1)) await d.stop();
    daemons.splice(1);
    fs.writeFileSync(readaheadPath(zc.mountpoint), `${DEFAULT_READAHEAD_KB}\n`);
    const coldSeconds = (Date.now() - coldT0) / 1000;
    const memcpyCpuPerGb = median(memcpy1.map((m) => m.cpuSeconds / ((2 * memcpyBytes) / 1e9)));
    const memcpyGbps = memcpy1.map((m) => m.bytesPerSec / 1e9);

    // ---- table 2: 1 MiB direct read and write with one job (the targets), interleaved rounds
    // Every round opens with a single-thread memcpy out of the file's memory and one into it (the
    // whole file: same 4 KiB tmpfs pages, touched, mapped the same way), and each sample's ratios are to the mean of
    // its round's and the next round's runs. Writes are compared with both: a write has to store
    // every byte into the device (the "into" copy), while the issue's target is stated against the
    // copy out of it. The CPU column is the one load hardly moves: fio's and the server's CPU
    // seconds per GB, next to memcpy's.
    const other = doDirect && args.compareAddon !== undefined ? await Daemon.start(devPath, dir, 'other', [], args.compareAddon) : undefined;
    if (other) daemons.push(other);
    const direct: DirectCase[] = [];
    for (const [d, tag] of doDirect ? ([[zc, ''], ...(other ? [[other, ', other addon']] : [])] as [Daemon, string][]) : []) {
      direct.push({ label: `read direct (zero-copy reply${tag})`, rw: 'read', daemon: d, gbps: [], ratioFrom: [], ratioInto: [], cpu: [] });
      direct.push({ label: `write direct${tag ? ` (${tag.slice(2)})` : ''}`, rw: 'write', daemon: d, gbps: [], ratioFrom: [], ratioInto: [], cpu: [] });
    }
    const memFrom: MemcpyResult[] = [];
    const memInto: MemcpyResult[] = [];
    const directLoads: number[] = [];
    let directSeconds = 0;
    if (doDirect) {
      const t0 = Date.now();
      // Untimed warm-up: one pass of each over the whole file, so no sample pays a first touch (the
      // server's page-table entries for the file, its worker threads and their buffers).
      for (const c of direct) fioRun({ file: f(c.daemon), rw: c.rw, bs: '1M', jobs: 1, direct: true, fileBytes, runtime: 0 });
      // over the whole file, as the time-based fio runs cycle over it
      const memcpyPair = () => {
        memFrom.push(rawMemcpy(devPath, devOffset, fileBytes, 1, 2));
        memInto.push(rawMemcpy(devPath, devOffset, fileBytes, 1, 2, true));
      };
      memcpyPair();
      for (let round = 0; round < args.directReps; round++) {
        directLoads.push(os.loadavg()[0]);
        const samples: { c: DirectCase; bps: number; cpuPerGb: number }[] = [];
        // the order rotates so no path always runs first after the memcpy pair
        for (let i = 0; i < direct.length; i++) {
          const c = direct[(i + round) % direct.length];
          const cpu0 = c.daemon.cpuSeconds();
          const r = fioRun({ file: f(c.daemon), rw: c.rw, bs: '1M', jobs: 1, direct: true, fileBytes, runtime: args.runtime });
          samples.push({ c, bps: r.bps, cpuPerGb: (r.cpuSeconds + c.daemon.cpuSeconds() - cpu0) / (r.bytes / 1e9) });
        }
        memcpyPair();
        const n = memFrom.length;
        const from = (memFrom[n - 2].bytesPerSec + memFrom[n - 1].bytesPerSec) / 2;
        const into = (memInto[n - 2].bytesPerSec + memInto[n - 1].bytesPerSec) / 2;
        for (const { c, bps, cpuPerGb } of samples) {
          c.gbps.push(bps / 1e9);
          c.ratioFrom.push(bps / from);
          c.ratioInto.push(bps / into);
          c.cpu.push(cpuPerGb);
          process.stderr.write(
            `direct ${c.label.padEnd(30)} ${gb(bps)} GB/s, memcpy out ${gb(from)} into ${gb(into)} GB/s, ${cpuPerGb.toFixed(3)} CPU s/GB, load ${os.loadavg()[0].toFixed(1)}\n`,
          );
        }
      }
      directLoads.push(os.loadavg()[0]);
      loads.push(...directLoads);
      directSeconds = (Date.now() - t0) / 1000;
      if (other) {
        await other.stop();
        daemons.splice(daemons.indexOf(other), 1);
      }
    }
    const memCpuPerGb = (ms: MemcpyResult[]) => ms.map((m) => m.cpuSeconds / ((2 * fileBytes) / 1e9));

    // ---- table 3: every other path at the default readahead
    // Each row sits between two memcpy runs of the same memory with as many threads as fio jobs
    // (the ratio is to their mean): on a shared machine a reference taken minutes away compares
    // different loads.
    const gc = doPaths ? await Daemon.start(devPath, dir, 'gc', ['--copy-reads']) : zc;
    if (gc !== zc) daemons.push(gc);
    const rows: Row[] = [];
    const refs = new Map<number, number[]>();
    let lastRef: { jobs: number; bps: number } | undefined;
    const rt = args.runtime;
    const ra = kbLabel(DEFAULT_READAHEAD_KB);
    /** Measures one row: best of --repeat fio runs (a cold one from dropped caches every time). */
    const add = async (what: string, daemon: Daemon | undefined, state: 'cold' | 'warm', job: FioJob): Promise<void> => {
      const ref = () => rawMemcpy(devPath, devOffset, memcpyBytes, job.jobs, 2).bytesPerSec;
      const before = lastRef?.jobs === job.jobs ? lastRef.bps : ref();
      let top: FioResult | undefined;
      let cpu = 0;
      for (let i = 0; i < args.repeat; i++) {
        if (state === 'cold') await zc.invalidate('bench.bin');
        const cpu0 = daemon?.cpuSeconds() ?? 0;
        const r = fioRun(job);
        if (top === undefined || r.bps > top.bps) {
          top = r;
          cpu = r.cpuSeconds + (daemon ? daemon.cpuSeconds() - cpu0 : 0);
        }
      }
      const after = ref();
      lastRef = { jobs: job.jobs, bps: after };
      const mean = (before + after) / 2;
      refs.set(job.jobs, [...(refs.get(job.jobs) ?? []), before / 1e9, after / 1e9]);
      const r = top as FioResult;
      rows.push({ what, bs: job.bs, jobs: job.jobs, state, gbps: r.bps / 1e9, ratio: r.bps / mean, cpuPerGb: cpu / (r.bytes / 1e9) });
      process.stderr.write(`${what.padEnd(34)} ${job.bs.padStart(4)} x${job.jobs} ${state}: ${gb(r.bps)} GB/s, memcpy ${gb(mean)} GB/s\n`);
    };
    const on = (d: Daemon) => ({ file: f(d), fileBytes });

    for (const jobs of doPaths ? [1, 4] : []) {
      // direct I/O reads (O_DIRECT through FUSE: every read is a request answered from the
      // mapping; the page cache is never involved, so there is no cold/warm difference).
      // 1 MiB with one job: the direct table.
      for (const bs of ['1M', '4k']) {
        if (!(jobs === 1 && bs === '1M' && doDirect))
          await add('read direct (zero-copy reply)', zc, 'warm', { ...on(zc), rw: 'read', bs, jobs, direct: true, runtime: rt });
        // the guarded copy (--copy-reads) differs from zero-copy in the copy, which 4 KiB reads hardly have
        if (bs === '1M') await add('read direct (guarded copy reply)', gc, 'warm', { ...on(gc), rw: 'read', bs, jobs, direct: true, runtime: rt });
      }
      // buffered reads through the page cache; 1 job cold is the first table
      if (jobs > 1) await add(`read cached (readahead ${ra})`, zc, 'cold', { ...on(zc), rw: 'read', bs: '1M', jobs, direct: false, runtime: 0 });
      for (const bs of ['1M', '4k']) await add('read cached', zc, 'warm', { ...on(zc), rw: 'read', bs, jobs, direct: false, runtime: rt });
      // the cold run leaves the whole file cached again for the warm rows
      if (jobs > 1) await add(`mmap read (readahead ${ra})`, zc, 'cold', { ...on(zc), rw: 'read', bs: '1M', jobs, direct: false, engine: 'mmap', runtime: 0 });
      // mmap reads (warm: the page cache holds the file), next to fio's own mmap engine on the
      // device file itself: the exact copy loop and page faults of the row, minus FUSE
      await add('mmap read', zc, 'warm', { ...on(zc), rw: 'read', bs: '1M', jobs, direct: false, engine: 'mmap', runtime: rt });
      await add('baseline: fio mmap of the device', undefined, 'warm', {
        file: devPath,
        fileBytes,
        baseOffset: devOffset,
        rw: 'read',
        bs: '1M',
        jobs,
        direct: false,
        engine: 'mmap',
        runtime: rt,
      });
      // writes: direct, and buffered (write-through; no writeback cache). The reads above already
      // ran every worker thread and the memory was filled before: nothing here is a first touch.
      for (const bs of ['1M', '4k']) {
        if (!(jobs === 1 && bs === '1M' && doDirect)) await add('write direct', zc, 'warm', { ...on(zc), rw: 'write', bs, jobs, direct: true, runtime: rt });
        await add('write cached (write-through)', zc, 'warm', { ...on(zc), rw: 'write', bs, jobs, direct: false, runtime: rt });
      }
    }
    loads.push(os.loadavg()[0]);
    const lines: string[] = [];
    lines.push(
      `famfs FUSE bench: ${args.fileMib} MiB file on ${devPath}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), kernel ${os.release()}, ` +
        `load average ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)} during the run`,
    );
    if (doCold) {
      lines.push('');
      lines.push(
        `Cold read of the whole file, 1 reader, 1 MiB reads (page cache dropped before each): median [min-max] of ${args.coldReps} interleaved rounds (${coldSeconds.toFixed(0)} s). ` +
          `Ratio: to the mean of the single-thread memcpy runs of the same memory just before and after each sample ` +
          `(memcpy median ${median(memcpyGbps).toFixed(2)} [${Math.min(...memcpyGbps).toFixed(2)}-${Math.max(...memcpyGbps).toFixed(2)}] GB/s). ` +
          `CPU: reader + server CPU seconds per GB (memcpy: ${memcpyCpuPerGb.toFixed(3)}); a loaded machine stretches wall time, not CPU. Target >= 0.2x.`,
      );
      lines.push('');
      lines.push('| server, readahead | cached read GB/s | ratio | CPU s/GB | mmap read GB/s | ratio | CPU s/GB |');
      lines.push('|---|---:|---:|---:|---:|---:|---:|');
      for (const c of cases) {
        const isDefault = c.daemon === zc && c.readaheadKb === DEFAULT_READAHEAD_KB;
        lines.push(
          `| ${c.label}${isDefault ? ' (default)' : ''} | ${spread(c.read, 2)} | ${spread(c.readRatio, 2, 'x')} | ${median(c.readCpu).toFixed(2)} | ` +
            `${spread(c.mmap, 2)} | ${spread(c.mmapRatio, 2, 'x')} | ${median(c.mmapCpu).toFixed(2)} |`,
        );
      }
    }
    if (doDirect) {
      const fromGbps = memFrom.map((m) => m.bytesPerSec / 1e9);
      const intoGbps = memInto.map((m) => m.bytesPerSec / 1e9);
      const fromCpu = median(memCpuPerGb(memFrom));
      lines.push('');
      lines.push(
        `Direct I/O, 1 job, 1 MiB requests: median [min-max] of ${args.directReps} interleaved rounds of ${args.runtime} s after an untimed warm-up pass ` +
          `(${directSeconds.toFixed(0)} s; load average by round ${directLoads.map((l) => l.toFixed(1)).join(', ')}). ` +
          `Ratios: to the mean of the single-thread memcpy runs of the same memory opening the sample's round and the next: ` +
          `out of the memory (${spread(fromGbps, 2)} GB/s, ${fromCpu.toFixed(3)} CPU s/GB) and into it (${spread(intoGbps, 2)} GB/s, ` +
          `${median(memCpuPerGb(memInto)).toFixed(3)} CPU s/GB). CPU: fio + server CPU seconds per GB; CPU ratio: memcpy out's CPU per GB over the row's ` +
          `(what load hardly moves). Targets (ratio to memcpy out): direct read >= 0.35x, direct write >= 0.3x.` +
          (args.compareAddon ? ` "other addon": a second server on the same device running ${args.compareAddon}.` : ''),
      );
      lines.push('');
      lines.push('| path | GB/s | ratio to memcpy out | ratio to memcpy into | CPU s/GB | CPU ratio |');
      lines.push('|---|---:|---:|---:|---:|---:|');
      for (const c of direct)
        lines.push(
          `| ${c.label} | ${spread(c.gbps, 2)} | ${spread(c.ratioFrom, 2, 'x')} | ${spread(c.ratioInto, 2, 'x')} | ${spread(c.cpu, 3)} | ` +
            `${(fromCpu / median(c.cpu)).toFixed(2)}x |`,
        );
    }
    if (doPaths) {
      lines.push('');
      const refText = [1, 4].map((j) => `${j} thread${j > 1 ? 's' : ''} ${spread(refs.get(j) ?? [0], 2)}`).join(', ');
      lines.push(
        `Other paths, default readahead ${ra}, best of ${args.repeat}, ${rt} s per time-based row. Ratio: to the mean of the memcpy runs of the same memory with as many threads as fio jobs ` +
          `just before and after the row (GB/s median [min-max]: ${refText}). CPU: fio + server CPU seconds per GB. ` +
          `Target: warm mmap (1 job) >= 0.9x; the direct targets are in the direct table.`,
      );
      lines.push('');
      lines.push('| path | bs | jobs | state | GB/s | ratio | CPU s/GB |');
      lines.push('|---|---:|---:|---|---:|---:|---:|');
      for (const r of rows)
        lines.push(`| ${r.what} | ${r.bs} | ${r.jobs} | ${r.state} | ${r.gbps.toFixed(2)} | ${r.ratio.toFixed(2)}x | ${r.cpuPerGb.toFixed(2)} |`);
    }
    process.stdout.write(lines.join('\n') + '\n');
    if (args.json)
      fs.writeFileSync(
        args.json,
        JSON.stringify(
          {
            rows,
            cold: cases.map(({ daemon: _d, ...c }) => c),
            direct: direct.map(({ daemon: _d, ...c }) => c),
            memcpyOut: memFrom,
            memcpyInto: memInto,
            loads,
          },
          null,
          2,
        ),
      );
  } finally {
    for (const d of daemons) await d.stop().catch(() => undefined);
    fs.rmSync(devPath, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
