// The node plugin's side of famfs-fused's read-only guard (pkg/fuse/guard.ts, issue 12).
//
// A read-only publish is a `ro` bind, which a pod with CAP_SYS_ADMIN can remount rw; so this node's
// FUSE server is told which famfs paths this node serves ONLY read-only, and refuses every change
// to them (EROFS) whatever a bind's flags say. The set follows from the records:
//
//   read-only   every path with a read-only publish, or a read-only staging (ReadOnlyMany, reader-only
//               modes, shares of a frozen source, static paths published read-only)
//   writable    paths with a read-write publish on this node that overlap a read-only one: the
//               read-write publish (allowed by the controller) lifts the guard for them
//
// Order matters, and is kept by every caller: the guard is set BEFORE a read-only bind is made
// (begin), lifted BEFORE a read-write bind is made (begin), and set again only AFTER the last
// read-write target is gone (sync after the record is removed). The departed writer's mmap writes
// are in the memory by then: the kernel writes a FUSE file's dirty shared pages back when the
// mapping goes (its pod is gone before the kubelet unpublishes), while the file was still writable.
//
// The plugin keeps one entry per staging/target path here (loaded from the records at start, then
// changed with the records: begin before a bind, drop after an unbind), with counts per famfs path,
// so a publish costs a few map operations, not a scan of every record: a read-write publish of a
// volume no read-only path overlaps changes nothing and sends nothing. The whole set is sent when it
// changes (idempotent), by one queue, computed when it is sent: two publishes of different volumes
// never send each other's stale view.
//
// Restarts: famfs-fused keeps the set it was sent in a file and reads it before serving again (see
// guard.ts); this plugin sends the set again after its own start (restore) and after it started a
// server, so a stale file is corrected from the records.
import type { Logger } from 'pino';

import { sameGuard, type ReadOnlyGuard } from '../fuse/guard';
import type { ControlReply } from '../fuse/control-protocol';
import { unavailable } from './errors';

/** What of a staged or published record decides the guard: the famfs path it shows, and how. */
export interface GuardRecord {
  /** famfs path relative to the root (a volume's directory, a static path, a share's source). */
  path: string;
  readOnly: boolean;
}

export interface NodeGuardOptions {
  /** Sends a `guard` control op to this node's FUSE server. */
  send: (g: ReadOnlyGuard) => Promise<ControlReply>;
  /** Every record that binds something (key: its staging or target path), read once, at first use. */
  records: () => Promise<Iterable<[string, GuardRecord]>>;
  log: Logger;
  /** How long a change waits for an unreachable or handing-over server (default 10 s). */
  retryMs?: number;
}

/** A bind about to be made (begin): `fail` when it could not be made. */
export interface GuardIntent {
  /** The bind failed: the entry goes back to what it was, then `e` is rethrown (for `.catch(intent.fail)`). */
  fail: (e: unknown) => Promise<never>;
}

/** For a bind that changes nothing in the guard (a read-write staging). */
export const NO_GUARD_CHANGE: GuardIntent = {
  fail: (e: unknown): Promise<never> => {
    throw e;
  },
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function clean(p: string): string {
  return p.replace(/^\/+/, '').replace(/\/+$/, '');
}

/** `p` and every directory above it, up to the root (''). */
function* selfAndAncestors(p: string): Generator<string> {
  let cur = p;
  for (;;) {
    yield cur;
    if (cur === '') return;
    const i = cur.lastIndexOf('/');
    cur = i < 0 ? '' : cur.slice(0, i);
  }
}

function bump(m: Map<string, number>, k: string, by: number): boolean {
  const n = (m.get(k) ?? 0) + by;
  if (n <= 0) m.delete(k);
  else m.set(k, n);
  return n === 0 || n === by; // crossed zero: the set of paths changed
}

export class NodeGuardSync {
  private queue: Promise<void> = Promise.resolve();
  /** One entry per staging or target path (what is bound there). */
  private readonly entries = new Map<string, GuardRecord>();
  private readonly ro = new Map<string, number>();
  private readonly rw = new Map<string, number>();
  /** Proper ancestors of read-only paths (counted): a writable path there overlaps one. */
  private readonly roAbove = new Map<string, number>();
  /** Proper ancestors of writable paths (counted). */
  private readonly rwAbove = new Map<string, number>();
  /** What famfs-fused holds, as far as we know (undefined: unknown, send the next set whatever it is). */
  private sent: ReadOnlyGuard | undefined;
  private dirty = true;
  private retry: NodeJS.Timeout | undefined;
  private loaded: Promise<void> | undefined;
  /** The records' entries are loaded (load() resolved). */
  private ready = false;

  constructor(private readonly o: NodeGuardOptions) {}

  /** The entries of the records as they are at the first use (later changes come through begin/drop). */
  private load(): Promise<void> {
    this.loaded ??= this.o.records().then((records) => {
      for (const [k, r] of records) if (!this.entries.has(k)) this.put(k, r);
      this.dirty = true;
      this.ready = true;
    });
    this.loaded.catch(() => (this.loaded = undefined));
    return this.loaded;
  }

  /**
   * Before a bind at `key` of famfs `path`: the guard with it counted is in famfs-fused when this
   * returns. Throws UNAVAILABLE when famfs-fused cannot be told (make no bind then).
   */
  async begin(key: string, path: string, readOnly: boolean): Promise<GuardIntent> {
    await this.load();
    const before = this.entries.get(key);
    this.put(key, { path, readOnly });
    try {
      await this.sync();
    } catch (e) {
      this.put(key, before);
      throw e;
    }
    return this.intent(key, path, before);
  }

  /**
   * begin, for a bind that changes nothing famfs-fused must hold (a read-write publish no read-only
   * path overlaps, the publish hot path): the entry is counted and the intent returned at once.
   * Undefined, with nothing changed, when something must be sent first (or the records are not
   * loaded yet, or famfs-fused was never told): call begin then.
   */
  beginQuiet(key: string, path: string, readOnly: boolean): GuardIntent | undefined {
    if (!this.ready || this.dirty || this.sent === undefined) return undefined;
    const before = this.entries.get(key);
    this.put(key, { path, readOnly });
    if (this.dirty) {
      // Back to the counts famfs-fused holds: nothing is left to send.
      this.put(key, before);
      this.dirty = false;
      return undefined;
    }
    return this.intent(key, path, before);
  }

  private intent(key: string, path: string, before: GuardRecord | undefined): GuardIntent {
    return {
      fail: async (e: unknown): Promise<never> => {
        if (this.entries.get(key)?.path === clean(path)) {
          this.put(key, before);
          await this.syncOrRetry();
        }
        throw e;
      },
    };
  }

  /** After an unbind at `key` (its record is gone): a failure to tell famfs-fused is retried in the background. */
  async drop(key: string): Promise<void> {
    await this.load();
    if (!this.entries.has(key)) return;
    this.put(key, undefined);
    await this.syncOrRetry();
  }

  /**
   * Sends the set, if it changed (force: whatever famfs-fused holds, after a restart of either
   * side). Throws UNAVAILABLE when famfs-fused cannot be told within retryMs.
   */
  sync(force = false): Promise<void> {
    if (force) {
      this.sent = undefined;
      this.dirty = true;
    }
    const run = this.queue.then(async () => {
      await this.load();
      await this.syncNow();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** sync, with a failure retried every second in the background (over-guarding meanwhile is safe). */
  async syncOrRetry(force = false): Promise<void> {
    try {
      await this.sync(force);
    } catch (e) {
      this.o.log.error({ err: (e as Error).message }, 'could not update the read-only guard of famfs-fused; retrying every second');
      this.sent = undefined;
      this.dirty = true;
      this.retry ??= setInterval(() => {
        this.sync().then(
          () => {
            clearInterval(this.retry);
            this.retry = undefined;
          },
          () => undefined,
        );
      }, 1000);
      this.retry.unref();
    }
  }

  /**
   * What famfs-fused's status says it holds (counts): when that is not what was last sent (a server
   * that started with an unreadable or stale guard file while this plugin ran), send the set again.
   */
  verify(held: { readOnly: number; writable: number } | undefined): void {
    const sent = this.sent;
    if (held === undefined || sent === undefined) return;
    if (held.readOnly === sent.readOnly.length && held.writable === sent.writable.length) return;
    this.o.log.warn(
      { held, sent: { readOnly: sent.readOnly.length, writable: sent.writable.length } },
      'famfs-fused holds another read-only guard than was sent (restarted?): sending it again',
    );
    void this.syncOrRetry(true);
  }

  close(): void {
    if (this.retry) clearInterval(this.retry);
    this.retry = undefined;
  }

  /** The guard the entries ask for (sorted, as famfs-fused keeps it). */
  current(): ReadOnlyGuard {
    const readOnly = [...this.ro.keys()].filter((r) => !this.rw.has(r)).sort();
    // Writable paths that overlap a read-only one: at or above it (walk up from each read-only
    // path), or below it (only when some writable path lies under a read-only directory).
    const writable = new Set<string>();
    let below = false;
    for (const r of this.ro.keys()) {
      for (const a of selfAndAncestors(r)) if (this.rw.has(a)) writable.add(a);
      if (this.rwAbove.has(r)) below = true;
    }
    if (below) for (const w of this.rw.keys()) if (this.overlapsReadOnly(w)) writable.add(w);
    return { readOnly, writable: [...writable].sort() };
  }

  private overlapsReadOnly(p: string): boolean {
    if (this.roAbove.has(p)) return true;
    for (const a of selfAndAncestors(p)) if (this.ro.has(a)) return true;
    return false;
  }

  private put(key: string, rec: GuardRecord | undefined): void {
    const old = this.entries.get(key);
    if (old !== undefined) this.count(old, -1);
    if (rec === undefined) {
      this.entries.delete(key);
      return;
    }
    const r = { path: clean(rec.path), readOnly: rec.readOnly };
    this.entries.set(key, r);
    this.count(r, 1);
  }

  private count(r: GuardRecord, by: number): void {
    const crossed = bump(r.readOnly ? this.ro : this.rw, r.path, by);
    if (r.path !== '') {
      const it = selfAndAncestors(r.path);
      it.next(); // not itself
      for (const a of it) bump(r.readOnly ? this.roAbove : this.rwAbove, a, by);
    }
    // A new or last read-only path changes the set; a writable one only where it overlaps one.
    if (crossed && (r.readOnly || (this.ro.size > 0 && this.overlapsReadOnly(r.path)))) this.dirty = true;
  }

  private async syncNow(): Promise<void> {
    if (!this.dirty && this.sent !== undefined) return;
    const want = this.current();
    this.dirty = false;
    if (this.sent !== undefined && sameGuard(this.sent, want)) return;
    const retryMs = this.o.retryMs ?? 10_000;
    const deadline = Date.now() + retryMs;
    for (;;) {
      let why: string;
      try {
        const reply = await this.o.send(want);
        if (reply.ok) break;
        why = `${reply.code}: ${reply.error}`;
        // EAGAIN: handing over to a new server. Anything else is final (a server without the op).
        if (reply.code !== 'EAGAIN') throw unavailable(`famfs-fused refused the read-only guard (${why}); no bind is made without it`);
      } catch (e) {
        // ECONTROL: nobody answers (a server restarting): wait for the next one.
        if ((e as { code?: unknown }).code !== 'ECONTROL') {
          this.dirty = true;
          throw e;
        }
        why = (e as Error).message;
      }
      if (Date.now() >= deadline) {
        this.dirty = true;
        throw unavailable(`cannot set the read-only guard of this node's famfs-fused within ${retryMs} ms: ${why}`);
      }
      await sleep(100);
    }
    this.sent = want;
    this.o.log.info({ readOnly: want.readOnly.length, writable: want.writable.length }, 'read-only guard sent to famfs-fused');
  }
}
