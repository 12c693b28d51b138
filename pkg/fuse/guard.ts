/**
 * The read-only guard of a famfs FUSE server (issue 12): the famfs paths this host serves only
 * read-only, refused with EROFS by the server itself (open for writing, write, truncate, any
 * setattr, fallocate, xattr and namespace changes), whatever the mount flags of the caller's bind.
 *
 * Why the server and not only the bind: a read-only publish is a `ro` bind mount, and a pod with
 * CAP_SYS_ADMIN in the host user namespace (privileged, or capabilities.add SYS_ADMIN) can
 * `mount -o remount,bind,rw` its own copy of that bind; the kernel then sends its writes to us.
 *
 *   readOnly   paths (a file, or a directory: everything under it) served read-only here
 *   writable   paths published read-write here: they win over a read-only path above them
 *
 * Who decides: the CSI node plugin (pkg/csi/node-guard.ts), from its publish records; it replaces
 * the whole set with the `guard` control op before a read-only bind is made and before a read-write
 * bind lifts it. Without the driver nothing is guarded (the default).
 *
 * Why it is kept in a file (next to the control socket) and read by the server at every start: a
 * restarted server answers pods' requests from the moment it mounts or adopts the connection (kill -9
 * with the fd deposit, a planned handover, `helm upgrade`), possibly before the node plugin notices
 * and could send the set again — or while the node plugin itself restarts. A server that read its
 * guard from the file before serving has no window where a frozen file is writable. The node plugin
 * still sends the whole set again on its own start (a stale file is corrected, never trusted over
 * the records). An unreadable file guards everything (fail closed) until the node plugin sends a set.
 */
import * as fs from 'fs';
import * as path from 'path';

import { FuseError } from './errors.js';

export interface ReadOnlyGuard {
  readOnly: string[];
  writable: string[];
}

export const EMPTY_GUARD: ReadOnlyGuard = { readOnly: [], writable: [] };

/** Everything read-only: what an unreadable guard file means. '' is the famfs root. */
export const GUARD_ALL: ReadOnlyGuard = { readOnly: [''], writable: [] };

/** The guard file that goes with a control socket (same root-only directory). */
export function guardFileFor(controlSocket: string): string {
  return path.join(path.dirname(controlSocket), 'ro-guard.json');
}

const MAX_GUARD_PATHS = 1_000_000;

/** A famfs path as the guard keeps it: relative, no leading or trailing '/', no '.' or '..' parts. */
function cleanPath(p: unknown, where: string): string {
  if (typeof p !== 'string') throw new FuseError('EINVAL', `${where}: every path must be a string`);
  if (p.includes('\0')) throw new FuseError('EINVAL', `${where}: path ${JSON.stringify(p)} contains a NUL byte`);
  const clean = p.replace(/^\/+/, '').replace(/\/+$/, '');
  if (clean !== '' && clean.split('/').some((c) => c === '' || c === '.' || c === '..')) {
    throw new FuseError('EINVAL', `${where}: path ${JSON.stringify(p)} must be a famfs path relative to the root, without "." or ".." parts`);
  }
  return clean;
}

/** Checks and normalises a guard from the wire or the file; throws EINVAL with the reason. */
export function parseGuard(v: unknown, where = 'guard'): ReadOnlyGuard {
  if (typeof v !== 'object' || v === null) throw new FuseError('EINVAL', `${where} must be an object {"readOnly": [...], "writable": [...]}`);
  const o = v as Record<string, unknown>;
  const list = (k: 'readOnly' | 'writable'): string[] => {
    const a = o[k] ?? [];
    if (!Array.isArray(a)) throw new FuseError('EINVAL', `${where}: "${k}" must be an array of famfs paths`);
    if (a.length > MAX_GUARD_PATHS) throw new FuseError('EINVAL', `${where}: "${k}" holds ${a.length} paths, more than ${MAX_GUARD_PATHS}`);
    return [...new Set(a.map((p) => cleanPath(p, `${where}.${k}`)))].sort();
  };
  return { readOnly: list('readOnly'), writable: list('writable') };
}

/**
 * The guard kept in `file`: EMPTY_GUARD when there is none (nothing published read-only yet, or no
 * driver), GUARD_ALL with the reason when it cannot be read or parsed.
 */
export function loadGuard(file: string): { guard: ReadOnlyGuard; problem?: string } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { guard: EMPTY_GUARD };
    return { guard: GUARD_ALL, problem: `cannot read ${file}: ${(e as Error).message}` };
  }
  try {
    return { guard: parseGuard(JSON.parse(text), file) };
  } catch (e) {
    return { guard: GUARD_ALL, problem: `${file} is not a valid guard: ${(e as Error).message}` };
  }
}

/** Writes the guard durably (temporary file, fsync, rename, fsync of the directory). */
export function saveGuard(file: string, g: ReadOnlyGuard): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify(g) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

export function sameGuard(a: ReadOnlyGuard, b: ReadOnlyGuard): boolean {
  const eq = (x: string[], y: string[]): boolean => x.length === y.length && x.every((v, i) => v === y[i]);
  return eq(a.readOnly, b.readOnly) && eq(a.writable, b.writable);
}
