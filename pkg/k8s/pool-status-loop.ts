// The controller's periodic report of the pool, read from famfs itself: space from the allocator,
// log use from the log, and every host's replay position from the host slots in shared memory (each
// node acknowledges how far it replayed), so the master can tell who is behind without asking them.
import { CSI_ROOT_DIR, isVolumeId } from '../csi/names';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { EventRecorder } from './events';
import { FamfsPoolClient, type NodeReport, type PoolFigures } from './famfspool';
import type { FamfsMetrics } from './metrics';
import { PoolReporter } from './pool-reporter';

/** What famfs offers (pkg/famfs/fs.ts FamfsFs has these). */
export interface FamfsView {
  usage(): {
    deviceBytes: number;
    freeBytes: number;
    largestFreeBytes: number;
    pendingFreeBytes: number;
    logEntriesUsed: number;
    logEntriesTotal: number;
    files: number;
    quarantinedEntries: number;
    quarantinedBytes: number;
  };
  /** Host slots as the master judges them, on its own clock (never a host's clock). */
  hostLiveness(): { hostUuid: string; ackedIndex: number; name: string; live: boolean; silentMs: number }[];
  /** The master's eviction records with the files each timeout made reusable (FamfsFs.evictionReport). */
  evictionReport(): {
    seq: number;
    hostUuid: string;
    name: string;
    slot: number;
    ackedIndex: number;
    reclaimUpTo: number;
    atMs: number;
    silentMs: number;
    reusable: { relpath: string }[];
    reusableBytes: number;
  }[];
  lookup(relpath: string): { kind: 'dir'; children: Map<string, unknown> } | { kind: 'file' } | undefined;
}

/** CSI volumes only: not snapshots, not the controller's own metadata file. */
export function volumeCount(fs: FamfsView): number {
  const dir = fs.lookup(CSI_ROOT_DIR);
  if (!dir || dir.kind !== 'dir') return 0;
  let n = 0;
  for (const name of dir.children.keys()) if (isVolumeId(name)) n++;
  return n;
}

export interface MasterInfo {
  node: string;
  pod?: string;
  leaseName?: string;
  fencingEpoch: number;
}

export function poolFigures(fs: FamfsView, device: string, master: MasterInfo): PoolFigures {
  const u = fs.usage();
  return {
    device,
    sizeBytes: u.deviceBytes,
    freeBytes: u.freeBytes,
    pendingFreeBytes: u.pendingFreeBytes,
    largestFreeExtentBytes: u.largestFreeBytes,
    volumes: volumeCount(fs),
    logEntriesUsed: u.logEntriesUsed,
    logEntriesTotal: u.logEntriesTotal,
    quarantinedEntries: u.quarantinedEntries,
    quarantinedBytes: u.quarantinedBytes,
    evictions: fs.evictionReport().map((e) => ({
      seq: e.seq,
      host: e.name || e.hostUuid,
      hostUuid: e.hostUuid,
      slot: e.slot,
      at: new Date(e.atMs).toISOString(),
      silentSeconds: Math.round(e.silentMs / 1000),
      ackedIndex: e.ackedIndex,
      reclaimUpTo: e.reclaimUpTo,
      reusable: e.reusable.slice(0, 16).map((r) => r.relpath),
      reusableBytes: e.reusableBytes,
    })),
    master,
  };
}

export function hostReports(fs: FamfsView): NodeReport[] {
  const next = fs.usage().logEntriesUsed;
  const hosts = fs.hostLiveness();
  // status.nodes is a list-map keyed by name: two hosts that call themselves the same (hostNetwork pods
  // on machines with one hostname) would make the API server refuse every status write. Their UUIDs differ.
  const seen = new Map<string, number>();
  for (const h of hosts) seen.set(h.name || h.hostUuid, (seen.get(h.name || h.hostUuid) ?? 0) + 1);
  return hosts.map((h) => {
    const base = h.name || h.hostUuid;
    const lag = Math.max(0, next - h.ackedIndex);
    return {
      name: (seen.get(base) ?? 0) > 1 ? `${base} (${h.hostUuid.slice(0, 8)})` : base,
      replayedEntries: h.ackedIndex,
      lagEntries: lag,
      healthy: h.live,
      ...(h.live
        ? {}
        : { message: `timed out: its slot has not changed for ${Math.round(h.silentMs / 1000)} s (master's clock); it no longer holds back deleted memory` }),
    };
  });
}

export interface PoolStatusLoopOptions {
  kubeConfig: KubeConfig;
  pool: string;
  device: string;
  fs: FamfsView;
  /** Current master identity; undefined while this process is not master (nothing is published). */
  master: () => MasterInfo | undefined;
  intervalMs?: number;
  metrics?: FamfsMetrics;
  events?: EventRecorder;
  log?: Logger;
}

export class PoolStatusLoop {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly reporter: PoolReporter;
  private readonly hostsClient: FamfsPoolClient;
  private readonly poolClient: FamfsPoolClient;

  constructor(private readonly opts: PoolStatusLoopOptions) {
    this.poolClient = new FamfsPoolClient({ kubeConfig: opts.kubeConfig, pool: opts.pool, fieldManager: 'famfs-csi-controller' });
    this.hostsClient = new FamfsPoolClient({ kubeConfig: opts.kubeConfig, pool: opts.pool, fieldManager: 'famfs-csi-controller-hosts' });
    this.reporter = new PoolReporter({ poolName: opts.pool, client: this.poolClient, metrics: opts.metrics, events: opts.events, log: opts.log });
  }

  /** One report now: hosts first, so the pool figures' healthy/total count includes them. */
  async tick(): Promise<boolean> {
    const master = this.opts.master();
    if (!master) return false;
    await this.poolClient.ensure({ device: this.opts.device });
    const hosts = hostReports(this.opts.fs);
    await this.hostsClient.writeNodesStatus(hosts);
    for (const h of hosts) this.opts.metrics?.nodeReplayLagEntries.set({ pool: this.opts.pool, node: h.name }, h.lagEntries);
    await this.reporter.publish(poolFigures(this.opts.fs, this.opts.device, master));
    return true;
  }

  start(): void {
    const every = this.opts.intervalMs ?? 10_000;
    const loop = (): void => {
      this.running = this.tick()
        .then(() => undefined)
        .catch((err: unknown) => this.opts.log?.warn({ err: String(err) }, 'pool status report failed'))
        .finally(() => {
          if (this.timer !== undefined) this.timer = setTimeout(loop, every);
        });
    };
    this.timer = setTimeout(loop, 0);
  }

  async stop(): Promise<void> {
    const t = this.timer;
    this.timer = undefined;
    if (t) clearTimeout(t);
    await this.running;
  }
}
