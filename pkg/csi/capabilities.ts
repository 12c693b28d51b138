// Which VolumeCapabilities famfs-csi serves, and what each access mode means for sharing.
//
// A famfs volume is one pre-allocated file in shared memory. Sharing it is about who may map it:
//   SINGLE_NODE_WRITER         one node at a time, any number of pods on it (Kubernetes RWO)
//   SINGLE_NODE_SINGLE_WRITER  one node, one pod (RWOP): a second target on the node is refused
//   SINGLE_NODE_MULTI_WRITER   one node at a time, many pods; the volume may move between nodes
//                              (serial sharing: the controller enforces one writer node, the node
//                              plugin flushes on unstage and invalidates on stage)
//   SINGLE_NODE_READER_ONLY    one node, read-only
//   MULTI_NODE_READER_ONLY     any number of nodes, read-only (nothing to keep coherent)
//   MULTI_NODE_MULTI_WRITER    any number of nodes writing at once: only when the StorageClass opts
//                              in (sharing: multi-writer), because the application owns coherency
//   MULTI_NODE_SINGLE_WRITER   not offered: one writer plus remote readers would need the driver to
//                              keep readers coherent, which famfs cannot do
import { invalidArgument } from './errors';
import type { AccessModeName, VolumeCapability } from './types';

export interface AccessModeRule {
  /** Several nodes may have the volume published at the same time. */
  multiNode: boolean;
  /** The mode itself forbids writes (publishes are read-only whatever the readonly flag says). */
  readOnly: boolean;
  /** A second NodePublishVolume at a different target on the same node is allowed (spec tables). */
  multiTargetOnNode: boolean;
  /** Allowed only for volumes whose StorageClass opted into concurrent multi-node writers. */
  needsMultiWriterOptIn: boolean;
}

/** The access-mode table. Modes absent here (UNKNOWN, MULTI_NODE_SINGLE_WRITER) are not served. */
export const ACCESS_MODE_RULES: Readonly<Partial<Record<AccessModeName, AccessModeRule>>> = {
  SINGLE_NODE_WRITER: { multiNode: false, readOnly: false, multiTargetOnNode: true, needsMultiWriterOptIn: false },
  SINGLE_NODE_SINGLE_WRITER: { multiNode: false, readOnly: false, multiTargetOnNode: false, needsMultiWriterOptIn: false },
  SINGLE_NODE_MULTI_WRITER: { multiNode: false, readOnly: false, multiTargetOnNode: true, needsMultiWriterOptIn: false },
  SINGLE_NODE_READER_ONLY: { multiNode: false, readOnly: true, multiTargetOnNode: true, needsMultiWriterOptIn: false },
  MULTI_NODE_READER_ONLY: { multiNode: true, readOnly: true, multiTargetOnNode: true, needsMultiWriterOptIn: false },
  MULTI_NODE_MULTI_WRITER: { multiNode: true, readOnly: false, multiTargetOnNode: true, needsMultiWriterOptIn: true },
};

/** fs_type values accepted for mount access: the volume is a famfs file, there is no other filesystem to make. */
export const ACCEPTED_FS_TYPES: ReadonlySet<string> = new Set(['', 'famfs']);

/** Mount flags that make sense on a bind mount of a famfs directory. */
export const ACCEPTED_MOUNT_FLAGS: ReadonlySet<string> = new Set(['ro', 'rw', 'nosuid', 'nodev', 'noexec', 'noatime', 'relatime', 'nodiratime', 'strictatime']);

export const ALL_ACCESS_MODES: readonly AccessModeName[] = [
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_SINGLE_WRITER',
  'MULTI_NODE_MULTI_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
];

export interface CapabilityPolicy {
  /** The volume's StorageClass allows MULTI_NODE_MULTI_WRITER. */
  multiWriterAllowed: boolean;
  /** Raw block access is offered (the pod gets the file itself at target_path). */
  blockAllowed: boolean;
}

export interface AccessProfile extends AccessModeRule {
  mode: AccessModeName;
  kind: 'mount' | 'block';
  fsType: string;
  mountFlags: string[];
  /** Numeric gid from volume_mount_group (pod fsGroup), if any. */
  mountGroup?: number;
}

export type CapabilityCheck = { ok: true; profile: AccessProfile } | { ok: false; reason: string };

/**
 * The profile of a served capability. Built field by field: V8 (Node 20) takes a slow path for a
 * spread followed by new properties ({ ...rule, mode }), ~3 µs, and every CreateVolume makes one.
 */
function profileOf(rule: AccessModeRule, mode: AccessModeName, kind: 'mount' | 'block', fsType: string, mountFlags: string[]): AccessProfile {
  return {
    multiNode: rule.multiNode,
    readOnly: rule.readOnly,
    multiTargetOnNode: rule.multiTargetOnNode,
    needsMultiWriterOptIn: rule.needsMultiWriterOptIn,
    mode,
    kind,
    fsType,
    mountFlags,
  };
}

/**
 * Checks one capability. A malformed capability (no access type, no or UNKNOWN access mode) throws
 * INVALID_ARGUMENT; a well-formed one we do not serve returns {ok: false, reason}, so that
 * ValidateVolumeCapabilities can answer without confirmation and the other RPCs pick their own code.
 */
export function checkCapability(cap: VolumeCapability | null | undefined, policy: CapabilityPolicy, field = 'volume_capability'): CapabilityCheck {
  if (cap === null || cap === undefined) throw invalidArgument(`${field} is required`);
  const kind = cap.access_type ?? (cap.mount ? 'mount' : cap.block ? 'block' : undefined);
  if (kind === undefined) throw invalidArgument(`${field}: access_type (mount or block) is required`);
  const mode = cap.access_mode?.mode;
  if (mode === undefined || mode === null || mode === 'UNKNOWN') throw invalidArgument(`${field}: access_mode is required`);
  if (!ALL_ACCESS_MODES.includes(mode)) throw invalidArgument(`${field}: unknown access mode ${JSON.stringify(mode)}`);

  const rule = ACCESS_MODE_RULES[mode];
  if (rule === undefined) {
    return { ok: false, reason: `access mode ${mode} is not supported by famfs (use SINGLE_NODE_MULTI_WRITER for serial sharing or MULTI_NODE_READER_ONLY)` };
  }
  if (rule.needsMultiWriterOptIn && !policy.multiWriterAllowed) {
    return { ok: false, reason: `access mode ${mode} needs a StorageClass with sharing: multi-writer (the application must keep concurrent writers coherent)` };
  }
  if (kind === 'block') {
    if (!policy.blockAllowed) return { ok: false, reason: 'block access is not offered by this driver configuration' };
    return { ok: true, profile: profileOf(rule, mode, kind, '', []) };
  }
  const mount = cap.mount ?? { fs_type: '', mount_flags: [], volume_mount_group: '' };
  const fsType = mount.fs_type ?? '';
  if (!ACCEPTED_FS_TYPES.has(fsType)) {
    return { ok: false, reason: `fs_type ${JSON.stringify(fsType)} is not supported: a famfs volume is a file in famfs; leave fs_type empty or set "famfs"` };
  }
  const flags = mount.mount_flags ?? [];
  const badFlags = flags.filter((f) => !ACCEPTED_MOUNT_FLAGS.has(f));
  if (badFlags.length > 0) {
    return {
      ok: false,
      reason: `mount flags ${badFlags.map((f) => JSON.stringify(f)).join(', ')} are not supported on a famfs bind mount (allowed: ${[...ACCEPTED_MOUNT_FLAGS].join(', ')})`,
    };
  }
  if (flags.includes('ro') && flags.includes('rw')) return { ok: false, reason: 'mount flags "ro" and "rw" contradict each other' };
  const profile = profileOf(rule, mode, kind, fsType, [...flags]);
  const group = mount.volume_mount_group ?? '';
  if (group !== '') {
    if (!/^\d{1,10}$/.test(group) || Number(group) > 0xfffffffe) {
      return { ok: false, reason: `volume_mount_group ${JSON.stringify(group)} must be a numeric group id` };
    }
    profile.mountGroup = Number(group);
  }
  return { ok: true, profile };
}

/**
 * Checks a list of capabilities (CreateVolume): the list must be non-empty and every entry served;
 * an unserved one is INVALID_ARGUMENT with the reason.
 */
export function requireCapabilities(caps: VolumeCapability[] | null | undefined, policy: CapabilityPolicy, field = 'volume_capabilities'): AccessProfile[] {
  if (caps === null || caps === undefined || caps.length === 0) throw invalidArgument(`${field} is required`);
  return caps.map((cap, i) => {
    const r = checkCapability(cap, policy, `${field}[${i}]`);
    if (!r.ok) throw invalidArgument(`${field}[${i}]: ${r.reason}`);
    return r.profile;
  });
}

/** Whether a publish with `readonly` and this profile must be read-only (kernel-enforced). */
export function publishIsReadOnly(profile: AccessProfile, readonlyFlag: boolean): boolean {
  return readonlyFlag || profile.readOnly || profile.mountFlags.includes('ro');
}
