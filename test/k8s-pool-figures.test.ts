import { strict as assert } from 'assert';
import { entryOffset, FamfsFs, LE, LOG_OFFSET, releaseQuarantine, repair } from '../pkg/famfs';
import { BufferMedia } from './helpers/buffer-media';
import { objectDirRelpath, objectFileRelpath, snapshotIdForName, volumeIdForName } from '../pkg/csi/names';
import { poolFigures, volumeCount } from '../pkg/k8s/pool-status-loop';

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
    for (const [pos, mask] of [[LE.payload + 12, 0x01], [LE.payload + 24 + 2, 0x20]] as const) {
      const at = LOG_OFFSET + entryOffset(file.index) + pos;
      media.write(at, Buffer.from([media.read(at, 1)[0]! ^ mask]));
    }
    assert.deepEqual(repair(media, { hostUuid: '11111111-2222-4333-8444-555555555555' }).quarantined.map((q) => q.index), [file.index]);
    const master = FamfsFs.open(media, { hostUuid: '11111111-2222-4333-8444-555555555555' });
    const f = poolFigures(master, 'd', { node: 'n', fencingEpoch: 1 });
    assert.equal(f.quarantinedEntries, 1);
    assert.equal(f.quarantinedBytes, 6 << 20);
    releaseQuarantine(master, file.index);
    assert.equal(poolFigures(master, 'd', { node: 'n', fencingEpoch: 1 }).quarantinedEntries, 0);
  });
});
