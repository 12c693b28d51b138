// The log tree in native memory (native/src/famfs_tree.cc): replay's rules applied to raw log
// slots without a JavaScript object per entry, for a consumer that needs what the tree *says*
// (counts, problems, the space it uses), not the nodes: fsck. The rules are tree.ts's and
// allocator.ts's; problems come back as codes and operands and are worded here by tree.ts's
// problemText and fmapProblem, so both ways print the same text. test/famfs-fsck-native.test.ts
// checks fsck both ways over damaged logs.
import { configuredLogDecoder } from './decode-batch';
import { ALLOC_UNIT, type EntryBody, type Extent, type Fmap, type LogEntry } from './layout';
import { fmapCapacity, fmapExtents } from './fmap';
import type { SlotSink } from './replay';
import { fmapProblem, problemText, type TreeLimits, type TreeProblem } from './tree';

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
  logTreeApplyEntry(t: Handle, kind: number, index: number, relpath: string, fields: Float64Array): void;
  logTreeCounts(t: Handle): Float64Array;
  logTreeSetNextIndex(t: Handle, nextIndex: number): void;
  logTreeProblems(t: Handle): NativeProblem[];
  logTreeRootFiles(t: Handle, prefix: string): { index: number; relpath: string; bytes: number }[];
  logTreeSpace(t: Handle, horizon: number, totalUnits: number, metaUnits: number, region2Start: number, region2Units: number): Float64Array;
}

let addon: NativeTreeAddon | null | undefined;

function resolve(): NativeTreeAddon | null {
  const a = configuredLogDecoder<Partial<NativeTreeAddon>>();
  if (a === null || typeof a.logTreeNew !== 'function' || typeof a.logTreeSpace !== 'function') return null;
  return a as NativeTreeAddon;
}

/** True when this build has the native log tree. */
export function nativeTreeAvailable(): boolean {
  addon ??= resolve();
  return addon !== null;
}

/** Units of the space map, as Allocator.rebuild counts them. */
export interface NativeSpace {
  freeUnits: number;
  largestFreeRun: number;
  pendingUnits: number;
  collisions: number;
}

function fmapOf(kind: number, chunk: number, x: Float64Array): Fmap {
  const list: Extent[] = [];
  for (let i = 0; i + 2 < x.length; i += 3) list.push({ devindex: x[i], offset: x[i + 1], len: x[i + 2] });
  return kind === 0 ? { kind: 'simple', extents: list } : { kind: 'interleave', nstrips: list.length, chunkSize: chunk, strips: list };
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

  /** A LogReader.walk sink that applies every slot it validates to this tree. */
  sink(): SlotSink {
    return {
      batch: (raw, count, firstSlot, deletesAllowed, window) => {
        const n = this.a.logTreeApplySlots(this.t, raw, count, firstSlot, window ? window.min : -1, window ? window.max : 0, deletesAllowed);
        if (window && n > 0) window.min = this.nextIndex;
        return n;
      },
      one: (e) => this.apply(e),
    };
  }

  /** tree.apply for one decoded entry. */
  apply(e: LogEntry): void {
    const b: EntryBody = e.body;
    switch (b.type) {
      case 'file': {
        const xs = fmapExtents(b.fmap);
        const f = new Float64Array(8 + xs.length * 3);
        f.set([b.size, b.flags, b.uid, b.gid, b.mode, b.fmap.kind === 'simple' ? 0 : 1, b.fmap.kind === 'simple' ? 0 : b.fmap.chunkSize, xs.length]);
        xs.forEach((x, i) => f.set([x.devindex, x.offset, x.len], 8 + i * 3));
        this.a.logTreeApplyEntry(this.t, 0, e.index, b.relpath, f);
        break;
      }
      case 'mkdir':
        this.a.logTreeApplyEntry(this.t, 1, e.index, b.relpath, Float64Array.of(b.uid, b.gid, b.mode));
        break;
      case 'delete':
        this.a.logTreeApplyEntry(this.t, 2, e.index, b.relpath, Float64Array.of(b.targetIndex, b.targetType === 'file' ? 0 : 1));
        break;
      case 'add_daxdev':
        // OMF 2.2 phase 1: no tree effect (as FamfsTree.apply).
        this.a.logTreeApplyEntry(this.t, 3, e.index, '', new Float64Array(0));
        break;
    }
  }

  private counts(): Float64Array {
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
