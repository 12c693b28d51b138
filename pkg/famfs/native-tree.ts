// The log tree in native memory (native/src/famfs_tree.cc): replay's rules applied to raw log
// slots without a JavaScript object per entry. fsck asks it what the tree says (counts, problems,
// the space it uses); tree.ts keeps a replayed tree in it and makes node objects from it when they
// are looked up. The rules are tree.ts's and allocator.ts's; problems come back as codes and
// operands and are worded here by tree-rules.ts's problemText and fmapProblem, so both ways print
// the same text. test/famfs-fsck-native.test.ts checks fsck both ways over damaged logs, and
// test/famfs-tree-native.test.ts the tree itself.
import { configuredLogDecoder } from './decode-batch';
import {
  ALLOC_UNIT,
  DAXDEV_PATH_FIELD,
  EXT,
  EXT_AREA_SIZE,
  EXT_BLOCK_OFFSET,
  EXT_LIVE,
  EXT_MAGIC,
  EXT_REVISION,
  HOST_NAME_FIELD,
  HOST_SLOT_SIZE,
  HOST_SLOTS_OFFSET,
  HS,
  type HostSlot,
  FAMFS_CSI_EXT2_VERSION,
  FAMFS_CSI_EXT_VERSION,
  FAMFS_VERSION,
  LH,
  LOG_ENTRY_SIZE,
  LOG_HEADER_SIZE,
  LOG_MAGIC,
  LOG_OFFSET,
  MIN_LOG_LEN,
  OMF_MAJOR,
  SB,
  SMALL_ALLOC_UNIT,
  SUPERBLOCK_MAGIC,
  SUPERBLOCK_OFFSET,
  type EntryBody,
  type Extent,
  type Fmap,
  type LogEntry,
} from './layout';
import { MAX_HOST_SLOTS } from './hosts';
import { readFresh, type Media } from './media';
import { fmapCapacity, fmapExtents } from './fmap';
import type { SlotSink } from './replay';
import { fmapProblem, problemText, type TreeLimits } from './tree-rules';
import type { TreeProblem } from './tree';

type Handle = object;

interface NativeProblem {
  index: number;
  code: number;
  relpath: string;
  a: number;
  targetType: number;
  s: string;
  sKind: number;
  size: number;
  fmapKind: number;
  chunk: number;
  extents: Float64Array;
}

interface NativeTreeAddon {
  logTreeNew(deviceSize: number, reservedBytes: number, allocUnit: number, generation: number, expectedEntries?: number): Handle;
  logTreeApplySlots(t: Handle, buf: Uint8Array, count: number, firstSlot: number, seqMin: number, seqMax: number, deletesAllowed: boolean): number;
  logTreeApplyEntry(t: Handle, kind: number, index: number, relpath: string, fields: Float64Array, status?: Float64Array): number;
  logTreeCounts(t: Handle): Float64Array;
  logTreeSetNextIndex(t: Handle, nextIndex: number): void;
  logTreeProblems(t: Handle): NativeProblem[];
  logTreeRootFiles(t: Handle, prefix: string): { index: number; relpath: string; bytes: number }[];
  logTreeSpace(t: Handle, horizon: number, totalUnits: number, metaUnits: number, region2Start: number, region2Units: number): Float64Array;
  logTreeFreeRuns(t: Handle, horizon: number, totalUnits: number, metaUnits: number, region2Start: number, region2Units: number): Float64Array;
  logTreeApplyDevice(
    t: Handle,
    device: object,
    offset: number,
    count: number,
    firstSlot: number,
    seqMin: number,
    seqMax: number,
    deletesAllowed: boolean,
  ): number;
  logTreeFind(t: Handle, relpath: string): number;
  logTreeFindIndex(t: Handle, index: number): number;
  logTreeNodes(t: Handle, ids: Int32Array): NativeNodes;
  logTreeChildren(t: Handle, id: number): Int32Array;
  logTreeLive(t: Handle): Int32Array;
  logTreeLists(t: Handle): NativeLists;
  fsckHead(sb: Uint8Array, lh: Uint8Array, mediaSize: number, layout: Float64Array, out: Float64Array): string | undefined;
  fsckHosts(area: Uint8Array, slots: Uint8Array, layout: Float64Array, out: Float64Array): string | undefined;
}

/** Node data, NODE_ROW numbers per node (see famfs_tree.cc Nodes), extents node after node, relpaths joined by NUL. */
export interface NativeNodes {
  rows: Float64Array;
  exts: Float64Array;
  paths: string;
}

/** Per node in NativeNodes.rows: index, kind (0 file, 1 dir), live, mode, uid, gid, flags, size, fmap kind, chunk, extent count, parent id. */
export const NODE_ROW = 12;

export interface NativeLists {
  slotIndexes: Float64Array;
  /** (delete index, target index) pairs. */
  deletes: Float64Array;
  /** (delete index, id of the deleted node) pairs. */
  released: Float64Array;
  /** (log index, extent count) pairs; their extents in orphanedExts. */
  orphaned: Float64Array;
  orphanedExts: Float64Array;
}

let addon: NativeTreeAddon | null | undefined;

function resolve(): NativeTreeAddon | null {
  const a = configuredLogDecoder<Partial<NativeTreeAddon>>();
  if (a === null || typeof a.logTreeNew !== 'function' || typeof a.logTreeLists !== 'function' || typeof a.fsckHead !== 'function') return null;
  return a as NativeTreeAddon;
}

/** True when this build has the native log tree. */
export function nativeTreeAvailable(): boolean {
  addon ??= resolve();
  return addon !== null;
}

const lo = (v: bigint): number => Number(v & 0xffffffffn);
const hi = (v: bigint): number => Number(v >> 32n);
/** layout.ts's superblock and log header layout for fsckHead, in native/src/famfs_fsck.cc's order (enum Head). */
const HEAD_LAYOUT = new Float64Array([
  SB.SIZE,
  SB.magic,
  SB.version,
  SB.logOffset,
  SB.logLen,
  SB.allocUnit,
  SB.omfMajor,
  SB.uuid,
  SB.systemUuid,
  SB.crc,
  SB.daxdevSize,
  SB.daxdevPath,
  DAXDEV_PATH_FIELD,
  lo(SUPERBLOCK_MAGIC),
  hi(SUPERBLOCK_MAGIC),
  lo(FAMFS_VERSION),
  hi(FAMFS_VERSION),
  lo(FAMFS_CSI_EXT_VERSION),
  hi(FAMFS_CSI_EXT_VERSION),
  lo(FAMFS_CSI_EXT2_VERSION),
  hi(FAMFS_CSI_EXT2_VERSION),
  LOG_OFFSET,
  MIN_LOG_LEN,
  ALLOC_UNIT,
  SMALL_ALLOC_UNIT,
  OMF_MAJOR,
  LH.SIZE,
  LH.magic,
  LH.len,
  LH.lastIndex,
  LH.crc,
  LH.nextSeqnum,
  LH.nextIndex,
  lo(LOG_MAGIC),
  hi(LOG_MAGIC),
  LOG_HEADER_SIZE,
  LOG_ENTRY_SIZE,
]);

/** What a valid superblock and generation-0 log header say (fsck's report fields and what it reads on with). */
export interface FsckHead {
  uuid: string;
  systemUuid: string;
  devicePath: string;
  version: string;
  extended: boolean;
  deviceSize: number;
  logLen: number;
  nextIndex: number;
  nextSeqnum: number;
}

/**
 * The superblock and famfs' own log header (generation 0), read fresh and checked in one native
 * call (native/src/famfs_fsck.cc): what they say when validateSuperblock and validateLogHeader
 * would find nothing wrong, undefined otherwise (and for a compacted log, or a build without the
 * addon), when fsck runs those checks in JavaScript to word the problems.
 */
export function fsckHead(media: Media): FsckHead | undefined {
  addon ??= resolve();
  if (addon === null || media.size < LOG_OFFSET + LH.SIZE) return undefined;
  const sb = Buffer.allocUnsafe(SB.SIZE);
  const lh = Buffer.allocUnsafe(LH.SIZE);
  readFresh(media, SUPERBLOCK_OFFSET, sb);
  readFresh(media, LOG_OFFSET, lh);
  const out = new Float64Array(5);
  const s = addon.fsckHead(sb, lh, media.size, HEAD_LAYOUT, out);
  if (s === undefined) return undefined;
  const [uuid, systemUuid, devicePath, version] = s.split('\0');
  return { uuid, systemUuid, devicePath, version, extended: out[0] === 1, deviceSize: out[1], logLen: out[2], nextIndex: out[3], nextSeqnum: out[4] };
}

/** layout.ts's extension block and host slot layout for fsckHosts, in famfs_fsck.cc's order (enum Hosts). */
const HOSTS_LAYOUT = new Float64Array([
  EXT.magic,
  EXT.revision,
  EXT.slotCount,
  EXT.epoch,
  EXT.fsUuid,
  EXT.crc,
  EXT.SIZE,
  EXT_LIVE.hostLiveMs,
  EXT_LIVE.crc,
  lo(EXT_MAGIC),
  hi(EXT_MAGIC),
  EXT_REVISION,
  HS.hostUuid,
  HS.ackedIndex,
  HS.beat,
  HS.name,
  HS.crc,
  HOST_SLOT_SIZE,
  HOST_NAME_FIELD,
  MAX_HOST_SLOTS,
]);

/**
 * The fencing epoch and host slots of file system `fsUuid`, read fresh and checked in one native
 * call: what readExtBlock and readHostSlots return when the block is this file system's (revision
 * 2 and up) and no slot in use is damaged; undefined otherwise (fsck reads them in JavaScript).
 */
export function fsckHosts(media: Media, fsUuid: string): { epoch: number; hosts: HostSlot[] } | undefined {
  addon ??= resolve();
  if (addon === null || media.size < HOST_SLOTS_OFFSET + MAX_HOST_SLOTS * HOST_SLOT_SIZE) return undefined;
  const area = Buffer.allocUnsafe(EXT_AREA_SIZE);
  readFresh(media, EXT_BLOCK_OFFSET, area);
  // The slots the block counts, as readHostSlots reads them (fsckHosts checks the block itself).
  const count = area.readUInt32LE(EXT.slotCount);
  if (count > MAX_HOST_SLOTS) return undefined;
  const slots = Buffer.allocUnsafe(count * HOST_SLOT_SIZE);
  if (count > 0) readFresh(media, HOST_SLOTS_OFFSET, slots);
  const out = new Float64Array(2 + 3 * count);
  const s = addon.fsckHosts(area, slots, HOSTS_LAYOUT, out);
  if (s === undefined) return undefined;
  const str = s.split('\0');
  if (str[0] !== fsUuid) return undefined;
  const hosts: HostSlot[] = [];
  for (let k = 0; k < out[1]; k++)
    hosts.push({ slot: out[2 + 3 * k], hostUuid: str[1 + 2 * k], ackedIndex: out[3 + 3 * k], beat: out[4 + 3 * k], name: str[2 + 2 * k] });
  return { epoch: out[0], hosts };
}

/** Units of the space map, as Allocator.rebuild counts them. */
export interface NativeSpace {
  freeUnits: number;
  largestFreeRun: number;
  pendingUnits: number;
  collisions: number;
}

/** The map of `n` extents at x[from..]: what decodeEntryAt makes of the entry's fmap. */
export function fmapOf(kind: number, chunk: number, x: Float64Array, from = 0, n = (x.length - from) / 3): Fmap {
  const list: Extent[] = new Array<Extent>(n);
  for (let i = 0, o = from; i < n; i++, o += 3) list[i] = { devindex: x[o], offset: x[o + 1], len: x[o + 2] };
  return kind === 0 ? { kind: 'simple', extents: list } : { kind: 'interleave', nstrips: n, chunkSize: chunk, strips: list };
}

export class NativeLogTree {
  private readonly a: NativeTreeAddon;
  private readonly t: Handle;

  /**
   * Throws when the build has no native tree (check nativeTreeAvailable first). `expectedEntries`:
   * how many entries are about to be applied (sizes the tree once).
   */
  constructor(
    readonly limits: TreeLimits,
    generation: number,
    expectedEntries = 0,
  ) {
    addon ??= resolve();
    if (addon === null) throw new Error('the native log tree is not in this build');
    this.a = addon;
    this.t = addon.logTreeNew(limits.deviceSize, limits.reservedBytes, ALLOC_UNIT, generation, expectedEntries);
  }

  /**
   * A LogReader.walk sink that applies every slot it validates to this tree (`device`: read
   * straight from the device's mapping when the medium is the addon's device).
   */
  sink(): SlotSink {
    return {
      batch: (raw, count, firstSlot, deletesAllowed, window) => {
        const n = this.a.logTreeApplySlots(this.t, raw, count, firstSlot, window ? window.min : -1, window ? window.max : 0, deletesAllowed);
        if (window && n > 0) window.min = this.nextIndex;
        return n;
      },
      device: (device, offset, count, firstSlot, deletesAllowed, window) => {
        const n = this.a.logTreeApplyDevice(this.t, device, offset, count, firstSlot, window ? window.min : -1, window ? window.max : 0, deletesAllowed);
        if (window && n > 0) window.min = this.nextIndex;
        return n;
      },
      one: (e) => {
        this.apply(e);
      },
    };
  }

  /** The fields of one entry for logTreeApplyEntry, reused (a master applies each of its appends). */
  private readonly fields = new Float64Array(8 + 16 * 3);

  /**
   * tree.apply for one decoded entry. Returns what it did: the id of the node it added, minus the
   * id of the node it removed, or 0 (skipped, or no tree effect). `status` (10 numbers) gets that,
   * the node's parent id, and the counts: [change, parent, slot, nextIndex, files, dirs, problems,
   * orphaned, released, deletes].
   */
  apply(e: LogEntry, status?: Float64Array): number {
    const b: EntryBody = e.body;
    let f = this.fields;
    switch (b.type) {
      case 'file': {
        const xs = fmapExtents(b.fmap);
        if (8 + xs.length * 3 > f.length) f = new Float64Array(8 + xs.length * 3);
        f[0] = b.size;
        f[1] = b.flags;
        f[2] = b.uid;
        f[3] = b.gid;
        f[4] = b.mode;
        f[5] = b.fmap.kind === 'simple' ? 0 : 1;
        f[6] = b.fmap.kind === 'simple' ? 0 : b.fmap.chunkSize;
        f[7] = xs.length;
        for (let i = 0; i < xs.length; i++) {
          f[8 + i * 3] = xs[i].devindex;
          f[9 + i * 3] = xs[i].offset;
          f[10 + i * 3] = xs[i].len;
        }
        return this.a.logTreeApplyEntry(this.t, 0, e.index, b.relpath, f, status);
      }
      case 'mkdir':
        f[0] = b.uid;
        f[1] = b.gid;
        f[2] = b.mode;
        return this.a.logTreeApplyEntry(this.t, 1, e.index, b.relpath, f, status);
      case 'delete':
        f[0] = b.targetIndex;
        f[1] = b.targetType === 'file' ? 0 : 1;
        return this.a.logTreeApplyEntry(this.t, 2, e.index, b.relpath, f, status);
      case 'add_daxdev':
        // OMF 2.2 phase 1: no tree effect (as FamfsTree.apply).
        return this.a.logTreeApplyEntry(this.t, 3, e.index, '', f, status);
    }
  }

  /** [slot, nextIndex, files, dirs, generation, problems, orphaned, released, deletes]: the lengths of the lists. */
  counts(): Float64Array {
    return this.a.logTreeCounts(this.t);
  }

  /** Slots applied. */
  get slot(): number {
    return this.counts()[0];
  }

  get nextIndex(): number {
    return this.counts()[1];
  }

  set nextIndex(v: number) {
    this.a.logTreeSetNextIndex(this.t, v);
  }

  get fileCount(): number {
    return this.counts()[2];
  }

  get dirCount(): number {
    return this.counts()[3];
  }

  /** FamfsTree.problems, worded by tree.ts. */
  problems(): TreeProblem[] {
    return this.a.logTreeProblems(this.t).map((p) => ({ index: p.index, message: wording(p, this.limits) }));
  }

  /** Live files in the root whose name starts with `prefix`, in the root's order, with the bytes their maps name. */
  rootFiles(prefix: string): { index: number; relpath: string; bytes: number }[] {
    return this.a.logTreeRootFiles(this.t, prefix);
  }

  /**
   * What Allocator.rebuild(horizon) and summary() count: metadata (superblock, log, a second log
   * region), live files, orphaned extents, releases at or past the horizon.
   */
  space(horizon: number, deviceSize: number, logLen: number, region2Offset: number): NativeSpace {
    const r = this.a.logTreeSpace(
      this.t,
      horizon,
      Math.floor(deviceSize / ALLOC_UNIT),
      Math.ceil(this.limits.reservedBytes / ALLOC_UNIT),
      region2Offset > 0 ? region2Offset / ALLOC_UNIT : 0,
      region2Offset > 0 ? Math.ceil(logLen / ALLOC_UNIT) : 0,
    );
    return { freeUnits: r[0], largestFreeRun: r[1], pendingUnits: r[2], collisions: r[3] };
  }

  /** Allocator.rebuild's map from this tree: the free runs [start0, end0, ...] in units, and the collisions. */
  freeRuns(horizon: number, totalUnits: number, metaUnits: number, region2Start: number, region2Units: number): { runs: number[]; collisions: number } {
    const r = this.a.logTreeFreeRuns(this.t, horizon, totalUnits, metaUnits, region2Start, region2Units);
    return { runs: Array.from(r.subarray(1)), collisions: r[0] };
  }

  /** Id of the live node at `relpath` (0: the root), or -1. */
  find(relpath: string): number {
    return this.a.logTreeFind(this.t, relpath);
  }

  /** Id of the live node log entry `index` made, or -1. */
  findIndex(index: number): number {
    return this.a.logTreeFindIndex(this.t, index);
  }

  nodes(ids: Int32Array): NativeNodes {
    return this.a.logTreeNodes(this.t, ids);
  }

  /** The live children of node `id`, in the order they were made. */
  children(id: number): Int32Array {
    return this.a.logTreeChildren(this.t, id);
  }

  /** Every live node but the root, in log order. */
  live(): Int32Array {
    return this.a.logTreeLive(this.t);
  }

  lists(): NativeLists {
    return this.a.logTreeLists(this.t);
  }
}

function wording(p: NativeProblem, limits: TreeLimits): string {
  switch (p.code) {
    case 0: {
      const fmap = fmapOf(p.fmapKind, p.chunk, p.extents);
      // The native tree found this map bad; fmapProblem says why (undefined would be a disagreement
      // between the two, which the differential test catches: say so rather than hide it).
      return problemText.fmap(p.relpath, fmapProblem(fmap, p.size, limits) ?? `native tree refused a map of ${fmapCapacity(fmap)} bytes`);
    }
    case 1:
      return problemText.noParent(p.relpath);
    case 2:
      return problemText.parentIsFile(p.relpath);
    case 3:
      return problemText.badPath(p.relpath);
    case 4:
      return problemText.exists(p.relpath, p.a);
    case 5:
      return problemText.deleteMissing(p.a, p.relpath);
    case 6:
      return problemText.deleteMismatch(p.relpath, p.targetType === 0 ? 'file' : 'mkdir', p.a, p.s, p.sKind === 0 ? 'file' : 'dir');
    case 7:
      return problemText.deleteNonEmpty(p.s);
    default:
      return `native tree problem code ${p.code} at "${p.relpath}"`;
  }
}
