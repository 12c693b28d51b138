/**
 * The file tree that replaying a famfs log produces.
 *
 * Entries are applied strictly in log order. An entry that is well-formed on media but makes no
 * sense here (parent missing, duplicate name, extent outside the device, a delete whose target
 * does not match) is skipped and recorded as a problem, never exposed: a pod must not see a file
 * whose map could point at someone else's memory. Memory named by a skipped FILE entry still
 * counts as used (famfs' own allocator counts every FILE entry), so it is never handed out again.
 *
 * Two ways to hold it, one behaviour. A tree replayed from an empty start through the native log
 * tree (native/src/famfs_tree.cc: the same rules, the same problems) keeps its nodes in native
 * memory and makes the JavaScript node objects only when they are looked up (lookup, byIndex,
 * a directory's children, nodes(), files()); a full log then costs no object per entry until
 * someone asks for one. Entries applied later go through the native tree too, and update whatever
 * objects were made. Without the addon, or with `native: false`, every node is an object from the
 * start (the reference: test/famfs-tree-native.test.ts requires both to agree over damaged logs).
 */
import { Extent, Fmap, LogEntry, FileEntry, MkdirEntry, DeleteEntry } from './layout';
import { fmapExtents } from './fmap';
import { fmapOf, NativeLogTree, nativeTreeAvailable, NODE_ROW } from './native-tree';
import type { SlotSink } from './replay';
import { fmapProblem, problemText, type TreeLimits } from './tree-rules';

export interface DirNode {
  kind: 'dir';
  relpath: string; // '' for the root
  name: string;
  /** Log index of the MKDIR entry; -1 for the root. */
  index: number;
  mode: number;
  uid: number;
  gid: number;
  children: Map<string, TreeNode>;
}

export interface FileNode {
  kind: 'file';
  relpath: string;
  name: string;
  /** Log index of the FILE entry: stable identity across hosts and restarts. */
  index: number;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  flags: number;
  fmap: Fmap;
}

export type TreeNode = DirNode | FileNode;

/** Extents released by a delete; reusable only once every host has replayed past `deleteIndex`. */
export interface ReleasedExtents {
  deleteIndex: number;
  relpath: string;
  extents: Extent[];
}

export interface TreeProblem {
  index: number;
  message: string;
}

export type TreeChange = { op: 'add'; node: TreeNode } | { op: 'remove'; node: TreeNode; deleteIndex: number };

export { fmapProblem, problemText, reservedBytes, type TreeLimits } from './tree-rules';

export interface FamfsTreeOptions {
  /** false: plain JavaScript objects for every node (the reference path); default: native when the addon has it. */
  native?: boolean;
}

/** Makes `node.children` a getter that fills the Map on first use and then becomes the plain property. */
function lazyChildren(node: DirNode, load: () => Map<string, TreeNode>): void {
  Object.defineProperty(node, 'children', {
    configurable: true,
    enumerable: true,
    get(this: DirNode): Map<string, TreeNode> {
      const m = load();
      Object.defineProperty(this, 'children', { value: m, writable: true, configurable: true, enumerable: true });
      return m;
    },
    set(this: DirNode, m: Map<string, TreeNode>) {
      Object.defineProperty(this, 'children', { value: m, writable: true, configurable: true, enumerable: true });
    },
  });
}

/**
 * The JavaScript face of a native log tree: node objects made on demand, one per native node id,
 * and kept up to date as entries are applied.
 */
class NativeNodes {
  /** Node objects made so far, by native id (0: the root). */
  private readonly made = new Map<number, TreeNode>();
  /** Children Maps made so far, by the directory's native id: applied entries keep them current. */
  private readonly kids = new Map<number, Map<string, TreeNode>>();
  /** byIndex once every live node was made (then kept current by added and removed). */
  private all_: Map<number, TreeNode> | undefined;
  readonly index: ReadonlyMap<number, TreeNode>;

  constructor(
    readonly nt: NativeLogTree,
    root: DirNode,
  ) {
    this.adoptRoot(root);
    const all = (): Map<number, TreeNode> => {
      if (this.all_ === undefined) {
        const m = new Map<number, TreeNode>();
        for (const n of this.make(this.nt.live())) m.set(n.index, n);
        this.all_ = m;
      }
      return this.all_;
    };
    const native = this.nt;
    this.index = {
      get: (index: number) => {
        if (this.all_ !== undefined) return this.all_.get(index);
        const id = native.findIndex(index);
        return id < 0 ? undefined : this.node(id);
      },
      has: (index: number) => (this.all_ !== undefined ? this.all_.has(index) : native.findIndex(index) >= 0),
      get size() {
        const c = native.counts();
        return c[2] + c[3];
      },
      entries: () => all().entries(),
      keys: () => all().keys(),
      values: () => all().values(),
      forEach: (fn: (value: TreeNode, key: number, map: ReadonlyMap<number, TreeNode>) => void) => {
        for (const [k, v] of all()) fn(v, k, this.index);
      },
      [Symbol.iterator]: () => all().entries(),
    };
  }

  /** `root` is this tree's root object: its children come from native node 0. */
  adoptRoot(root: DirNode): void {
    this.made.set(0, root);
    this.kids.delete(0);
    lazyChildren(root, () => this.childMap(0));
  }

  node(id: number): TreeNode {
    return this.made.get(id) ?? this.make(Int32Array.of(id))[0];
  }

  /** The objects of these nodes, made in one native call for those not made yet. */
  make(ids: Int32Array): TreeNode[] {
    const out = new Array<TreeNode>(ids.length);
    const missing: number[] = [];
    for (let k = 0; k < ids.length; k++) {
      const n = this.made.get(ids[k]);
      if (n === undefined) missing.push(k);
      else out[k] = n;
    }
    if (missing.length === 0) return out;
    const want = missing.length === ids.length ? ids : Int32Array.from(missing, (k) => ids[k]);
    const { rows, exts, paths } = this.nt.nodes(want);
    const rel = paths.split('\0');
    let x = 0;
    for (let j = 0; j < want.length; j++) {
      const r = j * NODE_ROW;
      const relpath = rel[j];
      const name = relpath.slice(relpath.lastIndexOf('/') + 1);
      let node: TreeNode;
      if (rows[r + 1] === 0) {
        const n = rows[r + 10];
        node = {
          kind: 'file',
          relpath,
          name,
          index: rows[r],
          size: rows[r + 7],
          mode: rows[r + 3],
          uid: rows[r + 4],
          gid: rows[r + 5],
          flags: rows[r + 6],
          fmap: fmapOf(rows[r + 8], rows[r + 9], exts, x, n),
        };
        x += n * 3;
      } else {
        const id = want[j];
        const dir: DirNode = { kind: 'dir', relpath, name, index: rows[r], mode: rows[r + 3], uid: rows[r + 4], gid: rows[r + 5], children: new Map() };
        lazyChildren(dir, () => this.childMap(id));
        node = dir;
      }
      this.made.set(want[j], node);
      out[missing[j]] = node;
    }
    return out;
  }

  private childMap(id: number): Map<string, TreeNode> {
    const m = new Map<string, TreeNode>();
    for (const c of this.make(this.nt.children(id))) m.set(c.name, c);
    this.kids.set(id, m);
    return m;
  }

  /** Where apply() has the native tree write what an entry did (see NativeLogTree.apply). */
  readonly status = new Float64Array(10);

  /**
   * After the native tree added node `id` (under node `parent`) for `entry`: its object, made from
   * the entry as the JavaScript tree makes it, and entered in its parent's children if those were made.
   */
  added(id: number, parent: number, entry: LogEntry): TreeNode {
    const b = entry.body;
    let node: TreeNode;
    if (b.type === 'file') {
      const name = b.relpath.slice(b.relpath.lastIndexOf('/') + 1);
      node = {
        kind: 'file',
        relpath: b.relpath,
        name,
        index: entry.index,
        size: b.size,
        mode: b.mode & 0o7777,
        uid: b.uid,
        gid: b.gid,
        flags: b.flags,
        fmap: b.fmap,
      };
    } else if (b.type === 'mkdir') {
      // A new directory is empty: its children Map is made now and kept current.
      const name = b.relpath.slice(b.relpath.lastIndexOf('/') + 1);
      const dir: DirNode = { kind: 'dir', relpath: b.relpath, name, index: entry.index, mode: b.mode & 0o7777, uid: b.uid, gid: b.gid, children: new Map() };
      this.kids.set(id, dir.children);
      node = dir;
    } else {
      node = this.node(id);
    }
    this.made.set(id, node);
    this.kids.get(parent)?.set(node.name, node);
    this.all_?.set(node.index, node);
    return node;
  }

  /** After the native tree removed node `id` (under node `parent`): its object, taken out of what was made. */
  removed(id: number, parent: number): TreeNode {
    const node = this.node(id);
    this.kids.get(parent)?.delete(node.name);
    this.kids.delete(id);
    this.made.delete(id);
    this.all_?.delete(node.index);
    return node;
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export class FamfsTree {
  readonly root: DirNode = { kind: 'dir', relpath: '', name: '', index: -1, mode: 0o755, uid: 0, gid: 0, children: new Map() };
  /**
   * Log index after the last entry applied. In famfs' own log (generation 0) this is also the
   * number of slots read; a compacted log keeps each entry's original index, so they differ.
   */
  private next = 0;
  /** Log generation these entries come from, and how many of its slots were applied. */
  generation = 0;
  private slots = 0;
  private nFiles = 0;
  private nDirs = 0;

  // The JavaScript way (no native tree behind this tree).
  /** Live nodes by the log index that created them. */
  private readonly jsIndex = new Map<number, TreeNode>();
  /** Live nodes by relpath: replay looks up every parent, so this must not walk the tree. */
  private readonly byPath = new Map<string, TreeNode>();
  private readonly lists = {
    released: [] as ReleasedExtents[],
    orphaned: [] as { index: number; extents: Extent[] }[],
    problems: [] as TreeProblem[],
    slotIndexes: [] as number[],
    deletes: [] as { deleteIndex: number; targetIndex: number }[],
  };

  // The native way: set once a replay from an empty start went through the native log tree.
  private nat: NativeNodes | undefined;
  private readonly allowNative: boolean;

  constructor(
    readonly limits: TreeLimits,
    opts: FamfsTreeOptions = {},
  ) {
    this.allowNative = opts.native !== false;
  }

  /** True when the nodes live in the native log tree (objects made on demand). */
  get isNative(): boolean {
    return this.nat !== undefined;
  }

  get nextIndex(): number {
    return this.next;
  }

  set nextIndex(v: number) {
    this.next = v;
    if (this.nat) this.nat.nt.nextIndex = v;
  }

  /** Slots applied from this generation. */
  get slot(): number {
    return this.slots;
  }

  get fileCount(): number {
    return this.nFiles;
  }

  get dirCount(): number {
    return this.nDirs;
  }

  /** Live nodes by the log index that created them. */
  get byIndex(): ReadonlyMap<number, TreeNode> {
    return this.nat ? this.nat.index : this.jsIndex;
  }

  /** Extents released by deletes, in log order. */
  get released(): readonly ReleasedExtents[] {
    this.syncList('released');
    return this.lists.released;
  }

  /** Extents of FILE entries that were skipped: still counted as allocated. */
  get orphaned(): readonly { index: number; extents: Extent[] }[] {
    this.syncList('orphaned');
    return this.lists.orphaned;
  }

  get problems(): readonly TreeProblem[] {
    this.syncList('problems');
    return this.lists.problems;
  }

  /** Log index of the entry in each slot applied from this generation (compaction plans from it). */
  get slotIndexes(): readonly number[] {
    this.syncList('slotIndexes');
    return this.lists.slotIndexes;
  }

  /** Every delete that took effect: its log index and its target's (compaction drops both together). */
  get deletes(): readonly { deleteIndex: number; targetIndex: number }[] {
    this.syncList('deletes');
    return this.lists.deletes;
  }

  lookup(relpath: string): TreeNode | undefined {
    if (relpath === '' || relpath === '.') return this.root;
    if (this.nat) {
      // The native tree compares UTF-8: a string no decoded name can equal (a lone surrogate would
      // become U+FFFD there) finds nothing, as the JavaScript Map finds nothing.
      if (LONE_SURROGATE.test(relpath)) return undefined;
      const id = this.nat.nt.find(relpath);
      return id < 0 ? undefined : this.nat.node(id);
    }
    return this.byPath.get(relpath);
  }

  *nodes(): IterableIterator<TreeNode> {
    const stack: TreeNode[] = [this.root];
    while (stack.length) {
      const n = stack.pop()!;
      if (n !== this.root) yield n;
      if (n.kind === 'dir') for (const c of [...n.children.values()].reverse()) stack.push(c);
    }
  }

  *files(): IterableIterator<FileNode> {
    for (const n of this.byIndex.values()) if (n.kind === 'file') yield n;
  }

  /**
   * A LogReader.walk sink that applies slots through the native log tree, for a replay into this
   * tree while it is still empty; undefined when this tree cannot (no addon, `native: false`, or
   * entries applied already). `expected`: how many entries are coming.
   */
  nativeSink(expected: number): SlotSink | undefined {
    if (this.nat === undefined) {
      if (!this.allowNative || this.slots > 0 || this.next > 0 || !nativeTreeAvailable()) return undefined;
      const nt = new NativeLogTree(this.limits, this.generation, expected);
      this.nat = new NativeNodes(nt, this.root);
    }
    const inner = this.nat.nt.sink();
    const sync = () => this.syncCounts();
    return {
      batch: (raw, count, firstSlot, deletesAllowed, window) => {
        const n = inner.batch!(raw, count, firstSlot, deletesAllowed, window);
        sync();
        return n;
      },
      device: (device, offset, count, firstSlot, deletesAllowed, window) => {
        const n = inner.device!(device, offset, count, firstSlot, deletesAllowed, window);
        sync();
        return n;
      },
      one: (e) => {
        this.apply(e);
      },
    };
  }

  private syncCounts(): void {
    const c = this.nat!.nt.counts();
    this.slots = c[0];
    this.next = c[1];
    this.nFiles = c[2];
    this.nDirs = c[3];
  }

  /**
   * One list as the native tree has it now (they only grow: just the new tail is made). Each is
   * made when first asked for: a replay that nobody asks for its 15,420 slot indexes makes none.
   */
  private syncList(which: keyof FamfsTree['lists']): void {
    const nat = this.nat;
    if (nat === undefined) return;
    const L = this.lists;
    const c = nat.nt.counts();
    switch (which) {
      case 'problems': {
        if (c[5] === L.problems.length) return;
        const all = nat.nt.problems();
        for (let i = L.problems.length; i < all.length; i++) L.problems.push(all[i]);
        return;
      }
      case 'slotIndexes': {
        if (c[0] === L.slotIndexes.length) return;
        const r = nat.nt.lists().slotIndexes;
        for (let i = L.slotIndexes.length; i < r.length; i++) L.slotIndexes.push(r[i]);
        return;
      }
      case 'deletes': {
        if (c[8] === L.deletes.length) return;
        const r = nat.nt.lists().deletes;
        for (let i = L.deletes.length; 2 * i < r.length; i++) L.deletes.push({ deleteIndex: r[2 * i], targetIndex: r[2 * i + 1] });
        return;
      }
      case 'released': {
        if (c[7] === L.released.length) return;
        const r = nat.nt.lists().released;
        const from = L.released.length;
        const ids = new Int32Array(r.length / 2 - from);
        for (let i = 0; i < ids.length; i++) ids[i] = r[2 * (from + i) + 1];
        const { rows, exts, paths } = nat.nt.nodes(ids);
        const rel = paths.split('\0');
        let x = 0;
        for (let i = 0; i < ids.length; i++) {
          const n = rows[i * NODE_ROW + 10];
          L.released.push({ deleteIndex: r[2 * (from + i)], relpath: rel[i], extents: fmapExtents(fmapOf(0, 0, exts, x, n)) });
          x += n * 3;
        }
        return;
      }
      case 'orphaned': {
        if (c[6] === L.orphaned.length) return;
        const r = nat.nt.lists();
        let x = 0;
        for (let i = 0; 2 * i < r.orphaned.length; i++) {
          const n = r.orphaned[2 * i + 1];
          if (i >= L.orphaned.length) L.orphaned.push({ index: r.orphaned[2 * i], extents: fmapExtents(fmapOf(0, 0, r.orphanedExts, x, n)) });
          x += n * 3;
        }
        return;
      }
    }
  }

  /**
   * Allocator.rebuild's used-space sweep done by the native tree (free runs in units and the
   * collisions), or undefined for a tree of JavaScript nodes (the allocator sweeps them itself).
   */
  nativeFreeRuns(
    horizon: number,
    totalUnits: number,
    metaUnits: number,
    region2Start: number,
    region2Units: number,
  ): { runs: number[]; collisions: number } | undefined {
    return this.nat?.nt.freeRuns(horizon, totalUnits, metaUnits, region2Start, region2Units);
  }

  /**
   * Apply one validated entry, the next slot of the log. Log indexes only grow; in famfs' own log
   * (generation 0) they have no gaps.
   */
  apply(entry: LogEntry): TreeChange | undefined {
    const nat = this.nat;
    if (nat !== undefined) {
      const st = nat.status;
      const code = nat.nt.apply(entry, st);
      this.slots = st[2];
      this.next = st[3];
      this.nFiles = st[4];
      this.nDirs = st[5];
      if (code > 0) return { op: 'add', node: nat.added(code, st[1], entry) };
      if (code < 0) return { op: 'remove', node: nat.removed(-code, st[1]), deleteIndex: entry.index };
      return undefined;
    }
    if (entry.index < this.next || (this.generation === 0 && entry.index !== this.next)) {
      throw new Error(`tree expects entry ${this.next}${this.generation === 0 ? '' : ' or later'}, got ${entry.index}`);
    }
    this.next = entry.index + 1;
    this.slots++;
    this.lists.slotIndexes.push(entry.index);
    const body = entry.body;
    switch (body.type) {
      case 'file':
        return this.applyFile(entry.index, body);
      case 'mkdir':
        return this.applyMkdir(entry.index, body);
      case 'delete':
        return this.applyDelete(entry.index, body);
      case 'add_daxdev':
        // OMF 2.2 phase 1: recorded by famfs but only device 0 is ever allocated from.
        return undefined;
    }
  }

  /** Log indexes of the live nodes, ascending (no node objects made). */
  private liveIndexes(): number[] {
    if (this.nat === undefined) return [...this.jsIndex.keys()];
    const ids = this.nat.nt.live();
    if (ids.length === 0) return [];
    const rows = this.nat.nt.nodes(ids).rows;
    const out = new Array<number>(ids.length);
    for (let i = 0; i < ids.length; i++) out[i] = rows[i * NODE_ROW];
    return out;
  }

  /**
   * Take over everything `other` holds (a replay of a newer log generation), keeping this object:
   * readers hold on to the tree. Returns what changed for a host that had replayed this tree,
   * matching nodes by log index (their identity, and the FUSE inode number).
   */
  replaceWith(other: FamfsTree): TreeChange[] {
    const changes: TreeChange[] = [];
    const released = new Map(other.released.map((r) => [r.relpath, r.deleteIndex]));
    // Only the nodes that differ are looked at (objects made for them alone).
    const mine = this.liveIndexes();
    const theirs = other.liveIndexes();
    const theirSet = new Set(theirs);
    const mineSet = new Set(mine);
    for (const index of mine) {
      if (theirSet.has(index)) continue;
      const node = this.byIndex.get(index)!;
      changes.push({ op: 'remove', node, deleteIndex: released.get(node.relpath) ?? other.nextIndex });
    }
    for (const index of theirs) if (!mineSet.has(index)) changes.push({ op: 'add', node: other.byIndex.get(index)! });
    if (other.nat !== undefined) {
      // Native behind both from now on: the other tree's native nodes, with this tree's root object.
      this.nat = other.nat;
      this.nat.adoptRoot(this.root);
      this.jsIndex.clear();
      this.byPath.clear();
    } else {
      this.nat = undefined;
      this.root.children = other.root.children;
      this.jsIndex.clear();
      for (const [k, v] of other.jsIndex) this.jsIndex.set(k, v);
      this.byPath.clear();
      for (const [k, v] of other.byPath) this.byPath.set(k, v);
    }
    for (const k of ['released', 'orphaned', 'problems', 'slotIndexes', 'deletes'] as const) {
      const mineList = this.lists[k] as unknown[];
      mineList.length = 0;
      for (const v of other[k] as readonly unknown[]) mineList.push(v);
    }
    this.next = other.next;
    this.generation = other.generation;
    this.slots = other.slots;
    this.nFiles = other.nFiles;
    this.nDirs = other.nDirs;
    return changes;
  }

  private problem(index: number, message: string): undefined {
    this.lists.problems.push({ index, message });
    return undefined;
  }

  private parentOf(index: number, relpath: string): { parent: DirNode; name: string } | undefined {
    const cut = relpath.lastIndexOf('/');
    const parentPath = cut < 0 ? '' : relpath.slice(0, cut);
    const name = cut < 0 ? relpath : relpath.slice(cut + 1);
    const parent = this.lookup(parentPath);
    if (!parent) return this.problem(index, problemText.noParent(relpath));
    if (parent.kind !== 'dir') return this.problem(index, problemText.parentIsFile(relpath));
    if (name === '' || name === '.' || name === '..' || relpath.startsWith('/') || relpath === '.meta' || relpath.startsWith('.meta/')) {
      return this.problem(index, problemText.badPath(relpath));
    }
    if (parent.children.has(name)) return this.problem(index, problemText.exists(relpath, parent.children.get(name)!.index));
    return { parent, name };
  }

  private applyFile(index: number, body: FileEntry): TreeChange | undefined {
    const bad = fmapProblem(body.fmap, body.size, this.limits);
    if (bad) return this.problem(index, problemText.fmap(body.relpath, bad));
    const where = this.parentOf(index, body.relpath);
    if (!where) {
      this.lists.orphaned.push({ index, extents: fmapExtents(body.fmap) });
      return undefined;
    }
    const node: FileNode = {
      kind: 'file',
      relpath: body.relpath,
      name: where.name,
      index,
      size: body.size,
      mode: body.mode & 0o7777,
      uid: body.uid,
      gid: body.gid,
      flags: body.flags,
      fmap: body.fmap,
    };
    where.parent.children.set(where.name, node);
    this.jsIndex.set(index, node);
    this.byPath.set(node.relpath, node);
    this.nFiles++;
    return { op: 'add', node };
  }

  private applyMkdir(index: number, body: MkdirEntry): TreeChange | undefined {
    const where = this.parentOf(index, body.relpath);
    if (!where) return undefined;
    const node: DirNode = {
      kind: 'dir',
      relpath: body.relpath,
      name: where.name,
      index,
      mode: body.mode & 0o7777,
      uid: body.uid,
      gid: body.gid,
      children: new Map(),
    };
    where.parent.children.set(where.name, node);
    this.jsIndex.set(index, node);
    this.byPath.set(node.relpath, node);
    this.nDirs++;
    return { op: 'add', node };
  }

  private applyDelete(index: number, body: DeleteEntry): TreeChange | undefined {
    const target = this.jsIndex.get(body.targetIndex);
    if (!target) return this.problem(index, problemText.deleteMissing(body.targetIndex, body.relpath));
    if (target.relpath !== body.relpath || (target.kind === 'file') !== (body.targetType === 'file')) {
      return this.problem(index, problemText.deleteMismatch(body.relpath, body.targetType, body.targetIndex, target.relpath, target.kind));
    }
    if (target.kind === 'dir' && target.children.size > 0) return this.problem(index, problemText.deleteNonEmpty(target.relpath));
    const cut = target.relpath.lastIndexOf('/');
    const parent = this.lookup(cut < 0 ? '' : target.relpath.slice(0, cut)) as DirNode;
    parent.children.delete(target.name);
    this.jsIndex.delete(target.index);
    this.byPath.delete(target.relpath);
    this.lists.deletes.push({ deleteIndex: index, targetIndex: target.index });
    if (target.kind === 'file') {
      this.nFiles--;
      this.lists.released.push({ deleteIndex: index, relpath: target.relpath, extents: fmapExtents(target.fmap) });
    } else {
      this.nDirs--;
    }
    return { op: 'remove', node: target, deleteIndex: index };
  }
}
