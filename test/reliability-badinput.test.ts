// Bad input (issue 6, item 6): fast-check fuzzes every CSI RPC of a real famfs-csi process
// (--mode all: Identity, Controller and Node on one unix socket, on an emulated device) with
// hostile names, sizes, parameters, capabilities and paths. Every answer must be a deliberate gRPC
// status (never UNKNOWN or INTERNAL, which is what an unexpected throw becomes), the process must
// stay alive, and a call that failed must have changed nothing: not the famfs log (header counters),
// not the controller's state image (its generation), not the node plugin's state files, and no mount,
// file or directory under the kubelet root it may mount in.
import { strict as assert } from 'assert';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import fc from 'fast-check';
import { CsiClient } from '../pkg/csi/client';
import { SharedStateImage } from '../pkg/csi/store-image';
import { validateStateDoc } from '../pkg/csi/store';
import { openDevice, type DaxDevice } from '../pkg/device';
import { FamfsFs } from '../pkg/famfs/fs';
import { NODE_PUBLISHED_FILE, NODE_PUBLISHED_JOURNAL, NODE_STATE_FILE } from '../pkg/mount/mount-records';
import { readMountinfo } from '../pkg/mount/mountinfo';
import { canMount, codeOf, messageOf } from './helpers/node-env';
import { CSI_MAIN, rawHeader, waitFor } from './soak/reliability-lib';

const RPCS: [service: 'Identity' | 'Controller' | 'Node', method: string][] = [
  ['Identity', 'GetPluginInfo'],
  ['Identity', 'Probe'],
  ['Controller', 'CreateVolume'],
  ['Controller', 'DeleteVolume'],
  ['Controller', 'ControllerPublishVolume'],
  ['Controller', 'ControllerUnpublishVolume'],
  ['Controller', 'ValidateVolumeCapabilities'],
  ['Controller', 'ListVolumes'],
  ['Controller', 'GetCapacity'],
  ['Controller', 'ControllerGetVolume'],
  ['Controller', 'ControllerExpandVolume'],
  ['Controller', 'ControllerModifyVolume'],
  ['Controller', 'CreateSnapshot'],
  ['Controller', 'DeleteSnapshot'],
  ['Controller', 'ListSnapshots'],
  ['Node', 'NodeStageVolume'],
  ['Node', 'NodeUnstageVolume'],
  ['Node', 'NodePublishVolume'],
  ['Node', 'NodeUnpublishVolume'],
  ['Node', 'NodeGetVolumeStats'],
  ['Node', 'NodeExpandVolume'],
  ['Node', 'NodeGetInfo'],
];

/** Statuses a handler chooses on purpose. UNKNOWN/INTERNAL mean something threw unexpectedly. */
const DELIBERATE = new Set([
  'OK',
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'FAILED_PRECONDITION',
  'OUT_OF_RANGE',
  'RESOURCE_EXHAUSTED',
  'UNIMPLEMENTED',
  'ABORTED',
]);

(canMount ? describe : describe.skip)('reliability: fuzzed CSI RPCs against a real famfs-csi process', function () {
  this.timeout(600_000);
  let dir: string;
  let kubelet: string;
  let devicePath: string;
  let child: ChildProcess;
  let client: CsiClient;
  let device: DaxDevice;
  let exited: string | undefined;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-fuzz-'));
    kubelet = path.join(dir, 'kubelet');
    fs.mkdirSync(path.join(kubelet, 'pods'), { recursive: true });
    devicePath = `/dev/shm/famfs-csi-fuzz-${process.pid}.img`;
    const endpoint = `unix://${dir}/csi.sock`;
    child = spawn(
      process.execPath,
      [
        CSI_MAIN,
        '--mode',
        'all',
        '--endpoint',
        endpoint,
        '--device',
        devicePath,
        '--device-size',
        '256Mi',
        '--mkfs',
        '--node-id',
        'fuzz-node',
        '--state-dir',
        path.join(dir, 'state'),
        '--allowed-path-root',
        kubelet,
        '--pool',
        'fuzz',
        '--log-level',
        'fatal',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code, sig) => (exited = `${sig ?? code}: ${stderr.slice(-500)}`));
    client = new CsiClient(endpoint, 15_000);
    const up = await waitFor(async () => exited === undefined && (await codeOf(client.call('Identity', 'GetPluginInfo', {}))) === 'OK', 30_000, 200);
    assert.ok(up, `famfs-csi did not come up: ${exited ?? 'no answer'}`);
    device = openDevice(devicePath, { readOnly: true });
  });
  after(async () => {
    client?.close();
    device?.close();
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await waitFor(() => child.exitCode !== null, 10_000);
    }
    // The node plugin's detached FUSE server (if a fuzzed stage started one) goes with its mount.
    const pidFile = path.join(dir, 'state', 'fused', 'fuzz', 'pid');
    if (fs.existsSync(pidFile)) {
      try {
        process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGTERM');
      } catch {
        /* gone */
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    fs.rmSync(devicePath, { force: true });
  });

  /** Everything a failed call must leave as it was. */
  async function snapshot(): Promise<Record<string, unknown>> {
    const f = FamfsFs.open(device, { readOnly: true });
    const image = new SharedStateImage(f, device, validateStateDoc).load();
    const stateFile = (name: string): string => {
      const p = path.join(dir, 'state', name);
      return fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : '(absent)';
    };
    const tree: string[] = [];
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        tree.push(path.join(d, e.name) + (e.isDirectory() ? '/' : ''));
        if (e.isDirectory()) walk(path.join(d, e.name));
      }
    };
    walk(kubelet);
    const mounts = (await readMountinfo()).filter((m) => m.mountPoint.startsWith(kubelet + '/')).map((m) => m.mountPoint);
    return {
      nextIndex: rawHeader(device).nextIndex,
      imageGeneration: image?.header.generation ?? 0,
      nodeState: stateFile(NODE_STATE_FILE),
      nodePublished: stateFile(NODE_PUBLISHED_FILE),
      nodePublishedJournal: stateFile(NODE_PUBLISHED_JOURNAL),
      kubeletTree: tree.sort(),
      kubeletMounts: mounts,
    };
  }

  it('every RPC, hostile input: deliberate status, process alive, nothing changed by a failed call', async () => {
    const name = fc.oneof(
      fc.constantFrom(
        '',
        '../../etc/passwd',
        'a\0b',
        'x'.repeat(129),
        'y'.repeat(5000),
        '☃️ボリューム\u202e',
        '/abs',
        '.',
        '..',
        'vol-' + '0'.repeat(40),
        'ok-name',
      ),
      fc.string({ maxLength: 200 }),
    );
    const size = fc.constantFrom('0', '-1', '1', '2097152', '9223372036854775807', '-9223372036854775808', '4611686018427387904');
    const mode = fc.constantFrom('SINGLE_NODE_WRITER', 'MULTI_NODE_MULTI_WRITER', 'MULTI_NODE_READER_ONLY', 'UNKNOWN', 99, -1);
    const cap = fc.oneof(
      fc.record({
        mount: fc.record({
          fs_type: fc.constantFrom('', 'ext4', 'famfs'),
          mount_flags: fc.array(fc.constantFrom('ro', 'rw', 'suid', 'noexec', '--bind', ''), { maxLength: 3 }),
        }),
        access_mode: fc.record({ mode }),
      }),
      fc.record({ block: fc.constant({}), access_mode: fc.record({ mode }) }),
      // Contradictory: both access types; or none.
      fc.record({ block: fc.constant({}), mount: fc.constant({}), access_mode: fc.record({ mode }) }),
      fc.constant({}),
    );
    const hostPath = fc.oneof(
      fc.constantFrom('', 'relative/x', '/etc', '/', `${'/a'.repeat(3000)}`, '/proc/self/root'),
      fc.constantFrom('pods/p/volumes/m', 'pods/../../x', 'pods/p/\0/m', 'plugins/n/globalmount', '').map((s) => `${kubelet}/${s}`),
    );
    const params = fc.dictionary(
      fc.constantFrom('sharing', 'mode', 'uid', 'gid', 'interleave', 'unknown', '', 'csi.storage.k8s.io/pvc/name'),
      fc.constantFrom('', 'multi-writer', '0777', '-1', 'x'.repeat(300), '0'),
      { maxKeys: 3 },
    );
    const request = fc.record(
      {
        name,
        volume_id: name,
        snapshot_id: name,
        source_volume_id: name,
        node_id: fc.constantFrom('', 'fuzz-node', 'other-node', '../x'),
        capacity_range: fc.record({ required_bytes: size, limit_bytes: size }, { requiredKeys: [] }),
        volume_capabilities: fc.array(cap, { maxLength: 3 }),
        volume_capability: cap,
        parameters: params,
        volume_context: params,
        mutable_parameters: params,
        readonly: fc.boolean(),
        staging_target_path: hostPath,
        target_path: hostPath,
        volume_path: hostPath,
        max_entries: fc.integer({ min: -5, max: 5 }),
        starting_token: fc.constantFrom('', '0', '-1', 'garbage', '999999'),
      },
      { requiredKeys: [] },
    );
    const counts: Record<string, number> = {};
    let calls = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...RPCS), request, async ([service, method], req) => {
        const before = await snapshot();
        const p = client.call(service, method, req);
        const code = await codeOf(p);
        calls++;
        counts[code] = (counts[code] ?? 0) + 1;
        assert.ok(DELIBERATE.has(code), `${method} answered ${code}: ${await messageOf(p)}\nrequest: ${JSON.stringify(req).slice(0, 600)}`);
        assert.equal(exited, undefined, `famfs-csi died: ${exited}`);
        if (code !== 'OK') assert.deepEqual(await snapshot(), before, `${method} failed with ${code} but changed something`);
      }),
      { numRuns: Number(process.env['FUZZ_RUNS'] ?? 600), seed: Number(process.env['FUZZ_SEED'] ?? 0xc51) },
    );
    console.log(`      ${calls} fuzzed calls over ${RPCS.length} RPCs: ${JSON.stringify(counts)}`);
    assert.equal(exited, undefined);
    assert.equal(await codeOf(client.call('Identity', 'Probe', {})), 'OK', 'still healthy at the end');
    // No fuzzed id names a real volume, so no stage or publish can have succeeded: the kubelet root
    // holds exactly what the test made, and nothing is mounted in it.
    const end = await snapshot();
    assert.deepEqual(end['kubeletMounts'], [], 'nothing mounted under the kubelet root');
    assert.deepEqual(end['kubeletTree'], [`${kubelet}/pods/`], 'no file or directory left under the kubelet root');
  });
});
