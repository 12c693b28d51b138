// pkg/mount against the real kernel: tmpfs, bind mounts, a read-only bind that refuses writes, a dead
// FUSE mount (ENOTCONN) that must still unmount, and the atomic JSON state store. Needs root.
import { strict as assert } from 'assert';
import { execFileSync, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { bindLiveness, bindMount, bindMountIfAlive, ensureTarget, removeTarget, unmount, unmountAll } from '../pkg/mount/mount';
import { MountError } from '../pkg/mount/errors';
import { findMount, isMountPoint, mountsAt, parseMountinfo, probePath } from '../pkg/mount/mountinfo';
import { JsonStateStore, nodeStateStore, StateFileError, writeFileAtomic } from '../pkg/mount/mount-records';

const isRoot = process.getuid?.() === 0;

describe('mountinfo parsing', () => {
  it('parses fields, optional fields and octal escapes', () => {
    const text =
      '36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n' +
      '40 36 0:50 / /tmp/x ro,relatime - tmpfs tmpfs rw,size=1024k\n';
    const [a, b] = parseMountinfo(text);
    assert.ok(a && b);
    assert.equal(a.mountPoint, '/mnt/with space');
    assert.equal(a.root, '/mnt1');
    assert.deepEqual(a.propagation, ['master:1', 'shared:2']);
    assert.equal(a.fsType, 'ext3');
    assert.equal(a.source, '/dev/root');
    assert.deepEqual(a.mountOptions, ['rw', 'noatime']);
    assert.deepEqual(b.propagation, []);
    assert.ok(b.mountOptions.includes('ro'));
    assert.throws(() => parseMountinfo('1 2 3\n'), /malformed/);
  });
});

(isRoot ? describe : describe.skip)('bind mounts on a real tmpfs (root)', function () {
  this.timeout(60_000);
  let base: string;
  let tmpfs: string;

  before(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'mount-test-'));
    tmpfs = path.join(base, 'tmpfs');
    fs.mkdirSync(tmpfs);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'famfs-csi-test', tmpfs]);
    fs.mkdirSync(path.join(tmpfs, 'vol'));
    fs.writeFileSync(path.join(tmpfs, 'vol', 'data'), 'hello');
  });

  after(() => {
    // Best-effort cleanup of anything a failed test left behind.
    spawnSync('umount', ['-R', '-l', tmpfs]);
    for (const name of fs.readdirSync(base)) spawnSync('umount', ['-l', path.join(base, name)]);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('sees the tmpfs in mountinfo', async () => {
    assert.ok(await isMountPoint(tmpfs));
    const m = await findMount(tmpfs);
    assert.equal(m?.fsType, 'tmpfs');
    assert.equal(m?.source, 'famfs-csi-test');
    assert.equal(await isMountPoint(base), false);
  });

  it('bind-mounts read-write, then unmounts and removes the target (idempotently)', async () => {
    const target = path.join(base, 'rw');
    await ensureTarget(target, 'dir');
    await ensureTarget(target, 'dir');
    assert.equal(await bindLiveness(target, path.join(tmpfs, 'vol')), 'other', 'an empty directory is no bind of the source');
    await bindMount(path.join(tmpfs, 'vol'), target);
    assert.ok(await isMountPoint(target));
    assert.equal(await bindLiveness(target, path.join(tmpfs, 'vol')), 'alive');
    assert.equal(await bindLiveness(target, tmpfs), 'other', 'a bind of another directory of the same filesystem');
    // Bound only from a live bind: from the bind just made, and not from a plain directory.
    const second = path.join(base, 'rw-second');
    await ensureTarget(second, 'dir');
    assert.equal(await bindMountIfAlive(target, second, { bind: second, root: path.join(tmpfs, 'vol') }), 'other');
    assert.equal(await isMountPoint(second), false, 'nothing mounted when the check fails');
    assert.equal(await bindMountIfAlive(target, second, { bind: target, root: path.join(tmpfs, 'vol') }), 'bound');
    assert.equal(fs.readFileSync(path.join(second, 'data'), 'utf8'), 'hello');
    assert.equal(await unmountAll(second), 1);
    await removeTarget(second);
    assert.equal(fs.readFileSync(path.join(target, 'data'), 'utf8'), 'hello');
    fs.writeFileSync(path.join(target, 'rwcheck'), 'x');
    assert.ok(fs.existsSync(path.join(tmpfs, 'vol', 'rwcheck')), 'write went through the bind');
    fs.unlinkSync(path.join(tmpfs, 'vol', 'rwcheck'));
    await assert.rejects(removeTarget(target), (e: unknown) => e instanceof MountError && e.code === 'EBUSY');
    assert.equal(await unmount(target), true);
    assert.equal(await unmount(target), false, 'second unmount is a no-op');
    assert.ok(fs.existsSync(path.join(tmpfs, 'vol', 'data')), 'unmount left the source alone');
    await removeTarget(target);
    await removeTarget(target);
    assert.ok(!fs.existsSync(target));
  });

  it('a read-only bind refuses writes (kernel-enforced, even for root) while the source stays writable', async () => {
    const target = path.join(base, 'ro');
    await ensureTarget(target, 'dir');
    await bindMount(path.join(tmpfs, 'vol'), target, { readOnly: true, flags: ['nosuid', 'nodev'] });
    const m = await findMount(target);
    assert.ok(m?.mountOptions.includes('ro'), `mount options ${m?.mountOptions.join(',')}`);
    assert.ok(m?.mountOptions.includes('nosuid'));
    assert.equal(m?.root, '/vol');
    assert.throws(
      () => fs.writeFileSync(path.join(target, 'data'), 'overwrite'),
      (e: NodeJS.ErrnoException) => e.code === 'EROFS',
    );
    assert.throws(
      () => fs.writeFileSync(path.join(target, 'new'), 'x'),
      (e: NodeJS.ErrnoException) => e.code === 'EROFS',
    );
    assert.equal(fs.readFileSync(path.join(target, 'data'), 'utf8'), 'hello');
    fs.writeFileSync(path.join(tmpfs, 'vol', 'data'), 'hello');
    await unmount(target);
    await removeTarget(target);
  });

  it('binds a single file onto a file target (block-style access)', async () => {
    const target = path.join(base, 'blockfile');
    await ensureTarget(target, 'file');
    await bindMount(path.join(tmpfs, 'vol', 'data'), target, { readOnly: true });
    assert.equal(fs.readFileSync(target, 'utf8'), 'hello');
    assert.throws(
      () => fs.writeFileSync(target, 'x'),
      (e: NodeJS.ErrnoException) => e.code === 'EROFS',
    );
    await unmount(target);
    await removeTarget(target);
    assert.ok(!fs.existsSync(target));
  });

  it('unmountAll removes stacked binds', async () => {
    const target = path.join(base, 'stacked');
    await ensureTarget(target, 'dir');
    await bindMount(path.join(tmpfs, 'vol'), target);
    await bindMount(path.join(tmpfs, 'vol'), target);
    assert.equal((await mountsAt(target)).length, 2);
    assert.equal(await unmountAll(target), 2);
    assert.equal(await isMountPoint(target), false);
    await removeTarget(target);
  });

  it('rejects unknown bind flags and a failed bind leaves nothing mounted', async () => {
    const target = path.join(base, 'bad');
    await ensureTarget(target, 'dir');
    await assert.rejects(bindMount(path.join(tmpfs, 'vol'), target, { flags: ['exec;rm'] }), /unsupported bind mount flags/);
    await assert.rejects(bindMount(path.join(tmpfs, 'does-not-exist'), target), (e: unknown) => e instanceof MountError && e.code === 'EMOUNT');
    assert.equal(await isMountPoint(target), false);
    await removeTarget(target);
  });

  it('mounts and unmounts with no mount(8)/umount(8) reachable (system calls, no child process)', async () => {
    const target = path.join(base, 'nochild');
    await ensureTarget(target, 'dir');
    const savedPath = process.env['PATH'];
    process.env['PATH'] = path.join(base, 'no-such-bin');
    try {
      await bindMount(path.join(tmpfs, 'vol'), target, { readOnly: true, flags: ['noexec'] });
      assert.equal(fs.readFileSync(path.join(target, 'data'), 'utf8'), 'hello');
      assert.equal(await unmountAll(target), 1);
    } finally {
      process.env['PATH'] = savedPath;
    }
    assert.equal(await isMountPoint(target), false);
    await removeTarget(target);
  });

  it('a read-only bind keeps the per-mount flags it inherited and takes the atime mode asked for', async () => {
    const src = path.join(base, 'nosuid-src');
    fs.mkdirSync(src);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,nosuid,nodev', 'famfs-csi-test', src]);
    const target = path.join(base, 'nosuid-ro');
    try {
      await ensureTarget(target, 'dir');
      await bindMount(src, target, { readOnly: true, flags: ['noatime'] });
      const m = await findMount(target);
      for (const want of ['ro', 'nosuid', 'nodev', 'noatime']) assert.ok(m?.mountOptions.includes(want), `${want} missing from ${m?.mountOptions.join(',')}`);
      assert.equal(await unmount(target), true);
      await removeTarget(target);
    } finally {
      spawnSync('umount', ['-l', target]);
      spawnSync('umount', ['-l', src]);
    }
  });

  it('a read-only bind is read-only in every namespace it propagates to (the kubelet sees what the plugin made)', async () => {
    // A shared mount, and a process in its own mount namespace whose copy of it is a peer: binds made
    // here under it appear there too, as the node plugin's binds under the Bidirectional kubelet dir
    // appear in the kubelet's (and the containers') view. Setting ro after the bind changed only this
    // namespace's copy: the peer's stayed writable (a static file volume was writable from its pods).
    const shared = path.join(base, 'shared');
    fs.mkdirSync(shared);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'famfs-csi-test', shared]);
    execFileSync('mount', ['--make-shared', shared]);
    const holder = spawn('unshare', ['--mount', '--propagation', 'unchanged', '--', 'sleep', '120'], { stdio: 'ignore' });
    try {
      const ours = fs.readlinkSync('/proc/self/ns/mnt');
      for (let i = 0; i < 100 && fs.readlinkSync(`/proc/${holder.pid}/ns/mnt`) === ours; i++) await new Promise((r) => setTimeout(r, 50));
      assert.notEqual(fs.readlinkSync(`/proc/${holder.pid}/ns/mnt`), ours, 'the holder has no mount namespace of its own');
      for (const [src, kind] of [
        [path.join(tmpfs, 'vol'), 'dir'],
        [path.join(tmpfs, 'vol', 'data'), 'file'],
      ] as const) {
        const target = path.join(shared, kind);
        await ensureTarget(target, kind);
        await bindMount(src, target, { readOnly: true, flags: ['nosuid'] });
        assert.ok((await findMount(target))?.mountOptions.includes('ro'), `${kind}: not ro here`);
        const theirs = parseMountinfo(fs.readFileSync(`/proc/${holder.pid}/mountinfo`, 'utf8')).find((m) => m.mountPoint === target);
        assert.ok(theirs, `${kind}: the bind did not propagate to the peer namespace`);
        for (const want of ['ro', 'nosuid'])
          assert.ok(theirs.mountOptions.includes(want), `${kind}: ${want} missing in the peer namespace: ${theirs.mountOptions.join(',')}`);
        assert.equal(await unmount(target), true);
      }
    } finally {
      holder.kill('SIGKILL');
      spawnSync('umount', ['-R', '-l', shared]);
    }
  });

  it('detects a dead FUSE mount (ENOTCONN) and still unmounts it', async () => {
    const target = path.join(base, 'deadfuse');
    fs.mkdirSync(target);
    // A FUSE mount whose only /dev/fuse descriptor is closed right away: the connection is aborted,
    // exactly what pods see after the FUSE server died.
    const fd = fs.openSync('/dev/fuse', 'r+');
    try {
      const r = spawnSync('mount', ['-i', '-t', 'fuse', '-o', 'fd=3,rootmode=40000,user_id=0,group_id=0', 'famfs-dead', target], {
        stdio: ['ignore', 'pipe', 'pipe', fd],
      });
      assert.equal(r.status, 0, `mount fuse: ${r.stderr?.toString()}`);
    } finally {
      fs.closeSync(fd);
    }
    assert.ok(await isMountPoint(target));
    const probe = await probePath(target);
    assert.equal(probe.health, 'disconnected', `stat said ${probe.error?.code}`);
    // A bind of the dead mount (what a pod's volume would be) is also disconnected and also removable.
    const bind = path.join(base, 'deadbind');
    fs.mkdirSync(bind);
    execFileSync('mount', ['--bind', target, bind]);
    assert.equal((await probePath(bind)).health, 'disconnected');
    assert.notEqual(await bindLiveness(bind, target), 'alive', 'a bind of a dead FUSE mount is not alive');
    assert.equal(await unmount(bind), true);
    await removeTarget(bind);
    assert.equal(await unmount(target), true);
    assert.equal(await isMountPoint(target), false);
    assert.equal((await probePath(target)).health, 'ok');
    await removeTarget(target);
  });
});

describe('JSON state store', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'state-test-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('persists node state across store instances (a plugin restart)', async () => {
    const stateDir = path.join(dir, 'node');
    const a = nodeStateStore(stateDir);
    assert.deepEqual(await a.load(), { version: 1, staged: {}, published: {} });
    await a.update((d) => {
      d.staged['/stage/v1'] = {
        volumeId: 'vol-1',
        stagingPath: '/stage/v1',
        famfsMount: '/mnt/famfs',
        readOnly: false,
        accessMode: 'SINGLE_NODE_WRITER',
        stagedAt: 'now',
      };
    });
    await a.update((d) => {
      d.published['/pods/p1'] = {
        volumeId: 'vol-1',
        targetPath: '/pods/p1',
        source: '/mnt/famfs/csi/vol-1',
        kind: 'mount',
        readOnly: true,
        accessMode: 'SINGLE_NODE_WRITER',
        flags: [],
        publishedAt: 'now',
      };
    });
    const b = nodeStateStore(stateDir);
    const doc = await b.load();
    assert.equal(doc.staged['/stage/v1']?.volumeId, 'vol-1');
    assert.equal(doc.published['/pods/p1']?.readOnly, true);
    const st = fs.statSync(b.file);
    assert.equal(st.mode & 0o777, 0o600);
    assert.deepEqual(
      fs.readdirSync(stateDir).filter((n) => n.endsWith('.tmp')),
      [],
      'no temp files left',
    );
  });

  it('serializes concurrent updates without losing any', async () => {
    const store = new JsonStateStore<{ n: number; seen: number[] }>(path.join(dir, 'counter.json'), {
      initial: () => ({ n: 0, seen: [] }),
      validate: (d) => d as { n: number; seen: number[] },
    });
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        store.update((d) => {
          d.n++;
          d.seen.push(i);
        }),
      ),
    );
    const fresh = new JsonStateStore<{ n: number; seen: number[] }>(store.file, {
      initial: () => ({ n: -1, seen: [] }),
      validate: (d) => d as { n: number; seen: number[] },
    });
    const doc = await fresh.load();
    assert.equal(doc.n, 50);
    assert.equal(new Set(doc.seen).size, 50);
  });

  it('a failed update changes nothing and later updates still run', async () => {
    const store = new JsonStateStore<{ v: number }>(path.join(dir, 'fail.json'), { initial: () => ({ v: 1 }), validate: (d) => d as { v: number } });
    await store.update((d) => {
      d.v = 2;
    });
    await assert.rejects(
      store.update(() => {
        throw new Error('nope');
      }),
      /nope/,
    );
    assert.equal((await store.load()).v, 2);
    await store.update((d) => {
      d.v = 3;
    });
    assert.equal((JSON.parse(fs.readFileSync(store.file, 'utf8')) as { v: number }).v, 3);
  });

  it('keeps publish records in their own journal, appended without fsync; staging records stay in the durable file', async () => {
    const stateDir = path.join(dir, 'split');
    const a = nodeStateStore(stateDir);
    await a.update((d) => {
      d.staged['/stage/v1'] = {
        volumeId: 'vol-1',
        stagingPath: '/stage/v1',
        famfsMount: '/mnt/famfs',
        readOnly: false,
        accessMode: 'SINGLE_NODE_WRITER',
        stagedAt: 'now',
      };
    });
    const journalSize = fs.statSync(a.journalFile).size;
    await a.update((d) => {
      d.published['/pods/p1'] = {
        volumeId: 'vol-1',
        targetPath: '/pods/p1',
        source: '/stage/v1',
        kind: 'mount',
        readOnly: false,
        accessMode: 'SINGLE_NODE_WRITER',
        flags: [],
        publishedAt: 'now',
      };
    });
    a.close();
    assert.deepEqual((JSON.parse(fs.readFileSync(a.file, 'utf8')) as { published: unknown }).published, {}, 'publish records stay out of the durable file');
    assert.ok(fs.statSync(a.journalFile).size > journalSize, 'the publish appended to the journal');
    const b = nodeStateStore(stateDir);
    const doc = await b.load();
    b.close();
    assert.equal(doc.published['/pods/p1']?.volumeId, 'vol-1');
    assert.equal(doc.staged['/stage/v1']?.volumeId, 'vol-1');
  });

  it('reports a corrupt or foreign state file instead of starting empty', async () => {
    const stateDir = path.join(dir, 'corrupt');
    await writeFileAtomic(path.join(stateDir, 'node-state.json'), '{"version":1,"staged":');
    await assert.rejects(nodeStateStore(stateDir).load(), (e: unknown) => e instanceof StateFileError && e.code === 'ECORRUPT');
    await writeFileAtomic(path.join(stateDir, 'node-state.json'), '{"version":7,"staged":{},"published":{}}');
    await assert.rejects(nodeStateStore(stateDir).load(), (e: unknown) => e instanceof StateFileError && e.code === 'EVERSION');
  });
});
