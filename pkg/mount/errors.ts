/** Failures of mount operations, with what was attempted and the tool's message. */
export type MountErrorCode = 'EMOUNT' | 'EUMOUNT' | 'EREMOUNT' | 'ENOTDIR' | 'EBUSY';

export class MountError extends Error {
  override readonly name = 'MountError';
  constructor(
    readonly code: MountErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
