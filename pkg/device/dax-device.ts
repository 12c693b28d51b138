/**
 * DaxDevice: famfs' Media on a mapped devdax device or emulation file.
 *
 * Every access except `view` goes through the native guarded path, so a memory fault
 * (SIGBUS) surfaces as a DeviceError 'EFAULT_DEVICE' and leaves the device `failed`, instead
 * of killing the process and every mount it serves (design-hazards §7).
 */
import * as fs from 'fs';
import type { Media } from '../famfs/media.js';
import { DeviceError, toDeviceError } from './errors.js';
import { loadNative, type NativeDeviceHandle, type NativeOpenOptions } from './native.js';

/** Reads up to this size come from Node's Buffer pool (allocUnsafe pools sizes below 4 KiB). */
const SMALL_READ_MAX = 4095;

export type DeviceKind = 'devdax' | 'file';

export interface OpenDeviceOptions {
  /** Create the emulation file with `size` bytes if it does not exist (regular files only). */
  create?: { size: number };
  /** Map read-only: writes are refused with 'EACCES'. */
  readOnly?: boolean;
  /** Map only [offset, offset+length) of the device (multiples of its alignment); offsets become window-relative. */
  window?: { offset: number; length?: number };
  /** How long lockWriter waits for another process's writer lock (ms; default DEFAULT_WRITER_LOCK_WAIT_MS). */
  writerLockWaitMs?: number;
}

/**
 * How long a write waits for the host-wide writer lock. The famfs writes run synchronously, so a
 * waiting controller serves no request meanwhile: the bound keeps that short. Another writer holds
 * the lock for one operation (an append: microseconds; a compaction or a zeroing step: well under
 * a second), so the wait normally ends long before it.
 */
export const DEFAULT_WRITER_LOCK_WAIT_MS = 3000;
/** Sleep between two tries, growing from the first to the last (ms). */
const LOCK_SLEEP_FIRST_MS = 1;
const LOCK_SLEEP_MAX_MS = 20;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

export class DaxDevice implements Media {
  /** The addon's handle, for native consumers (the FUSE server starts a session on it). */
  readonly nativeHandle: NativeDeviceHandle;
  readonly path: string;
  readonly size: number;
  readonly kind: DeviceKind;
  readonly readOnly: boolean;
  /** The mapping was made with MAP_SYNC (a DAX device with synchronous page faults). */
  readonly mapSync: boolean;
  /** Mapping granularity: 2 MiB on a typical devdax, the page size for a file. */
  readonly alignment: number;
  readonly flushMethod: string;
  readonly invalidateMethod: string;

  /** How long lockWriter waits (ms); see DEFAULT_WRITER_LOCK_WAIT_MS. */
  writerLockWaitMs = DEFAULT_WRITER_LOCK_WAIT_MS;
  /** Calls of each lock not yet matched by its unlock (a lock is held while its count is > 0). */
  private readonly held = { writer: 0, hostSlots: 0 };

  /** This open created the emulation file: it read as zeros (see unwritten). */
  readonly created: boolean;
  private touched = false;

  constructor(handle: NativeDeviceHandle, created = false) {
    this.nativeHandle = handle;
    this.created = created;
    this.path = handle.path;
    this.size = handle.size;
    this.kind = handle.kind;
    this.readOnly = handle.readOnly;
    this.mapSync = handle.mapSync;
    this.alignment = handle.alignment;
    this.flushMethod = handle.flushMethod;
    this.invalidateMethod = handle.invalidateMethod;
  }

  /**
   * Every byte reads zero: this open created the file (ftruncate fills with zeros) and nothing was
   * written through this handle since. famfs mkfs then marks the data area clean instead of having
   * it zeroed again (a real devdax is never "created": it holds whatever it held).
   */
  get unwritten(): boolean {
    return this.created && !this.touched;
  }

  /** A memory fault happened on this device; every later access throws 'EFAULT_DEVICE'. */
  get failed(): boolean {
    return this.nativeHandle.failed;
  }

  /** Why the device failed (offset and advice), or undefined while it is healthy. */
  get failureMessage(): string | undefined {
    return this.nativeHandle.failureMessage ?? undefined;
  }

  get closed(): boolean {
    return this.nativeHandle.closed;
  }

  read(offset: number, length: number): Buffer {
    try {
      // Small reads (famfs log entries) are cheaper from Node's Buffer pool than from a
      // native allocation; large ones come straight from the addon.
      if (length > 0 && length <= SMALL_READ_MAX && Number.isSafeInteger(length)) {
        const out = Buffer.allocUnsafe(length);
        this.nativeHandle.readInto(offset, out);
        return out;
      }
      return this.nativeHandle.read(offset, length);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /** Fills `target` from `offset` without allocating; returns the byte count. */
  readInto(offset: number, target: Uint8Array): number {
    try {
      return this.nativeHandle.readInto(offset, target);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  write(offset: number, data: Uint8Array): void {
    this.touched = true;
    try {
      this.nativeHandle.write(offset, data);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /** Copies `length` bytes inside the device (overlapping ranges allowed). */
  copy(dstOffset: number, srcOffset: number, length: number): void {
    this.touched = true;
    try {
      this.nativeHandle.copy(dstOffset, srcOffset, length);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /**
   * Emulation files only: punch a hole over the range (page aligned), so it reads zero without
   * being written and its tmpfs pages go back to the system. False when the device cannot (a
   * devdax has no holes): zero it instead.
   */
  discard(offset: number, length: number): boolean {
    this.touched = true;
    try {
      return this.nativeHandle.discard(offset, length);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /** Like copy, with the bytes in memory on return: no flush needed (clones, snapshots). */
  copyPersistent(dstOffset: number, srcOffset: number, length: number): void {
    this.touched = true;
    try {
      this.nativeHandle.copyPersistent(dstOffset, srcOffset, length);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  flush(offset: number, length: number): void {
    try {
      this.nativeHandle.flush(offset, length);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /** Zero a range with the zeros already in memory on return (no flush needed). */
  zero(offset: number, length: number): void {
    this.touched = true;
    try {
      this.nativeHandle.zero(offset, length);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  invalidate(offset: number, length: number): void {
    try {
      this.nativeHandle.invalidate(offset, length);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /** invalidate + readInto in one native call (Media.readFresh). */
  readFresh(offset: number, target: Uint8Array): void {
    try {
      this.nativeHandle.readFresh(offset, target);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /** Compare-then-write-and-flush in one native call (Media.writeFlushIf). */
  writeFlushIf(offset: number, data: Uint8Array | undefined, checkA?: number, expectedA?: Uint8Array, checkB?: number, expectedB?: Uint8Array): boolean {
    if (data !== undefined) this.touched = true;
    try {
      return this.nativeHandle.writeFlushIf(offset, data, checkA, expectedA, checkB, expectedB);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /**
   * Zero-copy Buffer over [offset, offset+length). UNGUARDED: if the memory faults while JS
   * touches the Buffer the process dies. For benchmarks and mmap-style users only; famfs code
   * uses read/write. The Buffer keeps the mapping alive after close().
   */
  view(offset: number, length: number): Buffer {
    this.touched = true;
    try {
      return this.nativeHandle.view(offset, length);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /**
   * The host-wide famfs writer lock (Media.lockWriter): flock(2) on the device's inode, tried
   * without blocking and retried with short sleeps for up to writerLockWaitMs. Only processes that
   * open the same inode exclude each other: a containerised writer must see the host's device node
   * (the chart mounts the host's /dev). Released by unlockWriter, or by the kernel when the process
   * exits however it exits.
   */
  lockWriter(): boolean {
    // Nested writes (a compaction inside a create) hold it already through this descriptor.
    return this.lock('writer', () => this.nativeHandle.tryLockWriter());
  }

  unlockWriter(): void {
    this.unlock('writer', () => this.nativeHandle.unlockWriter());
  }

  /**
   * The host-wide host-slot lock (Media.lockHostSlots): an open file description record lock on
   * the device's inode, apart from the writer's flock, with lockWriter's wait bound. Released by
   * unlockHostSlots, or by the kernel when the process exits.
   */
  lockHostSlots(): boolean {
    return this.lock('hostSlots', () => this.nativeHandle.tryLockHostSlots());
  }

  unlockHostSlots(): void {
    this.unlock('hostSlots', () => this.nativeHandle.unlockHostSlots());
  }

  /** Take lock `which` (or count one more nested call of it), waiting as waitFor does. */
  private lock(which: keyof DaxDevice['held'], tryLock: () => boolean): boolean {
    if (this.held[which] > 0) {
      this.held[which]++;
      return true;
    }
    if (!this.waitFor(tryLock)) return false;
    this.held[which] = 1;
    return true;
  }

  /** Release lock `which` once the outermost of its nested calls ends. */
  private unlock(which: keyof DaxDevice['held'], release: () => void): void {
    if (this.held[which] === 0 || --this.held[which] > 0) return;
    try {
      release();
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /** Try `tryLock` without blocking, retried with short sleeps for up to writerLockWaitMs. */
  private waitFor(tryLock: () => boolean): boolean {
    const deadline = Date.now() + this.writerLockWaitMs;
    let sleep = LOCK_SLEEP_FIRST_MS;
    for (;;) {
      try {
        if (tryLock()) return true;
      } catch (e) {
        throw toDeviceError(e, this.path);
      }
      const left = deadline - Date.now();
      if (left <= 0) return false;
      Atomics.wait(sleeper, 0, 0, Math.min(sleep, left));
      sleep = Math.min(sleep * 2, LOCK_SLEEP_MAX_MS);
    }
  }

  /** Marks the device failed by hand (e.g. a FUSE thread or health check found it bad). */
  markFailed(reason: string): void {
    try {
      this.nativeHandle.markFailed(reason);
    } catch (e) {
      throw toDeviceError(e, this.path);
    }
  }

  /** Releases this object's mapping (unmapped once no view or FUSE session holds it). Idempotent. */
  close(): void {
    this.nativeHandle.close();
  }
}

/**
 * Opens (and maps) a devdax character device or a regular file standing in for one; the kind
 * is decided by what the path is. Throws DeviceError: 'ENOENT', 'ENOTDAX', 'EINVAL', 'EACCES',
 * 'EEXIST', 'ERANGE', ...
 */
export function openDevice(path: string, options: OpenDeviceOptions = {}): DaxDevice {
  const nativeOptions: NativeOpenOptions = { readOnly: options.readOnly === true };
  if (options.create !== undefined) {
    const size = options.create.size;
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new DeviceError('EINVAL', `create.size must be a positive integer, got ${size}`, { path });
    }
    nativeOptions.createSize = size;
  }
  if (options.window !== undefined) {
    nativeOptions.mapOffset = options.window.offset;
    if (options.window.length !== undefined) nativeOptions.mapLength = options.window.length;
  }
  const wait = options.writerLockWaitMs;
  if (wait !== undefined && (!Number.isSafeInteger(wait) || wait < 0)) {
    throw new DeviceError('EINVAL', `writerLockWaitMs must be a non-negative integer, got ${wait}`, { path });
  }
  const addon = loadNative();
  // A file that does not exist yet (or is empty) is created zero-filled by this open.
  let created = false;
  if (options.create !== undefined) {
    try {
      created = fs.statSync(path).size === 0;
    } catch {
      created = true;
    }
  }
  let dev: DaxDevice;
  try {
    dev = new DaxDevice(new addon.DaxDevice(path, nativeOptions), created);
  } catch (e) {
    throw toDeviceError(e, path);
  }
  if (options.writerLockWaitMs !== undefined) dev.writerLockWaitMs = options.writerLockWaitMs;
  return dev;
}
