// Static volumes: a PersistentVolume whose csi.volumeAttributes.path names an existing famfs file or
// directory (loaded with `famfs cp -r` on the master, or by a loader Job), with any volumeHandle —
// as csi-driver-nfs takes server/share. The driver publishes such a path to pods (serial rules for
// writers, read-only binds for readers) but never created it and so never frees it: DeleteVolume
// only ever removes files under csi/ that CreateVolume made.
//
//   path: models          the directory famfs has at models (the pod sees the whole tree)
//   path: models/         the same, and it must be a directory (a file there is INVALID_ARGUMENT)
//   path: models/w.bin    one file (the pod sees a directory holding w.bin; block access: the file)
//
// Checked twice: syntax first (INVALID_ARGUMENT, no state), then against the famfs log (NOT_FOUND
// when the path does not exist yet, INVALID_ARGUMENT when it is the wrong kind).
import type { FamfsFs } from '../famfs/fs';
import type { TreeNode } from '../famfs/tree';
import { invalidArgument, notFound } from './errors';
import { CSI_ROOT_DIR, FAMFS_MAX_RELPATH, isVolumeId, objectDirRelpath } from './names';
import { CTX_SHARE_OF } from './volume-context';

/** The PersistentVolume attribute (csi.volumeAttributes) naming a famfs path. */
export const CTX_STATIC_PATH = 'path';

export interface StaticPath {
  /** famfs path relative to the root, without leading or trailing slashes. */
  relpath: string;
  /** Written with a trailing slash: it must be a directory. */
  wantDir: boolean;
}

/** The static path a volume_context names, or undefined for a volume CreateVolume made. */
export function staticPathOf(ctx: Record<string, string> | null | undefined): StaticPath | undefined {
  const raw = ctx?.[CTX_STATIC_PATH];
  if (raw === undefined) return undefined;
  const fix = 'set csi.volumeAttributes.path to a famfs path relative to the famfs root, such as models or models/weights.bin';
  if (raw.includes('\0')) throw invalidArgument(`volume attribute path contains a NUL byte; ${fix}`);
  const wantDir = raw.endsWith('/');
  const relpath = raw.replace(/^\/+/, '').replace(/\/+$/, '');
  if (relpath === '') throw invalidArgument(`volume attribute path ${JSON.stringify(raw)} names the famfs root, which holds every volume of the pool; ${fix}`);
  const parts = relpath.split('/');
  if (parts.some((p) => p === '..'))
    throw invalidArgument(`volume attribute path ${JSON.stringify(raw)} escapes with "..": famfs paths stay inside the famfs root; ${fix}`);
  if (parts.some((p) => p === '' || p === '.')) throw invalidArgument(`volume attribute path ${JSON.stringify(raw)} has an empty or "." component; ${fix}`);
  if (parts[0] === CSI_ROOT_DIR) {
    throw invalidArgument(
      `volume attribute path ${JSON.stringify(raw)} is inside ${CSI_ROOT_DIR}/, where the driver keeps the volumes it manages; use that volume's claim ` +
        '(or a ReadOnlyMany claim with it as dataSource) instead of a static volume',
    );
  }
  if (parts[0] === '.meta') throw invalidArgument(`volume attribute path ${JSON.stringify(raw)}: .meta holds famfs metadata, not data`);
  const bytes = Buffer.byteLength(relpath);
  if (bytes > FAMFS_MAX_RELPATH) throw invalidArgument(`volume attribute path is ${bytes} bytes; famfs paths hold at most ${FAMFS_MAX_RELPATH}`);
  return { relpath, wantDir };
}

/**
 * A zero-copy read-only share (CreateVolume put CTX_SHARE_OF in its volume_context): the node
 * publishes the source volume's directory read-only, like a static directory.
 */
export function sharedVolumePath(ctx: Record<string, string> | null | undefined): StaticPath | undefined {
  const src = ctx?.[CTX_SHARE_OF];
  if (src === undefined) return undefined;
  if (!isVolumeId(src)) throw invalidArgument(`volume_context ${CTX_SHARE_OF}=${JSON.stringify(src)} is not a volume id of this driver`);
  return { relpath: objectDirRelpath(src), wantDir: true };
}

/** The famfs file or directory a static path names, as `fs` last replayed the log. */
export function resolveStaticPath(fs: FamfsFs, p: StaticPath, pool: string, block: boolean): TreeNode {
  const node = fs.lookup(p.relpath);
  if (node === undefined) {
    throw notFound(
      `famfs path ${p.relpath} does not exist in pool ${pool}; load it on the master first (famfs cp -r SRC DEVICE ${p.relpath}, or a loader Job), then the pod's mount is retried`,
    );
  }
  if (p.wantDir && node.kind !== 'dir') {
    throw invalidArgument(`famfs path ${p.relpath} is a file, but the volume attribute path ends with "/" (a directory); drop the "/" to publish the file`);
  }
  if (block && node.kind === 'dir') {
    throw invalidArgument(
      `famfs path ${p.relpath} is a directory; block access (volumeMode: Block) needs a file: use volumeMode: Filesystem, or point path at a file`,
    );
  }
  return node;
}

/** Every file under a static path (the path itself when it is a file): flushed and invalidated on hand-over. */
export function filesUnder(node: TreeNode): string[] {
  if (node.kind === 'file') return [node.relpath];
  const out: string[] = [];
  for (const c of node.children.values()) out.push(...filesUnder(c));
  return out;
}
