/**
 * Is a famfs FUSE mount alive? A dead server leaves its mountpoint answering ENOTCONN
 * ("Transport endpoint is not connected"); owners (the CSI node plugin) probe with this and
 * remount (design-hazards §1).
 */
import * as fs from 'fs';

export type MountState = 'mounted' | 'dead' | 'not-mounted';

/** Mount entries of this namespace whose mountpoint is `mountpoint` (last one wins). */
export function fuseMountType(mountpoint: string): string | undefined {
  const want = mountpoint.length > 1 ? mountpoint.replace(/\/+$/, '') : mountpoint;
  let type: string | undefined;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const mp = (left[4] ?? '').replace(/\\040/g, ' ');
    if (mp === want) type = right[0];
  }
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
