// csi-sanity v5.4.0 (kubernetes-csi/csi-test) against famfs-csi in all-in-one mode on a fresh
// emulated device: every spec that is not skipped must pass, and skips are accepted only for
// capabilities the driver does not advertise. The binary is built once by scripts/tools.sh (cached
// in .cache/tools/bin). Needs root, /dev/fuse and Go (for the first build).
//
// Extra ginkgo arguments (e.g. --ginkgo.focus=Node) can be passed in CSI_SANITY_ARGS.
import { strict as assert } from 'assert';
import { execFile, execFileSync, spawn, type ChildProcess } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CsiClient } from '../pkg/csi/client';
import { readMountinfo } from '../pkg/mount/mountinfo';

const ROOT = path.join(__dirname, '..', '..');
const CSI_BIN = path.join(ROOT, 'dist', 'cmd', 'famfs-csi.js');
const canRun = process.getuid?.() === 0 && fs.existsSync('/dev/fuse');

/** Skip messages of capabilities famfs-csi does not advertise (and csi-sanity's own pending specs). */
const ACCEPTED_SKIPS: readonly RegExp[] = [
  /GroupControllerService not supported/,
  /ControllerExpandVolume not supported/,
  /NodeExpandVolume not supported/,
  /Modify ?volume not supported/i,
  /ControllerModifyVolume not supported/,
  // Attach limits: NodeGetInfo reports no max_volumes_per_node (famfs has no per-node limit).
  /testnodevolumeattachlimit not enabled|No MaxVolumesPerNode/,
  /^pending$/,
];

export interface JunitCase {
  name: string;
  /** filtered: left out by --ginkgo.focus/skip (ginkgo reports it as a bare "skipped"). */
  outcome: 'passed' | 'failed' | 'skipped' | 'pending' | 'filtered';
  message: string;
}

function unescapeXml(s: string): string {
  return s
    .replace(/&#xA;/g, '\n')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

/** The testcases of a ginkgo junit report and their outcome. */
export function parseJunit(xml: string): JunitCase[] {
  const cases: JunitCase[] = [];
  const re = /<testcase\s([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g;
  for (let m = re.exec(xml); m !== null; m = re.exec(xml)) {
    const name = unescapeXml(/name="([^"]*)"/.exec(m[1] ?? '')?.[1] ?? '');
    const body = m[3] ?? '';
    const failure = /<(failure|error)\s[^>]*message="([^"]*)"/.exec(body);
    const skipped = /<skipped\s[^>]*message="([^"]*)"/.exec(body);
    if (failure) cases.push({ name, outcome: 'failed', message: unescapeXml(failure[2] ?? '') });
    else if (skipped) {
      const msg = unescapeXml(skipped[1] ?? '');
      const outcome = msg === 'pending' ? 'pending' : msg === 'skipped' ? 'filtered' : 'skipped';
      cases.push({ name, outcome, message: msg.replace(/^skipped - /, '') });
    } else cases.push({ name, outcome: 'passed', message: '' });
  }
  return cases;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

(canRun ? describe : describe.skip)('csi-sanity v5.4.0 against famfs-csi --mode all @slow', function () {
  this.timeout(30 * 60_000);
  let dir: string;
  let device: string;
  let driver: ChildProcess | undefined;
  let driverLog = '';

  before(function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-sanity-'));
    device = `/dev/shm/famfs-csi-sanity-${randomBytes(4).toString('hex')}.img`;
  });

  after(async function () {
    if (driver !== undefined && driver.exitCode === null) {
      driver.kill('SIGTERM');
      await new Promise((r) => driver?.once('exit', r));
    }
    // The node plugin's FUSE server is detached on purpose (it outlives plugin restarts): stop it here.
    const pidFile = path.join(dir, 'state', 'fused', 'default', 'pid');
    if (fs.existsSync(pidFile)) {
      const pid = Number(fs.readFileSync(pidFile, 'utf8'));
      try {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 100; i++) {
          process.kill(pid, 0);
          await sleep(50);
        }
      } catch {
        /* gone */
      }
    }
    for (const m of (await readMountinfo()).filter((e) => e.mountPoint.startsWith(dir + '/')).sort((a, b) => b.mountPoint.length - a.mountPoint.length)) {
      execFileSync('umount', ['-l', m.mountPoint], { stdio: 'ignore' });
    }
    fs.rmSync(device, { force: true });
    if (process.env['CSI_SANITY_KEEP'] === undefined && (await readMountinfo()).every((e) => !e.mountPoint.startsWith(dir + '/'))) {
      fs.rmSync(dir, { recursive: true, force: true });
    } else console.log(`      kept ${dir}`);
  });

  it('passes every spec that is not skipped for an unadvertised capability', async function () {
    const sanity = execFileSync(path.join(ROOT, 'scripts', 'tools.sh'), ['--path', 'csi-sanity'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
    assert.ok(fs.existsSync(sanity), `csi-sanity not built: ${sanity}`);

    const kubelet = path.join(dir, 'kubelet');
    fs.mkdirSync(kubelet);
    const sock = path.join(dir, 'csi.sock');
    driver = spawn(
      process.execPath,
      [
        CSI_BIN,
        '--mode',
        'all',
        '--endpoint',
        `unix://${sock}`,
        '--device',
        device,
        '--device-size',
        '2Gi',
        '--node-id',
        'sanity-node',
        '--state-dir',
        path.join(dir, 'state'),
        '--allowed-path-root',
        kubelet,
        '--log-level',
        'info',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const logFile = fs.createWriteStream(path.join(dir, 'driver.log'));
    driver.stdout?.pipe(logFile);
    driver.stderr?.on('data', (d: Buffer) => (driverLog += d.toString()));
    const client = new CsiClient(`unix://${sock}`, 1000);
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        if (driver.exitCode !== null) assert.fail(`famfs-csi exited ${driver.exitCode}: ${driverLog}`);
        try {
          await client.call('Identity', 'Probe', {});
          break;
        } catch {
          if (Date.now() > deadline) assert.fail(`famfs-csi did not answer Probe within 30 s: ${driverLog}`);
          await sleep(100);
        }
      }
    } finally {
      client.close();
    }

    const junit = path.join(dir, 'junit.xml');
    const extra = (process.env['CSI_SANITY_ARGS'] ?? '').split(/\s+/).filter((a) => a !== '');
    const args = [
      `--csi.endpoint=unix://${sock}`,
      `--csi.mountdir=${path.join(kubelet, 'mount')}`,
      `--csi.stagingdir=${path.join(kubelet, 'staging')}`,
      `--csi.testvolumesize=${64 * 1024 * 1024}`,
      `--ginkgo.junit-report=${junit}`,
      '--ginkgo.no-color',
      ...extra,
    ];
    const run = await new Promise<{ code: number; output: string }>((resolve) => {
      execFile(sanity, args, { maxBuffer: 64 * 1024 * 1024, timeout: 25 * 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr });
      });
    });
    fs.writeFileSync(path.join(dir, 'csi-sanity.out'), run.output);
    assert.ok(fs.existsSync(junit), `csi-sanity wrote no junit report (exit ${run.code}):\n${run.output.slice(-3000)}`);

    const cases = parseJunit(fs.readFileSync(junit, 'utf8'));
    const count = (o: JunitCase['outcome']): number => cases.filter((c) => c.outcome === o).length;
    const failed = cases.filter((c) => c.outcome === 'failed');
    const badSkips = cases.filter((c) => c.outcome === 'skipped' && !ACCEPTED_SKIPS.some((re) => re.test(c.message)));
    console.log(
      `      csi-sanity: ${count('passed')} passed, ${failed.length} failed, ${count('skipped')} skipped, ${count('pending')} pending${count('filtered') > 0 ? `, ${count('filtered')} filtered out` : ''} (of ${cases.length})`,
    );
    for (const f of failed) console.log(`      FAILED ${f.name}\n             ${f.message.split('\n')[0]}`);
    for (const s of badSkips) console.log(`      UNEXPECTED SKIP ${s.name}: ${s.message}`);
    assert.ok(cases.length - count('filtered') > 0, 'no spec ran');
    if (extra.length === 0) assert.ok(cases.length > 50, `only ${cases.length} specs in the report`);
    assert.equal(failed.length, 0, `failed specs:\n${failed.map((f) => `${f.name}: ${f.message}`).join('\n')}`);
    assert.deepEqual(
      badSkips.map((s) => s.name),
      [],
      'skips other than unadvertised capabilities',
    );
    assert.equal(run.code, 0, `csi-sanity exited ${run.code}`);
  });
});
