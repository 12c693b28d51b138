/**
 * Typed loader for the native addon's device part (native/src/device.cc). Nothing untyped
 * leaves this module: the addon object is checked once and then described by interfaces.
 */
import * as fs from 'fs';
import * as path from 'path';

import { DeviceError } from './errors.js';

/** Options of the native DaxDevice constructor. */
export interface NativeOpenOptions {
  readOnly?: boolean;
  /** Create the emulation file (or size an empty one) with this many bytes. */
  createSize?: number;
  /** Map only a window of the device: both multiples of `alignment`; offsets are then window-relative. */
  mapOffset?: number;
  mapLength?: number;
}

export type NativeOffset = number | bigint;

/**
 * One mapped device as the addon exposes it. Every method except `view` is guarded: a memory
 * fault throws an Error with code 'EFAULT_DEVICE' and marks the device failed.
 */
export interface NativeDeviceHandle {
  read(offset: NativeOffset, length: NativeOffset): Buffer;
  /** Fills all of `target` from `offset`; returns the byte count. */
  readInto(offset: NativeOffset, target: Uint8Array): number;
  /** Returns the byte count. */
  write(offset: NativeOffset, data: Uint8Array): number;
  /** memmove within the device (overlap allowed). */
  copy(dstOffset: NativeOffset, srcOffset: NativeOffset, length: NativeOffset): void;
  /** copy with the bytes in memory on return (non-temporal stores; no flush needed). */
  copyPersistent(dstOffset: NativeOffset, srcOffset: NativeOffset, length: NativeOffset): void;
  /** Emulation files: punch a hole (reads zero, pages released); false when the device cannot. */
  discard(offset: NativeOffset, length: NativeOffset): boolean;
  flush(offset: NativeOffset, length: NativeOffset): void;
  zero(offset: NativeOffset, length: NativeOffset): void;
  invalidate(offset: NativeOffset, length: NativeOffset): void;
  /** invalidate + readInto in one call; returns the byte count. */
  readFresh(offset: NativeOffset, target: Uint8Array): number;
  /**
   * Reads each check range fresh and compares it with its expected bytes; when all match, writes
   * and flushes `data` (if given) and returns true; false (nothing written) on a mismatch.
   */
  writeFlushIf(
    offset: NativeOffset,
    data: Uint8Array | undefined,
    checkOffsetA?: NativeOffset,
    expectedA?: Uint8Array,
    checkOffsetB?: NativeOffset,
    expectedB?: Uint8Array,
  ): boolean;
  /** Zero-copy Buffer over the mapping. UNGUARDED: a fault while touching it kills the process. */
  view(offset: NativeOffset, length: NativeOffset): Buffer;
  close(): void;
  markFailed(reason: string): void;
  /** flock(2) LOCK_EX|LOCK_NB on the device's descriptor: true when taken, false when another open of the inode holds it. */
  tryLockWriter(): boolean;
  unlockWriter(): void;
  /** fcntl(2) F_OFD_SETLK on byte 0 of the inode (apart from the flock): true when taken, false when another open holds it. */
  tryLockHostSlots(): boolean;
  unlockHostSlots(): void;
  readonly size: number;
  readonly deviceSize: number;
  readonly mapOffset: number;
  readonly kind: 'devdax' | 'file';
  readonly path: string;
  readonly readOnly: boolean;
  readonly mapSync: boolean;
  readonly alignment: number;
  readonly flushMethod: string;
  readonly invalidateMethod: string;
  readonly failed: boolean;
  readonly failureMessage: string | null;
  readonly closed: boolean;
}

export interface NativeDeviceAddon {
  readonly abiVersion: number;
  readonly parts: readonly string[];
  readonly DaxDevice: new (path: string, options?: NativeOpenOptions) => NativeDeviceHandle;
  readonly flushMethod: 'clwb' | 'clflushopt' | 'clflush' | 'fence';
  readonly invalidateMethod: 'clflushopt' | 'clflush' | 'fence';
  readonly cacheLineSize: number;
}

const ADDON_FILE = path.join('build', 'Release', 'famfs_native.node');

/** Where the addon may be: $FAMFS_NATIVE_ADDON, else the package root above this file (src or dist). */
function candidates(): string[] {
  const out: string[] = [];
  const env = process.env['FAMFS_NATIVE_ADDON'];
  if (env !== undefined && env !== '') out.push(env);
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    out.push(path.join(dir, ADDON_FILE));
    dir = path.dirname(dir);
  }
  return out;
}

function isAddon(v: unknown): v is NativeDeviceAddon {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o['DaxDevice'] === 'function' && typeof o['flushMethod'] === 'string';
}

let cached: NativeDeviceAddon | undefined;

/** The loaded addon (loaded once per thread); throws DeviceError 'ENATIVE' with build advice. */
export function loadNative(): NativeDeviceAddon {
  if (cached !== undefined) return cached;
  const tried = candidates();
  const file = tried.find((p) => fs.existsSync(p));
  if (file === undefined) {
    throw new DeviceError('ENATIVE', `native addon not found (tried ${tried.join(', ')}); build it with: npm run build:native`);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod: unknown = require(file);
  if (!isAddon(mod)) {
    throw new DeviceError('ENATIVE', `${file} has no device layer (stale build?); rebuild with: npm run build:native`);
  }
  cached = mod;
  return mod;
}
