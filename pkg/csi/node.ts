// Node service: makes a famfs volume (a pre-allocated file in shared memory) visible to pods on this
// host.
//
//   famfs FUSE mount   <state-dir>/mnt/<pool>            one detached famfs-fused per device (pkg/fuse/supervisor.ts)
//   NodeStage          <mnt>/csi/<id>  --bind-->  staging_target_path   after catching up with the log
//                      and invalidating the file's cache lines + page cache (taking the file over)
//   NodePublish        staging           --bind-->  target_path (a directory holding `data`)
//                      staging/data      --bind-->  target_path (a file: block access)
//                      read-only publishes are `remount,bind,ro`: the kernel refuses write(2),
//                      mmap(PROT_WRITE) of a shared mapping and writable opens (EROFS)
//   NodeUnpublish      unmount (lazily when the FUSE connection is dead), remove target_path
//   NodeUnstage        flush the file's cache lines (giving the file up), unmount staging
//
// What was staged and published is persisted (pkg/mount/mount-records.ts) so that a restarted plugin can
// put everything back or tear it down (restore()).
import * as fs from 'fs';
import * as path from 'path';
import type { Logger } from 'pino';
import type { DaxDevice } from '../device';
import type { FamfsFs } from '../famfs/fs';
import type { FileNode, TreeNode } from '../famfs/tree';
import { filesUnder, resolveStaticPath, sharedVolumePath, staticPathOf, type StaticPath } from './static-path';
import { bindLiveness, bindMount, bindMountIfAlive, ensureTarget, removeTarget, unmountAll } from '../mount/mount';
import { FuseSupervisor, FuseSupervisorError, type FlushRoute } from '../fuse/supervisor';
import { isMountPoint, probePath } from '../mount/mountinfo';
import { nodeStateStore, type NodeStateStore, type NodeStateDoc, type PublishedVolume, type StagedVolume } from '../mount/mount-records';
import { ACCESS_MODE_RULES, checkCapability, publishIsReadOnly, type AccessProfile } from './capabilities';
import { CTX_SHARING } from './volume-context';
import { NO_GUARD_CHANGE, NodeGuardSync, type GuardRecord } from './node-guard';
import { aborted, alreadyExists, CsiError, failedPrecondition, internal, invalidArgument, notFound, unavailable } from './errors';
import { checkPathSyntax, PathPolicy } from './node-paths';
import { isVolumeId, objectDirRelpath, objectFileRelpath, VOLUME_FILE_NAME } from './names';
import type { RpcHandler } from './server';
import type {
  NodeGetCapabilitiesRequest,
  NodeGetCapabilitiesResponse,
  NodeGetInfoRequest,
  NodeGetInfoResponse,
  NodeGetVolumeStatsRequest,
  NodeGetVolumeStatsResponse,
  NodePublishVolumeRequest,
  NodePublishVolumeResponse,
  NodeRpcType,
  NodeStageVolumeRequest,
  NodeStageVolumeResponse,
  NodeUnpublishVolumeRequest,
  NodeUnpublishVolumeResponse,
  NodeUnstageVolumeRequest,
  NodeUnstageVolumeResponse,
  VolumeCapability,
  VolumeCondition,
} from './types';

export const NODE_CAPABILITIES: readonly NodeRpcType[] = [
  'STAGE_UNSTAGE_VOLUME',
  'GET_VOLUME_STATS',
  'VOLUME_CONDITION',
  'SINGLE_NODE_MULTI_WRITER',
  'VOLUME_MOUNT_GROUP',
];

/** With an external FUSE server: how long an RPC waits for it to come up before UNAVAILABLE. */
export const DEFAULT_EXTERNAL_FUSE_WAIT_MS = 5_000;

/** How long NodeStage waits for this node's FUSE server to replay the entry that created the volume. */
export const DEFAULT_STAGE_CATCHUP_MS = 10_000;

export interface NodeOptions {
  nodeId: string;
  pool: string;
  topologyKey: string;
  stateDir: string;
  devicePath: string;
  /** The plugin's own mapping of the device: failure status, and the fallback flush when the FUSE server is gone. */
  device: DaxDevice;
  /** The plugin's read view of the famfs log: which volumes exist. */
  famfs: FamfsFs;
  hostUuid: string;
  allowedPathRoots: readonly string[];
  log: Logger;
  fusedScript?: string;
  /**
   * Use a FUSE server run by someone else (the chart's famfs-fused container) on the same mountpoint
   * and control socket: wait for it, never spawn or kill one.
   */
  externalFuse?: boolean;
  /** With externalFuse: how long an RPC waits for the server before answering UNAVAILABLE (ms). */
  externalFuseWaitMs?: number;
  /** How long a killed famfs-fused's held FUSE connection waits for a new server (fd deposit); 0: hold nothing. */
  fuseOrphanTimeoutMs?: number;
  /** Told about a memory error this plugin met on behalf of a volume (an Event on its PV/PVC). */
  onMemoryError?: (e: { volumeId?: string; message: string }) => void;
  stageCatchupMs?: number;
  blockAllowed?: boolean;
}

export interface NodeHandlers {
  NodeStageVolume: RpcHandler<NodeStageVolumeRequest, NodeStageVolumeResponse>;
  NodeUnstageVolume: RpcHandler<NodeUnstageVolumeRequest, NodeUnstageVolumeResponse>;
  NodePublishVolume: RpcHandler<NodePublishVolumeRequest, NodePublishVolumeResponse>;
  NodeUnpublishVolume: RpcHandler<NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse>;
  NodeGetVolumeStats: RpcHandler<NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse>;
  NodeGetCapabilities: RpcHandler<NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse>;
  NodeGetInfo: RpcHandler<NodeGetInfoRequest, NodeGetInfoResponse>;
}

export interface RestoreReport {
  restored: string[];
  kept: string[];
  removed: string[];
  failed: string[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sameList = (a: readonly string[] = [], b: readonly string[] = []): boolean =>
  a.length === b.length && [...a].sort().join('\0') === [...b].sort().join('\0');

/** Flags a bind mount carries besides ro/rw (those become the readOnly decision). */
function bindFlags(profile: AccessProfile): string[] {
  return profile.mountFlags.filter((f) => f !== 'ro' && f !== 'rw');
}

/** Why a volume is abnormal once the FUSE server saw entries it replayed rewritten. */
export function rewrittenMessage(indexes: readonly number[]): string {
  return (
    `famfs log entr${indexes.length === 1 ? 'y' : 'ies'} ${indexes.join(', ')}, which this node's FUSE server replayed, ${indexes.length === 1 ? 'was' : 'were'} rewritten: ` +
    'the log no longer describes what this node serves and another volume may share its memory; run famfs fsck on the master'
  );
}

export class NodeService {
  readonly fuse: FuseSupervisor;
  private readonly store: NodeStateStore;
  private readonly paths: PathPolicy;
  private readonly busy = new Set<string>();
  private readonly log: Logger;
  /** famfs-fused's read-only guard (node-guard.ts): set before read-only binds, lifted before read-write ones. */
  private readonly roGuard: NodeGuardSync;

  constructor(private readonly opts: NodeOptions) {
    this.log = opts.log;
    this.store = nodeStateStore(opts.stateDir);
    this.paths = new PathPolicy(opts.allowedPathRoots);
    this.fuse = new FuseSupervisor({
      stateDir: opts.stateDir,
      pool: opts.pool,
      devicePath: opts.devicePath,
      hostUuid: opts.hostUuid,
      log: opts.log.child({ component: 'fuse' }),
      ...(opts.fusedScript !== undefined ? { fusedScript: opts.fusedScript } : {}),
      ...(opts.externalFuse === true ? { external: { waitMs: opts.externalFuseWaitMs ?? DEFAULT_EXTERNAL_FUSE_WAIT_MS } } : {}),
      fallback: { media: opts.device, famfs: opts.famfs },
      fdDeposit: opts.fuseOrphanTimeoutMs === 0 ? false : { ...(opts.fuseOrphanTimeoutMs !== undefined ? { orphanTimeoutMs: opts.fuseOrphanTimeoutMs } : {}) },
    });
    this.roGuard = new NodeGuardSync({
      send: (g) => this.fuse.control({ op: 'guard', ...g }),
      records: async () => {
        const d = await this.store.load();
        const at = (r: { volumeId: string; staticPath?: string }): string => r.staticPath ?? objectDirRelpath(r.volumeId);
        return [
          ...Object.values(d.staged)
            .filter((r) => r.readOnly)
            .map((r): [string, GuardRecord] => [r.stagingPath, { path: at(r), readOnly: true }]),
          ...Object.values(d.published).map((r): [string, GuardRecord] => [r.targetPath, { path: at(r), readOnly: r.readOnly }]),
        ];
      },
      log: opts.log.child({ component: 'ro-guard' }),
    });
  }

  /** The plugin stops: release what it holds (famfs-fused and the mounts keep running). */
  close(): void {
    this.roGuard.close();
    this.fuse.close();
    this.store.close();
  }

  private readonly memoryErrorListeners = new Set<(e: { volumeId?: string; message: string }) => void>();

  /** Adds a listener for memory errors met on behalf of a volume (besides opts.onMemoryError). */
  addMemoryErrorListener(fn: (e: { volumeId?: string; message: string }) => void): void {
    this.memoryErrorListeners.add(fn);
  }

  private memoryError(e: { volumeId?: string; message: string }): void {
    for (const fn of [this.opts.onMemoryError, ...this.memoryErrorListeners]) {
      try {
        fn?.(e);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'memory error listener failed');
      }
    }
  }

  /** Why the memory behind this node's volumes failed, or undefined while it is healthy. */
  async memoryFailure(): Promise<string | undefined> {
    if (this.opts.device.failed) return `device ${this.opts.devicePath} failed: ${this.opts.device.failureMessage ?? 'memory error'}`;
    const h = await this.fuse.health().catch(() => undefined);
    if (h?.state === 'serving' && h.failed) return `famfs FUSE server reports a memory error: ${h.failureMessage ?? 'device failed'}`;
    return undefined;
  }

  // ---- helpers ----

  /** One operation per volume at a time; a second one is ABORTED (the CO retries). */
  private async exclusive<T>(volumeId: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy.has(volumeId)) throw aborted(`an operation on volume ${volumeId} is already in progress on node ${this.opts.nodeId}`);
    this.busy.add(volumeId);
    try {
      return await fn();
    } finally {
      this.busy.delete(volumeId);
    }
  }

  /** The volume's file as this node's log view knows it (catching up first), or undefined. */
  private volumeFile(volumeId: string): FileNode | undefined {
    if (!isVolumeId(volumeId)) return undefined;
    try {
      this.opts.famfs.catchUp();
    } catch (e) {
      throw unavailable(`cannot read the famfs log on ${this.opts.devicePath}: ${(e as Error).message}`, e);
    }
    const node = this.opts.famfs.lookup(objectFileRelpath(volumeId));
    return node?.kind === 'file' ? node : undefined;
  }

  private requireFile(volumeId: string): FileNode {
    const f = this.volumeFile(volumeId);
    if (f === undefined) throw notFound(`volume ${volumeId} does not exist in famfs pool ${this.opts.pool}`);
    return f;
  }

  private profileOf(cap: VolumeCapability | null | undefined, volumeContext: Record<string, string>): AccessProfile {
    const multiWriterAllowed = volumeContext[CTX_SHARING] === 'multi-writer';
    const r = checkCapability(cap, { multiWriterAllowed, blockAllowed: this.opts.blockAllowed ?? true });
    if (r.ok) return r.profile;
    const mode = cap?.access_mode?.mode;
    // The mode exists but this volume's StorageClass did not opt in: a property of the volume.
    if (mode !== undefined && ACCESS_MODE_RULES[mode]?.needsMultiWriterOptIn) throw failedPrecondition(`volume_capability: ${r.reason}`);
    throw invalidArgument(`volume_capability: ${r.reason}`);
  }

  /** A bind mount at `p` that is alive and shows `expectRoot` of the famfs mount. */
  private async bindAlive(p: string, expectRoot: string): Promise<boolean> {
    // Asked of the bind itself rather than the mount table, whose read and parse cost tens of
    // milliseconds with thousands of mounts on a node: a path outside the FUSE mount that shows
    // the FUSE connection's device number is a bind of it, and the inode says which famfs node it
    // shows. A bind pins the connection it was made on: one from before a server restart shows
    // the old connection's device number and can never serve again.
    // Attributes may be cached from before the server died: statfs always reaches it. The two
    // stats and the statfs are one thread-pool job (three parallel ones woke three threads, and on
    // a busy node each wake-up is a scheduling delay in the publish).
    return (await bindLiveness(p, this.fuse.hostPath(expectRoot.replace(/^\/+/, '')))) === 'alive';
  }

  /** Where the FUSE mount shows what a volume's staging (mount) or block target binds. */
  private hostRoot(volumeId: string, kind: 'mount' | 'block'): string {
    return this.fuse.hostPath(this.expectedRoot(volumeId, kind).replace(/^\/+/, ''));
  }

  /** Catches this node's FUSE server up with the log until the volume's file shows in the mount. */
  private async catchUpUntilVisible(volumeId: string, deadlineMs: number, relpath = objectFileRelpath(volumeId)): Promise<void> {
    const hostFile = this.fuse.hostPath(relpath);
    for (;;) {
      const reply = await this.fuse.control({ op: 'catchup' });
      if (!reply.ok) throw unavailable(`famfs FUSE server could not catch up with the log: ${reply.error} (${reply.code})`);
      const st = await probePath(hostFile);
      if (st.health === 'ok') return;
      if (st.health === 'disconnected') throw unavailable(`famfs FUSE mount ${this.fuse.mountpoint} died while staging ${volumeId}`);
      if (Date.now() >= deadlineMs) {
        throw unavailable(
          `volume ${volumeId} exists in the famfs log but this node's FUSE server did not show it within ${this.opts.stageCatchupMs ?? DEFAULT_STAGE_CATCHUP_MS} ms ` +
            `(log index ${typeof reply['index'] === 'number' ? reply['index'] : '?'}${reply['stop'] ? `, replay stopped: ${JSON.stringify(reply['stop'])}` : ''})`,
        );
      }
      await sleep(50);
    }
  }

  private async ensureFuse(): Promise<void> {
    if (this.opts.device.failed) throw unavailable(`device ${this.opts.devicePath} failed: ${this.opts.device.failureMessage ?? 'memory error'}`);
    try {
      const r = await this.fuse.ensure();
      if (r === 'started') {
        this.log.info({ mountpoint: this.fuse.mountpoint }, 'famfs FUSE mount (re)established');
        // It read the guard we last sent from its file; make sure it matches the records.
        await this.roGuard.syncOrRetry(true);
      }
    } catch (e) {
      throw unavailable(`cannot serve famfs on ${this.fuse.mountpoint}: ${(e as Error).message}`, e);
    }
  }

  /** Writes the file's dirty CPU cache lines back to the shared memory (the FUSE supervisor knows how). */
  private async flushFile(volumeId: string): Promise<FlushRoute> {
    try {
      return await this.fuse.flush(objectFileRelpath(volumeId));
    } catch (e) {
      if (e instanceof FuseSupervisorError) throw e.code === 'ELOG' ? unavailable(e.message, e) : internal(e.message, e);
      throw e;
    }
  }

  /** Binds the volume's directory from the FUSE mount onto the staging path (after takeover). */
  private async bindStaging(volumeId: string, staging: string, readOnly: boolean, flags: string[], relpath = objectDirRelpath(volumeId)): Promise<void> {
    // Unmount first: mkdir of a dead FUSE bind (the server died) fails with ENOTCONN.
    await unmountAll(staging);
    await fs.promises.mkdir(staging, { recursive: true, mode: 0o750 });
    await bindMount(this.fuse.hostPath(relpath), staging, { readOnly, flags });
  }

  // ---- static volumes (static-path.ts) ----

  /** The famfs node of a static volume as this node's log view knows it (catching up first). */
  private staticNode(sp: StaticPath, block: boolean): TreeNode {
    try {
      this.opts.famfs.catchUp();
    } catch (e) {
      throw unavailable(`cannot read the famfs log on ${this.opts.devicePath}: ${(e as Error).message}`, e);
    }
    return resolveStaticPath(this.opts.famfs, sp, this.opts.pool, block);
  }

  /** Whether the volume of a record still exists: its CSI file, or its static path. */
  private recordExists(r: { volumeId: string; staticPath?: string }): boolean {
    if (r.staticPath === undefined) return this.volumeFile(r.volumeId) !== undefined;
    this.opts.famfs.catchUp();
    return this.opts.famfs.lookup(r.staticPath) !== undefined;
  }

  /** The root a record's live bind shows (mountinfo's root field). */
  private recordRoot(r: { volumeId: string; staticPath?: string }, kind: 'mount' | 'block'): string {
    return r.staticPath !== undefined ? `/${r.staticPath}` : this.expectedRoot(r.volumeId, kind);
  }

  /** Writes the staged record of a volume (dynamic or static: `where` says what is bound from where). */
  private async recordStaged(
    volumeId: string,
    staging: string,
    where: Pick<StagedVolume, 'source' | 'fileRelpath' | 'staticPath'>,
    profile: AccessProfile,
    readOnly: boolean,
    flags: string[],
  ): Promise<void> {
    const rec: StagedVolume = {
      volumeId,
      stagingPath: staging,
      famfsMount: this.fuse.mountpoint,
      ...where,
      readOnly,
      accessMode: profile.mode,
      kind: profile.kind,
      flags,
      stagedAt: new Date().toISOString(),
    };
    await this.store.update((d) => {
      d.staged[staging] = rec;
    });
  }

  /**
   * NodeStage of a static path: catch up until it shows, take its files over (invalidate), and bind a
   * directory onto the staging path. A file is bound at publish (into the target), nothing at staging.
   */
  private async stageStatic(
    req: NodeStageVolumeRequest,
    sp: StaticPath,
    staging: string,
    profile: AccessProfile,
    readOnly: boolean,
    flags: string[],
    deadline: number,
  ): Promise<NodeStageVolumeResponse> {
    const node = this.staticNode(sp, profile.kind === 'block');
    const doc = await this.store.load();
    const existing = doc.staged[staging];
    if (existing !== undefined) {
      if (existing.volumeId !== req.volume_id || existing.staticPath !== sp.relpath) {
        throw alreadyExists(
          `staging_target_path ${staging} already holds volume ${existing.volumeId}${existing.staticPath ? ` (path ${existing.staticPath})` : ''}`,
        );
      }
      if (
        existing.accessMode !== profile.mode ||
        existing.readOnly !== readOnly ||
        (existing.kind ?? 'mount') !== profile.kind ||
        !sameList(existing.flags, flags)
      ) {
        throw alreadyExists(
          `volume ${req.volume_id} is already staged at ${staging} as ${existing.accessMode}${existing.readOnly ? ' read-only' : ''}; unstage it first`,
        );
      }
      if (node.kind === 'file' || (await this.bindAlive(staging, `/${sp.relpath}`))) return {};
    }
    await this.ensureFuse();
    const files = filesUnder(node);
    await this.catchUpUntilVisible(req.volume_id, deadline, files[0] ?? sp.relpath);
    for (const f of files) {
      try {
        await this.fuse.invalidate(f);
      } catch (e) {
        throw e instanceof FuseSupervisorError ? unavailable(e.message, e) : e;
      }
    }
    const guard = readOnly ? await this.roGuard.begin(staging, sp.relpath, true) : NO_GUARD_CHANGE;
    if (node.kind === 'dir') await this.bindStaging(req.volume_id, staging, readOnly, flags, sp.relpath).catch(guard.fail);
    else {
      await unmountAll(staging);
      await fs.promises.mkdir(staging, { recursive: true, mode: 0o750 });
    }
    await this.recordStaged(
      req.volume_id,
      staging,
      {
        source: this.fuse.hostPath(sp.relpath),
        ...(node.kind === 'file' ? { fileRelpath: sp.relpath } : {}),
        staticPath: sp.relpath,
      },
      profile,
      readOnly,
      flags,
    );
    this.log.info(
      { volume: req.volume_id, path: sp.relpath, staging, files: files.length, readOnly, mode: profile.mode },
      'static volume staged (caught up, caches invalidated)',
    );
    return {};
  }

  /**
   * NodePublish of a static path: a directory is bound from its staging bind onto the target; a file
   * onto target/<its name> (mount access: the pod sees a directory holding the file) or onto the
   * target itself (block access).
   */
  private async publishStatic(
    req: NodePublishVolumeRequest,
    target: string,
    staging: string,
    staged: StagedVolume,
    profile: AccessProfile,
    doc: NodeStateDoc,
  ): Promise<NodePublishVolumeResponse> {
    const relpath = staged.staticPath as string;
    const node = this.staticNode({ relpath, wantDir: false }, profile.kind === 'block');
    const readOnly = publishIsReadOnly(profile, req.readonly) || staged.readOnly;
    const flags = bindFlags(profile);
    const mountGroup = profile.mountGroup;
    if (mountGroup !== undefined && node.kind === 'file') this.checkMountGroup(node, mountGroup, readOnly);
    const boundAt = node.kind === 'file' && profile.kind === 'mount' ? path.join(target, node.name) : target;
    const existing = doc.published[target];
    if (existing !== undefined) {
      const same =
        existing.volumeId === req.volume_id &&
        existing.staticPath === relpath &&
        existing.readOnly === readOnly &&
        existing.kind === profile.kind &&
        existing.accessMode === profile.mode &&
        sameList(existing.flags, flags);
      if (!same)
        throw alreadyExists(
          `target_path ${target} already has volume ${existing.volumeId} published; a publish with different arguments needs an unpublish first`,
        );
      if (await this.bindAlive(boundAt, `/${relpath}`)) return {};
    }
    let source = this.fuse.hostPath(relpath);
    if (node.kind === 'dir') {
      if (!(await this.bindAlive(staging, `/${relpath}`))) {
        await this.ensureFuse();
        await this.bindStaging(req.volume_id, staging, staged.readOnly, staged.flags ?? [], relpath);
      }
      source = staging;
    } else await this.ensureFuse();
    await ensureTarget(target, profile.kind === 'block' ? 'file' : 'dir');
    await unmountAll(target);
    if (boundAt !== target) {
      await unmountAll(boundAt);
      await ensureTarget(boundAt, 'file');
    }
    const guard = await this.roGuard.begin(target, relpath, readOnly);
    await bindMount(source, boundAt, { readOnly, flags }).catch(guard.fail);
    const rec: PublishedVolume = {
      volumeId: req.volume_id,
      targetPath: target,
      source,
      stagingPath: staging,
      kind: profile.kind,
      readOnly,
      accessMode: profile.mode,
      flags,
      ...(mountGroup !== undefined ? { mountGroup } : {}),
      publishedAt: new Date().toISOString(),
      staticPath: relpath,
      ...(boundAt !== target ? { boundAt } : {}),
    };
    await this.store.putPublished(rec);
    this.log.info({ volume: req.volume_id, path: relpath, target: boundAt, readOnly, kind: profile.kind }, 'static volume published');
    return {};
  }

  private async takeOver(volumeId: string, deadlineMs: number): Promise<void> {
    await this.ensureFuse();
    await this.catchUpUntilVisible(volumeId, deadlineMs);
    // Serial sharing: another host may have written this file since we last looked. Drop our CPU
    // lines and page cache so the first read comes from the memory (design-hazards §4).
    try {
      await this.fuse.invalidate(objectFileRelpath(volumeId));
    } catch (e) {
      throw e instanceof FuseSupervisorError ? unavailable(e.message, e) : e;
    }
  }

  private publishSource(rec: { kind: 'mount' | 'block' }, staging: string): string {
    return rec.kind === 'block' ? `${staging}/${VOLUME_FILE_NAME}` : staging;
  }

  private expectedRoot(volumeId: string, kind: 'mount' | 'block'): string {
    return '/' + (kind === 'block' ? objectFileRelpath(volumeId) : objectDirRelpath(volumeId));
  }

  /**
   * fsGroup for a file that cannot be chowned per pod: famfs keeps one uid/gid/mode per file in the
   * shared log, and the FUSE mount enforces them (default_permissions). A pod with fsGroup G can
   * use the file when the file's gid is G (group bits), or when the "other" bits already grant the
   * access. Anything else would fail at the pod's first open, so it is refused here.
   */
  private checkMountGroup(file: FileNode, group: number, readOnly: boolean): void {
    const need = readOnly ? 0o4 : 0o6;
    const groupOk = file.gid === group && ((file.mode >> 3) & need) === need;
    const otherOk = (file.mode & need) === need;
    if (groupOk || otherOk) return;
    throw failedPrecondition(
      `volume_mount_group ${group}: the volume's file is owned by gid ${file.gid} with mode 0${(file.mode & 0o777).toString(8)}, ` +
        `so a pod with fsGroup ${group} cannot ${readOnly ? 'read' : 'read and write'} it; famfs cannot change a file's group per pod — ` +
        `create the volume with StorageClass parameter gid: "${group}" (and a mode granting group access)`,
    );
  }

  // ---- RPCs ----

  async stage(req: NodeStageVolumeRequest): Promise<NodeStageVolumeResponse> {
    if (req.volume_id === '') throw invalidArgument('volume_id is required');
    if (req.staging_target_path === '') throw invalidArgument('staging_target_path is required');
    if (req.volume_capability === null || req.volume_capability === undefined) throw invalidArgument('volume_capability is required');
    const staging = await this.paths.check(req.staging_target_path, 'staging_target_path');
    const profile = this.profileOf(req.volume_capability, req.volume_context ?? {});
    const shared = sharedVolumePath(req.volume_context);
    // A read-only share is bound read-only whatever the capability says: its source is frozen.
    const readOnly = profile.readOnly || profile.mountFlags.includes('ro') || shared !== undefined;
    const flags = bindFlags(profile);
    const deadline = Date.now() + (this.opts.stageCatchupMs ?? DEFAULT_STAGE_CATCHUP_MS);
    const sp = staticPathOf(req.volume_context) ?? shared;
    return this.exclusive(req.volume_id, async () => {
      if (sp !== undefined) return this.stageStatic(req, sp, staging, profile, readOnly, flags, deadline);
      const file = this.requireFile(req.volume_id);
      const doc = await this.store.load();
      const existing = doc.staged[staging];
      if (existing !== undefined) {
        if (existing.volumeId !== req.volume_id) {
          throw alreadyExists(`staging_target_path ${staging} already holds volume ${existing.volumeId}`);
        }
        if (
          existing.accessMode !== profile.mode ||
          existing.readOnly !== readOnly ||
          (existing.kind ?? 'mount') !== profile.kind ||
          !sameList(existing.flags, flags)
        ) {
          throw alreadyExists(
            `volume ${req.volume_id} is already staged at ${staging} as ${existing.accessMode}${existing.readOnly ? ' read-only' : ''} (${existing.kind ?? 'mount'}); unstage it first`,
          );
        }
        if (await this.bindAlive(staging, this.expectedRoot(req.volume_id, 'mount'))) return {};
        this.log.warn({ volume: req.volume_id, staging }, 'staged volume lost its mount: staging it again');
      }
      await this.takeOver(req.volume_id, deadline);
      const guard = readOnly ? await this.roGuard.begin(staging, objectDirRelpath(req.volume_id), true) : NO_GUARD_CHANGE;
      await this.bindStaging(req.volume_id, staging, readOnly, flags).catch(guard.fail);
      await this.recordStaged(
        req.volume_id,
        staging,
        {
          source: this.fuse.hostPath(objectDirRelpath(req.volume_id)),
          fileRelpath: objectFileRelpath(req.volume_id),
        },
        profile,
        readOnly,
        flags,
      );
      this.log.info({ volume: req.volume_id, staging, size: file.size, readOnly, mode: profile.mode }, 'volume staged (caught up, caches invalidated)');
      return {};
    });
  }

  async unstage(req: NodeUnstageVolumeRequest): Promise<NodeUnstageVolumeResponse> {
    if (req.volume_id === '') throw invalidArgument('volume_id is required');
    if (req.staging_target_path === '') throw invalidArgument('staging_target_path is required');
    const staging = await this.paths.check(req.staging_target_path, 'staging_target_path');
    return this.exclusive(req.volume_id, async () => {
      const doc = await this.store.load();
      const rec = doc.staged[staging];
      if (rec !== undefined && rec.volumeId !== req.volume_id) {
        throw failedPrecondition(`staging_target_path ${staging} holds volume ${rec.volumeId}, not ${req.volume_id}`);
      }
      // Without a record: whether something is still mounted there (see unpublish).
      const mounted = rec !== undefined || (await isMountPoint(staging));
      if (rec === undefined && !mounted) {
        if (!isVolumeId(req.volume_id) || this.volumeFile(req.volume_id) === undefined)
          throw notFound(`volume ${req.volume_id} does not exist and is not staged at ${staging}`);
        return {};
      }
      const users = this.store.publishedOf(req.volume_id).filter((p) => p.stagingPath === staging);
      if (users.length > 0) {
        throw failedPrecondition(`volume ${req.volume_id} is still published at ${users.map((u) => u.targetPath).join(', ')}; unpublish it first`);
      }
      // The writer gives the file up: its dirty lines must be in the memory before another host reads.
      let flushed = 'read-only';
      if (rec === undefined || !rec.readOnly) {
        try {
          if (rec?.staticPath !== undefined) {
            // A static path: every file under it (a path deleted meanwhile has nothing left to flush).
            this.opts.famfs.catchUp();
            const node = this.opts.famfs.lookup(rec.staticPath);
            for (const f of node === undefined ? [] : filesUnder(node)) flushed = await this.fuse.flush(f);
          } else flushed = await this.flushFile(req.volume_id);
        } catch (e) {
          // On failed memory the flush cannot happen, and never will: refusing would pin the
          // volume to this node forever. Give it up, and say loudly that its last writes may be lost
          // (log, Event on the PV/PVC, and the VolumeCondition already reports the memory error).
          const failure = await this.memoryFailure();
          if (failure === undefined) throw e;
          flushed = 'impossible (memory error)';
          const message = `volume ${req.volume_id} unstaged from node ${this.opts.nodeId} without flushing its CPU caches: ${failure}; writes not yet in the memory may be lost`;
          this.log.error({ volume: req.volume_id, staging, err: (e as Error).message, failure }, 'writer unstaged on failed memory: flush impossible');
          this.memoryError({ volumeId: req.volume_id, message });
        }
      }
      await unmountAll(staging);
      await this.store.update((d) => {
        delete d.staged[staging];
      });
      await this.roGuard.drop(staging);
      this.log.info({ volume: req.volume_id, staging, flushed }, 'volume unstaged');
      return {};
    });
  }

  async publish(req: NodePublishVolumeRequest): Promise<NodePublishVolumeResponse> {
    if (req.volume_id === '') throw invalidArgument('volume_id is required');
    if (req.target_path === '') throw invalidArgument('target_path is required');
    if (req.volume_capability === null || req.volume_capability === undefined) throw invalidArgument('volume_capability is required');
    // Every argument is checked before anything about state (a missing staging path means the CO
    // skipped NodeStageVolume: a precondition, so it comes after the arguments that are wrong).
    const [target, staging] = await Promise.all([
      this.paths.check(req.target_path, 'target_path'),
      req.staging_target_path === '' ? Promise.resolve(undefined) : this.paths.check(req.staging_target_path, 'staging_target_path'),
    ]);
    if (target === staging) throw invalidArgument('target_path and staging_target_path must differ');
    const profile = this.profileOf(req.volume_capability, req.volume_context ?? {});
    if (staging === undefined) {
      throw failedPrecondition('staging_target_path is required: this plugin stages volumes (STAGE_UNSTAGE_VOLUME) before publishing them');
    }
    return this.exclusive(req.volume_id, async () => {
      const doc0 = await this.store.load();
      const staged0 = doc0.staged[staging];
      if (staged0?.staticPath !== undefined && staged0.volumeId === req.volume_id) return this.publishStatic(req, target, staging, staged0, profile, doc0);
      const file = this.requireFile(req.volume_id);
      const doc = await this.store.load();
      const staged = doc.staged[staging];
      if (staged === undefined || staged.volumeId !== req.volume_id) {
        throw failedPrecondition(`volume ${req.volume_id} is not staged at ${staging}; call NodeStageVolume first`);
      }
      const readOnly = publishIsReadOnly(profile, req.readonly) || staged.readOnly;
      const flags = bindFlags(profile);
      const mountGroup = profile.mountGroup;
      if (mountGroup !== undefined) this.checkMountGroup(file, mountGroup, readOnly);

      const existing = doc.published[target];
      if (existing !== undefined) {
        const same =
          existing.volumeId === req.volume_id &&
          existing.readOnly === readOnly &&
          existing.kind === profile.kind &&
          existing.accessMode === profile.mode &&
          sameList(existing.flags, flags) &&
          existing.mountGroup === mountGroup &&
          (existing.stagingPath ?? staging) === staging;
        if (!same) {
          throw alreadyExists(
            `target_path ${target} already has volume ${existing.volumeId} published (${existing.accessMode}${existing.readOnly ? ', read-only' : ''}, ${existing.kind}); ` +
              'a publish with different arguments needs an unpublish first',
          );
        }
        if (await this.bindAlive(target, this.expectedRoot(req.volume_id, profile.kind))) return {};
        this.log.warn({ volume: req.volume_id, target }, 'published volume lost its mount: binding it again');
      } else {
        for (const other of this.store.publishedOf(req.volume_id)) {
          const otherRule = ACCESS_MODE_RULES[other.accessMode as keyof typeof ACCESS_MODE_RULES];
          if (!profile.multiTargetOnNode || otherRule?.multiTargetOnNode === false) {
            throw failedPrecondition(
              `volume ${req.volume_id} is already published at ${other.targetPath} on this node and ${profile.multiTargetOnNode ? other.accessMode : profile.mode} allows one target only`,
            );
          }
        }
      }
      // A target made just now has nothing mounted on it: no umount2 round trip for it.
      if ((await ensureTarget(target, profile.kind === 'block' ? 'file' : 'dir')) === 'existed') await unmountAll(target);
      const source = this.publishSource(profile, staging);
      const guardPath = objectDirRelpath(req.volume_id);
      // The staging bind must be alive to bind from it (it pins the FUSE connection we publish).
      // When famfs-fused need not be told anything first (a read-write publish that no read-only
      // path overlaps: the hot path), the check and the bind are one thread-pool job, one wake-up
      // to wait for on a busy node. Otherwise the check comes first, so that a dead FUSE server is
      // replaced before it is sent the guard.
      let guard = this.roGuard.beginQuiet(target, guardPath, readOnly);
      const quiet = guard;
      const outcome =
        quiet === undefined
          ? (await this.bindAlive(staging, this.expectedRoot(req.volume_id, 'mount')))
            ? 'alive'
            : 'not alive'
          : await bindMountIfAlive(source, target, { bind: staging, root: this.hostRoot(req.volume_id, 'mount') }, { readOnly, flags }).catch(quiet.fail);
      if (outcome !== 'bound') {
        if (outcome !== 'alive') {
          this.log.warn({ volume: req.volume_id, staging }, 'staging mount is dead or missing: re-staging before publishing');
          const restage = async (): Promise<void> => {
            await this.takeOver(req.volume_id, Date.now() + (this.opts.stageCatchupMs ?? DEFAULT_STAGE_CATCHUP_MS));
            await this.bindStaging(req.volume_id, staging, staged.readOnly, staged.flags ?? []);
          };
          await (quiet === undefined ? restage() : restage().catch(quiet.fail));
        }
        guard ??= await this.roGuard.begin(target, guardPath, readOnly);
        await bindMount(source, target, { readOnly, flags }).catch(guard.fail);
      }
      const rec: PublishedVolume = {
        volumeId: req.volume_id,
        targetPath: target,
        source,
        stagingPath: staging,
        kind: profile.kind,
        readOnly,
        accessMode: profile.mode,
        flags,
        ...(mountGroup !== undefined ? { mountGroup } : {}),
        publishedAt: new Date().toISOString(),
      };
      await this.store.putPublished(rec);
      this.log.info({ volume: req.volume_id, target, readOnly, kind: profile.kind }, 'volume published');
      return {};
    });
  }

  async unpublish(req: NodeUnpublishVolumeRequest): Promise<NodeUnpublishVolumeResponse> {
    if (req.volume_id === '') throw invalidArgument('volume_id is required');
    if (req.target_path === '') throw invalidArgument('target_path is required');
    const target = await this.paths.check(req.target_path, 'target_path');
    return this.exclusive(req.volume_id, async () => {
      const doc = await this.store.load();
      const rec = doc.published[target];
      if (rec !== undefined && rec.volumeId !== req.volume_id) {
        throw notFound(`volume ${req.volume_id} is not published at ${target} (it holds volume ${rec.volumeId})`);
      }
      // Without a record (lost in a crash, or never ours): whether something is still mounted there,
      // asked of the path (no mount table read: with thousands of mounts on a node, reading and
      // parsing it costs tens of milliseconds).
      const mounted = rec !== undefined || (await isMountPoint(target));
      if (rec === undefined && !mounted) {
        if (!isVolumeId(req.volume_id) || this.volumeFile(req.volume_id) === undefined) {
          throw notFound(`volume ${req.volume_id} does not exist and is not published at ${target}`);
        }
        // Not ours (any more): a crash between creating the target and recording it leaves an empty one.
        await removeTarget(target).catch(() => undefined);
        return {};
      }
      // unmountAll detaches lazily when the FUSE server behind the bind is gone (ENOTCONN).
      if (rec?.boundAt !== undefined) {
        await unmountAll(rec.boundAt);
        await removeTarget(rec.boundAt);
      }
      const n = await unmountAll(target);
      await removeTarget(target);
      await this.store.deletePublished(target);
      // After the target is gone: the last read-only one lifts the guard, the last read-write one sets it again.
      await this.roGuard.drop(target);
      this.log.info({ volume: req.volume_id, target, unmounted: n }, 'volume unpublished');
      return {};
    });
  }

  async condition(volumeId: string, volumePath: string, staticPath?: string): Promise<VolumeCondition> {
    const problems: string[] = [];
    if (this.opts.device.failed) problems.push(`device ${this.opts.devicePath} failed: ${this.opts.device.failureMessage ?? 'memory error'}`);
    // A block target is the file itself; a mount target is the directory holding it. Attributes of
    // the directory may still be cached after the server died: the file tells the truth.
    const isDir = await fs.promises.lstat(volumePath).then(
      (s) => s.isDirectory(),
      () => false,
    );
    const probe = await probePath(isDir && staticPath === undefined ? `${volumePath}/${VOLUME_FILE_NAME}` : volumePath);
    if (probe.health === 'disconnected')
      problems.push(`the famfs FUSE mount behind ${volumePath} is dead (transport endpoint not connected); unpublish and publish again`);
    else if (probe.health !== 'ok') problems.push(`${volumePath}: ${probe.error?.code ?? probe.health}`);
    const h = await this.fuse.health();
    if (h.state === 'serving') this.roGuard.verify(h.guard);
    if (h.state === 'dead') problems.push(h.message);
    else if (h.state === 'absent') problems.push(`no famfs FUSE server serves ${this.fuse.mountpoint}`);
    else if (h.failed) problems.push(`famfs FUSE server reports a memory error: ${h.failureMessage ?? 'device failed'}`);
    else if (h.fenced)
      problems.push(
        'this host is self-fenced: it did not ack the famfs log within its fence window (stalled?), so reads and writes answer EIO until it has replayed the log and acked (docs/format.md "One clock")',
      );
    if (h.state === 'serving' && h.rewrittenEntries.length > 0) problems.push(rewrittenMessage(h.rewrittenEntries));
    let gone = false;
    try {
      gone = !this.recordExists({ volumeId, ...(staticPath !== undefined ? { staticPath } : {}) });
    } catch (e) {
      problems.push((e as Error).message);
    }
    if (gone)
      problems.push(
        staticPath !== undefined
          ? `famfs path ${staticPath} of volume ${volumeId} no longer exists (deleted?)`
          : `volume ${volumeId} no longer exists in the famfs log (deleted?)`,
      );
    return problems.length === 0 ? { abnormal: false, message: 'volume is healthy' } : { abnormal: true, message: problems.join('; ') };
  }

  /** Log entries this node's FUSE server replayed and then saw rewritten (empty when none, or no server). */
  async rewrittenEntries(): Promise<number[]> {
    const h = await this.fuse.health();
    return h.state === 'serving' ? h.rewrittenEntries : [];
  }

  async stats(req: NodeGetVolumeStatsRequest): Promise<NodeGetVolumeStatsResponse> {
    if (req.volume_id === '') throw invalidArgument('volume_id is required');
    // Argument checks before state: a path that cannot name a file (NUL, longer than PATH_MAX) or
    // climbs with '..' is INVALID_ARGUMENT, as in the other node calls. A relative path is well
    // formed but never where this plugin staged or published a volume (it records absolute paths):
    // the spec's NOT_FOUND, "the volume does not exist on the specified volume_path", which is
    // also what csi-sanity v5.4.0 expects for "some/path", known volume or not.
    const p = checkPathSyntax(req.volume_path, 'volume_path', 'allowed');
    const doc = await this.store.load();
    const file = this.volumeFile(req.volume_id);
    const known = file !== undefined || Object.values(doc.staged).some((s) => s.volumeId === req.volume_id) || this.store.publishedOf(req.volume_id).length > 0;
    if (!known) throw notFound(`volume ${req.volume_id} does not exist`);
    const onPath = path.isAbsolute(p) && (doc.published[p]?.volumeId === req.volume_id || doc.staged[p]?.volumeId === req.volume_id);
    if (!onPath) throw notFound(`volume ${req.volume_id} is not staged or published at ${JSON.stringify(req.volume_path)}`);
    const staticPath = (doc.published[p] ?? doc.staged[p])?.staticPath;
    let size = file?.size ?? 0;
    if (staticPath !== undefined) {
      const node = this.opts.famfs.lookup(staticPath);
      size = 0;
      for (const f of node === undefined ? [] : filesUnder(node)) {
        const n = this.opts.famfs.lookup(f);
        if (n?.kind === 'file') size += n.size;
      }
    }
    // famfs files are allocated in full when created and cannot grow: the whole capacity is in use
    // from the start and nothing is ever available to grow into.
    return {
      usage: [{ unit: 'BYTES', total: String(size), used: String(size), available: '0' }],
      volume_condition: await this.condition(req.volume_id, p, staticPath),
    };
  }

  // ---- health and restart ----

  /** For Probe: the FUSE mount must serve whenever volumes are staged on it. */
  async health(): Promise<{ ok: true } | { ok: false; message: string }> {
    const doc = await this.store.load();
    if (Object.keys(doc.staged).length === 0) return { ok: true };
    const h = await this.fuse.health();
    if (h.state === 'serving') this.roGuard.verify(h.guard);
    if (h.state === 'serving') return h.failed ? { ok: false, message: `famfs FUSE server reports a memory error: ${h.failureMessage ?? ''}` } : { ok: true };
    // Restarting this plugin would release the held connection of a dead server: it is not our failure.
    if (h.state === 'dead' && h.held === true) return { ok: true };
    return { ok: false, message: h.state === 'dead' ? h.message : `volumes are staged but no famfs FUSE server serves ${this.fuse.mountpoint}` };
  }

  /**
   * After a plugin start: for every recorded staging and publish, keep it when its mount is alive,
   * re-establish it when the FUSE server or the bind died, and tear it down (unmount, remove the
   * target, forget it) when the volume no longer exists. Never throws; reports what it did.
   */
  async restore(): Promise<RestoreReport> {
    const report: RestoreReport = { restored: [], kept: [], removed: [], failed: [] };
    let doc: NodeStateDoc;
    try {
      doc = await this.store.load();
    } catch (e) {
      this.log.error({ err: (e as Error).message, file: this.store.file }, 'node state unreadable: nothing restored');
      return report;
    }
    this.logPublishedReport();
    const staged = Object.values(doc.staged);
    const published = Object.values(doc.published);
    if (staged.length === 0 && published.length === 0) return report;
    let fuseOk = true;
    try {
      await this.ensureFuse();
    } catch (e) {
      fuseOk = false;
      this.log.error({ err: (e as Error).message }, 'restore: famfs FUSE server cannot run; recorded mounts stay as they are');
    }
    // Before any bind is made again: the server's guard as the records say (its file may be stale).
    await this.roGuard.syncOrRetry(true);
    const goneVolumes = new Set<string>();
    for (const s of staged) {
      const what = `staged ${s.volumeId} at ${s.stagingPath}`;
      try {
        if (!this.recordExists(s)) {
          goneVolumes.add(s.volumeId);
          await unmountAll(s.stagingPath, { lazy: true });
          await this.store.update((d) => {
            delete d.staged[s.stagingPath];
          });
          report.removed.push(what);
        } else if ((s.staticPath !== undefined && s.fileRelpath !== undefined) || (await this.bindAlive(s.stagingPath, this.recordRoot(s, 'mount')))) {
          // (a static file has nothing bound at its staging path)
          report.kept.push(what);
        } else if (fuseOk) {
          await this.catchUpUntilVisible(s.volumeId, Date.now() + (this.opts.stageCatchupMs ?? DEFAULT_STAGE_CATCHUP_MS), s.staticPath);
          await this.bindStaging(s.volumeId, s.stagingPath, s.readOnly, s.flags ?? [], s.staticPath);
          report.restored.push(what);
        } else report.failed.push(what);
      } catch (e) {
        report.failed.push(`${what}: ${e instanceof CsiError || e instanceof Error ? e.message : String(e)}`);
      }
    }
    for (const p of published) {
      const what = `published ${p.volumeId} at ${p.targetPath}`;
      try {
        if (goneVolumes.has(p.volumeId) || !this.recordExists(p)) {
          if (p.boundAt !== undefined) {
            await unmountAll(p.boundAt, { lazy: true });
            await removeTarget(p.boundAt).catch(() => undefined);
          }
          await unmountAll(p.targetPath, { lazy: true });
          await removeTarget(p.targetPath).catch(() => undefined);
          await this.store.deletePublished(p.targetPath);
          report.removed.push(what);
        } else if (await this.bindAlive(p.boundAt ?? p.targetPath, this.recordRoot(p, p.kind))) {
          report.kept.push(what);
        } else if (fuseOk && p.boundAt !== undefined) {
          // a static file shown inside its target directory: bound straight from the FUSE mount
          await unmountAll(p.boundAt);
          await ensureTarget(p.boundAt, 'file');
          await bindMount(p.source, p.boundAt, { readOnly: p.readOnly, flags: p.flags });
          report.restored.push(what);
        } else if (fuseOk && p.stagingPath !== undefined && (await this.bindAlive(p.stagingPath, this.recordRoot(p, 'mount')))) {
          await unmountAll(p.targetPath);
          await ensureTarget(p.targetPath, p.kind === 'block' ? 'file' : 'dir');
          await bindMount(p.source, p.targetPath, { readOnly: p.readOnly, flags: p.flags });
          report.restored.push(what);
        } else report.failed.push(what);
      } catch (e) {
        report.failed.push(`${what}: ${(e as Error).message}`);
      }
    }
    this.log.info(report, 'node state restored after start');
    return report;
  }

  /** What loading the publish records found, in the log (restore() calls it once per start). */
  private logPublishedReport(): void {
    const r = this.store.publishedReport;
    if (r.migratedFrom !== undefined) this.log.info({ from: r.migratedFrom, file: this.store.journalFile }, 'publish records migrated to the record journal');
    if (r.dropped !== undefined) {
      this.log.error(
        { err: r.dropped, file: this.store.publishedFile },
        'publish records unreadable (machine crash, or written by an older plugin after a downgrade): dropped; publish and unpublish work from the paths',
      );
    }
    const j = r.journal;
    if (j === undefined) return;
    if (j.tornTail !== undefined) {
      // Only a machine crash (the records are not fsync'ed) or a failing disk tears a frame: what it
      // held was never acknowledged, or described a bind mount the crash removed.
      this.log.warn({ file: this.store.journalFile, ...j.tornTail, frames: j.frames }, 'publish record journal: torn tail dropped');
    }
    if (j.damage.length > 0) {
      this.log.error(
        { file: this.store.journalFile, damage: j.damage, uncertain: j.uncertain, damagedCopy: j.damagedCopy, frames: j.frames },
        'publish record journal damaged in the middle (not a crash of this plugin: check the disk): records written before the damage dropped as uncertain; publish and unpublish work from the paths',
      );
    }
  }

  handlers(): NodeHandlers {
    return {
      NodeStageVolume: (req) => this.stage(req),
      NodeUnstageVolume: (req) => this.unstage(req),
      NodePublishVolume: (req) => this.publish(req),
      NodeUnpublishVolume: (req) => this.unpublish(req),
      NodeGetVolumeStats: (req) => this.stats(req),
      NodeGetCapabilities: () => ({ capabilities: NODE_CAPABILITIES.map((type) => ({ rpc: { type } })) }),
      // No max_volumes_per_node: famfs has no per-node attach limit (a node maps files from the
      // shared pool; the pool's log capacity bounds the number of volumes, for all nodes at once).
      NodeGetInfo: () => ({
        node_id: this.opts.nodeId,
        accessible_topology: { segments: { [this.opts.topologyKey]: this.opts.pool } },
      }),
    };
  }
}
