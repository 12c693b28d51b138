// The Prometheus endpoint: a real HTTP server on loopback, scraped over TCP, figures checked to move.
import { strict as assert } from 'assert';
import * as http from 'http';
import { createMetrics, observeRpc, parseListenAddress, startMetricsServer, type MetricsServer } from '../pkg/k8s/metrics';

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
    const have = new Map(lbl.split(',').filter(Boolean).map((kv) => {
      const i = kv.indexOf('=');
      return [kv.slice(0, i), kv.slice(i + 2, -1)] as const;
    }));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(line.split(' ').pop());
  }
  return undefined;
}

describe('k8s metrics endpoint', () => {
  let server: MetricsServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('parses Go-style listen addresses and rejects others', () => {
    assert.deepEqual(parseListenAddress(':9810'), { host: undefined, port: 9810 });
    assert.deepEqual(parseListenAddress('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseListenAddress('[::1]:9810'), { host: '::1', port: 9810 });
    for (const bad of ['9810', 'host:', ':99999', '']) assert.throws(() => parseListenAddress(bad), { code: 'BAD_ADDRESS' });
  });

  it('serves pool, log, replay-lag, RPC, FUSE and memory-error figures, and they move', async () => {
    const m = createMetrics({ component: 'controller' });
    server = await startMetricsServer(m.registry, '127.0.0.1:0');
    const port = server.address.port;

    m.poolSizeBytes.set({ pool: 'pool0' }, 64 * 2 ** 30);
    m.poolFreeBytes.set({ pool: 'pool0' }, 64 * 2 ** 30);
    m.logEntriesTotal.set({ pool: 'pool0' }, 25000);
    m.logEntriesUsed.set({ pool: 'pool0' }, 1);
    m.nodeReplayLagEntries.set({ pool: 'pool0', node: 'b' }, 0);
    let r = await get(port, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.type, /text\/plain/);
    const free0 = sample(r.body, 'famfs_pool_free_bytes', { pool: 'pool0', component: 'controller' });
    assert.equal(free0, 64 * 2 ** 30);
    assert.ok(r.body.includes('famfs_csi_process_resident_memory_bytes') || r.body.includes('famfs_csi_nodejs_heap_size_used_bytes'));

    // A volume is created: free drops, the log grows, a node falls behind, RPCs are timed, FUSE moves bytes.
    m.poolFreeBytes.dec({ pool: 'pool0' }, 2 ** 30);
    m.logEntriesUsed.inc({ pool: 'pool0' }, 2);
    m.nodeReplayLagEntries.set({ pool: 'pool0', node: 'b' }, 2);
    await observeRpc(m, 'CreateVolume', async () => 'vol', () => 'UNKNOWN');
    await assert.rejects(
      observeRpc(m, 'DeleteVolume', () => Promise.reject(Object.assign(new Error('gone'), { code: 5 })), () => 'NOT_FOUND'),
      /gone/,
    );
    m.fuseOperations.inc({ op: 'read', result: 'ok' }, 3);
    m.fuseBytes.inc({ direction: 'read' }, 12288);
    m.memoryErrors.inc({ pool: 'pool0', source: 'fuse' });

    r = await get(port, '/metrics');
    assert.equal(sample(r.body, 'famfs_pool_free_bytes', { pool: 'pool0' }), 63 * 2 ** 30);
    assert.equal(sample(r.body, 'famfs_log_entries_used', { pool: 'pool0' }), 3);
    assert.equal(sample(r.body, 'famfs_node_replay_lag_entries', { pool: 'pool0', node: 'b' }), 2);
    assert.equal(sample(r.body, 'famfs_csi_rpc_duration_seconds_count', { method: 'CreateVolume', code: 'OK' }), 1);
    assert.equal(sample(r.body, 'famfs_csi_rpc_duration_seconds_count', { method: 'DeleteVolume', code: 'NOT_FOUND' }), 1);
    assert.equal(sample(r.body, 'famfs_csi_rpc_duration_seconds_bucket', { method: 'CreateVolume', code: 'OK', le: '+Inf' }), 1);
    assert.equal(sample(r.body, 'famfs_fuse_operations_total', { op: 'read', result: 'ok' }), 3);
    assert.equal(sample(r.body, 'famfs_fuse_bytes_total', { direction: 'read' }), 12288);
    assert.equal(sample(r.body, 'famfs_memory_errors_total', { pool: 'pool0', source: 'fuse' }), 1);
  });

  it('answers /healthz from the health callback and 404s elsewhere', async () => {
    let ok = true;
    const m = createMetrics({ component: 'node', processMetrics: false });
    server = await startMetricsServer(m.registry, '127.0.0.1:0', () => ok);
    const port = server.address.port;
    assert.equal((await get(port, '/healthz')).status, 200);
    ok = false;
    assert.equal((await get(port, '/healthz')).status, 503);
    assert.equal((await get(port, '/nope')).status, 404);
  });

  it('two instances keep separate registries', async () => {
    const a = createMetrics({ component: 'controller', processMetrics: false });
    const b = createMetrics({ component: 'node', processMetrics: false });
    a.poolFreeBytes.set({ pool: 'p' }, 1);
    b.poolFreeBytes.set({ pool: 'p' }, 2);
    assert.equal(sample(await a.registry.metrics(), 'famfs_pool_free_bytes', { pool: 'p' }), 1);
    assert.equal(sample(await b.registry.metrics(), 'famfs_pool_free_bytes', { pool: 'p' }), 2);
  });

  it('adds its series to an existing registry (the driver\'s) without clashing with its RPC histogram', async () => {
    const { Registry, Histogram } = await import('prom-client');
    const driver = new Registry();
    new Histogram({ name: 'famfs_csi_rpc_duration_seconds', help: 'driver-owned', labelNames: ['service', 'method', 'code'], registers: [driver] });
    const m = createMetrics({ component: 'controller', registry: driver });
    assert.equal(m.rpcDuration, undefined);
    m.poolFreeBytes.set({ pool: 'p' }, 42);
    assert.equal(await observeRpc(m, 'CreateVolume', async () => 'ok', () => 'UNKNOWN'), 'ok');
    const text = await driver.metrics();
    assert.equal(sample(text, 'famfs_pool_free_bytes', { pool: 'p' }), 42);
    assert.match(text, /# HELP famfs_csi_rpc_duration_seconds driver-owned/);
  });

  it('reports a port already in use as LISTEN_FAILED', async () => {
    const m = createMetrics({ component: 'node', processMetrics: false });
    server = await startMetricsServer(m.registry, '127.0.0.1:0');
    await assert.rejects(startMetricsServer(m.registry, `127.0.0.1:${server.address.port}`), { code: 'LISTEN_FAILED' });
  });
});
