// Controller service: volumes as famfs files, published to nodes under the sharing rules of
// capabilities.ts. Snapshots and cloning are not offered yet (not advertised).
import { checkCapability, requireCapabilities, type AccessProfile, type CapabilityPolicy } from './capabilities';
import { aborted, alreadyExists, failedPrecondition, invalidArgument, notFound, resourceExhausted } from './errors';
import { isVolumeId, objectFileRelpath } from './names';
import { parseVolumeParams } from './params';
import type { RpcHandler } from './server';
import type { VolumeInfo, VolumeState } from './state';
import type {
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
];

export function controllerService(opts: ControllerOptions): ControllerHandlers {
  const { state } = opts;
  const ourTopology: Topology = { segments: { [opts.topologyKey]: opts.pool } };
  const policyFor = (sharing: 'serial' | 'multi-writer'): CapabilityPolicy => ({
    multiWriterAllowed: sharing === 'multi-writer',
    blockAllowed: opts.blockAllowed ?? true,
  });
  const isOurs = (t: Topology | null | undefined): boolean => t?.segments?.[opts.topologyKey] === opts.pool;

  const volumeOut = (v: VolumeInfo): VolumeOut => ({
    capacity_bytes: String(v.capacityBytes),
    volume_id: v.volumeId,
    volume_context: { [CTX_POOL]: opts.pool, [CTX_SHARING]: v.sharing, [CTX_FILE]: objectFileRelpath(v.volumeId) },
    accessible_topology: [ourTopology],
  });

  return {
    CreateVolume: async (req) => {
      if (req.name === '') throw invalidArgument('name is required');
      const params = parseVolumeParams(req.parameters);
      requireCapabilities(req.volume_capabilities, policyFor(params.sharing));
      if (req.volume_content_source !== null && req.volume_content_source !== undefined && req.volume_content_source.type !== undefined) {
        throw invalidArgument('volume_content_source: cloning and restoring from snapshots are not supported by this driver');
      }
      const reqs = req.accessibility_requirements;
      if (reqs !== null && reqs !== undefined && reqs.requisite.length > 0 && !reqs.requisite.some(isOurs)) {
        throw resourceExhausted(`none of the requisite topologies is pool ${opts.topologyKey}=${opts.pool}`);
      }
      const info = await state.create({ name: req.name, range: req.capacity_range, params });
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
      if (req.max_entries < 0) throw invalidArgument(`max_entries must not be negative (got ${req.max_entries})`);
      const ids = state.volumeIds();
      let start = 0;
      if (req.starting_token !== '') {
        // The token is the last id of the previous page: stable when volumes come and go in between.
        if (!isVolumeId(req.starting_token)) throw aborted(`starting_token ${JSON.stringify(req.starting_token)} was not issued by this driver`);
        start = ids.findIndex((id) => id > req.starting_token);
        if (start < 0) start = ids.length;
      }
      const end = req.max_entries > 0 ? Math.min(ids.length, start + req.max_entries) : ids.length;
      const entries: ListVolumesResponse['entries'] = [];
      const condition = opts.condition();
      for (const id of ids.slice(start, end)) {
        const info = await state.describe(id);
        if (info === undefined) continue;
        entries.push({ volume: volumeOut(info), status: { published_node_ids: Object.keys(info.record?.published ?? {}), volume_condition: condition } });
      }
      return { entries, next_token: end < ids.length ? (ids[end - 1] ?? '') : '' };
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
      const info = await state.require(req.volume_id);
      return {
        volume: volumeOut(info),
        status: { published_node_ids: Object.keys(info.record?.published ?? {}), volume_condition: opts.condition() },
      };
    },
  };
}
