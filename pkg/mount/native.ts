// Typed face of the native addon's mount part (native/src/mount.cc): mount(2)/umount2(2) on the
// libuv thread pool, so a publish starts no child process.
import { loadNative } from '../device/native';
import { MountError } from './errors';

export interface NativeMountFns {
  /** Rejects with an Error whose `code` is the errno name. */
  bindMount(source: string, target: string, readOnly: boolean, flags: string[]): Promise<void>;
  /** Resolves false when nothing is mounted at target (EINVAL/ENOENT). */
  unmount(target: string, lazy: boolean): Promise<boolean>;
  /**
   * Unmounts until nothing is left at target (at most `max`), in one thread-pool round trip;
   * resolves how many. A failure rejects with `unmounted` (how many went before it) besides `code`.
   */
  unmountAll(target: string, lazy: boolean, max: number): Promise<number>;
  /**
   * Whether `bind` is a live bind of `root`: 'other' when stat shows another device or inode (or
   * fails), 'dead' when statfs fails (a FUSE connection that is gone), in one thread-pool job.
   */
  bindAlive(bind: string, root: string): Promise<BindLiveness>;
  /** bindMount when bindAlive(bind, root) says 'alive' ('bound'), else that answer with nothing mounted; one job. */
  bindMountIfAlive(source: string, target: string, readOnly: boolean, flags: string[], bind: string, root: string): Promise<'bound' | 'other' | 'dead'>;
}

export type BindLiveness = 'alive' | 'other' | 'dead';

let cached: NativeMountFns | undefined;

export function mountNative(): NativeMountFns {
  if (cached !== undefined) return cached;
  const m = (loadNative() as unknown as { mount?: Partial<NativeMountFns> }).mount;
  if (
    m === undefined ||
    typeof m.bindMount !== 'function' ||
    typeof m.unmount !== 'function' ||
    typeof m.unmountAll !== 'function' ||
    typeof m.bindAlive !== 'function' ||
    typeof m.bindMountIfAlive !== 'function'
  ) {
    throw new MountError('EMOUNT', 'the native addon has no mount part (stale build?); rebuild with: npm run build:native');
  }
  cached = m as NativeMountFns;
  return cached;
}
