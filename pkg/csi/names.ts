// CSI names and ids ↔ famfs paths.
//
// famfs paths hold at most 79 bytes, while CSI names may be much longer (the spec asks plugins to
// accept at least 128 bytes; csi-sanity sends exactly that). The mapping below is deterministic and
// needs no side state, so a CreateVolume replayed after a restart lands on the same famfs path:
//   name ──sha256──► volume id "vol-<40 hex>" ──► famfs dir "csi/vol-<40 hex>", file ".../data"
// 160 bits of hash make an accidental collision impossible in practice, and hex ids can never
// contain '/', '..' or NUL.
import { hash } from 'crypto';
import * as path from 'path';
import { invalidArgument } from './errors';

/** famfs directory that holds every CSI-managed volume and snapshot (one subdirectory each). */
export const CSI_ROOT_DIR = 'csi';
/** Name of the pre-allocated file inside a volume's directory; what a pod opens and mmaps. */
export const VOLUME_FILE_NAME = 'data';
/** famfs' relpath limit (bytes). */
export const FAMFS_MAX_RELPATH = 79;
/** We hash names, so any length works; the cap only stops absurd requests. */
export const MAX_NAME_BYTES = 4096;
/** Host paths (target_path, staging_target_path): Linux PATH_MAX. */
export const MAX_HOST_PATH_BYTES = 4096;

const HASH_HEX_CHARS = 40;
const VOLUME_ID_PREFIX = 'vol-';
const SNAPSHOT_ID_PREFIX = 'snap-';
const VOLUME_ID_RE = new RegExp(`^${VOLUME_ID_PREFIX}[0-9a-f]{${HASH_HEX_CHARS}}$`);
const SNAPSHOT_ID_RE = new RegExp(`^${SNAPSHOT_ID_PREFIX}[0-9a-f]{${HASH_HEX_CHARS}}$`);

function hashName(kind: 'volume' | 'snapshot', name: string): string {
  // The kind is part of the hashed input, so a volume and a snapshot with the same name differ.
  // One-shot (no Hash object): the same bytes as update(prefix).update(name) (the prefix is ASCII
  // and ends in NUL, so the UTF-8 of the concatenation is the concatenation of the UTF-8s).
  return hash('sha256', `famfs-csi/${kind}\0${name}`, 'hex').slice(0, HASH_HEX_CHARS);
}

/** Checks a CO-chosen name (CreateVolume / CreateSnapshot); `field` names it in the message. */
export function validateName(name: string, field: string): void {
  if (name.length === 0) throw invalidArgument(`${field} is required`);
  if (name.includes('\0')) throw invalidArgument(`${field} contains a NUL character`);
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_NAME_BYTES) throw invalidArgument(`${field} is ${bytes} bytes; at most ${MAX_NAME_BYTES} are accepted`);
}

export function volumeIdForName(name: string): string {
  validateName(name, 'name');
  return VOLUME_ID_PREFIX + hashName('volume', name);
}

export function snapshotIdForName(name: string): string {
  validateName(name, 'name');
  return SNAPSHOT_ID_PREFIX + hashName('snapshot', name);
}

/** True for ids this driver could have issued. Anything else names no volume of ours (NOT_FOUND). */
export function isVolumeId(id: string): boolean {
  return VOLUME_ID_RE.test(id);
}

export function isSnapshotId(id: string): boolean {
  return SNAPSHOT_ID_RE.test(id);
}

/** famfs directory of a volume or snapshot id (caller checked the id's shape). */
export function objectDirRelpath(id: string): string {
  if (!isVolumeId(id) && !isSnapshotId(id)) throw new Error(`not a famfs-csi id: ${JSON.stringify(id)}`);
  return `${CSI_ROOT_DIR}/${id}`;
}

/** famfs path of the data file of a volume or snapshot. */
export function objectFileRelpath(id: string): string {
  return `${objectDirRelpath(id)}/${VOLUME_FILE_NAME}`;
}

/** Checks an absolute host path from a request (target_path, staging_target_path, volume_path). */
export function validateHostPath(p: string, field: string): string {
  if (p.length === 0) throw invalidArgument(`${field} is required`);
  if (p.includes('\0')) throw invalidArgument(`${field} contains a NUL character`);
  if (!path.isAbsolute(p)) throw invalidArgument(`${field} ${JSON.stringify(p)} must be an absolute path`);
  const bytes = Buffer.byteLength(p, 'utf8');
  if (bytes > MAX_HOST_PATH_BYTES) throw invalidArgument(`${field} is ${bytes} bytes; the limit is ${MAX_HOST_PATH_BYTES}`);
  return path.normalize(p);
}

// The longest relpath we generate must fit famfs; checked once at load so a prefix change cannot slip by.
{
  const longest = `${CSI_ROOT_DIR}/${SNAPSHOT_ID_PREFIX}${'0'.repeat(HASH_HEX_CHARS)}/${VOLUME_FILE_NAME}`;
  if (Buffer.byteLength(longest) > FAMFS_MAX_RELPATH) throw new Error(`generated famfs paths are ${longest.length} bytes > ${FAMFS_MAX_RELPATH}`);
}
