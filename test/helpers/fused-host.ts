/**
 * One famfs-fused child process ("a host") on its own mountpoint, for tests that need real FUSE
 * hosts following a master that the test process plays through pkg/famfs.
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { controlRequest } from '../../pkg/fuse/control-client.js';

const FUSED = path.join(__dirname, '..', '..', 'cmd', 'famfs-fused.js');

export const canMount = process.getuid?.() === 0 && fs.existsSync('/dev/fuse');

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class FusedHost {
  readonly exited: Promise<number | null>;
  private out = '';
  private constructor(
    readonly name: string,
    readonly mountpoint: string,
    readonly socket: string,
    readonly proc: ChildProcess,
  ) {
    // The last MiB of output: enough for any assertion on it, bounded for a long churn run.
    proc.stdout?.on('data', (d: Buffer) => (this.out = (this.out + d.toString()).slice(-(1 << 20))));
    proc.stderr?.on('data', (d: Buffer) => (this.out = (this.out + d.toString()).slice(-(1 << 20))));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  /** Starts famfs-fused on DEVICE (mount DIR/mnt-NAME) and waits until its control socket answers. */
  static async start(name: string, device: string, dir: string, extra: string[] = []): Promise<FusedHost> {
    return FusedHost.spawn(name, device, path.join(dir, `mnt-${name}`), path.join(dir, `ctl-${name}`, 'sock'), extra);
  }

  /**
   * Starts `famfs-fused DEVICE DIR/mnt` as host `hostUuid`, polling every 50 ms and acking every
   * 500 ms: a live host beside a controller that replays the log and acknowledges its position.
   */
  static async startHost(device: string, dir: string, hostUuid: string, extra: string[] = []): Promise<FusedHost> {
    return FusedHost.spawn('host', device, path.join(dir, 'mnt'), path.join(dir, 'ctl', 'sock'), [
      '--host-uuid',
      hostUuid,
      '--poll-ms',
      '50',
      '--ack-heartbeat-ms',
      '500',
      ...extra,
    ]);
  }

  /**
   * Starts a new famfs-fused on `old`'s mountpoint and control socket with --takeover: it takes the
   * /dev/fuse connection over without unmounting. Returns once the socket answers from the new process.
   */
  static async takeOver(old: FusedHost, name: string, device: string, extra: string[] = []): Promise<FusedHost> {
    return FusedHost.spawn(name, device, old.mountpoint, old.socket, [...extra, '--takeover'], true);
  }

  /**
   * Starts a new famfs-fused on `old`'s mountpoint and control socket once `old` is gone (killed):
   * with --fd-deposit it adopts the connection the holder kept. Returns once the new socket answers.
   */
  static async restart(old: FusedHost, name: string, device: string, extra: string[] = []): Promise<FusedHost> {
    return FusedHost.spawn(name, device, old.mountpoint, old.socket, extra, false, false);
  }

  private static async spawn(
    name: string,
    device: string,
    mountpoint: string,
    socket: string,
    extra: string[],
    takingOver = false,
    makeMountpoint = true,
  ): Promise<FusedHost> {
    // (Not on a mount whose server was killed: a stat there waits for, or fails without, a server.)
    if (makeMountpoint) fs.mkdirSync(mountpoint, { recursive: true });
    const proc = spawn(process.execPath, [FUSED, device, mountpoint, '--foreground', '--control-socket', socket, '--log-level', 'warn', ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const host = new FusedHost(name, mountpoint, socket, proc);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`famfs-fused ${name} exited ${proc.exitCode}: ${host.out}`);
      try {
        const st = await host.ctl({ op: 'status' }, 500);
        // Taking over, the socket answers from the old server until the new one owns it.
        if (!takingOver || st['pid'] === proc.pid) return host;
      } catch {
        /* not up yet */
      }
      await sleep(50);
    }
    proc.kill('SIGKILL');
    throw new Error(`famfs-fused ${name} did not come up: ${host.out}`);
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
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

  /**
   * Asks the host to replay the log up to its current end, then waits until `rel` shows: what the
   * node plugin does at NodeStage. Polling alone is not enough when a volume of the same name (so the
   * same id) was deleted and created again: its earlier incarnation may still show until the host
   * replays the delete, and vanish right after.
   */
  async catchUpTo(rel: string, ms = 15_000): Promise<void> {
    await this.ctl({ op: 'catchup' });
    await this.waitFor(rel, ms);
  }

  p(rel: string): string {
    return path.join(this.mountpoint, rel);
  }

  /** A control request; a refusal (ok: false) is thrown. */
  async ctl(req: Parameters<typeof controlRequest>[1], timeoutMs?: number): Promise<Record<string, unknown>> {
    const r = await controlRequest(this.socket, req, timeoutMs);
    if (!r.ok) throw new Error(`famfs-fused ${this.name}: ${r.code}: ${r.error}`);
    return r;
  }

  /** SIGTERM (after SIGCONT, in case a test stopped it) and wait; unmounts lazily if it hangs. */
  async stop(): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGCONT');
      this.proc.kill('SIGTERM');
    }
    const code = await Promise.race([this.exited, sleep(10_000).then(() => 'timeout' as const)]);
    if (code === 'timeout') {
      this.proc.kill('SIGKILL');
      try {
        execFileSync('umount', ['-l', this.mountpoint], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
      throw new Error(`famfs-fused ${this.name} did not stop on SIGTERM: ${this.out}`);
    }
    return code;
  }

  get log(): string {
    return this.out;
  }

  get output(): string {
    return this.out;
  }
}
