// StorageClass parameters → what CreateVolume asks of famfs.
//
//   nstrips, nbuckets, chunkSize   interleave the file over nbuckets equal device buckets, nstrips of
//                                  them, chunkSize bytes at a time (famfs creat -N/-B/-C). nstrips and
//                                  nbuckets go together; chunkSize defaults to 2Mi. Limits against the
//                                  device (bucket ≥ 1 GiB, ≤ 64 buckets, ≤ 16 strips) are the core's.
//   mode                           octal file mode of the volume's file (default 0666, see DEFAULT_FILE_MODE)
//   uid, gid                       owner of the file (default 0, 0)
//   sharing                        "serial" (default): one writer node at a time, handed over with
//                                  flush/invalidate; "multi-writer": additionally allows
//                                  MULTI_NODE_MULTI_WRITER (the application owns coherency)
//   cloneMode                      "share" (default): a read-only claim whose dataSource is another
//                                  claim shares that claim's memory (no copy; the source is frozen
//                                  while shared); "copy": it gets its own copy, as a writable clone does
//   csi.storage.k8s.io/*           set by Kubernetes (pvc name, namespace, ...): accepted, ignored
// Any other key is INVALID_ARGUMENT: a typo must not silently give a volume other than the one asked for.
import { parseSize as parseSizeIn, SizeError, type SizeOptions } from '../size';
import { invalidArgument } from './errors';
import type { StringMap } from './types';

export const ALLOC_UNIT_BYTES = 2 * 1024 * 1024;
export const DEFAULT_CHUNK_SIZE = ALLOC_UNIT_BYTES;
/**
 * rw for everyone who can open the file: non-root pods (restricted Pod Security, with or without
 * fsGroup) read and write their volume. famfs keeps one owner per file in the shared log and cannot
 * chown per pod, and the provisioner does not say which user will mount the claim. Opening the file
 * needs the volume's mount, so in practice only pods that mount the volume reach it: the node's famfs
 * FUSE mount sits under a root-only directory (<state-dir>/mnt, 0700), and each pod sees the file only
 * through its own bind mount under the kubelet's root-only pod directories. Read-only publishes are
 * ro binds (EROFS whatever the mode). docs/volumes.md, "Who can reach a volume's file".
 */
export const DEFAULT_FILE_MODE = 0o666;
const MAX_ID = 0xfffffffe; // (uid_t)-1 means "unchanged" to chown; never a real owner

export type SharingPolicy = 'serial' | 'multi-writer';

export interface Interleave {
  nstrips: number;
  nbuckets: number;
  chunkSize: number;
}

export interface VolumeParams {
  interleave?: Interleave;
  mode: number;
  uid: number;
  gid: number;
  sharing: SharingPolicy;
  /** "copy": a read-only claim with a volume dataSource gets a copy instead of a zero-copy share. */
  cloneMode?: 'copy';
}

const KNOWN_KEYS = new Set(['nstrips', 'nbuckets', 'chunkSize', 'mode', 'uid', 'gid', 'sharing', 'cloneMode']);
const K8S_PREFIX = 'csi.storage.k8s.io/';

/** A size in the Kubernetes dialect (pkg/size: `2Mi` = 2 MiB, `2M` = 2,000,000 bytes). */
export function parseSize(value: string, key: string, o: SizeOptions = {}): number {
  try {
    return parseSizeIn(value, 'kubernetes', `parameter ${key}`, o);
  } catch (e) {
    if (e instanceof SizeError) throw invalidArgument(e.message);
    throw e;
  }
}

function parseUint(value: string, key: string, max: number): number {
  if (!/^\d{1,10}$/.test(value.trim())) throw invalidArgument(`parameter ${key}=${JSON.stringify(value)}: expected a non-negative integer`);
  const n = Number(value.trim());
  if (n > max) throw invalidArgument(`parameter ${key}=${value} exceeds ${max}`);
  return n;
}

function parseMode(value: string): number {
  if (!/^0?[0-7]{3,4}$/.test(value.trim())) throw invalidArgument(`parameter mode=${JSON.stringify(value)}: expected octal permissions such as 0644 or 0660`);
  return parseInt(value.trim(), 8) & 0o7777;
}

/** Parses CreateVolume/GetCapacity parameters. */
export function parseVolumeParams(params: StringMap | null | undefined): VolumeParams {
  const p = params ?? {};
  const unknown = Object.keys(p).filter((k) => !KNOWN_KEYS.has(k) && !k.startsWith(K8S_PREFIX));
  if (unknown.length > 0) {
    throw invalidArgument(
      `unknown StorageClass parameter${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')}; known: ${[...KNOWN_KEYS].join(', ')}`,
    );
  }
  const out: VolumeParams = { mode: DEFAULT_FILE_MODE, uid: 0, gid: 0, sharing: 'serial' };
  if (p['mode'] !== undefined) out.mode = parseMode(p['mode']);
  if (p['uid'] !== undefined) out.uid = parseUint(p['uid'], 'uid', MAX_ID);
  if (p['gid'] !== undefined) out.gid = parseUint(p['gid'], 'gid', MAX_ID);
  if (p['sharing'] !== undefined) {
    const s = p['sharing'];
    if (s !== 'serial' && s !== 'multi-writer') throw invalidArgument(`parameter sharing=${JSON.stringify(s)}: expected "serial" or "multi-writer"`);
    out.sharing = s;
  }
  if (p['cloneMode'] !== undefined) {
    const c = p['cloneMode'];
    if (c !== 'share' && c !== 'copy')
      throw invalidArgument(`parameter cloneMode=${JSON.stringify(c)}: expected "share" (read-only claims share their source's memory) or "copy"`);
    if (c === 'copy') out.cloneMode = 'copy';
  }
  const hasStrips = p['nstrips'] !== undefined;
  const hasBuckets = p['nbuckets'] !== undefined;
  if (hasStrips !== hasBuckets) throw invalidArgument('parameters nstrips and nbuckets go together: set both to interleave, neither for a contiguous file');
  if (!hasStrips && p['chunkSize'] !== undefined) throw invalidArgument('parameter chunkSize needs nstrips and nbuckets');
  if (hasStrips) {
    const nstrips = parseUint(p['nstrips'], 'nstrips', 1024);
    const nbuckets = parseUint(p['nbuckets'], 'nbuckets', 1024);
    if (nstrips < 1 || nbuckets < 1) throw invalidArgument('parameters nstrips and nbuckets must be at least 1');
    if (nstrips > nbuckets) throw invalidArgument(`parameter nstrips=${nstrips} exceeds nbuckets=${nbuckets}`);
    const chunkSize =
      p['chunkSize'] !== undefined ? parseSize(p['chunkSize'], 'chunkSize', { multipleOf: ALLOC_UNIT_BYTES, powerOfTwo: true }) : DEFAULT_CHUNK_SIZE;
    out.interleave = { nstrips, nbuckets, chunkSize };
  }
  return out;
}

/**
 * Canonical string form of parameters, independent of key order, spelling ("2Mi" vs "2097152") and
 * ignored keys. Two CreateVolume calls with the same name are compatible only if these are equal.
 */
export function canonicalParams(p: VolumeParams): StringMap {
  const out: StringMap = {
    mode: '0' + p.mode.toString(8),
    uid: String(p.uid),
    gid: String(p.gid),
    sharing: p.sharing,
  };
  if (p.cloneMode) out['cloneMode'] = p.cloneMode;
  if (p.interleave) {
    out['nstrips'] = String(p.interleave.nstrips);
    out['nbuckets'] = String(p.interleave.nbuckets);
    out['chunkSize'] = String(p.interleave.chunkSize);
  }
  return out;
}

export function sameParams(a: VolumeParams, b: VolumeParams): boolean {
  const ca = canonicalParams(a);
  const cb = canonicalParams(b);
  const keys = new Set([...Object.keys(ca), ...Object.keys(cb)]);
  for (const k of keys) if (ca[k] !== cb[k]) return false;
  return true;
}

/**
 * VolumeSnapshotClass parameters. A snapshot is a plain copy with nothing to tune, so only the
 * keys Kubernetes adds (csi.storage.k8s.io/*) are accepted; anything else is a typo or a
 * parameter meant for another driver, and INVALID_ARGUMENT says so.
 */
export function checkSnapshotParams(params: StringMap | null | undefined): void {
  const unknown = Object.keys(params ?? {}).filter((k) => !k.startsWith(K8S_PREFIX));
  if (unknown.length > 0) {
    throw invalidArgument(
      `unknown snapshot parameter${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')}; famfs snapshots take none`,
    );
  }
}
