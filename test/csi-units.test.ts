// Table-driven checks of the pure CSI helpers: names → famfs paths, the access-mode table,
// StorageClass parameters and the famfs → gRPC error mapping.
import { strict as assert } from 'assert';
import { status } from '@grpc/grpc-js';
import { createHash } from 'crypto';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { checkCapability, publishIsReadOnly, requireCapabilities, type CapabilityPolicy } from '../pkg/csi/capabilities';
import { CsiError, FAMFS_TO_GRPC, toCsiError } from '../pkg/csi/errors';
import { DriverMetrics } from '../pkg/csi/metrics';
import {
  FAMFS_MAX_RELPATH,
  isSnapshotId,
  isVolumeId,
  objectDirRelpath,
  objectFileRelpath,
  snapshotIdForName,
  validateHostPath,
  volumeIdForName,
} from '../pkg/csi/names';
import { canonicalParams, parseSize, parseVolumeParams, sameParams } from '../pkg/csi/params';
import type { AccessModeName, VolumeCapability } from '../pkg/csi/types';
import { FamfsError, type FamfsErrorCode } from '../pkg/famfs/errors';
import { checkRelpath } from '../pkg/famfs/layout';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof CsiError) return e.codeName;
    throw e;
  }
  return 'OK';
}

describe('names: CSI names → famfs paths', () => {
  it('is deterministic, distinct per kind, and always a valid famfs relpath', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 600, unit: 'binary' }).filter((s) => !s.includes('\0')),
        (name) => {
          const v = volumeIdForName(name);
          assert.equal(v, volumeIdForName(name));
          assert.ok(isVolumeId(v) && !isSnapshotId(v));
          const s = snapshotIdForName(name);
          assert.ok(isSnapshotId(s) && !isVolumeId(s));
          assert.notEqual(v.slice(-40), s.slice(-40));
          for (const id of [v, s]) {
            const rel = objectFileRelpath(id);
            assert.ok(Buffer.byteLength(rel) <= FAMFS_MAX_RELPATH);
            assert.ok(!rel.includes('..') && !rel.startsWith('/') && !rel.includes('\0'));
            checkRelpath(rel); // the famfs core accepts it
            checkRelpath(objectDirRelpath(id));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('gives the ids earlier releases gave (a volume created before an upgrade keeps its id)', () => {
    // Ids as 0.1.0 computed them (two Hash updates: "famfs-csi/<kind>\0", then the name as UTF-8).
    const old = (kind: string, name: string): string => createHash('sha256').update(`famfs-csi/${kind}\0`).update(name, 'utf8').digest('hex').slice(0, 40);
    assert.equal(volumeIdForName('pvc-0b3e9f7c-1d2a-4c5e-8f90-123456789abc'), 'vol-9063cd6e611334d313ca1cef2c7cb5f2842a5226');
    assert.equal(snapshotIdForName('pvc-0b3e9f7c-1d2a-4c5e-8f90-123456789abc'), 'snap-af5684712d9ed7ef32fc5bc8e525cc712de9a1ce');
    assert.equal(volumeIdForName('pvc-ö-日本'), 'vol-a5486d08aa2d89105f5e05d4d5f7fa73befa118f');
    assert.equal(snapshotIdForName('x'.repeat(128)), 'snap-49397781636d53110471a6122b04aa31054c39cd');
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 300, unit: 'binary' }).filter((s) => !s.includes('\0')),
        (name) => {
          assert.equal(volumeIdForName(name), `vol-${old('volume', name)}`);
          assert.equal(snapshotIdForName(name), `snap-${old('snapshot', name)}`);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('accepts a 128-byte name and multibyte names; distinct names give distinct ids', () => {
    const long = 'x'.repeat(128);
    assert.notEqual(volumeIdForName(long), volumeIdForName(long + 'y'));
    assert.ok(isVolumeId(volumeIdForName('pvc-ö-日本-' + 'a'.repeat(200))));
  });

  const badNames: Array<[string, string, RegExp]> = [
    ['empty', '', /name is required/],
    ['NUL', 'a\0b', /NUL/],
    ['too long', 'x'.repeat(4097), /at most 4096/],
  ];
  for (const [what, name, msg] of badNames) {
    it(`rejects a ${what} name with INVALID_ARGUMENT`, () => {
      assert.equal(
        codeOf(() => volumeIdForName(name)),
        'INVALID_ARGUMENT',
      );
      assert.throws(() => volumeIdForName(name), msg);
    });
  }

  it('recognizes only ids it issues', () => {
    for (const bad of ['', 'vol-', 'vol-XYZ', 'some-vol-id', `vol-${'0'.repeat(39)}`, `vol-${'0'.repeat(41)}`, `../vol-${'0'.repeat(40)}`]) {
      assert.equal(isVolumeId(bad), false, bad);
    }
    assert.throws(() => objectDirRelpath('../etc'), /not a famfs-csi id/);
  });

  it('validates host paths', () => {
    assert.equal(validateHostPath('/var/lib/kubelet/pods/x/', 'target_path'), '/var/lib/kubelet/pods/x/');
    assert.equal(
      codeOf(() => validateHostPath('', 'target_path')),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      codeOf(() => validateHostPath('relative/x', 'target_path')),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      codeOf(() => validateHostPath('/a\0b', 'target_path')),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      codeOf(() => validateHostPath('/' + 'a'.repeat(4096), 'target_path')),
      'INVALID_ARGUMENT',
    );
  });
});

describe('capabilities: the access-mode table', () => {
  const serial: CapabilityPolicy = { multiWriterAllowed: false, blockAllowed: true };
  const multi: CapabilityPolicy = { multiWriterAllowed: true, blockAllowed: true };
  const mountCap = (mode: AccessModeName, mount: Partial<{ fs_type: string; mount_flags: string[]; volume_mount_group: string }> = {}): VolumeCapability => ({
    mount: { fs_type: '', mount_flags: [], volume_mount_group: '', ...mount },
    access_type: 'mount',
    access_mode: { mode },
  });
  const blockCap = (mode: AccessModeName): VolumeCapability => ({ block: {}, access_type: 'block', access_mode: { mode } });

  // mode, policy, expected ok, multiNode, readOnly, multiTargetOnNode
  const table: Array<[AccessModeName, CapabilityPolicy, boolean, boolean?, boolean?, boolean?]> = [
    ['SINGLE_NODE_WRITER', serial, true, false, false, true],
    ['SINGLE_NODE_SINGLE_WRITER', serial, true, false, false, false],
    ['SINGLE_NODE_MULTI_WRITER', serial, true, false, false, true],
    ['SINGLE_NODE_READER_ONLY', serial, true, false, true, true],
    ['MULTI_NODE_READER_ONLY', serial, true, true, true, true],
    ['MULTI_NODE_MULTI_WRITER', serial, false],
    ['MULTI_NODE_MULTI_WRITER', multi, true, true, false, true],
    ['MULTI_NODE_SINGLE_WRITER', serial, false],
    ['MULTI_NODE_SINGLE_WRITER', multi, false],
  ];
  for (const [mode, policy, ok, multiNode, readOnly, multiTarget] of table) {
    it(`${mode} with multi-writer ${policy.multiWriterAllowed ? 'allowed' : 'not allowed'}: ${ok ? 'served' : 'refused'}`, () => {
      for (const cap of [mountCap(mode), blockCap(mode)]) {
        const r = checkCapability(cap, policy);
        assert.equal(r.ok, ok, r.ok ? 'served' : r.reason);
        if (r.ok) {
          assert.equal(r.profile.multiNode, multiNode);
          assert.equal(r.profile.readOnly, readOnly);
          assert.equal(r.profile.multiTargetOnNode, multiTarget);
          assert.equal(r.profile.kind, cap.access_type);
        } else {
          assert.match(r.reason, new RegExp(mode));
        }
      }
    });
  }

  it('malformed capabilities are INVALID_ARGUMENT', () => {
    assert.equal(
      codeOf(() => checkCapability(null, serial)),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      codeOf(() => checkCapability({ access_mode: { mode: 'SINGLE_NODE_WRITER' } }, serial)),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      codeOf(() => checkCapability({ mount: { fs_type: '', mount_flags: [], volume_mount_group: '' }, access_type: 'mount', access_mode: null }, serial)),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      codeOf(() => checkCapability(mountCap('UNKNOWN'), serial)),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      codeOf(() => requireCapabilities([], serial)),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      codeOf(() => requireCapabilities([mountCap('MULTI_NODE_SINGLE_WRITER')], serial)),
      'INVALID_ARGUMENT',
    );
  });

  it('mount details: fs_type, flags, mount group', () => {
    assert.ok(checkCapability(mountCap('SINGLE_NODE_WRITER', { fs_type: 'famfs' }), serial).ok);
    const ext4 = checkCapability(mountCap('SINGLE_NODE_WRITER', { fs_type: 'ext4' }), serial);
    assert.ok(!ext4.ok && /fs_type "ext4"/.test(ext4.reason));
    const bad = checkCapability(mountCap('SINGLE_NODE_WRITER', { mount_flags: ['nosuid', 'discard'] }), serial);
    assert.ok(!bad.ok && /"discard"/.test(bad.reason));
    assert.ok(!checkCapability(mountCap('SINGLE_NODE_WRITER', { mount_flags: ['ro', 'rw'] }), serial).ok);
    const grp = checkCapability(mountCap('SINGLE_NODE_WRITER', { volume_mount_group: '2000' }), serial);
    assert.ok(grp.ok && grp.profile.mountGroup === 2000);
    assert.ok(!checkCapability(mountCap('SINGLE_NODE_WRITER', { volume_mount_group: 'wheel' }), serial).ok);
    const ro = checkCapability(mountCap('SINGLE_NODE_WRITER', { mount_flags: ['ro'] }), serial);
    assert.ok(ro.ok && publishIsReadOnly(ro.profile, false));
    const rw = checkCapability(mountCap('SINGLE_NODE_WRITER'), serial);
    assert.ok(rw.ok && !publishIsReadOnly(rw.profile, false) && publishIsReadOnly(rw.profile, true));
    const rox = checkCapability(mountCap('MULTI_NODE_READER_ONLY'), serial);
    assert.ok(rox.ok && publishIsReadOnly(rox.profile, false));
    assert.ok(!checkCapability(blockCap('SINGLE_NODE_WRITER'), { multiWriterAllowed: false, blockAllowed: false }).ok);
  });
});

describe('params: StorageClass parameters', () => {
  it('defaults', () => {
    assert.deepEqual(parseVolumeParams({}), { mode: 0o666, uid: 0, gid: 0, sharing: 'serial' });
    assert.deepEqual(parseVolumeParams(null), { mode: 0o666, uid: 0, gid: 0, sharing: 'serial' });
  });

  it('parses every key and ignores csi.storage.k8s.io/*', () => {
    const p = parseVolumeParams({
      nstrips: '4',
      nbuckets: '8',
      chunkSize: '4Mi',
      mode: '0660',
      uid: '1000',
      gid: '2000',
      sharing: 'multi-writer',
      'csi.storage.k8s.io/pvc/name': 'data',
      'csi.storage.k8s.io/pvc/namespace': 'ns',
    });
    assert.deepEqual(p, { interleave: { nstrips: 4, nbuckets: 8, chunkSize: 4 * 1024 * 1024 }, mode: 0o660, uid: 1000, gid: 2000, sharing: 'multi-writer' });
    assert.deepEqual(parseVolumeParams({ nstrips: '2', nbuckets: '2' }).interleave, { nstrips: 2, nbuckets: 2, chunkSize: 2 * 1024 * 1024 });
  });

  const bad: Array<[string, Record<string, string>, RegExp]> = [
    ['unknown key', { nstrip: '4' }, /unknown StorageClass parameter "nstrip"/],
    ['nstrips alone', { nstrips: '4' }, /go together/],
    ['chunkSize alone', { chunkSize: '2Mi' }, /needs nstrips/],
    ['nstrips > nbuckets', { nstrips: '9', nbuckets: '8' }, /exceeds nbuckets/],
    ['zero strips', { nstrips: '0', nbuckets: '8' }, /at least 1/],
    ['chunk not power of two', { nstrips: '2', nbuckets: '2', chunkSize: '6Mi' }, /power of two/],
    ['chunk below 2Mi', { nstrips: '2', nbuckets: '2', chunkSize: '1Mi' }, /multiple of 2Mi/],
    ['chunk garbage', { nstrips: '2', nbuckets: '2', chunkSize: 'big' }, /not a size/],
    ['mode not octal', { mode: '0999' }, /octal/],
    ['negative uid', { uid: '-1' }, /non-negative integer/],
    ['uid too large', { uid: '4294967295' }, /exceeds/],
    ['sharing value', { sharing: 'shared' }, /"serial" or "multi-writer"/],
  ];
  for (const [what, params, msg] of bad) {
    it(`rejects ${what} with INVALID_ARGUMENT`, () => {
      assert.equal(
        codeOf(() => parseVolumeParams(params)),
        'INVALID_ARGUMENT',
      );
      assert.throws(() => parseVolumeParams(params), msg);
    });
  }

  it('compares parameters by meaning, not spelling', () => {
    const a = parseVolumeParams({ nstrips: '2', nbuckets: '4', chunkSize: '2Mi', mode: '644' });
    const b = parseVolumeParams({ mode: '0644', nbuckets: '4', nstrips: '2', 'csi.storage.k8s.io/pv/name': 'x' });
    assert.ok(sameParams(a, b));
    assert.ok(!sameParams(a, parseVolumeParams({ nstrips: '2', nbuckets: '4', chunkSize: '4Mi' })));
    assert.ok(!sameParams(parseVolumeParams({}), parseVolumeParams({ uid: '1' })));
    assert.equal(canonicalParams(a)['chunkSize'], String(2 * 1024 * 1024));
    assert.equal(parseSize('2MiB', 'x'), 2 * 1024 * 1024);
    assert.equal(parseSize('1G', 'x'), 1e9);
  });
});

describe('errors: famfs codes → gRPC status', () => {
  const expected: Array<[FamfsErrorCode, status]> = [
    ['EINVAL', status.INVALID_ARGUMENT],
    ['ENAMETOOLONG', status.INVALID_ARGUMENT],
    ['ENOENT', status.NOT_FOUND],
    ['EEXIST', status.ALREADY_EXISTS],
    ['ENOSPC', status.RESOURCE_EXHAUSTED],
    ['ELOGFULL', status.RESOURCE_EXHAUSTED],
    ['ECORRUPT', status.INTERNAL],
    ['EFENCED', status.UNAVAILABLE],
    ['EIO', status.INTERNAL],
  ];
  for (const [code, grpcCode] of expected) {
    it(`${code} → ${status[grpcCode]}`, () => {
      const e = toCsiError(new FamfsError(code, 'detail'), 'CreateVolume');
      assert.equal(e.code, grpcCode);
      assert.match(e.message, /CreateVolume: detail/);
      assert.ok(e.cause instanceof FamfsError);
    });
  }
  it('maps every famfs code to a status other than OK/UNKNOWN', () => {
    for (const [code, s] of Object.entries(FAMFS_TO_GRPC)) assert.ok(s !== status.OK && s !== status.UNKNOWN, code);
  });
  it('untyped errors become INTERNAL, CsiErrors pass through', () => {
    assert.equal(toCsiError(new Error('x')).code, status.INTERNAL);
    assert.equal(toCsiError('str').code, status.INTERNAL);
    const ce = new CsiError(status.ABORTED, 'busy');
    assert.equal(toCsiError(ce), ce);
  });
});

describe('metrics: the RPC duration histogram', () => {
  it("exports exactly what prom-client's Histogram exports for the same observations", async () => {
    const bounds = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    const ours = new DriverMetrics({ defaultMetrics: false });
    const reference = new Registry();
    const h = new Histogram({
      name: 'famfs_csi_rpc_duration_seconds',
      help: 'CSI RPC latency by service, method and gRPC status',
      labelNames: ['service', 'method', 'code'] as const,
      buckets: bounds,
      registers: [reference],
    });
    const calls: [string, string, status, number][] = [
      ['Controller', 'CreateVolume', status.OK, 0.0007],
      ['Controller', 'CreateVolume', status.OK, 0.0005],
      ['Controller', 'CreateVolume', status.RESOURCE_EXHAUSTED, 0.003],
      ['Controller', 'DeleteVolume', status.NOT_FOUND, 20],
      ['Identity', 'Probe', status.OK, 0],
      ['Node', 'NodePublishVolume', status.OK, 10],
    ];
    for (const [service, method, code, seconds] of calls) {
      ours.observeRpc({ service, method, code, seconds });
      h.observe({ service, method, code: status[code] }, seconds);
    }
    assert.equal(await ours.registry.metrics(), await reference.metrics());
    assert.deepEqual(await ours.registry.getMetricsAsJSON(), await reference.getMetricsAsJSON());
    ours.registry.resetMetrics();
    reference.resetMetrics();
    assert.equal(await ours.registry.metrics(), await reference.metrics());
  });
});
