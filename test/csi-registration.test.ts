// Kubelet plugin registration and liveness served by the node plugin itself (no node-driver-registrar,
// no livenessprobe sidecar). A stand-in kubelet speaks the pluginregistration wire format with its own
// hand-written protobuf encoding (not our .proto), so a wrong field number or method path fails here;
// then, as the kubelet does, it calls NodeGetInfo on the endpoint it was given.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import { CsiClient } from '../pkg/csi/client';
import type { NodeGetInfoResponse } from '../pkg/csi/types';
import { canMount, NodeTestEnv, type NodePlugin } from './helpers/node-env';

/** protobuf varint */
function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** Decodes a message made of string (wire type 2) and varint (wire type 0) fields: field number → values. */
function decode(buf: Buffer): Map<number, Array<string | number>> {
  const fields = new Map<number, Array<string | number>>();
  let i = 0;
  const readVarint = (): number => {
    let shift = 0;
    let v = 0;
    for (;;) {
      const b = buf[i++];
      v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return v;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = readVarint();
    const field = key >>> 3;
    const wire = key & 7;
    let value: string | number;
    if (wire === 0) value = readVarint();
    else if (wire === 2) {
      const len = readVarint();
      value = buf.subarray(i, i + len).toString('utf8');
      i += len;
    } else throw new Error(`unexpected wire type ${wire}`);
    fields.set(field, [...(fields.get(field) ?? []), value]);
  }
  return fields;
}

/** RegistrationStatus{plugin_registered = 1 (bool), error = 2 (string)} */
function encodeStatus(registered: boolean, error: string): Buffer {
  const e = Buffer.from(error, 'utf8');
  return Buffer.concat([Buffer.from([0x08]), varint(registered ? 1 : 0), ...(e.length > 0 ? [Buffer.from([0x12]), varint(e.length), e] : [])]);
}

/** What the kubelet's plugin watcher does, over raw bytes. */
class FakeKubelet {
  private readonly client: grpc.Client;
  constructor(socket: string) {
    this.client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
  }
  private call(method: string, body: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) =>
      this.client.makeUnaryRequest(
        `/pluginregistration.Registration/${method}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        body,
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        (err, res) => (err ? reject(err) : resolve(res as Buffer)),
      ),
    );
  }
  async getInfo(): Promise<{ type: string; name: string; endpoint: string; versions: string[] }> {
    const f = decode(await this.call('GetInfo', Buffer.alloc(0)));
    return {
      type: String(f.get(1)?.[0] ?? ''),
      name: String(f.get(2)?.[0] ?? ''),
      endpoint: String(f.get(3)?.[0] ?? ''),
      versions: (f.get(4) ?? []).map(String),
    };
  }
  async notify(registered: boolean, error = ''): Promise<void> {
    await this.call('NotifyRegistrationStatus', encodeStatus(registered, error));
  }
  close(): void {
    this.client.close();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function healthz(port: number): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { status: r.status, body: await r.text() };
}

(canMount ? describe : describe.skip)('node plugin: kubelet registration and liveness without sidecars', function () {
  this.timeout(60_000);
  let env: NodeTestEnv;
  let plugin: NodePlugin;
  let registry: string;
  let port: number;
  let kubelet: FakeKubelet;
  const driverName = 'famfs.csi.cxl.io';

  before(async () => {
    env = new NodeTestEnv('reg');
    registry = path.join(env.kubelet, 'plugins_registry');
    fs.mkdirSync(registry);
    port = await freePort();
    // The CSI socket path as the kubelet sees it; in this test the kubelet sees the same file system.
    const csiSock = path.join(env.dir, 'node-a.sock');
    plugin = await env.startNode('node-a', undefined, {
      kubeletRegistration: { registrationDir: registry, csiEndpoint: csiSock },
      healthAddress: `127.0.0.1:${port}`,
    });
    kubelet = new FakeKubelet(path.join(registry, `${driverName}-reg.sock`));
  });

  after(async () => {
    kubelet?.close();
    await env?.close();
  });

  it('puts its socket in plugins_registry; GetInfo names a CSI plugin, the driver, its CSI socket and CSI 1.0.0', async () => {
    assert.deepEqual(fs.readdirSync(registry), [`${driverName}-reg.sock`]);
    assert.ok(fs.statSync(path.join(registry, `${driverName}-reg.sock`)).isSocket());
    const info = await kubelet.getInfo();
    assert.deepEqual(info, { type: 'CSIPlugin', name: driverName, endpoint: path.join(env.dir, 'node-a.sock'), versions: ['1.0.0'] });
    // The kubelet's next step: NodeGetInfo on that endpoint, for CSINode (node id and topology).
    const client = new CsiClient(`unix://${info.endpoint}`, 5000);
    try {
      const ni = await client.call<NodeGetInfoResponse>('Node', 'NodeGetInfo', {});
      assert.equal(ni.node_id, 'node-a');
      assert.deepEqual(ni.accessible_topology?.segments, { 'famfs.csi.cxl.io/pool': 'test-pool' });
    } finally {
      client.close();
    }
  });

  it('a successful NotifyRegistrationStatus is recorded; /healthz answers 200', async () => {
    await kubelet.notify(true);
    assert.equal(plugin.driver.registration?.state.state, 'registered');
    assert.deepEqual(await healthz(port), { status: 200, body: 'ok\n' });
  });

  it('/healthz fails when the CSI socket is gone (Probe through the socket, as the kubelet would reach it)', async () => {
    const sock = path.join(env.dir, 'node-a.sock');
    const moved = `${sock}.moved`;
    fs.renameSync(sock, moved);
    try {
      const h = await healthz(port);
      assert.equal(h.status, 503);
      assert.match(h.body, /Probe through unix:\/\/.*node-a\.sock failed/);
    } finally {
      fs.renameSync(moved, sock);
    }
    assert.equal((await healthz(port)).status, 200);
  });

  it('a refusal from the kubelet makes /healthz fail with its reason (the liveness probe restarts the plugin)', async () => {
    await kubelet.notify(false, 'no supported CSI version');
    const h = await healthz(port);
    assert.equal(h.status, 503);
    assert.match(h.body, /kubelet refused the registration of famfs\.csi\.cxl\.io: no supported CSI version/);
    await kubelet.notify(true);
    assert.equal((await healthz(port)).status, 200);
  });

  it('a deleted registration socket makes /healthz fail (the kubelet unregistered us)', async () => {
    const sock = path.join(registry, `${driverName}-reg.sock`);
    const moved = path.join(env.dir, 'reg.sock.moved');
    fs.renameSync(sock, moved);
    try {
      const h = await healthz(port);
      assert.equal(h.status, 503);
      assert.match(h.body, /registration socket .* was removed or replaced/);
    } finally {
      fs.renameSync(moved, sock);
    }
  });

  it('stopping the plugin removes the registration socket (the kubelet unregisters the driver)', async () => {
    await env.stopPlugin(plugin);
    assert.deepEqual(fs.readdirSync(registry), []);
    env.plugins.splice(env.plugins.indexOf(plugin), 1);
  });
});

describe('famfs-csi registration flags', () => {
  const main = path.join(__dirname, '..', 'cmd', 'famfs-csi.js');
  it('--kubelet-registration-dir without --kubelet-registration-path is refused with a message, nothing started', () => {
    const r = spawnSync(process.execPath, [main, '--mode', 'node', '--kubelet-registration-dir', '/nonexistent'], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--kubelet-registration-dir and --kubelet-registration-path go together/);
  });
  it('registration in controller mode is refused', () => {
    const r = spawnSync(process.execPath, [main, '--mode', 'controller', '--kubelet-registration-dir', '/x', '--kubelet-registration-path', '/y/csi.sock'], {
      encoding: 'utf8',
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /only node plugins register with a kubelet/);
  });
});
