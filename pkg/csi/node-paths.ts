// Host paths in Node requests (staging_target_path, target_path, volume_path): what the node plugin
// accepts before it mounts anything there.
//
// The plugin runs as root and bind-mounts onto whatever path it is given, so a path is checked
// three ways: its syntax (absolute, no NUL, no `..` component: `..` is refused rather than
// normalized away, because a CO never sends one and a request that does is either broken or an
// attempt to leave the kubelet directory), its length, and where it really is: the deepest
// existing ancestor is resolved with realpath (following symlinks, as mount(2) would) and must lie
// under one of the allowed roots (by default kubelet's directory).
import * as fs from 'fs';
import * as path from 'path';
import { invalidArgument } from './errors';
import { MAX_HOST_PATH_BYTES } from './names';

export const DEFAULT_ALLOWED_PATH_ROOTS: readonly string[] = ['/var/lib/kubelet'];

/**
 * Syntax only: required, absolute, no NUL, no `..` component, at most PATH_MAX bytes. Returns the
 * normalized path. `relative: 'allowed'` lets a relative path through (normalized) for a caller
 * that answers it otherwise (NodeGetVolumeStats: NOT_FOUND); the other rules still apply.
 */
export function checkPathSyntax(p: string, field: string, relative: 'refused' | 'allowed' = 'refused'): string {
  if (p === '') throw invalidArgument(`${field} is required`);
  if (p.includes('\0')) throw invalidArgument(`${field} contains a NUL character`);
  if (!path.isAbsolute(p) && relative === 'refused') throw invalidArgument(`${field} ${JSON.stringify(p)} must be an absolute path`);
  if (p.split('/').includes('..')) throw invalidArgument(`${field} ${JSON.stringify(p)} must not contain ".." components`);
  const bytes = Buffer.byteLength(p, 'utf8');
  if (bytes > MAX_HOST_PATH_BYTES) throw invalidArgument(`${field} is ${bytes} bytes; the limit is ${MAX_HOST_PATH_BYTES}`);
  const normal = path.normalize(p);
  return normal.length > 1 ? normal.replace(/\/+$/, '') : normal;
}

function isUnder(p: string, root: string): boolean {
  return p === root || p.startsWith(root.endsWith('/') ? root : root + '/');
}

/**
 * realpath of `p` (its deepest existing ancestor's, with the missing tail appended), for the
 * common case without a thread-pool round trip: the parent is resolved synchronously (the parents
 * of staging and target paths are the kubelet's local directories, as canonicalMountPath assumes
 * for the same paths) and the last component is asked with readlink(2) whether it is a symlink.
 * readlink never reaches a FUSE server behind a mount point there (the path walk does not
 * revalidate a mount's root, and a directory has no link to read), so a live, hung or dead FUSE
 * bind at `p` answers EINVAL at once. A symlink, or a parent that does not resolve, takes the
 * general path.
 */
function resolveFast(p: string): string | undefined {
  if (p === '/') return p;
  let parent: string;
  try {
    parent = fs.realpathSync.native(path.dirname(p));
  } catch {
    return undefined;
  }
  try {
    fs.readlinkSync(p);
    return undefined; // a symlink: resolved the general way
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOENT') return undefined;
  }
  return path.join(parent, path.basename(p));
}

/**
 * realpath of the deepest existing ancestor of `p`, with the missing tail appended. A path whose
 * own last component is a dead FUSE mount (ENOTCONN) resolves through its parent.
 */
async function resolveExisting(p: string): Promise<string> {
  const fast = resolveFast(p);
  if (fast !== undefined) return fast;
  const tail: string[] = [];
  let cur = p;
  for (;;) {
    try {
      return path.join(await fs.promises.realpath(cur), ...tail.reverse());
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTCONN' && code !== 'ENOTDIR') throw e;
      if (cur === '/') return p;
      tail.push(path.basename(cur));
      cur = path.dirname(cur);
    }
  }
}

export class PathPolicy {
  private resolvedRoots: Promise<string[]> | undefined;

  constructor(readonly roots: readonly string[]) {
    if (roots.length === 0) throw new Error('at least one allowed path root is required');
    for (const r of roots) if (!path.isAbsolute(r)) throw new Error(`allowed path root ${JSON.stringify(r)} must be absolute`);
  }

  private async realRoots(): Promise<string[]> {
    // Roots are resolved once (they are fixed directories like /var/lib/kubelet); a root that does
    // not exist yet is kept as given.
    this.resolvedRoots ??= Promise.all(this.roots.map((r) => resolveExisting(path.normalize(r))));
    return this.resolvedRoots;
  }

  /** Checks syntax and location; returns the normalized (not symlink-resolved) path. */
  async check(p: string, field: string): Promise<string> {
    const normal = checkPathSyntax(p, field);
    const real = await resolveExisting(normal);
    const roots = await this.realRoots();
    if (!roots.some((r) => isUnder(real, r) && real !== r)) {
      throw invalidArgument(`${field} ${JSON.stringify(p)} is outside the directories this plugin may mount in (${this.roots.join(', ')})`);
    }
    return normal;
  }
}
