// Bind mounts and unmounts with mount(2)/umount2(2) from the native addon: no child process on the
// publish path (a mount(8) run costs a fork and an exec, milliseconds each). Everything that can be
// answered from the kernel's tables (is it mounted? is it alive?) is read directly.
import * as fs from 'fs';
import { MountError } from './errors';
import { canonicalMountPath, probePath } from './mountinfo';

/** unmountAll gives up after this many mounts stacked at one path. */
const MAX_STACKED = 256;
import { mountNative, type BindLiveness } from './native';

/** Per-mount flags a bind mount may carry (applied to the new bind only, as the kernel requires for binds). */
export const BIND_FLAGS: ReadonlySet<string> = new Set(['nosuid', 'nodev', 'noexec', 'noatime', 'relatime', 'nodiratime', 'strictatime']);

export interface BindOptions {
  /** Make the bind read-only; the kernel then refuses writes (EROFS) whatever the file modes say. */
  readOnly?: boolean;
  /** Extra per-mount flags from BIND_FLAGS. */
  flags?: string[];
}

const errnoOf = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? 'EIO';

/**
 * Bind-mounts `source` onto `target` (both must exist and be of the same kind: dir onto dir, file
 * onto file). A bind ignores ro and other flags on its first mount, so they are set on the new
 * bind right after (mount_setattr); if that fails the bind is undone, so a volume asked for
 * read-only is never left writable.
 */
export async function bindMount(source: string, target: string, opts: BindOptions = {}): Promise<void> {
  await bindWith(opts, (flags) => mountNative().bindMount(source, target, opts.readOnly === true, flags));
}

/**
 * bindMount, made only when `live.bind` is a live bind of `live.root` (see bindLiveness): resolves
 * 'bound', or what bindLiveness says with nothing mounted. The check and the bind are one
 * thread-pool job: a publish that checks the staging bind it binds from waits for one wake-up.
 */
export async function bindMountIfAlive(
  source: string,
  target: string,
  live: { bind: string; root: string },
  opts: BindOptions = {},
): Promise<'bound' | 'other' | 'dead'> {
  return bindWith(opts, (flags) => mountNative().bindMountIfAlive(source, target, opts.readOnly === true, flags, live.bind, live.root));
}

async function bindWith<T>(opts: BindOptions, bind: (flags: string[]) => Promise<T>): Promise<T> {
  const flags = opts.flags ?? [];
  const bad = flags.filter((f) => !BIND_FLAGS.has(f));
  if (bad.length > 0) throw new MountError('EMOUNT', `unsupported bind mount flags: ${bad.join(', ')}`);
  try {
    return await bind(flags);
  } catch (e) {
    const msg = (e as Error).message;
    const code = /bind undone/.test(msg) ? 'EREMOUNT' : 'EMOUNT';
    throw new MountError(code, `${msg} (${errnoOf(e)})`, { cause: e });
  }
}

/**
 * Whether `bind` is a live bind of `root` (a path in a FUSE mount): the same device and inode, and
 * a statfs that reaches the FUSE server ('dead' when its connection is gone). One thread-pool job.
 */
export function bindLiveness(bind: string, root: string): Promise<BindLiveness> {
  return mountNative().bindAlive(bind, root);
}

export interface UnmountOptions {
  /** Detach now, clean up when no longer busy (umount -l). Required for dead FUSE mounts. */
  lazy?: boolean;
}

/**
 * Unmounts the topmost mount at `target`. Returns false when nothing was mounted there (idempotent).
 * A mount whose FUSE server died (ENOTCONN) is detached lazily when a normal unmount of it fails.
 */
export async function unmount(target: string, opts: UnmountOptions = {}): Promise<boolean> {
  // The parent is resolved, the last component kept: stat on a dead FUSE mount fails.
  const canonical = await canonicalMountPath(target);
  const native = mountNative();
  try {
    return await native.unmount(canonical, opts.lazy === true);
  } catch (e) {
    const code = errnoOf(e);
    if (opts.lazy !== true && (await probePath(canonical)).health === 'disconnected') {
      try {
        return await native.unmount(canonical, true);
      } catch (e2) {
        throw new MountError('EUMOUNT', `unmount of ${canonical} failed: ${(e2 as Error).message}`, { cause: e2 });
      }
    }
    throw new MountError(code === 'EBUSY' ? 'EBUSY' : 'EUMOUNT', `unmount of ${canonical} failed: ${(e as Error).message}`, { cause: e });
  }
}

/** Unmounts every mount stacked at `target` (repeated publishes after crashes can stack binds). */
export async function unmountAll(target: string, opts: UnmountOptions = {}): Promise<number> {
  // umount2 until it says nothing is left, in one thread-pool round trip (no mount table read: it
  // costs tens of milliseconds with thousands of mounts). The common cases cost one umount2 that
  // answers EINVAL (nothing mounted), or two (an unpublish). Bounded, so a mount that keeps
  // reappearing cannot loop forever.
  const canonical = await canonicalMountPath(target);
  let n: number;
  try {
    return await mountNative().unmountAll(canonical, opts.lazy === true, MAX_STACKED);
  } catch (e) {
    // A mount that refused (a dead FUSE mount answers a normal unmount with an error): the rest one
    // at a time, with unmount()'s lazy fallback and its error.
    n = (e as { unmounted?: number }).unmounted ?? 0;
  }
  while (n < MAX_STACKED && (await unmount(target, opts))) n++;
  return n;
}

/**
 * Creates a publish target: a directory (mount access) or an empty file (block access). Idempotent.
 * Resolves 'created' when this call made it (so nothing can be mounted on it yet), else 'existed'.
 */
export async function ensureTarget(target: string, kind: 'dir' | 'file'): Promise<'created' | 'existed'> {
  // Synchronous: the target's parent is a local directory (kubelet's), and creating an entry there
  // never waits for a FUSE server. Only an existing target is looked at (it may be a mount).
  if (kind === 'dir') {
    try {
      fs.mkdirSync(target, { mode: 0o750 });
      return 'created';
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = await fs.promises.stat(target);
    if (!st.isDirectory()) throw new MountError('ENOTDIR', `${target} exists and is not a directory`);
  } else {
    try {
      fs.closeSync(fs.openSync(target, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_RDONLY, 0o640));
      return 'created';
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = await fs.promises.stat(target);
    if (!st.isFile()) throw new MountError('EMOUNT', `${target} exists and is not a regular file`);
  }
  return 'existed';
}

/**
 * Removes a target the plugin created (the spec makes the SP delete it on unpublish). Missing is
 * fine; a target that is still a mount point is never removed (that would delete the volume's data
 * through the mount), and neither is a non-empty directory.
 */
export async function removeTarget(target: string): Promise<void> {
  // rmdir(2)/unlink(2) of a mount point in this mount namespace fail with EBUSY: the kernel makes
  // the check, with no window between a mount table read and the removal.
  let st: fs.Stats;
  try {
    st = fs.lstatSync(target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    // Only a mount point whose FUSE server died answers ENOTCONN.
    if (code === 'ENOTCONN') throw new MountError('EBUSY', `${target} is still a (dead) mount point; not removing it`, { cause: e });
    throw e;
  }
  try {
    // Synchronous like ensureTarget: an entry in a local directory, not under a FUSE mount.
    if (st.isDirectory()) fs.rmdirSync(target);
    else fs.unlinkSync(target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code === 'EBUSY') throw new MountError('EBUSY', `${target} is still a mount point; not removing it`, { cause: e });
    throw e;
  }
}
