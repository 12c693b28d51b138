/**
 * The byte-addressable memory a famfs instance lives on, as the format code sees it.
 *
 * The format layer never decides *how* memory is reached (raw devdax mapping, an emulation
 * file, a test image): it only needs these five operations. Implementations must turn a
 * memory fault (SIGBUS: poison, device gone, backing file shrunk) into a thrown error rather
 * than a crashed process; see pkg/device.
 */
export interface Media {
  /** Usable size in bytes. */
  readonly size: number;
  /**
   * True when every byte is known to read zero (an emulation file this process just created and
   * has not written). famfs mkfs marks such a data area clean (clean map) without zeroing it.
   */
  readonly unwritten?: boolean;
  /** Copy `length` bytes starting at `offset` out of the memory (a fresh Buffer). */
  read(offset: number, length: number): Buffer;
  /** Like read, into a caller's buffer (replay reuses one scratch buffer instead of allocating megabytes). */
  readInto?(offset: number, target: Uint8Array): void;
  /** Copy `data` into the memory at `offset`. Does not flush. */
  write(offset: number, data: Uint8Array): void;
  /** Zero a range so the zeros are in memory on return (as write + flush would, but cheaper). */
  zero?(offset: number, length: number): void;
  /**
   * Make a range read zero without writing it, releasing its pages (an emulation file: a punched
   * hole). False when the medium cannot (devdax): the caller zeroes it instead.
   */
  discard?(offset: number, length: number): boolean;
  /** Write back CPU cache lines covering [offset, offset+length) and fence (persistence / visibility to other hosts). */
  flush(offset: number, length: number): void;
  /**
   * Take the host-wide famfs writer lock, waiting up to the implementation's bound: true when
   * taken, false when another process on this host kept it that long. Two processes of one master
   * host (the famfs CLI next to a controller, two controllers during a rollout) would otherwise
   * both append at the same next_index. Absent: the medium cannot be shared between processes
   * (a test buffer), so nothing needs excluding. Re-entrant on one object: nested calls count, and
   * the lock is released by the unlockWriter matching the outermost call.
   */
  lockWriter?(): boolean;
  /** Release what the matching lockWriter took. */
  unlockWriter?(): void;
  /**
   * Take the host-wide host-slot lock, apart from the writer lock, with the same bound and
   * nesting: the read-modify-write of this host's replay-position slot by two processes of one
   * host (a FUSE server and its successor) would otherwise lose an ack. Apart so that an ack
   * never waits for the log writer, which can hold its lock back to back while volumes churn:
   * an ack that cannot be published lets the host's self-fence run out. Absent: as lockWriter.
   */
  lockHostSlots?(): boolean;
  /** Release what the matching lockHostSlots took. */
  unlockHostSlots?(): void;
  /** Drop CPU cache lines covering the range so the next read sees what other hosts wrote. */
  invalidate(offset: number, length: number): void;
  /** invalidate + readInto in one step (optional: see readFresh below). */
  readFresh?(offset: number, target: Uint8Array): void;
  /**
   * Reads each check range (checkA/expectedA, checkB/expectedB, when given) fresh and compares it
   * with the expected bytes; when all match, writes and flushes `data` (when given) and returns
   * true; on a mismatch returns false having written nothing (optional: see writeFlushIf below).
   */
  writeFlushIf?(offset: number, data: Uint8Array | undefined, checkA?: number, expectedA?: Uint8Array, checkB?: number, expectedB?: Uint8Array): boolean;
  /**
   * The addon's device object behind this medium (pkg/device), when there is one: the native log
   * tree reads the log straight from its mapping (guarded, invalidated first) instead of through
   * a copy. Absent for any other medium.
   */
  readonly nativeHandle?: object;
}

/**
 * Fills `target` with what is at `offset` now (invalidated first, so other hosts' writes are seen):
 * one call where the medium has readFresh, else invalidate then read.
 */
export function readFresh(media: Media, offset: number, target: Buffer): void {
  if (media.readFresh) return media.readFresh(offset, target);
  media.invalidate(offset, target.length);
  if (media.readInto) media.readInto(offset, target);
  else media.read(offset, target.length).copy(target);
}

/** Write and flush `data` at `offset` (one call where the medium has writeFlushIf). */
export function writeFlush(media: Media, offset: number, data: Uint8Array): void {
  if (media.writeFlushIf) {
    media.writeFlushIf(offset, data);
    return;
  }
  media.write(offset, data);
  media.flush(offset, data.length);
}

/**
 * Writes and flushes `data` (when given) only if each check range reads fresh exactly as expected;
 * false, having written nothing, on a mismatch. One call where the medium has writeFlushIf: the
 * famfs writer's compare-then-store steps (slot still empty, fence still ours) cost one crossing
 * into the native layer instead of four to six.
 */
export function writeFlushIf(
  media: Media,
  offset: number,
  data: Uint8Array | undefined,
  checkA?: number,
  expectedA?: Uint8Array,
  checkB?: number,
  expectedB?: Uint8Array,
): boolean {
  if (media.writeFlushIf) return media.writeFlushIf(offset, data, checkA, expectedA, checkB, expectedB);
  for (const [at, want] of [
    [checkA, expectedA],
    [checkB, expectedB],
  ] as const) {
    if (at === undefined || want === undefined) continue;
    media.invalidate(at, want.length);
    if (!media.read(at, want.length).equals(want)) return false;
  }
  if (data !== undefined) {
    media.write(offset, data);
    media.flush(offset, data.length);
  }
  return true;
}
