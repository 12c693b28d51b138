/**
 * npm run bench: every benchmark in turn, each printing its own table with its same-run baseline.
 * `npm run bench -- famfs-core fuse` runs only those.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const BENCHES: Record<string, string> = {
  'famfs-core': 'famfs-core/run.js',
  device: 'device/copy.js',
  csi: 'csi/run.js',
  node: 'node/run.js',
  fuse: 'fuse/run.js',
  compaction: 'compaction/run.js',
  zero: 'zero/run.js',
};

const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !(w in BENCHES));
if (unknown.length) {
  console.error(`unknown bench ${unknown.join(', ')}; choose from: ${Object.keys(BENCHES).join(', ')}`);
  process.exit(2);
}
let failed = 0;
for (const [name, file] of Object.entries(BENCHES)) {
  if (wanted.length && !wanted.includes(name)) continue;
  console.log(`\n=== bench/${name}`);
  const r = spawnSync(process.execPath, [path.join(__dirname, file)], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`bench/${name} failed (exit ${r.status ?? r.signal})`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
