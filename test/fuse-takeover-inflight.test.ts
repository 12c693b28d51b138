// Planned takeover (famfs-fused --takeover, the chart's helm upgrade) while readers hammer the mount:
// every request the old server read but did not answer must reach the new server. Seen on a real
// node at load ~20: after "took over the FUSE connection" a reader sat in request_wait_answer for
// 10+ minutes with /sys/fs/fuse/connections/<n>/waiting = 5, until someone aborted the connection.
//
// As in the chart, every server runs as PID 1 of its own pid namespace (a container): the new server
// cannot see the old one's pid. The old server is made slow to finish exiting after it closed its
// control socket (an 'exit' hook that keeps the CPU for 1 s, what a loaded node does to it): its FUSE
// worker threads live on meanwhile and keep reading requests off the shared connection.
import { strict as assert } from 'assert';
import { execFileSync, spawn, type ChildProcess } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';

import { openDevice, type DaxDevice } from '../pkg/device/index.js';
import { forEachDeviceRun } from '../pkg/famfs/fmap.js';
import { FamfsFs } from '../pkg/famfs/fs.js';
import type { FileNode } from '../pkg/famfs/tree.js';
import { controlRequest } from '../pkg/fuse/control-client.js';
import { FdDepositHolder } from '../pkg/fuse/deposit.js';
import { canMount, FusedHost, sleep } from './helpers/fused-host.js';

const FUSED = path.join(__dirname, '..', 'cmd', 'famfs-fused.js');
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const MASTER_UUID = '0f0e0d0c-0b0a-4909-8807-06050403b001';
const TAKEOVERS = 4;
const READERS = 6;

/** One famfs-fused as PID 1 of a new pid namespace (unshare --fork), like a container. */
class NsServer {
  out = '';
  readonly exited: Promise<number | null>;
  constructor(readonly proc: ChildProcess) {
    proc.stdout?.on('data', (d: Buffer) => (this.out = (this.out + d.toString()).slice(-(1 << 20))));
    proc.stderr?.on('data', (d: Buffer) => (this.out = (this.out + d.toString()).slice(-(1 << 20))));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The famfs-fused process (the namespace's PID 1) as seen from here. */
  pid1(): number | undefined {
    try {
      const kids = fs.readFileSync(`/proc/${this.proc.pid}/task/${this.proc.pid}/children`, 'utf8').trim();
      return kids === '' ? undefined : Number(kids.split(/\s+/)[0]);
    } catch {
      return undefined;
    }
  }

  async stop(): Promise<void> {
    const pid = this.pid1();
    if (pid !== undefined && this.alive) process.kill(pid, 'SIGTERM');
    const r = await Promise.race([this.exited, sleep(15_000).then(() => 'timeout' as const)]);
    if (r === 'timeout') this.proc.kill('SIGKILL'); // --kill-child takes the server along
  }
}

/** /sys/fs/fuse/connections/<id> of the FUSE mount at `mnt` (its device number, from mountinfo). */
function connectionDir(mnt: string): string {
  const line = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[4] === mnt);
  assert.ok(line, `${mnt} is not mounted`);
  const [major, minor] = line.split(' ')[2].split(':').map(Number) as [number, number];
  return `/sys/fs/fuse/connections/${(major << 20) | minor}`;
}

(canMount ? describe : describe.skip)('famfs-fused takeover with requests in flight (pid namespaces, as in the chart)', function () {
  this.timeout(180_000);
  let dir: string;
  let devPath: string;
  let dev: DaxDevice;
  let mnt: string;
  let sock: string;
  let slowExit: string;
  let holder: FdDepositHolder | undefined;
  let depositSock: string | undefined;
  const servers: NsServer[] = [];
  const readers: ChildProcess[] = [];

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-tko-'));
    devPath = `/dev/shm/famfs-tko-${process.pid}-${Date.now()}`;
    dev = openDevice(devPath, { create: { size: 1 * GIB } });
    const master = FamfsFs.mkfs(dev, { systemUuid: MASTER_UUID, devicePath: devPath });
    master.creat('data.bin', 8 * MIB, { mode: 0o444 });
    const f = master.lookup('data.bin') as FileNode;
    const want = randomBytes(f.size);
    forEachDeviceRun(f.fmap, 0, f.size, (devOff, fileOff, len) => dev.write(devOff, want.subarray(fileOff, fileOff + len)));
    forEachDeviceRun(f.fmap, 0, f.size, (devOff, _f, len) => dev.flush(devOff, len));
    fs.writeFileSync(path.join(dir, 'want.bin'), want);
    slowExit = path.join(dir, 'slow-exit.js');
    fs.writeFileSync(slowExit, "process.on('exit', () => { const t = Date.now() + 1000; while (Date.now() < t); });\n");
  });

  afterEach(async () => {
    for (const r of readers.splice(0)) if (r.exitCode === null && r.signalCode === null) r.kill('SIGKILL');
    for (const s of servers.splice(0)) await s.stop();
    try {
      execFileSync('umount', ['-l', mnt], { stdio: 'ignore' });
    } catch {
      /* not mounted */
    }
    holder?.stop();
    holder = undefined;
    depositSock = undefined;
  });

  after(() => {
    dev?.close();
    fs.rmSync(devPath, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function startServer(takeover: boolean): NsServer {
    const args = [
      '--pid',
      '--fork',
      '--kill-child',
      process.execPath,
      FUSED,
      devPath,
      mnt,
      '--foreground',
      '--control-socket',
      sock,
      '--direct-io',
      '--poll-ms',
      '50',
    ];
    if (takeover) args.push('--takeover');
    if (depositSock !== undefined) args.push('--fd-deposit', depositSock);
    const s = new NsServer(spawn('unshare', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: `--require ${slowExit}` } }));
    servers.push(s);
    return s;
  }

  async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await cond())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await sleep(20);
    }
  }

  for (const withDeposit of [false, true]) {
    const how = withDeposit
      ? "with the node plugin's fd deposit (the chart: one session fd; a lost request hung the reader)"
      : 'with per-worker clone fds (a lost request failed with ECONNABORTED)';
    it(`${TAKEOVERS} takeovers under ${READERS} concurrent readers, ${how}: every read completes with the right bytes, nothing stays waiting`, async () => {
      await takeovers(withDeposit);
    });
  }

  async function takeovers(withDeposit: boolean): Promise<void> {
    const variant = withDeposit ? 'dep' : 'clone';
    mnt = path.join(dir, `mnt-${variant}`);
    fs.mkdirSync(mnt);
    sock = path.join(dir, `ctl-${variant}`, 'sock');
    if (withDeposit) {
      depositSock = path.join(dir, `deposit-${variant}.sock`);
      holder = FdDepositHolder.start(depositSock, 120_000, pino({ level: 'silent' }));
    }
    let cur = startServer(false);
    await until('the first server to answer', async () => {
      if (!cur.alive) assert.fail(`famfs-fused exited: ${cur.out}`);
      return controlRequest(sock, { op: 'status' }, 500).then(
        (r) => r.ok,
        () => false,
      );
    });
    const conn = connectionDir(mnt);
    // Readers: 64 KiB preads at random offsets, each checked against the bytes written to the memory.
    const script = `import os,random,sys,time
want=open(sys.argv[2],'rb').read(); fd=os.open(sys.argv[1],os.O_RDONLY); stop=float(sys.argv[3])
n=0; bad=0; failed=0; worst=0.0
while time.time()<stop:
    off=random.randrange(0,len(want)-65536,4096); t=time.time()
    try: d=os.pread(fd,65536,off)
    except OSError as e:
        failed+=1; print(e, file=sys.stderr); continue
    worst=max(worst,time.time()-t)
    if d!=want[off:off+65536]: bad+=1
    n+=1
print(n,bad,failed,round(worst,3))`;
    const results: string[] = [];
    const stopAt = Date.now() / 1000 + 4 + TAKEOVERS * 3;
    const done = Array.from({ length: READERS }, () => {
      const r = spawn('python3', ['-c', script, path.join(mnt, 'data.bin'), path.join(dir, 'want.bin'), String(stopAt)], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      readers.push(r);
      let out = '';
      r.stdout.on('data', (d: Buffer) => (out += d.toString()));
      return new Promise<void>((resolve) => r.once('exit', () => (results.push(out.trim()), resolve())));
    });
    await sleep(1000);
    for (let i = 0; i < TAKEOVERS; i++) {
      const old = cur;
      cur = startServer(true);
      await until(`takeover ${i + 1} to complete`, () => {
        if (!cur.alive) assert.fail(`the new famfs-fused exited: ${cur.out}\nold: ${old.out}`);
        return cur.out.includes('took over the FUSE connection');
      });
      assert.equal(await Promise.race([old.exited, sleep(20_000).then(() => 'still running')]), 0, `old server exits 0: ${old.out}`);
      await sleep(500);
    }
    // Every reader stops by itself at stopAt; one stuck in the kernel never does.
    const finished = await Promise.race([Promise.all(done).then(() => true), sleep((stopAt - Date.now() / 1000) * 1000 + 30_000).then(() => false)]);
    const waiting = Number(fs.readFileSync(path.join(conn, 'waiting'), 'utf8'));
    if (!finished) {
      fs.writeFileSync(path.join(conn, 'abort'), '1'); // free the stuck readers (and fail)
      assert.fail(
        `readers stuck in the kernel 30 s past their end: ${waiting} request(s) waiting on the connection; finished: ${results.join(' | ')}\n${cur.out}`,
      );
    }
    for (const r of results) {
      const [n, bad, failed] = r.split(' ').map(Number) as [number, number, number];
      assert.ok(n > 0, `a reader made progress (reads, wrong, failed, slowest s: ${r})`);
      assert.equal(failed, 0, `reads failed across a takeover (reads, wrong, failed, slowest s: ${r})`);
      assert.equal(bad, 0, `wrong bytes (reads, wrong, failed, slowest s: ${r})`);
    }
    await until('the connection to drain', () => Number(fs.readFileSync(path.join(conn, 'waiting'), 'utf8')) === 0, 5000);
    assert.equal((await controlRequest(sock, { op: 'status' })).ok, true, 'the last server answers');
  }

  it("as in the chart's node pod (its containers share a pid namespace, the pause container is PID 1): the old server's pid names another live process of the new server's namespace, and the takeover completes", async () => {
    // Each server runs under a shell as its namespace's init, as famfs-fused runs under the pod's pause:
    // the old one is pid 2 of its namespace, the new one pid 3 of another, where pid 2 is a live sleep.
    // The old server's pid means nothing to the new one, which saw "pid 2 alive" until it gave up (10 s,
    // EHANDOVER: the new server exited and the old one resumed serving).
    mnt = path.join(dir, 'mnt-podns');
    fs.mkdirSync(mnt);
    sock = path.join(dir, 'ctl-podns', 'sock');
    const fused = (extra: string): string =>
      [process.execPath, FUSED, devPath, mnt, '--foreground', '--control-socket', sock, '--poll-ms', '50', extra].map((a) => `'${a}'`).join(' ');
    const inPodNs = (script: string): NsServer => {
      const srv = new NsServer(spawn('unshare', ['--pid', '--fork', '--kill-child', '/bin/sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] }));
      servers.push(srv);
      return srv;
    };
    // (A SIGTERM to the shell, the namespace's init, is passed on to the server: NsServer.stop.)
    const old = inPodNs(`trap 'kill $p; wait $p; exit' TERM; ${fused('--log-level=info')} & p=$!; echo "server pid $p"; wait $p`);
    await until('the old server to answer', async () => {
      if (!old.alive) assert.fail(`famfs-fused exited: ${old.out}`);
      return controlRequest(sock, { op: 'status' }, 500).then(
        (r) => r.ok,
        () => false,
      );
    });
    assert.match(old.out, /server pid 2\b/);
    const cur = inPodNs(
      `sleep 600 & s=$!; trap 'kill $p $s; wait $p; exit' TERM; ${fused('--takeover')} & p=$!; echo "server pid $p, sleep pid $s"; wait $p; kill $s`,
    );
    await until('the takeover to complete', () => {
      if (!cur.alive) assert.fail(`the new famfs-fused exited: ${cur.out}\nold: ${old.out}`);
      return cur.out.includes('took over the FUSE connection');
    });
    assert.match(cur.out, /server pid 3, sleep pid 2\b/);
    assert.equal(await Promise.race([old.exited, sleep(20_000).then(() => 'still running')]), 0, `old server exits 0: ${old.out}`);
    const want = fs.readFileSync(path.join(dir, 'want.bin'));
    assert.ok(fs.readFileSync(path.join(mnt, 'data.bin')).equals(want), 'the new server serves the file');
    const st = await controlRequest(sock, { op: 'status' });
    assert.equal(st.ok, true);
    assert.equal(st['pid'], 3, 'the new server answers on the control socket');
  });

  it('a new server of an earlier release (reads the handover message to end of stream) still receives it at once', async () => {
    // Releases before this one read the handover message with one recvmsg(MSG_WAITALL) of 16 KiB and
    // then closed: the old server now keeps its end open until it exits, so that read must still end
    // with the message (a unix stream read stops after the message that carries the fds), or a
    // rollback's new server would wait until the old one gives up (10 s) and resumes.
    const old = await FusedHost.start('compat', devPath, dir, ['--poll-ms', '50']);
    const to = path.join(dir, 'compat.handover');
    const receiver = spawn(
      'python3',
      [
        '-c',
        `import socket,sys,array
l=socket.socket(socket.AF_UNIX); l.bind(sys.argv[1]); l.listen(1); print('listening', flush=True)
c,_=l.accept()
msg,anc,flags,addr=c.recvmsg(4+16384, socket.CMSG_SPACE(64*4), socket.MSG_WAITALL)
fds=array.array('i')
for level,kind,data in anc: fds.frombytes(data[:len(data)-len(data)%fds.itemsize])
print('got', len(msg), len(fds), flush=True)
sys.stdin.read()`,
        to,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    receiver.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const receiverExited = new Promise((r) => receiver.once('exit', r));
    try {
      await until('the receiver to listen', () => out.includes('listening'));
      assert.equal((await controlRequest(old.socket, { op: 'handover', to })).ok, true);
      await until('the receiver to get the message', () => out.includes('got '));
      const [, bytes, fds] = /got (\d+) (\d+)/.exec(out)!.map(Number) as [number, number, number];
      assert.ok(bytes > 4 && fds >= 1, `message and fds received (${out})`);
      // Still in the handover (not cancelled after waiting for the reader): the confirmation is accepted.
      const done = await controlRequest(old.socket, { op: 'handover-done' });
      assert.equal(done.ok, true, `handover-done: ${JSON.stringify(done)}`);
      assert.equal(await Promise.race([old.exited, sleep(20_000).then(() => 'still running')]), 0);
    } finally {
      receiver.kill('SIGKILL'); // its fds were the last on the connection: the kernel aborts it
      await receiverExited;
      await old.stop().catch(() => undefined);
      try {
        execFileSync('umount', ['-l', old.mountpoint], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
    }
  });
});
