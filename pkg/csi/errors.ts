// Typed CSI errors: each carries the gRPC status the spec prescribes, chosen where the failure is
// detected (the code that knows *why* something failed knows which status the CO expects). The
// server's wrapper turns them into gRPC errors; anything untyped becomes INTERNAL.
import { status } from '@grpc/grpc-js';
import { DeviceError } from '../device/errors';
import { FamfsError, type FamfsErrorCode } from '../famfs/errors';

export class CsiError extends Error {
  override readonly name = 'CsiError';
  constructor(
    readonly code: status,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The status name, e.g. "INVALID_ARGUMENT" (for logs and test messages). */
  get codeName(): string {
    return status[this.code] ?? String(this.code);
  }
}

export function isCsiError(e: unknown, code?: status): e is CsiError {
  return e instanceof CsiError && (code === undefined || e.code === code);
}

/** A required field is missing or a value is malformed. */
export const invalidArgument = (msg: string, cause?: unknown): CsiError => new CsiError(status.INVALID_ARGUMENT, msg, { cause });
/** The volume, snapshot or node the request names does not exist. */
export const notFound = (msg: string, cause?: unknown): CsiError => new CsiError(status.NOT_FOUND, msg, { cause });
/** Same name or target, incompatible arguments. */
export const alreadyExists = (msg: string, cause?: unknown): CsiError => new CsiError(status.ALREADY_EXISTS, msg, { cause });
/** The system is not in a state that allows the operation (volume in use, published elsewhere, ...). */
export const failedPrecondition = (msg: string, cause?: unknown): CsiError => new CsiError(status.FAILED_PRECONDITION, msg, { cause });
/** No space of the requested shape, log full, or the requested topology cannot be served. */
export const resourceExhausted = (msg: string, cause?: unknown): CsiError => new CsiError(status.RESOURCE_EXHAUSTED, msg, { cause });
/** The requested capacity range cannot be satisfied. */
export const outOfRange = (msg: string, cause?: unknown): CsiError => new CsiError(status.OUT_OF_RANGE, msg, { cause });
/** Another operation on the same volume is in flight, or a list token is stale. */
export const aborted = (msg: string, cause?: unknown): CsiError => new CsiError(status.ABORTED, msg, { cause });
/** A bug or an unexpected failure of our own. */
export const internal = (msg: string, cause?: unknown): CsiError => new CsiError(status.INTERNAL, msg, { cause });
/** Transient: the device or the log writer is not available right now; the CO should retry. */
export const unavailable = (msg: string, cause?: unknown): CsiError => new CsiError(status.UNAVAILABLE, msg, { cause });
/** The RPC or feature is not offered by this plugin. */
export const unimplemented = (msg: string, cause?: unknown): CsiError => new CsiError(status.UNIMPLEMENTED, msg, { cause });

/**
 * famfs core error code → gRPC status: the single mapping the state layer uses. A Record (not a
 * switch) so that a code added to FamfsErrorCode fails to compile here until it is mapped.
 */
export const FAMFS_TO_GRPC: Readonly<Record<FamfsErrorCode, status>> = {
  EINVAL: status.INVALID_ARGUMENT,
  ENAMETOOLONG: status.INVALID_ARGUMENT,
  ENOENT: status.NOT_FOUND,
  EEXIST: status.ALREADY_EXISTS,
  // A path of the wrong kind or a non-empty directory means our namespace under the volume
  // prefix is not what we wrote: the request cannot proceed until someone repairs it.
  ENOTDIR: status.FAILED_PRECONDITION,
  EISDIR: status.FAILED_PRECONDITION,
  ENOTEMPTY: status.FAILED_PRECONDITION,
  // Both mean "cannot provision here": RESOURCE_EXHAUSTED lets external-provisioner reschedule.
  ENOSPC: status.RESOURCE_EXHAUSTED,
  ELOGFULL: status.RESOURCE_EXHAUSTED,
  ECORRUPT: status.INTERNAL,
  ENOTFAMFS: status.FAILED_PRECONDITION,
  // Another host holds the writer role now: transient from the CO's point of view (it retries,
  // and the new master's controller will answer).
  EFENCED: status.UNAVAILABLE,
  ENOTMASTER: status.UNAVAILABLE,
  EROFS: status.FAILED_PRECONDITION,
  EIO: status.INTERNAL,
  EAGAIN: status.UNAVAILABLE,
  // The famfs CLI or a second controller on this host is writing the log: retry shortly.
  ELOCKED: status.UNAVAILABLE,
  EUNSUPPORTED: status.FAILED_PRECONDITION,
};

/** Wraps a famfs core error into the CsiError its code maps to; `context` says which operation failed. */
export function fromFamfsError(e: FamfsError, context: string): CsiError {
  const code = FAMFS_TO_GRPC[e.code] ?? status.INTERNAL;
  return new CsiError(code, `${context}: ${e.message} (${e.code})`, { cause: e });
}

/**
 * Any thrown value → CsiError. CsiErrors pass through, famfs errors are mapped, everything else is
 * INTERNAL with its message kept (the CO shows it to users; a stack belongs in our log, not there).
 */
export function toCsiError(e: unknown, context = 'internal error'): CsiError {
  if (e instanceof CsiError) return e;
  if (e instanceof FamfsError) return fromFamfsError(e, context);
  // A memory error (SIGBUS on the shared memory) is not a bug of ours: the device failed, and the
  // CO should back off and retry (another host, or after the device is replaced).
  if (DeviceError.is(e, 'EFAULT_DEVICE')) return new CsiError(status.UNAVAILABLE, `${context}: device failed (memory error): ${e.message}`, { cause: e });
  const message = e instanceof Error ? e.message : String(e);
  return new CsiError(status.INTERNAL, `${context}: ${message}`, { cause: e });
}
