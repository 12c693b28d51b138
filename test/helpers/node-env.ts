// A test "cluster" for the Node service: one emulated device in /dev/shm, the test process as the
// famfs master (creates volume files directly in the log), and any number of node plugins
// (startDriver in node mode, each with its own node id, state dir and FUSE mount) over real unix
// sockets. Needs root and /dev/fuse.
import { execFileSync } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { CsiClient, type CsiCallError } from '../../pkg/csi/client';
import { controllerService } from '../../pkg/csi/controller';
import { startDriver, type DriverConfig, type RunningDriver } from '../../pkg/csi/driver';
import { CsiServer } from '../../pkg/csi/server';
import { ControllerStore } from '../../pkg/csi/store';
import { Volumes } from '../../pkg/csi/volumes';
import { objectDirRelpath, objectFileRelpath, volumeIdForName } from '../../pkg/csi/names';
import { openDevice, type DaxDevice } from '../../pkg/device';
import { FamfsFs } from '../../pkg/famfs/fs';
import { readMountinfo } from '../../pkg/mount/mountinfo';

export const MiB = 1024 * 1024;
export const MASTER_UUID = '7e57a0de-0000-4000-8000-000000000001';
export const canMount = process.getuid?.() === 0 && fs.existsSync('/dev/fuse');

export const mountCap = (mode: string, extra: { fs_type?: string; mount_flags?: string[]; volume_mount_group?: string } = {}) => ({
  mount: { fs_type: extra.fs_type ?? '', mount_flags: extra.mount_flags ?? [], volume_mount_group: extra.volume_mount_group ?? '' },
  access_mode: { mode },
});
export const blockCap = (mode: string) => ({ block: {}, access_mode: { mode } });

/** The gRPC status name of a call's outcome ('OK' on success). */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    const err = e as CsiCallError;
    return status[err.code] ?? `UNKNOWN(${String(err.code)})`;
  }
}

/** The error message of a failed call ('' on success). */
export async function messageOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return '';
  } catch (e) {
    return (e as CsiCallError).details ?? (e as Error).message;
  }
}

export class NodePlugin {
  constructor(
    readonly nodeId: string,
    readonly stateDir: string,
    readonly endpoint: string,
    public driver: RunningDriver,
    readonly client: CsiClient,
  ) {}

  call<T = unknown>(method: string, req: object): Promise<T> {
    return this.client.call<T>('Node', method, req, 30_000);
  }
}

export class NodeTestEnv {
  readonly dir: string;
  readonly kubelet: string;
  readonly devicePath: string;
  readonly device: DaxDevice;
  readonly master: FamfsFs;
  readonly plugins: NodePlugin[] = [];

  constructor(tag: string, deviceSize = 512 * MiB) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `csi-${tag}-`));
    this.kubelet = path.join(this.dir, 'kubelet');
    fs.mkdirSync(this.kubelet);
    this.devicePath = `/dev/shm/famfs-csi-test-${tag}-${randomBytes(4).toString('hex')}.img`;
    this.device = openDevice(this.devicePath, { create: { size: deviceSize } });
    this.master = FamfsFs.mkfs(this.device, { systemUuid: MASTER_UUID, devicePath: this.devicePath });
  }

  /** A volume file as the controller would create it: csi/<id>/data, zeroed. */
  createVolume(name: string, size = 4 * MiB, o: { mode?: number; uid?: number; gid?: number } = {}): string {
    const id = volumeIdForName(name);
    this.master.catchUp();
    if (this.master.lookup(objectDirRelpath(id)) === undefined) this.master.mkdir(objectDirRelpath(id), { parents: true, mode: 0o755 });
    this.master.creat(objectFileRelpath(id), size, { mode: o.mode ?? 0o660, uid: o.uid ?? 0, gid: o.gid ?? 0, zero: true });
    return id;
  }

  deleteVolume(id: string): void {
    this.master.catchUp();
    this.master.rm(objectFileRelpath(id));
    this.master.rm(objectDirRelpath(id));
  }

  /** `extra`: more driver settings (registration, health address) for the tests that need them. */
  /**
   * A Controller service (master role taken as MASTER_UUID) on unix://DIR/ctrl.sock, pool
   * 'test-pool'; `nodeExists` says which node ids the controller knows.
   */
  async startController(nodeExists: (id: string) => boolean = (id) => /^node-/.test(id)): Promise<{ server: CsiServer; client: CsiClient }> {
    const endpoint = `unix://${path.join(this.dir, 'ctrl.sock')}`;
    const server = new CsiServer({ endpoint, log: pino({ level: 'silent' }) });
    const store = new ControllerStore(this.master);
    store.takeMasterRole(MASTER_UUID);
    server.addService(
      'Controller',
      controllerService({
        volumes: new Volumes(store),
        pool: 'test-pool',
        topologyKey: 'famfs.csi.cxl.io/pool',
        nodeExists,
        condition: () => ({ abnormal: false, message: 'ok' }),
      }),
    );
    await server.start();
    return { server, client: new CsiClient(endpoint, 10_000) };
  }

  async startNode(nodeId: string, stateDir = path.join(this.dir, `state-${nodeId}`), extra: Partial<DriverConfig> = {}): Promise<NodePlugin> {
    const endpoint = `unix://${path.join(this.dir, `${nodeId}.sock`)}`;
    const driver = await startDriver({
      mode: 'node',
      endpoint,
      devicePath: this.devicePath,
      deviceSize: 0,
      mkfs: false,
      nodeId,
      driverName: 'famfs.csi.cxl.io',
      stateDir,
      pool: 'test-pool',
      allowedPathRoots: [this.kubelet],
      log: pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' }),
      ...extra,
    });
    const p = new NodePlugin(nodeId, stateDir, endpoint, driver, new CsiClient(endpoint, 30_000));
    this.plugins.push(p);
    return p;
  }

  /** Stops a plugin the way a container restart would: the gRPC server goes, the FUSE server stays. */
  async stopPlugin(p: NodePlugin): Promise<void> {
    p.client.close();
    await p.driver.stop();
  }

  async restartPlugin(p: NodePlugin): Promise<NodePlugin> {
    await this.stopPlugin(p);
    this.plugins.splice(this.plugins.indexOf(p), 1);
    return this.startNode(p.nodeId, p.stateDir);
  }

  /** A pod's target path: its parent exists (kubelet makes it), the plugin creates the target. */
  target(pod: string, name = 'mount'): string {
    const parent = path.join(this.kubelet, 'pods', pod, 'volumes');
    fs.mkdirSync(parent, { recursive: true });
    return path.join(parent, name);
  }

  staging(nodeId: string, volumeId: string): string {
    const p = path.join(this.kubelet, 'plugins', nodeId, volumeId, 'globalmount');
    fs.mkdirSync(p, { recursive: true });
    return p;
  }

  async mountsUnderDir(): Promise<string[]> {
    return (await readMountinfo()).filter((m) => m.mountPoint.startsWith(this.dir + '/')).map((m) => m.mountPoint);
  }

  async close(): Promise<void> {
    for (const p of this.plugins) {
      p.client.close();
      await p.driver.stop().catch(() => undefined);
      await p.driver.node?.fuse.stopServer().catch(() => false);
    }
    // Whatever a failed test left mounted under our directory goes, deepest first.
    const left = (await this.mountsUnderDir()).sort((a, b) => b.length - a.length);
    for (const m of left) {
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
    this.device.close();
    fs.rmSync(this.devicePath, { force: true });
    // Never recurse into a directory that still has something mounted below it.
    if ((await this.mountsUnderDir()).length === 0) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
