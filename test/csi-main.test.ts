// The famfs-csi binary as a real process: creates and formats an emulated device, serves Identity on
// a unix socket, /healthz and /metrics over HTTP, and shuts down cleanly on SIGTERM.
import { strict as assert } from 'assert';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CsiClient } from '../pkg/csi/client';
import type { GetPluginInfoResponse, ProbeResponse } from '../pkg/csi/types';

const MAIN = path.join(__dirname, '..', 'cmd', 'famfs-csi.js');
// Until the socket shows: loading the modules alone (the Kubernetes client among them) takes ~10 s
// of wall time on a CI box whose 2 cores run other suites too; 20 s failed there.
const STARTUP_MS = 90_000;

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('famfs-csi binary', function () {
  this.timeout(120_000);
  let dir: string;
  let device: string;
  let sock: string;
  let child: ChildProcess;
  let output = '';
  const port = 20000 + (process.pid % 20000);

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-main-'));
    device = `/dev/shm/famfs-csi-test-${process.pid}.img`;
    sock = path.join(dir, 'csi.sock');
    child = spawn(
      process.execPath,
      [
        MAIN,
        '--mode',
        'all',
        '--endpoint',
        `unix://${sock}`,
        '--device',
        device,
        '--device-size',
        '1Gi',
        '--state-dir',
        path.join(dir, 'state'),
        '--metrics-address',
        `127.0.0.1:${port}`,
        '--driver-name',
        'famfs.csi.test.io',
        '--node-id',
        'node-a',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout?.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (output += b.toString()));
    await waitFor(() => fs.existsSync(sock) || child.exitCode !== null, STARTUP_MS, 'the socket');
    assert.equal(child.exitCode, null, `famfs-csi exited: ${output}`);
  });

  after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
    fs.rmSync(device, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('formatted the emulated device it created and serves Identity', async () => {
    assert.ok(fs.existsSync(device));
    assert.equal(fs.statSync(device).size, 1024 ** 3);
    assert.match(output, /formatting it/);
    const client = new CsiClient(`unix://${sock}`, 5000);
    try {
      const info = await client.call<GetPluginInfoResponse>('Identity', 'GetPluginInfo');
      assert.equal(info.name, 'famfs.csi.test.io');
      assert.equal(info.manifest?.['node'], 'node-a');
      assert.deepEqual((await client.call<ProbeResponse>('Identity', 'Probe')).ready, { value: true });
    } finally {
      client.close();
    }
  });

  it('serves /healthz and /metrics with per-RPC histograms', async () => {
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /famfs_csi_rpc_duration_seconds_count\{service="Identity",method="GetPluginInfo",code="OK"\} 1/);
  });

  it('exits 0 on SIGTERM and removes its socket', async () => {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, output);
    assert.ok(!fs.existsSync(sock));
  });

  it('reopens the existing famfs on restart instead of formatting again', async () => {
    const again = spawn(process.execPath, [MAIN, '--endpoint', `unix://${sock}`, '--device', device, '--state-dir', path.join(dir, 'state')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    again.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    again.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitFor(() => fs.existsSync(sock) || again.exitCode !== null, STARTUP_MS, 'the socket');
      assert.equal(again.exitCode, null, out);
      assert.doesNotMatch(out, /formatting/);
      assert.match(out, /"created":false/);
    } finally {
      const exited = new Promise((resolve) => again.once('exit', resolve));
      again.kill('SIGTERM');
      await exited;
    }
  });

  it('refuses a non-numeric number flag as a usage error (not NaN), before touching anything', async () => {
    for (const flag of ['--external-fuse-wait=abc', '--pool-status-interval=1.5', '--health-port=-1']) {
      // Every other argument is one the binary starts with (an emulated device in /dev/shm that it
      // would create and format): only the flag can make it refuse.
      const dev = `/dev/shm/famfs-csi-flag-${process.pid}-${Math.random().toString(36).slice(2, 8)}.img`;
      const flagSock = path.join(dir, 'flag.sock');
      const bad = spawn(
        process.execPath,
        [
          MAIN,
          flag,
          '--mode',
          'controller',
          '--endpoint',
          `unix://${flagSock}`,
          '--device',
          dev,
          '--device-size',
          '64Mi',
          '--state-dir',
          path.join(dir, 'flag-state'),
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      try {
        let err = '';
        bad.stderr?.on('data', (b: Buffer) => (err += b.toString()));
        // It exits, or it starts: its socket shows (or it is still up after the startup allowance).
        const code = await new Promise<number | null | 'running'>((resolve) => {
          const started = setInterval(() => fs.existsSync(flagSock) && done('running'), 100);
          const t = setTimeout(() => done('running'), STARTUP_MS);
          const done = (c: number | null | 'running') => {
            clearInterval(started);
            clearTimeout(t);
            resolve(c);
          };
          bad.once('exit', (c) => done(c));
        });
        assert.notEqual(code, 'running', `${flag}: the binary started instead of refusing the flag`);
        assert.equal(code, 1, `${flag}: exit status (${err})`);
        assert.match(
          err,
          new RegExp(`option '${flag.split('=')[0]} <[a-z]+>' argument '${flag.split('=')[1]}' is invalid\\. must be a non-negative integer`),
          flag,
        );
        assert.equal(fs.existsSync(dev), false, `${flag}: a device was created`);
        assert.equal(fs.existsSync(flagSock), false, `${flag}: a socket was created`);
      } finally {
        if (bad.exitCode === null && bad.signalCode === null) {
          bad.kill('SIGKILL');
          await new Promise((r) => bad.once('exit', r));
        }
        fs.rmSync(dev, { force: true });
        fs.rmSync(flagSock, { force: true });
      }
    }
  });

  it('refuses a missing device outside /dev/shm with a readable message', async () => {
    const bad = spawn(
      process.execPath,
      [MAIN, '--endpoint', `unix://${dir}/x.sock`, '--device', path.join(dir, 'nope.img'), '--state-dir', path.join(dir, 'state')],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let err = '';
    bad.stderr?.on('data', (b: Buffer) => (err += b.toString()));
    const code = await new Promise((resolve) => bad.once('exit', resolve));
    assert.equal(code, 1);
    assert.match(err, /does not exist/);
  });
});
