// Volume and snapshot operations: what CreateVolume, DeleteVolume, CreateSnapshot, ... do to famfs
// and to the controller's records (store.ts). A volume is a famfs file csi/vol-<hash>/data; clones,
// volumes from snapshots and snapshots are memory-to-memory copies into new files (snapshot-copy.ts).
// Requests arrive parsed and checked (controller.ts, requests.ts); this module decides with the
// state: idempotent repeats, adoption of a file whose record never committed, resumed copies,
// publish records and capacity. Operations on one object are serialized by a per-id lock.
import type { Logger } from 'pino';
import { FamfsError } from '../famfs/errors';
import type { FamfsFs } from '../famfs/fs';
import type { FileNode } from '../famfs/tree';
import { fmapCapacity } from '../famfs/fmap';
import { isQuarantine } from '../famfs/repair';
import { alreadyExists, failedPrecondition, notFound, outOfRange } from './errors';
import { KeyedLocks } from './keyed-locks';
import { CSI_ROOT_DIR, isSnapshotId, isVolumeId, objectDirRelpath, objectFileRelpath, snapshotIdForName, volumeIdForName } from './names';
import { canonicalParams, type VolumeParams } from './params';
import { capacityBounds, DEFAULT_VOLUME_SIZE, sizeForRange } from './requests';
import { copyFileContents, type CopyMedia } from './snapshot-copy';
import { resolveStaticPath, type StaticPath } from './static-path';
import {
  objectFile,
  type ContentSource,
  type ControllerStore,
  type PublishRecord,
  type SnapshotRecord,
  type StaticVolumeRecord,
  type VolumeRecord,
} from './store';
import type { TreeNode } from '../famfs/tree';
import type { CapacityRange, VolumeCondition } from './types';

export interface VolumeInfo {
  volumeId: string;
  capacityBytes: number;
  file: FileNode;
  record?: VolumeRecord;
  sharing: VolumeParams['sharing'];
  /** A zero-copy read-only share of this volume id (file is that volume's). */
  shareOf?: string;
}

export interface SnapshotInfo {
  snapshotId: string;
  file: FileNode;
  record?: SnapshotRecord;
  sourceVolumeId: string;
  sizeBytes: number;
  createdAtMs: number;
  readyToUse: boolean;
}

export interface CreateRequest {
  name: string;
  range: CapacityRange | null | undefined;
  params: VolumeParams;
  source?: ContentSource;
  /** Share the source volume's memory read-only instead of copying it. */
  share?: boolean;
}

/** The record of a volume CreateVolume makes (or adopts); populated at once unless it is a copy. */
function newVolumeRecord(volumeId: string, req: CreateRequest, required: number, limit: number): VolumeRecord {
  return {
    volumeId,
    name: req.name,
    requiredBytes: required,
    limitBytes: limit,
    params: canonicalParams(req.params),
    createdAt: new Date().toISOString(),
    published: {},
    ...(req.source ? { contentSource: req.source } : {}),
    populated: req.source === undefined,
  };
}

export interface VolumesOptions {
  log?: Logger;
  /** Bytes per copy slice between two event-loop yields. */
  copySliceBytes?: number;
  /** Told after a file was deleted (its memory will be free once hosts replayed it): the background zeroer looks. */
  onFreed?: () => void;
}

export class Volumes {
  private readonly locks = new KeyedLocks();
  private readonly fs: FamfsFs;
  private readonly media: CopyMedia;
  private readonly log: Logger | undefined;

  constructor(
    readonly store: ControllerStore,
    private readonly opts: VolumesOptions = {},
  ) {
    this.fs = store.fs;
    this.media = store.fs.media;
    this.log = opts.log;
  }

  /** Runs `fn` with the given volumes/snapshots locked: operations on one object are serialized. */
  exclusive<T>(ids: string | string[], fn: () => Promise<T>): Promise<T> {
    return this.locks.run(Array.isArray(ids) ? ids : [ids], fn);
  }

  /** Objects with an operation in flight (load tests check this drains to zero). */
  get lockedObjects(): number {
    return this.locks.held;
  }

  // ---------------------------------------------------------------------------------------------
  // Reading
  // ---------------------------------------------------------------------------------------------

  private fileOf(id: string): FileNode | undefined {
    if (!isVolumeId(id) && !isSnapshotId(id)) return undefined;
    this.store.runFamfs('catch up with the famfs log', () => this.fs.catchUp());
    return objectFile(this.fs, id);
  }

  async describe(volumeId: string): Promise<VolumeInfo | undefined> {
    return this.describeNow(volumeId);
  }

  /** describe without the promise (CreateVolume asks on every call). */
  private describeNow(volumeId: string): VolumeInfo | undefined {
    this.store.refresh();
    if (!isVolumeId(volumeId)) return undefined;
    const rec = this.store.volume(volumeId);
    if (rec?.deletePending) return undefined;
    const file = this.fileOf(rec?.shareOf ?? volumeId);
    if (file === undefined) return undefined;
    return this.infoOf(volumeId, file);
  }

  /**
   * The volume as this controller last saw it, without touching the device (no log catch-up, no
   * image read). For a failed device, whose memory must not be read again: ControllerGetVolume and
   * ListVolumes still answer, with the device's condition attached by the caller.
   */
  describeCached(volumeId: string): VolumeInfo | undefined {
    if (!isVolumeId(volumeId)) return undefined;
    const rec = this.store.volume(volumeId);
    if (rec?.deletePending) return undefined;
    const file = objectFile(this.fs, rec?.shareOf ?? volumeId);
    return file === undefined ? undefined : this.infoOf(volumeId, file);
  }

  private infoOf(volumeId: string, file: FileNode): VolumeInfo {
    const record = this.store.volume(volumeId);
    const sharing = record?.params['sharing'] === 'multi-writer' ? 'multi-writer' : 'serial';
    return { volumeId, capacityBytes: file.size, file, ...(record ? { record } : {}), sharing, ...(record?.shareOf ? { shareOf: record.shareOf } : {}) };
  }

  /** Like describe, but a missing volume is NOT_FOUND (saying so when famfs repair quarantined it). */
  async require(volumeId: string): Promise<VolumeInfo> {
    const info = await this.describe(volumeId);
    if (info === undefined) {
      const q = this.quarantineOf(volumeId);
      if (q !== undefined) {
        throw notFound(
          `volume ${volumeId}: famfs repair could not prove its log entry ${q.index} and quarantined it as ${q.relpath}, ` +
            `which keeps its ${fmapCapacity(q.fmap)} bytes of memory (and data) reserved; restore the entry from a saved copy, ` +
            `or once no pod uses it: famfs repair --release ${q.index}`,
        );
      }
      throw notFound(`volume ${volumeId} does not exist`);
    }
    return info;
  }

  /** The quarantine file (famfs repair) that now holds a volume's memory, found by the log index of its record. */
  private quarantineOf(volumeId: string): FileNode | undefined {
    const index = this.store.volume(volumeId)?.fileIndex;
    const node = index === undefined ? undefined : this.fs.tree.byIndex.get(index);
    return node?.kind === 'file' && isQuarantine(node) ? node : undefined;
  }

  describeSnapshot(snapshotId: string): SnapshotInfo | undefined {
    this.store.refresh();
    if (!isSnapshotId(snapshotId)) return undefined;
    const file = this.fileOf(snapshotId);
    if (file === undefined) return undefined;
    const record = this.store.snapshot(snapshotId);
    return {
      snapshotId,
      file,
      ...(record ? { record } : {}),
      sourceVolumeId: record?.sourceVolumeId ?? '',
      sizeBytes: record?.sizeBytes ?? file.size,
      createdAtMs: record?.createdAtMs ?? 0,
      // Without a record nobody can vouch that the copy finished.
      readyToUse: record?.readyToUse === true,
    };
  }

  /** The health of one volume as the controller sees it (device health is added by the caller). */
  condition(info: VolumeInfo): VolumeCondition {
    const stop = this.fs.catchUp().stop;
    if (stop !== undefined) return { abnormal: true, message: `famfs log entry ${stop.index} is damaged (${stop.reason}); run famfs fsck` };
    const r = info.record;
    if (r !== undefined && !r.populated) {
      return {
        abnormal: true,
        message: `content copy from ${r.contentSource?.kind ?? 'source'} ${r.contentSource?.id ?? ''} did not finish; CreateVolume with the same name completes it`,
      };
    }
    if (r?.fileIndex !== undefined && r.fileIndex !== info.file.index) {
      return { abnormal: true, message: `the volume's famfs file was replaced outside the driver (log entry ${info.file.index}, expected ${r.fileIndex})` };
    }
    return { abnormal: false, message: 'ok' };
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

  private objectIds(accept: (id: string) => boolean): string[] {
    this.store.refresh();
    this.store.runFamfs('catch up with the famfs log', () => this.fs.catchUp());
    const root = this.fs.lookup(CSI_ROOT_DIR);
    if (root === undefined || root.kind !== 'dir') return [];
    return [...root.children.keys()].filter((id) => accept(id) && objectFile(this.fs, id) !== undefined).sort();
  }

  /** Every volume id, sorted (ListVolumes pages over this): files, and shares (records only). */
  volumeIds(): string[] {
    const ids = new Set([...this.objectIds(isVolumeId), ...this.store.shareIds()]);
    return [...ids].filter((id) => !this.store.volume(id)?.deletePending).sort();
  }

  /** Shares of a volume: while there are any it is frozen (no writer) and its memory stays. */
  sharesOf(volumeId: string): string[] {
    return this.store.sharesOf(volumeId);
  }

  snapshotIds(): string[] {
    return this.objectIds(isSnapshotId);
  }

  // ---------------------------------------------------------------------------------------------
  // Volumes
  // ---------------------------------------------------------------------------------------------

  /** The source file of a content source, or NOT_FOUND. */
  private sourceFile(src: ContentSource): { file: FileNode; size: number } {
    if (src.kind === 'volume') {
      const rec0 = this.store.volume(src.id);
      const file = isVolumeId(src.id) && !rec0?.deletePending ? this.fileOf(rec0?.shareOf ?? src.id) : undefined;
      if (file === undefined) throw notFound(`source volume ${src.id} does not exist`);
      const rec = this.store.volume(src.id);
      if (rec !== undefined && !rec.populated) throw failedPrecondition(`source volume ${src.id} is itself still being populated`);
      return { file, size: file.size };
    }
    const snap = this.describeSnapshot(src.id);
    if (snap === undefined) throw notFound(`source snapshot ${src.id} does not exist`);
    if (!snap.readyToUse) throw failedPrecondition(`source snapshot ${src.id} is not ready to use`);
    return { file: snap.file, size: snap.sizeBytes };
  }

  /**
   * CreateVolume: idempotent on name. An existing volume with the same name is returned when its
   * size fits the range and its parameters and content source match; otherwise ALREADY_EXISTS.
   */
  async create(req: CreateRequest): Promise<VolumeInfo> {
    const volumeId = volumeIdForName(req.name);
    const keys = req.source ? [volumeId, req.source.id] : [volumeId];
    return this.exclusive(keys, async () => {
      this.store.requireMaster();
      if (req.share && req.source?.kind === 'volume') return this.createShare(req, volumeId, req.source.id);
      const existing = this.describeNow(volumeId);
      if (existing !== undefined) return this.createAgain(req, existing);

      const source = req.source ? this.sourceFile(req.source) : undefined;
      const { size, required, limit } = sizeForRange(req.range, DEFAULT_VOLUME_SIZE, source?.size ?? 0);
      // Bigger than the whole data area: no amount of deleting makes it fit (OUT_OF_RANGE). Merely
      // no room right now is famfs' ENOSPC, mapped to RESOURCE_EXHAUSTED.
      const dataArea = this.fs.dataAreaBytes;
      if (size > dataArea) throw outOfRange(`${size} bytes can never fit: this famfs holds at most ${dataArea} bytes of files`);
      const record = newVolumeRecord(volumeId, req, required, limit);
      // A copy takes a while and can be cut short by a crash: the intent is recorded first, so a
      // retry (or ControllerGetVolume) knows the file's content is not complete yet.
      if (req.source) {
        this.store.runFamfs(`create volume ${volumeId}`, () => this.fs.planCreate(objectFileRelpath(volumeId), size, req.params.interleave));
        this.store.putVolume(record);
        this.store.commit();
      }
      const file = this.store.runFamfs(`create volume ${volumeId}`, () => {
        try {
          return this.createVolumeFile(volumeId, size, req);
        } catch (e) {
          // Nothing was allocated: the intent record of a copy must not outlive the attempt.
          if (req.source && objectFile(this.fs, volumeId) === undefined) {
            this.store.removeVolume(volumeId);
            if (e instanceof FamfsError && e.code !== 'EFENCED' && e.code !== 'ENOTMASTER') this.store.commit();
          }
          throw e;
        }
      });
      record.fileIndex = file.index;
      if (source) {
        await this.copyInto(source.file, source.size, file, `volume ${volumeId} from ${req.source?.kind} ${req.source?.id}`);
        record.populated = true;
      }
      this.store.putVolume(record);
      this.store.commit();
      return { volumeId, capacityBytes: file.size, file, record, sharing: req.params.sharing };
    });
  }

  /**
   * A read-only claim whose dataSource is another claim: a record naming the source, no file, no
   * copy. Refused while a writer has the source attached (the share freezes it; the CO retries).
   */
  private async createShare(req: CreateRequest, volumeId: string, requestedSource: string): Promise<VolumeInfo> {
    this.store.refresh();
    const srcRec = this.store.volume(requestedSource);
    // A share of a share shows the same memory: record the volume that owns it.
    const origin = srcRec?.shareOf ?? requestedSource;
    const existing = this.store.volume(volumeId);
    const ownFile = this.fileOf(volumeId);
    if (existing !== undefined || ownFile !== undefined) {
      if (existing?.shareOf !== origin || existing.deletePending) {
        throw alreadyExists(`volume ${JSON.stringify(req.name)} exists and is not a read-only share of ${requestedSource}`);
      }
    }
    const file = srcRec?.deletePending ? undefined : this.fileOf(origin);
    if (file === undefined) throw notFound(`source volume ${requestedSource} does not exist`);
    const originRec = this.store.volume(origin);
    if (originRec !== undefined && !originRec.populated) throw failedPrecondition(`source volume ${requestedSource} is still being populated`);
    const { required, limit } = capacityBounds(req.range);
    if (file.size < required || (limit > 0 && file.size > limit)) {
      throw outOfRange(`a read-only share has its source's size, ${file.size} bytes, outside the requested range [${required}, ${limit || '∞'}]`);
    }
    if (existing !== undefined) return this.infoOf(volumeId, file);
    const writers = Object.entries(originRec?.published ?? {})
      .filter(([, p]) => !p.readonly)
      .map(([n]) => n);
    if (writers.length > 0) {
      throw failedPrecondition(
        `source volume ${requestedSource} is attached for writing on ${writers.join(', ')}; a read-only share freezes its source, so it is made once the writer is detached ` +
          '(or use StorageClass parameter cloneMode: "copy" for a copy)',
      );
    }
    const record: VolumeRecord = {
      ...newVolumeRecord(volumeId, req, required, limit),
      contentSource: { kind: 'volume', id: requestedSource },
      populated: true,
      fileIndex: file.index,
      shareOf: origin,
    };
    this.store.putVolume(record);
    this.store.commit();
    this.log?.info({ volume: volumeId, shareOf: origin, bytes: file.size }, 'read-only share created (no copy)');
    return this.infoOf(volumeId, file);
  }

  private createVolumeFile(volumeId: string, size: number, req: CreateRequest): FileNode {
    const p = req.params;
    // The directory comes in the same write (parents): creat refuses before its first append
    // whatever it would refuse, so a refused CreateVolume leaves no directory entry behind.
    return this.fs.creat(objectFileRelpath(volumeId), size, {
      parents: { mode: 0o755 },
      mode: p.mode,
      uid: p.uid,
      gid: p.gid,
      // Memory may have held another tenant's data: the file must read zeros before it becomes
      // visible. Clean memory (zeroed in the background when it was freed) is taken first; only
      // without it does the create zero here. A copy overwrites every byte itself (source bytes,
      // then a zeroed tail) before it is reported, and takes dirty memory first.
      zero: req.source === undefined,
      ...(p.interleave ? { interleave: p.interleave } : {}),
    });
  }

  private async copyInto(src: FileNode, length: number, dst: FileNode, what: string): Promise<void> {
    try {
      await copyFileContents(this.media, src, dst, length, {
        ...(this.log ? { log: this.log } : {}),
        what,
        ...(this.opts.copySliceBytes ? { sliceBytes: this.opts.copySliceBytes } : {}),
      });
    } catch (e) {
      // Mapped like any famfs call's error (a fenced copy also ends the master role).
      this.store.runFamfs(`copy ${what}`, () => {
        throw e;
      });
      throw e;
    }
  }

  /** A repeated CreateVolume: compare, finish an interrupted copy, adopt a record-less file. */
  private async createAgain(req: CreateRequest, existing: VolumeInfo): Promise<VolumeInfo> {
    const { volumeId } = existing;
    const have = existing.capacityBytes;
    const { required, limit } = capacityBounds(req.range);
    if (have < required || (limit > 0 && have > limit)) {
      throw alreadyExists(`volume ${JSON.stringify(req.name)} exists with ${have} bytes, outside the requested range [${required}, ${limit || '∞'}]`);
    }
    const want = canonicalParams(req.params);
    const rec = existing.record;
    const haveParams = rec?.params ?? this.paramsFromFile(existing.file);
    const keys = rec ? new Set([...Object.keys(want), ...Object.keys(haveParams)]) : new Set(Object.keys(haveParams));
    for (const k of keys) {
      if (want[k] !== haveParams[k]) {
        throw alreadyExists(`volume ${JSON.stringify(req.name)} exists with parameter ${k}=${haveParams[k] ?? '(unset)'}, requested ${want[k] ?? '(unset)'}`);
      }
    }
    const srcText = (s: ContentSource | undefined): string => (s ? `${s.kind} ${s.id}` : 'no content source');
    if (rec && srcText(rec.contentSource) !== srcText(req.source)) {
      throw alreadyExists(`volume ${JSON.stringify(req.name)} exists with ${srcText(rec.contentSource)}, requested ${srcText(req.source)}`);
    }
    if (rec && !rec.populated && rec.contentSource) {
      // The first attempt died mid-copy: finish it now.
      const source = this.sourceFile(rec.contentSource);
      await this.copyInto(source.file, source.size, existing.file, `volume ${volumeId} from ${rec.contentSource.kind} ${rec.contentSource.id} (resumed)`);
      rec.populated = true;
      rec.fileIndex = existing.file.index;
      this.store.putVolume(rec);
      this.store.commit();
    } else if (rec === undefined) {
      // The file was appended but its record never committed (crash in between): adopt it.
      const adopted: VolumeRecord = { ...newVolumeRecord(volumeId, req, required, limit), fileIndex: existing.file.index };
      if (req.source) {
        const source = this.sourceFile(req.source);
        await this.copyInto(source.file, source.size, existing.file, `volume ${volumeId} (adopted)`);
        adopted.populated = true;
      }
      this.store.putVolume(adopted);
      this.store.commit();
      return { ...existing, record: adopted, sharing: req.params.sharing };
    }
    return existing;
  }

  /** DeleteVolume: unknown ids succeed; a volume still published is FAILED_PRECONDITION. */
  async delete(volumeId: string): Promise<void> {
    if (!isVolumeId(volumeId)) return;
    this.store.refresh();
    const shareOf = this.store.volume(volumeId)?.shareOf;
    await this.exclusive(shareOf ? [volumeId, shareOf] : [volumeId], async () => {
      this.store.requireMaster();
      const rec = this.store.volume(volumeId);
      const published = Object.keys(rec?.published ?? {});
      if (rec?.shareOf !== undefined) {
        if (published.length > 0) throw failedPrecondition(`volume ${volumeId} is still published to ${published.join(', ')}; unpublish it first`);
        const source = this.store.volume(rec.shareOf);
        const last = this.store.sharesOf(rec.shareOf).every((id) => id === volumeId);
        // The last share of a deleted source frees the source's memory: file first, then records,
        // so a crash in between leaves records that the next takeover drops (their file is gone).
        if (last && source?.deletePending) await this.removeObject(rec.shareOf, () => undefined);
        this.store.removeVolume(volumeId);
        if (last && source?.deletePending) this.store.removeVolume(rec.shareOf);
        this.store.commit();
        return;
      }
      if (rec?.deletePending) return;
      if (rec !== undefined && this.store.sharesOf(volumeId).length > 0) {
        if (published.length > 0) throw failedPrecondition(`volume ${volumeId} is still published to ${published.join(', ')}; unpublish it first`);
        // Its memory is what the shares show: hide the volume now, free it with the last share.
        rec.deletePending = true;
        this.store.putVolume(rec);
        this.store.commit();
        this.log?.info({ volume: volumeId, shares: this.store.sharesOf(volumeId) }, 'volume deleted while shared read-only: memory freed with its last share');
        return;
      }
      await this.removeObject(volumeId, () => {
        const nodes = Object.keys(this.store.volume(volumeId)?.published ?? {});
        if (nodes.length > 0) throw failedPrecondition(`volume ${volumeId} is still published to ${nodes.join(', ')}; unpublish it first`);
      });
      if (this.store.removeVolume(volumeId)) this.store.commit();
    });
  }

  /** Removes an object's famfs file and directory (the memory becomes pending-free). */
  private async removeObject(id: string, precondition: () => void): Promise<void> {
    this.store.removeObjectFiles(id, precondition);
    this.opts.onFreed?.();
  }

  async setPublished(volumeId: string, nodeId: string, rec: PublishRecord | undefined): Promise<void> {
    this.store.requireMaster();
    const v = this.store.volume(volumeId);
    if (v === undefined) {
      if (rec === undefined) return;
      const file = this.fileOf(volumeId);
      if (file === undefined) return;
      // Volume known to famfs but its record was lost: start one from the file.
      this.store.putVolume({
        volumeId,
        name: '',
        requiredBytes: 0,
        limitBytes: 0,
        params: this.paramsFromFile(file),
        createdAt: new Date().toISOString(),
        published: { [nodeId]: rec },
        populated: true,
        fileIndex: file.index,
      });
    } else if (rec === undefined) {
      if (v.published[nodeId] === undefined) return;
      delete v.published[nodeId];
      this.store.putVolume(v);
    } else {
      v.published[nodeId] = rec;
      this.store.putVolume(v);
    }
    this.store.commit();
  }

  // ---------------------------------------------------------------------------------------------
  // Static volumes (static-path.ts): published, never created or deleted by the driver
  // ---------------------------------------------------------------------------------------------

  /** The famfs file or directory of a static volume, after catching up with the log. */
  resolveStatic(p: StaticPath, pool: string, block: boolean): TreeNode {
    this.store.refresh();
    this.store.runFamfs('catch up with the famfs log', () => this.fs.catchUp());
    return resolveStaticPath(this.fs, p, pool, block);
  }

  staticVolume(volumeId: string): StaticVolumeRecord | undefined {
    this.store.refresh();
    return this.store.staticVolume(volumeId);
  }

  /** Records (rec) or forgets (undefined; nodeId '' for every node) a static volume's publish to a node. */
  async setStaticPublished(volumeId: string, path: string, nodeId: string, rec: PublishRecord | undefined): Promise<void> {
    this.store.requireMaster();
    const cur = this.store.staticVolume(volumeId);
    if (cur === undefined && rec === undefined) return;
    const next: StaticVolumeRecord = { volumeId, path: cur?.path ?? path, published: { ...(cur?.published ?? {}) } };
    if (rec !== undefined) next.published[nodeId] = rec;
    else if (nodeId === '') next.published = {};
    else if (next.published[nodeId] === undefined) return;
    else delete next.published[nodeId];
    this.store.putStaticVolume(next);
    this.store.commit();
  }

  async clearPublished(volumeId: string): Promise<void> {
    this.store.requireMaster();
    const v = this.store.volume(volumeId);
    if (v === undefined || Object.keys(v.published).length === 0) return;
    v.published = {};
    this.store.putVolume(v);
    this.store.commit();
  }

  /** Space the CO may plan with: free memory now (pending frees excluded) and the largest single volume. */
  capacity(): { available: number; maximumVolume: number; pendingFree: number } {
    this.store.runFamfs('catch up with the famfs log', () => this.fs.catchUp());
    // Deleted memory becomes free once every live host replayed past the delete; count only that.
    this.fs.reclaimReplayed();
    const u = this.fs.usage();
    // A volume takes two log entries (its directory and its file): without them, nothing fits.
    if (this.fs.logEntriesLeft() < 2) return { available: 0, maximumVolume: 0, pendingFree: u.pendingFreeBytes };
    return { available: u.freeBytes, maximumVolume: u.largestFreeBytes, pendingFree: u.pendingFreeBytes };
  }

  // ---------------------------------------------------------------------------------------------
  // Snapshots
  // ---------------------------------------------------------------------------------------------

  /** CreateSnapshot: idempotent on name; the same name with another source is ALREADY_EXISTS. */
  async createSnapshot(name: string, sourceVolumeId: string): Promise<SnapshotInfo> {
    const snapshotId = snapshotIdForName(name);
    return this.exclusive([snapshotId, sourceVolumeId], async () => {
      this.store.requireMaster();
      const existing = this.describeSnapshot(snapshotId);
      if (existing !== undefined) {
        if (existing.record !== undefined && existing.sourceVolumeId !== sourceVolumeId) {
          throw alreadyExists(`snapshot ${JSON.stringify(name)} exists with source volume ${existing.sourceVolumeId}, requested ${sourceVolumeId}`);
        }
        if (existing.readyToUse) return existing;
        // Interrupted copy, or a file whose record never committed: copy (again) from the source.
        const src = isVolumeId(sourceVolumeId) ? this.fileOf(this.store.volume(sourceVolumeId)?.shareOf ?? sourceVolumeId) : undefined;
        if (src === undefined) throw notFound(`source volume ${sourceVolumeId} does not exist (snapshot ${snapshotId} was left incomplete)`);
        const rec: SnapshotRecord = existing.record ?? {
          snapshotId,
          name,
          sourceVolumeId,
          createdAtMs: Date.now(),
          sizeBytes: Math.min(src.size, existing.file.size),
          readyToUse: false,
          fileIndex: existing.file.index,
        };
        await this.copyInto(src, rec.sizeBytes, existing.file, `snapshot ${snapshotId} of ${sourceVolumeId} (resumed)`);
        rec.readyToUse = true;
        this.store.putSnapshot(rec);
        this.store.commit();
        return this.describeSnapshot(snapshotId) as SnapshotInfo;
      }
      const src = isVolumeId(sourceVolumeId) ? this.fileOf(this.store.volume(sourceVolumeId)?.shareOf ?? sourceVolumeId) : undefined;
      if (src === undefined) throw notFound(`source volume ${sourceVolumeId} does not exist`);
      const srcRec = this.store.volume(sourceVolumeId);
      if (srcRec !== undefined && !srcRec.populated) throw failedPrecondition(`source volume ${sourceVolumeId} is still being populated`);
      const relpath = objectFileRelpath(snapshotId);
      this.store.runFamfs(`create snapshot ${snapshotId}`, () => this.fs.planCreate(relpath, src.size));
      const rec: SnapshotRecord = { snapshotId, name, sourceVolumeId, createdAtMs: Date.now(), sizeBytes: src.size, readyToUse: false };
      this.store.putSnapshot(rec);
      this.store.commit();
      const file = this.store.runFamfs(`create snapshot ${snapshotId}`, () => {
        const dir = objectDirRelpath(snapshotId);
        this.fs.planCreate(relpath, src.size);
        if (this.fs.lookup(dir) === undefined) this.fs.mkdir(dir, { parents: true, mode: 0o755 });
        // Readable by the owner of the source only; snapshots are restored through CreateVolume.
        return this.fs.creat(relpath, src.size, { mode: 0o400, uid: src.uid, gid: src.gid });
      });
      rec.fileIndex = file.index;
      await this.copyInto(src, src.size, file, `snapshot ${snapshotId} of ${sourceVolumeId}`);
      rec.readyToUse = true;
      this.store.putSnapshot(rec);
      this.store.commit();
      return this.describeSnapshot(snapshotId) as SnapshotInfo;
    });
  }

  /** DeleteSnapshot: unknown ids succeed. */
  async deleteSnapshot(snapshotId: string): Promise<void> {
    if (!isSnapshotId(snapshotId)) return;
    await this.exclusive(snapshotId, async () => {
      this.store.requireMaster();
      await this.removeObject(snapshotId, () => undefined);
      if (this.store.removeSnapshot(snapshotId)) this.store.commit();
    });
  }
}
