// Controller service: volumes as famfs files, published to nodes under the sharing rules of
// capabilities.ts; snapshots and clones as memory-to-memory copies into new famfs files.
// famfs files cannot grow, so expansion is not advertised (ControllerExpandVolume: UNIMPLEMENTED).
import { checkCapability, requireCapabilities, type AccessProfile, type CapabilityPolicy } from './capabilities';
import { status } from '@grpc/grpc-js';
import { alreadyExists, failedPrecondition, invalidArgument, isCsiError, notFound, resourceExhausted, unavailable } from './errors';
import { isSnapshotId, isVolumeId, objectFileRelpath } from './names';
import { checkSnapshotParams, parseVolumeParams } from './params';
import { paginate, parseContentSource, requireFields, sizeForRange } from './requests';
import { staticPathOf, type StaticPath } from './static-path';
import type { PublishRecord } from './store';
import type { RpcHandler } from './server';
import { CTX_FILE, CTX_POOL, CTX_SHARE_OF, CTX_SHARING } from './volume-context';
import type { SnapshotInfo, VolumeInfo, Volumes } from './volumes';
import type {
  CreateSnapshotRequest,
  CreateSnapshotResponse,
  DeleteSnapshotRequest,
  DeleteSnapshotResponse,
  GetSnapshotRequest,
  GetSnapshotResponse,
  ListSnapshotsRequest,
  ListSnapshotsResponse,
  SnapshotOut,
  ControllerGetCapabilitiesRequest,
  ControllerGetCapabilitiesResponse,
  ControllerGetVolumeRequest,
  ControllerGetVolumeResponse,
  ControllerPublishVolumeRequest,
  ControllerPublishVolumeResponse,
  ControllerRpcType,
  ControllerUnpublishVolumeRequest,
  ControllerUnpublishVolumeResponse,
  CreateVolumeRequest,
  CreateVolumeResponse,
  DeleteVolumeRequest,
  DeleteVolumeResponse,
  GetCapacityRequest,
  GetCapacityResponse,
  ListVolumesRequest,
  ListVolumesResponse,
  Topology,
  ValidateVolumeCapabilitiesRequest,
  ValidateVolumeCapabilitiesResponse,
  VolumeCondition,
  VolumeOut,
} from './types';

export interface ControllerOptions {
  /** The volume and snapshot operations (volumes.ts) over the controller's store. */
  volumes: Volumes;
  pool: string;
  topologyKey: string;
  /** Whether a node id names a node of this pool (ControllerPublish answers NOT_FOUND otherwise). */
  nodeExists: (nodeId: string) => boolean | Promise<boolean>;
  /** Where nodeExists gets its answer (CSINode objects, a --nodes list, ...), for the NOT_FOUND message. */
  nodeSource?: string;
  /** Health of the device, reported as VolumeCondition. */
  condition: () => VolumeCondition;
  blockAllowed?: boolean;
  /** Why the device failed (a memory error), or undefined while it is healthy. */
  deviceFailure?: () => string | undefined;
  /** Told when an RPC runs into a failed device (Events, metrics); called on every such RPC. */
  onDeviceFailure?: (message: string) => void;
  /** Told after CreateVolume succeeded (also for an idempotent repeat): the VolumePlaced Event. */
  onVolumeCreated?: (v: VolumePlacement) => void;
}

/** Where a volume's memory is, for the user (kubectl describe pvc). */
export interface VolumePlacement {
  volumeId: string;
  name: string;
  /** The request's parameters, including csi.storage.k8s.io/pvc/name etc. from --extra-create-metadata. */
  parameters: Record<string, string>;
  sizeBytes: number;
  /** "offset 0x200000, 64 MiB" or "interleaved: 4 strips of ..., chunk ..." */
  placement: string;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

const READ_ONLY_MODES = new Set(['SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY']);

/** Every capability asks for read-only access: such a volume can never be written by its claim. */
function onlyReaders(caps: CreateVolumeRequest['volume_capabilities']): boolean {
  return caps.length > 0 && caps.every((c) => READ_ONLY_MODES.has(String(c.access_mode?.mode ?? '')));
}

/** Why an empty read-only volume is refused, and the two ways to get a useful one. */
export const EMPTY_READ_ONLY_MESSAGE =
  'a read-only volume without a content source would be empty (zeroes) forever, since nobody can write it: ' +
  "for data loaded by a claim, create the ReadOnlyMany claim with dataSource: {kind: PersistentVolumeClaim, name: <the loader's claim>} " +
  "(it shares the loader's memory without a copy); for data loaded with famfs cp, use a static PersistentVolume with csi.volumeAttributes.path (docs/volumes.md)";

function describePlacement(info: VolumeInfo): string {
  const f = info.file.fmap;
  if (f.kind === 'simple') return f.extents.map((e) => `offset ${hex(e.offset)} length ${e.len}`).join(', ');
  return `interleaved over ${f.nstrips} strips (chunk ${f.chunkSize}) at offsets ${f.strips.map((e) => hex(e.offset)).join(', ')}`;
}

export interface ControllerHandlers {
  CreateVolume: RpcHandler<CreateVolumeRequest, CreateVolumeResponse>;
  DeleteVolume: RpcHandler<DeleteVolumeRequest, DeleteVolumeResponse>;
  ControllerPublishVolume: RpcHandler<ControllerPublishVolumeRequest, ControllerPublishVolumeResponse>;
  ControllerUnpublishVolume: RpcHandler<ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse>;
  ValidateVolumeCapabilities: RpcHandler<ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse>;
  ListVolumes: RpcHandler<ListVolumesRequest, ListVolumesResponse>;
  GetCapacity: RpcHandler<GetCapacityRequest, GetCapacityResponse>;
  ControllerGetCapabilities: RpcHandler<ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse>;
  ControllerGetVolume: RpcHandler<ControllerGetVolumeRequest, ControllerGetVolumeResponse>;
  CreateSnapshot: RpcHandler<CreateSnapshotRequest, CreateSnapshotResponse>;
  DeleteSnapshot: RpcHandler<DeleteSnapshotRequest, DeleteSnapshotResponse>;
  ListSnapshots: RpcHandler<ListSnapshotsRequest, ListSnapshotsResponse>;
  GetSnapshot: RpcHandler<GetSnapshotRequest, GetSnapshotResponse>;
}

export const CONTROLLER_CAPABILITIES: readonly ControllerRpcType[] = [
  'CREATE_DELETE_VOLUME',
  'PUBLISH_UNPUBLISH_VOLUME',
  'LIST_VOLUMES',
  'GET_CAPACITY',
  'PUBLISH_READONLY',
  'LIST_VOLUMES_PUBLISHED_NODES',
  'VOLUME_CONDITION',
  'GET_VOLUME',
  'SINGLE_NODE_MULTI_WRITER',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  // GetSnapshot is served, but GET_SNAPSHOT (alpha, CSI 1.12) is not advertised: csi-sanity v5.4.0
  // rejects capabilities it does not know, and the external-snapshotter does not use it yet.
  'CLONE_VOLUME',
];

const timestamp = (ms: number) => ({ seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });

function snapshotOut(s: SnapshotInfo): SnapshotOut {
  return {
    size_bytes: String(s.sizeBytes),
    snapshot_id: s.snapshotId,
    source_volume_id: s.sourceVolumeId,
    creation_time: timestamp(s.createdAtMs),
    ready_to_use: s.readyToUse,
  };
}

/** Methods that write the famfs log or the controller image: refused on a failed device. */
const WRITING_METHODS = new Set<keyof ControllerHandlers>([
  'CreateVolume',
  'DeleteVolume',
  'ControllerPublishVolume',
  'ControllerUnpublishVolume',
  'CreateSnapshot',
  'DeleteSnapshot',
]);

/**
 * On a failed device (memory error) no RPC may touch the memory again: writes are UNAVAILABLE with
 * the reason (the CO retries; the device must be replaced or the role moved to a healthy host), and
 * a read that ran into the failure is UNAVAILABLE too instead of INTERNAL. ControllerGetVolume and
 * ListVolumes answer from what the controller last saw, with an abnormal VolumeCondition.
 */
function guardDevice(
  opts: ControllerOptions,
  h: ControllerHandlers,
  checkArguments: (method: keyof ControllerHandlers, req: unknown) => void,
): ControllerHandlers {
  const failure = opts.deviceFailure;
  if (failure === undefined) return h;
  const refuse = (method: string, why: string): Error => {
    opts.onDeviceFailure?.(why);
    return unavailable(`${method}: device failed (memory error): ${why}; the famfs pool cannot be changed until the device is replaced`);
  };
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(h) as [keyof ControllerHandlers, (req: never, ctx: never) => unknown][]) {
    out[name] = async (req: never, ctx: never): Promise<unknown> => {
      const before = failure();
      if (before !== undefined && WRITING_METHODS.has(name)) {
        // Bad input is INVALID_ARGUMENT whatever state the device is in (arguments before state).
        checkArguments(name, req);
        throw refuse(name, before);
      }
      try {
        return await fn(req, ctx);
      } catch (e) {
        const after = failure();
        if (after !== undefined && before === undefined) opts.onDeviceFailure?.(after);
        // A deliberate status (NOT_FOUND, INVALID_ARGUMENT, ...) stays true; anything else that met
        // the failed device becomes UNAVAILABLE with the reason.
        if (after !== undefined && !(isCsiError(e) && e.code !== status.INTERNAL)) throw refuse(name, after);
        throw e;
      }
    };
  }
  return out as unknown as ControllerHandlers;
}

/** Every Controller RPC, named once here so a new one fails to compile until it is served. */
const CONTROLLER_RPCS = Object.keys({
  CreateVolume: true,
  DeleteVolume: true,
  ControllerPublishVolume: true,
  ControllerUnpublishVolume: true,
  ValidateVolumeCapabilities: true,
  ListVolumes: true,
  GetCapacity: true,
  ControllerGetCapabilities: true,
  ControllerGetVolume: true,
  CreateSnapshot: true,
  DeleteSnapshot: true,
  ListSnapshots: true,
  GetSnapshot: true,
} satisfies Record<keyof ControllerHandlers, true>) as (keyof ControllerHandlers)[];

/** The Controller service's handlers, refused on a failed device (guardDevice). */
export function controllerService(opts: ControllerOptions): ControllerHandlers {
  const server = new ControllerServer(opts);
  const handlers = Object.fromEntries(CONTROLLER_RPCS.map((rpc) => [rpc, server[rpc].bind(server)]));
  return guardDevice(opts, handlers as unknown as ControllerHandlers, (method, req) => server.checkArguments(method, req));
}

/** The Controller service: one method per RPC, named exactly after it. */
export class ControllerServer implements ControllerHandlers {
  private readonly volumes: Volumes;
  private readonly ourTopology: Topology;

  constructor(private readonly opts: ControllerOptions) {
    this.volumes = opts.volumes;
    this.ourTopology = { segments: { [opts.topologyKey]: opts.pool } };
  }

  private policyFor(sharing: 'serial' | 'multi-writer'): CapabilityPolicy {
    return { multiWriterAllowed: sharing === 'multi-writer', blockAllowed: this.opts.blockAllowed ?? true };
  }

  private isOurs(t: Topology | null | undefined): boolean {
    return t?.segments?.[this.opts.topologyKey] === this.opts.pool;
  }

  private volumeOut(v: VolumeInfo): VolumeOut {
    const src = v.record?.contentSource;
    return {
      capacity_bytes: String(v.capacityBytes),
      volume_id: v.volumeId,
      volume_context: {
        [CTX_POOL]: this.opts.pool,
        [CTX_SHARING]: v.sharing,
        [CTX_FILE]: objectFileRelpath(v.shareOf ?? v.volumeId),
        ...(v.shareOf !== undefined ? { [CTX_SHARE_OF]: v.shareOf } : {}),
      },
      accessible_topology: [this.ourTopology],
      ...(src === undefined ? {} : { content_source: src.kind === 'snapshot' ? { snapshot: { snapshot_id: src.id } } : { volume: { volume_id: src.id } } }),
    };
  }

  /** The device's health first (it fails every volume), then the volume's own. */
  private conditionOf(v: VolumeInfo): VolumeCondition {
    const device = this.opts.condition();
    return device.abnormal ? device : this.volumes.condition(v);
  }

  private statusOf(v: VolumeInfo) {
    return { published_node_ids: Object.keys(v.record?.published ?? {}), volume_condition: this.conditionOf(v) };
  }

  /**
   * The argument checks of the RPCs that change something: pure (no state, no memory), so they run
   * first, and also before a failed device is refused: bad input always gets INVALID_ARGUMENT (or
   * OUT_OF_RANGE, or NOT_FOUND for an id that cannot be one of ours), whatever state things are in.
   */
  checkArguments(method: keyof ControllerHandlers, req: unknown): void {
    switch (method) {
      case 'CreateVolume':
        this.createArguments(req as CreateVolumeRequest);
        return;
      case 'DeleteVolume':
      case 'ControllerUnpublishVolume':
        requireFields(req as DeleteVolumeRequest, 'volume_id');
        return;
      case 'ControllerPublishVolume':
        this.publishArguments(req as ControllerPublishVolumeRequest);
        return;
      case 'CreateSnapshot':
        requireFields(req as CreateSnapshotRequest, 'name', 'source_volume_id');
        checkSnapshotParams((req as CreateSnapshotRequest).parameters);
        return;
      case 'DeleteSnapshot':
        requireFields(req as DeleteSnapshotRequest, 'snapshot_id');
        return;
      default:
        return;
    }
  }

  private createArguments(req: CreateVolumeRequest) {
    requireFields(req, 'name');
    const params = parseVolumeParams(req.parameters);
    requireCapabilities(req.volume_capabilities, this.policyFor(params.sharing));
    const source = parseContentSource(req.volume_content_source);
    if (source === undefined && onlyReaders(req.volume_capabilities)) throw invalidArgument(EMPTY_READ_ONLY_MESSAGE);
    // The range on its own (a copy's source size is checked against it later, with the source).
    sizeForRange(req.capacity_range);
    return { params, source };
  }

  /** The capability's shape; whether this volume's sharing allows it is checked with the volume. */
  private publishArguments(req: ControllerPublishVolumeRequest): StaticPath | undefined {
    requireFields(req, 'volume_id', 'node_id', 'volume_capability');
    const shape = checkCapability(req.volume_capability, { multiWriterAllowed: true, blockAllowed: this.opts.blockAllowed ?? true });
    if (!shape.ok) throw invalidArgument(`volume_capability: ${shape.reason}`);
    return staticPathOf(req.volume_context);
  }

  /**
   * Sharing between nodes: many readers, or many writers that opted in; anything else is serial
   * sharing, where the volume moves to the next node only after the previous one let go. Returns
   * true when this exact publish is already recorded (an idempotent repeat).
   */
  private checkSharing(volumeId: string, current: Record<string, PublishRecord>, nodeId: string, readonly: boolean, profile: AccessProfile): boolean {
    const mine = current[nodeId];
    if (mine !== undefined) {
      if (mine.readonly === readonly && mine.accessMode === profile.mode) return true;
      throw alreadyExists(
        `volume ${volumeId} is already published to node ${nodeId} as ${mine.accessMode}${mine.readonly ? ' read-only' : ''}; unpublish it first`,
      );
    }
    for (const [node, other] of Object.entries(current)) {
      const bothReaders = readonly && other.readonly && profile.multiNode && other.multiNode;
      const bothMultiWriters = profile.mode === 'MULTI_NODE_MULTI_WRITER' && other.accessMode === 'MULTI_NODE_MULTI_WRITER';
      if (!bothReaders && !bothMultiWriters) {
        throw failedPrecondition(
          `volume ${volumeId} is published to node ${node} (${other.accessMode}${other.readonly ? ', read-only' : ''}); ` +
            `${profile.mode}${readonly ? ' read-only' : ''} on ${nodeId} must wait until it is unpublished there`,
        );
      }
    }
    return false;
  }

  /** A static volume (static-path.ts): the path must exist; publishes are recorded for serial sharing. */
  private async publishStatic(req: ControllerPublishVolumeRequest, sp: StaticPath): Promise<ControllerPublishVolumeResponse> {
    const sharing = req.volume_context?.[CTX_SHARING] === 'multi-writer' ? 'multi-writer' : 'serial';
    const check = checkCapability(req.volume_capability, this.policyFor(sharing));
    if (!check.ok) throw invalidArgument(`volume_capability: ${check.reason}`);
    const profile = check.profile;
    this.volumes.resolveStatic(sp, this.opts.pool, profile.kind === 'block');
    const readonly = req.readonly || profile.readOnly;
    return this.volumes.exclusive(req.volume_id, async () => {
      const rec = this.volumes.staticVolume(req.volume_id);
      if (rec !== undefined && rec.path !== sp.relpath) {
        throw failedPrecondition(
          `volume handle ${req.volume_id} is published with path ${rec.path} (nodes ${Object.keys(rec.published).join(', ')}); give each static PersistentVolume its own volumeHandle`,
        );
      }
      if (!this.checkSharing(req.volume_id, rec?.published ?? {}, req.node_id, readonly, profile)) {
        await this.volumes.setStaticPublished(req.volume_id, sp.relpath, req.node_id, { readonly, accessMode: profile.mode, multiNode: profile.multiNode });
      }
      return { publish_context: { readonly: String(readonly) } };
    });
  }

  async CreateVolume(req: CreateVolumeRequest): Promise<CreateVolumeResponse> {
    const { params, source } = this.createArguments(req);
    const reqs = req.accessibility_requirements;
    if (reqs !== null && reqs !== undefined && reqs.requisite.length > 0 && !reqs.requisite.some((t) => this.isOurs(t))) {
      throw resourceExhausted(`none of the requisite topologies is pool ${this.opts.topologyKey}=${this.opts.pool}`);
    }
    // A read-only claim of another claim shares its memory (no copy) unless the class asks for a copy.
    const share = source?.kind === 'volume' && onlyReaders(req.volume_capabilities) && params.cloneMode !== 'copy';
    const info = await this.volumes.create({ name: req.name, range: req.capacity_range, params, ...(source ? { source } : {}), share });
    this.opts.onVolumeCreated?.({
      volumeId: info.volumeId,
      name: req.name,
      parameters: req.parameters,
      sizeBytes: info.capacityBytes,
      placement: describePlacement(info),
    });
    return { volume: this.volumeOut(info) };
  }

  async DeleteVolume(req: DeleteVolumeRequest): Promise<DeleteVolumeResponse> {
    this.checkArguments('DeleteVolume', req);
    await this.volumes.delete(req.volume_id);
    return {};
  }

  async ControllerPublishVolume(req: ControllerPublishVolumeRequest): Promise<ControllerPublishVolumeResponse> {
    const staticPath = this.publishArguments(req);
    let known: boolean;
    try {
      known = await this.opts.nodeExists(req.node_id);
    } catch (e) {
      if (isCsiError(e)) throw e;
      throw unavailable(`cannot tell whether node ${req.node_id} runs this driver: ${(e as Error).message}; retry`, e);
    }
    if (!known) throw notFound(`node ${req.node_id} is not a node of pool ${this.opts.pool} (${this.opts.nodeSource ?? 'unknown node'})`);
    if (staticPath !== undefined) return this.publishStatic(req, staticPath);
    const info = await this.volumes.require(req.volume_id);
    const check = checkCapability(req.volume_capability, this.policyFor(info.sharing));
    if (!check.ok) throw invalidArgument(`volume_capability: ${check.reason}`);
    const profile: AccessProfile = check.profile;
    const readonly = req.readonly || profile.readOnly;
    if (info.shareOf !== undefined && !readonly) {
      throw failedPrecondition(
        `volume ${req.volume_id} is a read-only share of volume ${info.shareOf} (no copy of its own): publish it read-only (ReadOnlyMany)`,
      );
    }
    return this.volumes.exclusive(req.volume_id, async () => {
      const shares = this.volumes.sharesOf(req.volume_id);
      if (!readonly && shares.length > 0) {
        throw failedPrecondition(
          `volume ${req.volume_id} is frozen: ${shares.length} read-only share(s) show its memory (${shares.join(', ')}); a writer may attach once they are deleted`,
        );
      }
      const current = (await this.volumes.describe(req.volume_id))?.record?.published ?? {};
      if (this.checkSharing(req.volume_id, current, req.node_id, readonly, profile)) return { publish_context: { readonly: String(readonly) } };
      await this.volumes.setPublished(req.volume_id, req.node_id, { readonly, accessMode: profile.mode, multiNode: profile.multiNode });
      return { publish_context: { readonly: String(readonly) } };
    });
  }

  async ControllerUnpublishVolume(req: ControllerUnpublishVolumeRequest): Promise<ControllerUnpublishVolumeResponse> {
    this.checkArguments('ControllerUnpublishVolume', req);
    // A static volume (any handle): forget the node's publish; the path itself is never touched.
    if (this.volumes.staticVolume(req.volume_id) !== undefined) {
      await this.volumes.exclusive(req.volume_id, () => this.volumes.setStaticPublished(req.volume_id, '', req.node_id, undefined));
      return {};
    }
    // A volume or node that is gone is already unpublished: OK.
    if (!isVolumeId(req.volume_id)) return {};
    await this.volumes.exclusive(req.volume_id, async () => {
      if (req.node_id === '') await this.volumes.clearPublished(req.volume_id);
      else await this.volumes.setPublished(req.volume_id, req.node_id, undefined);
    });
    return {};
  }

  async ValidateVolumeCapabilities(req: ValidateVolumeCapabilitiesRequest): Promise<ValidateVolumeCapabilitiesResponse> {
    requireFields(req, 'volume_id', 'volume_capabilities');
    const info = await this.volumes.require(req.volume_id);
    const policy = this.policyFor(info.sharing);
    for (const [i, cap] of req.volume_capabilities.entries()) {
      const r = checkCapability(cap, policy, `volume_capabilities[${i}]`);
      if (!r.ok) return { message: r.reason };
    }
    if (Object.keys(req.parameters).length > 0) {
      try {
        parseVolumeParams(req.parameters);
      } catch (e) {
        return { message: (e as Error).message };
      }
    }
    return {
      confirmed: {
        volume_context: req.volume_context,
        volume_capabilities: req.volume_capabilities,
        parameters: req.parameters,
        mutable_parameters: req.mutable_parameters,
      },
      message: '',
    };
  }

  async ListVolumes(req: ListVolumesRequest): Promise<ListVolumesResponse> {
    const { page, nextToken } = paginate(this.volumes.volumeIds(), req.starting_token, req.max_entries, isVolumeId);
    // Argument checks first; then no listing without the records (publish records, shares).
    this.volumes.store.requireReadable();
    const entries: ListVolumesResponse['entries'] = [];
    const failed = this.opts.deviceFailure?.() !== undefined;
    for (const id of page) {
      const info = failed ? this.volumes.describeCached(id) : await this.volumes.describe(id);
      if (info !== undefined) entries.push({ volume: this.volumeOut(info), status: this.statusOf(info) });
    }
    return { entries, next_token: nextToken };
  }

  GetCapacity(req: GetCapacityRequest): GetCapacityResponse {
    if (req.accessible_topology !== null && req.accessible_topology !== undefined && !this.isOurs(req.accessible_topology)) {
      return { available_capacity: '0', maximum_volume_size: { value: '0' }, minimum_volume_size: { value: '0' } };
    }
    if (Object.keys(req.parameters).length > 0) parseVolumeParams(req.parameters);
    const c = this.volumes.capacity();
    return {
      available_capacity: String(c.available),
      maximum_volume_size: { value: String(c.maximumVolume) },
      minimum_volume_size: { value: String(2 * 1024 * 1024) },
    };
  }

  ControllerGetCapabilities(_req: ControllerGetCapabilitiesRequest): ControllerGetCapabilitiesResponse {
    return { capabilities: CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })) };
  }

  async ControllerGetVolume(req: ControllerGetVolumeRequest): Promise<ControllerGetVolumeResponse> {
    requireFields(req, 'volume_id');
    this.volumes.store.requireReadable();
    if (this.opts.deviceFailure?.() !== undefined) {
      // Do not read the memory again: answer from the last view, the condition says why.
      const cached = this.volumes.describeCached(req.volume_id);
      if (cached === undefined) throw notFound(`volume ${req.volume_id} does not exist (as last seen before the device failed)`);
      return { volume: this.volumeOut(cached), status: this.statusOf(cached) };
    }
    const info = await this.volumes.require(req.volume_id);
    return { volume: this.volumeOut(info), status: this.statusOf(info) };
  }

  async CreateSnapshot(req: CreateSnapshotRequest): Promise<CreateSnapshotResponse> {
    this.checkArguments('CreateSnapshot', req);
    if (!isVolumeId(req.source_volume_id)) throw notFound(`source volume ${JSON.stringify(req.source_volume_id)} does not exist`);
    return { snapshot: snapshotOut(await this.volumes.createSnapshot(req.name, req.source_volume_id)) };
  }

  async DeleteSnapshot(req: DeleteSnapshotRequest): Promise<DeleteSnapshotResponse> {
    this.checkArguments('DeleteSnapshot', req);
    await this.volumes.deleteSnapshot(req.snapshot_id);
    return {};
  }

  ListSnapshots(req: ListSnapshotsRequest): ListSnapshotsResponse {
    let ids: string[];
    if (req.snapshot_id !== '') ids = isSnapshotId(req.snapshot_id) && this.volumes.describeSnapshot(req.snapshot_id) ? [req.snapshot_id] : [];
    else ids = this.volumes.snapshotIds();
    const infos = ids.map((id) => this.volumes.describeSnapshot(id)).filter((s): s is SnapshotInfo => s !== undefined);
    const wanted = req.source_volume_id === '' ? infos : infos.filter((s) => s.sourceVolumeId === req.source_volume_id);
    const byId = new Map(wanted.map((s) => [s.snapshotId, s]));
    const { page, nextToken } = paginate([...byId.keys()], req.starting_token, req.max_entries, isSnapshotId);
    this.volumes.store.requireReadable();
    return { entries: page.map((id) => ({ snapshot: snapshotOut(byId.get(id) as SnapshotInfo) })), next_token: nextToken };
  }

  GetSnapshot(req: GetSnapshotRequest): GetSnapshotResponse {
    requireFields(req, 'snapshot_id');
    this.volumes.store.requireReadable();
    const s = this.volumes.describeSnapshot(req.snapshot_id);
    if (s === undefined) throw notFound(`snapshot ${req.snapshot_id} does not exist`);
    return { snapshot: snapshotOut(s) };
  }
}
