// Reading the kernel's mount table (/proc/self/mountinfo) and probing mount health, without shelling out.
import * as fs from 'fs';
import * as path from 'path';

export interface MountEntry {
  id: number;
  parentId: number;
  /** "major:minor" of the mounted device. */
  device: string;
  /** Path inside the source filesystem that is mounted here (for a bind mount: the bound directory). */
  root: string;
  mountPoint: string;
  /** Per-mount options (ro/rw, nosuid, ...). */
  mountOptions: string[];
  /** Optional fields (shared:N, master:N, ...). */
  propagation: string[];
  fsType: string;
  source: string;
  /** Per-superblock options. */
  superOptions: string[];
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (sep < 0 || fields.length < sep + 4) throw new Error(`malformed mountinfo line: ${line}`);
    out.push({
      id: Number(fields[0]),
      parentId: Number(fields[1]),
      device: fields[2],
      root: unescapeMountinfo(fields[3]),
      mountPoint: unescapeMountinfo(fields[4]),
      mountOptions: fields[5].split(','),
      propagation: fields.slice(6, sep),
      fsType: fields[sep + 1],
      source: unescapeMountinfo(fields[sep + 2]),
      superOptions: fields[sep + 3].split(','),
    });
  }
  return out;
}

/**
 * The mount table. Read synchronously: procfs generates it in the kernel (no disk, no FUSE server to
 * wait for), and a thread-pool round trip costs more than the read under load.
 */
export async function readMountinfo(file = '/proc/self/mountinfo'): Promise<MountEntry[]> {
  return parseMountinfo(fs.readFileSync(file, 'utf8'));
}

/**
 * Canonical absolute form of a path that may itself be a dead mount point: the parent is resolved
 * with realpath (following symlinks, as the kernel did when mounting), the last component is kept
 * as is, because stat on a dead FUSE mount fails with ENOTCONN.
 */
export async function canonicalMountPath(p: string): Promise<string> {
  const abs = path.resolve(p);
  if (abs === '/') return abs;
  let parent: string;
  try {
    // Synchronous: the parents of mount points this code handles (publish targets, staging paths,
    // the FUSE mountpoint) are local directories, and a thread-pool round trip per call is what
    // made a publish cost milliseconds on a busy node.
    parent = fs.realpathSync.native(path.dirname(abs));
  } catch {
    parent = path.dirname(abs);
  }
  return path.join(parent, path.basename(abs));
}

/** The mount entry at `p` (the topmost when several are stacked there), or undefined. */
export async function findMount(p: string, table?: MountEntry[]): Promise<MountEntry | undefined> {
  const target = await canonicalMountPath(p);
  const entries = table ?? (await readMountinfo());
  let found: MountEntry | undefined;
  // mountinfo lists mounts in mount order, so the last match is the one on top.
  for (const e of entries) if (e.mountPoint === target) found = e;
  return found;
}

/** Every mount entry at `p`, bottom first (stacked mounts from repeated mounting). */
export async function mountsAt(p: string, table?: MountEntry[]): Promise<MountEntry[]> {
  const target = await canonicalMountPath(p);
  return (table ?? (await readMountinfo())).filter((e) => e.mountPoint === target);
}

/**
 * Whether something is mounted at `p`, asked of the path itself rather than the mount table (whose
 * read and parse cost tens of milliseconds with thousands of mounts on a node): a mount whose FUSE
 * server died answers ENOTCONN, a live one shows a device number other than its parent directory's.
 * A bind of a directory of the parent's own filesystem would show the same device and is not seen;
 * the mounts this driver makes at staging and target paths are binds from the famfs FUSE mount (a
 * device of its own), and a stale one from an earlier FUSE connection shows that connection's device.
 */
export async function isMountPoint(p: string): Promise<boolean> {
  const target = await canonicalMountPath(p);
  if (target === '/') return true;
  let st: fs.Stats;
  try {
    // lstat: a symlink at p is not a mount point (mounting on it mounts on what it names).
    st = fs.lstatSync(target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN') return true;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw e;
  }
  // Synchronous, as in canonicalMountPath: the parent is a local directory.
  return st.dev !== fs.statSync(path.dirname(target)).dev;
}

/** statfs f_type of every FUSE filesystem (linux/magic.h FUSE_SUPER_MAGIC). */
const FUSE_SUPER_MAGIC = 0x65735546;

/**
 * Whether a FUSE filesystem is mounted at `p` (its root or anywhere inside it): statfs reports the
 * filesystem a path is on. False when the path is missing; a dead connection (ENOTCONN) rejects.
 */
export async function isFuseMount(p: string): Promise<boolean> {
  try {
    return (await fs.promises.statfs(p)).type === FUSE_SUPER_MAGIC;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

export type PathHealth = 'ok' | 'missing' | 'disconnected' | 'error';

/** The health a failed stat/statfs reports: ENOTCONN is a dead FUSE connection, ENOENT a missing path. */
function probeFailure(e: unknown): { health: PathHealth; error: NodeJS.ErrnoException } {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOTCONN') return { health: 'disconnected', error: err };
  if (err.code === 'ENOENT') return { health: 'missing', error: err };
  return { health: 'error', error: err };
}

/**
 * What stat and statfs say about a path: 'disconnected' is ENOTCONN (the FUSE server behind it died; the
 * mount can only be lazily unmounted), 'missing' is ENOENT.
 */
export async function probePath(p: string): Promise<{ health: PathHealth; error?: NodeJS.ErrnoException }> {
  try {
    await fs.promises.stat(p);
    // stat can be answered from attributes the kernel cached before the server died; statfs is
    // always sent to a FUSE server, so it tells a dead connection apart.
    await fs.promises.statfs(p);
    return { health: 'ok' };
  } catch (e) {
    return probeFailure(e);
  }
}
