/**
 * The compacted format's golden vector (issue 13: "the golden vectors cover it"). famfs' C library
 * cannot write a compacted log, so this vector was written by this project's own writer
 * (test/vectors/make-compacted.ts): a device compacted twice (generation 2, back in famfs' own log
 * region, the second region recorded), with a file created after the last switch. Today's reader
 * must see exactly what the writer recorded: a change that misreads a device an earlier release
 * compacted fails here, not on a user's pool.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { FamfsFs, FAMFS_VERSION, fsck, LOG_OFFSET, readActiveLog } from '../pkg/famfs';
import { BufferMedia } from './helpers/buffer-media';
import { describeNode } from './vectors/make-compacted';

const DIR = path.resolve(__dirname, '..', '..', 'test', 'vectors', 'famfs-csi-compacted');
const HOST = '33333333-4444-4555-8666-777777777777';

interface CompactedManifest {
  masterUuid: string;
  fsUuid: string;
  superblockVersion: string;
  generation: number;
  activeLogOffset: number;
  altOffset: number;
  nextIndex: number;
  nodes: string[];
}

const manifest = JSON.parse(fs.readFileSync(path.join(DIR, 'manifest.json'), 'utf8')) as CompactedManifest;
const image = (): BufferMedia => new BufferMedia(zlib.gunzipSync(fs.readFileSync(path.join(DIR, 'device.bin.gz'))));

describe('famfs-csi compacted log: golden vector (written by this project, generation 2)', () => {
  it('the vector is what it claims: a compacted device, back in the first region, with a second region recorded', () => {
    assert.equal(manifest.generation, 2);
    assert.equal(manifest.activeLogOffset, LOG_OFFSET);
    assert.ok(manifest.altOffset > LOG_OFFSET);
    // A reader that knows only famfs' own version (48) finds another number and refuses the device.
    assert.notEqual(BigInt(manifest.superblockVersion), FAMFS_VERSION);
  });

  it('the generation records name the generation and regions the writer recorded', () => {
    const media = image();
    const active = readActiveLog(media, manifest.fsUuid);
    assert.deepEqual(active, { generation: manifest.generation, offset: manifest.activeLogOffset, altOffset: manifest.altOffset });
  });

  it('a host replays exactly the recorded files and directories: same log indexes (inodes), owners, sizes and extents', () => {
    const reader = FamfsFs.open(image(), { hostUuid: HOST, readOnly: true });
    assert.equal(reader.superblock.uuid, manifest.fsUuid);
    assert.equal(reader.superblock.version.toString(), manifest.superblockVersion);
    assert.equal(reader.tree.nextIndex, manifest.nextIndex);
    assert.deepEqual([...reader.tree.nodes()].map(describeNode).sort(), manifest.nodes);
  });

  it('fsck finds it clean, at the recorded generation', () => {
    const report = fsck(image());
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.log?.generation, manifest.generation);
    assert.equal(report.space?.collisions, 0);
  });

  it('a master of this release takes it over, appends, compacts again (generation 3), and keeps every recorded file where it was', () => {
    const media = image();
    const master = FamfsFs.open(media, { hostUuid: manifest.masterUuid, compactAt: 0 });
    const added = master.creat('added', 4096);
    assert.equal(added.index, manifest.nextIndex, 'log indexes continue where the vector stopped');
    master.mkdir('gone');
    master.rm('gone');
    // The one host slot on the device is the master machine's; it acks the deletes, so they are reclaimable.
    master.ackReplay(manifest.masterUuid, 'vector-host');
    const r = master.compact();
    assert.equal(r.compacted, true, r.reason);
    const reader = FamfsFs.open(media, { hostUuid: HOST, readOnly: true });
    assert.equal(readActiveLog(media, manifest.fsUuid).generation, manifest.generation + 1);
    const now = [...reader.tree.nodes()].map(describeNode).sort();
    for (const line of manifest.nodes) assert.ok(now.includes(line), `${line} lost or moved by the next compaction`);
    assert.equal(fsck(media).clean, true);
  });
});
