/**
 * The `famfs` command line: mkfs, mkdir, creat, cp, ls, getmap, logplay, check, fsck, repair, rm,
 * compact, verify, flush, hosts, mount. Verbs and flags follow famfs' own CLI where famfs has them.
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
  validateSuperblock,
  decodeSuperblock,
  SB,
  SUPERBLOCK_MAGIC,
  writeFileData,
} from '../famfs';
import { rebuildControllerState } from '../csi/store-rebuild';
import { controlRequest } from '../fuse/control-client';
import { NODE_STATE_FILE, readNodeRecords } from '../mount/mount-records';
import { defaultControlSocket } from '../fuse/control';
import { planCopy } from './copy';
import { checkMount, dryRun, dryRunText } from './logplay';
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
  return { ...base, size: n.size, ...fileMap(n) };
}

/** The version in the package.json of this installation (dist/pkg/cli → the project root). */
function cliVersion(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const f = path.join(dir, 'package.json');
    if (fs.existsSync(f)) {
      const pkg = JSON.parse(fs.readFileSync(f, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'famfs-csi' && typeof pkg.version === 'string') return pkg.version;
    }
    if (path.dirname(dir) === dir) return 'unknown';
  }
}

const MKFS_PROBE_BYTES = 1 << 20;

/**
 * Why mkfs must not write to `dev` without --force: it holds a famfs, or anything at all in its
 * first MiB (a partition table, another file system, someone's data). undefined when blank.
 */
function holdsData(dev: DaxDevice): string | undefined {
  const n = Math.min(MKFS_PROBE_BYTES, dev.size);
  dev.invalidate(0, n);
  const head = dev.read(0, n);
  const sb = decodeSuperblock(head.subarray(0, SB.SIZE));
  if (sb.magic === SUPERBLOCK_MAGIC) {
    const check = validateSuperblock(head.subarray(0, SB.SIZE));
    return `it already holds a famfs file system (uuid ${sb.uuid}, master ${sb.systemUuid}${check.ok ? '' : `; damaged: ${check.problems.join('; ')}`})`;
  }
  const at = head.findIndex((b) => b !== 0);
  if (at >= 0) return `it is not blank: byte ${at} of its first MiB is not zero (another file system or data?)`;
  return undefined;
}

/** Extents of a file, as ls --json and getmap print them. */
type FileMap =
  { extents: { offset: number; len: number }[] } | { interleave: { nstrips: number; chunkSize: number; strips: { offset: number; len: number }[] } };
function fileMap(f: FileNode): FileMap {
  return f.fmap.kind === 'simple'
    ? { extents: f.fmap.extents.map((e) => ({ offset: e.offset, len: e.len })) }
    : { interleave: { nstrips: f.fmap.nstrips, chunkSize: f.fmap.chunkSize, strips: f.fmap.strips.map((e) => ({ offset: e.offset, len: e.len })) } };
}

/** Same size, mode and owner (and interleave shape, when asked for): creat of it again is a no-op. */
function identical(f: FileNode, size: number, o: { mode: number; uid: number; gid: number; interleave?: InterleaveParams }): boolean {
  if (f.size !== size || f.mode !== o.mode || f.uid !== o.uid || f.gid !== o.gid) return false;
  if (o.interleave === undefined) return true;
  return f.fmap.kind === 'interleave' && f.fmap.nstrips === o.interleave.nstrips && f.fmap.chunkSize === o.interleave.chunkSize;
}

/** The famfs-fused server on a mountpoint, through its root-only control socket. */
async function askMount(mountpoint: string, op: 'catchup' | 'status', socket?: string): Promise<Record<string, unknown>> {
  const st = fs.statSync(mountpoint);
  if (!st.isDirectory()) throw new UsageError(`${mountpoint} is not a directory; give the mountpoint of a famfs-fused mount`);
  const sock = socket ?? defaultControlSocket(mountpoint);
  let r;
  try {
    r = await controlRequest(sock, { op }, 10_000);
  } catch (e) {
    throw new FamfsError(
      'ENOENT',
      `${mountpoint} is not served by a famfs-fused on this host (no answer on ${sock}: ${(e as Error).message}); mount it with famfs mount DEVICE ${mountpoint}`,
    );
  }
  if (!r.ok) throw new FamfsError('EIO', `famfs-fused on ${mountpoint}: ${r.error}`);
  return r;
}

/** First byte of `f` that differs from the pattern of `seed`; undefined when all match. */
function firstMismatch(dev: DaxDevice, f: FileNode, seed: number): number | undefined {
  const want = Buffer.alloc(COPY_CHUNK);
  invalidateFile(dev, f);
  for (let off = 0; off < f.size; off += COPY_CHUNK) {
    const n = Math.min(COPY_CHUNK, f.size - off);
    fillPattern(want, seed, off);
    const got = readFileData(dev, f, off, n);
    const bad = got.findIndex((b, i) => b !== want[i]);
    if (bad >= 0) return off + bad;
  }
  return undefined;
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
  for (const q of r.quarantined)
    lines.push(`  quarantined:  ${q.relpath} (log entry ${q.index}) holds ${formatBytes(q.bytes)}; famfs repair --release ${q.index} once no pod uses it`);
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
    .version(cliVersion(), '-V, --version', 'print the famfs-csi version')
    .showHelpAfterError('(run famfs --help for usage)');

  program
    .command('mkfs')
    .description('make a famfs file system (creates an emulation file of --size when DEVICE does not exist); refuses a device that holds data without --force')
    .option('--size <size>', 'size of a new emulation file (e.g. 8G)')
    .option('--loglen <size>', 'log length: a power of two of at least 8M', '8M')
    .option('-f, --force', 'overwrite what DEVICE holds (an existing famfs or any other data)')
    .argument('<device>')
    .action((device: string, o: { size?: string; loglen: string; force?: boolean }) => {
      const logLen = parseSize(o.loglen, '--loglen', { powerOfTwo: true, min: 8 << 20 });
      const size = o.size === undefined ? undefined : parseSize(o.size, '--size', { multipleOf: ALLOC_UNIT, min: ALLOC_UNIT });
      const existed = fs.existsSync(device);
      if (size === undefined && !existed) throw new UsageError(`${device} does not exist; pass --size to create an emulation file there`);
      const dev = openDevice(device, size === undefined ? {} : { create: { size } });
      let made = false;
      try {
        const why = o.force ? undefined : holdsData(dev);
        if (why) throw new FamfsError('EEXIST', `refusing to make a famfs on ${device}: ${why}; pass --force to overwrite it`);
        const f = FamfsFs.mkfs(dev, { systemUuid: systemUuid(), devicePath: device, logLen, force: true });
        made = true;
        io.out(
          `famfs created on ${device}: ${formatBytes(f.superblock.deviceSize)}, log ${formatBytes(logLen)} (${f.logCapacity} entries), master ${f.superblock.systemUuid}`,
        );
      } finally {
        dev.close();
        // A refused or failed mkfs leaves no emulation file of its own behind.
        if (!made && !existed) fs.rmSync(device, { force: true });
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
        const fsys = openFs(dev, true);
        // famfs mkdir -p, like mkdir -p: an existing directory is success, not an error.
        const there = o.parents ? fsys.lookup(relpath.replace(/\/+$/, '')) : undefined;
        if (there?.kind === 'dir') return;
        const made = fsys.mkdir(relpath.replace(/\/+$/, ''), { parents: o.parents, mode, uid, gid });
        for (const d of made) io.out(`mkdir ${d.relpath}`);
      });
    });

  const withCreateOptions = (c: Command) =>
    c
      .option('-m, --mode <mode>', 'permission bits', '0644')
      .option('-u, --uid <uid>', 'owner', '0')
      .option('-g, --gid <gid>', 'group', '0')
      .option('-N, --nstrips <n>', 'interleave: strips per file')
      .option('-B, --nbuckets <n>', 'interleave: buckets the device is split into')
      .option('-C, --chunk <size>', 'interleave: chunk size (power of two, multiple of 2M)');
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
      .description(
        'create a pre-allocated file (master only); its memory is zeroed, or filled with a pattern given --seed. An existing identical file (same size, mode, owner; same pattern with --seed) is left as it is',
      )
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
        const fsys = openFs(dev, true);
        const existing = fsys.lookup(relpath);
        if (existing?.kind === 'file') {
          if (!identical(existing, size, opts)) {
            throw new FamfsError(
              'EEXIST',
              `"${relpath}" already exists with ${existing.size} bytes, mode 0${existing.mode.toString(8)}, owner ${existing.uid}:${existing.gid}; famfs files cannot change (famfs rm it, or use another name)`,
            );
          }
          if (seed !== undefined) {
            const bad = firstMismatch(dev, existing, seed);
            if (bad !== undefined) throw new FamfsError('EEXIST', `"${relpath}" already exists and differs from the pattern of seed ${seed} at byte ${bad}`);
          }
          io.out(`${relpath} already exists with the same size, mode and owner${seed !== undefined ? ' and pattern' : ''}: nothing to do`);
          return;
        }
        const f = fsys.creat(relpath, size, { ...opts, zero: seed === undefined });
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
        io.out(
          `created ${relpath}: ${size} bytes at ${fmapExtents(f.fmap)
            .map((e) => `${hex(e.offset)}+${hex(e.len)}`)
            .join(', ')}`,
        );
      });
    });

  withCreateOptions(
    program
      .command('cp')
      .description('copy local files into famfs (master only): cp SRC DEVICE DEST, cp SRC... DEVICE DIR, cp -r SRCDIR... DEVICE DEST')
      .option('-r, --recursive', 'copy directory trees'),
  )
    .argument('<args...>', 'SRC... DEVICE DEST: local files (and directories with -r), the device, the famfs destination')
    .action((args: string[], o: CreateOpts & { recursive?: boolean }) => {
      if (args.length < 3) throw new UsageError('cp needs SRC... DEVICE DEST (at least one source, the device and the famfs destination)');
      const srcArgs = args.slice(0, -2);
      const [device, dest] = args.slice(-2) as [string, string];
      const opts = createOptions(o);
      withDevice(device, false, (dev) => {
        const fsys = openFs(dev, true);
        const plan = planCopy(fsys, srcArgs, dest, { recursive: o.recursive === true, interleave: opts.interleave });
        for (const d of plan.dirs) {
          fsys.mkdir(d, { mode: 0o755, uid: opts.uid, gid: opts.gid });
          io.out(`mkdir ${d}`);
        }
        const total = plan.files.reduce((n, f) => n + f.size, 0);
        const bar = progressBar(io, total, 'copy');
        const buf = Buffer.alloc(COPY_CHUNK);
        for (const job of plan.files) {
          const fd = fs.openSync(job.src, 'r');
          try {
            const f = fsys.creat(job.dest, job.size, { ...opts, zero: true });
            for (let off = 0; off < job.size;) {
              const n = fs.readSync(fd, buf, 0, Math.min(COPY_CHUNK, job.size - off), off);
              if (n === 0) throw new FamfsError('EIO', `${job.src} shrank while being copied (at ${off} of ${job.size} bytes)`);
              writeFileData(dev, f, off, buf.subarray(0, n));
              off += n;
              bar.tick(n);
            }
            flushFile(dev, f);
          } finally {
            fs.closeSync(fd);
          }
          io.out(`copied ${job.src} to ${job.dest}: ${job.size} bytes`);
        }
        bar.stop();
      });
    });

  program
    .command('getmap')
    .description("show a file's extents: where its bytes live on the device")
    .option('--json', 'machine-readable output')
    .argument('<device>')
    .argument('<relpath>')
    .action((device: string, relpath: string, o: { json?: boolean }) => {
      withDevice(device, true, (dev) => {
        const f = requireFile(openFs(dev, false), relpath);
        const map = fileMap(f);
        if (o.json) {
          io.out(JSON.stringify({ path: f.relpath, size: f.size, logIndex: f.index, ...map }, null, 2));
          return;
        }
        io.out(`${f.relpath}: ${f.size} bytes, log entry ${f.index}`);
        if ('extents' in map) {
          map.extents.forEach((e, i) => io.out(`  extent ${i}: offset ${hex(e.offset)} length ${hex(e.len)} (${formatBytes(e.len)})`));
        } else {
          io.out(`  interleaved: ${map.interleave.nstrips} strips, chunk ${formatBytes(map.interleave.chunkSize)}`);
          map.interleave.strips.forEach((e, i) => io.out(`  strip ${i}: offset ${hex(e.offset)} length ${hex(e.len)} (${formatBytes(e.len)})`));
        }
      });
    });

  program
    .command('logplay')
    .description('replay the log: --dryrun DEVICE shows what a host would create; MOUNTPOINT makes its famfs-fused replay now')
    .option('-n, --dryrun', 'read the log and print what replaying it would create; change nothing')
    .option('--json', 'machine-readable output')
    .option('--control-socket <path>', "the mount's famfs-fused control socket (default: derived from the mountpoint, as famfs-fused does)")
    .argument('<device-or-mountpoint>')
    .action(async (target: string, o: { dryrun?: boolean; json?: boolean; controlSocket?: string }) => {
      const isDir = fs.statSync(target).isDirectory();
      if (o.dryrun) {
        const device = isDir ? String((await askMount(target, 'status', o.controlSocket))['device']) : target;
        withDevice(device, true, (dev) => {
          const r = dryRun(openFs(dev, false));
          if (o.json) io.out(JSON.stringify({ device, ...r }, null, 2));
          else for (const l of dryRunText(r)) io.out(l);
        });
        return;
      }
      if (!isDir) {
        throw new UsageError(
          `${target} is a device; a host replays the log into its famfs-fused mount (famfs logplay MOUNTPOINT), or see what it would create with famfs logplay --dryrun ${target}`,
        );
      }
      const r = await askMount(target, 'catchup', o.controlSocket);
      if (o.json) io.out(JSON.stringify(r, null, 2));
      else
        io.out(
          `replayed ${target}: log index ${String(r['index'])}, ${String(r['added'])} added, ${String(r['removed'])} removed${r['stop'] ? `; stopped at a bad entry: ${JSON.stringify(r['stop'])}` : ''}`,
        );
    });

  program
    .command('check')
    .description('check that a famfs-fused mount shows exactly what the log says (every file, size, mode, owner); exit 3 when not')
    .option('--json', 'machine-readable output')
    .option('--control-socket <path>', "the mount's famfs-fused control socket (default: derived from the mountpoint)")
    .argument('<mountpoint>')
    .action(async (mountpoint: string, o: { json?: boolean; controlSocket?: string }) => {
      if (!fs.statSync(mountpoint).isDirectory())
        throw new UsageError(`${mountpoint} is not a directory; famfs check takes a mountpoint (famfs fsck checks a device)`);
      await askMount(mountpoint, 'catchup', o.controlSocket);
      const device = String((await askMount(mountpoint, 'status', o.controlSocket))['device']);
      withDevice(device, true, (dev) => {
        const fsys = openFs(dev, false);
        const r = checkMount(fsys, mountpoint);
        if (o.json) io.out(JSON.stringify({ mountpoint, device, logIndex: fsys.tree.nextIndex, ...r }, null, 2));
        else {
          for (const p of r.problems) io.out(`  ${p}`);
          io.out(
            r.problems.length === 0
              ? `${mountpoint}: ${r.files} files and ${r.directories} directories match the log of ${device}`
              : `${mountpoint}: ${r.problems.length} difference(s) from the log of ${device}`,
          );
        }
        if (r.problems.length > 0) throw new ChecksFailed();
      });
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
          io.out(
            `${n.type === 'directory' ? 'd' : '-'} ${n.mode.padStart(5)} ${String(n.uid).padStart(6)} ${String(n.gid).padStart(6)} ${size.padStart(12)}  ${n.path}${n.type === 'directory' ? '/' : ''}  ${where}`,
          );
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
    .option(
      '--drop <index>',
      'replace an entry repair cannot prove by an empty directory (its memory becomes free: only when no pod uses it); repeatable',
      (v: string, all: number[]) => [...all, parseId(v, '--drop')],
      [] as number[],
    )
    .option('--release <index>', 'hand the memory of quarantined entry INDEX (lost+found.INDEX) back to the pool, once no pod uses it')
    .argument('<device>')
    .action((device: string, o: { json?: boolean; drop: number[]; release?: string }) => {
      const release = o.release === undefined ? undefined : parseId(o.release, '--release');
      if (release !== undefined && o.drop.length > 0) throw new UsageError('--release and --drop do not go together');
      withDevice(device, false, (dev) => {
        if (release !== undefined) {
          releaseQuarantine(openFs(dev, true), release);
          const after = fsck(dev);
          io.out(
            o.json
              ? JSON.stringify({ released: release, fsck: after }, null, 2)
              : `released quarantined entry ${release}: its memory waits for every host to replay the delete, then is free\n${fsckText(after)}`,
          );
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
          for (const q of r.quarantined)
            io.out(
              `quarantined log entry ${q.index} as ${q.relpath}: ${q.bytes} bytes stay reserved (famfs repair --release ${q.index} once no pod uses them)`,
            );
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
    .command('zero')
    .description('zero free memory not known to hold zeros and mark it clean (master only; crash-safe; the controller does this in the background)')
    .option('--progress', 'print one line per step as its memory is marked clean')
    .option('--step <size>', 'bytes zeroed, flushed and marked clean per step', '64M')
    .option('--max <size>', 'stop after about this many bytes')
    .option('--throttle <ms>', 'pause this long after each step, leaving memory bandwidth to running pods', '0')
    .option('--discard', 'emulation files: punch holes (read as zeros, pages released) instead of writing zeros')
    .option('--json', 'machine-readable result')
    .argument('<device>')
    .action((device: string, o: { progress?: boolean; step: string; max?: string; throttle: string; discard?: boolean; json?: boolean }) => {
      const stepBytes = parseSize(o.step, '--step', { multipleOf: ALLOC_UNIT });
      const maxBytes = o.max === undefined ? undefined : parseSize(o.max, '--max', { multipleOf: ALLOC_UNIT });
      const throttle = parseId(o.throttle, '--throttle');
      const pause = new Int32Array(new SharedArrayBuffer(4));
      withDevice(device, false, (dev) => {
        const f = openFs(dev, true);
        const started = process.hrtime.bigint();
        const r = f.zeroFree({
          stepBytes,
          discard: o.discard === true,
          ...(maxBytes !== undefined ? { maxBytes } : {}),
          onProgress: (p) => {
            if (o.progress) io.out(`zero: ${p.done}/${p.total}`);
            if (throttle > 0) Atomics.wait(pause, 0, 0, throttle);
          },
        });
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        if (o.json) io.out(JSON.stringify({ ...r, seconds }));
        else if (!r.cleanMap) io.out('this device has no clean map (extension block below revision 4): a takeover by the controller upgrades it');
        else io.out(`zeroed ${formatBytes(r.zeroedBytes)} in ${seconds.toFixed(2)} s; ${formatBytes(r.dirtyFreeBytes)} of free memory still dirty`);
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
    .command('csi-rebuild-state')
    .description(
      "rebuild the CSI controller's records (csi/.controller-state) from the famfs log and the node plugins' records, when the controller refuses changes because it cannot read them (master only; restart the controller afterwards)",
    )
    .option(
      '--node-state <node=dir>',
      "a node plugin's records: NODE (its node id) = its --state-dir (copied from that node); repeatable",
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .option('--json', 'machine-readable output')
    .argument('<device>')
    .action((device: string, o: { nodeState: string[]; json?: boolean }) => {
      const nodes = o.nodeState.map((spec) => {
        const eq = spec.indexOf('=');
        if (eq <= 0 || eq === spec.length - 1) throw new UsageError(`--node-state ${JSON.stringify(spec)}: expected NODE=STATE_DIR`);
        return { nodeId: spec.slice(0, eq), dir: spec.slice(eq + 1) };
      });
      // Read every node's records before writing anything: an unreadable one stops the rebuild.
      const loaded = nodes.map((n) => {
        if (!fs.existsSync(path.join(n.dir, NODE_STATE_FILE)))
          throw new UsageError(`--node-state ${n.nodeId}=${n.dir}: no ${NODE_STATE_FILE} there (give the node plugin's --state-dir)`);
        // Read only: the directory may be a live plugin's (no migration or repair here).
        return { nodeId: n.nodeId, staged: Object.values(readNodeRecords(n.dir).staged) };
      });
      return withDevice(device, false, (dev) => {
        const report = rebuildControllerState(openFs(dev, true), systemUuid(), loaded);
        if (o.json) io.out(JSON.stringify(report, null, 2));
        else {
          io.out(
            `controller records rebuilt (was: ${report.replaced}): ${report.volumes} volumes in famfs, ${report.records} with publish records, fencing epoch ${report.epoch}, image generation ${report.generation}`,
          );
          for (const p of report.published) io.out(`  ${p.volumeId} published to ${p.nodeId} (${p.accessMode}${p.readonly ? ', read-only' : ''})`);
          for (const u of report.unknown) io.out(`  ignored: node ${u.nodeId} stages ${u.volumeId}, which famfs does not have`);
          io.out('restart the controller: it was fenced out by this rebuild and reads the new records on start');
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
        const evictions = f.evictionReport().map((e) => ({ ...e, at: new Date(e.atMs).toISOString() }));
        const hostLiveMs = f.hostLiveMs();
        if (o.json) {
          io.out(JSON.stringify({ nextIndex: f.tree.nextIndex, hostLiveMs, hosts, evictions }, null, 2));
          return;
        }
        io.out(`log next index ${f.tree.nextIndex}; a host is timed out after the master watched its slot unchanged for ${hostLiveMs} ms`);
        for (const h of hosts)
          io.out(
            `  slot ${h.slot}: ${h.name || '(unnamed)'} ${h.hostUuid} acked ${h.ackedIndex}, ack #${h.beat}${h.damaged ? ' (DAMAGED: holds back all reclaim; famfs repair clears it)' : ''}`,
          );
        if (evictions.length === 0) io.out('no host was timed out');
        for (const e of evictions) {
          io.out(
            `timed out ${e.at}: ${e.name || '(unnamed)'} ${e.hostUuid} (slot ${e.slot}) after ${Math.round(e.silentMs / 1000)} s silent, acked ${e.ackedIndex} of ${e.reclaimUpTo}`,
          );
          for (const r of e.reusable)
            io.out(
              `  memory of ${r.relpath} (deleted at ${r.deleteIndex}) became reusable: ${r.extents.map((x) => `0x${x.offset.toString(16)}+${x.len}`).join(', ')}`,
            );
          if (e.reusable.length === 0) io.out('  (the deletes it held back are no longer in the log: compacted)');
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

/** Run the CLI; resolves to the exit code instead of exiting (so tests can drive it in-process). */
export async function runCli(argv: string[], io: CliIO): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.OK;
  } catch (e) {
    const { code, message } = exitCodeOf(e);
    if (message) io.err(`famfs: ${message}`);
    return code;
  }
}
