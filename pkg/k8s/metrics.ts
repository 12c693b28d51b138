// The famfs series of the controller and node plugin (prom-client): pool space, log use, replay lag,
// the master role and memory errors. They join the driver's registry (pkg/csi/metrics.ts
// DriverMetrics), which also times the CSI RPCs and serves everything on one /metrics endpoint.
//
// Names follow Prometheus conventions: famfs_ prefix, base units (bytes, seconds), _total for counters.
import { Counter, Gauge, Registry } from 'prom-client';

type PoolLabel = 'pool';

export interface FamfsMetrics {
  registry: Registry;
  poolSizeBytes: Gauge<PoolLabel>;
  poolFreeBytes: Gauge<PoolLabel>;
  poolPendingFreeBytes: Gauge<PoolLabel>;
  poolLargestFreeExtentBytes: Gauge<PoolLabel>;
  logEntriesUsed: Gauge<PoolLabel>;
  logEntriesTotal: Gauge<PoolLabel>;
  /** Log entries a node has not replayed yet. */
  nodeReplayLagEntries: Gauge<PoolLabel | 'node'>;
  /** Fencing epoch of the master role this process holds; 0 when it is not master. */
  masterEpoch: Gauge<PoolLabel>;
  /** 1 while this process holds the master Lease. */
  isLeader: Gauge<PoolLabel>;
  memoryErrors: Counter<PoolLabel | 'source'>;
  /** Log entries a host replayed and later found rewritten (issue 10): the log lost what it serves. */
  logEntriesRewritten: Counter<PoolLabel>;
}

export interface MetricsOptions {
  /** Add the series to this registry (the driver's DriverMetrics.registry); default a new one. */
  registry?: Registry;
}

export function createMetrics(opts: MetricsOptions = {}): FamfsMetrics {
  const registry = opts.registry ?? new Registry();
  const registers = [registry];
  return {
    registry,
    poolSizeBytes: new Gauge({ name: 'famfs_pool_size_bytes', help: 'Size of the famfs file system', labelNames: ['pool'], registers }),
    poolFreeBytes: new Gauge({ name: 'famfs_pool_free_bytes', help: 'Bytes free for new volumes', labelNames: ['pool'], registers }),
    poolPendingFreeBytes: new Gauge({
      name: 'famfs_pool_pending_free_bytes',
      help: 'Bytes of deleted volumes not reusable yet (still mapped somewhere)',
      labelNames: ['pool'],
      registers,
    }),
    poolLargestFreeExtentBytes: new Gauge({
      name: 'famfs_pool_largest_free_extent_bytes',
      help: 'Largest contiguous free range; bounds the largest new volume',
      labelNames: ['pool'],
      registers,
    }),
    logEntriesUsed: new Gauge({ name: 'famfs_log_entries_used', help: 'famfs metadata log entries in use', labelNames: ['pool'], registers }),
    logEntriesTotal: new Gauge({ name: 'famfs_log_entries_total', help: 'famfs metadata log capacity in entries', labelNames: ['pool'], registers }),
    nodeReplayLagEntries: new Gauge({
      name: 'famfs_node_replay_lag_entries',
      help: 'Log entries appended by the master that this node has not replayed yet',
      labelNames: ['pool', 'node'],
      registers,
    }),
    masterEpoch: new Gauge({
      name: 'famfs_master_epoch',
      help: 'Fencing epoch of the master role held by this process (0: not master)',
      labelNames: ['pool'],
      registers,
    }),
    isLeader: new Gauge({ name: 'famfs_leader', help: '1 when this process holds the master lease', labelNames: ['pool'], registers }),
    memoryErrors: new Counter({
      name: 'famfs_memory_errors_total',
      help: 'Memory errors (SIGBUS / poisoned lines) met while touching the shared memory',
      labelNames: ['pool', 'source'],
      registers,
    }),
    logEntriesRewritten: new Counter({
      name: 'famfs_log_entries_rewritten_total',
      help: "famfs log entries this host's FUSE server had replayed and then found rewritten (the log no longer describes what it serves)",
      labelNames: ['pool'],
      registers,
    }),
  };
}
