// Helpers shared by the load and crash tests and bench/csi: a famfs-csi controller as a real
// process on an emulated device, a client to it, and a read-only inspection of the device.
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { CsiClient } from '../pkg/csi/client';
import { validateStateDoc, type ControllerStateDoc } from '../pkg/csi/store';
import { SharedStateImage } from '../pkg/csi/store-image';
import { openDevice } from '../pkg/device';
import { createEmulatedDevice } from './emulated-device';
import { FamfsFs, fsck, type FsckReport } from '../pkg/famfs';

export const MiB = 1024 * 1024;
const ROOT = path.resolve(__dirname, '..', '..');
export const DRIVER_JS = path.join(ROOT, 'dist', 'cmd', 'famfs-csi.js');
/** The V8 flag the image's famfs-csi launcher passes (Dockerfile). */
export const DRIVER_NODE_FLAGS = '--max-semi-space-size=4';

/** Makes a fresh emulated device with a famfs of the given log length; returns its path. */
export function freshDevice(name: string, size: number, logLen: number, hostUuid: string): string {
  const dev = createEmulatedDevice(name, size, { fresh: true });
  try {
    FamfsFs.mkfs(dev, { systemUuid: hostUuid, devicePath: dev.path, logLen });
    return dev.path;
  } finally {
    dev.close();
  }
}

export interface DriverProcess {
  child: ChildProcess;
  client: CsiClient;
  endpoint: string;
  /** stderr + stdout of the process so far (for failure messages). */
  output(): string;
}

/** Starts `famfs-csi --mode controller` and waits until it answers on its socket. */
export async function startControllerProcess(o: {
  device: string;
  dir: string;
  hostUuid: string;
  logLevel?: string;
  /** Default controller; 'node' for a node plugin (give it its own dir). */
  mode?: 'controller' | 'node' | 'all';
  extraArgs?: string[];
}): Promise<DriverProcess> {
  const mode = o.mode ?? 'controller';
  const sock = path.join(o.dir, `${mode}.sock`);
  const endpoint = `unix://${sock}`;
  // FAMFS_CPU_PROFILE_DIR=<dir>: the process writes a V8 CPU profile there when it exits (benches).
  const profDir = process.env['FAMFS_CPU_PROFILE_DIR'];
  const nodeArgs = [
    // As the image's famfs-csi launcher runs it (Dockerfile): a 4 MiB young-generation semi-space.
    DRIVER_NODE_FLAGS,
    ...(profDir !== undefined && profDir !== ''
      ? ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `${mode}-${process.pid}-${Date.now()}.cpuprofile`]
      : []),
  ];
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      DRIVER_JS,
      '--mode',
      mode,
      '--device',
      o.device,
      '--endpoint',
      endpoint,
      '--state-dir',
      path.join(o.dir, 'state'),
      '--node-id',
      mode === 'controller' ? 'ctrl' : 'node-1',
      '--log-level',
      o.logLevel ?? 'warn',
      ...(o.extraArgs ?? []),
    ],
    { env: { ...process.env, FAMFS_SYSTEM_UUID: o.hostUuid }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  child.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  const client = new CsiClient(endpoint, 30_000);
  // Generous: a loaded 2-core machine takes ~10 s just to load the driver's modules.
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`controller exited with ${child.exitCode}: ${out}`);
    try {
      if (fs.existsSync(sock)) {
        await client.call('Identity', 'Probe', {}, 1000);
        break;
      }
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) {
      // Never leave it behind: it may still come up after we gave up on it.
      child.kill('SIGKILL');
      client.close();
      throw new Error(`controller did not come up: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, client, endpoint, output: () => out };
}

export async function stopProcess(p: DriverProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  p.client.close();
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const done = new Promise<void>((resolve) => p.child.once('exit', () => resolve()));
  p.child.kill(signal);
  await done;
}

/**
 * Anonymous resident memory of a process in bytes (Linux /proc): heap and stacks. The device
 * mapping's pages (RssFile/RssShmem) are left out: touching more of the device is not a leak.
 */
export function rssBytes(pid: number): number {
  const m = /RssAnon:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

export interface Inspection {
  fsck: FsckReport;
  /** Live volume ids in famfs (csi/vol-*). */
  volumeIds: string[];
  /** Live snapshot ids in famfs (csi/snap-*). */
  snapshotIds: string[];
  /** Directories under csi/ without a data file (left by a crash between the two appends). */
  emptyDirs: string[];
  image: ControllerStateDoc | undefined;
  generation: number;
}

/** Reads the device through its own read-only mapping, as a second host would. */
export function inspectDevice(devicePath: string): Inspection {
  const dev = openDevice(devicePath, { readOnly: true });
  try {
    const report = fsck(dev);
    const f = FamfsFs.open(dev, { readOnly: true });
    const root = f.lookup('csi');
    const volumeIds: string[] = [];
    const snapshotIds: string[] = [];
    const emptyDirs: string[] = [];
    if (root?.kind === 'dir') {
      for (const [name, node] of root.children) {
        if (node.kind !== 'dir') continue;
        if (node.children.has('data')) {
          if (name.startsWith('vol-')) volumeIds.push(name);
          else if (name.startsWith('snap-')) snapshotIds.push(name);
        } else emptyDirs.push(name);
      }
    }
    const img = new SharedStateImage(f, dev, validateStateDoc).load();
    return { fsck: report, volumeIds: volumeIds.sort(), snapshotIds: snapshotIds.sort(), emptyDirs, image: img?.doc, generation: img?.header.generation ?? 0 };
  } finally {
    dev.close();
  }
}

/** CPU time (user + system) a process used so far, seconds (/proc, 100 ticks a second). */
export function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
