// Publishes what the driver knows about the pool to the three places users look: the FamfsPool
// status (kubectl get/describe famfspool), Prometheus metrics, and Events for the things that need
// attention (log nearly full, memory errors, a node falling behind).
//
// Events are edge-triggered: one LogNearlyFull warning when the log crosses the threshold, re-armed only
// after it falls clearly below it again, so a log hovering at the threshold does not spam.
import type { Logger } from 'pino';
import { EventReason, type EventRecorder, type ObjectRef } from './events';
import { FAMFSPOOL_GROUP, FAMFSPOOL_KIND, FAMFSPOOL_VERSION, type FamfsPoolClient, type NodeReport, type PoolCondition, type PoolFigures } from './famfspool';
import type { FamfsMetrics } from './metrics';

export interface PoolReporterOptions {
  poolName: string;
  client: FamfsPoolClient;
  metrics?: FamfsMetrics;
  events?: EventRecorder;
  /** Log use (percent) at which LogNearlyFull fires; default 90. */
  logNearlyFullPercent?: number;
  /** A node this many entries behind the log is reported as behind; default 1000. */
  replayLagWarnEntries?: number;
  log?: Logger;
}

const REARM_MARGIN_PERCENT = 5;

export class PoolReporter {
  private logWarned = false;
  private readonly laggingNodes = new Set<string>();
  private readonly memoryErrorsSeen = new Map<string, number>();
  private poolUid: string | undefined;
  /** Evictions up to this sequence number have had their Event (undefined: not looked yet). */
  private evictionSeq: number | undefined;
  private readonly startedMs = Date.now();

  constructor(private readonly opts: PoolReporterOptions) {}

  private get threshold(): number {
    return this.opts.logNearlyFullPercent ?? 90;
  }

  private async poolRef(): Promise<ObjectRef> {
    if (!this.poolUid) {
      try {
        this.poolUid = (await this.opts.client.get()).metadata.uid;
      } catch {
        this.poolUid = undefined; // the event is still recorded, kubectl describe just will not list it
      }
    }
    return { apiVersion: `${FAMFSPOOL_GROUP}/${FAMFSPOOL_VERSION}`, kind: FAMFSPOOL_KIND, name: this.opts.poolName, uid: this.poolUid };
  }

  /** Records a Warning; a failure to record is logged, never passed on (reporting must not break serving). */
  private async warn(ref: ObjectRef, reason: string, message: string): Promise<void> {
    if (!this.opts.events) return;
    try {
      await this.opts.events.record(ref, 'Warning', reason, message);
    } catch (err: unknown) {
      this.opts.log?.warn({ err: String(err), reason }, 'event not recorded');
    }
  }

  /** Controller side: pool-wide figures. */
  async publish(f: PoolFigures): Promise<void> {
    const m = this.opts.metrics;
    const pool = { pool: this.opts.poolName };
    if (m) {
      m.poolSizeBytes.set(pool, f.sizeBytes);
      m.poolFreeBytes.set(pool, f.freeBytes);
      m.poolPendingFreeBytes.set(pool, f.pendingFreeBytes);
      m.poolLargestFreeExtentBytes.set(pool, f.largestFreeExtentBytes);
      m.logEntriesUsed.set(pool, f.logEntriesUsed);
      m.logEntriesTotal.set(pool, f.logEntriesTotal);
      m.masterEpoch.set(pool, f.master.fencingEpoch);
    }
    const percent = f.logEntriesTotal > 0 ? (f.logEntriesUsed * 100) / f.logEntriesTotal : 0;
    const nearlyFull = percent >= this.threshold;
    const condition: PoolCondition = nearlyFull
      ? {
          type: 'LogNearlyFull',
          status: 'True',
          reason: 'LogAboveThreshold',
          message: `log ${Math.floor(percent)}% full (${f.logEntriesUsed} of ${f.logEntriesTotal} entries)`,
        }
      : { type: 'LogNearlyFull', status: 'False', reason: 'LogBelowThreshold', message: `log ${Math.floor(percent)}% full` };
    const others = (f.conditions ?? []).filter((c) => c.type !== 'LogNearlyFull');
    await this.opts.client.writePoolStatus({ ...f, conditions: [...others, condition] });

    // One Warning per host timeout. Records older than this reporter (a previous master's) are in
    // the status already; their Events were that master's to record.
    const evictions = f.evictions ?? [];
    if (this.evictionSeq === undefined) {
      this.evictionSeq = evictions.filter((e) => Date.parse(e.at) < this.startedMs).reduce((m, e) => Math.max(m, e.seq), 0);
    }
    for (const e of evictions) {
      if (e.seq <= this.evictionSeq) continue;
      this.evictionSeq = e.seq;
      const what =
        e.reusable.length > 0 ? `memory of ${e.reusable.join(', ')} (${e.reusableBytes} bytes) became reusable without it` : 'it held no deleted memory back';
      await this.warn(
        await this.poolRef(),
        EventReason.HostTimedOut,
        `host ${e.host} (${e.hostUuid}, slot ${e.slot}) timed out at ${e.at}: the master watched its replay slot unchanged for ${e.silentSeconds} s; ${what}. It serves again only after replaying the log (self-fence)`,
      );
    }

    if (nearlyFull && !this.logWarned) {
      this.logWarned = true;
      await this.warn(
        await this.poolRef(),
        EventReason.LogNearlyFull,
        `famfs metadata log ${Math.floor(percent)}% full (${f.logEntriesUsed} of ${f.logEntriesTotal} entries); new volumes fail when it is full`,
      );
    } else if (!nearlyFull && percent < this.threshold - REARM_MARGIN_PERCENT) {
      this.logWarned = false;
    }
  }

  /** Node side: this node's replay position, health and memory errors. */
  async publishNode(r: NodeReport): Promise<void> {
    const m = this.opts.metrics;
    if (m) {
      m.nodeReplayLagEntries.set({ pool: this.opts.poolName, node: r.name }, r.lagEntries);
      const before = this.memoryErrorsSeen.get(r.name) ?? 0;
      const now = r.memoryErrors ?? 0;
      if (now > before) m.memoryErrors.inc({ pool: this.opts.poolName, source: 'node' }, now - before);
    }
    await this.opts.client.writeNodeStatus(r);

    const ref = await this.poolRef();
    const seen = this.memoryErrorsSeen.get(r.name) ?? 0;
    if ((r.memoryErrors ?? 0) > seen) {
      await this.warn(ref, EventReason.MemoryError, `node ${r.name}: ${r.memoryErrors ?? 0} memory error(s) in the pool${r.message ? `: ${r.message}` : ''}`);
    }
    this.memoryErrorsSeen.set(r.name, r.memoryErrors ?? 0);
    const behind = r.lagEntries >= (this.opts.replayLagWarnEntries ?? 1000) || !r.healthy;
    if (behind && !this.laggingNodes.has(r.name)) {
      this.laggingNodes.add(r.name);
      await this.warn(
        ref,
        EventReason.ReplayBehind,
        `node ${r.name} is ${r.lagEntries} log entries behind${r.healthy ? '' : ' and unhealthy'}${r.message ? `: ${r.message}` : ''}`,
      );
    } else if (!behind) {
      this.laggingNodes.delete(r.name);
    }
  }
}
