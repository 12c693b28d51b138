// Background zeroing (issue 15 item 3): while this controller holds the master role, it zeroes free
// memory that is not known clean (deleted volumes past the reclaim horizon, a fresh device) and
// marks it clean in shared memory (FamfsFs.zeroFree), so CreateVolume finds clean memory and does
// not zero on its own path. One slice at a time, with the event loop served in between: a request
// waits at most one slice (64 MiB by default, a few milliseconds).
import type { Logger } from 'pino';
import { FamfsError } from '../famfs/errors';
import type { ControllerStore } from './store';

export interface ZeroerOptions {
  log?: Logger;
  /** How often to look for dirty free memory (ms); 0 disables background zeroing. */
  intervalMs?: number;
  /** Bytes zeroed per slice between two turns of the event loop. */
  sliceBytes?: number;
  /** Punch holes instead of writing zeros where the device can (an emulation file stays sparse). */
  discard?: boolean;
}

export const DEFAULT_ZERO_INTERVAL_MS = 200;
const DEFAULT_SLICE = 64 * 1024 * 1024;
/**
 * How long a kick (a delete) waits before the slice runs, so the deletes of a burst are zeroed
 * by one slice: each slice reads the host slots (the horizon) and the log header, which cost
 * more than the few microseconds of punching or zeroing one volume. Creates take clean memory
 * meanwhile; a create that finds none zeroes on its own path and says so in the metric.
 */
const KICK_DELAY_MS = 50;

export class BackgroundZeroer {
  private timer: NodeJS.Timeout | undefined;
  private kicked: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = false;
  private readonly log: Logger | undefined;

  constructor(
    private readonly store: ControllerStore,
    private readonly opts: ZeroerOptions = {},
  ) {
    this.log = opts.log;
  }

  get enabled(): boolean {
    return (this.opts.intervalMs ?? DEFAULT_ZERO_INTERVAL_MS) > 0;
  }

  start(): void {
    if (!this.enabled || this.timer !== undefined) return;
    this.timer = setInterval(() => this.kick(), this.opts.intervalMs ?? DEFAULT_ZERO_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.kicked !== undefined) clearTimeout(this.kicked);
    this.timer = undefined;
    this.kicked = undefined;
  }

  /** Look soon (after a delete; deletes within KICK_DELAY_MS share one look): zero slice after slice until nothing free is dirty. */
  kick(): void {
    if (!this.enabled || this.running || this.stopped) return;
    this.running = true;
    this.kicked = setTimeout(() => {
      this.kicked = undefined;
      this.slice();
    }, KICK_DELAY_MS);
    this.kicked.unref();
  }

  private slice(): void {
    const fs = this.store.fs;
    let more = false;
    try {
      // Nothing to do unless something free is dirty, or deletes wait for the horizon.
      if (!this.stopped && this.store.isMaster && (fs.dirtyFreeBytes() > 0 || fs.allocator.hasPending)) {
        const r = this.store.runFamfs('zero freed memory', () =>
          fs.zeroFree({ maxBytes: this.opts.sliceBytes ?? DEFAULT_SLICE, discard: this.opts.discard === true }),
        );
        more = r.cleanMap && r.zeroedBytes > 0 && r.dirtyFreeBytes > 0;
        if (r.zeroedBytes > 0) this.log?.debug({ zeroedBytes: r.zeroedBytes, dirtyFreeBytes: r.dirtyFreeBytes }, 'zeroed freed memory');
      }
    } catch (e) {
      // Losing the master role already ended it (runFamfs); anything else is retried next interval.
      const code = e instanceof FamfsError ? e.code : undefined;
      this.log?.warn({ err: (e as Error).message, code }, 'background zeroing failed; retrying later');
    }
    if (more && !this.stopped) setImmediate(() => this.slice());
    else this.running = false;
  }
}
