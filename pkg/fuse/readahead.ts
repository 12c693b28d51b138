/**
 * Kernel readahead for a FUSE mount (/sys/class/bdi/<dev>/read_ahead_kb). It decides how much
 * each cold buffered read or mmap fault asks of the server ahead of the reader: 128 KiB makes
 * 256 KiB requests one or two at a time; 512 KiB and up make max_read-sized (1 MiB) requests,
 * more of them in flight the bigger the window. bench/fuse measures cold reads by window.
 */
import * as fs from 'fs';

/**
 * The readahead famfs-fused sets on its mount unless told otherwise. 128 KiB had the best median
 * and the smallest spread for cold buffered and cold mmap reads of a 1 GiB file in bench/fuse's
 * interleaved rounds (0.55x memcpy each, against 0.22x at 4 MiB: docs/fuse.md). Bigger windows
 * put more 1 MiB requests in flight than 2 CPUs serve while the reader copies; the CPU per GB is
 * about the same, the wall time is not. Set explicitly, not left to the kernel, so a host whose
 * default differs still gets the measured value.
 */
export const DEFAULT_READAHEAD_KB = 128;

/** /sys/class/bdi/<major>:<minor>/read_ahead_kb of the filesystem mounted at `mountpoint`. */
export function readaheadPath(mountpoint: string): string {
  const dev = fs.statSync(mountpoint).dev;
  // Node reports st_dev in the glibc encoding: minor bits 0-7 and 20-31, major bits 8-19.
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  return `/sys/class/bdi/${major}:${minor}/read_ahead_kb`;
}

/** Sets the mount's readahead; returns the value now in effect, or undefined if not settable. */
export function setReadahead(mountpoint: string, kb: number): number | undefined {
  try {
    const p = readaheadPath(mountpoint);
    fs.writeFileSync(p, `${Math.floor(kb)}\n`);
    return Number(fs.readFileSync(p, 'utf8').trim());
  } catch {
    return undefined;
  }
}
