/**
 * A freshly made famfs on a Buffer-backed medium, and the FamfsError code a call throws: the setup
 * the format-level tests (famfs-fs, famfs-integrity, famfs-compact) share.
 */
import { DEFAULT_LOG_LEN, FamfsError, FamfsFs } from '../../pkg/famfs';
import { BufferMedia } from './buffer-media';

/** The master host's system UUID in the format-level tests. */
export const MASTER_UUID = '11111111-2222-4333-8444-555555555555';

const MiB = 1 << 20;

export interface FreshFamfsOptions {
  /** Device size (64 MiB). */
  size?: number;
  logLen?: number;
  now?: () => number;
  /** Bytes really held in memory (min(size, 64 MiB)): metadata lives in the first 10 MiB, beyond is virtual. */
  stored?: number;
  devicePath?: string;
}

/** mkfs as MASTER_UUID on a new BufferMedia; returns the medium and the master's FamfsFs. */
export function freshFamfs(o: FreshFamfsOptions = {}): { media: BufferMedia; fs: FamfsFs } {
  const size = o.size ?? 64 * MiB;
  const media = new BufferMedia(Buffer.alloc(o.stored ?? Math.min(size, 64 * MiB)), size);
  const fs = FamfsFs.mkfs(media, { systemUuid: MASTER_UUID, devicePath: o.devicePath ?? '/dev/shm/test', logLen: o.logLen ?? DEFAULT_LOG_LEN, now: o.now });
  return { media, fs };
}

/** The FamfsError code `fn` throws, 'OK' when it returns; any other error is rethrown. */
export function famfsCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof FamfsError) return e.code;
    throw e;
  }
  return 'OK';
}
