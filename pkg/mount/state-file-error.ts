/** A state file of the node plugin that cannot be read or written. */
export class StateFileError extends Error {
  override readonly name = 'StateFileError';
  constructor(
    readonly code: 'ECORRUPT' | 'EVERSION' | 'EIO',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
