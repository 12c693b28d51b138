/**
 * The read-only guard of famfs-fused (issue 12), with a real famfs-fused, real bind mounts and real
 * mount namespaces: root with CAP_SYS_ADMIN in its own mount namespace (what a privileged pod is)
 * remounts its read-only bind of a shared directory `rw`; the kernel then lets its writes through to
 * the FUSE server, which must refuse every change with EROFS for the files this host serves
 * read-only, and leave the bytes in the memory as they were. The guard must hold across a kill -9 of
 * famfs-fused (the connection kept by an fd deposit holder, as the node plugin does) and across a
 * planned handover, from the first request the new server answers. Needs root and /dev/fuse.
 */
import { strict as assert } from 'assert';
import { execFileSync, spawn, spawnSync } from 'child_process';
import { createHash, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';

import { openDevice, type DaxDevice } from '../pkg/device/index.js';
import { forEachDeviceRun } from '../pkg/famfs/fmap.js';
import { FamfsFs } from '../pkg/famfs/fs.js';
import type { FileNode } from '../pkg/famfs/tree.js';
import { depositSocketFor, FdDepositHolder } from '../pkg/fuse/deposit.js';
import { controlRequest } from '../pkg/fuse/control-client.js';
import { guardFileFor } from '../pkg/fuse/guard.js';
import { requestHandover } from '../pkg/fuse/handover.js';
import { depositNative } from '../pkg/fuse/native.js';
import { canMount, FusedHost, sleep } from './helpers/fused-host.js';
import { PY_WRITE_ATTEMPTS } from './helpers/write-attempts.js';

const MIB = 1024 ** 2;
const MASTER_UUID = '0f0e0d0c-0b0a-4909-8807-0605040302ee';
const POLL = ['--poll-ms', '50'];

/**
 * Tries every way to change a file through `target` (a bind of a directory) and prints one JSON
 * object: operation -> "OK" or the errno name. Runs inside the namespace that remounted it rw.
 */
const ATTEMPTS = `${PY_WRITE_ATTEMPTS}${String.raw`
d = sys.argv[1]
f = os.path.join(d, 'frozen')
def rdwr():
    os.close(os.open(f, os.O_RDWR))
def mmap_shared_write():
    fd = os.open(f, os.O_RDWR)
    try:
        m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        m[0:5] = b'PWNED'; m.flush(); m.close()
    finally: os.close(fd)
def mmap_rdonly_fd():
    fd = os.open(f, os.O_RDONLY)
    try: mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE).close()
    finally: os.close(fd)
size = os.stat(f).st_size
attempt('write', write)
attempt('O_RDWR', rdwr)
attempt('mmap(PROT_WRITE, MAP_SHARED)', mmap_shared_write)
attempt('truncate', lambda: os.truncate(f, 0))
attempt('same-size truncate', lambda: os.truncate(f, size))
attempt('O_TRUNC', lambda: os.close(os.open(f, os.O_WRONLY | os.O_TRUNC)))
attempt('chmod', lambda: os.chmod(f, 0o600))
attempt('utime', lambda: os.utime(f, (1, 1)))
attempt('setxattr', lambda: os.setxattr(f, 'user.x', b'1'))
attempt('create', lambda: os.close(os.open(os.path.join(d, 'new'), os.O_CREAT | os.O_WRONLY, 0o644)))
attempt('unlink', lambda: os.unlink(f))
attempt('rename', lambda: os.rename(f, os.path.join(d, 'moved')))
out['mmap of an O_RDONLY fd'] = 'OK'
attempt('mmap of an O_RDONLY fd', mmap_rdonly_fd)
print(json.dumps(out))
`}`;

/** Every attempt refused with EROFS; mapping an O_RDONLY descriptor writable is the kernel's EACCES. */
const ALL_REFUSED: Record<string, string> = {
  write: 'EROFS',
  O_RDWR: 'EROFS',
  'mmap(PROT_WRITE, MAP_SHARED)': 'EROFS',
  truncate: 'EROFS',
  'same-size truncate': 'EROFS',
  O_TRUNC: 'EROFS',
  chmod: 'EROFS',
  utime: 'EROFS',
  setxattr: 'EROFS',
  create: 'EROFS',
  unlink: 'EROFS',
  rename: 'EROFS',
  'mmap of an O_RDONLY fd': 'EACCES',
};

/** `mount -o remount,bind,rw TARGET` in a new mount namespace (root, CAP_SYS_ADMIN), then `python3 -c SCRIPT TARGET`. */
function privilegedPodArgs(target: string, script: string): string[] {
  return [
    '-m',
    '--propagation',
    'private',
    'sh',
    '-c',
    'mount -o remount,bind,rw "$1" || { echo "remount failed" >&2; exit 97; }; exec python3 -c "$2" "$1"',
    'sh',
    target,
    script,
  ];
}

function privilegedPod(target: string, script = ATTEMPTS): Record<string, string> {
  const r = spawnSync('unshare', privilegedPodArgs(target, script), { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `remount,bind,rw and the attempts must run (a CAP_SYS_ADMIN pod can remount): ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as Record<string, string>;
}

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

(canMount ? describe : describe.skip)('famfs-fused read-only guard (a CAP_SYS_ADMIN pod remounting its read-only bind rw)', function () {
  this.timeout(120_000);
  const id = `${process.pid}-${randomBytes(3).toString('hex')}`;
  let dir: string;
  let devPath: string;
  let dev: DaxDevice;
  let master: FamfsFs;
  let host: FusedHost;
  let holder: FdDepositHolder;
  let target: string;
  let original: Buffer;
  const binds: string[] = [];
  const extraHosts: FusedHost[] = [];

  /** The frozen file's bytes in the memory (not through any mount). */
  function memory(): Buffer {
    master.catchUp();
    const file = master.lookup('share/frozen') as FileNode;
    const out = Buffer.alloc(file.size);
    forEachDeviceRun(file.fmap, 0, file.size, (devOff, fileOff, len) => {
      dev.invalidate(devOff, len);
      dev.read(devOff, len).copy(out, fileOff);
    });
    return out;
  }

  function restoreOriginal(): void {
    const file = master.lookup('share/frozen') as FileNode;
    forEachDeviceRun(file.fmap, 0, file.size, (devOff, fileOff, len) => {
      dev.write(devOff, original.subarray(fileOff, fileOff + len));
      dev.flush(devOff, len);
    });
  }

  /** A read-only bind of the share directory, as a read-only publish makes it. */
  function roBind(name: string, from: FusedHost): string {
    const t = path.join(dir, name);
    fs.mkdirSync(t, { recursive: true });
    execFileSync('mount', ['--bind', from.p('share'), t]);
    binds.push(t);
    execFileSync('mount', ['-o', 'remount,bind,ro', t]);
    return t;
  }

  function assertUnchanged(what: string): void {
    assert.equal(sha(memory()), sha(original), `${what}: the shared bytes in the memory are unchanged`);
    assert.equal(fs.statSync(path.join(target, 'frozen')).size, original.length, `${what}: the size is unchanged`);
    assert.deepEqual(fs.readdirSync(target).sort(), ['frozen', 'other'], `${what}: the directory is unchanged`);
  }

  async function guard(h: FusedHost, readOnly: string[], writable: string[] = []): Promise<void> {
    await h.ctl({ op: 'guard', readOnly, writable });
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-guard-'));
    devPath = `/dev/shm/famfs-guard-${id}`;
    dev = openDevice(devPath, { create: { size: 256 * MIB } });
    master = FamfsFs.mkfs(dev, { systemUuid: MASTER_UUID, devicePath: devPath });
    master.mkdir('share', { mode: 0o755 });
    master.creat('share/frozen', 4 * MIB, { mode: 0o666 });
    master.creat('share/other', 2 * MIB, { mode: 0o666 });
    master.creat('free', 2 * MIB, { mode: 0o666 });
    master.creat('modeless', 2 * MIB, { mode: 0o444 });
    original = randomBytes(4 * MIB);
    restoreOriginal();
    // The node plugin's part: hold a copy of the server's FUSE connection (fd deposit).
    const ctl = path.join(dir, 'ctl-g', 'sock');
    fs.mkdirSync(path.dirname(ctl), { recursive: true, mode: 0o700 });
    holder = FdDepositHolder.start(depositSocketFor(ctl), 60_000, pino({ level: 'silent' }));
    host = await FusedHost.start('g', devPath, dir, [...POLL, '--fd-deposit', depositSocketFor(ctl)]);
    target = roBind('pod-ro', host);
  });

  after(async () => {
    for (const t of binds.reverse()) spawnSync('umount', ['-l', t]);
    for (const h of [...extraHosts, host]) if (h?.alive) await h.stop().catch(() => undefined);
    holder?.stop();
    dev?.close();
    fs.rmSync(devPath, { force: true });
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('negative control: without the guard, the remounted bind writes the shared bytes', () => {
    const r = privilegedPod(
      target,
      String.raw`
import os, sys
fd = os.open(os.path.join(sys.argv[1], 'frozen'), os.O_RDWR)
os.pwrite(fd, b'PWNED', 0); os.close(fd)
print('{"write": "OK"}')`,
    );
    assert.deepEqual(r, { write: 'OK' });
    assert.equal(memory().subarray(0, 5).toString(), 'PWNED', 'the write reached the shared memory');
    restoreOriginal();
  });

  it('guarded: write, O_RDWR, mmap(PROT_WRITE, MAP_SHARED), truncate, metadata and names all fail with EROFS; the bytes stay', async () => {
    await guard(host, ['share']);
    // Drop the page cache the negative control left, so reads below come from the memory.
    await host.ctl({ op: 'invalidate', path: 'share/frozen' });
    assert.deepEqual(privilegedPod(target), ALL_REFUSED);
    assertUnchanged('after every attempt');
    assert.equal(sha(fs.readFileSync(path.join(target, 'frozen'))), sha(original), 'readers still read the original bytes');
    // Through the host's own mount too (no bind flag involved at all), and the guard is per path:
    // a file outside it stays writable.
    assert.throws(() => fs.openSync(host.p('share/other'), 'r+'), /EROFS/);
    const fd = fs.openSync(host.p('free'), 'r+');
    fs.writeSync(fd, 'still writable', 0);
    fs.closeSync(fd);
    const { ok, ...shown } = await host.ctl({ op: 'guard-show' });
    assert.deepEqual({ ok, ...shown }, { ok: true, readOnly: ['share'], writable: [], file: guardFileFor(host.socket) });
    assert.deepEqual((await host.ctl({ op: 'status' }))['guard'], { readOnly: 1, writable: 0, file: guardFileFor(host.socket) }, 'status only counts');
  });

  it('a read-write publish of the file lifts the guard for it; setting the guard back refuses again', async () => {
    await guard(host, ['share'], ['share/frozen']);
    const r = privilegedPod(
      target,
      String.raw`
import os, sys
fd = os.open(os.path.join(sys.argv[1], 'frozen'), os.O_RDWR)
os.pwrite(fd, b'LEGIT', 0); os.close(fd)
try:
    os.open(os.path.join(sys.argv[1], 'other'), os.O_RDWR); print('{"other": "OK"}')
except OSError as e:
    print('{"other": "%s"}' % ('EROFS' if e.errno == 30 else e.errno))`,
    );
    assert.deepEqual(r, { other: 'EROFS' }, 'only the file published read-write is lifted');
    assert.equal(memory().subarray(0, 5).toString(), 'LEGIT');
    restoreOriginal();
    await guard(host, ['share']);
    await host.ctl({ op: 'invalidate', path: 'share/frozen' });
    assert.deepEqual(privilegedPod(target), ALL_REFUSED);
    assertUnchanged('guard set again');
  });

  it('kill -9 of famfs-fused: the server adopting the held connection refuses a write that was waiting for it', async () => {
    await guard(host, ['share']);
    const old = host;
    old.proc.kill('SIGKILL');
    await old.exited;
    // The privileged pod's open(O_RDWR) is sent while no server runs: it waits in the held
    // connection and is the first request the new server answers (resent at adoption).
    const pod = spawn('unshare', privilegedPodArgs(target, ATTEMPTS), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    pod.stdout.on('data', (d: Buffer) => (out += d.toString()));
    pod.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const podExit = new Promise<number | null>((resolve) => pod.once('exit', resolve));
    await sleep(1000);
    assert.equal(pod.exitCode, null, `the pod's first request waits for a server (it exited early: ${out}${err})`);
    host = await FusedHost.restart(old, 'g2', devPath, [...POLL, '--fd-deposit', depositSocketFor(old.socket)]);
    assert.equal(await Promise.race([podExit, sleep(30_000).then(() => 'timeout')]), 0, `the pod's attempts completed: ${out}${err}`);
    assert.deepEqual(JSON.parse(out.trim()), ALL_REFUSED);
    assert.deepEqual((await host.ctl({ op: 'guard-show' }))['readOnly'], ['share'], 'the new server read the guard before serving');
    assertUnchanged('after kill -9 and adoption');
  });

  it('planned handover (--takeover): the new server refuses from its first request', async () => {
    await guard(host, ['share']);
    const old = host;
    host = await FusedHost.takeOver(old, 'g3', devPath, [...POLL, '--fd-deposit', depositSocketFor(old.socket)]);
    assert.equal(await Promise.race([old.exited, sleep(10_000).then(() => 'still running')]), 0, 'the old server handed over and exited');
    assert.deepEqual(privilegedPod(target), ALL_REFUSED);
    assertUnchanged('after the handover');
  });

  it('while it hands its connection over, the old server refuses guard changes with EAGAIN (the new server read the file already)', async () => {
    await guard(host, ['share']);
    const file = guardFileFor(host.socket);
    const before = fs.readFileSync(file, 'utf8');
    // The new server's first step, by hand: the old one stops answering and sends its fds.
    const conn = await requestHandover(host.socket);
    try {
      const r = await controlRequest(host.socket, { op: 'guard', readOnly: [], writable: [] });
      assert.equal(r.ok, false);
      assert.equal(r.ok === false ? r.code : '', 'EAGAIN', JSON.stringify(r));
      assert.equal(fs.readFileSync(file, 'utf8'), before, 'the guard file is unchanged');
    } finally {
      for (const fd of conn.fds) depositNative().fuseCloseFd(fd); // never confirmed: the old server serves again
    }
    let r = await controlRequest(host.socket, { op: 'guard', readOnly: ['share'], writable: [] });
    for (let i = 0; i < 150 && !r.ok; i++) {
      await sleep(100);
      r = await controlRequest(host.socket, { op: 'guard', readOnly: ['share'], writable: [] });
    }
    assert.equal(r.ok, true, `the old server takes guard changes again once the handover was given up: ${JSON.stringify(r)}`);
    assert.deepEqual(privilegedPod(target), ALL_REFUSED);
  });

  it('an unreadable guard file guards everything (fail closed) until a guard is sent', async () => {
    const file = guardFileFor(host.socket);
    const old = host;
    old.proc.kill('SIGKILL');
    await old.exited;
    fs.writeFileSync(file, '{not json');
    host = await FusedHost.restart(old, 'g4', devPath, [...POLL, '--fd-deposit', depositSocketFor(old.socket)]);
    assert.throws(() => fs.openSync(host.p('free'), 'r+'), /EROFS/, 'every file is read-only');
    assert.match(host.log, /read-only guard unreadable/);
    await guard(host, ['share']);
    fs.closeSync(fs.openSync(host.p('free'), 'r+'));
    assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { readOnly: ['share'], writable: [] }, 'the file holds what was sent');
    assertUnchanged('fail closed');
  });

  it("a file whose mode has no write bits: the kernel's check (EACCES for non-root, root may write, as on any file system); guarded, EROFS for root too", async () => {
    fs.chmodSync(dir, 0o711); // nobody may reach the mount (the file's mode is what refuses it)
    const asNobody = (flags = 'r+'): string =>
      spawnSync(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          '-e',
          "try { require('fs').openSync(process.argv[1], process.argv[2]); console.log('OK') } catch (e) { console.log(e.code) }",
          host.p('modeless'),
          flags,
        ],
        { encoding: 'utf8' },
      ).stdout.trim();
    assert.equal(asNobody('r'), 'OK', 'nobody reaches and reads it');
    assert.equal(asNobody(), 'EACCES');
    fs.closeSync(fs.openSync(host.p('modeless'), 'r+'));
    await guard(host, ['share', 'modeless']);
    assert.throws(() => fs.openSync(host.p('modeless'), 'r+'), /EROFS/);
    assert.equal(asNobody(), 'EACCES', 'the kernel refuses first');
    await guard(host, ['share']);
  });

  it('rejects a malformed guard request with EINVAL and keeps the guard it had', async () => {
    for (const bad of [
      { op: 'guard', readOnly: 'share' },
      { op: 'guard', readOnly: ['../etc'] },
      { op: 'guard', readOnly: [1] },
    ]) {
      await assert.rejects(host.ctl(bad as never), /EINVAL/, JSON.stringify(bad));
    }
    assert.deepEqual((await host.ctl({ op: 'guard-show' }))['readOnly'], ['share']);
  });
});
