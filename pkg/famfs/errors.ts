/**
 * Typed errors of the famfs core. The `code` says what kind of failure it is so that callers
 * (the CLI's exit codes, the CSI state layer's gRPC status) map it in one place without parsing
 * messages. Messages say what is wrong and, where there is one, what to do next.
 */
export type FamfsErrorCode =
  | 'EINVAL' // bad argument
  | 'ENOENT' // no such file or directory
  | 'EEXIST' // already exists
  | 'ENOTDIR' // a path component is a file
  | 'EISDIR' // expected a file, found a directory
  | 'ENOTEMPTY' // directory not empty
  | 'ENAMETOOLONG' // famfs paths hold 79 bytes
  | 'ENOSPC' // no free memory of that shape
  | 'ELOGFULL' // no free log entry
  | 'ECORRUPT' // on-media metadata fails validation
  | 'ENOTFAMFS' // no famfs superblock on the device
  | 'EFENCED' // this writer lost its fencing epoch: another master took over
  | 'ENOTMASTER' // this host is not the famfs master
  | 'EROFS' // opened read-only
  | 'EIO' // the memory faulted
  | 'EAGAIN' // the log generation kept changing while being read: try again
  | 'ELOCKED' // another process on this host holds the famfs writer lock: try again
  | 'EUNSUPPORTED'; // a feature or version this build does not know

export class FamfsError extends Error {
  override readonly name = 'FamfsError';
  constructor(
    readonly code: FamfsErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function isFamfsError(e: unknown, code?: FamfsErrorCode): e is FamfsError {
  return e instanceof FamfsError && (code === undefined || e.code === code);
}
