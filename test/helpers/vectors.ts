import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';

/** The golden vectors live beside the checkout (../shared), as in CI. */
export const VECTOR_DIR = path.resolve(__dirname, '..', '..', '..', '..', 'shared', 'vectors', 'famfs-c-small');

export interface ManifestExtent {
  devindex: number;
  offset: number;
  len: number;
}
export interface ManifestEntry {
  index: number;
  seqnum: number;
  log_byte_offset: number;
  type: 'FILE' | 'MKDIR' | 'ADD_DAXDEV';
  crc: number;
  relpath: string;
  size?: number;
  mode_num: number;
  uid: number;
  gid: number;
  flags?: number;
  ext_type?: 'SIMPLE' | 'INTERLEAVE';
  extents?: ManifestExtent[];
  interleaved_extents?: { nstrips: number; chunk_size: number; strips: ManifestExtent[] }[];
}
export interface Manifest {
  device_size: number;
  superblock: {
    magic: number;
    version: number;
    log_offset: number;
    log_len: number;
    alloc_unit: number;
    omf_ver_major: number;
    omf_ver_minor: number;
    uuid: string;
    dev_uuid: string;
    system_uuid: string;
    crc: number;
    sb_flags: number;
    daxdev: { size: number; uuid: string; path: string };
  };
  log_header: { magic: number; len: number; last_index: number; crc: number; next_seqnum: number; next_index: number };
  checks: {
    famfs_build_bitmap: {
      bitmap_nbits: number;
      alloc_collisions: number;
      sum_of_file_sizes: number;
      allocated_bytes: number;
      free_bytes: number;
      files: number;
      directories: number;
    };
  };
  entries: ManifestEntry[];
}

export function loadVectors(): { superblock: Buffer; log: Buffer; manifest: Manifest } {
  return {
    superblock: zlib.gunzipSync(fs.readFileSync(path.join(VECTOR_DIR, 'superblock.bin.gz'))),
    log: zlib.gunzipSync(fs.readFileSync(path.join(VECTOR_DIR, 'log.bin.gz'))),
    manifest: JSON.parse(fs.readFileSync(path.join(VECTOR_DIR, 'manifest.json'), 'utf8')) as Manifest,
  };
}
