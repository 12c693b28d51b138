/**
 * The `famfs` command line: mkfs, mkdir, creat, cp, ls, fsck, rm, compact, verify, flush, hosts.
 *
 * Exit codes: 0 success; 1 the operation failed (the message says why and what to do);
 * 2 bad usage (nothing was written); 3 a check found problems (fsck not clean, verify mismatch).
 */
import { Command, CommanderError } from 'commander';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { SingleBar } from 'cli-progress';
import { DaxDevice, DeviceError, openDevice } from '../device';
import {
  ALLOC_UNIT,
  FamfsError,
  FamfsFs,
  FAMFS_CSI_EXT2_VERSION,
  FileNode,
  fmapExtents,
  flushFile,
  invalidateFile,
  fsck,
  FsckReport,
  InterleaveParams,
  readFileData,
  releaseQuarantine,
  repair,
  systemUuid,
  TreeNode,
  writeFileData,
} from '../famfs';
import { fillPattern } from './pattern';
import { formatBytes, parseCount, parseId, parseMode, parseSize, UsageError } from './units';

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, PROBLEMS: 3 } as const;

export interface CliIO {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Show progress bars (default: when stderr is a terminal). */
  progress: boolean;
}

const COPY_CHUNK = 8 << 20;

class ChecksFailed extends Error {}
/** A helper program failed; it already printed why. */
class ChildFailed extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

function withDevice<T>(path: string, readOnly: boolean, fn: (dev: DaxDevice) => T): T {
  const dev = openDevice(path, { readOnly });
  try {
    return fn(dev);
  } finally {
    dev.close();
  }
}

function openFs(dev: DaxDevice, write: boolean): FamfsFs {
  return FamfsFs.open(dev, write ? { hostUuid: systemUuid() } : { readOnly: true });
}

function requireFile(fsys: FamfsFs, relpath: string): FileNode {
  const n = fsys.lookup(relpath);
  if (!n) throw new FamfsError('ENOENT', `"${relpath}" does not exist`);
  if (n.kind !== 'file') throw new FamfsError('EISDIR', `"${relpath}" is a directory`);
  return n;
}

function interleaveFrom(o: { nstrips?: string; nbuckets?: string; chunk?: string }): InterleaveParams | undefined {
  if (o.nstrips === undefined && o.nbuckets === undefined && o.chunk === undefined) return undefined;
  if (o.nstrips === undefined || o.nbuckets === undefined) throw new UsageError('interleave needs both --nstrips and --nbuckets (and optionally --chunk)');
  return {
    nstrips: parseCount(o.nstrips, '--nstrips'),
    nbuckets: parseCount(o.nbuckets, '--nbuckets'),
    chunkSize: o.chunk === undefined ? ALLOC_UNIT : parseSize(o.chunk, '--chunk', { multipleOf: ALLOC_UNIT, powerOfTwo: true }),
  };
}

function progressBar(io: CliIO, total: number, label: string): { tick: (n: number) => void; stop: () => void } {
  if (!io.progress) return { tick: () => undefined, stop: () => undefined };
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}% | {done}/{size} | {speed}`,
    stream: process.stderr,
    hideCursor: true,
  });
  const started = Date.now();
  let done = 0;
  bar.start(total, 0, { done: formatBytes(0), size: formatBytes(total), speed: '' });
  return {
    tick: (n) => {
      done += n;
      const s = (Date.now() - started) / 1000;
      bar.update(done, { done: formatBytes(done), size: formatBytes(total), speed: s > 0 ? `${formatBytes(done / s)}/s` : '' });
    },
    stop: () => bar.stop(),
  };
}

function describeNode(n: TreeNode) {
  const base = { path: n.relpath, type: n.kind === 'dir' ? 'directory' : 'file', mode: `0${n.mode.toString(8)}`, uid: n.uid, gid: n.gid, logIndex: n.index };
  if (n.kind === 'dir') return base;
  const f = n.fmap;
  return {
    ...base,
    size: n.size,
    ...(f.kind === 'simple'
      ? { extents: f.extents.map((e) => ({ offset: e.offset, len: e.len })) }
      : { interleave: { nstrips: f.nstrips, chunkSize: f.chunkSize, strips: f.strips.map((e) => ({ offset: e.offset, len: e.len })) } }),
  };
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function fsckText(r: FsckReport): string {
  const lines: string[] = [];
  if (r.superblock) {
    lines.push(`famfs on ${r.superblock.devicePath || '(unnamed device)'}: uuid ${r.superblock.uuid}, master ${r.superblock.systemUuid}`);
    const compacted = r.log !== undefined && r.log.generation > 0;
    lines.push(
      `  format:       ${r.superblock.famfsCsiExtensions ? `famfs 48 + famfs-csi extension ${r.superblock.version === FAMFS_CSI_EXT2_VERSION.toString() ? '2 (deletes, log compaction' : '1 (deletes'}; plain famfs refuses this device)` : 'famfs superblock version 48'}`,
    );
    if (compacted) lines.push(`  log generation ${r.log!.generation} at ${hex(r.log!.offset)} (compacted), next log index ${r.log!.nextIndex}`);
  }
  if (r.log) lines.push(`  log:          ${r.log.entriesUsed} of ${r.log.entriesTotal} entries used`);
  lines.push(`  files:        ${r.files}`, `  directories:  ${r.directories}`);
  if (r.space) {
    const s = r.space;
    lines.push(
      `  device:       ${formatBytes(s.deviceBytes)} (${s.deviceBytes} bytes)`,
      `  allocated:    ${formatBytes(s.allocatedBytes)} (includes superblock + log)`,
      `  free:         ${formatBytes(s.freeBytes)}`,
      `  largest free: ${formatBytes(s.largestFreeBytes)}`,
      `  pending free: ${formatBytes(s.pendingFreeBytes)} (deleted; waiting for every host to replay the delete)`,
    );
  }
  for (const q of r.quarantined) lines.push(`  quarantined:  ${q.relpath} (log entry ${q.index}) holds ${formatBytes(q.bytes)}; famfs repair --release ${q.index} once no pod uses it`);
  if (r.fencingEpoch !== undefined) lines.push(`  writer epoch: ${r.fencingEpoch}; hosts acked: ${r.hosts.length}`);
  for (const w of r.warnings) lines.push(`  warning: ${w}`);
  for (const e of r.errors) lines.push(`  ERROR: ${e}`);
  lines.push(r.clean ? 'clean' : `NOT CLEAN: ${r.errors.length} problem(s)`);
  return lines.join('\n');
}

export function buildProgram(io: CliIO): Command {
  const program = new Command('famfs')
    .description('famfs on shared (CXL) memory: make, inspect and fill a famfs device (a devdax device or an emulation file)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.replace(/\n$/, '')), writeErr: (s) => io.err(s.replace(/\n$/, '')) })
    .showHelpAfterError('(run famfs --help for usage)');

  program
    .command('mkfs')
    .description('make a famfs file system (creates an emulation file of --size when DEVICE does not exist)')
    .option('--size <size>', 'size of a new emulation file (e.g. 8G)')
    .option('--loglen <size>', 'log length: a power of two of at least 8M', '8M')
    .option('-f, --force', 'destroy an existing famfs on DEVICE')
    .argument('<device>')
    .action((device: string, o: { size?: string; loglen: string; force?: boolean }) => {
      const logLen = parseSize(o.loglen, '--loglen', { powerOfTwo: true, min: 8 << 20 });
      const size = o.size === undefined ? undefined : parseSize(o.size, '--size', { multipleOf: ALLOC_UNIT, min: ALLOC_UNIT });
      if (size === undefined && !fs.existsSync(device)) throw new UsageError(`${device} does not exist; pass --size to create an emulation file there`);
      const dev = openDevice(device, size === undefined ? {} : { create: { size } });
      try {
        const f = FamfsFs.mkfs(dev, { systemUuid: systemUuid(), devicePath: device, logLen, force: o.force });
        io.out(`famfs created on ${device}: ${formatBytes(f.superblock.deviceSize)}, log ${formatBytes(logLen)} (${f.logCapacity} entries), master ${f.superblock.systemUuid}`);
      } finally {
        dev.close();
      }
    });

  program
    .command('mkdir')
    .description('make a directory (master only)')
    .option('-p, --parents', 'make missing parent directories')
    .option('-m, --mode <mode>', 'permission bits', '0755')
    .option('-u, --uid <uid>', 'owner', '0')
    .option('-g, --gid <gid>', 'group', '0')
    .argument('<device>')
    .argument('<relpath>')
    .action((device: string, relpath: string, o: { parents?: boolean; mode: string; uid: string; gid: string }) => {
      const mode = parseMode(o.mode);
      const uid = parseId(o.uid, '--uid');
      const gid = parseId(o.gid, '--gid');
      withDevice(device, false, (dev) => {
        const made = openFs(dev, true).mkdir(relpath, { parents: o.parents, mode, uid, gid });
        for (const d of made) io.out(`mkdir ${d.relpath}`);
      });
    });

  const withCreateOptions = (c: Command) =>
    c
      .option('-m, --mode <mode>', 'permission bits', '0644')
      .option('-u, --uid <uid>', 'owner', '0')
      .option('-g, --gid <gid>', 'group', '0')
      .option('--nstrips <n>', 'interleave: strips per file')
      .option('--nbuckets <n>', 'interleave: buckets the device is split into')
      .option('--chunk <size>', 'interleave: chunk size (power of two, multiple of 2M)');
  type CreateOpts = { mode: string; uid: string; gid: string; nstrips?: string; nbuckets?: string; chunk?: string };
  const createOptions = (o: CreateOpts) => ({
    mode: parseMode(o.mode),
    uid: parseId(o.uid, '--uid'),
    gid: parseId(o.gid, '--gid'),
    interleave: interleaveFrom(o),
  });

  withCreateOptions(
    program
      .command('creat')
      .description('create a pre-allocated file (master only); its memory is zeroed, or filled with a pattern given --seed')
      .requiredOption('-s, --size <size>', 'file size (e.g. 4096, 2M, 1G)')
      .option('-S, --seed <n>', 'fill with the deterministic pattern of this seed (check it with famfs verify)'),
  )
    .argument('<device>')
    .argument('<relpath>')
    .action((device: string, relpath: string, o: CreateOpts & { size: string; seed?: string }) => {
      const size = parseSize(o.size, '--size', { min: 1 });
      const opts = createOptions(o);
      const seed = o.seed === undefined ? undefined : parseId(o.seed, '--seed');
      withDevice(device, false, (dev) => {
        const f = openFs(dev, true).creat(relpath, size, { ...opts, zero: seed === undefined });
        if (seed !== undefined) {
          const bar = progressBar(io, size, 'fill');
          const buf = Buffer.alloc(COPY_CHUNK);
          for (let off = 0; off < size; off += COPY_CHUNK) {
            const n = Math.min(COPY_CHUNK, size - off);
            fillPattern(buf, seed, off);
            writeFileData(dev, f, off, buf.subarray(0, n));
            bar.tick(n);
          }
          bar.stop();
          flushFile(dev, f);
        }
        io.out(`created ${relpath}: ${size} bytes at ${fmapExtents(f.fmap).map((e) => `${hex(e.offset)}+${hex(e.len)}`).join(', ')}`);
      });
    });

  withCreateOptions(program.command('cp').description('copy a local file into a new famfs file (master only)'))
    .argument('<src>')
    .argument('<device>')
    .argument('<relpath>')
    .action((src: string, device: string, relpath: string, o: CreateOpts) => {
      const opts = createOptions(o);
      const st = fs.statSync(src);
      if (!st.isFile()) throw new UsageError(`${src} is not a regular file`);
      if (st.size === 0) throw new UsageError(`${src} is empty; famfs files have a fixed, non-zero size`);
      const fd = fs.openSync(src, 'r');
      try {
        withDevice(device, false, (dev) => {
          const f = openFs(dev, true).creat(relpath, st.size, { ...opts, zero: true });
          const bar = progressBar(io, st.size, 'copy');
          const buf = Buffer.alloc(COPY_CHUNK);
          for (let off = 0; off < st.size; ) {
            const n = fs.readSync(fd, buf, 0, Math.min(COPY_CHUNK, st.size - off), off);
            if (n === 0) throw new FamfsError('EIO', `${src} shrank while being copied (at ${off} of ${st.size} bytes)`);
            writeFileData(dev, f, off, buf.subarray(0, n));
            off += n;
            bar.tick(n);
          }
          bar.stop();
          flushFile(dev, f);
          io.out(`copied ${src} to ${relpath}: ${st.size} bytes`);
        });
      } finally {
        fs.closeSync(fd);
      }
    });

  program
    .command('ls')
    .description('list every file and directory with size, mode, owner and extents')
    .option('--json', 'machine-readable output')
    .argument('<device>')
    .action((device: string, o: { json?: boolean }) => {
      withDevice(device, true, (dev) => {
        const f = openFs(dev, false);
        const nodes = [...f.tree.nodes()].map(describeNode);
        if (o.json) {
          io.out(JSON.stringify({ device, entries: nodes }, null, 2));
          return;
        }
        for (const n of nodes) {
          const where =
            'extents' in n && n.extents
              ? n.extents.map((e) => `${hex(e.offset)}+${hex(e.len)}`).join(',')
              : 'interleave' in n && n.interleave
                ? `${n.interleave.nstrips}x${hex(n.interleave.chunkSize)}: ${n.interleave.strips.map((e) => hex(e.offset)).join(',')}`
                : '-';
          const size = 'size' in n ? String(n.size) : '-';
          io.out(`${n.type === 'directory' ? 'd' : '-'} ${n.mode.padStart(5)} ${String(n.uid).padStart(6)} ${String(n.gid).padStart(6)} ${size.padStart(12)}  ${n.path}${n.type === 'directory' ? '/' : ''}  ${where}`);
        }
      });
    });

  program
    .command('fsck')
    .description('check the superblock, the log and the allocation; exit 0 only when clean')
    .option('--json', 'machine-readable output')
    .argument('<device>')
    .action((device: string, o: { json?: boolean }) => {
      withDevice(device, true, (dev) => {
        const r = fsck(dev);
        io.out(o.json ? JSON.stringify(r, null, 2) : fsckText(r));
        if (!r.clean) throw new ChecksFailed();
      });
    });

  program
    .command('mount')
    .description('mount DEVICE at MOUNTPOINT with the famfs FUSE server (famfs-fused; its options pass through)')
    .allowUnknownOption()
    .helpOption(false)
    .argument('<args...>', 'famfs-fused arguments: DEVICE MOUNTPOINT [options]')
    .action((args: string[]) => {
      const fused = path.resolve(__dirname, '..', '..', 'cmd', 'famfs-fused.js');
      const r = spawnSync(process.execPath, [fused, ...args], { encoding: 'utf8' });
      if (r.stdout) io.out(r.stdout.replace(/\n$/, ''));
      if (r.stderr) io.err(r.stderr.replace(/\n$/, ''));
      if (r.status !== 0) throw new ChildFailed(r.status ?? EXIT.FAILED);
    });

  program
    .command('repair')
    .description('repair what fsck finds without losing anything that was ever visible (master only)')
    .option('--json', 'machine-readable output')
    .option('--drop <index>', 'replace an entry repair cannot prove by an empty directory (its memory becomes free: only when no pod uses it); repeatable', (v: string, all: number[]) => [...all, parseId(v, '--drop')], [] as number[])
    .option('--release <index>', 'hand the memory of quarantined entry INDEX (lost+found.INDEX) back to the pool, once no pod uses it')
    .argument('<device>')
    .action((device: string, o: { json?: boolean; drop: number[]; release?: string }) => {
      const release = o.release === undefined ? undefined : parseId(o.release, '--release');
      if (release !== undefined && o.drop.length > 0) throw new UsageError('--release and --drop do not go together');
      withDevice(device, false, (dev) => {
        if (release !== undefined) {
          releaseQuarantine(openFs(dev, true), release);
          const after = fsck(dev);
          io.out(o.json ? JSON.stringify({ released: release, fsck: after }, null, 2) : `released quarantined entry ${release}: its memory waits for every host to replay the delete, then is free\n${fsckText(after)}`);
          if (!after.clean) throw new ChecksFailed();
          return;
        }
        const r = repair(dev, { hostUuid: systemUuid(), drop: o.drop });
        const after = fsck(dev);
        if (o.json) {
          io.out(JSON.stringify({ ...r, fsck: after }, null, 2));
        } else {
          for (const a of r.actions) io.out(`repaired: ${a}`);
          for (const d of r.dropped) io.out(`dropped log entry ${d.index}: ${d.what}`);
          for (const q of r.quarantined) io.out(`quarantined log entry ${q.index} as ${q.relpath}: ${q.bytes} bytes stay reserved (famfs repair --release ${q.index} once no pod uses them)`);
          if (r.actions.length === 0) io.out('nothing to repair');
          io.out(fsckText(after));
        }
        if (!after.clean) throw new ChecksFailed();
      });
    });

  program
    .command('rm')
    .description('delete a file or an empty directory (famfs-csi extension: plain famfs refuses the device afterwards)')
    .argument('<device>')
    .argument('<relpath>')
    .action((device: string, relpath: string) => {
      withDevice(device, false, (dev) => {
        const f = openFs(dev, true);
        f.rm(relpath);
        const u = f.usage();
        io.out(`removed ${relpath}; ${formatBytes(u.pendingFreeBytes)} wait for every host to replay the delete before reuse`);
      });
    });

  program
    .command('compact')
    .description('rewrite the log to what is still needed (master only; hosts follow without unmounting; crash-safe)')
    .option('--progress', 'print one line per step (plan, copy, flush, verify, switch) as it happens')
    .option('--step-entries <n>', 'log entries written per copy step', '1024')
    .option('--throttle <ms>', 'pause this long after each step, leaving memory bandwidth to running pods', '0')
    .option('--json', 'machine-readable result')
    .argument('<device>')
    .action((device: string, o: { progress?: boolean; stepEntries: string; throttle: string; json?: boolean }) => {
      const stepEntries = parseCount(o.stepEntries, '--step-entries');
      const throttle = parseId(o.throttle, '--throttle');
      const pause = new Int32Array(new SharedArrayBuffer(4));
      withDevice(device, false, (dev) => {
        const f = openFs(dev, true);
        const r = f.compact({
          stepEntries,
          onProgress: (p) => {
            if (o.progress) io.out(`compact: ${p.step}${p.done !== undefined ? ` ${p.done}` : ''}${p.total !== undefined ? `/${p.total}` : ''}`);
            if (throttle > 0) Atomics.wait(pause, 0, 0, throttle);
          },
        });
        if (o.json) io.out(JSON.stringify(r));
        else if (!r.compacted) io.out(`nothing to compact: ${r.reason}`);
        else {
          io.out(
            `compacted the log to generation ${r.generation}: ${r.entriesBefore} -> ${r.entriesAfter} of ${f.logCapacity} entries` +
              `${r.pendingKept > 0 ? ` (${r.pendingKept} deletes kept until every host has replayed them)` : ''} in ${r.ms.toFixed(1)} ms`,
          );
        }
      });
    });

  program
    .command('verify')
    .description('check a file against the pattern of --seed, or against a local file')
    .option('-S, --seed <n>', 'pattern seed used by famfs creat --seed')
    .option('--compare <file>', 'local file that must have identical bytes')
    .argument('<device>')
    .argument('<relpath>')
    .action((device: string, relpath: string, o: { seed?: string; compare?: string }) => {
      if ((o.seed === undefined) === (o.compare === undefined)) throw new UsageError('give exactly one of --seed or --compare');
      const seed = o.seed === undefined ? undefined : parseId(o.seed, '--seed');
      withDevice(device, true, (dev) => {
        const f = requireFile(openFs(dev, false), relpath);
        let fd: number | undefined;
        if (o.compare !== undefined) {
          if (fs.statSync(o.compare).size !== f.size) {
            io.out(`MISMATCH: ${relpath} is ${f.size} bytes, ${o.compare} is ${fs.statSync(o.compare).size}`);
            throw new ChecksFailed();
          }
          fd = fs.openSync(o.compare, 'r');
        }
        try {
          const want = Buffer.alloc(COPY_CHUNK);
          invalidateFile(dev, f);
          for (let off = 0; off < f.size; off += COPY_CHUNK) {
            const n = Math.min(COPY_CHUNK, f.size - off);
            if (seed !== undefined) fillPattern(want, seed, off);
            else fs.readSync(fd!, want, 0, n, off);
            const got = readFileData(dev, f, off, n);
            const bad = got.findIndex((b, i) => b !== want[i]);
            if (bad >= 0) {
              io.out(`MISMATCH: ${relpath} differs at byte ${off + bad}`);
              throw new ChecksFailed();
            }
          }
        } finally {
          if (fd !== undefined) fs.closeSync(fd);
        }
        io.out(`verified ${relpath}: ${f.size} bytes match`);
      });
    });

  program
    .command('flush')
    .description("write back a file's CPU cache lines (the host handing the file over)")
    .argument('<device>')
    .argument('<relpath...>')
    .action((device: string, relpaths: string[]) => {
      withDevice(device, true, (dev) => {
        const f = openFs(dev, false);
        for (const p of relpaths) {
          flushFile(dev, requireFile(f, p));
          io.out(`flushed ${p}`);
        }
      });
    });

  program
    .command('hosts')
    .description('show each host replay acknowledgement, the liveness window, and the hosts the master timed out (with the memory it reused after them)')
    .option('--json', 'machine-readable output')
    .argument('<device>')
    .action((device: string, o: { json?: boolean }) => {
      withDevice(device, true, (dev) => {
        const f = openFs(dev, false);
        const hosts = f.hosts();
        const evictions = f.evictions().map((e) => {
          // What the timeout let the master reuse: the deletes this host had not acknowledged.
          const freed = f.tree.released.filter((r) => r.deleteIndex >= e.ackedIndex && r.deleteIndex < e.reclaimUpTo);
          const slot = hosts.find((h) => h.slot === e.slot && h.hostUuid === e.hostUuid);
          return {
            ...e,
            name: slot?.name ?? '',
            at: new Date(e.atMs).toISOString(),
            reusable: freed.map((r) => ({ deleteIndex: r.deleteIndex, relpath: r.relpath, extents: r.extents })),
            reusableBytes: freed.reduce((n, r) => n + r.extents.reduce((m, x) => m + x.len, 0), 0),
          };
        });
        const hostLiveMs = f.hostLiveMs();
        if (o.json) {
          io.out(JSON.stringify({ nextIndex: f.tree.nextIndex, hostLiveMs, hosts, evictions }, null, 2));
          return;
        }
        io.out(`log next index ${f.tree.nextIndex}; a host is timed out after the master watched its slot unchanged for ${hostLiveMs} ms`);
        for (const h of hosts) io.out(`  slot ${h.slot}: ${h.name || '(unnamed)'} ${h.hostUuid} acked ${h.ackedIndex}, ack #${h.beat}${h.damaged ? ' (DAMAGED: holds back all reclaim; famfs repair clears it)' : ''}`);
        if (evictions.length === 0) io.out('no host was timed out');
        for (const e of evictions) {
          io.out(`timed out ${e.at}: ${e.name || '(unnamed)'} ${e.hostUuid} (slot ${e.slot}) after ${Math.round(e.silentMs / 1000)} s silent, acked ${e.ackedIndex} of ${e.reclaimUpTo}`);
          for (const r of e.reusable) io.out(`  memory of ${r.relpath} (deleted at ${r.deleteIndex}) became reusable: ${r.extents.map((x) => `0x${x.offset.toString(16)}+${x.len}`).join(', ')}`);
        }
      });
    });

  return program;
}

function exitCodeOf(e: unknown): { code: number; message?: string } {
  if (e instanceof ChecksFailed) return { code: EXIT.PROBLEMS };
  if (e instanceof ChildFailed) return { code: e.exitCode };
  if (e instanceof UsageError) return { code: EXIT.USAGE, message: e.message };
  if (e instanceof CommanderError) return { code: e.exitCode === 0 ? EXIT.OK : EXIT.USAGE };
  if (e instanceof FamfsError && (e.code === 'EINVAL' || e.code === 'ENAMETOOLONG')) return { code: EXIT.USAGE, message: e.message };
  if (e instanceof FamfsError || e instanceof DeviceError) return { code: EXIT.FAILED, message: e.message };
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && err.syscall) return { code: EXIT.FAILED, message: err.message };
  throw e;
}

/** Run the CLI; returns the exit code instead of exiting (so tests can drive it in-process). */
export function runCli(argv: string[], io: CliIO): number {
  const program = buildProgram(io);
  try {
    program.parse(argv, { from: 'user' });
    return EXIT.OK;
  } catch (e) {
    const { code, message } = exitCodeOf(e);
    if (message) io.err(`famfs: ${message}`);
    return code;
  }
}

