/** The FUSE server's pure parts: control-protocol parsing and the inode table built from a tree. */
import { strict as assert } from 'assert';

import { BufferMedia } from './helpers/buffer-media.js';
import { FamfsFs } from '../pkg/famfs/fs.js';
import { parseControlRequest } from '../pkg/fuse/control-protocol.js';
import { buildInodeTable, LOG_INO, META_DIR_INO, resolvePath, ROOT_INO, SUPERBLOCK_INO } from '../pkg/fuse/inode-table.js';

describe('fuse control protocol', () => {
  it('parses the JSON and the text forms alike', () => {
    assert.deepEqual(parseControlRequest('catchup'), { op: 'catchup' });
    assert.deepEqual(parseControlRequest('{"op":"status"}'), { op: 'status' });
    assert.deepEqual(parseControlRequest('flush a/b'), { op: 'flush', path: 'a/b' });
    assert.deepEqual(parseControlRequest('{"op":"invalidate","path":"x"}'), { op: 'invalidate', path: 'x' });
    assert.deepEqual(parseControlRequest('direct-io on'), { op: 'direct-io', on: true });
    assert.deepEqual(parseControlRequest('direct-io off f'), { op: 'direct-io', on: false, path: 'f' });
    assert.deepEqual(parseControlRequest('{"op":"handover","to":"/run/x"}'), { op: 'handover', to: '/run/x' });
  });

  it('rejects malformed requests with EINVAL', () => {
    for (const bad of [
      '',
      'rm -rf',
      'flush',
      'flush a b',
      'direct-io maybe',
      '{"op":"flush"}',
      '{"op":"direct-io","on":"yes"}',
      '{nope',
      '[]',
      '{"op":"handover"}',
    ]) {
      assert.throws(
        () => parseControlRequest(bad),
        (e: unknown) => (e as { code?: string }).code === 'EINVAL',
        bad,
      );
    }
  });
});

describe('fuse inode table', () => {
  it('numbers inodes from the log (root 1, .meta 2..4, entry i -> 16 + i) and links parents', () => {
    const media = BufferMedia.ofSize(64 * 1024 * 1024);
    const fs = FamfsFs.mkfs(media, { systemUuid: '0a44ecf1-42a5-477c-a3ac-8b70ec880dec', devicePath: '/dev/dax0.0' });
    fs.mkdir('a/b', { parents: true, mode: 0o750, uid: 7, gid: 8 });
    const f = fs.creat('a/b/f', 5000, { mode: 0o600, uid: 7, gid: 8 });
    const s = fs.creat('s', 4 * 1024 * 1024 + 1, { mode: 0o644 });
    const table = buildInodeTable(fs.tree, { logOffset: fs.superblock.logOffset, logLen: fs.superblock.logLen });
    const byIno = new Map(table.map((n) => [n.ino, n]));
    assert.equal(byIno.get(ROOT_INO)?.kind, 'dir');
    assert.equal(byIno.get(META_DIR_INO)?.name, '.meta');
    assert.deepEqual(byIno.get(SUPERBLOCK_INO)?.fmap, { kind: 'simple', extents: [{ offset: 0, len: 0x200000 }] });
    assert.equal(byIno.get(LOG_INO)?.size, fs.superblock.logLen);
    const a = byIno.get(16 + fs.lookup('a')!.index)!;
    const b = byIno.get(16 + fs.lookup('a/b')!.index)!;
    const file = byIno.get(16 + f.index)!;
    assert.equal(a.parent, ROOT_INO);
    assert.equal(b.parent, a.ino);
    assert.equal(file.parent, b.ino);
    assert.deepEqual([file.mode, file.uid, file.gid, file.size], [0o600, 7, 8, 5000]);
    const striped = byIno.get(16 + s.index)!;
    assert.deepEqual(striped.fmap, { kind: 'simple', extents: s.fmap.kind === 'simple' ? s.fmap.extents.map((e) => ({ offset: e.offset, len: e.len })) : [] });
    assert.equal(resolvePath(fs.tree, 'a/b/f')?.ino, file.ino);
    assert.equal(resolvePath(fs.tree, '/.meta/.log/')?.ino, LOG_INO);
    assert.equal(resolvePath(fs.tree, 'nope'), undefined);
    fs.rm('a/b/f');
    const after = buildInodeTable(fs.tree, { logOffset: fs.superblock.logOffset, logLen: fs.superblock.logLen });
    assert.equal(
      after.find((n) => n.ino === file.ino),
      undefined,
      'deleted files leave the table',
    );
    assert.equal(after.length, table.length - 1);
  });
});
