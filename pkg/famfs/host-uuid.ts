/**
 * famfs' notion of "which host am I": the master is the host whose system UUID the superblock
 * records. famfs keeps it in /opt/famfs/system_uuid (made on first use); FAMFS_SYSTEM_UUID
 * overrides it so several simulated hosts can share one machine.
 */
import { randomUUID } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { FamfsError } from './errors';
import { uuidToBytes } from './layout';

export const SYSTEM_UUID_FILE = '/opt/famfs/system_uuid';

export function systemUuid(env: NodeJS.ProcessEnv = process.env, file = SYSTEM_UUID_FILE): string {
  const fromEnv = env.FAMFS_SYSTEM_UUID;
  if (fromEnv) {
    uuidToBytes(fromEnv);
    return fromEnv.toLowerCase();
  }
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    uuidToBytes(text);
    return text.toLowerCase();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      if (e instanceof FamfsError) throw new FamfsError('EINVAL', `${file} does not hold a UUID; delete it to make a new one`);
      throw e;
    }
  }
  const made = randomUUID();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${made}\n`, { mode: 0o644 });
  return made;
}
