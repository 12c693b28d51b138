/**
 * npm run bench: every benchmark in turn, each printing its own table with its same-run baseline,
 * then how long each took and the machine's load meanwhile (target: all of it in under 10 minutes).
 * `npm run bench -- famfs-core fuse` runs only those.
 */
import { spawnSync } from 'child_process';
import * as os from 'os';
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
const times: { name: string; seconds: number; load0: number; load1: number; ok: boolean }[] = [];
const t0 = process.hrtime.bigint();
for (const [name, file] of Object.entries(BENCHES)) {
  if (wanted.length && !wanted.includes(name)) continue;
  console.log(`\n=== bench/${name}`);
  const load0 = os.loadavg()[0];
  const start = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [path.join(__dirname, file)], { stdio: 'inherit' });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const ok = r.status === 0;
  times.push({ name, seconds, load0, load1: os.loadavg()[0], ok });
  if (!ok) {
    console.error(`bench/${name} failed (exit ${r.status ?? r.signal})`);
    failed++;
  }
}
const total = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`\n=== bench time (${os.cpus().length} CPUs; 1-minute load average at each bench's start and end)\n`);
console.log('| bench | seconds | load |');
console.log('|---|---:|---|');
for (const t of times) console.log(`| ${t.name}${t.ok ? '' : ' (failed)'} | ${t.seconds.toFixed(0)} | ${t.load0.toFixed(1)} -> ${t.load1.toFixed(1)} |`);
console.log(`| total | ${total.toFixed(0)} | target < 600 |`);
process.exit(failed ? 1 : 0);
