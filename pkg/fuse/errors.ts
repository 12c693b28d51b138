/**
 * Typed errors of the famfs FUSE server. `code` is what callers branch on (the control socket
 * puts it in replies, the CLI maps it to an exit status); messages say what to do next.
 */
export type FuseErrorCode =
  | 'ENATIVE' // the addon has no FUSE part (stale or missing build)
  | 'EMOUNT' // mounting failed (not root, mountpoint missing or busy, no /dev/fuse)
  | 'ENOENT' // no such path in the famfs tree
  | 'EISDIR' // a file operation on a directory
  | 'EINVAL' // bad request or option
  | 'EIO' // a memory error while flushing/invalidating; the device is now failed
  | 'ESTOPPED' // the server is not running
  | 'EHANDOVER' // handing the connection to a new server failed
  | 'EAGAIN' // handing the connection over right now: ask the new server (retry)
  | 'ECONTROL'; // control-socket transport error (client side)

export class FuseError extends Error {
  override readonly name = 'FuseError';
  constructor(
    readonly code: FuseErrorCode,
    message: string,
  ) {
    super(message);
  }
}
