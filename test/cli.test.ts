/**
 * The famfs CLI as users run it: a real process on a real emulation file.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { openDevice } from '../pkg/device';
import { FamfsFs } from '../pkg/famfs/fs';

const CLI = path.resolve(__dirname, '..', 'cmd', 'famfs.js');
const MASTER = '11111111-2222-4333-8444-555555555555';
const CLIENT = '99999999-8888-4777-8666-555555555555';

function famfs(args: string[], uuid = MASTER): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, FAMFS_SYSTEM_UUID: uuid } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function metadata(dev: string): Buffer {
  const fd = fs.openSync(dev, 'r');
  const b = Buffer.alloc(10 << 20);
  fs.readSync(fd, b, 0, b.length, 0);
  fs.closeSync(fd);
  return b;
}

describe('famfs CLI', () => {
  const dev = `/dev/shm/famfs-cli-test-${process.pid}.img`;
  let tmp: string;

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-cli-'));
    const r = famfs(['mkfs', '--size', '8G', dev]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /15420 entries/);
  });
  after(() => {
    fs.rmSync(dev, { force: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('mkdir, creat, cp, ls --json show every file with size, mode, owner and extents', () => {
    assert.equal(famfs(['mkdir', '-p', '-m', '0750', '-u', '1000', '-g', '1000', dev, 'data/sets']).code, 0);
    const c = famfs(['creat', '-s', '3M', '-m', '0600', '-u', '7', '-g', '8', '-S', '42', dev, 'data/sets/seeded']);
    assert.equal(c.code, 0, c.err);
    const src = path.join(tmp, 'src.bin');
    fs.writeFileSync(src, crypto.randomBytes(5 * 1024 * 1024 + 17));
    const cp = famfs(['cp', src, dev, 'data/copy']);
    assert.equal(cp.code, 0, cp.err);
    const ls = famfs(['ls', '--json', dev]);
    assert.equal(ls.code, 0, ls.err);
    const entries = (
      JSON.parse(ls.out) as {
        entries: { path: string; type: string; size?: number; mode: string; uid: number; gid: number; extents?: { offset: number; len: number }[] }[];
      }
    ).entries;
    const byPath = new Map(entries.map((e) => [e.path, e]));
    assert.deepEqual([...byPath.keys()].sort(), ['data', 'data/copy', 'data/sets', 'data/sets/seeded']);
    const seeded = byPath.get('data/sets/seeded')!;
    assert.equal(seeded.size, 3 * 1024 * 1024);
    assert.equal(seeded.mode, '0600');
    assert.equal(seeded.uid, 7);
    assert.equal(seeded.gid, 8);
    assert.deepEqual(seeded.extents, [{ offset: 10 << 20, len: 4 << 20 }]);
    assert.equal(byPath.get('data/sets')!.mode, '0750');
    assert.equal(byPath.get('data/copy')!.size, 5 * 1024 * 1024 + 17);
    assert.equal(famfs(['verify', '--compare', src, dev, 'data/copy']).code, 0);
    assert.equal(famfs(['verify', '-S', '42', dev, 'data/sets/seeded']).code, 0);
    const wrong = famfs(['verify', '-S', '43', dev, 'data/sets/seeded']);
    assert.equal(wrong.code, 3);
    assert.match(wrong.out, /MISMATCH/);
  });

  it('a client host can read and verify but not write', () => {
    assert.equal(famfs(['verify', '-S', '42', dev, 'data/sets/seeded'], CLIENT).code, 0);
    const r = famfs(['creat', '-s', '1M', dev, 'client-file'], CLIENT);
    assert.equal(r.code, 1);
    assert.match(r.err, /not the famfs master/);
  });

  it('fsck --json reports files, dirs, space and exits 0 when clean', () => {
    const r = famfs(['fsck', '--json', dev]);
    assert.equal(r.code, 0, r.out);
    const rep = JSON.parse(r.out) as {
      clean: boolean;
      files: number;
      directories: number;
      space: { freeBytes: number; largestFreeBytes: number; allocatedBytes: number };
    };
    assert.equal(rep.clean, true);
    assert.equal(rep.files, 2);
    assert.equal(rep.directories, 2);
    assert.equal(rep.space.allocatedBytes, (10 + 4 + 6) << 20);
    assert.equal(rep.space.freeBytes + rep.space.allocatedBytes, 8 * 1024 ** 3);
  });

  it('bad input: clear message, right exit code, nothing written', () => {
    const before = metadata(dev);
    const cases: [string[], number, RegExp][] = [
      [['creat', '-s', '0', dev, 'z'], 2, /at least 1/],
      [['creat', '-s', '4m', dev, 'z'], 2, /lowercase "m".*4Mi/],
      [['creat', '-s', '12Q', dev, 'z'], 2, /not a size/],
      [['creat', '-s', '1M', '-m', '0999', dev, 'z'], 2, /octal/],
      [['creat', '-s', '1M', dev, '../escape'], 2, /"\."/],
      [['creat', '-s', '1M', dev, '/abs'], 2, /relative/],
      [['creat', '-s', '1M', dev, 'x'.repeat(80)], 2, /at most 79/],
      [['creat', '-s', '1M', dev, 'data/copy'], 1, /already exists/],
      [['creat', '-s', '1M', dev, 'nodir/file'], 1, /does not exist/],
      [['creat', '-s', '100G', dev, 'huge'], 1, /no free extent/],
      [['creat', '-s', '64M', '--nstrips', '4', dev, 'half'], 2, /--nbuckets/],
      [['creat', '-s', '64M', '--nstrips', '9', '--nbuckets', '8', dev, 'i'], 2, /nstrips/],
      [['creat', dev, 'nosize'], 2, /size/],
      [['mkdir', dev, 'a/b/c'], 1, /use -p/],
      [['rm', dev, 'nothing'], 1, /does not exist/],
      [['mkfs', dev], 1, /--force/],
      [['mkfs', '--loglen', '3M', '--force', dev], 2, /power of two/],
      [['ls', '/dev/shm/does-not-exist.img'], 1, /No such file/],
      [['cp', '/nonexistent-src', dev, 'x'], 1, /no such file/i],
      [['frobnicate'], 2, /unknown command/],
    ];
    for (const [args, code, msg] of cases) {
      const r = famfs(args);
      assert.equal(r.code, code, `famfs ${args.join(' ')} → ${r.code} ${r.err}`);
      assert.match(r.err + r.out, msg, `famfs ${args.join(' ')}`);
    }
    assert.ok(metadata(dev).equals(before), 'superblock and log unchanged');
  });

  it('rm frees a file (extension) and fsck stays clean; a non-famfs device is refused', () => {
    const r = famfs(['rm', dev, 'data/copy']);
    assert.equal(r.code, 0, r.err);
    assert.equal(famfs(['fsck', dev]).code, 0);
    const plain = path.join('/dev/shm', `not-famfs-${process.pid}.img`);
    fs.writeFileSync(plain, Buffer.alloc(64 << 20));
    try {
      const f = famfs(['fsck', plain]);
      assert.equal(f.code, 3);
      assert.match(f.out, /no famfs superblock/);
      const l = famfs(['ls', plain]);
      assert.equal(l.code, 1);
      assert.match(l.err, /mkfs/);
    } finally {
      fs.rmSync(plain);
    }
  });

  it('fsck exits 3 and names a corrupted entry', () => {
    const copy = `/dev/shm/famfs-cli-corrupt-${process.pid}.img`;
    // Metadata only (a sparse copy of the whole 8 GiB would be slow to read back).
    fs.writeFileSync(copy, metadata(dev));
    fs.truncateSync(copy, fs.statSync(dev).size);
    try {
      const fd = fs.openSync(copy, 'r+');
      const at = 0x200000 + 48 + 544 * 1 + 40; // inside entry 1's path
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, at);
      b[0] ^= 0xff;
      fs.writeSync(fd, b, 0, 1, at);
      fs.closeSync(fd);
      const r = famfs(['fsck', copy]);
      assert.equal(r.code, 3);
      assert.match(r.out, /log entry 1: CRC mismatch/);
    } finally {
      fs.rmSync(copy);
    }
  });

  it('repair quarantines an entry it cannot prove, fsck shows it, --release hands it back; an unknown-memory entry needs --drop', () => {
    const img = `/dev/shm/famfs-cli-quarantine-${process.pid}.img`;
    try {
      assert.equal(famfs(['mkfs', '--size', '64M', img]).code, 0);
      for (const n of ['a', 'b', 'c']) assert.equal(famfs(['creat', '-s', '2M', img, n]).code, 0);
      const poke = (index: number, pos: number, mask: number) => {
        const fd = fs.openSync(img, 'r+');
        const at = 0x200000 + 48 + 544 * index + pos;
        const b = Buffer.alloc(1);
        fs.readSync(fd, b, 0, 1, at);
        b[0] ^= mask;
        fs.writeSync(fd, b, 0, 1, at);
        fs.closeSync(fd);
      };
      poke(1, 16 + 24 + 1, 0x20); // two damaged bytes in entry 1 ("b"): its name and its uid
      poke(1, 16 + 12, 0x01);
      const r = famfs(['repair', img]);
      assert.equal(r.code, 0, r.err + r.out);
      assert.match(r.out, /quarantined log entry 1 as lost\+found\.1: 2097152 bytes stay reserved/);
      const f = famfs(['fsck', img]);
      assert.equal(f.code, 0, f.out);
      assert.match(f.out, /quarantined: {2}lost\+found\.1 \(log entry 1\)/);
      assert.equal(famfs(['repair', '--release', '2', img]).code, 1, 'entry 2 is not quarantined');
      const rel = famfs(['repair', '--release', '1', img]);
      assert.equal(rel.code, 0, rel.err + rel.out);
      assert.doesNotMatch(famfs(['fsck', img]).out, /quarantined/);
      // Entry 2's extent pointed at entry 0's memory: its own memory is unknown.
      const fd = fs.openSync(img, 'r+');
      const ext0 = Buffer.alloc(8);
      fs.readSync(fd, ext0, 0, 8, 0x200000 + 48 + 16 + 104 + 16 + 8);
      fs.writeSync(fd, ext0, 0, 8, 0x200000 + 48 + 544 * 2 + 16 + 104 + 16 + 8);
      fs.closeSync(fd);
      poke(2, 16 + 12, 0x01); // and its uid: no single byte explains the damage
      const refused = famfs(['repair', img]);
      assert.equal(refused.code, 1, refused.out);
      assert.match(refused.err, /--drop 2/);
      assert.equal(famfs(['repair', '--drop', '2', img]).code, 0);
      assert.equal(famfs(['fsck', img]).code, 0);
    } finally {
      fs.rmSync(img, { force: true });
    }
  });

  it('hosts shows each slot, the liveness window, and the host the master timed out with the memory reused after it', () => {
    const img = `/dev/shm/famfs-cli-hosts-${process.pid}-${crypto.randomBytes(4).toString('hex')}.img`;
    const dev = openDevice(img, { create: { size: 64 << 20 } });
    try {
      FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: img, hostLiveMs: 1000 });
      let mono = 0;
      const master = FamfsFs.open(dev, { hostUuid: MASTER, monotonicNow: () => mono });
      master.creat('gone', 4 << 20);
      FamfsFs.open(dev, { hostUuid: CLIENT }).ackReplay(CLIENT, 'node-b');
      master.hostLiveness();
      master.rm('gone');
      let r = famfs(['hosts', img]);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /unchanged for 1000 ms/);
      assert.match(r.out, /slot 0: node-b 99999999-8888-4777-8666-555555555555 acked 1, ack #\d+/);
      assert.match(r.out, /no host was timed out/);
      mono += 1000;
      master.creat('new', 2 << 20); // node-b silent for the whole window: timed out
      r = famfs(['hosts', img]);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /timed out \d{4}-\d\d-\d\dT.*: node-b 99999999-8888-4777-8666-555555555555 \(slot 0\) after 1 s silent, acked 1 of 2/);
      assert.match(r.out, /memory of gone \(deleted at 1\) became reusable: 0x[0-9a-f]+\+4194304/);
      const j = JSON.parse(famfs(['hosts', '--json', img]).out) as {
        hostLiveMs: number;
        evictions: { hostUuid: string; name: string; reusableBytes: number; reusable: { relpath: string }[] }[];
      };
      assert.equal(j.hostLiveMs, 1000);
      assert.equal(j.evictions.length, 1);
      assert.equal(j.evictions[0].name, 'node-b');
      assert.deepEqual(
        j.evictions[0].reusable.map((x) => x.relpath),
        ['gone'],
      );
      assert.equal(j.evictions[0].reusableBytes, 4 << 20);
    } finally {
      dev.close();
      fs.rmSync(img, { force: true });
    }
  });
});
