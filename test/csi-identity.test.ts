// Identity service and the server plumbing, exercised over a real unix socket with a real gRPC client.
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { CsiClient, type CsiCallError } from '../pkg/csi/client';
import { invalidArgument, resourceExhausted } from '../pkg/csi/errors';
import { identityService, packageVersion, type Health } from '../pkg/csi/identity';
import { CsiServer, parseEndpoint, type RpcObservation } from '../pkg/csi/server';
import { FamfsError } from '../pkg/famfs/errors';
import type { GetPluginCapabilitiesResponse, GetPluginInfoResponse, ProbeResponse } from '../pkg/csi/types';

const silent = pino({ level: 'silent' });

async function expectCode(p: Promise<unknown>, code: status, messagePart?: RegExp): Promise<CsiCallError> {
  try {
    await p;
  } catch (e) {
    const err = e as CsiCallError;
    assert.equal(status[err.code], status[code], `expected ${status[code]}, got ${status[err.code]}: ${err.details}`);
    if (messagePart) assert.match(err.details, messagePart);
    return err;
  }
  assert.fail(`expected ${status[code]}, call succeeded`);
}

describe('CSI Identity over a unix socket', () => {
  let dir: string;
  let endpoint: string;
  let server: CsiServer;
  let client: CsiClient;
  let health: Health;
  const observed: RpcObservation[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-identity-'));
    endpoint = `unix://${dir}/sub/csi.sock`;
    health = { state: 'ready' };
    server = new CsiServer({ endpoint, log: silent, onRpc: (o) => observed.push(o) });
    server.addService('Identity', identityService({ driverName: 'famfs.csi.example.io', manifest: { mode: 'test' }, health: () => health }));
    // A Controller whose handlers throw typed errors, to check the status mapping end to end.
    server.addService('Controller', {
      CreateVolume: () => {
        throw invalidArgument('name is required');
      },
      DeleteVolume: () => {
        throw new FamfsError('ENOSPC', 'no 2 MiB extent free');
      },
      GetCapacity: async () => {
        throw resourceExhausted('pool empty');
      },
      ListVolumes: () => {
        throw new Error('boom');
      },
    });
    await server.start();
    client = new CsiClient(endpoint, 5000);
  });

  after(async () => {
    client.close();
    await server.stop(1000);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('GetPluginInfo returns the driver name and the package.json version', async () => {
    const info = await client.call<GetPluginInfoResponse>('Identity', 'GetPluginInfo');
    assert.equal(info.name, 'famfs.csi.example.io');
    assert.equal(info.vendor_version, packageVersion());
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
    assert.equal(info.vendor_version, pkg.version);
    assert.deepEqual(info.manifest, { mode: 'test' });
  });

  it('GetPluginCapabilities advertises CONTROLLER_SERVICE and VOLUME_ACCESSIBILITY_CONSTRAINTS, no expansion', async () => {
    const caps = await client.call<GetPluginCapabilitiesResponse>('Identity', 'GetPluginCapabilities');
    const types = caps.capabilities.map((c) => c.service?.type).sort();
    assert.deepEqual(types, ['CONTROLLER_SERVICE', 'VOLUME_ACCESSIBILITY_CONSTRAINTS']);
    assert.ok(caps.capabilities.every((c) => c.volume_expansion === null || c.volume_expansion === undefined));
  });

  it('Probe follows the health callback: ready, starting, unhealthy', async () => {
    health = { state: 'ready' };
    assert.deepEqual((await client.call<ProbeResponse>('Identity', 'Probe')).ready, { value: true });
    health = { state: 'starting', message: 'device not mapped yet' };
    assert.deepEqual((await client.call<ProbeResponse>('Identity', 'Probe')).ready, { value: false });
    health = { state: 'unhealthy', message: 'FUSE server dead' };
    await expectCode(client.call('Identity', 'Probe'), status.FAILED_PRECONDITION, /FUSE server dead/);
    health = { state: 'ready' };
  });

  it('the socket is 0600 and owned by the server user', () => {
    const st = fs.statSync(path.join(dir, 'sub', 'csi.sock'));
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, process.getuid?.());
  });

  it('maps thrown CsiErrors and famfs errors to their gRPC status; untyped errors to INTERNAL', async () => {
    await expectCode(client.call('Controller', 'CreateVolume', { name: '' }), status.INVALID_ARGUMENT, /name is required/);
    await expectCode(client.call('Controller', 'DeleteVolume', { volume_id: 'x' }), status.RESOURCE_EXHAUSTED, /ENOSPC/);
    await expectCode(client.call('Controller', 'GetCapacity', {}), status.RESOURCE_EXHAUSTED, /pool empty/);
    await expectCode(client.call('Controller', 'ListVolumes', {}), status.INTERNAL, /boom/);
  });

  it('answers UNIMPLEMENTED for RPCs a service does not implement and for unregistered services', async () => {
    await expectCode(client.call('Controller', 'ControllerExpandVolume', { volume_id: 'x' }), status.UNIMPLEMENTED);
    await expectCode(client.call('Node', 'NodeGetInfo', {}), status.UNIMPLEMENTED);
  });

  it('reports every RPC with method, status and duration', () => {
    const probe = observed.find((o) => o.method === 'Probe' && o.code === status.OK);
    assert.ok(probe !== undefined);
    assert.ok(probe.seconds >= 0 && probe.seconds < 5);
    assert.ok(observed.some((o) => o.method === 'ListVolumes' && o.code === status.INTERNAL));
  });

  it('refuses to start on a socket another server is listening on', async () => {
    const second = new CsiServer({ endpoint, log: silent });
    second.addService('Identity', identityService({ driverName: 'x.y', health: () => ({ state: 'ready' }) }));
    await assert.rejects(second.start(), /another server is listening/);
    // The first server still answers.
    await client.call('Identity', 'Probe');
  });
});

describe('CsiServer socket handling', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-socket-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('removes a stale socket left by a dead process and serves on it', async () => {
    const sock = path.join(dir, 'stale.sock');
    // Make a real socket file, then close the listener without unlinking it: a crashed plugin's leftover.
    const listener = net.createServer();
    await new Promise<void>((resolve) => listener.listen(sock, resolve));
    await new Promise<void>((resolve) => {
      // Closing a listener unlinks its path; rename the path away first and back after, so it stays.
      fs.renameSync(sock, sock + '.keep');
      listener.close(() => resolve());
    });
    fs.renameSync(sock + '.keep', sock);
    assert.ok(fs.lstatSync(sock).isSocket(), 'precondition: a stale socket exists');

    const server = new CsiServer({ endpoint: `unix://${sock}`, log: silent });
    server.addService('Identity', identityService({ driverName: 'famfs.csi.example.io', health: () => ({ state: 'ready' }) }));
    await server.start();
    const client = new CsiClient(`unix://${sock}`, 5000);
    try {
      const info = await client.call<GetPluginInfoResponse>('Identity', 'GetPluginInfo');
      assert.equal(info.name, 'famfs.csi.example.io');
    } finally {
      client.close();
      await server.stop(1000);
    }
    assert.ok(!fs.existsSync(sock), 'stop() removes the socket');
  });

  it('refuses to replace a regular file at the socket path', async () => {
    const file = path.join(dir, 'not-a-socket');
    fs.writeFileSync(file, 'data');
    const server = new CsiServer({ endpoint: `unix://${file}`, log: silent });
    server.addService('Identity', identityService({ driverName: 'a.b', health: () => ({ state: 'ready' }) }));
    await assert.rejects(server.start(), /not a socket/);
    assert.equal(fs.readFileSync(file, 'utf8'), 'data');
  });

  it('parses endpoints', () => {
    assert.deepEqual(parseEndpoint('unix:///tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' });
    assert.deepEqual(parseEndpoint('unix:/tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' });
    assert.deepEqual(parseEndpoint('/tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' });
    assert.deepEqual(parseEndpoint('tcp://127.0.0.1:10000'), { kind: 'tcp', host: '127.0.0.1', port: 10000 });
    assert.throws(() => parseEndpoint('unix://relative.sock'), /absolute/);
    assert.throws(() => parseEndpoint('nonsense'), /expected/);
  });

  it('rejects an invalid driver name', () => {
    assert.throws(() => identityService({ driverName: '-bad', health: () => ({ state: 'ready' }) }), /driver name/);
    assert.throws(() => identityService({ driverName: 'a'.repeat(64), health: () => ({ state: 'ready' }) }), /driver name/);
  });
});
