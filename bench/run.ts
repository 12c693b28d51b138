/**
 * npm run bench: every benchmark in turn, each printing its own table with its same-run baseline,
 * then how long each took and the machine's load meanwhile (target: all of it in under 10 minutes).
 * `npm run bench -- famfs-core fuse` runs only those.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
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

/**
 * What each table needs, no more (a variable already set in the environment wins):
 * compaction: 12,000 churn cycles still cross several compactions (one per ~3,855 cycles) and 600
 * socket cycles from a full log cross one; its default sizes (30,000 and 1,500) took 40 s more
 * at load ~14 for the same figures.
 */
const SIZES: Record<string, Record<string, string>> = {
  compaction: { BENCH_CHURN_CYCLES: '12000', BENCH_CSI_CYCLES: '600' },
};

const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !(w in BENCHES));
if (unknown.length) {
  console.error(`unknown bench ${unknown.join(', ')}; choose from: ${Object.keys(BENCHES).join(', ')}`);
  process.exit(2);
}
let failed = 0;
/** CPU seconds (user + system) of every child this process has waited for, from /proc/self/stat. */
function childCpuSeconds(): number {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // cutime and cstime are fields 16 and 17 of proc(5): 14 and 15 after the state field
  return (Number(f[13]) + Number(f[14])) / TICKS;
}
const TICKS = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim() || '100');
const times: { name: string; seconds: number; cpu: number; load0: number; load1: number; ok: boolean }[] = [];
const t0 = process.hrtime.bigint();
for (const [name, file] of Object.entries(BENCHES)) {
  if (wanted.length && !wanted.includes(name)) continue;
  console.log(`\n=== bench/${name}`);
  const load0 = os.loadavg()[0];
  const start = process.hrtime.bigint();
  const cpu0 = childCpuSeconds();
  const env = { ...SIZES[name], ...process.env };
  const r = spawnSync(process.execPath, [path.join(__dirname, file)], { stdio: 'inherit', env });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const ok = r.status === 0;
  times.push({ name, seconds, cpu: childCpuSeconds() - cpu0, load0, load1: os.loadavg()[0], ok });
  if (!ok) {
    console.error(`bench/${name} failed (exit ${r.status ?? r.signal})`);
    failed++;
  }
}
const total = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(
  `\n=== bench time (${os.cpus().length} CPUs; 1-minute load average at each bench's start and end; ` +
    'CPU: user + system seconds of the bench and every process it started, which load does not stretch)\n',
);
console.log('| bench | seconds | CPU seconds | load |');
console.log('|---|---:|---:|---|');
for (const t of times)
  console.log(`| ${t.name}${t.ok ? '' : ' (failed)'} | ${t.seconds.toFixed(0)} | ${t.cpu.toFixed(0)} | ${t.load0.toFixed(1)} -> ${t.load1.toFixed(1)} |`);
const cpu = times.reduce((a, t) => a + t.cpu, 0);
console.log(`| total | ${total.toFixed(0)} | ${cpu.toFixed(0)} | target < 600 s |`);
process.exit(failed ? 1 : 0);
