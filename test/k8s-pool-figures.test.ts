import { strict as assert } from 'assert';
import { FamfsFs } from '../pkg/famfs';
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
});
