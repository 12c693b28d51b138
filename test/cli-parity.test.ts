/**
 * famfs CLI parity (issue 14 item 4), always through real `famfs` processes on real emulation files:
 * logplay, getmap, check, cp -r and several sources, creat/mkdir -p idempotence, --version, mkfs
 * refusing a device that holds data, -N/-B/-C, and `famfs` runnable by name after the install step.
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { controlRequest } from '../pkg/fuse/control-client';
import { openDevice } from '../pkg/device';
import { FamfsFs } from '../pkg/famfs';
import { checkMount } from '../pkg/cli/logplay';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'cmd', 'famfs.js');
const FUSED = path.join(ROOT, 'dist', 'cmd', 'famfs-fused.js');
const MASTER = '11111111-2222-4333-8444-555555555555';
const MiB = 1024 ** 2;
const canMount = process.getuid?.() === 0 && fs.existsSync('/dev/fuse');

function famfs(args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, FAMFS_SYSTEM_UUID: MASTER } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function ok(args: string[]): string {
  const r = famfs(args);
  assert.equal(r.code, 0, `famfs ${args.join(' ')} → ${r.code}: ${r.err}`);
  return r.out;
}

/** Superblock + log: a refused command must leave them byte for byte as they were. */
function metadata(dev: string): Buffer {
  const fd = fs.openSync(dev, 'r');
  const b = Buffer.alloc(10 * MiB);
  fs.readSync(fd, b, 0, b.length, 0);
  fs.closeSync(fd);
  return b;
}

function refused(args: string[], code: number, msg: RegExp, dev: string): void {
  const before = metadata(dev);
  const r = famfs(args);
  assert.equal(r.code, code, `famfs ${args.join(' ')} → ${r.code}: ${r.err}${r.out}`);
  assert.match(r.err + r.out, msg, `famfs ${args.join(' ')}`);
  assert.ok(metadata(dev).equals(before), `famfs ${args.join(' ')} changed the device`);
}

interface LsEntry {
  path: string;
  type: string;
  size?: number;
  mode: string;
  uid: number;
  gid: number;
  extents?: { offset: number; len: number }[];
  interleave?: { nstrips: number; chunkSize: number };
}
function ls(dev: string): Map<string, LsEntry> {
  return new Map((JSON.parse(ok(['ls', '--json', dev])) as { entries: LsEntry[] }).entries.map((e) => [e.path, e]));
}

describe('famfs CLI parity', function () {
  this.timeout(180_000);
  const tag = `${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  const dev = `/dev/shm/famfs-parity-${tag}.img`;
  let tmp: string;

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-parity-'));
    ok(['mkfs', '--size', '8G', dev]);
  });
  after(() => {
    fs.rmSync(dev, { force: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('--version and -V print the package version', () => {
    const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    assert.equal(ok(['--version']).trim(), version);
    assert.equal(ok(['-V']).trim(), version);
  });

  describe('mkfs refuses a device that holds data', () => {
    it('a file with one non-zero byte in its first MiB: exit 1, untouched; --force formats it', () => {
      const f = path.join(tmp, 'dirty.img');
      fs.writeFileSync(f, Buffer.alloc(0));
      fs.truncateSync(f, 64 * MiB);
      const fd = fs.openSync(f, 'r+');
      fs.writeSync(fd, Buffer.from([0x5a]), 0, 1, MiB - 1);
      fs.closeSync(fd);
      const before = fs.readFileSync(f);
      const r = famfs(['mkfs', f]);
      assert.equal(r.code, 1, r.err);
      assert.match(r.err, /not blank: byte 1048575 of its first MiB is not zero.*--force/);
      assert.ok(fs.readFileSync(f).equals(before), 'refused mkfs wrote nothing');
      ok(['mkfs', '--force', f]);
      assert.equal(famfs(['fsck', f]).code, 0);
    });

    it('a byte past the first MiB does not count: a blank head is formatted without --force', () => {
      const f = path.join(tmp, 'tail.img');
      fs.writeFileSync(f, Buffer.alloc(0));
      fs.truncateSync(f, 64 * MiB);
      const fd = fs.openSync(f, 'r+');
      fs.writeSync(fd, Buffer.from([1]), 0, 1, MiB);
      fs.closeSync(fd);
      ok(['mkfs', f]);
    });

    it('an existing famfs: exit 1, names it', () => {
      refused(['mkfs', dev], 1, /already holds a famfs file system \(uuid [0-9a-f-]+, master 11111111-.*--force/, dev);
    });

    it('no refusal leaves an emulation file behind', () => {
      const cases: [string[], number][] = [
        [['--loglen', '3M'], 2],
        [['--loglen', '8m'], 2],
        [['--size', '4M'], 2], // too small for superblock + log: refused by the format after the file was made
        [['--size', '3000000'], 2],
      ];
      for (const [opts, code] of cases) {
        const f = path.join(tmp, `new-${crypto.randomBytes(3).toString('hex')}.img`);
        const args = opts[0] === '--size' ? ['mkfs', ...opts, f] : ['mkfs', '--size', '64M', ...opts, f];
        const r = famfs(args);
        assert.equal(r.code, code, `famfs ${args.join(' ')} → ${r.code} ${r.err}`);
        assert.ok(!fs.existsSync(f), `famfs ${args.join(' ')} left ${f} behind`);
      }
    });
  });

  it('mkdir -p accepts existing directories; plain mkdir of one still fails', () => {
    ok(['mkdir', '-p', dev, 'm/n']);
    const before = metadata(dev);
    ok(['mkdir', '-p', dev, 'm/n']);
    ok(['mkdir', '-p', dev, 'm']);
    assert.ok(metadata(dev).equals(before), 'mkdir -p of existing directories wrote nothing');
    refused(['mkdir', dev, 'm/n'], 1, /already exists/, dev);
    ok(['creat', '-s', '4096', dev, 'm/f']);
    refused(['mkdir', '-p', dev, 'm/f/g'], 1, /is a file/, dev);
  });

  it('creat of an identical existing file is a no-op; a different one is refused', () => {
    ok(['creat', '-s', '3M', '-m', '0640', '-u', '5', '-g', '6', '-S', '9', dev, 'same']);
    const before = metadata(dev);
    assert.match(ok(['creat', '-s', '3M', '-m', '0640', '-u', '5', '-g', '6', dev, 'same']), /nothing to do/);
    assert.match(ok(['creat', '-s', '3M', '-m', '0640', '-u', '5', '-g', '6', '-S', '9', dev, 'same']), /and pattern: nothing to do/);
    assert.ok(metadata(dev).equals(before));
    refused(['creat', '-s', '4M', '-m', '0640', '-u', '5', '-g', '6', dev, 'same'], 1, /already exists with 3145728 bytes/, dev);
    refused(['creat', '-s', '3M', dev, 'same'], 1, /mode 0640, owner 5:6/, dev);
    refused(['creat', '-s', '3M', '-m', '0640', '-u', '5', '-g', '6', '-S', '10', dev, 'same'], 1, /differs from the pattern of seed 10 at byte 0/, dev);
  });

  it('-N/-B/-C are the famfs spellings of --nstrips/--nbuckets/--chunk', () => {
    ok(['creat', '-s', '64M', '-N', '2', '-B', '4', '-C', '4M', dev, 'striped']);
    const e = ls(dev).get('striped')!;
    assert.equal(e.interleave?.nstrips, 2);
    assert.equal(e.interleave?.chunkSize, 4 * MiB);
  });

  it("getmap prints a file's extents (--json agrees with ls); a directory or missing path is refused", () => {
    ok(['creat', '-s', '5M', dev, 'mapped']);
    const j = JSON.parse(ok(['getmap', '--json', dev, 'mapped'])) as { path: string; size: number; extents: { offset: number; len: number }[] };
    assert.equal(j.size, 5 * MiB);
    assert.deepEqual(j.extents, ls(dev).get('mapped')!.extents);
    assert.equal(j.extents[0].len, 6 * MiB);
    assert.match(ok(['getmap', dev, 'mapped']), new RegExp(`extent 0: offset 0x${j.extents[0].offset.toString(16)} length 0x600000`));
    assert.match(ok(['getmap', dev, 'striped']), /interleaved: 2 strips, chunk 4.0 MiB/);
    refused(['getmap', dev, 'm'], 1, /is a directory/, dev);
    refused(['getmap', dev, 'nope'], 1, /does not exist/, dev);
  });

  describe('cp', () => {
    let src: string;
    const files: Record<string, Buffer> = {};
    before(() => {
      src = path.join(tmp, 'tree');
      for (const [rel, size] of [
        ['a.bin', 3 * MiB + 5],
        ['sub/b.bin', 4097],
        ['sub/deeper/c.bin', 1],
      ] as const) {
        fs.mkdirSync(path.dirname(path.join(src, rel)), { recursive: true });
        files[rel] = crypto.randomBytes(size);
        fs.writeFileSync(path.join(src, rel), files[rel]);
      }
    });

    it('cp -r SRCDIR into an existing directory makes DIR/basename(SRCDIR) with every file', () => {
      ok(['mkdir', dev, 'models']);
      ok(['cp', '-r', src, dev, 'models']);
      const t = ls(dev);
      for (const [rel, data] of Object.entries(files)) {
        assert.equal(t.get(`models/tree/${rel}`)?.size, data.length, rel);
        ok(['verify', '--compare', path.join(src, rel), dev, `models/tree/${rel}`]);
      }
      assert.equal(t.get('models/tree/sub/deeper')?.type, 'directory');
    });

    it('cp -r SRCDIR to a new name makes that name the copy', () => {
      ok(['cp', '-r', src, dev, 'copy2']);
      ok(['verify', '--compare', path.join(src, 'sub/deeper/c.bin'), dev, 'copy2/sub/deeper/c.bin']);
      assert.equal(ls(dev).has('copy2/tree'), false);
    });

    it('several sources go into an existing directory under their own names', () => {
      ok(['mkdir', dev, 'many']);
      ok(['cp', path.join(src, 'a.bin'), path.join(src, 'sub', 'b.bin'), dev, 'many']);
      ok(['verify', '--compare', path.join(src, 'a.bin'), dev, 'many/a.bin']);
      ok(['verify', '--compare', path.join(src, 'sub/b.bin'), dev, 'many/b.bin']);
      ok(['cp', path.join(src, 'a.bin'), dev, 'many/renamed']);
      ok(['verify', '--compare', path.join(src, 'a.bin'), dev, 'many/renamed']);
    });

    it('refusals write nothing: no -r, several sources to a non-directory, empty or special files, an existing target, no room', () => {
      const empty = path.join(tmp, 'withempty');
      fs.mkdirSync(path.join(empty, 'x'), { recursive: true });
      fs.writeFileSync(path.join(empty, 'ok.bin'), 'data');
      fs.writeFileSync(path.join(empty, 'x', 'empty.bin'), '');
      const withLink = path.join(tmp, 'withlink');
      fs.mkdirSync(withLink);
      fs.writeFileSync(path.join(withLink, 'ok.bin'), 'data');
      fs.symlinkSync('/etc/hostname', path.join(withLink, 'link'));
      const big = path.join(tmp, 'big.bin');
      fs.writeFileSync(big, Buffer.alloc(0));
      fs.truncateSync(big, 9 * 1024 ** 3);
      refused(['cp', src, dev, 'nodash'], 2, /is a directory; use cp -r/, dev);
      refused(['cp', path.join(src, 'a.bin'), path.join(src, 'sub', 'b.bin'), dev, 'many/a.bin'], 2, /needs an existing directory.*is a file/, dev);
      refused(['cp', path.join(src, 'a.bin'), path.join(src, 'sub', 'b.bin'), dev, 'nodir'], 2, /does not exist/, dev);
      refused(['cp', '-r', empty, dev, 'e'], 2, /nothing copied:\n.*empty\.bin is empty/, dev);
      refused(['cp', '-r', withLink, dev, 'l'], 2, /link is not a regular file or directory/, dev);
      refused(['cp', '-r', src, dev, 'models'], 1, /"models\/tree\/a\.bin" already exists/, dev);
      refused(['cp', path.join(src, 'a.bin'), path.join(src, 'a.bin'), dev, 'many'], 1, /already exists/, dev);
      refused(['cp', path.join(src, 'a.bin'), dev, 'no/such/dir'], 1, /parent directory "no\/such" does not exist/, dev);
      refused(['cp', big, dev, 'big'], 1, /needs 9663676416 bytes of famfs memory but \d+ are free; nothing copied/, dev);
      refused(['cp', dev, 'x'], 2, /needs SRC\.\.\. DEVICE DEST/, dev);
    });
  });

  describe('logplay and check on a real famfs-fused mount', function () {
    let mnt: string;
    let sock: string;
    let fused: ChildProcess | undefined;
    before(async function () {
      if (!canMount) this.skip();
      mnt = path.join(tmp, 'mnt');
      sock = path.join(tmp, 'ctl', 'sock');
      fs.mkdirSync(mnt);
      // --poll-ms 0: the server replays only when asked, so logplay is what makes new files appear
      fused = spawn(process.execPath, [FUSED, dev, mnt, '--foreground', '--control-socket', sock, '--poll-ms', '0', '--log-level', 'warn'], {
        stdio: 'ignore',
      });
      const deadline = Date.now() + 15_000;
      for (;;) {
        try {
          if ((await controlRequest(sock, { op: 'status' }, 500)).ok) break;
        } catch {
          /* not up yet */
        }
        if (Date.now() > deadline) throw new Error('famfs-fused did not come up');
        await new Promise((r) => setTimeout(r, 50));
      }
    });
    after(async () => {
      if (!fused) return;
      const exited = new Promise((r) => fused!.once('exit', r));
      fused.kill('SIGTERM');
      await exited;
    });

    it('logplay MOUNTPOINT makes the server replay what the master appended since', async () => {
      ok(['creat', '-s', '1M', dev, 'late']);
      assert.equal(fs.existsSync(path.join(mnt, 'late')), false, 'not replayed yet (poll off)');
      const out = await famfsAsync(['logplay', '--control-socket', sock, mnt]);
      assert.match(out, /replayed .*: log index \d+, 1 added, 0 removed/);
      assert.equal(fs.statSync(path.join(mnt, 'late')).size, MiB);
      const dry = JSON.parse(await famfsAsync(['logplay', '--dryrun', '--json', '--control-socket', sock, mnt])) as { device: string };
      assert.equal(dry.device, dev);
    });

    it('check MOUNTPOINT: exit 0 when the mount shows the log; a directory with no server behind it is exit 1', async () => {
      assert.match(await famfsAsync(['check', '--control-socket', sock, mnt]), /files and \d+ directories match the log/);
      const r = famfs(['check', tmp]);
      assert.equal(r.code, 1, r.err);
      assert.match(r.err, /not served by a famfs-fused on this host.*famfs mount DEVICE/);
      assert.equal(famfs(['check', dev]).code, 2);
    });
  });

  describe('on the tree the copies made', () => {
    it('logplay --dryrun DEVICE lists what a host would create, in log order; logplay DEVICE explains what to run', () => {
      const r = JSON.parse(ok(['logplay', '--dryrun', '--json', dev])) as {
        nextIndex: number;
        entries: { index: number; action: string; path: string; size?: number }[];
        skipped: unknown[];
      };
      const t = ls(dev);
      assert.deepEqual(r.entries.map((e) => e.path).sort(), [...t.keys()].sort());
      assert.deepEqual(
        r.entries.map((e) => e.index),
        [...r.entries.map((e) => e.index)].sort((a, b) => a - b),
      );
      assert.equal(r.entries.find((e) => e.path === 'mapped')?.size, 5 * MiB);
      assert.equal(r.entries.find((e) => e.path === 'models')?.action, 'mkdir');
      assert.deepEqual(r.skipped, []);
      const text = ok(['logplay', '--dryrun', dev]);
      assert.match(text, /would create mapped \(5242880 bytes, 0644 0:0\)/);
      assert.match(text, /dry run: nothing changed/);
      refused(['logplay', dev], 2, /famfs logplay MOUNTPOINT.*--dryrun/, dev);
    });

    it('checkMount finds every way a tree can differ from the log (negative controls on a plain directory)', () => {
      const d = openDevice(dev, { readOnly: true });
      try {
        const fsys = FamfsFs.open(d, { readOnly: true });
        const mirror = path.join(tmp, 'mirror');
        for (const n of fsys.tree.nodes()) {
          const p = path.join(mirror, n.relpath);
          if (n.kind === 'dir') fs.mkdirSync(p, { recursive: true });
          else {
            fs.writeFileSync(p, '');
            fs.truncateSync(p, n.size);
          }
          fs.chmodSync(p, n.mode);
          fs.chownSync(p, n.uid, n.gid);
        }
        assert.deepEqual(checkMount(fsys, mirror).problems, []);
        fs.truncateSync(path.join(mirror, 'mapped'), 1);
        fs.rmSync(path.join(mirror, 'm', 'f'));
        fs.writeFileSync(path.join(mirror, 'models', 'stray'), 'x');
        fs.chmodSync(path.join(mirror, 'same'), 0o600);
        const problems = checkMount(fsys, mirror).problems.join('\n');
        assert.match(problems, /mapped: 1 bytes in the mount, 5242880 in the log/);
        assert.match(problems, /m\/f: in the log \(entry \d+\) but not in the mount/);
        assert.match(problems, /models\/stray: in the mount but not in the log/);
        assert.match(problems, /same: mount shows 0600 5:6, the log 0640 5:6/);
      } finally {
        d.close();
      }
    });

    it('famfs is runnable by name after the install step links the commands (and dist/cmd/*.js have their run bit)', () => {
      for (const b of ['famfs', 'famfs-csi', 'famfs-fused']) {
        assert.ok((fs.statSync(path.join(ROOT, 'dist', 'cmd', `${b}.js`)).mode & 0o111) !== 0, `${b}.js has no run bit`);
      }
      const bin = path.join(tmp, 'bin');
      fs.mkdirSync(bin);
      fs.writeFileSync(path.join(bin, 'famfs-fused'), '#!/bin/sh\necho not ours\n');
      const link = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'link-bins.js')], { encoding: 'utf8', env: { ...process.env, FAMFS_BIN_DIR: bin } });
      assert.equal(link.status, 0, link.stderr);
      assert.match(link.stderr, /famfs-fused exists and is not a famfs-csi link: left alone/);
      assert.equal(fs.readFileSync(path.join(bin, 'famfs-fused'), 'utf8'), '#!/bin/sh\necho not ours\n');
      const r = spawnSync('famfs', ['ls', dev], { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /mapped/);
      // linking again replaces our own links
      assert.equal(spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'link-bins.js')], { env: { ...process.env, FAMFS_BIN_DIR: bin } }).status, 0);
      assert.equal(fs.readlinkSync(path.join(bin, 'famfs')), path.join(ROOT, 'dist', 'cmd', 'famfs.js'));
    });
  });
});

/** The CLI in a child process without blocking the event loop (the FUSE server may need it). */
function famfsAsync(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, FAMFS_SYSTEM_UUID: MASTER } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`famfs ${args.join(' ')} → ${code}: ${err}${out}`))));
  });
}
