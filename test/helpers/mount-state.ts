// Synchronous mount checks for tests: is a famfs FUSE mount alive? A dead server leaves its
// mountpoint answering ENOTCONN ("Transport endpoint is not connected"). Reads the mount table
// through pkg/mount/mountinfo.ts, the one mountinfo parser.
import * as fs from 'fs';
import { parseMountinfo } from '../../pkg/mount/mountinfo.js';

export type MountState = 'mounted' | 'dead' | 'not-mounted';

/** The filesystem type mounted at `mountpoint` (the topmost when stacked), or undefined. */
export function fuseMountType(mountpoint: string): string | undefined {
  const want = mountpoint.length > 1 ? mountpoint.replace(/\/+$/, '') : mountpoint;
  let type: string | undefined;
  for (const e of parseMountinfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'))) if (e.mountPoint === want) type = e.fsType;
  return type;
}

export function mountState(mountpoint: string): MountState {
  try {
    fs.statSync(mountpoint);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTCONN') return 'dead';
    throw e;
  }
  return fuseMountType(mountpoint)?.startsWith('fuse') ? 'mounted' : 'not-mounted';
}
