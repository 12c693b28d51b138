// The Prometheus endpoint as the driver serves it: the famfs series joined to the driver's registry,
// a real HTTP server on loopback, scraped over TCP, figures checked to move.
import { strict as assert } from 'assert';
import { status } from '@grpc/grpc-js';
import * as http from 'http';
import type { AddressInfo } from 'net';
import { DriverMetrics, parseHttpAddress, startHttpEndpoints } from '../pkg/csi/metrics';
import { createMetrics } from '../pkg/k8s/metrics';

function get(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      })
      .on('error', reject);
  });
}

/** Value of one sample line `name{labels} value` in Prometheus text output. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const lbl = /\{([^}]*)\}/.exec(line)?.[1] ?? '';
    const have = new Map(
      lbl
        .split(',')
        .filter(Boolean)
        .map((kv) => {
          const i = kv.indexOf('=');
          return [kv.slice(0, i), kv.slice(i + 2, -1)] as const;
        }),
    );
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(line.split(' ').pop());
  }
  return undefined;
}

describe('k8s metrics endpoint', () => {
  let server: http.Server | undefined;
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
  });
  const portOf = (s: http.Server): number => (s.address() as AddressInfo).port;

  it('parses Go-style listen addresses and rejects others', () => {
    assert.deepEqual(parseHttpAddress(':9810'), { port: 9810 });
    assert.deepEqual(parseHttpAddress('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseHttpAddress('[::1]:9810'), { host: '::1', port: 9810 });
    for (const bad of ['9810', 'host:', ':99999', '']) assert.throws(() => parseHttpAddress(bad), /expected host:port or :port/);
  });

  it('serves pool, log, replay-lag, RPC and memory-error figures, and they move', async () => {
    const driver = new DriverMetrics();
    const m = createMetrics({ registry: driver.registry });
    server = await startHttpEndpoints({ address: '127.0.0.1:0', metrics: driver });
    const port = portOf(server);

    m.poolSizeBytes.set({ pool: 'pool0' }, 64 * 2 ** 30);
    m.poolFreeBytes.set({ pool: 'pool0' }, 64 * 2 ** 30);
    m.logEntriesTotal.set({ pool: 'pool0' }, 25000);
    m.logEntriesUsed.set({ pool: 'pool0' }, 1);
    m.nodeReplayLagEntries.set({ pool: 'pool0', node: 'b' }, 0);
    let r = await get(port, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.type, /text\/plain/);
    assert.equal(sample(r.body, 'famfs_pool_free_bytes', { pool: 'pool0' }), 64 * 2 ** 30);
    assert.ok(r.body.includes('process_resident_memory_bytes') || r.body.includes('nodejs_heap_size_used_bytes'));

    // A volume is created: free drops, the log grows, a node falls behind, RPCs are timed.
    m.poolFreeBytes.dec({ pool: 'pool0' }, 2 ** 30);
    m.logEntriesUsed.inc({ pool: 'pool0' }, 2);
    m.nodeReplayLagEntries.set({ pool: 'pool0', node: 'b' }, 2);
    driver.observeRpc({ service: 'Controller', method: 'CreateVolume', code: status.OK, seconds: 0.001 });
    driver.observeRpc({ service: 'Controller', method: 'DeleteVolume', code: status.NOT_FOUND, seconds: 0.002 });
    m.memoryErrors.inc({ pool: 'pool0', source: 'node' });

    r = await get(port, '/metrics');
    assert.equal(sample(r.body, 'famfs_pool_free_bytes', { pool: 'pool0' }), 63 * 2 ** 30);
    assert.equal(sample(r.body, 'famfs_log_entries_used', { pool: 'pool0' }), 3);
    assert.equal(sample(r.body, 'famfs_node_replay_lag_entries', { pool: 'pool0', node: 'b' }), 2);
    assert.equal(sample(r.body, 'famfs_csi_rpc_duration_seconds_count', { method: 'CreateVolume', code: 'OK' }), 1);
    assert.equal(sample(r.body, 'famfs_csi_rpc_duration_seconds_count', { method: 'DeleteVolume', code: 'NOT_FOUND' }), 1);
    assert.equal(sample(r.body, 'famfs_csi_rpc_duration_seconds_bucket', { method: 'CreateVolume', code: 'OK', le: '+Inf' }), 1);
    assert.equal(sample(r.body, 'famfs_memory_errors_total', { pool: 'pool0', source: 'node' }), 1);
  });

  it('answers /healthz from the health callback and 404s elsewhere', async () => {
    let ok = true;
    server = await startHttpEndpoints({
      address: '127.0.0.1:0',
      health: () => (ok ? { state: 'ready' } : { state: 'unhealthy', message: 'test says so' }),
    });
    const port = portOf(server);
    assert.equal((await get(port, '/healthz')).status, 200);
    ok = false;
    const bad = await get(port, '/healthz');
    assert.equal(bad.status, 503);
    assert.match(bad.body, /test says so/);
    assert.equal((await get(port, '/nope')).status, 404);
  });

  it('two instances keep separate registries', async () => {
    const a = createMetrics();
    const b = createMetrics();
    a.poolFreeBytes.set({ pool: 'p' }, 1);
    b.poolFreeBytes.set({ pool: 'p' }, 2);
    assert.equal(sample(await a.registry.metrics(), 'famfs_pool_free_bytes', { pool: 'p' }), 1);
    assert.equal(sample(await b.registry.metrics(), 'famfs_pool_free_bytes', { pool: 'p' }), 2);
  });

  it('reports a port already in use', async () => {
    server = await startHttpEndpoints({ address: '127.0.0.1:0', metrics: new DriverMetrics({ defaultMetrics: false }) });
    await assert.rejects(startHttpEndpoints({ address: `127.0.0.1:${portOf(server)}` }), { code: 'EADDRINUSE' });
  });
});
