/**
 * Log compaction with real processes: FUSE hosts (famfs-fused) following the master through
 * compactions without unmounting, a host stopped across two compactions, and kill -9 of
 * `famfs compact` at every step. The master is the test process (pkg/famfs) or the famfs CLI.
 */
import { strict as assert } from 'assert';
import { spawn, spawnSync } from 'child_process';
import { createHash, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { openDevice, type DaxDevice } from '../pkg/device/index.js';
import { FamfsFs } from '../pkg/famfs/fs.js';
import { fsck } from '../pkg/famfs/fsck.js';
import { forEachDeviceRun, fmapExtents } from '../pkg/famfs/fmap.js';
import type { FileNode, TreeNode } from '../pkg/famfs/tree.js';
import { canMount, FusedHost, sleep } from './helpers/fused-host.js';

const CLI = path.join(__dirname, '..', 'cmd', 'famfs.js');
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const MASTER = '0c0d0e0f-1a1b-4c1d-8e1f-202122232425';
const HOST_A = '0c0d0e0f-1a1b-4c1d-8e1f-00000000000a';
const HOST_B = '0c0d0e0f-1a1b-4c1d-8e1f-00000000000b';

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await sleep(25);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Every live node as "index path kind size fmap". */
function snapshot(nodes: Iterable<TreeNode>): string[] {
  return [...nodes].map((n) => `${n.index} ${n.relpath} ${n.kind} ${n.kind === 'file' ? `${n.size} ${JSON.stringify(n.fmap)}` : ''}`).sort();
}

/** create+delete cycles shaped like CSI volumes (directory, file, and their deletes). */
function churn(m: FamfsFs, cycles: number, tag: string): void {
  for (let i = 0; i < cycles; i++) {
    m.mkdir(`${tag}${i}`);
    m.creat(`${tag}${i}/data`, 2 * MIB);
    m.rm(`${tag}${i}/data`);
    m.rm(`${tag}${i}`);
  }
}

function fileBytes(dev: DaxDevice, f: FileNode): Buffer {
  const out = Buffer.alloc(f.size);
  forEachDeviceRun(f.fmap, 0, f.size, (devOff, fileOff, len) => {
    dev.invalidate(devOff, len);
    dev.read(devOff, len).copy(out, fileOff);
  });
  return out;
}

(canMount ? describe : describe.skip)('famfs log compaction: FUSE hosts follow (real mounts)', function () {
  this.timeout(120_000);
  let dir: string;
  let devPath: string;
  let dev: DaxDevice;
  let master: FamfsFs;
  let a: FusedHost;
  let b: FusedHost;
  let keep: FileNode;
  let keepSha: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-compact-'));
    devPath = `/dev/shm/famfs-compact-hosts-${process.pid}-${randomBytes(3).toString('hex')}`;
    dev = openDevice(devPath, { create: { size: 4 * GIB } });
    // Hosts ack every 200 ms; one silent for 1 s no longer holds deleted memory back.
    FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: devPath, hostLiveMs: 1000 });
    master = FamfsFs.open(dev, { hostUuid: MASTER, compactAt: 0 });
    master.mkdir('keep');
    keep = master.creat('keep/file', 4 * MIB + 12345);
    const data = randomBytes(keep.size);
    forEachDeviceRun(keep.fmap, 0, keep.size, (devOff, fileOff, len) => dev.write(devOff, data.subarray(fileOff, fileOff + len)));
    forEachDeviceRun(keep.fmap, 0, keep.size, (devOff, _f, len) => dev.flush(devOff, len));
    keepSha = sha(data);
    const opts = ['--poll-ms', '50', '--ack-heartbeat-ms', '200'];
    [a, b] = await Promise.all([
      FusedHost.start('a', devPath, dir, [...opts, '--host-uuid', HOST_A]),
      FusedHost.start('b', devPath, dir, [...opts, '--host-uuid', HOST_B]),
    ]);
  });

  after(async () => {
    for (const h of [a, b]) if (h) await h.stop().catch(() => undefined);
    dev?.close();
    fs.rmSync(devPath, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Both hosts (or the given ones) replayed up to the master's index and generation. */
  async function caughtUp(hosts: FusedHost[], m: FamfsFs): Promise<void> {
    for (const h of hosts) {
      await waitFor(`${h.name} at ${m.tree.nextIndex} (generation ${m.activeLog.generation})`, async () => {
        const st = await h.ctl({ op: 'status' });
        return st['logIndex'] === m.tree.nextIndex && st['logGeneration'] === m.activeLog.generation;
      });
    }
  }

  it('hosts follow a compaction without unmounting: same inode numbers, open handles keep reading the same bytes', async () => {
    for (const h of [a, b]) await waitFor(`${h.name} to see keep/file`, () => fs.existsSync(h.p('keep/file')));
    const inoBefore = [a, b].map((h) => fs.statSync(h.p('keep/file')).ino);
    assert.deepEqual(inoBefore, [16 + keep.index, 16 + keep.index]);
    const fd = fs.openSync(a.p('keep/file'), 'r');
    try {
      const buf = Buffer.alloc(keep.size);
      assert.equal(fs.readSync(fd, buf, 0, keep.size, 0), keep.size);
      assert.equal(sha(buf), keepSha);
      for (let round = 0; round < 4; round++) {
        churn(master, 50, `r${round}-`);
        await caughtUp([a, b], master);
      }
      const entries = master.usage().logEntriesUsed;
      const r = master.compact();
      assert.equal(r.compacted, true);
      assert.equal(r.entriesBefore, entries);
      assert.equal(r.entriesAfter, 2, 'keep and keep/file');
      const after = master.creat('keep/after', 2 * MIB);
      await caughtUp([a, b], master);
      for (const h of [a, b]) {
        assert.equal(fs.statSync(h.p('keep/file')).ino, 16 + keep.index, `${h.name}: inode of a live file is unchanged`);
        assert.equal(fs.statSync(h.p('keep/after')).ino, 16 + after.index);
        assert.deepEqual(fs.readdirSync(h.p('keep')).sort(), ['after', 'file']);
        assert.deepEqual(
          fs.readdirSync(h.mountpoint).filter((n) => n !== '.meta'),
          ['keep'],
        );
        assert.equal(fs.statSync(h.p('.meta/.log')).size, master.superblock.logLen);
      }
      buf.fill(0);
      assert.equal(fs.readSync(fd, buf, 0, keep.size, 0), keep.size, 'the handle opened before the compaction still reads');
      assert.equal(sha(buf), keepSha);
      assert.equal(sha(fs.readFileSync(b.p('keep/file'))), keepSha);
    } finally {
      fs.closeSync(fd);
    }
    const report = fsck(dev);
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.log!.generation, 1);
  });

  it('a host stopped across two compactions catches up when it resumes (same inodes, same files as the master)', async () => {
    // The device counts a host as gone after 1 s of silence, so the stopped host does not hold
    // every delete pending (it must replay from scratch when it comes back: it does, at the new generation).
    const m = FamfsFs.open(dev, { hostUuid: MASTER, compactAt: 0 });
    await caughtUp([a, b], m);
    const gen0 = m.activeLog.generation;
    const fd = fs.openSync(a.p('keep/file'), 'r');
    b.proc.kill('SIGSTOP');
    try {
      // The master judges silence by when it last saw a host's slot change: look once now that
      // b is stopped, then let the window pass.
      await sleep(100);
      m.horizon();
      await sleep(1300);
      churn(m, 40, 's1-');
      await caughtUp([a], m);
      const r1 = m.compact();
      assert.equal(r1.compacted, true, r1.reason);
      const mid = m.creat('keep/mid', 2 * MIB);
      churn(m, 40, 's2-');
      await caughtUp([a], m);
      const r2 = m.compact();
      assert.equal(r2.compacted, true, r2.reason);
      assert.equal(m.activeLog.generation, gen0 + 2);
      m.rm('keep/after');
      const late = m.creat('keep/late', 2 * MIB);
      b.proc.kill('SIGCONT');
      await caughtUp([a, b], m);
      for (const h of [a, b]) {
        assert.deepEqual(fs.readdirSync(h.p('keep')).sort(), ['file', 'late', 'mid']);
        assert.equal(fs.statSync(h.p('keep/file')).ino, 16 + keep.index);
        assert.equal(fs.statSync(h.p('keep/mid')).ino, 16 + mid.index);
        assert.equal(fs.statSync(h.p('keep/late')).ino, 16 + late.index);
      }
      const buf = Buffer.alloc(keep.size);
      assert.equal(fs.readSync(fd, buf, 0, keep.size, 0), keep.size);
      assert.equal(sha(buf), keepSha);
      assert.equal(sha(fs.readFileSync(b.p('keep/file'))), keepSha);
      assert.equal(sha(fileBytes(dev, m.lookup('keep/file') as FileNode)), keepSha);
    } finally {
      b.proc.kill('SIGCONT');
      fs.closeSync(fd);
    }
    const report = fsck(dev);
    assert.equal(report.clean, true, report.errors.join('; '));
  });
});

/** Runs `famfs compact` as a child; SIGKILLs it once it has printed `killAfter` progress lines. */
function compactChild(
  device: string,
  killAfter: number | undefined,
  extra: string[],
): Promise<{ code: number | null; signal: string | null; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, 'compact', '--progress', ...extra, device], {
      env: { ...process.env, FAMFS_SYSTEM_UUID: MASTER },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (killAfter !== undefined && out.split('\n').filter((l) => l.startsWith('compact: ')).length >= killAfter) p.kill('SIGKILL');
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      if (code !== null && code !== 0) reject(new Error(`famfs compact exited ${code}: ${err}${out}`));
      else resolve({ code, signal, lines: out.split('\n').filter((l) => l.startsWith('compact: ')) });
    });
  });
}

describe('famfs compact (the command line)', function () {
  this.timeout(60_000);
  it('says there is nothing to do on a log without deletes (device unchanged), compacts one with deletes, refuses a non-master', () => {
    const p = `/dev/shm/famfs-compact-cli-${process.pid}-${randomBytes(3).toString('hex')}`;
    try {
      const dev = openDevice(p, { create: { size: 64 * MIB } });
      FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: p });
      const m = FamfsFs.open(dev, { hostUuid: MASTER, compactAt: 0 });
      m.creat('a', 4096);
      dev.close();
      const run = (uuid: string, ...args: string[]) =>
        spawnSync(process.execPath, [CLI, 'compact', ...args, p], { env: { ...process.env, FAMFS_SYSTEM_UUID: uuid }, encoding: 'utf8' });
      const before = fs.readFileSync(p);
      const r0 = run(MASTER);
      assert.equal(r0.status, 0, r0.stderr);
      assert.match(r0.stdout, /nothing to compact: the log never had a delete/);
      assert.ok(fs.readFileSync(p).equals(before), 'not one byte changed');
      const d = openDevice(p, {});
      const w = FamfsFs.open(d, { hostUuid: MASTER, compactAt: 0 });
      churn(w, 10, 'x');
      d.close();
      const r1 = run(MASTER, '--json');
      assert.equal(r1.status, 0, r1.stderr);
      const res = JSON.parse(r1.stdout) as { compacted: boolean; generation: number; entriesBefore: number; entriesAfter: number };
      assert.deepEqual([res.compacted, res.generation, res.entriesBefore, res.entriesAfter], [true, 1, 41, 1]);
      const r2 = run('0c0d0e0f-1a1b-4c1d-8e1f-999999999999');
      assert.equal(r2.status, 1);
      assert.match(r2.stderr, /not the famfs master/);
    } finally {
      fs.rmSync(p, { force: true });
    }
  });
});

describe('famfs log compaction: kill -9 of famfs compact at every step @slow', function () {
  this.timeout(600_000);
  let devPath: string;

  after(() => {
    if (devPath) fs.rmSync(devPath, { force: true });
  });

  it('leaves the old or the new generation, whole: fsck clean, no live file lost or moved, no memory claimed twice', async () => {
    devPath = `/dev/shm/famfs-compact-kill-${process.pid}-${randomBytes(3).toString('hex')}`;
    let dev = openDevice(devPath, { create: { size: 4 * GIB } });
    FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: devPath });
    let m = FamfsFs.open(dev, { hostUuid: MASTER, compactAt: 0 });
    m.mkdir('live');
    for (let i = 0; i < 600; i++) m.creat(`live/f${i}`, 4096);
    // First compaction moves to the second region and upgrades the superblock: kill it too.
    const STEP_ENTRIES = 10;
    const stepsOf = (entries: number, first: boolean) => 1 + (first ? 1 : 0) + Math.ceil(entries / STEP_ENTRIES) + 3 + (first ? 1 : 0) + 2;
    const points = new Map<string, { old: number; new: number }>();
    let iteration = 0;
    let k = 0;
    dev.close();
    const both = () => [...points.values()].some((p) => p.old > 0) && [...points.values()].some((p) => p.new > 0);
    while ((points.size < 55 || !both()) && iteration < 120) {
      dev = openDevice(devPath, {});
      m = FamfsFs.open(dev, { hostUuid: MASTER, compactAt: 0 });
      churn(m, 5, `i${iteration}-`);
      // now and then a live file comes or goes, so the live set is not the same every time
      if (iteration % 7 === 3) m.rm(`live/f${iteration}`);
      if (iteration % 7 === 5) m.creat(`live/n${iteration}`, 4096);
      const want = snapshot(m.tree.nodes());
      const gen = m.activeLog.generation;
      const first = !m.extensionsEnabled || gen === 0;
      const total = stepsOf(m.tree.fileCount + m.tree.dirCount, first);
      // every step once (early, middle and late ones alternating), then round again
      const j = k++ % total;
      const killAfter = j % 2 === 0 ? total - j / 2 : 1 + (j - 1) / 2;
      dev.close();

      const r = await compactChild(devPath, killAfter, ['--step-entries', String(STEP_ENTRIES), '--throttle', '20']);
      const last = r.lines[r.lines.length - 1] ?? '(none)';

      dev = openDevice(devPath, {});
      const report = fsck(dev);
      assert.equal(report.clean, true, `killed after "${last}": ${report.errors.join('; ')}`);
      assert.equal(report.space!.collisions, 0);
      const after = FamfsFs.open(dev, { hostUuid: MASTER, compactAt: 0 });
      assert.deepEqual(snapshot(after.tree.nodes()), want, `killed after "${last}": live files changed`);
      const g = after.activeLog.generation;
      assert.ok(g === gen || g === gen + 1, `generation ${g} after ${gen}`);
      if (r.signal === 'SIGKILL') {
        const label = last.replace(/ \d+\/\d+$/, (s) => s.replace(/\/\d+$/, ''));
        const p = points.get(label) ?? { old: 0, new: 0 };
        if (g === gen) p.old++;
        else p.new++;
        points.set(label, p);
      }
      // no memory is handed out twice: a new file lands on memory no live file (nor a log region) uses
      const f = after.creat(`probe${iteration}`, 2 * MIB);
      const used = [...after.tree.files()].filter((x) => x !== f).flatMap((x) => fmapExtents(x.fmap));
      const alt = after.activeLog.altOffset;
      for (const e of fmapExtents(f.fmap)) {
        for (const u of used) assert.ok(e.offset + e.len <= u.offset || e.offset >= u.offset + u.len, 'new file over a live file');
        if (alt) assert.ok(e.offset + e.len <= alt || e.offset >= alt + after.superblock.logLen, 'new file over the second log region');
      }
      after.rm(`probe${iteration}`);
      dev.close();
      iteration++;
    }
    // a complete run still works afterwards
    await compactChild(devPath, undefined, []);
    dev = openDevice(devPath, {});
    assert.equal(fsck(dev).clean, true);
    dev.close();
    const sawOld = [...points.values()].some((p) => p.old > 0);
    const sawNew = [...points.values()].some((p) => p.new > 0);
    console.log(`      kill points: ${[...points.entries()].map(([l, p]) => `${l.replace('compact: ', '')}${p.new ? ' (new)' : ''}`).join(', ')}`);
    console.log(
      `      kill points tried: ${points.size} distinct steps in ${iteration} kills (old generation kept at ${[...points.values()].reduce((n, p) => n + p.old, 0)}, new at ${[...points.values()].reduce((n, p) => n + p.new, 0)})`,
    );
    assert.ok(points.size >= 50 && iteration >= 50, `only ${points.size} distinct kill points: ${[...points.keys()].join(', ')}`);
    assert.ok(sawOld && sawNew, 'kills landed both before and after the switch');
  });
});
