// TypeScript shapes of the csi.v1 messages as @grpc/proto-loader hands them to us with
// CSI_LOADER_OPTIONS (keepCase, longs: String, enums: String, defaults, oneofs). Incoming requests
// have every scalar filled with its default, unset sub-messages as null, int64 as decimal strings,
// enums as names, and each oneof's chosen member name in an extra field (e.g. access_type).
// Outgoing responses may leave fields out; the encoder applies defaults.

export type StringMap = Record<string, string>;
/** int64 on the wire: proto-loader decodes to a decimal string; we may send a number or a string. */
export type Int64In = string;
export type Int64Out = string | number;

// ---- common ----
export type AccessModeName =
  | 'UNKNOWN'
  | 'SINGLE_NODE_WRITER'
  | 'SINGLE_NODE_READER_ONLY'
  | 'MULTI_NODE_READER_ONLY'
  | 'MULTI_NODE_SINGLE_WRITER'
  | 'MULTI_NODE_MULTI_WRITER'
  | 'SINGLE_NODE_SINGLE_WRITER'
  | 'SINGLE_NODE_MULTI_WRITER';

export interface MountVolume {
  fs_type: string;
  mount_flags: string[];
  volume_mount_group: string;
}
export interface VolumeCapability {
  block?: Record<string, never> | null;
  mount?: MountVolume | null;
  access_type?: 'block' | 'mount';
  access_mode?: { mode: AccessModeName } | null;
}
export interface CapacityRange {
  required_bytes: Int64In;
  limit_bytes: Int64In;
}
export interface Topology {
  segments: StringMap;
}
export interface TopologyRequirement {
  requisite: Topology[];
  preferred: Topology[];
}
export interface VolumeContentSource {
  snapshot?: { snapshot_id: string } | null;
  volume?: { volume_id: string } | null;
  type?: 'snapshot' | 'volume';
}
export interface VolumeOut {
  capacity_bytes: Int64Out;
  volume_id: string;
  volume_context?: StringMap;
  content_source?: VolumeContentSourceOut | null;
  accessible_topology?: Topology[];
}
export type VolumeContentSourceOut = { snapshot: { snapshot_id: string } } | { volume: { volume_id: string } };
export interface VolumeCondition {
  abnormal: boolean;
  message: string;
}
export interface Timestamp {
  seconds: Int64Out;
  nanos: number;
}

// ---- Identity ----
export type GetPluginInfoRequest = Record<string, never>;
export interface GetPluginInfoResponse {
  name: string;
  vendor_version: string;
  manifest?: StringMap;
}
export type GetPluginCapabilitiesRequest = Record<string, never>;
export type PluginServiceType = 'CONTROLLER_SERVICE' | 'VOLUME_ACCESSIBILITY_CONSTRAINTS' | 'GROUP_CONTROLLER_SERVICE' | 'SNAPSHOT_METADATA_SERVICE';
export interface PluginCapability {
  service?: { type: PluginServiceType };
  volume_expansion?: { type: 'ONLINE' | 'OFFLINE' };
}
export interface GetPluginCapabilitiesResponse {
  capabilities: PluginCapability[];
}
export type ProbeRequest = Record<string, never>;
export interface ProbeResponse {
  ready?: { value: boolean } | null;
}

// ---- Controller ----
export interface CreateVolumeRequest {
  name: string;
  capacity_range: CapacityRange | null;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  secrets: StringMap;
  volume_content_source: VolumeContentSource | null;
  accessibility_requirements: TopologyRequirement | null;
  mutable_parameters: StringMap;
}
export interface CreateVolumeResponse {
  volume: VolumeOut;
}
export interface DeleteVolumeRequest {
  volume_id: string;
  secrets: StringMap;
}
export type DeleteVolumeResponse = Record<string, never>;
export interface ControllerPublishVolumeRequest {
  volume_id: string;
  node_id: string;
  volume_capability: VolumeCapability | null;
  readonly: boolean;
  secrets: StringMap;
  volume_context: StringMap;
}
export interface ControllerPublishVolumeResponse {
  publish_context: StringMap;
}
export interface ControllerUnpublishVolumeRequest {
  volume_id: string;
  node_id: string;
  secrets: StringMap;
}
export type ControllerUnpublishVolumeResponse = Record<string, never>;
export interface ValidateVolumeCapabilitiesRequest {
  volume_id: string;
  volume_context: StringMap;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  secrets: StringMap;
  mutable_parameters: StringMap;
}
export interface ValidateVolumeCapabilitiesResponse {
  confirmed?: {
    volume_context: StringMap;
    volume_capabilities: VolumeCapability[];
    parameters: StringMap;
    mutable_parameters: StringMap;
  } | null;
  message: string;
}
export interface ListVolumesRequest {
  max_entries: number;
  starting_token: string;
}
export interface ListVolumesResponse {
  entries: Array<{
    volume: VolumeOut;
    status?: { published_node_ids: string[]; volume_condition?: VolumeCondition | null };
  }>;
  next_token: string;
}
export interface ControllerGetVolumeRequest {
  volume_id: string;
}
export interface ControllerGetVolumeResponse {
  volume: VolumeOut;
  status: { published_node_ids: string[]; volume_condition: VolumeCondition };
}
export interface GetCapacityRequest {
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  accessible_topology: Topology | null;
}
export interface GetCapacityResponse {
  available_capacity: Int64Out;
  maximum_volume_size?: { value: Int64Out } | null;
  minimum_volume_size?: { value: Int64Out } | null;
}
export type ControllerRpcType =
  | 'CREATE_DELETE_VOLUME'
  | 'PUBLISH_UNPUBLISH_VOLUME'
  | 'LIST_VOLUMES'
  | 'GET_CAPACITY'
  | 'CREATE_DELETE_SNAPSHOT'
  | 'LIST_SNAPSHOTS'
  | 'CLONE_VOLUME'
  | 'PUBLISH_READONLY'
  | 'EXPAND_VOLUME'
  | 'LIST_VOLUMES_PUBLISHED_NODES'
  | 'VOLUME_CONDITION'
  | 'GET_VOLUME'
  | 'SINGLE_NODE_MULTI_WRITER'
  | 'MODIFY_VOLUME'
  | 'GET_SNAPSHOT';
export type ControllerGetCapabilitiesRequest = Record<string, never>;
export interface ControllerGetCapabilitiesResponse {
  capabilities: Array<{ rpc: { type: ControllerRpcType } }>;
}
export interface SnapshotOut {
  size_bytes: Int64Out;
  snapshot_id: string;
  source_volume_id: string;
  creation_time: Timestamp;
  ready_to_use: boolean;
  group_snapshot_id?: string;
}
export interface CreateSnapshotRequest {
  source_volume_id: string;
  name: string;
  secrets: StringMap;
  parameters: StringMap;
}
export interface CreateSnapshotResponse {
  snapshot: SnapshotOut;
}
export interface DeleteSnapshotRequest {
  snapshot_id: string;
  secrets: StringMap;
}
export type DeleteSnapshotResponse = Record<string, never>;
export interface ListSnapshotsRequest {
  max_entries: number;
  starting_token: string;
  source_volume_id: string;
  snapshot_id: string;
  secrets: StringMap;
}
export interface ListSnapshotsResponse {
  entries: Array<{ snapshot: SnapshotOut }>;
  next_token: string;
}
export interface GetSnapshotRequest {
  snapshot_id: string;
  secrets: StringMap;
}
export interface GetSnapshotResponse {
  snapshot: SnapshotOut;
}

// ---- Node ----
export interface NodeStageVolumeRequest {
  volume_id: string;
  publish_context: StringMap;
  staging_target_path: string;
  volume_capability: VolumeCapability | null;
  secrets: StringMap;
  volume_context: StringMap;
}
export type NodeStageVolumeResponse = Record<string, never>;
export interface NodeUnstageVolumeRequest {
  volume_id: string;
  staging_target_path: string;
}
export type NodeUnstageVolumeResponse = Record<string, never>;
export interface NodePublishVolumeRequest {
  volume_id: string;
  publish_context: StringMap;
  staging_target_path: string;
  target_path: string;
  volume_capability: VolumeCapability | null;
  readonly: boolean;
  secrets: StringMap;
  volume_context: StringMap;
}
export type NodePublishVolumeResponse = Record<string, never>;
export interface NodeUnpublishVolumeRequest {
  volume_id: string;
  target_path: string;
}
export type NodeUnpublishVolumeResponse = Record<string, never>;
export interface NodeGetVolumeStatsRequest {
  volume_id: string;
  volume_path: string;
  staging_target_path: string;
}
export interface VolumeUsage {
  available: Int64Out;
  total: Int64Out;
  used: Int64Out;
  unit: 'BYTES' | 'INODES';
}
export interface NodeGetVolumeStatsResponse {
  usage: VolumeUsage[];
  volume_condition?: VolumeCondition | null;
}
export type NodeRpcType =
  'STAGE_UNSTAGE_VOLUME' | 'GET_VOLUME_STATS' | 'EXPAND_VOLUME' | 'VOLUME_CONDITION' | 'SINGLE_NODE_MULTI_WRITER' | 'VOLUME_MOUNT_GROUP';
export type NodeGetCapabilitiesRequest = Record<string, never>;
export interface NodeGetCapabilitiesResponse {
  capabilities: Array<{ rpc: { type: NodeRpcType } }>;
}
export type NodeGetInfoRequest = Record<string, never>;
export interface NodeGetInfoResponse {
  node_id: string;
  max_volumes_per_node?: Int64Out;
  accessible_topology?: Topology | null;
}
