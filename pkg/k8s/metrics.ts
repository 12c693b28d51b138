// Prometheus metrics of the controller and node plugin (prom-client), and the HTTP endpoint that
// serves them (--metrics-address). One registry per process, passed around explicitly, so tests can
// run several independent instances in one process.
//
// Names follow Prometheus conventions: famfs_ prefix, base units (bytes, seconds), _total for counters.
import * as http from 'http';
import { AddressInfo } from 'net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class MetricsError extends Error {
  constructor(
    readonly code: 'BAD_ADDRESS' | 'LISTEN_FAILED',
    message: string,
  ) {
    super(message);
    this.name = 'MetricsError';
  }
}

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
  /** Epoch (leaseTransitions) of the current master; 0 when this process does not lead. */
  masterEpoch: Gauge<PoolLabel>;
  isLeader: Gauge<PoolLabel>;
  /**
   * CSI RPC latency, by method (e.g. CreateVolume) and gRPC status code name (e.g. OK, NOT_FOUND).
   * Absent when the registry came from the driver, which times its RPCs itself (pkg/csi/metrics.ts).
   */
  rpcDuration?: Histogram<'method' | 'code'>;
  fuseOperations: Counter<'op' | 'result'>;
  fuseBytes: Counter<'direction'>;
  memoryErrors: Counter<PoolLabel | 'source'>;
}

export interface MetricsOptions {
  /** "controller" or "node": a constant label on every series (only set on a registry we create). */
  component: string;
  /**
   * Add the series to this registry instead of a new one (e.g. the driver's DriverMetrics.registry),
   * so one /metrics endpoint serves everything. No RPC histogram and no process metrics are added then.
   */
  registry?: Registry;
  /** Include Node.js process metrics (heap, event loop lag). */
  processMetrics?: boolean;
}

export function createMetrics(opts: MetricsOptions): FamfsMetrics {
  const shared = opts.registry !== undefined;
  const registry = opts.registry ?? new Registry();
  if (!shared) registry.setDefaultLabels({ component: opts.component });
  if (!shared && (opts.processMetrics ?? true)) collectDefaultMetrics({ register: registry, prefix: 'famfs_csi_' });
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
    masterEpoch: new Gauge({ name: 'famfs_master_epoch', help: 'Fencing epoch of the master role held by this process (0: not leader)', labelNames: ['pool'], registers }),
    isLeader: new Gauge({ name: 'famfs_leader', help: '1 when this process holds the master lease', labelNames: ['pool'], registers }),
    rpcDuration: shared ? undefined : new Histogram({
      name: 'famfs_csi_rpc_duration_seconds',
      help: 'CSI gRPC call latency by method and status code',
      labelNames: ['method', 'code'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    fuseOperations: new Counter({ name: 'famfs_fuse_operations_total', help: 'FUSE requests served, by operation and result', labelNames: ['op', 'result'], registers }),
    fuseBytes: new Counter({ name: 'famfs_fuse_bytes_total', help: 'Bytes moved through FUSE read/write', labelNames: ['direction'], registers }),
    memoryErrors: new Counter({
      name: 'famfs_memory_errors_total',
      help: 'Memory errors (SIGBUS / poisoned lines) met while touching the shared memory',
      labelNames: ['pool', 'source'],
      registers,
    }),
  };
}

/** Times an async call into rpcDuration; `codeOf` maps a thrown error to its gRPC code name. */
export async function observeRpc<T>(m: FamfsMetrics, method: string, call: () => Promise<T>, codeOf: (err: unknown) => string): Promise<T> {
  if (!m.rpcDuration) return call();
  const end = m.rpcDuration.startTimer({ method });
  try {
    const out = await call();
    end({ code: 'OK' });
    return out;
  } catch (err: unknown) {
    end({ code: codeOf(err) });
    throw err;
  }
}

/** Parses ":9810", "127.0.0.1:9810", "[::1]:9810" (the Go-style listen addresses of the flags). */
export function parseListenAddress(addr: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new MetricsError('BAD_ADDRESS', `not a listen address: ${JSON.stringify(addr)} (want HOST:PORT or :PORT)`);
  const host = m[1] ?? (m[2] === '' ? undefined : m[2]);
  return { host, port };
}

export interface MetricsServer {
  /** Bound address (useful with port 0). */
  address: { host: string; port: number };
  close(): Promise<void>;
}

/**
 * Serves GET /metrics (Prometheus text format) and GET /healthz. `healthy` decides the /healthz answer
 * (e.g. "the CSI socket answers Probe").
 */
export function startMetricsServer(registry: Registry, listen: string, healthy: () => boolean = () => true): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(listen);
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`metrics collection failed: ${String(err)}\n`),
      );
      return;
    }
    if (url === '/healthz') {
      const ok = healthy();
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'text/plain' }).end(ok ? 'ok\n' : 'unhealthy\n');
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new MetricsError('LISTEN_FAILED', `metrics endpoint ${listen}: ${err.message}`)));
    server.listen(port, host, () => {
      const a = server.address() as AddressInfo;
      resolve({
        address: { host: a.address, port: a.port },
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}
