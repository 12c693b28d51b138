// famfs-fused as a container's PID 1 (the chart): a signal with no handler is ignored there, so a
// SIGTERM that arrives while the process is still starting must already find a handler, or the pod
// sits out its whole grace period (helm upgrade took 41-54 s instead of ~15 s).
import { strict as assert } from 'assert';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';

const FUSED = path.join(__dirname, '..', 'cmd', 'famfs-fused.js');
const CSI = path.join(__dirname, '..', 'cmd', 'famfs-csi.js');

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** The pid (in our namespace) of the single child of `parent`: the PID 1 that `unshare --fork` started. */
async function childPid(parent: number): Promise<number> {
  for (let i = 0; i < 500; i++) {
    const kids = fs.readFileSync(`/proc/${parent}/task/${parent}/children`, 'utf8').trim();
    if (kids !== '') return Number(kids.split(/\s+/)[0]);
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`unshare (pid ${parent}) started no child`);
}

/** Starts `node script args…` as PID 1 of a new pid namespace, stdout and stderr to `logPath`. */
function spawnAsPid1(script: string, args: string[], logPath: string, env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const out = fs.openSync(logPath, 'w');
  try {
    return spawn('unshare', ['--pid', '--fork', '--kill-child', process.execPath, script, ...args], { stdio: ['ignore', out, out], env });
  } finally {
    fs.closeSync(out);
  }
}

/** Polls `logPath` (10 ms steps, up to 30 s) until it contains `text`, then asserts it does. */
async function waitForLog(logPath: string, text: string): Promise<void> {
  for (let i = 0; i < 3000 && !fs.readFileSync(logPath, 'utf8').includes(text); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(fs.readFileSync(logPath, 'utf8').includes(text), `log never said "${text}":\n${fs.readFileSync(logPath, 'utf8')}`);
}

/** No Kubernetes API: the driver runs standalone (no kubeconfig, not in a pod). */
function standaloneEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
  delete env['KUBECONFIG'];
  delete env['KUBERNETES_SERVICE_HOST'];
  return env;
}

describe('entry points: signals while starting (PID 1 in its own pid namespace, as in a container)', function () {
  this.timeout(60_000);
  let dir: string;
  let fake: net.Server | undefined;
  const held: net.Socket[] = [];
  let proc: ChildProcess | undefined;
  /** famfs-fused --container on a device that does not exist, talking on control socket `sock`. */
  const fusedArgs = (sock: string): string[] => [path.join(dir, 'no-device'), path.join(dir, 'mnt'), '--foreground', '--container', '--control-socket', sock];

  before(function () {
    if (process.getuid?.() !== 0) this.skip(); // a new pid namespace needs root
  });
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-sig-'));
  });
  afterEach(async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL'); // unshare --kill-child takes its PID 1 along
      await exitOf(proc);
    }
    proc = undefined;
    for (const s of held.splice(0)) s.destroy();
    await new Promise<void>((r) => (fake ? fake.close(() => r()) : r()));
    fake = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a SIGTERM while --container start-up waits on the control socket exits at once with status 0 (main ignored it, then failed with 1)', async () => {
    // A "running server" that accepts on the control socket and never answers: famfs-fused --container
    // sits in its start-up probe (3 s timeout), i.e. past loading its modules, holding nothing yet.
    const sock = path.join(dir, 'sock');
    const connected = new Promise<void>((resolve) => {
      fake = net.createServer((c) => {
        held.push(c);
        resolve();
      });
    });
    await new Promise<void>((r) => fake!.listen(sock, r));
    proc = spawnAsPid1(FUSED, fusedArgs(sock), path.join(dir, 'out.log'));
    const exited = exitOf(proc);
    const pid1 = await childPid(proc.pid!);
    await connected;
    // From an ancestor namespace, like the kubelet's. (Node's own boot-time SIGTERM handler re-raises the
    // signal with the default action, which PID 1 ignores: only a JS handler ends the process.)
    process.kill(pid1, 'SIGTERM');
    const r = await exited;
    const log = fs.readFileSync(path.join(dir, 'out.log'), 'utf8');
    assert.deepEqual(r, { code: 0, signal: null }, `famfs-fused did not exit cleanly on SIGTERM:\n${log}`);
    assert.match(log, /signal before serving anything: exiting/);
  });

  it('a SIGTERM to a superseded (idle) container exits with status 0', async () => {
    const sock = path.join(dir, 'sock');
    const podUid = `pod-${process.pid}-${Date.now()}`;
    fs.writeFileSync(`${sock}.superseded-${podUid}`, 'test\n');
    const logPath = path.join(dir, 'out.log');
    proc = spawnAsPid1(FUSED, fusedArgs(sock), logPath, { ...process.env, POD_UID: podUid });
    const exited = exitOf(proc);
    const pid1 = await childPid(proc.pid!);
    await waitForLog(logPath, 'superseded by a newer one');
    process.kill(pid1, 'SIGTERM');
    assert.deepEqual(await exited, { code: 0, signal: null }, fs.readFileSync(logPath, 'utf8'));
  });

  it('famfs-csi: a SIGTERM while waiting for a predecessor to leave the endpoint exits at once with status 0 (main ignored it)', async () => {
    // The predecessor "still serves" the CSI socket: the new plugin waits (--wait-for-predecessor) before
    // touching the device. A pod deleted meanwhile must go at once, not after its grace period.
    const sock = path.join(dir, 'csi.sock');
    fake = net.createServer((c) => held.push(c));
    await new Promise<void>((r) => fake!.listen(sock, r));
    const logPath = path.join(dir, 'out.log');
    proc = spawnAsPid1(
      CSI,
      [
        '--mode',
        'node',
        '--endpoint',
        `unix://${sock}`,
        '--wait-for-predecessor',
        '60000',
        '--device',
        path.join(dir, 'no-device'),
        '--state-dir',
        path.join(dir, 'state'),
      ],
      logPath,
      standaloneEnv(dir),
    );
    const exited = exitOf(proc);
    const pid1 = await childPid(proc.pid!);
    await waitForLog(logPath, 'waiting for it to exit');
    process.kill(pid1, 'SIGTERM');
    const r = await Promise.race([exited, new Promise((res) => setTimeout(() => res('still running 20 s after SIGTERM'), 20_000))]);
    assert.deepEqual(r, { code: 0, signal: null }, fs.readFileSync(logPath, 'utf8'));
  });
});
