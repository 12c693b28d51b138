// The controller's view of volumes: owns the FamfsFs (the single log writer) and a small JSON record
// per volume, and speaks CsiErrors only (famfs errors are mapped here, through errors.ts).
//
// Where things live:
//   famfs (shared memory)   csi/<volume id>/data — the volume; its size, mode, uid, gid and fmap.
//                           Existence in famfs is the truth: a volume exists iff its file does.
//   controller state file   <state-dir>/controller-state.json — what famfs cannot hold: the CO's
//                           name, the requested capacity range, the canonical parameters (sharing
//                           policy, nbuckets) and which nodes the volume is published to.
// If the record is lost (a new controller host), a volume is described from its famfs file alone;
// parameters famfs does not keep (sharing, nbuckets) then read as defaults.
import * as path from 'path';
import { FamfsError } from '../famfs/errors';
import type { FamfsFs } from '../famfs/fs';
import { reservedBytes, type FileNode } from '../famfs/tree';
import { JsonStateStore } from '../mount/state';
import { aborted, alreadyExists, failedPrecondition, fromFamfsError, invalidArgument, notFound, outOfRange } from './errors';
import { CSI_ROOT_DIR, isVolumeId, objectDirRelpath, objectFileRelpath, volumeIdForName } from './names';
import { ALLOC_UNIT_BYTES, canonicalParams, sameParams, type VolumeParams } from './params';
import type { CapacityRange } from './types';

export const DEFAULT_VOLUME_SIZE = 1024 ** 3;

export interface PublishRecord {
  readonly: boolean;
  accessMode: string;
  multiNode: boolean;
}

export interface VolumeRecord {
  volumeId: string;
  name: string;
  requiredBytes: number;
  limitBytes: number;
  params: Record<string, string>;
  createdAt: string;
  published: Record<string, PublishRecord>;
}

interface ControllerStateDoc {
  version: 1;
  volumes: Record<string, VolumeRecord>;
}

export interface VolumeInfo {
  volumeId: string;
  capacityBytes: number;
  file: FileNode;
  record?: VolumeRecord;
  sharing: VolumeParams['sharing'];
}

function toInt(s: string | undefined, field: string): number {
  if (s === undefined || s === '') return 0;
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw outOfRange(`${field} ${s} is not representable`);
  if (n < 0) throw invalidArgument(`${field} must not be negative (got ${s})`);
  return n;
}

const roundUp = (n: number, unit: number): number => Math.ceil(n / unit) * unit;

/** The allocation size for a capacity range: rounded up to famfs' 2 MiB unit, within the limit. */
export function sizeForRange(range: CapacityRange | null | undefined, defaultSize = DEFAULT_VOLUME_SIZE): { size: number; required: number; limit: number } {
  const required = toInt(range?.required_bytes, 'capacity_range.required_bytes');
  const limit = toInt(range?.limit_bytes, 'capacity_range.limit_bytes');
  if (limit > 0 && required > limit) throw outOfRange(`capacity_range: required_bytes ${required} exceeds limit_bytes ${limit}`);
  let size: number;
  if (required > 0) size = roundUp(required, ALLOC_UNIT_BYTES);
  else if (limit > 0) size = Math.min(defaultSize, Math.floor(limit / ALLOC_UNIT_BYTES) * ALLOC_UNIT_BYTES);
  else size = defaultSize;
  if (size === 0 || (limit > 0 && size > limit)) {
    throw outOfRange(`capacity_range [${required}, ${limit}] holds no multiple of the 2 MiB famfs allocation unit`);
  }
  return { size, required, limit };
}

export interface CreateRequest {
  name: string;
  range: CapacityRange | null | undefined;
  params: VolumeParams;
}

export class VolumeState {
  private readonly store: JsonStateStore<ControllerStateDoc>;
  private readonly busy = new Set<string>();

  constructor(
    readonly fs: FamfsFs,
    stateDir: string,
  ) {
    this.store = new JsonStateStore<ControllerStateDoc>(path.join(stateDir, 'controller-state.json'), {
      initial: () => ({ version: 1, volumes: {} }),
      validate: (d) => {
        const doc = d as ControllerStateDoc;
        if (doc?.version !== 1 || typeof doc.volumes !== 'object') throw new Error('controller-state.json: unsupported content');
        return doc;
      },
    });
  }

  /** Runs `fn` while holding the per-volume lock; a second operation on the same volume is ABORTED. */
  async exclusive<T>(volumeId: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy.has(volumeId)) throw aborted(`an operation on volume ${volumeId} is already in progress`);
    this.busy.add(volumeId);
    try {
      return await fn();
    } finally {
      this.busy.delete(volumeId);
    }
  }

  private famfs<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (e instanceof FamfsError) throw fromFamfsError(e, what);
      throw e;
    }
  }

  private fileOf(volumeId: string): FileNode | undefined {
    if (!isVolumeId(volumeId)) return undefined;
    this.famfs('catch up with the famfs log', () => this.fs.catchUp());
    const node = this.fs.lookup(objectFileRelpath(volumeId));
    return node?.kind === 'file' ? node : undefined;
  }

  async describe(volumeId: string): Promise<VolumeInfo | undefined> {
    const file = this.fileOf(volumeId);
    if (file === undefined) return undefined;
    const record = (await this.store.load()).volumes[volumeId];
    const sharing = record?.params['sharing'] === 'multi-writer' ? 'multi-writer' : 'serial';
    return { volumeId, capacityBytes: file.size, file, ...(record ? { record } : {}), sharing };
  }

  /** Like describe, but a missing volume is NOT_FOUND. */
  async require(volumeId: string, field = 'volume_id'): Promise<VolumeInfo> {
    if (volumeId === '') throw invalidArgument(`${field} is required`);
    const info = await this.describe(volumeId);
    if (info === undefined) throw notFound(`volume ${volumeId} does not exist`);
    return info;
  }

  /** What famfs alone says about a volume's parameters (used when the record is missing). */
  private paramsFromFile(file: FileNode): Record<string, string> {
    const p: Record<string, string> = { mode: '0' + file.mode.toString(8), uid: String(file.uid), gid: String(file.gid) };
    if (file.fmap.kind === 'interleave') {
      p['nstrips'] = String(file.fmap.nstrips);
      p['chunkSize'] = String(file.fmap.chunkSize);
    }
    return p;
  }

  /**
   * CreateVolume: idempotent on name. An existing volume with the same name is returned when its
   * size fits the range and its parameters match; otherwise ALREADY_EXISTS.
   */
  async create(req: CreateRequest): Promise<VolumeInfo> {
    const volumeId = volumeIdForName(req.name);
    const { size, required, limit } = sizeForRange(req.range);
    return this.exclusive(volumeId, async () => {
      const existing = await this.describe(volumeId);
      if (existing !== undefined) {
        const have = existing.capacityBytes;
        if (have < required || (limit > 0 && have > limit)) {
          throw alreadyExists(`volume ${JSON.stringify(req.name)} exists with ${have} bytes, outside the requested range [${required}, ${limit || '∞'}]`);
        }
        const want = canonicalParams(req.params);
        const haveParams = existing.record?.params ?? this.paramsFromFile(existing.file);
        const keys = existing.record ? new Set([...Object.keys(want), ...Object.keys(haveParams)]) : new Set(Object.keys(haveParams));
        for (const k of keys) {
          if (want[k] !== haveParams[k]) {
            throw alreadyExists(`volume ${JSON.stringify(req.name)} exists with parameter ${k}=${haveParams[k] ?? '(unset)'}, requested ${want[k] ?? '(unset)'}`);
          }
        }
        return existing;
      }
      // Bigger than the whole data area: no amount of deleting makes it fit (OUT_OF_RANGE). Merely
      // no room right now is famfs' ENOSPC, mapped to RESOURCE_EXHAUSTED.
      const dataArea = this.fs.superblock.deviceSize - reservedBytes(this.fs.superblock.logLen);
      if (size > dataArea) throw outOfRange(`${size} bytes can never fit: this famfs holds at most ${dataArea} bytes of files`);
      const dir = objectDirRelpath(volumeId);
      const file = this.famfs(`create volume ${volumeId}`, () => {
        if (this.fs.lookup(dir) === undefined) this.fs.mkdir(dir, { parents: true, mode: 0o755 });
        const p = req.params;
        return this.fs.creat(objectFileRelpath(volumeId), size, {
          mode: p.mode,
          uid: p.uid,
          gid: p.gid,
          // Memory may have held another tenant's data: zero it before it becomes visible.
          zero: true,
          ...(p.interleave ? { interleave: p.interleave } : {}),
        });
      });
      const record: VolumeRecord = {
        volumeId,
        name: req.name,
        requiredBytes: required,
        limitBytes: limit,
        params: canonicalParams(req.params),
        createdAt: new Date().toISOString(),
        published: {},
      };
      await this.store.update((d) => {
        d.volumes[volumeId] = record;
      });
      return { volumeId, capacityBytes: file.size, file, record, sharing: req.params.sharing };
    });
  }

  /** DeleteVolume: unknown ids succeed; a volume still published is FAILED_PRECONDITION. */
  async delete(volumeId: string): Promise<void> {
    if (volumeId === '') throw invalidArgument('volume_id is required');
    if (!isVolumeId(volumeId)) return;
    await this.exclusive(volumeId, async () => {
      const info = await this.describe(volumeId);
      if (info !== undefined) {
        const nodes = Object.keys(info.record?.published ?? {});
        if (nodes.length > 0) throw failedPrecondition(`volume ${volumeId} is still published to ${nodes.join(', ')}`);
        this.famfs(`delete volume ${volumeId}`, () => this.fs.rm(objectFileRelpath(volumeId)));
      }
      this.famfs(`delete volume directory of ${volumeId}`, () => {
        if (this.fs.lookup(objectDirRelpath(volumeId)) !== undefined) this.fs.rm(objectDirRelpath(volumeId));
      });
      await this.store.update((d) => {
        delete d.volumes[volumeId];
      });
    });
  }

  /** Every volume id, sorted (ListVolumes pages over this). */
  volumeIds(): string[] {
    this.famfs('catch up with the famfs log', () => this.fs.catchUp());
    const root = this.fs.lookup(CSI_ROOT_DIR);
    if (root === undefined || root.kind !== 'dir') return [];
    return [...root.children.keys()].filter((id) => isVolumeId(id) && this.fs.lookup(objectFileRelpath(id)) !== undefined).sort();
  }

  async setPublished(volumeId: string, nodeId: string, rec: PublishRecord | undefined): Promise<void> {
    await this.store.update((d) => {
      const v = d.volumes[volumeId];
      if (v === undefined) {
        if (rec === undefined) return;
        // Volume known to famfs but its record was lost: start a minimal one.
        d.volumes[volumeId] = { volumeId, name: '', requiredBytes: 0, limitBytes: 0, params: {}, createdAt: new Date().toISOString(), published: { [nodeId]: rec } };
        return;
      }
      if (rec === undefined) delete v.published[nodeId];
      else v.published[nodeId] = rec;
    });
  }

  async clearPublished(volumeId: string): Promise<void> {
    await this.store.update((d) => {
      const v = d.volumes[volumeId];
      if (v !== undefined) v.published = {};
    });
  }

  /** Space the CO may plan with: free memory now (pending frees excluded) and the largest single volume. */
  capacity(): { available: number; maximumVolume: number } {
    this.famfs('catch up with the famfs log', () => this.fs.catchUp());
    // Deleted memory becomes free once every host replayed past the delete; count what is free now.
    if (this.fs.allocator.hasPending) this.fs.allocator.reclaim(this.fs.horizon());
    const u = this.fs.usage();
    return { available: u.freeBytes, maximumVolume: u.largestFreeBytes };
  }
}

export { sameParams };
