// Every controller RPC against hostile or malformed input, over a real unix socket on an emulated
// devdax: each case must get the spec's status code, a message that says what is wrong, and — for
// every case that is refused or is a no-op — leave the device untouched: the log's next index and
// the metadata image's generation are compared before and after each call, and the whole device's
// bytes before and after the table.
import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { CsiClient, type CsiCallError } from '../pkg/csi/client';
import { controllerService } from '../pkg/csi/controller';
import { CsiServer } from '../pkg/csi/server';
import { ControllerStore } from '../pkg/csi/store';
import { Volumes } from '../pkg/csi/volumes';
import type { CreateVolumeResponse } from '../pkg/csi/types';
import { type DaxDevice } from '../pkg/device';
import { createEmulatedDevice, removeEmulatedDevice } from '../testkit/emulated-device';
import { FamfsFs } from '../pkg/famfs';

const MiB = 1024 * 1024;
const KEY = 'famfs.csi.cxl.io/pool';
const UUID = '41111111-2222-4333-8444-555555555555';
const DEV = `csi-badinput-${process.pid}`;
const cap = (mode = 'SINGLE_NODE_WRITER', mount: object = { fs_type: '', mount_flags: [] }) => ({ mount, access_mode: { mode } });
const good = { capacity_range: { required_bytes: String(2 * MiB) }, volume_capabilities: [cap()] };
const NOVOL = 'vol-' + '0'.repeat(40);
const NOSNAP = 'snap-' + '0'.repeat(40);

interface Case {
  rpc: string;
  what: string;
  req: object;
  want: string;
  /** The call may legitimately write (an accepted create). Everything else must write nothing. */
  writes?: boolean;
}

describe('CSI controller: table of bad inputs over a unix socket', function () {
  this.timeout(60_000);
  let dir: string;
  let device: DaxDevice;
  let famfs: FamfsFs;
  let state: Volumes;
  let server: CsiServer;
  let client: CsiClient;
  let fixture: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-bad-'));
    device = createEmulatedDevice(DEV, 256 * MiB, { fresh: true });
    famfs = FamfsFs.mkfs(device, { systemUuid: UUID, devicePath: device.path });
    state = new Volumes(new ControllerStore(famfs));
    state.store.takeMasterRole(UUID);
    server = new CsiServer({ endpoint: `unix://${dir}/csi.sock`, log: pino({ level: 'silent' }) });
    server.addService(
      'Controller',
      controllerService({
        volumes: state,
        pool: 'p1',
        topologyKey: KEY,
        nodeExists: (n) => n === 'node-a',
        condition: () => ({ abnormal: false, message: 'ok' }),
      }),
    );
    await server.start();
    client = new CsiClient(`unix://${dir}/csi.sock`, 10_000);
    fixture = (await client.call<CreateVolumeResponse>('Controller', 'CreateVolume', { name: 'fixture', ...good })).volume.volume_id;
  });
  after(async () => {
    client.close();
    await server.stop(200);
    device.close();
    removeEmulatedDevice(DEV);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const table = (): Case[] => [
    // CreateVolume: names
    { rpc: 'CreateVolume', what: 'empty name', req: { ...good, name: '' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: 'NUL in name', req: { ...good, name: 'a\0b' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: '5000-byte name', req: { ...good, name: 'n'.repeat(5000) }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: '128-byte name (spec minimum)', req: { ...good, name: 'm'.repeat(128) }, want: 'OK', writes: true },
    { rpc: 'CreateVolume', what: 'name with ../', req: { ...good, name: '../../etc/passwd' }, want: 'OK', writes: true },
    { rpc: 'CreateVolume', what: 'unicode name', req: { ...good, name: 'ボリューム-☃-\u202e' }, want: 'OK', writes: true },
    // sizes
    { rpc: 'CreateVolume', what: 'negative size', req: { ...good, name: 's1', capacity_range: { required_bytes: '-1' } }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: 'negative limit', req: { ...good, name: 's1', capacity_range: { limit_bytes: '-5' } }, want: 'INVALID_ARGUMENT' },
    {
      rpc: 'CreateVolume',
      what: 'size 0 → default 1 GiB, larger than the device',
      req: { ...good, name: 's1', capacity_range: { required_bytes: '0' } },
      want: 'OUT_OF_RANGE',
    },
    { rpc: 'CreateVolume', what: 'int64 max', req: { ...good, name: 's1', capacity_range: { required_bytes: '9223372036854775807' } }, want: 'OUT_OF_RANGE' },
    {
      rpc: 'CreateVolume',
      what: 'larger than the device',
      req: { ...good, name: 's1', capacity_range: { required_bytes: String(300 * MiB) } },
      want: 'OUT_OF_RANGE',
    },
    {
      rpc: 'CreateVolume',
      what: 'no 2 MiB multiple in range',
      req: { ...good, name: 's1', capacity_range: { required_bytes: String(3 * MiB), limit_bytes: String(3 * MiB) } },
      want: 'OUT_OF_RANGE',
    },
    {
      rpc: 'CreateVolume',
      what: 'limit below required',
      req: { ...good, name: 's1', capacity_range: { required_bytes: String(8 * MiB), limit_bytes: String(4 * MiB) } },
      want: 'OUT_OF_RANGE',
    },
    {
      rpc: 'CreateVolume',
      what: 'free space too small now',
      req: { ...good, name: 's1', capacity_range: { required_bytes: String(240 * MiB) } },
      want: 'RESOURCE_EXHAUSTED',
    },
    // parameters
    { rpc: 'CreateVolume', what: 'unknown parameter', req: { ...good, name: 'p1', parameters: { fsType: 'ext4' } }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: 'mode not octal', req: { ...good, name: 'p1', parameters: { mode: '999' } }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: 'negative uid', req: { ...good, name: 'p1', parameters: { uid: '-1' } }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: 'unknown sharing', req: { ...good, name: 'p1', parameters: { sharing: 'yes' } }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: 'nstrips without nbuckets', req: { ...good, name: 'p1', parameters: { nstrips: '2' } }, want: 'INVALID_ARGUMENT' },
    {
      rpc: 'CreateVolume',
      what: 'buckets smaller than 1 GiB',
      req: { ...good, name: 'p1', parameters: { nstrips: '2', nbuckets: '4' } },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'CreateVolume',
      what: 'Kubernetes keys are accepted',
      req: { ...good, name: 'k8s', parameters: { 'csi.storage.k8s.io/pvc/name': 'x' } },
      want: 'OK',
      writes: true,
    },
    // capabilities
    { rpc: 'CreateVolume', what: 'no capabilities', req: { name: 'c1', capacity_range: good.capacity_range }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateVolume', what: 'no access mode', req: { ...good, name: 'c1', volume_capabilities: [{ mount: { fs_type: '' } }] }, want: 'INVALID_ARGUMENT' },
    {
      rpc: 'CreateVolume',
      what: 'no access type',
      req: { ...good, name: 'c1', volume_capabilities: [{ access_mode: { mode: 'SINGLE_NODE_WRITER' } }] },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'CreateVolume',
      what: 'multi-writer without opt-in',
      req: { ...good, name: 'c1', volume_capabilities: [cap('MULTI_NODE_MULTI_WRITER')] },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'CreateVolume',
      what: 'MULTI_NODE_SINGLE_WRITER',
      req: { ...good, name: 'c1', volume_capabilities: [cap('MULTI_NODE_SINGLE_WRITER')] },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'CreateVolume',
      what: 'contradictory mount flags ro+rw',
      req: { ...good, name: 'c1', volume_capabilities: [cap('SINGLE_NODE_WRITER', { fs_type: '', mount_flags: ['ro', 'rw'] })] },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'CreateVolume',
      what: 'fs_type ext4',
      req: { ...good, name: 'c1', volume_capabilities: [cap('SINGLE_NODE_WRITER', { fs_type: 'ext4' })] },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'CreateVolume',
      what: 'non-numeric fsGroup',
      req: { ...good, name: 'c1', volume_capabilities: [cap('SINGLE_NODE_WRITER', { fs_type: '', volume_mount_group: 'wheel' })] },
      want: 'INVALID_ARGUMENT',
    },
    // sources, topology, conflicts
    {
      rpc: 'CreateVolume',
      what: 'empty snapshot source',
      req: { ...good, name: 'src1', volume_content_source: { snapshot: { snapshot_id: '' } } },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'CreateVolume',
      what: 'path-like snapshot source',
      req: { ...good, name: 'src1', volume_content_source: { snapshot: { snapshot_id: '../../x' } } },
      want: 'NOT_FOUND',
    },
    {
      rpc: 'CreateVolume',
      what: 'missing volume source',
      req: { ...good, name: 'src1', volume_content_source: { volume: { volume_id: NOVOL } } },
      want: 'NOT_FOUND',
    },
    {
      rpc: 'CreateVolume',
      what: 'requisite topology of another pool',
      req: { ...good, name: 't1', accessibility_requirements: { requisite: [{ segments: { [KEY]: 'p2' } }] } },
      want: 'RESOURCE_EXHAUSTED',
    },
    {
      rpc: 'CreateVolume',
      what: 'same name, other size',
      req: { ...good, name: 'fixture', capacity_range: { required_bytes: String(8 * MiB) } },
      want: 'ALREADY_EXISTS',
    },
    { rpc: 'CreateVolume', what: 'same name, other parameters', req: { ...good, name: 'fixture', parameters: { uid: '7' } }, want: 'ALREADY_EXISTS' },
    {
      rpc: 'CreateVolume',
      what: 'same name, negative size',
      req: { ...good, name: 'fixture', capacity_range: { required_bytes: '-1' } },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'CreateVolume',
      what: 'same name, limit below required',
      req: { ...good, name: 'fixture', capacity_range: { required_bytes: String(8 * MiB), limit_bytes: String(4 * MiB) } },
      want: 'OUT_OF_RANGE',
    },
    { rpc: 'CreateVolume', what: 'same name, unknown parameter', req: { ...good, name: 'fixture', parameters: { fsType: 'ext4' } }, want: 'INVALID_ARGUMENT' },
    {
      rpc: 'CreateSnapshot',
      what: 'unknown parameter, unknown source',
      req: { name: 'sn1', source_volume_id: NOVOL, parameters: { foo: 'bar' } },
      want: 'INVALID_ARGUMENT',
    },
    { rpc: 'CreateVolume', what: 'same name, same everything', req: { ...good, name: 'fixture' }, want: 'OK' },
    // DeleteVolume
    { rpc: 'DeleteVolume', what: 'empty id', req: { volume_id: '' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'DeleteVolume', what: 'path-like id', req: { volume_id: '../../csi' }, want: 'OK' },
    { rpc: 'DeleteVolume', what: 'NUL id', req: { volume_id: 'vol-\0' }, want: 'OK' },
    { rpc: 'DeleteVolume', what: 'unknown id', req: { volume_id: NOVOL }, want: 'OK' },
    // ControllerPublishVolume
    { rpc: 'ControllerPublishVolume', what: 'empty volume id', req: { volume_id: '', node_id: 'node-a', volume_capability: cap() }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ControllerPublishVolume', what: 'empty node id', req: { volume_id: fixture, node_id: '', volume_capability: cap() }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ControllerPublishVolume', what: 'no capability', req: { volume_id: fixture, node_id: 'node-a' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ControllerPublishVolume', what: 'unknown volume', req: { volume_id: NOVOL, node_id: 'node-a', volume_capability: cap() }, want: 'NOT_FOUND' },
    { rpc: 'ControllerPublishVolume', what: 'path-like volume', req: { volume_id: '../etc', node_id: 'node-a', volume_capability: cap() }, want: 'NOT_FOUND' },
    { rpc: 'ControllerPublishVolume', what: 'unknown node', req: { volume_id: fixture, node_id: 'node-zz', volume_capability: cap() }, want: 'NOT_FOUND' },
    // arguments before state: a malformed request is INVALID_ARGUMENT whatever the volume or node
    {
      rpc: 'ControllerPublishVolume',
      what: 'no access mode, unknown volume',
      req: { volume_id: NOVOL, node_id: 'node-a', volume_capability: { mount: {} } },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'ControllerPublishVolume',
      what: 'no access mode, unknown node',
      req: { volume_id: fixture, node_id: 'node-zz', volume_capability: { mount: {} } },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'ControllerPublishVolume',
      what: 'MULTI_NODE_SINGLE_WRITER, unknown volume',
      req: { volume_id: NOVOL, node_id: 'node-a', volume_capability: cap('MULTI_NODE_SINGLE_WRITER') },
      want: 'INVALID_ARGUMENT',
    },
    {
      rpc: 'ControllerPublishVolume',
      what: 'multi-writer without opt-in',
      req: { volume_id: fixture, node_id: 'node-a', volume_capability: cap('MULTI_NODE_MULTI_WRITER') },
      want: 'INVALID_ARGUMENT',
    },
    // ControllerUnpublishVolume
    { rpc: 'ControllerUnpublishVolume', what: 'empty volume id', req: { volume_id: '', node_id: 'node-a' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ControllerUnpublishVolume', what: 'unknown volume', req: { volume_id: NOVOL, node_id: 'node-a' }, want: 'OK' },
    { rpc: 'ControllerUnpublishVolume', what: 'not published there', req: { volume_id: fixture, node_id: 'node-a' }, want: 'OK' },
    // ValidateVolumeCapabilities
    { rpc: 'ValidateVolumeCapabilities', what: 'empty id', req: { volume_id: '', volume_capabilities: [cap()] }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ValidateVolumeCapabilities', what: 'no capabilities', req: { volume_id: fixture, volume_capabilities: [] }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ValidateVolumeCapabilities', what: 'unknown volume', req: { volume_id: NOVOL, volume_capabilities: [cap()] }, want: 'NOT_FOUND' },
    // ListVolumes / GetCapacity / ControllerGetVolume
    { rpc: 'ListVolumes', what: 'negative max_entries', req: { max_entries: -1 }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ListVolumes', what: 'foreign token', req: { starting_token: 'page-2' }, want: 'ABORTED' },
    { rpc: 'GetCapacity', what: 'unknown parameter', req: { parameters: { bogus: '1' } }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ControllerGetVolume', what: 'empty id', req: { volume_id: '' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'ControllerGetVolume', what: 'unknown id', req: { volume_id: NOVOL }, want: 'NOT_FOUND' },
    { rpc: 'ControllerGetVolume', what: 'path-like id', req: { volume_id: '../../..' }, want: 'NOT_FOUND' },
    // Snapshots
    { rpc: 'CreateSnapshot', what: 'empty name', req: { name: '', source_volume_id: fixture }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateSnapshot', what: 'NUL in name', req: { name: 'x\0', source_volume_id: fixture }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateSnapshot', what: 'empty source', req: { name: 'sn', source_volume_id: '' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'CreateSnapshot', what: 'unknown source', req: { name: 'sn', source_volume_id: NOVOL }, want: 'NOT_FOUND' },
    { rpc: 'CreateSnapshot', what: 'path-like source', req: { name: 'sn', source_volume_id: '../vol' }, want: 'NOT_FOUND' },
    {
      rpc: 'CreateSnapshot',
      what: 'unknown parameter',
      req: { name: 'sn', source_volume_id: fixture, parameters: { compress: 'yes' } },
      want: 'INVALID_ARGUMENT',
    },
    { rpc: 'DeleteSnapshot', what: 'empty id', req: { snapshot_id: '' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'DeleteSnapshot', what: 'unknown id', req: { snapshot_id: NOSNAP }, want: 'OK' },
    { rpc: 'ListSnapshots', what: 'foreign token', req: { starting_token: 'zzz' }, want: 'ABORTED' },
    { rpc: 'ListSnapshots', what: 'negative max_entries', req: { max_entries: -3 }, want: 'INVALID_ARGUMENT' },
    { rpc: 'GetSnapshot', what: 'empty id', req: { snapshot_id: '' }, want: 'INVALID_ARGUMENT' },
    { rpc: 'GetSnapshot', what: 'unknown id', req: { snapshot_id: NOSNAP }, want: 'NOT_FOUND' },
    // Not offered
    {
      rpc: 'ControllerExpandVolume',
      what: 'famfs files cannot grow',
      req: { volume_id: fixture, capacity_range: { required_bytes: String(4 * MiB) } },
      want: 'UNIMPLEMENTED',
    },
    { rpc: 'ControllerModifyVolume', what: 'not offered', req: { volume_id: fixture, mutable_parameters: { a: 'b' } }, want: 'UNIMPLEMENTED' },
  ];

  const mark = (): string => {
    famfs.catchUp();
    return `log ${famfs.header().nextIndex}, image generation ${state.store.generation}`;
  };
  const deviceHash = (): string => {
    const h = createHash('sha256');
    for (let off = 0; off < device.size; off += 16 * MiB) h.update(device.read(off, Math.min(16 * MiB, device.size - off)));
    return h.digest('hex');
  };

  it('answers every case with the spec code and a message, and writes nothing when it refuses', async () => {
    const failures: string[] = [];
    const cases = table();
    for (const c of cases) {
      const before = mark();
      let got = 'OK';
      let message = '';
      try {
        await client.call('Controller', c.rpc, c.req);
      } catch (e) {
        got = status[(e as CsiCallError).code] ?? 'UNKNOWN';
        message = (e as CsiCallError).details;
      }
      const after = mark();
      if (got !== c.want) failures.push(`${c.rpc} (${c.what}): got ${got} "${message}", want ${c.want}`);
      if (got !== 'OK' && message.length < 12) failures.push(`${c.rpc} (${c.what}): message ${JSON.stringify(message)} does not say what is wrong`);
      if (!c.writes && before !== after) failures.push(`${c.rpc} (${c.what}): wrote to the device (${before} → ${after})`);
    }
    assert.deepEqual(failures, [], failures.join('\n'));
    assert.ok(cases.length >= 70);
    assert.equal(state.lockedObjects, 0);
  });

  it('leaves every byte of the device unchanged across all refused calls', async () => {
    const before = deviceHash();
    for (const c of table().filter((x) => !x.writes)) {
      await client.call('Controller', c.rpc, c.req).catch(() => undefined);
    }
    assert.equal(deviceHash(), before);
  });
});
