// Prometheus metrics of the driver and the small HTTP endpoints (/metrics, /healthz) it serves.
import * as http from 'http';
import { status } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ZeroStats } from '../famfs/fs';
import type { HealthCheck } from './identity';
import type { RpcObservation } from './server';

interface RpcHistogramValue {
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  value: number;
  metricName: string;
  exemplar: null | undefined;
}

interface RpcHistogramExport {
  name: string;
  help: string;
  type: string;
  values: RpcHistogramValue[];
  aggregator: string;
}

/** One label set of RpcHistogram: counts per bucket (not cumulative), sum and count. */
interface RpcSeries {
  labels: { service: string; method: string; code: string };
  counts: number[];
  sum: number;
  count: number;
}

/**
 * A Prometheus histogram of RPC durations by service, method and code, kept by hand and exported
 * through the registry exactly as prom-client's Histogram exports one (same lines, same order).
 * prom-client's observe validates, converts and hashes the label object on every call (~5 µs, two
 * per CreateVolume+DeleteVolume pair: issue 15); here a call is two Map lookups and an increment.
 */
class RpcHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** Series by "service/method", then by numeric code. */
  private series = new Map<string, Map<number, RpcSeries>>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
  ) {}

  observe(service: string, method: string, code: number, seconds: number): void {
    const key = `${service}/${method}`;
    let byCode = this.series.get(key);
    if (byCode === undefined) this.series.set(key, (byCode = new Map<number, RpcSeries>()));
    let s = byCode.get(code);
    if (s === undefined) {
      s = { labels: { service, method, code: status[code] ?? String(code) }, counts: this.bounds.map(() => 0), sum: 0, count: 0 };
      byCode.set(code, s);
    }
    const b = this.bounds;
    let i = 0;
    while (i < b.length && seconds > b[i]) i++;
    if (i < b.length) s.counts[i]++;
    s.sum += seconds;
    s.count++;
  }

  // What the registry calls: getForPromString for the text format (labels and the series' labels
  // apart, as prom-client's Histogram gives them), get for JSON (merged), reset for resetMetrics.
  getForPromString(): Promise<RpcHistogramExport> {
    const values: RpcHistogramValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const byCode of this.series.values()) {
      for (const s of byCode.values()) {
        let acc = 0;
        this.bounds.forEach((le, i) => {
          acc += s.counts[i];
          values.push({ labels: { le }, sharedLabels: { ...s.labels }, value: acc, metricName: bucket, exemplar: null });
        });
        values.push({ labels: { le: '+Inf' }, sharedLabels: { ...s.labels }, value: s.count, metricName: bucket, exemplar: null });
        values.push({ labels: {}, sharedLabels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum`, exemplar: undefined });
        values.push({ labels: {}, sharedLabels: { ...s.labels }, value: s.count, metricName: `${this.name}_count`, exemplar: undefined });
      }
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }

  async get(): Promise<RpcHistogramExport> {
    const data = await this.getForPromString();
    return {
      ...data,
      values: data.values.map(({ labels, sharedLabels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } })),
    };
  }

  reset(): void {
    this.series = new Map();
  }
}

export class DriverMetrics {
  readonly registry = new Registry();
  private readonly rpcDuration = new RpcHistogram(
    'famfs_csi_rpc_duration_seconds',
    'CSI RPC latency by service, method and gRPC status',
    // CreateVolume targets < 2 ms p99; mounts take tens of ms.
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    // The registry takes any object with get() (and reset()); its type names prom-client's classes only.
    this.registry.registerMetric(this.rpcDuration as unknown as Histogram);
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /**
   * Zeroing of the controller's famfs (issue 15 item 3), read when scraped: creates that had to zero
   * memory themselves (no clean room of their shape: the background zeroer had not caught up), the
   * bytes they zeroed, what the background zeroed, and the free memory clean and dirty now.
   */
  watchZeroing(read: () => { stats: ZeroStats; cleanFreeBytes: number; dirtyFreeBytes: number }): void {
    const counter = (name: string, help: string, value: (s: ZeroStats) => number): void => {
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(value(read().stats));
        },
      });
    };
    counter('famfs_csi_create_zero_waits_total', 'Creates (CreateVolume, state image) that waited while they zeroed memory themselves', (s) => s.createsWaited);
    counter('famfs_csi_create_zero_wait_bytes_total', 'Bytes creates zeroed while they waited', (s) => s.createWaitBytes);
    counter('famfs_csi_free_zeroed_bytes_total', 'Bytes of freed memory zeroed in the background and marked clean', (s) => s.freeZeroedBytes);
    new Gauge({
      name: 'famfs_csi_free_bytes',
      help: 'Free memory of the pool by state: clean (known zero: a create there needs no zeroing) or dirty (to be zeroed)',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect() {
        const r = read();
        this.set({ state: 'clean' }, r.cleanFreeBytes);
        this.set({ state: 'dirty' }, r.dirtyFreeBytes);
      },
    });
  }

  observeRpc = (o: RpcObservation): void => {
    this.rpcDuration.observe(o.service, o.method, o.code, o.seconds);
  };
}

/** Parses "host:port" or ":port" (all interfaces) for the HTTP listeners. */
export function parseHttpAddress(addr: string): { host?: string; port: number } {
  const m = /^(?:(\[[^\]]+\]|[^:]*))?:(\d{1,5})$/.exec(addr);
  if (m === null || Number(m[2]) > 65535) throw new Error(`address ${JSON.stringify(addr)}: expected host:port or :port`);
  const host = m[1] === undefined || m[1] === '' ? undefined : m[1].replace(/^\[|\]$/g, '');
  return { ...(host !== undefined ? { host } : {}), port: Number(m[2]) };
}

export interface HttpEndpointsOptions {
  address: string;
  metrics?: DriverMetrics;
  health?: HealthCheck;
}

/** Serves GET /metrics (Prometheus text) and GET /healthz (200 when ready, 503 otherwise). */
export async function startHttpEndpoints(opts: HttpEndpointsOptions): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    void (async () => {
      try {
        if (url === '/metrics' && opts.metrics) {
          reply(200, await opts.metrics.registry.metrics(), opts.metrics.registry.contentType);
        } else if (url === '/healthz' && opts.health) {
          const h = await opts.health();
          reply(h.state === 'ready' ? 200 : 503, h.state === 'ready' ? 'ok\n' : `${h.state}: ${h.message}\n`);
        } else reply(404, 'not found\n');
      } catch (e) {
        reply(500, `${(e as Error).message}\n`);
      }
    })();
  });
  const { host, port } = parseHttpAddress(opts.address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
