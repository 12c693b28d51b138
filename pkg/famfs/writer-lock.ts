import { FamfsError } from './errors';
import type { Media } from './media';

/**
 * Run `fn` holding the medium's host-wide writer lock (Media.lockWriter), or throw ELOCKED having
 * run nothing. Every writer of the log on the master host goes through here: the FamfsFs write
 * methods and famfs repair. A medium without the lock (a test buffer) cannot be shared between
 * processes: `fn` just runs.
 */
export function withWriterLock<T>(media: Media, fn: () => T): T {
  if (media.lockWriter === undefined) return fn();
  if (!media.lockWriter()) {
    throw new FamfsError(
      'ELOCKED',
      'another famfs writer on this host holds the log lock (the famfs CLI or a second controller); nothing was written, retry when it is done',
    );
  }
  try {
    return fn();
  } finally {
    media.unlockWriter?.();
  }
}

/**
 * Run `fn` holding the medium's host-slot lock (Media.lockHostSlots), or throw ELOCKED having run
 * nothing. Taken by every write of host slots (acks, clearing damaged slots); never waits for the
 * writer lock, and a writer that needs both takes the writer lock first.
 */
export function withHostSlotLock<T>(media: Media, fn: () => T): T {
  if (media.lockHostSlots === undefined) return fn();
  if (!media.lockHostSlots()) {
    throw new FamfsError('ELOCKED', 'another process of this host is publishing its replay position (host-slot lock); nothing was written, retry');
  }
  try {
    return fn();
  } finally {
    media.unlockHostSlots?.();
  }
}
