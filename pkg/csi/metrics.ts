// Prometheus metrics of the driver and the small HTTP endpoints (/metrics, /healthz) it serves.
import * as http from 'http';
import { status } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ZeroStats } from '../famfs/fs';
import type { HealthCheck } from './identity';
import type { RpcObservation } from './server';

export class DriverMetrics {
  readonly registry = new Registry();
  private readonly rpcDuration = new Histogram({
    name: 'famfs_csi_rpc_duration_seconds',
    help: 'CSI RPC latency by service, method and gRPC status',
    labelNames: ['service', 'method', 'code'] as const,
    // CreateVolume targets < 2 ms p99; mounts take tens of ms.
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
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
    this.rpcDuration.observe({ service: o.service, method: o.method, code: status[o.code] ?? String(o.code) }, o.seconds);
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
