// One famfs-fused process (a "host" of the shared memory) with its FUSE mount, for tests that need a
// live host beside the controller: it replays the log, acknowledges its replay position, and serves
// the files' bytes from the shared memory. Needs root and /dev/fuse.
import { execFileSync, spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { controlRequest } from '../../pkg/fuse/control-client';

const FUSED = path.join(__dirname, '..', '..', 'cmd', 'famfs-fused.js');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class FuseHost {
  readonly exited: Promise<number | null>;
  private out = '';

  private constructor(
    readonly mountpoint: string,
    readonly socket: string,
    readonly proc: ChildProcess,
  ) {
    proc.stdout?.on('data', (d: Buffer) => (this.out = (this.out + d.toString()).slice(-20000)));
    proc.stderr?.on('data', (d: Buffer) => (this.out = (this.out + d.toString()).slice(-20000)));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  /** Starts `famfs-fused DEVICE DIR/mnt --foreground` as host `hostUuid`; resolves once it answers. */
  static async start(device: string, dir: string, hostUuid: string, extra: string[] = []): Promise<FuseHost> {
    const mountpoint = path.join(dir, 'mnt');
    const socket = path.join(dir, 'ctl', 'sock');
    fs.mkdirSync(mountpoint, { recursive: true });
    const proc = spawn(
      process.execPath,
      [
        FUSED,
        device,
        mountpoint,
        '--foreground',
        '--control-socket',
        socket,
        '--host-uuid',
        hostUuid,
        '--poll-ms',
        '50',
        '--ack-heartbeat-ms',
        '500',
        '--log-level',
        'warn',
        ...extra,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const host = new FuseHost(mountpoint, socket, proc);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`famfs-fused exited ${proc.exitCode}: ${host.out}`);
      try {
        const st = await controlRequest(socket, { op: 'status' }, 500);
        if (st.ok) return host;
      } catch {
        /* not up yet */
      }
      await sleep(50);
    }
    proc.kill('SIGKILL');
    throw new Error(`famfs-fused did not come up: ${host.out}`);
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get output(): string {
    return this.out;
  }

  p(rel: string): string {
    return path.join(this.mountpoint, rel);
  }

  /** Waits until `rel` is visible through the mount (the host replayed its creation). */
  async waitFor(rel: string, ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!fs.existsSync(this.p(rel))) {
      if (Date.now() > deadline) throw new Error(`host never showed ${rel} (${ms} ms)`);
      if (!this.alive) throw new Error(`famfs-fused exited while waiting for ${rel}: ${this.out}`);
      await sleep(20);
    }
  }

  /** SIGTERM (the server unmounts); SIGKILL and a lazy unmount when it does not stop in 10 s. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    this.proc.kill('SIGTERM');
    const r = await Promise.race([this.exited, sleep(10_000).then(() => 'timeout' as const)]);
    if (r === 'timeout') {
      this.proc.kill('SIGKILL');
      try {
        execFileSync('umount', ['-l', this.mountpoint], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
      throw new Error(`famfs-fused did not stop on SIGTERM: ${this.out}`);
    }
  }
}
