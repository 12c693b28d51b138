/**
 * Errors of the device layer, as typed values: callers branch on `code`, never on messages.
 */

/** What went wrong with a device; native errors carry the same codes. */
export type DeviceErrorCode =
  | 'ENOENT' // no such device or file
  | 'EACCES' // permission denied, or a write to a device opened read-only
  | 'ENOTDAX' // a character device that is not devdax
  | 'EINVAL' // bad argument: a path that is neither devdax nor a file, misaligned window, bad option
  | 'ERANGE' // offset/length outside the device
  | 'EEXIST' // asked to create an emulation file that exists with another size
  | 'EFAULT_DEVICE' // a memory access faulted (SIGBUS); the device is failed from now on
  | 'ECLOSED' // the device was closed
  | 'ENATIVE' // the native addon could not be loaded
  | 'EIO'; // any other system error (the errno name is in `errno`)

const KNOWN_CODES: ReadonlySet<string> = new Set<DeviceErrorCode>([
  'ENOENT',
  'EACCES',
  'ENOTDAX',
  'EINVAL',
  'ERANGE',
  'EEXIST',
  'EFAULT_DEVICE',
  'ECLOSED',
  'ENATIVE',
  'EIO',
]);

export class DeviceError extends Error {
  override readonly name = 'DeviceError';
  readonly code: DeviceErrorCode;
  /** The device path, when known. */
  readonly path?: string;
  /** Device offset the error is about (the faulting offset for EFAULT_DEVICE), when known. */
  readonly offset?: number;
  /** The raw errno name when `code` is 'EIO' because the system error has no code of its own here. */
  readonly errno?: string;

  constructor(code: DeviceErrorCode, message: string, details: { path?: string; offset?: number; errno?: string; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.path !== undefined) this.path = details.path;
    if (details.offset !== undefined) this.offset = details.offset;
    if (details.errno !== undefined) this.errno = details.errno;
  }

  /** True when `e` is a DeviceError, optionally with the given code. */
  static is(e: unknown, code?: DeviceErrorCode): e is DeviceError {
    return e instanceof DeviceError && (code === undefined || e.code === code);
  }
}

/** Turns whatever the native layer threw into a DeviceError (keeping its code, offset and path). */
export function toDeviceError(e: unknown, path?: string): DeviceError {
  if (e instanceof DeviceError) return e;
  if (e instanceof Error) {
    const raw = e as Error & { code?: unknown; offset?: unknown; path?: unknown };
    const rawCode = typeof raw.code === 'string' ? raw.code : undefined;
    const code: DeviceErrorCode = rawCode !== undefined && KNOWN_CODES.has(rawCode) ? (rawCode as DeviceErrorCode) : 'EIO';
    const details: { path?: string; offset?: number; errno?: string; cause: unknown } = { cause: e };
    const p = typeof raw.path === 'string' ? raw.path : path;
    if (p !== undefined) details.path = p;
    if (typeof raw.offset === 'number') details.offset = raw.offset;
    if (code === 'EIO' && rawCode !== undefined) details.errno = rawCode;
    return new DeviceError(code, e.message, details);
  }
  return new DeviceError('EIO', String(e), path === undefined ? {} : { path });
}
