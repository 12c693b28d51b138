/**
 * Free-space accounting and placement, rebuilt from the replayed tree (famfs stores no free map).
 *
 * Space is tracked in 2 MiB allocation units as a sorted list of free runs, so the largest free
 * extent (what a volume can really get) is always known and placement is O(runs), not O(device).
 */
import { FamfsError } from './errors';
import { ALLOC_UNIT, Extent, Fmap, MAX_BUCKETS, MAX_STRIPS } from './layout';
import { fmapExtents } from './fmap';
import { FamfsTree, reservedBytes } from './tree';

/** Sorted, disjoint, non-adjacent free runs [start, end) in allocation units. */
export class SpaceMap {
  private starts: number[] = [];
  private ends: number[] = [];

  constructor(readonly totalUnits: number) {
    if (totalUnits > 0) {
      this.starts.push(0);
      this.ends.push(totalUnits);
    }
  }

  /** A map whose free runs are [runs[0], runs[1]), [runs[2], runs[3]), ... (sorted, disjoint). */
  static fromRuns(totalUnits: number, runs: readonly number[]): SpaceMap {
    const m = new SpaceMap(0);
    (m as { totalUnits: number }).totalUnits = totalUnits;
    for (let i = 0; i + 1 < runs.length; i += 2) {
      // Adjacent runs are merged: the map keeps runs non-adjacent.
      if (m.ends.length > 0 && m.ends[m.ends.length - 1] === runs[i]) m.ends[m.ends.length - 1] = runs[i + 1];
      else {
        m.starts.push(runs[i]);
        m.ends.push(runs[i + 1]);
      }
    }
    return m;
  }

  get freeUnits(): number {
    let n = 0;
    for (let i = 0; i < this.starts.length; i++) n += this.ends[i] - this.starts[i];
    return n;
  }

  get largestFreeRun(): number {
    let best = 0;
    for (let i = 0; i < this.starts.length; i++) best = Math.max(best, this.ends[i] - this.starts[i]);
    return best;
  }

  get runCount(): number {
    return this.starts.length;
  }

  /** First run index whose end is > unit. */
  private firstRunEndingAfter(unit: number): number {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ends[mid] <= unit) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** True when every unit of [start, start+count) is used (no free run touches it). */
  isUsed(start: number, count: number): boolean {
    const i = this.firstRunEndingAfter(start);
    return i >= this.starts.length || this.starts[i] >= start + count;
  }

  isFree(start: number, count: number): boolean {
    const i = this.firstRunEndingAfter(start);
    return i < this.starts.length && this.starts[i] <= start && this.ends[i] >= start + count;
  }

  /** Mark [start, start+count) used; returns how many of those units were already used (collisions). */
  markUsed(start: number, count: number): number {
    const end = Math.min(start + count, this.totalUnits);
    let newlyUsed = 0;
    let i = this.firstRunEndingAfter(start);
    while (i < this.starts.length && this.starts[i] < end) {
      const s = this.starts[i];
      const e = this.ends[i];
      const cutS = Math.max(s, start);
      const cutE = Math.min(e, end);
      newlyUsed += cutE - cutS;
      const pieces: [number, number][] = [];
      if (s < cutS) pieces.push([s, cutS]);
      if (cutE < e) pieces.push([cutE, e]);
      this.starts.splice(i, 1, ...pieces.map((p) => p[0]));
      this.ends.splice(i, 1, ...pieces.map((p) => p[1]));
      i += pieces.length;
    }
    return count - newlyUsed;
  }

  /** Return [start, start+count) to the free runs (must be used now). */
  release(start: number, count: number): void {
    const end = start + count;
    const i = this.firstRunEndingAfter(start);
    if (i < this.starts.length && this.starts[i] < end) throw new Error(`releasing units ${start}+${count} that are partly free`);
    let s = start;
    let e = end;
    let at = i;
    let remove = 0;
    if (at > 0 && this.ends[at - 1] === s) {
      at--;
      s = this.starts[at];
      remove++;
    }
    if (i < this.starts.length && this.starts[i] === e) {
      e = this.ends[i];
      remove++;
    }
    this.starts.splice(at, remove, s);
    this.ends.splice(at, remove, e);
  }

  /** First free run of `count` units inside [from, limit); undefined when none. */
  firstFit(count: number, from = 0, limit = this.totalUnits): number | undefined {
    for (let i = this.firstRunEndingAfter(from); i < this.starts.length && this.starts[i] < limit; i++) {
      const s = Math.max(this.starts[i], from);
      if (Math.min(this.ends[i], limit) - s >= count) return s;
    }
    return undefined;
  }

  freeRuns(): { start: number; count: number }[] {
    return this.starts.map((s, i) => ({ start: s, count: this.ends[i] - s }));
  }

  /** The free parts of [start, start+count), in order (O(log runs + parts)). */
  freeWithin(start: number, count: number): { start: number; count: number }[] {
    const end = start + count;
    const out: { start: number; count: number }[] = [];
    for (let i = this.firstRunEndingAfter(start); i < this.starts.length && this.starts[i] < end; i++) {
      const s = Math.max(this.starts[i], start);
      out.push({ start: s, count: Math.min(this.ends[i], end) - s });
    }
    return out;
  }

  /** The runs as [start0, end0, start1, end1, ...]. */
  flatRuns(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.starts.length; i++) out.push(this.starts[i], this.ends[i]);
    return out;
  }

  /** Units free in this map and in `other` (or, with `minus`, free here and not free in `other`). */
  combine(other: SpaceMap, minus = false): SpaceMap {
    const runs: number[] = [];
    const o = other.flatRuns();
    let j = 0;
    for (let i = 0; i < this.starts.length; i++) {
      let s = this.starts[i];
      const e = this.ends[i];
      while (j < o.length && o[j + 1] <= s) j += 2;
      for (let k = j; k < o.length && o[k] < e; k += 2) {
        const os = Math.max(o[k], s);
        const oe = Math.min(o[k + 1], e);
        if (minus) {
          if (os > s) runs.push(s, os);
          s = oe;
        } else runs.push(os, oe);
      }
      if (minus && s < e) runs.push(s, e);
    }
    return SpaceMap.fromRuns(this.totalUnits, runs);
  }
}

/**
 * Used intervals of allocation units, swept once into a SpaceMap. Collisions are counted as
 * marking them in order would: every unit of a FILE interval that metadata or an earlier FILE
 * interval already holds (orphaned and pending intervals reserve space but never collide).
 */
export class IntervalSweep {
  static readonly METADATA = 0;
  static readonly FILE = 1;
  static readonly OTHER = 2;
  private starts: number[] = [];
  private ends: number[] = [];
  private kinds: number[] = [];

  add(start: number, count: number, kind: number): void {
    if (count <= 0) return;
    this.starts.push(start);
    this.ends.push(start + count);
    this.kinds.push(kind);
  }

  sweep(totalUnits: number): { map: SpaceMap; collisions: number } {
    // Boundary events: +1 at a start, -1 at an end, per kind. At equal positions ends go first.
    // Each event is one number, position * 8 + (4 for a start) + kind, so a plain numeric sort
    // (no comparator call per comparison) orders them by position with ends first.
    const n = this.starts.length;
    const events = new Float64Array(2 * n);
    for (let i = 0; i < n; i++) {
      events[2 * i] = this.starts[i] * 8 + 4 + this.kinds[i];
      events[2 * i + 1] = this.ends[i] * 8 + this.kinds[i];
    }
    events.sort();
    const depth = [0, 0, 0];
    let collisions = 0;
    let prev = 0;
    const runs: number[] = [];
    let freeFrom = 0;
    let anyUsed = false;
    for (let k = 0; k < events.length; k++) {
      const ev = events[k];
      const low = ev % 8;
      const p = Math.min((ev - low) / 8, totalUnits);
      if (p > prev) {
        const files = depth[IntervalSweep.FILE];
        // Units claimed by files more than once, or by a file and metadata.
        if (files > 0) collisions += (files - 1 + (depth[IntervalSweep.METADATA] > 0 ? 1 : 0)) * (p - prev);
      }
      const wasUsed = anyUsed;
      const kind = low & 3;
      depth[kind] += low & 4 ? 1 : -1;
      anyUsed = depth[0] + depth[1] + depth[2] > 0;
      if (!wasUsed && anyUsed) {
        if (p > freeFrom) runs.push(freeFrom, p);
      } else if (wasUsed && !anyUsed) freeFrom = p;
      prev = p;
    }
    // Units past the end of the device (never placed there; the tree refuses such extents) count
    // as collisions, as marking them did.
    for (let i = 0; i < n; i++)
      if (this.kinds[i] === IntervalSweep.FILE && this.ends[i] > totalUnits) collisions += this.ends[i] - Math.max(this.starts[i], totalUnits);
    if (!anyUsed && totalUnits > freeFrom) runs.push(freeFrom, totalUnits);
    return { map: SpaceMap.fromRuns(totalUnits, runs), collisions };
  }
}

export interface InterleaveParams {
  nbuckets: number;
  nstrips: number;
  chunkSize: number;
}

export const MIN_BUCKET_SIZE = 1 << 30;

export function validateInterleave(p: InterleaveParams, deviceSize: number): void {
  const { nbuckets, nstrips, chunkSize } = p;
  const bad = (msg: string): never => {
    throw new FamfsError('EINVAL', `interleave: ${msg}`);
  };
  if (!Number.isInteger(nbuckets) || nbuckets < 1 || nbuckets > MAX_BUCKETS) bad(`nbuckets ${nbuckets} must be 1..${MAX_BUCKETS}`);
  if (!Number.isInteger(nstrips) || nstrips < 1 || nstrips > Math.min(nbuckets, MAX_STRIPS)) bad(`nstrips ${nstrips} must be 1..min(nbuckets, ${MAX_STRIPS})`);
  if (!Number.isInteger(chunkSize) || chunkSize < ALLOC_UNIT || chunkSize % ALLOC_UNIT !== 0 || (chunkSize & (chunkSize - 1)) !== 0) {
    bad(`chunk size ${chunkSize} must be a power of two and a multiple of 2 MiB`);
  }
  const bucket = Math.floor(deviceSize / nbuckets / ALLOC_UNIT) * ALLOC_UNIT;
  if (bucket < MIN_BUCKET_SIZE) bad(`${nbuckets} buckets of a ${deviceSize}-byte device are ${bucket} bytes each; buckets must be at least 1 GiB`);
}

export interface SpaceSummary {
  deviceBytes: number;
  /** Superblock + log, files, orphans and pending frees. */
  allocatedBytes: number;
  freeBytes: number;
  largestFreeBytes: number;
  /** Released by deletes, not reusable until every host has replayed past the delete. */
  pendingFreeBytes: number;
  /** Free bytes the clean map says hold only zeros (a new file there needs no zeroing); 0 when not loaded. */
  cleanFreeBytes: number;
  /** Allocation units claimed by more than one file (fsck's cross-linked count). */
  collisions: number;
}

/**
 * The allocator of one famfs instance. Owns the space map; the tree stays the single source of
 * truth and the map can always be rebuilt from it.
 */
export class Allocator {
  private map!: SpaceMap;
  /**
   * Free units known to hold only zeros (the clean map in shared memory, as this master last read
   * or wrote it); always a subset of the free map. Empty unless the master loaded it (setClean).
   */
  private clean: SpaceMap;
  private pending: { deleteIndex: number; extents: Extent[] }[] = [];
  private collisions = 0;
  private readonly units: number;
  /** Device offset of the second log region (compaction), 0 while there is none. */
  private region2 = 0;

  constructor(
    private readonly tree: FamfsTree,
    readonly deviceSize: number,
    private readonly logLen: number,
  ) {
    this.units = Math.floor(deviceSize / ALLOC_UNIT);
    this.clean = SpaceMap.fromRuns(this.units, []);
  }

  /** The second log region (see generation.ts) is metadata: never allocatable. Call rebuild after. */
  setLogRegion2(offset: number): void {
    this.region2 = offset;
  }

  /**
   * Rebuild from the tree. Extents released by deletes at log index >= horizon stay reserved
   * (some host may not have replayed the delete and may still map them).
   */
  rebuild(horizon: number): void {
    // Pending releases never count as collisions: a newer file may legitimately sit there once
    // the horizon passed at its allocation time.
    this.pending = this.tree.released.filter((r) => r.deleteIndex >= horizon).map((r) => ({ deleteIndex: r.deleteIndex, extents: r.extents }));
    // A tree held by the native log tree sweeps its own nodes (the same intervals, the same sweep):
    // no node object is made for it.
    const metaUnits = Math.ceil(reservedBytes(this.logLen) / ALLOC_UNIT);
    const native = this.tree.nativeFreeRuns(
      horizon,
      this.units,
      metaUnits,
      this.region2 > 0 ? this.region2 / ALLOC_UNIT : 0,
      this.region2 > 0 ? Math.ceil(this.logLen / ALLOC_UNIT) : 0,
    );
    if (native !== undefined) {
      this.setMap(SpaceMap.fromRuns(this.units, native.runs), native.collisions);
      return;
    }
    // Every used interval is collected and swept once in order (O(E log E) in the extents, whatever
    // the device size), where marking them one by one in the run list cost a splice each.
    const used = new IntervalSweep();
    used.add(0, metaUnits, IntervalSweep.METADATA);
    if (this.region2 > 0) used.add(this.region2 / ALLOC_UNIT, Math.ceil(this.logLen / ALLOC_UNIT), IntervalSweep.METADATA);
    // The live nodes directly (no generator: one resume per file was most of a cold rebuild).
    for (const n of this.tree.byIndex.values()) {
      if (n.kind !== 'file') continue;
      const xs = fmapExtents(n.fmap);
      for (let i = 0; i < xs.length; i++) used.add(xs[i].offset / ALLOC_UNIT, xs[i].len / ALLOC_UNIT, IntervalSweep.FILE);
    }
    for (const o of this.tree.orphaned) {
      for (const e of o.extents)
        if (e.offset % ALLOC_UNIT === 0 && e.len % ALLOC_UNIT === 0) used.add(e.offset / ALLOC_UNIT, e.len / ALLOC_UNIT, IntervalSweep.OTHER);
    }
    for (const p of this.pending) for (const e of p.extents) used.add(e.offset / ALLOC_UNIT, e.len / ALLOC_UNIT, IntervalSweep.OTHER);
    const { map, collisions } = used.sweep(this.units);
    this.setMap(map, collisions);
  }

  private setMap(map: SpaceMap, collisions: number): void {
    this.map = map;
    this.collisions = collisions;
    // Clean units stay clean only while free (a rebuild never makes anything clean).
    this.clean = this.clean.combine(map);
  }

  /**
   * Clean units, as the clean map in shared memory says ([start0, end0, ...]): only those that are
   * free count (a bit left set on used memory is stale; the caller clears it on the media). Returns
   * the runs that were marked clean but are not free.
   */
  setClean(runs: readonly number[]): { start: number; count: number }[] {
    const all = SpaceMap.fromRuns(this.units, runs);
    this.clean = all.combine(this.map);
    return all.combine(this.map, true).freeRuns();
  }

  /** Forget what is clean (a master that has not read the shared clean map trusts nothing). */
  forgetClean(): void {
    this.clean = SpaceMap.fromRuns(this.units, []);
  }

  /** Units of `fmap` that are clean now ({start, count} in allocation units; a lookup per extent, not a scan). */
  cleanParts(fmap: Fmap): { start: number; count: number }[] {
    const out: { start: number; count: number }[] = [];
    const r = unitRuns(fmap);
    for (let i = 0; i < r.length; i += 2) out.push(...this.clean.freeWithin(r[i], r[i + 1] - r[i]));
    return out;
  }

  /** Units of `fmap` that are not known clean (a create must zero them). */
  dirtyParts(fmap: Fmap): { start: number; count: number }[] {
    const out: { start: number; count: number }[] = [];
    const r = unitRuns(fmap);
    for (let i = 0; i < r.length; i += 2) {
      let at = r[i];
      for (const c of this.clean.freeWithin(r[i], r[i + 1] - r[i])) {
        if (c.start > at) out.push({ start: at, count: c.start - at });
        at = c.start + c.count;
      }
      if (at < r[i + 1]) out.push({ start: at, count: r[i + 1] - at });
    }
    return out;
  }

  /** The units of `fmap` are about to be handed to a file: they are no longer clean. */
  claim(fmap: Fmap): void {
    for (const e of fmapExtents(fmap)) this.clean.markUsed(e.offset / ALLOC_UNIT, e.len / ALLOC_UNIT);
  }

  /** Units zeroed (and flushed, and marked in shared memory) while free: clean now. */
  noteZeroed(start: number, count: number): void {
    const zeroed = SpaceMap.fromRuns(this.units, [start, start + count]).combine(this.map);
    for (const r of zeroed.combine(this.clean, true).freeRuns()) this.clean.release(r.start, r.count);
  }

  /** Free units not known to be clean, lowest first. */
  dirtyFreeRuns(): { start: number; count: number }[] {
    return this.map.combine(this.clean, true).freeRuns();
  }

  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** Deletes whose memory waits for the reclaim horizon. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /** Free what the horizon now allows; returns true if anything became allocatable. */
  reclaim(horizon: number): boolean {
    if (!this.pending.some((p) => p.deleteIndex < horizon)) return false;
    // Handing the passed extents back to the free runs gives what a rebuild gives (a rebuild
    // after each delete cost O(live files) per create) as long as no unit is claimed twice: no
    // cross-linked files, no orphaned extents (they may overlap anything). Otherwise: rebuild.
    if (this.collisions > 0 || this.tree.orphaned.length > 0) {
      this.rebuild(horizon);
      return true;
    }
    const keep: { deleteIndex: number; extents: Extent[] }[] = [];
    const passed: Extent[] = [];
    for (const p of this.pending) {
      if (p.deleteIndex < horizon) passed.push(...p.extents);
      else keep.push(p);
    }
    const units = passed.map((e) => ({ start: e.offset / ALLOC_UNIT, count: e.len / ALLOC_UNIT })).sort((x, y) => x.start - y.start);
    // Every passed unit must be used now and claimed once; anything else means the map and the
    // tree disagree, and the tree is the truth.
    for (let i = 0; i < units.length; i++) {
      const u = units[i];
      const prev = units[i - 1];
      if ((prev !== undefined && prev.start + prev.count > u.start) || !this.map.isUsed(u.start, u.count)) {
        this.rebuild(horizon);
        return true;
      }
    }
    this.pending = keep;
    for (const u of units) this.map.release(u.start, u.count);
    return true;
  }

  /**
   * A file was added by replay (ours or another writer's). Returns true when it took units this
   * allocator held clean: a writer that does not keep the clean map wrote it, and the shared map
   * still says clean for memory a file now owns (the master clears those bits).
   */
  noteAdded(fmap: Fmap): boolean {
    let tookClean = false;
    for (const e of fmapExtents(fmap)) {
      const start = e.offset / ALLOC_UNIT;
      const count = e.len / ALLOC_UNIT;
      this.collisions += this.map.markUsed(start, count);
      if (this.clean.markUsed(start, count) < count) tookClean = true;
    }
    return tookClean;
  }

  /** A file was deleted at `deleteIndex`: its units stay used until reclaim() passes the index. */
  noteReleased(deleteIndex: number, fmap: Fmap): void {
    this.pending.push({ deleteIndex, extents: fmapExtents(fmap) });
  }

  summary(): SpaceSummary {
    const free = this.map.freeUnits * ALLOC_UNIT;
    const pendingUnits = new Set<number>();
    for (const p of this.pending) for (const e of p.extents) for (let u = e.offset / ALLOC_UNIT; u < (e.offset + e.len) / ALLOC_UNIT; u++) pendingUnits.add(u);
    return {
      deviceBytes: this.units * ALLOC_UNIT,
      allocatedBytes: this.units * ALLOC_UNIT - free,
      freeBytes: free,
      cleanFreeBytes: this.clean.freeUnits * ALLOC_UNIT,
      largestFreeBytes: this.map.largestFreeRun * ALLOC_UNIT,
      pendingFreeBytes: pendingUnits.size * ALLOC_UNIT,
      collisions: this.collisions,
    };
  }

  freeRuns(): { offset: number; len: number }[] {
    return this.map.freeRuns().map((r) => ({ offset: r.start * ALLOC_UNIT, len: r.count * ALLOC_UNIT }));
  }

  /**
   * Place a file of `size` bytes; the map is not changed until the entry is committed (noteAdded).
   * `prefer`: 'clean' places first among clean units (a file that must read zeros needs no
   * zeroing there), 'dirty' among the others (a copy overwrites every byte: it leaves the clean
   * memory to creates); either way, then among all free units.
   */
  place(size: number, interleave?: InterleaveParams, random: () => number = Math.random, prefer?: 'clean' | 'dirty'): Fmap {
    if (!Number.isSafeInteger(size) || size <= 0) throw new FamfsError('EINVAL', `file size ${size} must be a positive integer`);
    if (interleave) validateInterleave(interleave, this.deviceSize);
    if (prefer !== undefined && this.clean.runCount > 0) {
      const fmap = this.placeIn(prefer === 'clean' ? this.clean : this.map.combine(this.clean, true), size, interleave, random);
      if (fmap !== undefined) return fmap;
    }
    const fmap = this.placeIn(this.map, size, interleave, random);
    if (fmap !== undefined) return fmap;
    if (interleave && size >= interleave.chunkSize) {
      const p = interleave;
      const stripLen = Math.ceil(size / (p.nstrips * p.chunkSize)) * p.chunkSize;
      throw new FamfsError('ENOSPC', `fewer than ${p.nstrips} of ${p.nbuckets} buckets have ${stripLen} contiguous free bytes; ${p.nstrips} strips needed`);
    }
    const units = Math.ceil(size / ALLOC_UNIT);
    throw new FamfsError(
      'ENOSPC',
      `no free extent of ${units * ALLOC_UNIT} bytes (free ${this.map.freeUnits * ALLOC_UNIT} bytes, largest free extent ${this.map.largestFreeRun * ALLOC_UNIT})`,
    );
  }

  /**
   * Place a file of `size` bytes among the clean units only, or undefined when they hold no room
   * of that shape. What place(..., 'clean') returns whenever it returns from the clean units: a
   * reclaim before it would change nothing (reclaimed memory is free but never clean), so a
   * create that fits in clean memory need not read the host slots for the horizon first.
   */
  placeClean(size: number, interleave?: InterleaveParams, random: () => number = Math.random): Fmap | undefined {
    if (!Number.isSafeInteger(size) || size <= 0) throw new FamfsError('EINVAL', `file size ${size} must be a positive integer`);
    if (interleave) validateInterleave(interleave, this.deviceSize);
    return this.clean.runCount === 0 ? undefined : this.placeIn(this.clean, size, interleave, random);
  }

  private placeIn(map: SpaceMap, size: number, interleave: InterleaveParams | undefined, random: () => number): Fmap | undefined {
    // famfs' rule: a file smaller than one chunk is not worth striping.
    if (interleave && size >= interleave.chunkSize) return this.placeInterleaved(map, size, interleave, random);
    const units = Math.ceil(size / ALLOC_UNIT);
    const at = map.firstFit(units);
    return at === undefined ? undefined : { kind: 'simple', extents: [{ devindex: 0, offset: at * ALLOC_UNIT, len: units * ALLOC_UNIT }] };
  }

  private placeInterleaved(map: SpaceMap, size: number, p: InterleaveParams, random: () => number): Fmap | undefined {
    const stripLen = Math.ceil(size / (p.nstrips * p.chunkSize)) * p.chunkSize;
    const stripUnits = stripLen / ALLOC_UNIT;
    const bucketUnits = Math.floor(this.units / p.nbuckets);
    const order = [...Array(p.nbuckets).keys()];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const strips: Extent[] = [];
    for (const b of order) {
      if (strips.length === p.nstrips) break;
      // Unlike famfs, a strip never runs past its bucket: two strips of one file in one bucket
      // would defeat the point of striping.
      const at = map.firstFit(stripUnits, b * bucketUnits, (b + 1) * bucketUnits);
      if (at !== undefined) strips.push({ devindex: 0, offset: at * ALLOC_UNIT, len: stripLen });
    }
    if (strips.length < p.nstrips) return undefined;
    return { kind: 'interleave', nstrips: p.nstrips, chunkSize: p.chunkSize, strips };
  }
}

/** The allocation units of a map as sorted, merged runs [start0, end0, ...]. */
function unitRuns(fmap: Fmap): number[] {
  const r = fmapExtents(fmap)
    .map((e) => [e.offset / ALLOC_UNIT, (e.offset + e.len) / ALLOC_UNIT] as const)
    .sort((a, b) => a[0] - b[0]);
  const out: number[] = [];
  for (const [s, e] of r) {
    if (out.length > 0 && out[out.length - 1] >= s) out[out.length - 1] = Math.max(out[out.length - 1], e);
    else out.push(s, e);
  }
  return out;
}
