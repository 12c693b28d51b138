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
  private output = '';
  private constructor(
    readonly name: string,
    readonly mountpoint: string,
    readonly socket: string,
    readonly proc: ChildProcess,
  ) {
    proc.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  /** Starts famfs-fused on DEVICE and waits until its control socket answers. */
  static async start(name: string, device: string, dir: string, extra: string[] = []): Promise<FusedHost> {
    const mountpoint = path.join(dir, `mnt-${name}`);
    const socket = path.join(dir, `ctl-${name}`, 'sock');
    fs.mkdirSync(mountpoint, { recursive: true });
    const proc = spawn(process.execPath, [FUSED, device, mountpoint, '--foreground', '--control-socket', socket, '--log-level', 'warn', ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const host = new FusedHost(name, mountpoint, socket, proc);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`famfs-fused ${name} exited ${proc.exitCode}: ${host.output}`);
      try {
        await host.ctl({ op: 'status' }, 500);
        return host;
      } catch {
        /* not up yet */
      }
      await sleep(50);
    }
    proc.kill('SIGKILL');
    throw new Error(`famfs-fused ${name} did not come up: ${host.output}`);
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
      execFileSync('umount', ['-l', this.mountpoint], { stdio: 'ignore' });
      throw new Error(`famfs-fused ${this.name} did not stop on SIGTERM`);
    }
    return code;
  }

  get log(): string {
    return this.output;
  }
}
