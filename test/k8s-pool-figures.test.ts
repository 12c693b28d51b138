import { strict as assert } from 'assert';
import { entryOffset, FamfsFs, LE, LOG_OFFSET, releaseQuarantine, repair } from '../pkg/famfs';
import { BufferMedia } from './helpers/buffer-media';
import { objectDirRelpath, objectFileRelpath, snapshotIdForName, volumeIdForName } from '../pkg/csi/names';
import { hostReports, poolFigures, volumeCount, type FamfsView } from '../pkg/k8s/pool-status-loop';

describe('FamfsPool figures', () => {
  it('counts CSI volumes only (not snapshots, not the controller metadata file)', () => {
    const media = new BufferMedia(Buffer.alloc(16 << 20), 1 << 30);
    const fs = FamfsFs.mkfs(media, { systemUuid: '11111111-2222-4333-8444-555555555555', devicePath: 'x' });
    fs.mkdir('csi');
    fs.creat('csi/.controller-state', 8 << 20);
    for (const name of ['pvc-a', 'pvc-b']) {
      const id = volumeIdForName(name);
      fs.mkdir(objectDirRelpath(id));
      fs.creat(objectFileRelpath(id), 2 << 20);
    }
    const snap = snapshotIdForName('snap-1');
    fs.mkdir(objectDirRelpath(snap));
    fs.creat(objectFileRelpath(snap), 2 << 20);
    assert.equal(volumeCount(fs), 2);
    const f = poolFigures(fs, '/dev/dax0.0', { node: 'n', fencingEpoch: 1 });
    assert.equal(f.volumes, 2);
    assert.equal(f.logEntriesUsed, 8);
    fs.rm(objectFileRelpath(volumeIdForName('pvc-a')));
    fs.rm(objectDirRelpath(volumeIdForName('pvc-a')));
    assert.equal(volumeCount(fs), 1);
  });

  it('counts what famfs repair quarantined, and the memory it holds, until it is released', () => {
    const media = new BufferMedia(Buffer.alloc(16 << 20), 1 << 30);
    const fs = FamfsFs.mkfs(media, { systemUuid: '11111111-2222-4333-8444-555555555555', devicePath: 'x' });
    const id = volumeIdForName('pvc-q');
    fs.mkdir('csi');
    fs.mkdir(objectDirRelpath(id));
    const file = fs.creat(objectFileRelpath(id), 6 << 20);
    assert.equal(poolFigures(fs, 'd', { node: 'n', fencingEpoch: 1 }).quarantinedEntries, 0);
    // Two damaged bytes (uid and name): the CRC cannot prove the entry, repair quarantines it.
    for (const [pos, mask] of [
      [LE.payload + 12, 0x01],
      [LE.payload + 24 + 2, 0x20],
    ] as const) {
      const at = LOG_OFFSET + entryOffset(file.index) + pos;
      media.write(at, Buffer.from([media.read(at, 1)[0] ^ mask]));
    }
    assert.deepEqual(
      repair(media, { hostUuid: '11111111-2222-4333-8444-555555555555' }).quarantined.map((q) => q.index),
      [file.index],
    );
    const master = FamfsFs.open(media, { hostUuid: '11111111-2222-4333-8444-555555555555' });
    const f = poolFigures(master, 'd', { node: 'n', fencingEpoch: 1 });
    assert.equal(f.quarantinedEntries, 1);
    assert.equal(f.quarantinedBytes, 6 << 20);
    releaseQuarantine(master, file.index);
    assert.equal(poolFigures(master, 'd', { node: 'n', fencingEpoch: 1 }).quarantinedEntries, 0);
  });

  it('shows which host the master timed out, when, and the deleted memory reused after it', () => {
    const MASTER = '11111111-2222-4333-8444-555555555555';
    const HOST = '99999999-8888-4777-8666-000000000042';
    const media = new BufferMedia(Buffer.alloc(16 << 20), 1 << 30);
    FamfsFs.mkfs(media, { systemUuid: MASTER, devicePath: 'x' });
    let mono = 0;
    const fs = FamfsFs.open(media, { hostUuid: MASTER, monotonicNow: () => mono, now: () => Date.parse('2026-11-30T07:00:00Z') });
    fs.mkdir('csi');
    const id = volumeIdForName('pvc-gone');
    fs.mkdir(objectDirRelpath(id));
    fs.creat(objectFileRelpath(id), 4 << 20);
    const host = FamfsFs.open(media, { hostUuid: HOST });
    host.ackReplay(HOST, 'node-b');
    fs.hostLiveness(); // the master's status loop looks at the slots on every tick
    assert.deepEqual(poolFigures(fs, 'd', { node: 'n', fencingEpoch: 1 }).evictions, [], 'no timeout yet');
    fs.rm(objectFileRelpath(id));
    mono += 60_000;
    fs.creat('after', 2 << 20); // computes the horizon: node-b has been silent for the whole window
    const [e] = poolFigures(fs, 'd', { node: 'n', fencingEpoch: 1 }).evictions!;
    assert.ok(e, 'the timeout is reported');
    assert.equal(e.host, 'node-b');
    assert.equal(e.hostUuid, HOST);
    assert.equal(e.at, '2026-11-30T07:00:00.000Z');
    assert.equal(e.silentSeconds, 60);
    assert.deepEqual(e.reusable, [objectFileRelpath(id)]);
    assert.equal(e.reusableBytes, 4 << 20);
  });
});

describe('FamfsPool status.nodes entries', () => {
  const view = (hosts: ReturnType<FamfsView['hostLiveness']>): FamfsView => ({
    usage: () => ({
      deviceBytes: 0,
      freeBytes: 0,
      largestFreeBytes: 0,
      pendingFreeBytes: 0,
      logEntriesUsed: 10,
      logEntriesTotal: 100,
      files: 0,
      quarantinedEntries: 0,
      quarantinedBytes: 0,
    }),
    hostLiveness: () => hosts,
    evictionReport: () => [],
    lookup: () => undefined,
  });
  it('two hosts with one host name get distinct entry names (status.nodes is a list-map keyed by name)', () => {
    const r = hostReports(
      view([
        { hostUuid: 'aaaaaaaa-0000-4000-8000-000000000001', ackedIndex: 10, live: true, silentMs: 0, name: 'vm' },
        { hostUuid: 'bbbbbbbb-0000-4000-8000-000000000002', ackedIndex: 9, live: true, silentMs: 0, name: 'vm' },
        { hostUuid: 'cccccccc-0000-4000-8000-000000000003', ackedIndex: 10, live: true, silentMs: 0, name: 'node-c' },
      ]),
    );
    assert.deepEqual(
      r.map((x) => x.name),
      ['vm (aaaaaaaa)', 'vm (bbbbbbbb)', 'node-c'],
    );
    assert.equal(new Set(r.map((x) => x.name)).size, 3);
    assert.equal(r[1]?.lagEntries, 1);
  });
});
