// Bind mounts and unmounts. mount(8)/umount(8) are run via execFile (no shell); everything that can
// be answered from the kernel's tables (is it mounted? is it alive?) is read directly.
import { execFile } from 'child_process';
import * as fs from 'fs';
import { MountError } from './errors';
import { canonicalMountPath, findMount, mountsAt, probePath } from './mountinfo';

const TOOL_TIMEOUT_MS = 30_000;

/** Per-mount flags a bind mount may carry (applied with a remount, as the kernel requires for binds). */
export const BIND_FLAGS: ReadonlySet<string> = new Set(['nosuid', 'nodev', 'noexec', 'noatime', 'relatime', 'nodiratime', 'strictatime']);

function run(tool: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(tool, args, { timeout: TOOL_TIMEOUT_MS, encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (err) {
        const detail = (stderr || err.message).trim();
        reject(Object.assign(new Error(`${tool} ${args.join(' ')}: ${detail}`), { stderr: detail, cause: err }));
      } else resolve();
    });
  });
}

export interface BindOptions {
  /** Make the bind read-only; the kernel then refuses writes (EROFS) whatever the file modes say. */
  readOnly?: boolean;
  /** Extra per-mount flags from BIND_FLAGS. */
  flags?: string[];
}

/**
 * Bind-mounts `source` onto `target` (both must exist and be of the same kind: dir onto dir, file
 * onto file). A bind ignores ro and other flags on its first mount, so they are applied by a
 * second `remount,bind`; if that fails the bind is undone, so a volume asked for read-only is never
 * left writable.
 */
export async function bindMount(source: string, target: string, opts: BindOptions = {}): Promise<void> {
  const flags = opts.flags ?? [];
  const bad = flags.filter((f) => !BIND_FLAGS.has(f));
  if (bad.length > 0) throw new MountError('EMOUNT', `unsupported bind mount flags: ${bad.join(', ')}`);
  try {
    await run('mount', ['--bind', source, target]);
  } catch (e) {
    throw new MountError('EMOUNT', `bind mount of ${source} on ${target} failed: ${(e as Error).message}`, { cause: e });
  }
  const remount = [...(opts.readOnly ? ['ro'] : []), ...flags];
  if (remount.length === 0) return;
  try {
    await run('mount', ['-o', ['remount', 'bind', ...remount].join(','), target]);
  } catch (e) {
    await run('umount', [target]).catch(() => run('umount', ['-l', target]).catch(() => undefined));
    throw new MountError('EREMOUNT', `remount of ${target} with ${remount.join(',')} failed (bind undone): ${(e as Error).message}`, { cause: e });
  }
}

export interface UnmountOptions {
  /** Detach now, clean up when no longer busy (umount -l). Required for dead FUSE mounts. */
  lazy?: boolean;
}

/**
 * Unmounts the topmost mount at `target`. Returns false when nothing was mounted there (idempotent).
 * A mount whose FUSE server died (ENOTCONN) is always detached lazily: a normal unmount of it can fail.
 */
export async function unmount(target: string, opts: UnmountOptions = {}): Promise<boolean> {
  const canonical = await canonicalMountPath(target);
  if ((await findMount(canonical)) === undefined) return false;
  const dead = (await probePath(canonical)).health === 'disconnected';
  const lazy = opts.lazy === true || dead;
  // -c: the path is already canonical; umount must not stat it (which fails on a dead FUSE mount).
  const args = ['-c', ...(lazy ? ['-l'] : []), canonical];
  try {
    await run('umount', args);
  } catch (e) {
    // Raced with another unmount: fine if it is gone now.
    if ((await findMount(canonical)) === undefined) return true;
    const stderr = (e as { stderr?: string }).stderr ?? '';
    const busy = /busy/i.test(stderr);
    throw new MountError(busy ? 'EBUSY' : 'EUMOUNT', `unmount of ${canonical} failed: ${(e as Error).message}`, { cause: e });
  }
  return true;
}

/** Unmounts every mount stacked at `target` (repeated publishes after crashes can stack binds). */
export async function unmountAll(target: string, opts: UnmountOptions = {}): Promise<number> {
  let n = 0;
  // Bounded: each round removes one mount; a mount that reappears would otherwise loop forever.
  for (let left = (await mountsAt(target)).length; left > 0; left--) {
    if (!(await unmount(target, opts))) break;
    n++;
  }
  return n;
}

/** Creates a publish target: a directory (mount access) or an empty file (block access). Idempotent. */
export async function ensureTarget(target: string, kind: 'dir' | 'file'): Promise<void> {
  if (kind === 'dir') {
    await fs.promises.mkdir(target, { recursive: false, mode: 0o750 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    const st = await fs.promises.stat(target);
    if (!st.isDirectory()) throw new MountError('ENOTDIR', `${target} exists and is not a directory`);
  } else {
    const fh = await fs.promises.open(target, fs.constants.O_CREAT | fs.constants.O_RDONLY, 0o640);
    await fh.close();
    const st = await fs.promises.stat(target);
    if (!st.isFile()) throw new MountError('EMOUNT', `${target} exists and is not a regular file`);
  }
}

/**
 * Removes a target the plugin created (the spec makes the SP delete it on unpublish). Missing is
 * fine; a target that is still a mount point is never removed (that would delete the volume's data
 * through the mount), and neither is a non-empty directory.
 */
export async function removeTarget(target: string): Promise<void> {
  if ((await findMount(target)) !== undefined) throw new MountError('EBUSY', `${target} is still a mount point; not removing it`);
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (st.isDirectory()) await fs.promises.rmdir(target);
  else await fs.promises.unlink(target);
}
