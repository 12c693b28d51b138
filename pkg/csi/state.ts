// The controller's view of volumes and snapshots: owns the FamfsFs (the single, fenced log
// writer) and the controller metadata image, and speaks CsiErrors only (famfs errors are mapped
// here, through errors.ts).
//
// Where things live (all of it in the shared memory, nothing on a controller host's disk):
//   csi/vol-<hash>/data     a volume: a famfs file with its size, mode, uid, gid and fmap.
//   csi/snap-<hash>/data    a snapshot: a famfs file holding a memory-to-memory copy.
//   csi/.controller-state   the metadata image (state-image.ts): per volume the CO's name, the
//                           requested range, the canonical parameters, the content source, whether
//                           its content copy finished, and the nodes it is published to; per
//                           snapshot its source, creation time and readiness.
// Existence in famfs is the truth: a volume exists iff its file does. A file without a record (a
// crash between the famfs append and the image commit) is described from the file alone and
// adopted by the next CreateVolume with its name; a record without a file is dropped on takeover.
//
// Leadership: only the leader mutates. onBecameLeader() bumps the fencing epoch in the shared
// memory (FamfsFs.takeOver), so a paused former leader's next append or image commit fails with
// EFENCED, which every RPC reports as UNAVAILABLE "not the leader".
import type { Logger } from 'pino';
import { FamfsError } from '../famfs/errors';
import type { FamfsFs } from '../famfs/fs';
import { reservedBytes, type FileNode } from '../famfs/tree';
import { aborted, alreadyExists, CsiError, failedPrecondition, fromFamfsError, invalidArgument, notFound, outOfRange, resourceExhausted, unavailable } from './errors';
import { CSI_ROOT_DIR, isSnapshotId, isVolumeId, objectDirRelpath, objectFileRelpath, snapshotIdForName, volumeIdForName } from './names';
import { ALLOC_UNIT_BYTES, canonicalParams, sameParams, type VolumeParams } from './params';
import { copyFileContents, type CopyMedia } from './snapshot-copy';
import { DEFAULT_STATE_IMAGE_SIZE, SharedStateImage } from './state-image';
import type { CapacityRange, VolumeCondition } from './types';

export const DEFAULT_VOLUME_SIZE = 1024 ** 3;

export interface PublishRecord {
  readonly: boolean;
  accessMode: string;
  multiNode: boolean;
}

export type ContentSource = { kind: 'snapshot' | 'volume'; id: string };

export interface VolumeRecord {
  volumeId: string;
  name: string;
  requiredBytes: number;
  limitBytes: number;
  params: Record<string, string>;
  createdAt: string;
  published: Record<string, PublishRecord>;
  contentSource?: ContentSource;
  /** False from the intent record until the content copy finished and was flushed. */
  populated: boolean;
  /** Log index of the volume's FILE entry: a different index means the file was replaced. */
  fileIndex?: number;
}

export interface SnapshotRecord {
  snapshotId: string;
  name: string;
  sourceVolumeId: string;
  createdAtMs: number;
  sizeBytes: number;
  readyToUse: boolean;
  fileIndex?: number;
}

export interface ControllerStateDoc {
  version: 2;
  volumes: Record<string, VolumeRecord>;
  snapshots: Record<string, SnapshotRecord>;
}

export function validateStateDoc(d: unknown): ControllerStateDoc {
  const doc = d as ControllerStateDoc;
  if (doc?.version !== 2 || typeof doc.volumes !== 'object' || doc.volumes === null || typeof doc.snapshots !== 'object' || doc.snapshots === null) {
    throw new Error('controller state image: unsupported content');
  }
  return doc;
}

const emptyDoc = (): ControllerStateDoc => ({ version: 2, volumes: {}, snapshots: {} });

export interface VolumeInfo {
  volumeId: string;
  capacityBytes: number;
  file: FileNode;
  record?: VolumeRecord;
  sharing: VolumeParams['sharing'];
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

function toInt(s: string | undefined, field: string): number {
  if (s === undefined || s === '') return 0;
  if (!/^-?\d+$/.test(s)) throw invalidArgument(`${field} ${JSON.stringify(s)} is not an integer`);
  const n = Number(s);
  if (n < 0) throw invalidArgument(`${field} must not be negative (got ${s})`);
  if (!Number.isSafeInteger(n)) throw outOfRange(`${field} ${s} is not representable`);
  return n;
}

const roundUp = (n: number, unit: number): number => Math.ceil(n / unit) * unit;

/** The allocation size for a capacity range: rounded up to famfs' 2 MiB unit, within the limit. */
export function sizeForRange(
  range: CapacityRange | null | undefined,
  defaultSize = DEFAULT_VOLUME_SIZE,
  atLeast = 0,
): { size: number; required: number; limit: number } {
  const required = toInt(range?.required_bytes, 'capacity_range.required_bytes');
  const limit = toInt(range?.limit_bytes, 'capacity_range.limit_bytes');
  if (limit > 0 && required > limit) throw outOfRange(`capacity_range: required_bytes ${required} exceeds limit_bytes ${limit}`);
  let size: number;
  if (required > 0) size = roundUp(required, ALLOC_UNIT_BYTES);
  else if (atLeast > 0) size = roundUp(atLeast, ALLOC_UNIT_BYTES);
  else if (limit > 0) size = Math.min(defaultSize, Math.floor(limit / ALLOC_UNIT_BYTES) * ALLOC_UNIT_BYTES);
  else size = defaultSize;
  // A copy needs at least the source's bytes.
  if (atLeast > size) size = roundUp(atLeast, ALLOC_UNIT_BYTES);
  if (size === 0 || (limit > 0 && size > limit)) {
    const why = atLeast > 0 ? ` and at least the source's ${atLeast} bytes` : '';
    throw outOfRange(`capacity_range [${required}, ${limit}] holds no multiple of the 2 MiB famfs allocation unit${why}`);
  }
  return { size, required, limit };
}

export interface CreateRequest {
  name: string;
  range: CapacityRange | null | undefined;
  params: VolumeParams;
  source?: ContentSource;
}

/** Per-key async mutex: operations on one volume or snapshot run one after the other. */
class KeyedLocks {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    // A fixed order (sorted) makes two multi-key holders unable to deadlock.
    const sorted = [...new Set(keys)].sort();
    const releases: (() => void)[] = [];
    try {
      for (const k of sorted) {
        const prev = this.tails.get(k) ?? Promise.resolve();
        let release!: () => void;
        const mine = new Promise<void>((r) => (release = r));
        const tail = prev.then(() => mine);
        this.tails.set(k, tail);
        releases.push(() => {
          release();
          if (this.tails.get(k) === tail) this.tails.delete(k);
        });
        await prev;
      }
      return await fn();
    } finally {
      for (const r of releases.reverse()) r();
    }
  }

  get held(): number {
    return this.tails.size;
  }
}

export interface VolumeStateOptions {
  log?: Logger;
  /** Size of csi/.controller-state when it has to be created. */
  imageSize?: number;
  /** Bytes per copy slice between two event-loop yields. */
  copySliceBytes?: number;
}

export class VolumeState {
  private readonly locks = new KeyedLocks();
  private readonly image: SharedStateImage<ControllerStateDoc>;
  private readonly media: CopyMedia;
  private readonly log: Logger | undefined;
  private doc: ControllerStateDoc = emptyDoc();
  private epoch: number | undefined;
  private lastBodyBytes = 0;

  constructor(
    readonly fs: FamfsFs,
    private readonly opts: VolumeStateOptions = {},
  ) {
    this.media = fs.media as CopyMedia;
    this.log = opts.log;
    this.image = new SharedStateImage(fs, fs.media, validateStateDoc);
    this.refresh();
  }

  // ---------------------------------------------------------------------------------------------
  // Leadership
  // ---------------------------------------------------------------------------------------------

  get isLeader(): boolean {
    return this.epoch !== undefined;
  }

  get fencingEpoch(): number | undefined {
    return this.epoch;
  }

  /** Generation of the metadata image last read or written. */
  get generation(): number {
    return this.image.generation;
  }

  /**
   * Become the writer: bump the fencing epoch (FamfsFs.takeOver), make sure the image file exists,
   * read the last committed generation, drop records whose files are gone, and commit under the
   * new epoch. Called at start (no election) or by the Lease integration when it wins.
   */
  onBecameLeader(hostUuid: string): number {
    // Catch up first: a delete another master wrote makes FamfsFs re-read the superblock, so
    // takeOver compares against the current master UUID, not one cached before the other reign.
    const epoch = this.famfs('take over as famfs master', () => {
      this.fs.catchUp();
      return this.fs.takeOver(hostUuid);
    });
    this.epoch = epoch;
    try {
      this.famfs('create the controller state image', () => this.image.ensure(this.opts.imageSize ?? DEFAULT_STATE_IMAGE_SIZE));
      const loaded = this.image.load();
      if (loaded?.problems.length) this.log?.warn({ problems: loaded.problems }, 'controller state image: a half failed validation (the other one is used)');
      this.doc = loaded?.doc ?? emptyDoc();
      const dropped = this.reconcile();
      this.commit();
      this.log?.info(
        { epoch, generation: this.image.generation, volumes: Object.keys(this.doc.volumes).length, snapshots: Object.keys(this.doc.snapshots).length, dropped },
        'became leader: controller state loaded from shared memory',
      );
    } catch (e) {
      this.epoch = undefined;
      throw e;
    }
    return epoch;
  }

  /** Stop mutating at once (the Lease was lost); the next leader's epoch fences the log anyway. */
  onLostLeadership(reason = 'lost leadership'): void {
    if (this.epoch === undefined) return;
    this.log?.warn({ epoch: this.epoch, reason }, 'no longer the leader: refusing changes');
    this.epoch = undefined;
  }

  /** A follower reads the image anew before answering: the leader may have changed it. */
  private refresh(): void {
    if (this.isLeader) return;
    try {
      this.fs.catchUp();
      this.doc = this.image.load()?.doc ?? emptyDoc();
    } catch {
      this.doc = emptyDoc();
    }
  }

  private requireLeader(): number {
    if (this.epoch === undefined) throw unavailable('not the leader: this controller does not hold the famfs writer role (another replica does, or leadership is being handed over); retry');
    return this.epoch;
  }

  private checkFence = (): void => {
    const held = this.epoch;
    const block = this.fs.extBlock();
    if (held === undefined || block.epoch !== held) {
      throw new FamfsError('EFENCED', `this controller holds fencing epoch ${held ?? 'none'} but the device is at ${block.epoch}: another master took over`);
    }
  };

  /** Runs famfs work and maps its errors; losing the fence ends our leadership on the spot. */
  private famfs<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (e instanceof FamfsError) {
        if (e.code === 'EFENCED' || e.code === 'ENOTMASTER') {
          this.onLostLeadership(e.message);
          throw unavailable(`not the leader: ${what}: ${e.message}`, e);
        }
        throw fromFamfsError(e, what);
      }
      throw e;
    }
  }

  /** Commits the in-memory doc as the next image generation (fenced). */
  private commit(): void {
    const epoch = this.requireLeader();
    const h = this.famfs('commit the controller state image', () => this.image.commit(this.doc, epoch, this.checkFence));
    this.lastBodyBytes = h.length;
  }

  /** Refuses early when one more record might not fit the image (before anything is allocated). */
  private checkImageRoom(): void {
    if (this.lastBodyBytes + 8192 > this.image.capacity) {
      throw resourceExhausted(`the controller state image is full (${this.lastBodyBytes} of ${this.image.capacity} bytes); delete unused volumes or snapshots`);
    }
  }

  /** Drops records whose famfs file is gone (deleted, or a create that crashed before its append). */
  private reconcile(): number {
    this.fs.catchUp();
    let dropped = 0;
    for (const id of Object.keys(this.doc.volumes)) {
      if (this.fileNode(id) === undefined) {
        delete this.doc.volumes[id];
        dropped++;
      }
    }
    for (const id of Object.keys(this.doc.snapshots)) {
      if (this.fileNode(id) === undefined) {
        delete this.doc.snapshots[id];
        dropped++;
      }
    }
    return dropped;
  }

  // ---------------------------------------------------------------------------------------------
  // Reading
  // ---------------------------------------------------------------------------------------------

  /** Runs `fn` with the given volumes/snapshots locked: operations on one object are serialized. */
  exclusive<T>(ids: string | string[], fn: () => Promise<T>): Promise<T> {
    return this.locks.run(Array.isArray(ids) ? ids : [ids], fn);
  }

  /** Objects with an operation in flight (load tests check this drains to zero). */
  get lockedObjects(): number {
    return this.locks.held;
  }

  private fileNode(id: string): FileNode | undefined {
    const node = this.fs.lookup(objectFileRelpath(id));
    return node?.kind === 'file' ? node : undefined;
  }

  private fileOf(id: string): FileNode | undefined {
    if (!isVolumeId(id) && !isSnapshotId(id)) return undefined;
    this.famfs('catch up with the famfs log', () => this.fs.catchUp());
    return this.fileNode(id);
  }

  async describe(volumeId: string): Promise<VolumeInfo | undefined> {
    this.refresh();
    if (!isVolumeId(volumeId)) return undefined;
    const file = this.fileOf(volumeId);
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
    const file = this.fileNode(volumeId);
    return file === undefined ? undefined : this.infoOf(volumeId, file);
  }

  private infoOf(volumeId: string, file: FileNode): VolumeInfo {
    const record = this.doc.volumes[volumeId];
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

  describeSnapshot(snapshotId: string): SnapshotInfo | undefined {
    this.refresh();
    if (!isSnapshotId(snapshotId)) return undefined;
    const file = this.fileOf(snapshotId);
    if (file === undefined) return undefined;
    const record = this.doc.snapshots[snapshotId];
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
      return { abnormal: true, message: `content copy from ${r.contentSource?.kind ?? 'source'} ${r.contentSource?.id ?? ''} did not finish; CreateVolume with the same name completes it` };
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

  // ---------------------------------------------------------------------------------------------
  // Volumes
  // ---------------------------------------------------------------------------------------------

  /** The source file of a content source, or NOT_FOUND. */
  private sourceFile(src: ContentSource): { file: FileNode; size: number } {
    if (src.kind === 'volume') {
      const file = isVolumeId(src.id) ? this.fileOf(src.id) : undefined;
      if (file === undefined) throw notFound(`source volume ${src.id} does not exist`);
      const rec = this.doc.volumes[src.id];
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
      this.requireLeader();
      const existing = await this.describe(volumeId);
      if (existing !== undefined) return this.createAgain(req, existing);

      const source = req.source ? this.sourceFile(req.source) : undefined;
      const { size, required, limit } = sizeForRange(req.range, DEFAULT_VOLUME_SIZE, source?.size ?? 0);
      // Bigger than the whole data area: no amount of deleting makes it fit (OUT_OF_RANGE). Merely
      // no room right now is famfs' ENOSPC, mapped to RESOURCE_EXHAUSTED.
      const dataArea = this.fs.superblock.deviceSize - reservedBytes(this.fs.superblock.logLen);
      if (size > dataArea) throw outOfRange(`${size} bytes can never fit: this famfs holds at most ${dataArea} bytes of files`);
      this.checkImageRoom();
      const record: VolumeRecord = {
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
      // A copy takes a while and can be cut short by a crash: the intent is recorded first, so a
      // retry (or ControllerGetVolume) knows the file's content is not complete yet.
      if (req.source) {
        this.famfs(`create volume ${volumeId}`, () => this.precheckPlacement(objectDirRelpath(volumeId), size, req.params.interleave));
        this.doc.volumes[volumeId] = record;
        this.commit();
      }
      const file = this.famfs(`create volume ${volumeId}`, () => {
        try {
          return this.createVolumeFile(volumeId, size, req);
        } catch (e) {
          // Nothing was allocated: the intent record of a copy must not outlive the attempt.
          if (req.source && this.fileNode(volumeId) === undefined) {
            delete this.doc.volumes[volumeId];
            if (e instanceof FamfsError && e.code !== 'EFENCED' && e.code !== 'ENOTMASTER') this.commit();
          }
          throw e;
        }
      });
      record.fileIndex = file.index;
      if (source) {
        await this.copyInto(source.file, source.size, file, `volume ${volumeId} from ${req.source?.kind} ${req.source?.id}`);
        record.populated = true;
      }
      this.doc.volumes[volumeId] = record;
      this.commit();
      return { volumeId, capacityBytes: file.size, file, record, sharing: req.params.sharing };
    });
  }

  /**
   * Refuses before the first append what the file's append would refuse (no room of that shape,
   * bad interleave, log full), so a refused CreateVolume leaves no directory entry behind.
   */
  private precheckPlacement(dir: string, size: number, interleave?: VolumeParams['interleave']): void {
    if (this.fs.allocator.hasPending) this.fs.allocator.reclaim(this.fs.horizon());
    this.fs.allocator.place(size, interleave);
    const needed = this.fs.lookup(dir) === undefined ? 2 : 1;
    const u = this.fs.usage();
    if (u.logEntriesUsed + needed > u.logEntriesTotal) {
      throw new FamfsError('ELOGFULL', `famfs log full: ${u.logEntriesUsed} of ${u.logEntriesTotal} entries used, ${needed} needed`);
    }
  }

  private createVolumeFile(volumeId: string, size: number, req: CreateRequest): FileNode {
    const dir = objectDirRelpath(volumeId);
    this.precheckPlacement(dir, size, req.params.interleave);
    if (this.fs.lookup(dir) === undefined) this.fs.mkdir(dir, { parents: true, mode: 0o755 });
    const p = req.params;
    return this.fs.creat(objectFileRelpath(volumeId), size, {
      mode: p.mode,
      uid: p.uid,
      gid: p.gid,
      // Memory may have held another tenant's data: zero it before it becomes visible. A copy
      // overwrites every byte itself (source bytes, then a zeroed tail) before it is reported.
      zero: req.source === undefined,
      ...(p.interleave ? { interleave: p.interleave } : {}),
    });
  }

  private async copyInto(src: FileNode, length: number, dst: FileNode, what: string): Promise<void> {
    try {
      await copyFileContents(this.media, src, dst, length, { ...(this.log ? { log: this.log } : {}), what, ...(this.opts.copySliceBytes ? { sliceBytes: this.opts.copySliceBytes } : {}) });
    } catch (e) {
      throw this.famfs(`copy ${what}`, () => {
        throw e;
      });
    }
  }

  /** A repeated CreateVolume: compare, finish an interrupted copy, adopt a record-less file. */
  private async createAgain(req: CreateRequest, existing: VolumeInfo): Promise<VolumeInfo> {
    const { volumeId } = existing;
    const have = existing.capacityBytes;
    const required = toInt(req.range?.required_bytes, 'capacity_range.required_bytes');
    const limit = toInt(req.range?.limit_bytes, 'capacity_range.limit_bytes');
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
      this.commit();
    } else if (rec === undefined) {
      // The file was appended but its record never committed (crash in between): adopt it.
      this.checkImageRoom();
      const adopted: VolumeRecord = {
        volumeId,
        name: req.name,
        requiredBytes: required,
        limitBytes: limit,
        params: want,
        createdAt: new Date().toISOString(),
        published: {},
        ...(req.source ? { contentSource: req.source } : {}),
        populated: req.source === undefined,
        fileIndex: existing.file.index,
      };
      if (req.source) {
        const source = this.sourceFile(req.source);
        await this.copyInto(source.file, source.size, existing.file, `volume ${volumeId} (adopted)`);
        adopted.populated = true;
      }
      this.doc.volumes[volumeId] = adopted;
      this.commit();
      return { ...existing, record: adopted, sharing: req.params.sharing };
    }
    return existing;
  }

  /** DeleteVolume: unknown ids succeed; a volume still published is FAILED_PRECONDITION. */
  async delete(volumeId: string): Promise<void> {
    if (volumeId === '') throw invalidArgument('volume_id is required');
    if (!isVolumeId(volumeId)) return;
    await this.exclusive(volumeId, async () => {
      this.requireLeader();
      await this.removeObject(volumeId, () => {
        const nodes = Object.keys(this.doc.volumes[volumeId]?.published ?? {});
        if (nodes.length > 0) throw failedPrecondition(`volume ${volumeId} is still published to ${nodes.join(', ')}; unpublish it first`);
      });
      if (this.doc.volumes[volumeId] !== undefined) {
        delete this.doc.volumes[volumeId];
        this.commit();
      }
    });
  }

  /** Removes an object's famfs file and directory (the memory becomes pending-free). */
  private async removeObject(id: string, precondition: () => void): Promise<void> {
    const file = this.fileOf(id);
    if (file !== undefined) {
      precondition();
      this.famfs(`delete ${id}`, () => this.fs.rm(objectFileRelpath(id)));
    }
    this.famfs(`delete the directory of ${id}`, () => {
      if (this.fs.lookup(objectDirRelpath(id)) !== undefined) this.fs.rm(objectDirRelpath(id));
    });
  }

  private objectIds(accept: (id: string) => boolean): string[] {
    this.refresh();
    this.famfs('catch up with the famfs log', () => this.fs.catchUp());
    const root = this.fs.lookup(CSI_ROOT_DIR);
    if (root === undefined || root.kind !== 'dir') return [];
    return [...root.children.keys()].filter((id) => accept(id) && this.fileNode(id) !== undefined).sort();
  }

  /** Every volume id, sorted (ListVolumes pages over this). */
  volumeIds(): string[] {
    return this.objectIds(isVolumeId);
  }

  async setPublished(volumeId: string, nodeId: string, rec: PublishRecord | undefined): Promise<void> {
    this.requireLeader();
    const v = this.doc.volumes[volumeId];
    if (v === undefined) {
      if (rec === undefined) return;
      const file = this.fileOf(volumeId);
      if (file === undefined) return;
      // Volume known to famfs but its record was lost: start one from the file.
      this.doc.volumes[volumeId] = {
        volumeId, name: '', requiredBytes: 0, limitBytes: 0, params: this.paramsFromFile(file), createdAt: new Date().toISOString(),
        published: { [nodeId]: rec }, populated: true, fileIndex: file.index,
      };
    } else if (rec === undefined) {
      if (v.published[nodeId] === undefined) return;
      delete v.published[nodeId];
    } else {
      v.published[nodeId] = rec;
    }
    this.commit();
  }

  async clearPublished(volumeId: string): Promise<void> {
    this.requireLeader();
    const v = this.doc.volumes[volumeId];
    if (v === undefined || Object.keys(v.published).length === 0) return;
    v.published = {};
    this.commit();
  }

  /** Space the CO may plan with: free memory now (pending frees excluded) and the largest single volume. */
  capacity(): { available: number; maximumVolume: number; pendingFree: number } {
    this.famfs('catch up with the famfs log', () => this.fs.catchUp());
    // Deleted memory becomes free once every live host replayed past the delete; count only that.
    if (this.fs.allocator.hasPending) this.fs.allocator.reclaim(this.fs.horizon());
    const u = this.fs.usage();
    // A volume takes two log entries (its directory and its file): without them, nothing fits.
    const logRoom = u.logEntriesTotal - u.logEntriesUsed;
    if (logRoom < 2) return { available: 0, maximumVolume: 0, pendingFree: u.pendingFreeBytes };
    return { available: u.freeBytes, maximumVolume: u.largestFreeBytes, pendingFree: u.pendingFreeBytes };
  }

  // ---------------------------------------------------------------------------------------------
  // Snapshots
  // ---------------------------------------------------------------------------------------------

  /** CreateSnapshot: idempotent on name; the same name with another source is ALREADY_EXISTS. */
  async createSnapshot(name: string, sourceVolumeId: string): Promise<SnapshotInfo> {
    const snapshotId = snapshotIdForName(name);
    if (sourceVolumeId === '') throw invalidArgument('source_volume_id is required');
    return this.exclusive([snapshotId, sourceVolumeId], async () => {
      this.requireLeader();
      const existing = this.describeSnapshot(snapshotId);
      if (existing !== undefined) {
        if (existing.record !== undefined && existing.sourceVolumeId !== sourceVolumeId) {
          throw alreadyExists(`snapshot ${JSON.stringify(name)} exists with source volume ${existing.sourceVolumeId}, requested ${sourceVolumeId}`);
        }
        if (existing.readyToUse) return existing;
        // Interrupted copy, or a file whose record never committed: copy (again) from the source.
        const src = isVolumeId(sourceVolumeId) ? this.fileOf(sourceVolumeId) : undefined;
        if (src === undefined) throw notFound(`source volume ${sourceVolumeId} does not exist (snapshot ${snapshotId} was left incomplete)`);
        const rec: SnapshotRecord = existing.record ?? {
          snapshotId, name, sourceVolumeId, createdAtMs: Date.now(), sizeBytes: Math.min(src.size, existing.file.size), readyToUse: false, fileIndex: existing.file.index,
        };
        await this.copyInto(src, rec.sizeBytes, existing.file, `snapshot ${snapshotId} of ${sourceVolumeId} (resumed)`);
        rec.readyToUse = true;
        this.doc.snapshots[snapshotId] = rec;
        this.commit();
        return this.describeSnapshot(snapshotId) as SnapshotInfo;
      }
      const src = isVolumeId(sourceVolumeId) ? this.fileOf(sourceVolumeId) : undefined;
      if (src === undefined) throw notFound(`source volume ${sourceVolumeId} does not exist`);
      const srcRec = this.doc.volumes[sourceVolumeId];
      if (srcRec !== undefined && !srcRec.populated) throw failedPrecondition(`source volume ${sourceVolumeId} is still being populated`);
      this.checkImageRoom();
      this.famfs(`create snapshot ${snapshotId}`, () => this.precheckPlacement(objectDirRelpath(snapshotId), src.size));
      const rec: SnapshotRecord = { snapshotId, name, sourceVolumeId, createdAtMs: Date.now(), sizeBytes: src.size, readyToUse: false };
      this.doc.snapshots[snapshotId] = rec;
      this.commit();
      const file = this.famfs(`create snapshot ${snapshotId}`, () => {
        const dir = objectDirRelpath(snapshotId);
        this.precheckPlacement(dir, src.size);
        if (this.fs.lookup(dir) === undefined) this.fs.mkdir(dir, { parents: true, mode: 0o755 });
        // Readable by the owner of the source only; snapshots are restored through CreateVolume.
        return this.fs.creat(objectFileRelpath(snapshotId), src.size, { mode: 0o400, uid: src.uid, gid: src.gid });
      });
      rec.fileIndex = file.index;
      await this.copyInto(src, src.size, file, `snapshot ${snapshotId} of ${sourceVolumeId}`);
      rec.readyToUse = true;
      this.commit();
      return this.describeSnapshot(snapshotId) as SnapshotInfo;
    });
  }

  /** DeleteSnapshot: unknown ids succeed. */
  async deleteSnapshot(snapshotId: string): Promise<void> {
    if (snapshotId === '') throw invalidArgument('snapshot_id is required');
    if (!isSnapshotId(snapshotId)) return;
    await this.exclusive(snapshotId, async () => {
      this.requireLeader();
      await this.removeObject(snapshotId, () => undefined);
      if (this.doc.snapshots[snapshotId] !== undefined) {
        delete this.doc.snapshots[snapshotId];
        this.commit();
      }
    });
  }

  snapshotIds(): string[] {
    return this.objectIds(isSnapshotId);
  }
}

/** A list page: the token is the last id of the previous page, so it stays valid while objects come and go. */
export function paginate(ids: string[], startingToken: string, maxEntries: number, isOurId: (id: string) => boolean): { page: string[]; nextToken: string } {
  if (maxEntries < 0) throw invalidArgument(`max_entries must not be negative (got ${maxEntries})`);
  let start = 0;
  if (startingToken !== '') {
    if (!isOurId(startingToken)) throw aborted(`starting_token ${JSON.stringify(startingToken)} was not issued by this driver`);
    start = ids.findIndex((id) => id > startingToken);
    if (start < 0) start = ids.length;
  }
  const end = maxEntries > 0 ? Math.min(ids.length, start + maxEntries) : ids.length;
  return { page: ids.slice(start, end), nextToken: end < ids.length ? (ids[end - 1] ?? '') : '' };
}

export { sameParams, CsiError };
