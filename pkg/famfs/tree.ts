/**
 * The file tree that replaying a famfs log produces.
 *
 * Entries are applied strictly in log order. An entry that is well-formed on media but makes no
 * sense here (parent missing, duplicate name, extent outside the device, a delete whose target
 * does not match) is skipped and recorded as a problem, never exposed: a pod must not see a file
 * whose map could point at someone else's memory. Memory named by a skipped FILE entry still
 * counts as used (famfs' own allocator counts every FILE entry), so it is never handed out again.
 */
import { ALLOC_UNIT, Extent, Fmap, LogEntry, FileEntry, MkdirEntry, DeleteEntry, LOG_OFFSET } from './layout';
import { fmapCapacity, fmapExtents } from './fmap';

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

export interface TreeLimits {
  /** Device size from the superblock: extents must end inside it. */
  deviceSize: number;
  /** Bytes at the start of the device that hold superblock and log: no extent may touch them. */
  reservedBytes: number;
}

export function reservedBytes(logLen: number): number {
  return LOG_OFFSET + logLen;
}

/**
 * What replay says about an entry it skips: the one wording, used by this tree and by the native
 * log tree (native-tree.ts), which reports the same problems as codes and operands.
 */
export const problemText = {
  noParent(relpath: string): string {
    const cut = relpath.lastIndexOf('/');
    return `"${relpath}": parent directory "${cut < 0 ? '' : relpath.slice(0, cut)}" does not exist`;
  },
  parentIsFile(relpath: string): string {
    const cut = relpath.lastIndexOf('/');
    return `"${relpath}": parent "${cut < 0 ? '' : relpath.slice(0, cut)}" is a file`;
  },
  badPath: (relpath: string): string => `"${relpath}": not a valid famfs path`,
  exists: (relpath: string, holder: number): string => `"${relpath}" already exists (entry ${holder})`,
  fmap: (relpath: string, why: string): string => `"${relpath}": ${why}`,
  deleteMissing: (targetIndex: number, relpath: string): string => `delete of entry ${targetIndex} ("${relpath}"), which is not a live file or directory`,
  deleteMismatch: (relpath: string, targetType: string, targetIndex: number, targetRelpath: string, targetKind: string): string =>
    `delete names "${relpath}" (${targetType}) but entry ${targetIndex} is "${targetRelpath}" (${targetKind})`,
  deleteNonEmpty: (relpath: string): string => `delete of non-empty directory "${relpath}"`,
};

/** Why an fmap cannot be trusted, or undefined when every byte of the file maps inside the device data area. */
export function fmapProblem(fmap: Fmap, size: number, limits: TreeLimits): string | undefined {
  const extents = fmapExtents(fmap);
  for (const e of extents) {
    if (e.devindex !== 0) return `extent on device ${e.devindex} (only device 0 exists)`;
    if (e.len <= 0) return 'zero-length extent';
    if (e.offset % ALLOC_UNIT !== 0 || e.len % ALLOC_UNIT !== 0) return `extent 0x${e.offset.toString(16)}+0x${e.len.toString(16)} is not 2 MiB aligned`;
    if (e.offset < limits.reservedBytes) return `extent at 0x${e.offset.toString(16)} overlaps the superblock/log`;
    if (e.offset + e.len > limits.deviceSize)
      return `extent 0x${e.offset.toString(16)}+0x${e.len.toString(16)} ends past the device (${limits.deviceSize} bytes)`;
  }
  if (fmap.kind === 'interleave') {
    const { chunkSize, strips } = fmap;
    if (chunkSize % ALLOC_UNIT !== 0 || (chunkSize & (chunkSize - 1)) !== 0) return `interleave chunk ${chunkSize} is not a power-of-two multiple of 2 MiB`;
    if (strips.some((s) => s.len !== strips[0].len || s.len % chunkSize !== 0)) return 'interleave strips differ in length or are not whole chunks';
  }
  if (fmapCapacity(fmap) < size) return `file size ${size} exceeds its ${fmapCapacity(fmap)} mapped bytes`;
  return undefined;
}

export class FamfsTree {
  readonly root: DirNode = { kind: 'dir', relpath: '', name: '', index: -1, mode: 0o755, uid: 0, gid: 0, children: new Map() };
  /** Live nodes by the log index that created them. */
  readonly byIndex = new Map<number, TreeNode>();
  readonly released: ReleasedExtents[] = [];
  /** Extents of FILE entries that were skipped: still counted as allocated. */
  readonly orphaned: { index: number; extents: Extent[] }[] = [];
  readonly problems: TreeProblem[] = [];
  /**
   * Log index after the last entry applied. In famfs' own log (generation 0) this is also the
   * number of slots read; a compacted log keeps each entry's original index, so they differ.
   */
  nextIndex = 0;
  /** Log generation these entries come from, and how many of its slots were applied. */
  generation = 0;
  slot = 0;
  /** Log index of the entry in each slot applied from this generation (compaction plans from it). */
  readonly slotIndexes: number[] = [];
  /** Every delete that took effect: its log index and its target's (compaction drops both together). */
  readonly deletes: { deleteIndex: number; targetIndex: number }[] = [];
  fileCount = 0;
  dirCount = 0;

  constructor(readonly limits: TreeLimits) {}

  /** Live nodes by relpath: replay looks up every parent, so this must not walk the tree. */
  private readonly byPath = new Map<string, TreeNode>();

  lookup(relpath: string): TreeNode | undefined {
    if (relpath === '' || relpath === '.') return this.root;
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
   * Apply one validated entry, the next slot of the log. Log indexes only grow; in famfs' own log
   * (generation 0) they have no gaps.
   */
  apply(entry: LogEntry): TreeChange | undefined {
    if (entry.index < this.nextIndex || (this.generation === 0 && entry.index !== this.nextIndex)) {
      throw new Error(`tree expects entry ${this.nextIndex}${this.generation === 0 ? '' : ' or later'}, got ${entry.index}`);
    }
    this.nextIndex = entry.index + 1;
    this.slot++;
    this.slotIndexes.push(entry.index);
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

  /**
   * Take over everything `other` holds (a replay of a newer log generation), keeping this object:
   * readers hold on to the tree. Returns what changed for a host that had replayed this tree,
   * matching nodes by log index (their identity, and the FUSE inode number).
   */
  replaceWith(other: FamfsTree): TreeChange[] {
    const changes: TreeChange[] = [];
    const released = new Map(other.released.map((r) => [r.relpath, r.deleteIndex]));
    for (const [index, node] of this.byIndex) {
      if (!other.byIndex.has(index)) changes.push({ op: 'remove', node, deleteIndex: released.get(node.relpath) ?? other.nextIndex });
    }
    for (const [index, node] of other.byIndex) if (!this.byIndex.has(index)) changes.push({ op: 'add', node });
    this.root.children = other.root.children;
    this.byIndex.clear();
    for (const [k, v] of other.byIndex) this.byIndex.set(k, v);
    this.byPath.clear();
    for (const [k, v] of other.byPath) this.byPath.set(k, v);
    this.released.length = 0;
    for (const r of other.released) this.released.push(r);
    this.orphaned.length = 0;
    for (const o of other.orphaned) this.orphaned.push(o);
    this.problems.length = 0;
    for (const p of other.problems) this.problems.push(p);
    this.nextIndex = other.nextIndex;
    this.generation = other.generation;
    this.slot = other.slot;
    this.slotIndexes.length = 0;
    for (const i of other.slotIndexes) this.slotIndexes.push(i);
    this.deletes.length = 0;
    for (const d of other.deletes) this.deletes.push(d);
    this.fileCount = other.fileCount;
    this.dirCount = other.dirCount;
    return changes;
  }

  private problem(index: number, message: string): undefined {
    this.problems.push({ index, message });
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
      this.orphaned.push({ index, extents: fmapExtents(body.fmap) });
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
    this.byIndex.set(index, node);
    this.byPath.set(node.relpath, node);
    this.fileCount++;
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
    this.byIndex.set(index, node);
    this.byPath.set(node.relpath, node);
    this.dirCount++;
    return { op: 'add', node };
  }

  private applyDelete(index: number, body: DeleteEntry): TreeChange | undefined {
    const target = this.byIndex.get(body.targetIndex);
    if (!target) return this.problem(index, problemText.deleteMissing(body.targetIndex, body.relpath));
    if (target.relpath !== body.relpath || (target.kind === 'file') !== (body.targetType === 'file')) {
      return this.problem(index, problemText.deleteMismatch(body.relpath, body.targetType, body.targetIndex, target.relpath, target.kind));
    }
    if (target.kind === 'dir' && target.children.size > 0) return this.problem(index, problemText.deleteNonEmpty(target.relpath));
    const cut = target.relpath.lastIndexOf('/');
    const parent = this.lookup(cut < 0 ? '' : target.relpath.slice(0, cut)) as DirNode;
    parent.children.delete(target.name);
    this.byIndex.delete(target.index);
    this.byPath.delete(target.relpath);
    this.deletes.push({ deleteIndex: index, targetIndex: target.index });
    if (target.kind === 'file') {
      this.fileCount--;
      this.released.push({ deleteIndex: index, relpath: target.relpath, extents: fmapExtents(target.fmap) });
    } else {
      this.dirCount--;
    }
    return { op: 'remove', node: target, deleteIndex: index };
  }
}
