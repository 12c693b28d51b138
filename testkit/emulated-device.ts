/**
 * Emulated devices: a file in /dev/shm (RAM-backed tmpfs) standing in for /dev/daxX.Y, the
 * way every test and single-machine setup runs where the kernel has no devdax.
 */
import * as fs from 'fs';
import * as path from 'path';

import { DaxDevice, openDevice } from '../pkg/device/dax-device.js';
import { DeviceError } from '../pkg/device/errors.js';

export const EMULATION_DIR = '/dev/shm';

/** The path of the emulation file for `name`: /dev/shm/famfs-<name>. */
export function emulatedDevicePath(name: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(name) || name === '.' || name === '..') {
    throw new DeviceError('EINVAL', `emulated device name must be [A-Za-z0-9._-]+, got ${JSON.stringify(name)}`);
  }
  return path.join(EMULATION_DIR, `famfs-${name}`);
}

export interface EmulatedDeviceOptions {
  /** Delete an existing file of that name first (default: reuse it if it has the same size). */
  fresh?: boolean;
}

/** Creates (or reopens) /dev/shm/famfs-<name> with `size` bytes and maps it. */
export function createEmulatedDevice(name: string, size: number, options: EmulatedDeviceOptions = {}): DaxDevice {
  const file = emulatedDevicePath(name);
  if (options.fresh === true) fs.rmSync(file, { force: true });
  return openDevice(file, { create: { size } });
}

/** Removes the emulation file (the mapping of already-open devices stays valid). */
export function removeEmulatedDevice(name: string): void {
  fs.rmSync(emulatedDevicePath(name), { force: true });
}
