// The controller's store: the records of volumes and snapshots, kept as an image in the shared
// memory (store-image.ts), and the fencing epoch that makes this controller the only writer. It
// stores; what volumes and snapshots are made of is volumes.ts. It speaks CsiErrors only (famfs
// errors are mapped here, through errors.ts).
//
// Where things live (all of it in the shared memory, nothing on a controller host's disk):
//   csi/vol-<hash>/data     a volume: a famfs file with its size, mode, uid, gid and fmap.
//   csi/snap-<hash>/data    a snapshot: a famfs file holding a memory-to-memory copy.
//   csi/.controller-state   the metadata image (store-image.ts): per volume the CO's name, the
//                           requested range, the canonical parameters, the content source, whether
//                           its content copy finished, and the nodes it is published to; per
//                           snapshot its source, creation time and readiness.
// Existence in famfs is the truth: a volume exists iff its file does. A file without a record (a
// crash between the famfs append and the image commit) is described from the file alone and
// adopted by the next CreateVolume with its name; a record without a file is dropped on takeover.
//
// The master role: only the famfs master mutates. takeMasterRole() bumps the fencing epoch in the shared
// memory (FamfsFs.takeOver), so a paused former master's next append or image commit fails with
// EFENCED, which every RPC reports as UNAVAILABLE "not the famfs master".
import type { Logger } from 'pino';
import { FamfsError } from '../famfs/errors';
import type { FamfsFs } from '../famfs/fs';
import { isQuarantine } from '../famfs/repair';
import type { FileNode } from '../famfs/tree';
import { fromFamfsError, unavailable } from './errors';
import { objectDirRelpath, objectFileRelpath } from './names';
import { DEFAULT_STATE_IMAGE_SIZE, SharedStateImage, type ImageDelta } from './store-image';

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
  /**
   * A zero-copy read-only share: the volume whose file this one shows (it has no file of its own).
   * The shares of a volume are the records naming it here; while there are any, the source is
   * frozen (no writer may attach) and its memory stays allocated.
   */
  shareOf?: string;
  /** DeleteVolume came while shares of this volume existed: hidden, freed with its last share. */
  deletePending?: boolean;
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

/**
 * A static volume (static-path.ts) while it is published: the PV's volumeHandle, its famfs path, and
 * the nodes it is published to, so serial sharing holds across controller restarts and failover.
 * Dropped when the last node unpublishes: the driver never made the path and keeps nothing else.
 */
export interface StaticVolumeRecord {
  volumeId: string;
  path: string;
  published: Record<string, PublishRecord>;
}

export interface ControllerStateDoc {
  version: 2;
  volumes: Record<string, VolumeRecord>;
  snapshots: Record<string, SnapshotRecord>;
  /** Added after version 2 shipped; absent in older images (read as empty). */
  statics?: Record<string, StaticVolumeRecord>;
}

/** What an operator does when the records cannot be read (docs/operations: controller state). */
export const REBUILD_HINT =
  "rebuild the records from the famfs log and the node plugins' state with `famfs csi-rebuild-state --node-state NODE=STATE_DIR ... DEVICE` on the master host (one --node-state per node, its plugin's --state-dir), then restart the controller";

export function validateStateDoc(d: unknown): ControllerStateDoc {
  const doc = d as ControllerStateDoc;
  if (doc?.version !== 2 || typeof doc.volumes !== 'object' || doc.volumes === null || typeof doc.snapshots !== 'object' || doc.snapshots === null) {
    throw new Error('controller state image: unsupported content');
  }
  return doc;
}

const emptyDoc = (): ControllerStateDoc => ({ version: 2, volumes: {}, snapshots: {} });

/** The famfs file of a volume or snapshot id, as this host last replayed the log. */
export function objectFile(fs: FamfsFs, id: string): FileNode | undefined {
  const node = fs.lookup(objectFileRelpath(id));
  return node?.kind === 'file' ? node : undefined;
}

export interface ControllerStoreOptions {
  log?: Logger;
  /** Size of csi/.controller-state when it has to be created. */
  imageSize?: number;
}

export class ControllerStore {
  private readonly image: SharedStateImage<ControllerStateDoc>;
  private readonly log: Logger | undefined;
  private docValue: ControllerStateDoc = emptyDoc();
  /**
   * Shares by the volume they show (and each share's origin), built on first use from the records
   * and kept in step by putVolume/removeVolume: DeleteVolume asks on every call, and a scan of
   * every record would make a call's cost grow with the number of volumes.
   */
  private shareIndex: { byOrigin: Map<string, Set<string>>; originOf: Map<string, string> } | undefined;

  private get doc(): ControllerStateDoc {
    return this.docValue;
  }

  private set doc(d: ControllerStateDoc) {
    this.docValue = d;
    this.shareIndex = undefined;
  }

  private shares(): { byOrigin: Map<string, Set<string>>; originOf: Map<string, string> } {
    if (this.shareIndex !== undefined) return this.shareIndex;
    const idx = { byOrigin: new Map<string, Set<string>>(), originOf: new Map<string, string>() };
    for (const v of Object.values(this.doc.volumes)) if (v.shareOf !== undefined) this.indexShare(idx, v.volumeId, v.shareOf);
    this.shareIndex = idx;
    return idx;
  }

  private indexShare(idx: { byOrigin: Map<string, Set<string>>; originOf: Map<string, string> }, id: string, origin: string | undefined): void {
    const was = idx.originOf.get(id);
    if (was === origin) return;
    if (was !== undefined) {
      const set = idx.byOrigin.get(was);
      set?.delete(id);
      if (set?.size === 0) idx.byOrigin.delete(was);
      idx.originOf.delete(id);
    }
    if (origin === undefined) return;
    idx.originOf.set(id, origin);
    let set = idx.byOrigin.get(origin);
    if (set === undefined) idx.byOrigin.set(origin, (set = new Set()));
    set.add(id);
  }
  private epoch: number | undefined;
  /** Changes made in memory since the last commit, in order: each becomes one change record. */
  private pending: ImageDelta[] = [];
  /**
   * Why the records could not be read when this controller became master (both halves damaged or
   * of a revision it does not know). While set, every change is refused: starting from an empty
   * document would drop the publish records, and with them the serial-writer guard.
   */
  private unreadable: string | undefined;

  constructor(
    readonly fs: FamfsFs,
    private readonly opts: ControllerStoreOptions = {},
  ) {
    this.log = opts.log;
    this.image = new SharedStateImage(fs, fs.media, validateStateDoc);
    this.refresh();
  }

  // ---------------------------------------------------------------------------------------------
  // The master role
  // ---------------------------------------------------------------------------------------------

  get isMaster(): boolean {
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
  takeMasterRole(hostUuid: string): number {
    // Catch up first: a delete another master wrote makes FamfsFs re-read the superblock, so
    // takeOver compares against the current master UUID, not one cached before the other reign.
    const epoch = this.runFamfs('take over as famfs master', () => {
      this.fs.catchUp();
      return this.fs.takeOver(hostUuid);
    });
    this.epoch = epoch;
    try {
      this.runFamfs('create the controller state image', () => this.image.ensure(this.opts.imageSize ?? DEFAULT_STATE_IMAGE_SIZE));
      const read = this.image.read();
      this.pending = [];
      if (read.unreadable !== undefined) {
        this.unreadable = read.unreadable;
        this.doc = emptyDoc();
        this.log?.error({ epoch, problems: read.problems }, `controller state image unreadable: refusing changes until it is rebuilt (${REBUILD_HINT})`);
        return epoch;
      }
      this.unreadable = undefined;
      const loaded = read.loaded;
      if (loaded?.problems.length)
        this.log?.warn({ problems: loaded.problems }, 'controller state image: a half or a change record failed validation (the newest valid state is used)');
      this.doc = loaded?.doc ?? emptyDoc();
      const dropped = this.reconcile();
      this.checkpoint();
      this.log?.info(
        {
          epoch,
          generation: this.image.generation,
          volumes: Object.keys(this.doc.volumes).length,
          snapshots: Object.keys(this.doc.snapshots).length,
          dropped,
          changeRecords: loaded?.deltas ?? 0,
        },
        'became famfs master: controller state loaded from shared memory',
      );
    } catch (e) {
      this.epoch = undefined;
      throw e;
    }
    return epoch;
  }

  /** Stop mutating at once (the Lease was lost); the next master's epoch fences the log anyway. */
  dropMasterRole(reason = 'lost the master role'): void {
    if (this.epoch === undefined) return;
    this.log?.warn({ epoch: this.epoch, reason }, 'no longer the famfs master: refusing changes');
    this.epoch = undefined;
  }

  /** A follower reads the image anew before answering: the master may have changed it. */
  refresh(): void {
    if (this.isMaster) return;
    try {
      this.fs.catchUp();
      const read = this.image.read();
      this.unreadable = read.unreadable;
      this.doc = read.loaded?.doc ?? emptyDoc();
    } catch {
      this.doc = emptyDoc();
    }
  }

  /**
   * UNAVAILABLE unless this controller holds the writer role and can read its records; returns the
   * epoch it holds.
   */
  requireMaster(): number {
    if (this.epoch === undefined)
      throw unavailable(
        'not the famfs master: this controller does not hold the famfs writer role (another replica does, or the role is being handed over); retry',
      );
    if (this.unreadable !== undefined) {
      throw unavailable(`controller state image unreadable (${this.unreadable}): changes are refused so that no publish record is lost; ${REBUILD_HINT}`);
    }
    return this.epoch;
  }

  /**
   * UNAVAILABLE while the records could not be read: an answer built without them (ListVolumes
   * without its publish records, a volume without its CO name) would drop acknowledged state
   * without a word.
   */
  requireReadable(): void {
    if (this.unreadable !== undefined) {
      throw unavailable(`controller state image unreadable (${this.unreadable}): the controller's records are not shown without it; ${REBUILD_HINT}`);
    }
  }

  /** Why changes are refused (the image could not be read at takeover), or undefined. */
  get unreadableReason(): string | undefined {
    return this.unreadable;
  }

  /**
   * Runs famfs work and maps its errors to CSI statuses (`what` says which operation failed);
   * losing the fence ends our master role on the spot.
   */
  private rolledForwardSeen = 0;
  /** Entries found valid past next_index and committed before the first append (a lowered counter, or an interrupted append). */
  private noteRolledForward(): void {
    const all = this.fs.rolledForward;
    for (; this.rolledForwardSeen < all.length; this.rolledForwardSeen++) {
      const r = all[this.rolledForwardSeen];
      this.log?.warn(
        { from: r.from, to: r.to },
        `famfs log: committed entries ${r.from}..${r.to - 1} found valid past next_index (an interrupted append or a lowered counter; hosts may serve them)`,
      );
    }
  }

  runFamfs<T>(what: string, fn: () => T): T {
    try {
      const r = fn();
      this.noteRolledForward();
      return r;
    } catch (e) {
      if (e instanceof FamfsError) {
        if (e.code === 'EFENCED' || e.code === 'ENOTMASTER') {
          this.dropMasterRole(e.message);
          throw unavailable(`not the famfs master: ${what}: ${e.message}`, e);
        }
        throw fromFamfsError(e, what);
      }
      throw e;
    }
  }

  /**
   * Removes an object's famfs file and directory (the memory becomes pending-free). `precondition` runs
   * once the file is known to exist, before anything is appended (it throws to refuse).
   */
  removeObjectFiles(id: string, precondition: () => void = () => undefined): void {
    // A master killed mid-delete may have committed the delete entry without advancing next_index:
    // catch-up does not show it, but rm() rolls it forward first and then finds nothing to delete.
    // That delete is done, so ENOENT here means success (deletes are idempotent).
    // rmPresent skips what is gone, the file's delete included. File and directory go in one write.
    const dir = objectDirRelpath(id);
    const hasFile = objectFile(this.fs, id) !== undefined;
    if (hasFile) precondition();
    if (!hasFile && this.fs.lookup(dir) === undefined) return;
    this.runFamfs(`delete ${id}`, () => this.fs.rmPresent(hasFile ? [objectFileRelpath(id), dir] : [dir]));
  }

  // ---------------------------------------------------------------------------------------------
  // Records
  // ---------------------------------------------------------------------------------------------

  volume(volumeId: string): VolumeRecord | undefined {
    return this.doc.volumes[volumeId];
  }

  snapshot(snapshotId: string): SnapshotRecord | undefined {
    return this.doc.snapshots[snapshotId];
  }

  /** Ids of the shares of a volume (records whose shareOf names it). */
  sharesOf(volumeId: string): string[] {
    return [...(this.shares().byOrigin.get(volumeId) ?? [])];
  }

  /** Volumes known only by their record (shares have no famfs file of their own). */
  shareIds(): string[] {
    return [...this.shares().originOf.keys()];
  }

  /** Sets a volume's record in memory; commit() makes it durable. */
  putVolume(rec: VolumeRecord): void {
    this.doc.volumes[rec.volumeId] = rec;
    if (this.shareIndex !== undefined) this.indexShare(this.shareIndex, rec.volumeId, rec.shareOf);
    this.pending.push({ path: ['volumes', rec.volumeId], value: rec });
  }

  /** Drops a volume's record in memory; true when there was one (commit() makes it durable). */
  removeVolume(volumeId: string): boolean {
    if (this.doc.volumes[volumeId] === undefined) return false;
    delete this.doc.volumes[volumeId];
    if (this.shareIndex !== undefined) this.indexShare(this.shareIndex, volumeId, undefined);
    this.pending.push({ path: ['volumes', volumeId] });
    return true;
  }

  putSnapshot(rec: SnapshotRecord): void {
    this.doc.snapshots[rec.snapshotId] = rec;
    this.pending.push({ path: ['snapshots', rec.snapshotId], value: rec });
  }

  removeSnapshot(snapshotId: string): boolean {
    if (this.doc.snapshots[snapshotId] === undefined) return false;
    delete this.doc.snapshots[snapshotId];
    this.pending.push({ path: ['snapshots', snapshotId] });
    return true;
  }

  staticVolume(volumeId: string): StaticVolumeRecord | undefined {
    return this.doc.statics?.[volumeId];
  }

  /** Sets a static volume's record, or drops it when no node has it published (commit() makes it durable). */
  putStaticVolume(rec: StaticVolumeRecord): void {
    const statics = (this.doc.statics ??= {});
    if (Object.keys(rec.published).length === 0) {
      if (statics[rec.volumeId] === undefined) return;
      delete statics[rec.volumeId];
      this.pending.push({ path: ['statics', rec.volumeId] });
    } else {
      statics[rec.volumeId] = rec;
      this.pending.push({ path: ['statics', rec.volumeId], value: rec });
    }
  }

  /**
   * Makes the changes since the last commit durable: one change record each (fenced), or a
   * checkpoint of every record when they do not fit after the newest one.
   */
  commit(): void {
    const epoch = this.requireMaster();
    const changes = this.pending;
    this.pending = [];
    const fence = (): void => this.fs.checkFenceEpoch(this.epoch);
    const fencedWrite = (offset: number, data: Buffer): void => this.fs.writeFlushFenced(offset, data, epoch);
    this.runFamfs('commit the controller state image', () => {
      // A record is serialised when it is written, so a put holds the record as it is now.
      for (let i = 0; i < changes.length; i++) {
        const c = changes[i];
        const section = (this.doc as unknown as Record<string, Record<string, unknown> | undefined>)[c.path[0]];
        const value = c.value === undefined ? undefined : section?.[c.path[1]];
        if (!this.image.append(value === undefined ? { path: c.path } : { path: c.path, value }, epoch, fence, fencedWrite)) {
          this.image.commit(this.doc, epoch, fence);
          return;
        }
      }
    });
  }

  /** Commits every record as a checkpoint of the next generation (fenced). */
  private checkpoint(): void {
    const epoch = this.requireMaster();
    this.pending = [];
    this.runFamfs('commit the controller state image', () => this.image.commit(this.doc, epoch, () => this.fs.checkFenceEpoch(this.epoch)));
  }

  /**
   * Replaces every record by `doc` in one checkpoint, whatever the image held (famfs-csi's
   * rebuild: the records recovered from the famfs log and the node plugins' state).
   */
  replaceAll(doc: ControllerStateDoc): void {
    if (this.epoch === undefined) this.requireMaster();
    this.unreadable = undefined;
    this.doc = doc;
    this.checkpoint();
  }

  /** Drops records whose famfs file is gone (deleted, or a create that crashed before its append). */
  private reconcile(): number {
    this.fs.catchUp();
    let dropped = 0;
    for (const [id, rec] of Object.entries(this.doc.volumes)) {
      // A share lives as long as the file it shows (its source's memory may have been removed behind the
      // driver's back: the share is then swept, and the CO sees NOT_FOUND for it).
      if (objectFile(this.fs, rec.shareOf ?? id) !== undefined) continue;
      if (rec.shareOf !== undefined) this.log?.warn({ volume: id, shareOf: rec.shareOf }, "read-only share whose source's file is gone: record dropped");
      // famfs repair quarantined its entry (lost+found.N keeps its memory): keep the record, so the
      // volume is still found by its log index and reported, not silently forgotten.
      const q = rec.shareOf === undefined && rec.fileIndex !== undefined ? this.fs.tree.byIndex.get(rec.fileIndex) : undefined;
      if (q !== undefined && isQuarantine(q)) {
        this.log?.error(
          { volume: id, name: rec.name, logIndex: rec.fileIndex, quarantine: q.relpath },
          'volume whose famfs entry repair quarantined: record kept; restore the entry, or release the quarantine once no pod uses it',
        );
        continue;
      }
      delete this.doc.volumes[id];
      this.shareIndex = undefined;
      dropped++;
    }
    for (const id of Object.keys(this.doc.snapshots)) {
      if (objectFile(this.fs, id) === undefined) {
        delete this.doc.snapshots[id];
        dropped++;
      }
    }
    // A volume the CO deleted while it was shared stays (hidden) until its last share is deleted, which
    // frees it. If no share is left (their records were lost, or a share whose source vanished was dropped
    // above), nobody will ever delete it again: free its memory now, file first, so a crash before the
    // checkpoint leaves a record without a file, which the next takeover drops.
    for (const [id, rec] of Object.entries(this.doc.volumes)) {
      if (rec.deletePending !== true || rec.shareOf !== undefined || this.sharesOf(id).length > 0) continue;
      this.removeObjectFiles(id);
      delete this.doc.volumes[id];
      dropped++;
      this.log?.warn({ volume: id, name: rec.name }, 'volume deleted while shared has no share left: its memory is freed at takeover');
    }
    return dropped;
  }
}
