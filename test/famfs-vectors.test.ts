/**
 * The golden vectors written by the famfs C library: our reader must see exactly what the
 * manifest says, and our writer must produce byte-identical structs for the same content.
 */
import { strict as assert } from 'assert';
import {
  Allocator,
  decodeEntry,
  decodeLogHeader,
  decodeSuperblock,
  encodeEntry,
  encodeLogHeader,
  encodeSuperblock,
  entryOffset,
  FamfsFs,
  FamfsTree,
  FileEntry,
  fsck,
  LE,
  LOG_OFFSET,
  logCapacity,
  reservedBytes,
  SB,
  validateSuperblock,
} from '../pkg/famfs';
import { BufferMedia } from './helpers/buffer-media';
import { loadVectors, ManifestEntry } from './helpers/vectors';

function imageMedia(): { media: BufferMedia; v: ReturnType<typeof loadVectors> } {
  const v = loadVectors();
  const image = Buffer.concat([v.superblock, v.log]);
  return { media: new BufferMedia(image, v.manifest.device_size), v };
}

function expectedFile(m: ManifestEntry): Omit<FileEntry, 'type'> {
  const fmap =
    m.ext_type === 'SIMPLE'
      ? { kind: 'simple' as const, extents: m.extents!.map((e) => ({ devindex: e.devindex, offset: e.offset, len: e.len })) }
      : {
          kind: 'interleave' as const,
          nstrips: m.interleaved_extents![0].nstrips,
          chunkSize: m.interleaved_extents![0].chunk_size,
          strips: m.interleaved_extents![0].strips.map((e) => ({ devindex: e.devindex, offset: e.offset, len: e.len })),
        };
  return { size: m.size!, flags: m.flags!, uid: m.uid, gid: m.gid, mode: m.mode_num, relpath: m.relpath, fmap };
}

describe('famfs golden vectors (written by the famfs C library)', () => {
  const { media, v } = imageMedia();
  const man = v.manifest;

  it('superblock decodes to the manifest and validates', () => {
    const sb = decodeSuperblock(v.superblock);
    assert.equal(Number(sb.magic), man.superblock.magic);
    assert.equal(Number(sb.version), man.superblock.version);
    assert.equal(sb.logOffset, man.superblock.log_offset);
    assert.equal(sb.logLen, man.superblock.log_len);
    assert.equal(sb.allocUnit, man.superblock.alloc_unit);
    assert.equal(sb.omfMajor, man.superblock.omf_ver_major);
    assert.equal(sb.omfMinor, man.superblock.omf_ver_minor);
    assert.equal(sb.uuid, man.superblock.uuid);
    assert.equal(sb.devUuid, man.superblock.dev_uuid);
    assert.equal(sb.systemUuid, man.superblock.system_uuid);
    assert.equal(sb.crc, man.superblock.crc);
    assert.equal(sb.flags, man.superblock.sb_flags);
    assert.equal(sb.deviceSize, man.superblock.daxdev.size);
    assert.equal(sb.deviceUuid, man.superblock.daxdev.uuid);
    assert.equal(sb.devicePath, man.superblock.daxdev.path);
    const check = validateSuperblock(v.superblock, man.device_size);
    assert.deepEqual(check, { ok: true, extended: false, problems: [] });
  });

  it('our superblock encoder reproduces the 200 bytes', () => {
    const sb = decodeSuperblock(v.superblock);
    assert.deepEqual(encodeSuperblock(sb), v.superblock.subarray(0, SB.SIZE));
  });

  it('log header decodes to the manifest and our encoder matches it', () => {
    const h = decodeLogHeader(v.log);
    assert.equal(Number(h.magic), man.log_header.magic);
    assert.equal(h.len, man.log_header.len);
    assert.equal(h.lastIndex, man.log_header.last_index);
    assert.equal(h.crc, man.log_header.crc);
    assert.equal(h.nextSeqnum, man.log_header.next_seqnum);
    assert.equal(h.nextIndex, man.log_header.next_index);
    assert.equal(logCapacity(h.len), 15420);
    // Counters are written by appends; the CRC-covered part is what mkfs writes.
    assert.deepEqual(encodeLogHeader(h.len).subarray(0, 32), v.log.subarray(0, 32));
  });

  it('every entry decodes exactly as the manifest says, and re-encodes byte-identically', () => {
    assert.equal(man.entries.length, man.log_header.next_index);
    for (const m of man.entries) {
      const raw = v.log.subarray(m.log_byte_offset, m.log_byte_offset + LE.SIZE);
      assert.equal(m.log_byte_offset, entryOffset(m.index));
      const e = decodeEntry(raw, m.index, false);
      assert.equal(e.index, m.seqnum);
      if (m.type === 'FILE') {
        assert.deepEqual(e.body, { type: 'file', ...expectedFile(m) }, `entry ${m.index}`);
      } else if (m.type === 'MKDIR') {
        assert.deepEqual(e.body, { type: 'mkdir', uid: m.uid, gid: m.gid, mode: m.mode_num, relpath: m.relpath }, `entry ${m.index}`);
      }
      assert.equal(Number(raw.readBigUInt64LE(LE.crc)), m.crc);
      assert.ok(encodeEntry(m.index, e.body).equals(raw), `entry ${m.index} (${m.relpath}) re-encodes to the same 544 bytes`);
    }
  });

  it('an entry built from the manifest (not from the raw bytes) is byte-identical to famfs', () => {
    for (const m of man.entries.filter((x) => x.type === 'FILE')) {
      const raw = v.log.subarray(m.log_byte_offset, m.log_byte_offset + LE.SIZE);
      assert.ok(encodeEntry(m.index, { type: 'file', ...expectedFile(m) }).equals(raw), m.relpath);
    }
  });

  it('the tail of the log past next_index is zero', () => {
    const end = entryOffset(man.log_header.next_index);
    assert.ok(v.log.subarray(end).every((b) => b === 0));
  });

  it('replay builds the tree the manifest describes', () => {
    const fs = FamfsFs.open(media, { readOnly: true });
    assert.equal(fs.tree.fileCount, man.checks.famfs_build_bitmap.files);
    assert.equal(fs.tree.dirCount, man.checks.famfs_build_bitmap.directories);
    assert.deepEqual(fs.tree.problems, []);
    for (const m of man.entries) {
      const n = fs.lookup(m.relpath);
      assert.ok(n, m.relpath);
      assert.equal(n.index, m.index);
      assert.equal(n.kind, m.type === 'FILE' ? 'file' : 'dir');
      assert.equal(n.mode, m.mode_num);
      assert.equal(n.uid, m.uid);
      assert.equal(n.gid, m.gid);
      if (n.kind === 'file') assert.equal(n.size, m.size);
    }
  });

  it('fsck agrees with the famfs library bitmap numbers', () => {
    const r = fsck(media);
    const b = man.checks.famfs_build_bitmap;
    assert.deepEqual(r.errors, []);
    assert.equal(r.clean, true);
    assert.equal(r.files, b.files);
    assert.equal(r.directories, b.directories);
    assert.equal(r.space!.allocatedBytes, b.allocated_bytes);
    assert.equal(r.space!.freeBytes, b.free_bytes);
    assert.equal(r.space!.collisions, b.alloc_collisions);
    assert.equal(r.space!.deviceBytes, b.bitmap_nbits * 2 * 1024 * 1024);
  });

  it('our first-fit allocator places each simple file where famfs did', () => {
    const tree = new FamfsTree({ deviceSize: man.device_size, reservedBytes: reservedBytes(man.superblock.log_len) });
    const alloc = new Allocator(tree, man.device_size, man.superblock.log_len);
    alloc.rebuild(0);
    let checked = 0;
    for (const m of man.entries) {
      const raw = v.log.subarray(m.log_byte_offset, m.log_byte_offset + LE.SIZE);
      const e = decodeEntry(raw, m.index, false);
      if (e.body.type === 'file' && e.body.fmap.kind === 'simple') {
        const placed = alloc.place(e.body.size);
        assert.deepEqual(placed, e.body.fmap, `${m.relpath} placed like famfs`);
        checked++;
      }
      const c = tree.apply(e);
      if (c?.op === 'add' && c.node.kind === 'file') alloc.noteAdded(c.node.fmap);
    }
    assert.equal(checked, 22);
  });

  it('the image is readable through LOG_OFFSET in one piece', () => {
    assert.equal(media.read(LOG_OFFSET, 8).readBigUInt64LE(0), 0xbadcafef00dn);
  });
});
