// Replay's rules for one entry, shared by the JavaScript tree (tree.ts) and the native log tree
// (native-tree.ts): the limits an entry is checked against, when a file map cannot be trusted,
// and the one wording of every problem replay reports.
import { ALLOC_UNIT, Fmap, LOG_OFFSET } from './layout';
import { fmapCapacity, fmapExtents } from './fmap';

export interface TreeLimits {
  /** Device size from the superblock: extents must end inside it. */
  deviceSize: number;
  /** Bytes at the start of the device that hold superblock and log: no extent may touch them. */
  reservedBytes: number;
}

export function reservedBytes(logLen: number): number {
  return LOG_OFFSET + logLen;
}

/**
 * What replay says about an entry it skips: the one wording, used by this tree and by the native
 * log tree (native-tree.ts), which reports the same problems as codes and operands.
 */
export const problemText = {
  noParent(relpath: string): string {
    const cut = relpath.lastIndexOf('/');
    return `"${relpath}": parent directory "${cut < 0 ? '' : relpath.slice(0, cut)}" does not exist`;
  },
  parentIsFile(relpath: string): string {
    const cut = relpath.lastIndexOf('/');
    return `"${relpath}": parent "${cut < 0 ? '' : relpath.slice(0, cut)}" is a file`;
  },
  badPath: (relpath: string): string => `"${relpath}": not a valid famfs path`,
  exists: (relpath: string, holder: number): string => `"${relpath}" already exists (entry ${holder})`,
  fmap: (relpath: string, why: string): string => `"${relpath}": ${why}`,
  deleteMissing: (targetIndex: number, relpath: string): string => `delete of entry ${targetIndex} ("${relpath}"), which is not a live file or directory`,
  deleteMismatch: (relpath: string, targetType: string, targetIndex: number, targetRelpath: string, targetKind: string): string =>
    `delete names "${relpath}" (${targetType}) but entry ${targetIndex} is "${targetRelpath}" (${targetKind})`,
  deleteNonEmpty: (relpath: string): string => `delete of non-empty directory "${relpath}"`,
};

/** Why an fmap cannot be trusted, or undefined when every byte of the file maps inside the device data area. */
export function fmapProblem(fmap: Fmap, size: number, limits: TreeLimits): string | undefined {
  const extents = fmapExtents(fmap);
  for (const e of extents) {
    if (e.devindex !== 0) return `extent on device ${e.devindex} (only device 0 exists)`;
    if (e.len <= 0) return 'zero-length extent';
    if (e.offset % ALLOC_UNIT !== 0 || e.len % ALLOC_UNIT !== 0) return `extent 0x${e.offset.toString(16)}+0x${e.len.toString(16)} is not 2 MiB aligned`;
    if (e.offset < limits.reservedBytes) return `extent at 0x${e.offset.toString(16)} overlaps the superblock/log`;
    if (e.offset + e.len > limits.deviceSize)
      return `extent 0x${e.offset.toString(16)}+0x${e.len.toString(16)} ends past the device (${limits.deviceSize} bytes)`;
  }
  if (fmap.kind === 'interleave') {
    const { chunkSize, strips } = fmap;
    if (chunkSize % ALLOC_UNIT !== 0 || (chunkSize & (chunkSize - 1)) !== 0) return `interleave chunk ${chunkSize} is not a power-of-two multiple of 2 MiB`;
    if (strips.some((s) => s.len !== strips[0].len || s.len % chunkSize !== 0)) return 'interleave strips differ in length or are not whole chunks';
  }
  if (fmapCapacity(fmap) < size) return `file size ${size} exceeds its ${fmapCapacity(fmap)} mapped bytes`;
  return undefined;
}
