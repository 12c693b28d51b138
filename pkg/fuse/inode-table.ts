/**
 * The famfs tree as the FUSE server's C++ side sees it: a flat list of inodes.
 *
 * Inode numbers come from the log, never from a counter, so they are the same on every host
 * and across server restarts or a /dev/fuse handover (design-hazards §1): the root is 1, the
 * .meta directory and its two files 2..4, and the node made by log entry i is 16 + i. Log
 * indexes are never reused, so neither are inode numbers (generation is always 1).
 */
import type { DirNode, FamfsTree, TreeNode } from '../famfs/tree.js';
import { SUPERBLOCK_REGION, type Fmap } from '../famfs/layout.js';
import type { NativeFmap, NativeInode } from './native.js';

export const ROOT_INO = 1;
export const META_DIR_INO = 2;
export const SUPERBLOCK_INO = 3;
export const LOG_INO = 4;
export const FIRST_LOG_INO = 16;

export const META_DIR = '.meta';
export const SUPERBLOCK_FILE = '.superblock';
export const LOG_FILE = '.log';

export interface MetaLayout {
  logOffset: number;
  logLen: number;
}

export function inoOfNode(node: TreeNode): number {
  return node.index < 0 ? ROOT_INO : FIRST_LOG_INO + node.index;
}

function nativeFmap(fmap: Fmap): NativeFmap {
  if (fmap.kind === 'simple') return { kind: 'simple', extents: fmap.extents.map((e) => ({ offset: e.offset, len: e.len })) };
  return { kind: 'interleave', chunkSize: fmap.chunkSize, strips: fmap.strips.map((e) => ({ offset: e.offset, len: e.len })) };
}

/** Every inode of the mount: root, .meta and its files, then the tree's nodes. */
export function buildInodeTable(tree: FamfsTree, meta: MetaLayout): NativeInode[] {
  const out: NativeInode[] = [];
  const root = tree.root;
  out.push({ ino: ROOT_INO, parent: ROOT_INO, name: '', kind: 'dir', mode: root.mode, uid: root.uid, gid: root.gid, size: 0 });
  out.push({ ino: META_DIR_INO, parent: ROOT_INO, name: META_DIR, kind: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, readOnly: true });
  out.push({
    ino: SUPERBLOCK_INO,
    parent: META_DIR_INO,
    name: SUPERBLOCK_FILE,
    kind: 'file',
    mode: 0o444,
    uid: 0,
    gid: 0,
    size: SUPERBLOCK_REGION,
    readOnly: true,
    fmap: { kind: 'simple', extents: [{ offset: 0, len: SUPERBLOCK_REGION }] },
  });
  out.push({
    ino: LOG_INO,
    parent: META_DIR_INO,
    name: LOG_FILE,
    kind: 'file',
    mode: 0o444,
    uid: 0,
    gid: 0,
    size: meta.logLen,
    readOnly: true,
    fmap: { kind: 'simple', extents: [{ offset: meta.logOffset, len: meta.logLen }] },
  });
  const walk = (dir: DirNode, dirIno: number): void => {
    for (const [name, child] of dir.children) {
      // The reserved name cannot come from a famfs log; if it does, .meta wins.
      if (dirIno === ROOT_INO && name === META_DIR) continue;
      const ino = inoOfNode(child);
      if (child.kind === 'dir') {
        out.push({ ino, parent: dirIno, name, kind: 'dir', mode: child.mode, uid: child.uid, gid: child.gid, size: 0 });
        walk(child, ino);
      } else {
        out.push({
          ino,
          parent: dirIno,
          name,
          kind: 'file',
          mode: child.mode,
          uid: child.uid,
          gid: child.gid,
          size: child.size,
          fmap: nativeFmap(child.fmap),
        });
      }
    }
  };
  walk(root, ROOT_INO);
  return out;
}

export type ResolvedPath = { kind: 'file' | 'dir'; ino: number };

/** The inode a mount-relative path names (including .meta/...), or undefined. */
export function resolvePath(tree: FamfsTree, relpath: string): ResolvedPath | undefined {
  const clean = relpath.replace(/^\/+/, '').replace(/\/+$/, '');
  if (clean === META_DIR) return { kind: 'dir', ino: META_DIR_INO };
  if (clean === `${META_DIR}/${SUPERBLOCK_FILE}`) return { kind: 'file', ino: SUPERBLOCK_INO };
  if (clean === `${META_DIR}/${LOG_FILE}`) return { kind: 'file', ino: LOG_INO };
  const node = tree.lookup(clean);
  if (!node) return undefined;
  return { kind: node.kind, ino: inoOfNode(node) };
}
