// Controller service: volumes as famfs files, published to nodes under the sharing rules of
// capabilities.ts; snapshots and clones as memory-to-memory copies into new famfs files.
// famfs files cannot grow, so expansion is not advertised (ControllerExpandVolume: UNIMPLEMENTED).
import { checkCapability, requireCapabilities, type AccessProfile, type CapabilityPolicy } from './capabilities';
import { status } from '@grpc/grpc-js';
import { alreadyExists, failedPrecondition, invalidArgument, isCsiError, notFound, resourceExhausted, unavailable } from './errors';
import { isSnapshotId, isVolumeId, objectFileRelpath } from './names';
import { checkSnapshotParams, parseVolumeParams } from './params';
import type { RpcHandler } from './server';
import { paginate, type ContentSource, type SnapshotInfo, type VolumeInfo, type VolumeState } from './state';
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
  VolumeContentSource,
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

/** volume_context keys the controller hands to the node plugin. */
export const CTX_POOL = 'famfs.csi.cxl.io/pool';
export const CTX_SHARING = 'famfs.csi.cxl.io/sharing';
export const CTX_FILE = 'famfs.csi.cxl.io/file';

export interface ControllerOptions {
  state: VolumeState;
  pool: string;
  topologyKey: string;
  /** Whether a node id names a node of this pool (ControllerPublish answers NOT_FOUND otherwise). */
  nodeExists: (nodeId: string) => boolean | Promise<boolean>;
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

/** The request's content source, checked; undefined when none. */
function parseContentSource(src: VolumeContentSource | null | undefined): ContentSource | undefined {
  if (src === null || src === undefined || src.type === undefined) return undefined;
  if (src.type === 'snapshot') {
    const id = src.snapshot?.snapshot_id ?? '';
    if (id === '') throw invalidArgument('volume_content_source.snapshot.snapshot_id is required');
    if (!isSnapshotId(id)) throw notFound(`source snapshot ${JSON.stringify(id)} does not exist`);
    return { kind: 'snapshot', id };
  }
  const id = src.volume?.volume_id ?? '';
  if (id === '') throw invalidArgument('volume_content_source.volume.volume_id is required');
  if (!isVolumeId(id)) throw notFound(`source volume ${JSON.stringify(id)} does not exist`);
  return { kind: 'volume', id };
}

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
  'CreateVolume', 'DeleteVolume', 'ControllerPublishVolume', 'ControllerUnpublishVolume', 'CreateSnapshot', 'DeleteSnapshot',
]);

/**
 * On a failed device (memory error) no RPC may touch the memory again: writes are UNAVAILABLE with
 * the reason (the CO retries; the device must be replaced or the role moved to a healthy host), and
 * a read that ran into the failure is UNAVAILABLE too instead of INTERNAL. ControllerGetVolume and
 * ListVolumes answer from what the controller last saw, with an abnormal VolumeCondition.
 */
function guardDevice(opts: ControllerOptions, h: ControllerHandlers): ControllerHandlers {
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
      if (before !== undefined && WRITING_METHODS.has(name)) throw refuse(name, before);
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

export function controllerService(opts: ControllerOptions): ControllerHandlers {
  return guardDevice(opts, controllerHandlers(opts));
}

function controllerHandlers(opts: ControllerOptions): ControllerHandlers {
  const { state } = opts;
  const ourTopology: Topology = { segments: { [opts.topologyKey]: opts.pool } };
  const policyFor = (sharing: 'serial' | 'multi-writer'): CapabilityPolicy => ({
    multiWriterAllowed: sharing === 'multi-writer',
    blockAllowed: opts.blockAllowed ?? true,
  });
  const isOurs = (t: Topology | null | undefined): boolean => t?.segments?.[opts.topologyKey] === opts.pool;

  const volumeOut = (v: VolumeInfo): VolumeOut => {
    const src = v.record?.contentSource;
    return {
      capacity_bytes: String(v.capacityBytes),
      volume_id: v.volumeId,
      volume_context: { [CTX_POOL]: opts.pool, [CTX_SHARING]: v.sharing, [CTX_FILE]: objectFileRelpath(v.volumeId) },
      accessible_topology: [ourTopology],
      ...(src === undefined ? {} : { content_source: src.kind === 'snapshot' ? { snapshot: { snapshot_id: src.id } } : { volume: { volume_id: src.id } } }),
    };
  };
  // The device's health first (it fails every volume), then the volume's own.
  const conditionOf = (v: VolumeInfo): VolumeCondition => {
    const device = opts.condition();
    return device.abnormal ? device : state.condition(v);
  };
  const statusOf = (v: VolumeInfo) => ({ published_node_ids: Object.keys(v.record?.published ?? {}), volume_condition: conditionOf(v) });

  return {
    CreateVolume: async (req) => {
      if (req.name === '') throw invalidArgument('name is required');
      const params = parseVolumeParams(req.parameters);
      requireCapabilities(req.volume_capabilities, policyFor(params.sharing));
      const source = parseContentSource(req.volume_content_source);
      const reqs = req.accessibility_requirements;
      if (reqs !== null && reqs !== undefined && reqs.requisite.length > 0 && !reqs.requisite.some(isOurs)) {
        throw resourceExhausted(`none of the requisite topologies is pool ${opts.topologyKey}=${opts.pool}`);
      }
      const info = await state.create({ name: req.name, range: req.capacity_range, params, ...(source ? { source } : {}) });
      opts.onVolumeCreated?.({ volumeId: info.volumeId, name: req.name, parameters: req.parameters, sizeBytes: info.capacityBytes, placement: describePlacement(info) });
      return { volume: volumeOut(info) };
    },

    DeleteVolume: async (req) => {
      await state.delete(req.volume_id);
      return {};
    },

    ControllerPublishVolume: async (req) => {
      if (req.volume_id === '') throw invalidArgument('volume_id is required');
      if (req.node_id === '') throw invalidArgument('node_id is required');
      if (req.volume_capability === null) throw invalidArgument('volume_capability is required');
      const info = await state.require(req.volume_id);
      if (!(await opts.nodeExists(req.node_id))) throw notFound(`node ${req.node_id} is not a node of pool ${opts.pool}`);
      const check = checkCapability(req.volume_capability, policyFor(info.sharing));
      if (!check.ok) throw invalidArgument(`volume_capability: ${check.reason}`);
      const profile: AccessProfile = check.profile;
      const readonly = req.readonly || profile.readOnly;
      return state.exclusive(req.volume_id, async () => {
        const current = (await state.describe(req.volume_id))?.record?.published ?? {};
        const mine = current[req.node_id];
        if (mine !== undefined) {
          if (mine.readonly === readonly && mine.accessMode === profile.mode) return { publish_context: { readonly: String(readonly) } };
          throw alreadyExists(
            `volume ${req.volume_id} is already published to node ${req.node_id} as ${mine.accessMode}${mine.readonly ? ' read-only' : ''}; unpublish it first`,
          );
        }
        for (const [node, other] of Object.entries(current)) {
          // Many readers, or many writers that opted in: fine. Anything else is serial sharing:
          // the volume moves to the next node only after the previous one let go.
          const bothReaders = readonly && other.readonly && profile.multiNode && other.multiNode;
          const bothMultiWriters = profile.mode === 'MULTI_NODE_MULTI_WRITER' && other.accessMode === 'MULTI_NODE_MULTI_WRITER';
          if (!bothReaders && !bothMultiWriters) {
            throw failedPrecondition(
              `volume ${req.volume_id} is published to node ${node} (${other.accessMode}${other.readonly ? ', read-only' : ''}); ` +
                `${profile.mode}${readonly ? ' read-only' : ''} on ${req.node_id} must wait until it is unpublished there`,
            );
          }
        }
        await state.setPublished(req.volume_id, req.node_id, { readonly, accessMode: profile.mode, multiNode: profile.multiNode });
        return { publish_context: { readonly: String(readonly) } };
      });
    },

    ControllerUnpublishVolume: async (req) => {
      if (req.volume_id === '') throw invalidArgument('volume_id is required');
      // A volume or node that is gone is already unpublished: OK.
      if (!isVolumeId(req.volume_id)) return {};
      await state.exclusive(req.volume_id, async () => {
        if (req.node_id === '') await state.clearPublished(req.volume_id);
        else await state.setPublished(req.volume_id, req.node_id, undefined);
      });
      return {};
    },

    ValidateVolumeCapabilities: async (req) => {
      if (req.volume_id === '') throw invalidArgument('volume_id is required');
      if (req.volume_capabilities.length === 0) throw invalidArgument('volume_capabilities is required');
      const info = await state.require(req.volume_id);
      const policy = policyFor(info.sharing);
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
    },

    ListVolumes: async (req) => {
      const { page, nextToken } = paginate(state.volumeIds(), req.starting_token, req.max_entries, isVolumeId);
      const entries: ListVolumesResponse['entries'] = [];
      const failed = opts.deviceFailure?.() !== undefined;
      for (const id of page) {
        const info = failed ? state.describeCached(id) : await state.describe(id);
        if (info !== undefined) entries.push({ volume: volumeOut(info), status: statusOf(info) });
      }
      return { entries, next_token: nextToken };
    },

    GetCapacity: (req) => {
      if (req.accessible_topology !== null && req.accessible_topology !== undefined && !isOurs(req.accessible_topology)) {
        return { available_capacity: '0', maximum_volume_size: { value: '0' }, minimum_volume_size: { value: '0' } };
      }
      if (Object.keys(req.parameters).length > 0) parseVolumeParams(req.parameters);
      const c = state.capacity();
      return {
        available_capacity: String(c.available),
        maximum_volume_size: { value: String(c.maximumVolume) },
        minimum_volume_size: { value: String(2 * 1024 * 1024) },
      };
    },

    ControllerGetCapabilities: () => ({ capabilities: CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })) }),

    ControllerGetVolume: async (req) => {
      if (opts.deviceFailure?.() !== undefined) {
        // Do not read the memory again: answer from the last view, the condition says why.
        if (req.volume_id === '') throw invalidArgument('volume_id is required');
        const cached = state.describeCached(req.volume_id);
        if (cached === undefined) throw notFound(`volume ${req.volume_id} does not exist (as last seen before the device failed)`);
        return { volume: volumeOut(cached), status: statusOf(cached) };
      }
      const info = await state.require(req.volume_id);
      return { volume: volumeOut(info), status: statusOf(info) };
    },

    CreateSnapshot: async (req) => {
      if (req.name === '') throw invalidArgument('name is required');
      if (req.source_volume_id === '') throw invalidArgument('source_volume_id is required');
      checkSnapshotParams(req.parameters);
      if (!isVolumeId(req.source_volume_id)) throw notFound(`source volume ${JSON.stringify(req.source_volume_id)} does not exist`);
      return { snapshot: snapshotOut(await state.createSnapshot(req.name, req.source_volume_id)) };
    },

    DeleteSnapshot: async (req) => {
      await state.deleteSnapshot(req.snapshot_id);
      return {};
    },

    ListSnapshots: (req) => {
      let ids: string[];
      if (req.snapshot_id !== '') ids = isSnapshotId(req.snapshot_id) && state.describeSnapshot(req.snapshot_id) ? [req.snapshot_id] : [];
      else ids = state.snapshotIds();
      const infos = ids.map((id) => state.describeSnapshot(id)).filter((s): s is SnapshotInfo => s !== undefined);
      const wanted = req.source_volume_id === '' ? infos : infos.filter((s) => s.sourceVolumeId === req.source_volume_id);
      const byId = new Map(wanted.map((s) => [s.snapshotId, s]));
      const { page, nextToken } = paginate([...byId.keys()], req.starting_token, req.max_entries, isSnapshotId);
      return { entries: page.map((id) => ({ snapshot: snapshotOut(byId.get(id) as SnapshotInfo) })), next_token: nextToken };
    },

    GetSnapshot: (req) => {
      if (req.snapshot_id === '') throw invalidArgument('snapshot_id is required');
      const s = state.describeSnapshot(req.snapshot_id);
      if (s === undefined) throw notFound(`snapshot ${req.snapshot_id} does not exist`);
      return { snapshot: snapshotOut(s) };
    },
  };
}
