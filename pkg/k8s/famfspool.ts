// Writes the status of the FamfsPool custom resource (CRD in charts/famfs-csi/crds/).
//
// Two kinds of writers share one object: the controller (master) owns the pool-wide figures, and every
// node owns its own entry in status.nodes (replay position, health). They use server-side apply with
// distinct field managers, and status.nodes is a list-map keyed by name, so the API server merges the
// writes: a node never overwrites another node's entry or the controller's figures, and nobody needs
// read-modify-write loops or resourceVersion retries.
import { ApiException, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';

export const FAMFSPOOL_GROUP = 'famfs.csi.cxl.io';
export const FAMFSPOOL_VERSION = 'v1alpha1';
export const FAMFSPOOL_PLURAL = 'famfspools';
export const FAMFSPOOL_KIND = 'FamfsPool';

export class FamfsPoolError extends Error {
  constructor(
    readonly code: 'NOT_FOUND' | 'API_ERROR' | 'INVALID',
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'FamfsPoolError';
  }
}

/** Pool-wide figures the controller knows from the famfs superblock, log and allocator. */
export interface PoolFigures {
  device: string;
  sizeBytes: number;
  freeBytes: number;
  pendingFreeBytes: number;
  largestFreeExtentBytes: number;
  volumes: number;
  logEntriesUsed: number;
  logEntriesTotal: number;
  /** Log entries famfs repair quarantined, and the memory they keep reserved until released. */
  quarantinedEntries?: number;
  quarantinedBytes?: number;
  /** Hosts the master timed out (its own clock), newest last, and the memory reused after them. */
  evictions?: HostEviction[];
  master: { node: string; pod?: string; leaseName?: string; fencingEpoch: number; since?: Date };
  /** Conditions such as Ready, LogNearlyFull, MemoryErrors. */
  conditions?: PoolCondition[];
}

/** One host the master timed out: who, when, after how long, and which deleted memory it released. */
export interface HostEviction {
  /** Sequence number of the record in shared memory (one Event per new one). */
  seq: number;
  host: string;
  hostUuid: string;
  slot: number;
  /** When the master decided (its wall clock; ISO 8601). */
  at: string;
  silentSeconds: number;
  ackedIndex: number;
  reclaimUpTo: number;
  /** famfs paths of the deleted files whose memory became reusable without this host (at most 16). */
  reusable: string[];
  reusableBytes: number;
}

export interface PoolCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason?: string;
  message?: string;
  lastTransitionTime?: Date;
}

/** What one node reports about itself. */
export interface NodeReport {
  name: string;
  replayedEntries: number;
  lagEntries: number;
  healthy: boolean;
  message?: string;
  memoryErrors?: number;
}

export interface NodeStatus extends NodeReport {
  lastHeartbeatTime?: string;
}

export interface FamfsPoolStatus {
  device?: string;
  size?: string;
  sizeBytes?: number;
  free?: string;
  freeBytes?: number;
  pendingFreeBytes?: number;
  largestFreeExtent?: string;
  largestFreeExtentBytes?: number;
  volumes?: number;
  log?: { entriesUsed?: number; entriesTotal?: number; usedPercent?: number };
  quarantine?: { entries?: number; bytes?: number };
  evictions?: HostEviction[];
  master?: { node?: string; pod?: string; leaseName?: string; fencingEpoch?: number; since?: string };
  nodesHealthy?: string;
  nodes?: NodeStatus[];
  conditions?: (Omit<PoolCondition, 'lastTransitionTime'> & { lastTransitionTime?: string })[];
  lastUpdateTime?: string;
}

export interface FamfsPoolObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; uid?: string; resourceVersion?: string; generation?: number; creationTimestamp?: string };
  spec: { device: string; driverName?: string; topologyKey?: string };
  status?: FamfsPoolStatus;
}

const UNITS = ['Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/** 68719476736 → "64Gi", 1610612736 → "1.5Gi", 1000 → "1000". Binary units, like kubectl. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1024) return String(Math.max(0, Math.trunc(bytes)));
  let v = bytes;
  let i = -1;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const rounded = Math.round(v * 10) / 10;
  return `${Number.isInteger(rounded) ? rounded.toFixed(0) : rounded.toFixed(1)}${UNITS[i]}`;
}

function isStatus(err: unknown, code: number): boolean {
  return err instanceof ApiException && err.code === code;
}

export interface FamfsPoolClientOptions {
  kubeConfig: KubeConfig;
  pool: string;
  /** Server-side-apply field manager; controller and each node use different ones. */
  fieldManager: string;
}

export class FamfsPoolClient {
  private readonly api: CustomObjectsApi;

  constructor(private readonly opts: FamfsPoolClientOptions) {
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  private base(): { group: string; version: string; plural: string; name: string } {
    return { group: FAMFSPOOL_GROUP, version: FAMFSPOOL_VERSION, plural: FAMFSPOOL_PLURAL, name: this.opts.pool };
  }

  async get(): Promise<FamfsPoolObject> {
    try {
      return (await this.api.getClusterCustomObject(this.base())) as FamfsPoolObject;
    } catch (err: unknown) {
      if (isStatus(err, 404)) throw new FamfsPoolError('NOT_FOUND', `FamfsPool ${this.opts.pool} not found`, err);
      throw new FamfsPoolError('API_ERROR', `reading FamfsPool ${this.opts.pool}: ${String(err)}`, err);
    }
  }

  /** Creates the pool object if it is missing (when the chart did not); returns it either way. */
  async ensure(spec: FamfsPoolObject['spec']): Promise<FamfsPoolObject> {
    try {
      return await this.get();
    } catch (err: unknown) {
      if (!(err instanceof FamfsPoolError && err.code === 'NOT_FOUND')) throw err;
    }
    try {
      return (await this.api.createClusterCustomObject({
        group: FAMFSPOOL_GROUP,
        version: FAMFSPOOL_VERSION,
        plural: FAMFSPOOL_PLURAL,
        body: { apiVersion: `${FAMFSPOOL_GROUP}/${FAMFSPOOL_VERSION}`, kind: FAMFSPOOL_KIND, metadata: { name: this.opts.pool }, spec },
      })) as FamfsPoolObject;
    } catch (err: unknown) {
      if (isStatus(err, 409)) return this.get(); // another replica created it first
      throw new FamfsPoolError('API_ERROR', `creating FamfsPool ${this.opts.pool}: ${String(err)}`, err);
    }
  }

  private async applyStatus(status: FamfsPoolStatus): Promise<FamfsPoolObject> {
    const body = { apiVersion: `${FAMFSPOOL_GROUP}/${FAMFSPOOL_VERSION}`, kind: FAMFSPOOL_KIND, metadata: { name: this.opts.pool }, status };
    try {
      return (await this.api.patchClusterCustomObjectStatus(
        { ...this.base(), body, fieldManager: this.opts.fieldManager, force: true },
        setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
      )) as FamfsPoolObject;
    } catch (err: unknown) {
      if (isStatus(err, 404)) throw new FamfsPoolError('NOT_FOUND', `FamfsPool ${this.opts.pool} not found`, err);
      if (isStatus(err, 422)) throw new FamfsPoolError('INVALID', `FamfsPool ${this.opts.pool} status rejected: ${String(err)}`, err);
      throw new FamfsPoolError('API_ERROR', `writing FamfsPool ${this.opts.pool} status: ${String(err)}`, err);
    }
  }

  /** Controller: publishes the pool-wide figures (and the healthy/total node count it sees). */
  async writePoolStatus(f: PoolFigures): Promise<FamfsPoolObject> {
    for (const [k, v] of Object.entries(f)) {
      if (k === 'evictions') continue;
      if (typeof v === 'number' && (!Number.isSafeInteger(v) || v < 0)) throw new FamfsPoolError('INVALID', `${k} must be a non-negative integer, got ${v}`);
    }
    let nodes: NodeStatus[] = [];
    try {
      nodes = (await this.get()).status?.nodes ?? [];
    } catch (err: unknown) {
      if (!(err instanceof FamfsPoolError && err.code === 'NOT_FOUND')) throw err;
    }
    const healthy = nodes.filter((n) => n.healthy).length;
    const usedPercent = f.logEntriesTotal > 0 ? Math.min(100, Math.floor((f.logEntriesUsed * 100) / f.logEntriesTotal)) : 0;
    return this.applyStatus({
      device: f.device,
      size: formatBytes(f.sizeBytes),
      sizeBytes: f.sizeBytes,
      free: formatBytes(f.freeBytes),
      freeBytes: f.freeBytes,
      pendingFreeBytes: f.pendingFreeBytes,
      largestFreeExtent: formatBytes(f.largestFreeExtentBytes),
      largestFreeExtentBytes: f.largestFreeExtentBytes,
      volumes: f.volumes,
      log: { entriesUsed: f.logEntriesUsed, entriesTotal: f.logEntriesTotal, usedPercent },
      quarantine: { entries: f.quarantinedEntries ?? 0, bytes: f.quarantinedBytes ?? 0 },
      evictions: f.evictions ?? [],
      master: {
        node: f.master.node,
        pod: f.master.pod,
        leaseName: f.master.leaseName,
        fencingEpoch: f.master.fencingEpoch,
        since: f.master.since?.toISOString(),
      },
      nodesHealthy: `${healthy}/${nodes.length}`,
      conditions: f.conditions?.map((c) => ({ ...c, lastTransitionTime: (c.lastTransitionTime ?? new Date()).toISOString() })),
      lastUpdateTime: new Date().toISOString(),
    });
  }

  /**
   * Publishes a whole set of node entries at once (e.g. the master reading every host's replay slot
   * from shared memory). Entries this field manager wrote before and that are missing now are removed;
   * entries other managers own are left alone.
   */
  async writeNodesStatus(reports: NodeReport[]): Promise<FamfsPoolObject> {
    const now = new Date().toISOString();
    for (const r of reports) if (!r.name) throw new FamfsPoolError('INVALID', 'node name is required');
    return this.applyStatus({ nodes: reports.map((r) => ({ ...r, lastHeartbeatTime: now })) });
  }

  /** Node: publishes its own entry of status.nodes, leaving every other field alone. */
  async writeNodeStatus(r: NodeReport): Promise<FamfsPoolObject> {
    if (!r.name) throw new FamfsPoolError('INVALID', 'node name is required');
    const entry: NodeStatus = { ...r, lastHeartbeatTime: new Date().toISOString() };
    return this.applyStatus({ nodes: [entry] });
  }
}
