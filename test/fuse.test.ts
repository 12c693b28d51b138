/**
 * The famfs FUSE server with real mounts: several famfs-fused processes (the "hosts") on
 * mountpoints of one emulation file in /dev/shm, the test process acting as the master
 * through pkg/famfs. Needs root and /dev/fuse.
 */
import { strict as assert } from 'assert';
import { execFileSync, spawn } from 'child_process';
import { createHash, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';

import { openDevice, type DaxDevice } from '../pkg/device/index.js';
import { FamfsFs } from '../pkg/famfs/fs.js';
import { forEachDeviceRun } from '../pkg/famfs/fmap.js';
import { reservedBytes, type FileNode } from '../pkg/famfs/tree.js';
import { controlRequest } from '../pkg/fuse/control-client.js';
import { canMount, FusedHost, sleep } from './helpers/fused-host.js';
import { fuseMountType, mountState } from './helpers/mount-state.js';

const ROOT = path.join(__dirname, '..', '..');
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const MASTER_UUID = '0f0e0d0c-0b0a-4909-8807-060504030201';
const VECTORS = path.join(ROOT, '..', 'shared', 'vectors', 'famfs-c-small');

/** Every host here polls the log every 50 ms. */
const POLL = ['--poll-ms', '50'];

async function waitFor(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return;
    await sleep(20);
  }
  assert.fail(`timed out waiting for ${what}`);
}

function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
  return undefined;
}

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The bytes of a famfs file as they are in the memory (not through any mount). */
function deviceBytes(dev: DaxDevice, file: FileNode, length = file.size): Buffer {
  const out = Buffer.alloc(length);
  forEachDeviceRun(file.fmap, 0, length, (devOff, fileOff, len) => {
    dev.invalidate(devOff, len);
    dev.read(devOff, len).copy(out, fileOff);
  });
  return out;
}

function xattr(p: string, name: string): string {
  return execFileSync('python3', ['-c', 'import os,sys; sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())', p, name]).toString();
}

(canMount ? describe : describe.skip)('famfs FUSE server (real mounts)', function () {
  this.timeout(60_000);
  let dir: string;
  let devPath: string;
  let dev: DaxDevice;
  let master: FamfsFs;
  let a: FusedHost;
  let b: FusedHost;
  let c: FusedHost;
  /** Emulation files made by single tests, removed even when a test fails half-way. */
  const scratch: string[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-fuse-'));
    devPath = `/dev/shm/famfs-fusetest-${process.pid}`;
    fs.rmSync(devPath, { force: true });
    dev = openDevice(devPath, { create: { size: 8 * GIB } });
    master = FamfsFs.mkfs(dev, { systemUuid: MASTER_UUID, devicePath: devPath });
    master.mkdir('shared', { mode: 0o755 });
    master.creat('shared/handoff', 4 * MIB, { mode: 0o666 });
    master.creat('shared/striped', 32 * MIB, { mode: 0o644, interleave: { nbuckets: 4, nstrips: 4, chunkSize: 2 * MIB } });
    master.creat('model.bin', 8 * MIB, { mode: 0o444, uid: 1000, gid: 1000 });
    const model = master.lookup('model.bin') as FileNode;
    forEachDeviceRun(model.fmap, 0, model.size, (devOff, _f, len) => dev.write(devOff, randomBytes(len)));
    forEachDeviceRun(model.fmap, 0, model.size, (devOff, _f, len) => dev.flush(devOff, len));
    [a, b, c] = await Promise.all([
      FusedHost.start('a', devPath, dir, POLL),
      FusedHost.start('b', devPath, dir, POLL),
      FusedHost.start('c', devPath, dir, [...POLL, '--read-only']),
    ]);
  });

  after(async () => {
    for (const h of [a, b, c]) if (h) await h.stop().catch(() => undefined);
    dev?.close();
    for (const f of [devPath, ...scratch]) fs.rmSync(f, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps publishing its replay position while idle, so deleted memory stays held for it', async () => {
    const uuid = '0000beef-0000-4000-8000-00000000abcd';
    const h = await FusedHost.start('hb', devPath, dir, [...POLL, '--host-uuid', uuid, '--ack-heartbeat-ms', '200']);
    try {
      master.creat('hb-victim', 2 * MIB);
      master.rm('hb-victim'); // enables the famfs-csi extension: hosts ack from now on
      await waitFor('first ack', () => master.hosts().some((s) => s.hostUuid === uuid && s.ackedIndex === master.tree.nextIndex));
      const first = master.hosts().find((s) => s.hostUuid === uuid)!.beat;
      await sleep(700); // nothing changes in the log meanwhile
      const later = master.hosts().find((s) => s.hostUuid === uuid)!;
      assert.ok(later.beat >= first + 2, `ack counter moved while idle (${first} -> ${later.beat})`);
    } finally {
      await h.stop();
    }
  });

  it('identifies as famfs: fuse.famfs mount, statfs from the device, famfs xattrs, .meta files', () => {
    assert.equal(fuseMountType(a.mountpoint), 'fuse.famfs');
    const st = fs.statfsSync(a.mountpoint);
    const usage = master.usage();
    assert.equal(st.blocks * st.bsize, usage.deviceBytes);
    assert.equal(st.bfree * st.bsize, usage.freeBytes);
    assert.equal(st.files, usage.logEntriesTotal);
    assert.equal(st.ffree, usage.logEntriesTotal - usage.logEntriesUsed);
    assert.equal(xattr(a.mountpoint, 'user.famfs.shadow'), path.dirname(a.socket));
    assert.equal(xattr(a.mountpoint, 'user.famfs.device'), devPath);
    assert.ok(fs.existsSync(path.join(xattr(a.mountpoint, 'user.famfs.shadow'), 'sock')));
    const sbFile = fs.readFileSync(a.p('.meta/.superblock'));
    assert.equal(sbFile.length, 2 * MIB);
    assert.ok(sbFile.equals(dev.read(0, 2 * MIB)));
    const logStat = fs.statSync(a.p('.meta/.log'));
    assert.equal(logStat.size, master.superblock.logLen);
    assert.ok(fs.readFileSync(a.p('.meta/.log')).subarray(0, 4096).equals(dev.read(master.superblock.logOffset, 4096)));
  });

  it('serves files with their log metadata and stable inode numbers (16 + log index)', () => {
    const model = master.lookup('model.bin') as FileNode;
    for (const h of [a, b, c]) {
      const st = fs.statSync(h.p('model.bin'));
      assert.equal(st.size, 8 * MIB);
      assert.equal(st.mode & 0o7777, 0o444);
      assert.equal(st.uid, 1000);
      assert.equal(st.gid, 1000);
      assert.equal(st.ino, 16 + model.index);
      assert.equal(sha(fs.readFileSync(h.p('model.bin'))), sha(deviceBytes(dev, model)));
      assert.deepEqual(fs.readdirSync(h.mountpoint).sort(), ['.meta', 'model.bin', 'shared']);
    }
  });

  it('maps interleaved files chunk by chunk exactly like pkg/famfs', () => {
    const striped = master.lookup('shared/striped') as FileNode;
    assert.equal(striped.fmap.kind, 'interleave');
    const data = randomBytes(striped.size);
    fs.writeFileSync(a.p('shared/striped'), data, { flag: 'r+' });
    assert.ok(deviceBytes(dev, striped).equals(data), 'bytes written through the mount sit where the fmap says');
    const other = randomBytes(striped.size);
    forEachDeviceRun(striped.fmap, 0, striped.size, (devOff, fileOff, len) => dev.write(devOff, other.subarray(fileOff, fileOff + len)));
    // b has never read the file: no page cache, so it reads the memory.
    assert.ok(fs.readFileSync(b.p('shared/striped')).equals(other));
  });

  it('lands O_DIRECT writes exactly where the fmap says, across chunk boundaries, and nowhere else', () => {
    const striped = master.lookup('shared/striped') as FileNode;
    assert.equal(striped.fmap.kind, 'interleave');
    const chunk = striped.fmap.chunkSize;
    // The device memory of every strip, 64 KiB wider on each side (never into the metadata): the
    // strips are filled with known bytes and the margins are what they were, so a payload landing
    // one byte off (in the file or outside it) is seen.
    const runs: [number, number, number][] = []; // device offset, file offset, length
    forEachDeviceRun(striped.fmap, 0, striped.size, (devOff, fileOff, len) => runs.push([devOff, fileOff, len]));
    const metadataEnd = reservedBytes(master.superblock.logLen);
    const spans: { lo: number; hi: number; expected: Buffer }[] = [];
    for (const e of [...striped.fmap.strips].sort((x, y) => x.offset - y.offset)) {
      const lo = Math.max(metadataEnd, e.offset - 64 * 1024);
      const hi = Math.min(dev.size, e.offset + e.len + 64 * 1024);
      const last = spans[spans.length - 1];
      if (last && lo <= last.hi) last.hi = Math.max(last.hi, hi);
      else spans.push({ lo, hi, expected: Buffer.alloc(0) });
    }
    const land = (data: Buffer, devOff: number, from: number, n: number) => {
      const s = spans.find((x) => devOff >= x.lo && devOff + n <= x.hi);
      assert.ok(s, `device run ${devOff}+${n} is inside a strip`);
      data.copy(s.expected, devOff - s.lo, from, from + n);
    };
    for (const s of spans) {
      dev.invalidate(s.lo, s.hi - s.lo);
      s.expected = dev.read(s.lo, s.hi - s.lo);
    }
    for (const e of striped.fmap.strips) {
      const fill = randomBytes(e.len);
      dev.write(e.offset, fill);
      dev.flush(e.offset, e.len);
      land(fill, e.offset, 0, e.len);
    }
    const fd = fs.openSync(a.p('shared/striped'), fs.constants.O_RDWR | fs.constants.O_DIRECT);
    try {
      // [file offset, length]: both edges unaligned across a chunk boundary (the bulk copy's
      // ragged head and tail), aligned, several requests across two boundaries, a few bytes
      // across a boundary, and the last bytes of the file
      const writes: [number, number][] = [
        [chunk - 100_001, 300_017],
        [0, MIB],
        [3 * chunk - 3, MIB + 5],
        [4 * chunk + 7, 2 * chunk + 5 * MIB - 11],
        [8 * chunk - 5, 13],
        [striped.size - 70_000, 70_000],
      ];
      for (const [off, len] of writes) {
        const data = randomBytes(len);
        assert.equal(fs.writeSync(fd, data, 0, len, off), len, `O_DIRECT write of ${len} at ${off}`);
        forEachDeviceRun(striped.fmap, off, len, (devOff, fileOff, n) => land(data, devOff, fileOff - off, n));
      }
      // A write crossing EOF: the server writes up to EOF and answers the short count, which the
      // kernel's direct I/O turns into EIO for the caller.
      const tail = randomBytes(100);
      assert.equal(
        errnoOf(() => fs.writeSync(fd, tail, 0, 100, striped.size - 10)),
        'EIO',
      );
      forEachDeviceRun(striped.fmap, striped.size - 10, 10, (devOff, _f, n) => land(tail, devOff, 0, n));
    } finally {
      fs.closeSync(fd);
    }
    for (const { lo, hi, expected } of spans) {
      dev.invalidate(lo, hi - lo);
      const after = dev.read(lo, hi - lo);
      for (let i = 0; i < after.length; i += 4096) {
        const end = Math.min(after.length, i + 4096);
        if (after.subarray(i, end).equals(expected.subarray(i, end))) continue;
        let j = i;
        while (after[j] === expected[j]) j++;
        const at = lo + j;
        const run = runs.find(([d, , l]) => at >= d && at < d + l);
        assert.fail(`device byte ${at} (${run ? `file offset ${run[1] + at - run[0]}` : 'outside the file'}) is not what the fmap says`);
      }
    }
  });

  it('follows the master: creates and deletes appear on every host without a remount', async () => {
    master.mkdir('proj', { mode: 0o750, uid: 1000, gid: 1000 });
    const f = master.creat('proj/data', 3 * MIB + 123, { mode: 0o640, uid: 1000, gid: 1000 });
    // catchup over the control socket returns the index reached and makes it visible at once
    const r = await b.ctl({ op: 'catchup' });
    assert.equal(r.ok, true);
    assert.equal(r['index'], master.tree.nextIndex);
    assert.equal(fs.statSync(b.p('proj/data')).size, 3 * MIB + 123);
    // the others follow by polling
    for (const h of [a, c]) await waitFor(`${h.name} to see proj/data`, () => fs.existsSync(h.p('proj/data')));
    assert.equal(fs.statSync(c.p('proj')).mode & 0o7777, 0o750);
    assert.equal(fs.statSync(a.p('proj/data')).ino, 16 + f.index);

    // an open handle of a file deleted on the master never reads that memory again
    const fd = fs.openSync(a.p('proj/data'), 'r');
    const buf = Buffer.alloc(4096);
    assert.equal(fs.readSync(fd, buf, 0, 4096, 0), 4096);
    master.rm('proj/data');
    for (const h of [a, b, c]) await waitFor(`${h.name} to drop proj/data`, () => !fs.existsSync(h.p('proj/data')));
    assert.equal(
      errnoOf(() => fs.readSync(fd, buf, 0, 4096, 1 * MIB)),
      'EIO',
    );
    assert.equal(
      errnoOf(() => fs.readSync(fd, buf, 0, 4096, 0)),
      'EIO',
      'cached pages were dropped too',
    );
    fs.closeSync(fd);
    master.rm('proj');
    for (const h of [a, b, c]) await waitFor(`${h.name} to drop proj`, () => !fs.readdirSync(h.mountpoint).includes('proj'));
    const st = await a.ctl({ op: 'status' });
    assert.equal(st['logIndex'], master.tree.nextIndex);
  });

  it("hands a file off: A writes and flushes, B invalidates and reads exactly A's bytes", async () => {
    const file = master.lookup('shared/handoff') as FileNode;
    const first = randomBytes(file.size);
    fs.writeFileSync(a.p('shared/handoff'), first, { flag: 'r+' });
    assert.equal((await a.ctl({ op: 'flush', path: 'shared/handoff' })).ok, true);
    assert.equal((await b.ctl('invalidate shared/handoff')).ok, true);
    assert.ok(fs.readFileSync(b.p('shared/handoff')).equals(first));

    // A writes again. B's page cache still holds the first version (separate hosts, separate
    // caches): without the handoff B would read stale bytes.
    const second = randomBytes(file.size);
    fs.writeFileSync(a.p('shared/handoff'), second, { flag: 'r+' });
    assert.equal((await a.ctl({ op: 'flush', path: 'shared/handoff' })).ok, true);
    assert.ok(deviceBytes(dev, file).equals(second), "A's bytes are in the memory after its flush");
    assert.ok(fs.readFileSync(b.p('shared/handoff')).equals(first), 'B still sees its cached copy before invalidating');
    assert.equal((await b.ctl({ op: 'invalidate', path: 'shared/handoff' })).ok, true);
    assert.ok(fs.readFileSync(b.p('shared/handoff')).equals(second));

    // Direct I/O mode on B: no page cache, so A's next version is visible with no invalidate.
    assert.equal((await b.ctl('direct-io on shared/handoff')).ok, true);
    const third = randomBytes(file.size);
    fs.writeFileSync(a.p('shared/handoff'), third, { flag: 'r+' });
    await a.ctl({ op: 'flush', path: 'shared/handoff' });
    assert.ok(fs.readFileSync(b.p('shared/handoff')).equals(third));
    assert.equal((await b.ctl('direct-io off shared/handoff')).ok, true);

    // mmap through the mount sees the same bytes
    await b.ctl('invalidate shared/handoff');
    const viaMmap = execFileSync('python3', [
      '-c',
      'import mmap,sys,hashlib; f=open(sys.argv[1],"rb"); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); sys.stdout.write(hashlib.sha256(m[:]).hexdigest())',
      b.p('shared/handoff'),
    ]).toString();
    assert.equal(viaMmap, sha(third));

    // unknown paths and directories are refused on the control socket
    const bad = await controlRequest(b.socket, { op: 'flush', path: 'no/such' });
    assert.equal(bad.ok, false);
    assert.equal(bad.ok === false && bad.code, 'ENOENT');
    const isDir = await controlRequest(b.socket, { op: 'invalidate', path: 'shared' });
    assert.equal(isDir.ok === false && isDir.code, 'EISDIR');
  });

  it('shares read-only among many concurrent readers on every host', async () => {
    const model = master.lookup('model.bin') as FileNode;
    const want = sha(deviceBytes(dev, model));
    const readers = [a, b, c, a, b, c, a, b].map(
      (h) =>
        new Promise<string>((resolve, reject) => {
          const p = spawn('sha256sum', [h.p('model.bin')]);
          let out = '';
          p.stdout.on('data', (d: Buffer) => (out += d.toString()));
          // 'close', not 'exit': exit can come before the last stdout chunk is read (an empty hash).
          p.on('close', (code) => (code === 0 ? resolve(out.split(' ')[0]) : reject(new Error(`sha256sum exit ${code}`))));
        }),
    );
    for (const got of await Promise.all(readers)) assert.equal(got, want);
    assert.equal(
      errnoOf(() => fs.writeFileSync(c.p('shared/handoff'), 'x', { flag: 'r+' })),
      'EROFS',
    );
  });

  it('refuses every namespace or size mutation with EPERM and changes nothing', () => {
    const before = master.tree.nextIndex;
    const listing = fs.readdirSync(a.p('shared')).sort();
    const handoff = fs.statSync(a.p('shared/handoff'));
    const checks: [string, () => unknown, string][] = [
      ['create', () => fs.writeFileSync(a.p('shared/new'), 'x'), 'EPERM'],
      ['mkdir', () => fs.mkdirSync(a.p('shared/newdir')), 'EPERM'],
      ['unlink', () => fs.unlinkSync(a.p('shared/handoff')), 'EPERM'],
      ['rmdir', () => fs.rmdirSync(a.p('shared')), 'EPERM'],
      ['rename', () => fs.renameSync(a.p('shared/handoff'), a.p('shared/moved')), 'EPERM'],
      ['link', () => fs.linkSync(a.p('shared/handoff'), a.p('shared/hard')), 'EPERM'],
      ['symlink', () => fs.symlinkSync('handoff', a.p('shared/sym')), 'EPERM'],
      ['truncate shorter', () => fs.truncateSync(a.p('shared/handoff'), 10), 'EPERM'],
      ['truncate longer', () => fs.truncateSync(a.p('shared/handoff'), 8 * MIB), 'EPERM'],
      ['open O_TRUNC', () => fs.writeFileSync(a.p('shared/handoff'), 'x'), 'EPERM'],
      ['chmod', () => fs.chmodSync(a.p('shared/handoff'), 0o600), 'EPERM'],
      ['chown', () => fs.chownSync(a.p('shared/handoff'), 1, 1), 'EPERM'],
      ['utimes', () => fs.utimesSync(a.p('shared/handoff'), 1, 1), 'EPERM'],
      ['write .meta/.log', () => fs.openSync(a.p('.meta/.log'), 'r+'), 'EPERM'],
      ['write .meta/.superblock', () => fs.openSync(a.p('.meta/.superblock'), 'r+'), 'EPERM'],
      [
        'append past EOF',
        () => {
          const fd = fs.openSync(a.p('shared/handoff'), 'r+');
          try {
            fs.writeSync(fd, Buffer.from('x'), 0, 1, handoff.size);
          } finally {
            fs.closeSync(fd);
          }
        },
        'EFBIG',
      ],
      ['mknod', () => execFileSync('python3', ['-c', 'import os,sys; os.mkfifo(sys.argv[1])', a.p('shared/fifo')], { stdio: 'pipe' }), 'EPERM'],
    ];
    for (const [what, fn, code] of checks) {
      if (what === 'mknod') {
        assert.throws(fn, /Operation not permitted/, what);
        continue;
      }
      assert.equal(errnoOf(fn), code, what);
    }
    // a same-size truncate changes nothing and is allowed
    fs.truncateSync(a.p('shared/handoff'), handoff.size);
    // a write crossing EOF is cut at EOF
    const fd = fs.openSync(a.p('shared/handoff'), 'r+');
    assert.equal(fs.writeSync(fd, Buffer.alloc(100, 7), 0, 100, handoff.size - 10), 10);
    fs.closeSync(fd);
    assert.deepEqual(fs.readdirSync(a.p('shared')).sort(), listing);
    const after = fs.statSync(a.p('shared/handoff'));
    assert.equal(after.size, handoff.size);
    assert.equal(after.mode, handoff.mode);
    assert.equal(master.catchUp().nextIndex, before, 'nothing was appended to the log');
  });

  it('survives a memory error: EIO to the caller, device failed on the control socket, clean SIGTERM unmount', async () => {
    const errDev = `/dev/shm/famfs-fusetest-err-${process.pid}`;
    scratch.push(errDev);
    fs.rmSync(errDev, { force: true });
    const d = openDevice(errDev, { create: { size: 8 * GIB } });
    const fsys = FamfsFs.mkfs(d, { systemUuid: MASTER_UUID, devicePath: errDev });
    const near = fsys.creat('near', 2 * MIB, { mode: 0o666 });
    fsys.creat('far', 64 * MIB, { mode: 0o666 });
    // Fill the whole allocation up to a far file so that one lies well beyond the cut.
    const filler = fsys.creat('filler', 1 * GIB, { mode: 0o644 });
    const far2 = fsys.creat('far2', 8 * MIB, { mode: 0o666 });
    d.write(near.fmap.kind === 'simple' ? near.fmap.extents[0].offset : 0, Buffer.from('still here'));
    d.close();
    assert.ok(filler.size > 0);
    const zero = await FusedHost.start('err0', errDev, dir, POLL);
    const copy = await FusedHost.start('err1', errDev, dir, [...POLL, '--copy-reads']);
    try {
      assert.equal(fs.readFileSync(zero.p('near')).subarray(0, 10).toString(), 'still here');
      const farOff = far2.fmap.kind === 'simple' ? far2.fmap.extents[0].offset : 0;
      // The "device" shrinks under the servers: everything past the cut faults.
      fs.truncateSync(errDev, farOff - 64 * MIB);
      assert.equal(
        errnoOf(() => fs.readFileSync(zero.p('far2'))),
        'EIO',
        'zero-copy read',
      );
      assert.equal(
        errnoOf(() => fs.readFileSync(copy.p('far2'))),
        'EIO',
        'guarded-copy read',
      );
      for (const h of [zero, copy]) {
        const st = await h.ctl({ op: 'status' });
        assert.equal(st.ok, true);
        assert.equal(st['failed'], true, `${h.name} reports the device failed`);
        const native = st['native'] as { counters: { faults: number }; faults: { op: string }[] };
        assert.ok(native.counters.faults >= 1);
        assert.equal(native.faults[0].op, 'read');
        assert.match(String(st['failureMessage']), /memory error/);
      }
      // The daemons stay up and keep answering metadata; data I/O answers EIO from now on.
      assert.deepEqual(fs.readdirSync(zero.mountpoint).sort(), ['.meta', 'far', 'far2', 'filler', 'near']);
      // (near's pages read before the error stay in this host's page cache; uncached data is refused)
      assert.equal(
        errnoOf(() => fs.readFileSync(zero.p('far'))),
        'EIO',
        'memory below the cut is refused too once failed',
      );
      const wfd = fs.openSync(copy.p('far'), 'r+');
      assert.equal(
        errnoOf(() => fs.writeSync(wfd, Buffer.alloc(4096), 0, 4096, 0)),
        'EIO',
      );
      fs.closeSync(wfd);
      assert.match(zero.log + copy.log, /memory error while serving/);
    } finally {
      assert.equal(await zero.stop(), 0);
      assert.equal(await copy.stop(), 0);
      fs.rmSync(errDev, { force: true });
    }
    assert.equal(fuseMountType(zero.mountpoint), undefined, 'unmounted');
    assert.equal(fuseMountType(copy.mountpoint), undefined, 'unmounted');
  });

  it('restarts without unmounting: the new server takes the /dev/fuse connection over (SCM_RIGHTS)', async () => {
    const old = await FusedHost.start('ho', devPath, dir, POLL);
    const bindTarget = path.join(dir, 'bind-model');
    fs.writeFileSync(bindTarget, '');
    execFileSync('mount', ['--bind', old.p('model.bin'), bindTarget]);
    let next: FusedHost | undefined;
    try {
      const want = sha(fs.readFileSync(old.p('model.bin')));
      const fd = fs.openSync(old.p('model.bin'), 'r');
      // A reader hammering the mount (through the bind mount, like a pod) during the switch.
      const reader = spawn('python3', [
        '-c',
        `import hashlib,sys,time
errs=0; n=0; t=time.time()
while time.time()-t < 3:
    try:
        with open(sys.argv[1],'rb') as f: d=f.read()
        if hashlib.sha256(d).hexdigest()!=sys.argv[2]: errs+=1
        n+=1
    except Exception as e:
        errs+=1; print(e, file=sys.stderr)
print(n, errs)`,
        bindTarget,
        want,
      ]);
      let out = '';
      reader.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const readerDone = new Promise((r) => reader.once('exit', r));
      await sleep(500);
      next = await FusedHost.takeOver(old, 'hn', devPath, POLL);
      assert.equal(await Promise.race([old.exited, sleep(5000).then(() => 'still running')]), 0, 'old server exited by itself, status 0');
      assert.equal(fuseMountType(old.mountpoint), 'fuse.famfs', 'still mounted');
      await readerDone;
      const [reads, errors] = out.trim().split(' ').map(Number);
      assert.ok(reads > 0, `reader made progress (${out})`);
      assert.equal(errors, 0, 'no read failed or returned wrong bytes across the switch');
      // the fd opened under the old server and the bind mount keep working
      const buf = Buffer.alloc(4096);
      assert.equal(fs.readSync(fd, buf, 0, 4096, 0), 4096);
      fs.closeSync(fd);
      assert.equal(sha(fs.readFileSync(bindTarget)), want);
      // the new server follows the log and answers its control socket
      master.creat('after-handover', 2 * MIB, { mode: 0o644 });
      await waitFor('new server to see after-handover', () => fs.existsSync(next!.p('after-handover')));
      assert.equal((await next.ctl({ op: 'status' })).ok, true);
    } finally {
      // SIGTERM with a bind mount still holding the connection: the server severs it and exits.
      if (next) assert.equal(await next.stop(), 0);
      else await old.stop();
      assert.equal(
        errnoOf(() => fs.readFileSync(bindTarget)),
        'ENOTCONN',
        'a stopped server is a dead mount, not a hang',
      );
      assert.equal(mountState(bindTarget), 'dead', 'owners can tell a dead mount and remount');
      execFileSync('umount', ['-l', bindTarget]);
    }
  });

  it('mounts the famfs C library golden image and lists exactly what its manifest says', async () => {
    interface ManifestEntry {
      index: number;
      type: string;
      relpath: string;
      mode_num: number;
      uid: number;
      gid: number;
      size?: number;
    }
    const manifest = JSON.parse(fs.readFileSync(path.join(VECTORS, 'manifest.json'), 'utf8')) as { device_size: number; entries: ManifestEntry[] };
    const img = `/dev/shm/famfs-fusetest-golden-${process.pid}`;
    scratch.push(img);
    const sb = zlib.gunzipSync(fs.readFileSync(path.join(VECTORS, 'superblock.bin.gz')));
    const log = zlib.gunzipSync(fs.readFileSync(path.join(VECTORS, 'log.bin.gz')));
    fs.writeFileSync(img, Buffer.concat([sb, log]));
    fs.truncateSync(img, manifest.device_size);
    const h = await FusedHost.start('golden', img, dir, POLL);
    try {
      const seen = new Set<string>();
      const walk = (rel: string): void => {
        for (const name of fs.readdirSync(path.join(h.mountpoint, rel))) {
          const r = rel ? `${rel}/${name}` : name;
          if (r === '.meta') continue;
          seen.add(r);
          if (fs.statSync(path.join(h.mountpoint, r)).isDirectory()) walk(r);
        }
      };
      walk('');
      const expected = manifest.entries.filter((e) => e.type === 'FILE' || e.type === 'MKDIR');
      assert.deepEqual([...seen].sort(), expected.map((e) => e.relpath).sort());
      for (const e of expected) {
        const st = fs.statSync(h.p(e.relpath));
        assert.equal(st.isDirectory(), e.type === 'MKDIR', e.relpath);
        assert.equal(st.mode & 0o7777, e.mode_num, `${e.relpath} mode`);
        assert.equal(st.uid, e.uid, `${e.relpath} uid`);
        assert.equal(st.gid, e.gid, `${e.relpath} gid`);
        assert.equal(st.ino, 16 + e.index, `${e.relpath} ino`);
        if (e.type === 'FILE') assert.equal(st.size, e.size, `${e.relpath} size`);
      }
      assert.ok(fs.readFileSync(h.p('.meta/.superblock')).equals(sb));
    } finally {
      assert.equal(await h.stop(), 0);
    }
    // Mounting did not write to the image (a plain famfs device stays plain famfs).
    const after = Buffer.alloc(sb.length + log.length);
    const ifd = fs.openSync(img, 'r');
    fs.readSync(ifd, after, 0, after.length, 0);
    fs.closeSync(ifd);
    fs.rmSync(img, { force: true });
    assert.ok(after.subarray(0, sb.length).equals(sb), 'superblock untouched');
    assert.ok(after.subarray(sb.length).equals(log), 'log untouched');
  });
});
