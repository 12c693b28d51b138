// npm test runs the FUSE, node plugin, mount, reliability, security and csi-sanity tiers only as root
// with /dev/fuse: without them those tiers are pending, and a run with most of its tests pending must
// not pass. This check fails such a run, loudly. FAMFS_TEST_UNPRIVILEGED=1 is the explicit opt-out for a
// developer who wants the unprivileged tests alone (the run then says what it left out).
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');
const CHECK_TITLE = 'runs as root with /dev/fuse';
const LEFT_OUT = 'the FUSE, node plugin, mount, reliability, security and csi-sanity tests';

/** Why this process cannot run the privileged tiers, or undefined when it can. */
function privilegeGap(): string | undefined {
  const gaps: string[] = [];
  if (process.getuid?.() !== 0) gaps.push(`not root (uid ${process.getuid?.() ?? '?'})`);
  if (!fs.existsSync('/dev/fuse')) gaps.push('no /dev/fuse');
  return gaps.length === 0 ? undefined : gaps.join(', ');
}

describe('test environment', () => {
  it(`${CHECK_TITLE} (without both, ${LEFT_OUT} would be pending)`, function () {
    const gap = privilegeGap();
    if (gap !== undefined && process.env.FAMFS_TEST_UNPRIVILEGED === '1') {
      console.log(`\n      *** FAMFS_TEST_UNPRIVILEGED=1: ${gap}; ${LEFT_OUT} are left out (pending) ***\n`);
      this.skip();
    }
    assert.equal(
      gap,
      undefined,
      `npm test must run as root with /dev/fuse (${gap}): otherwise ${LEFT_OUT} are silently pending. ` +
        'Run it as root (sudo npm test), or set FAMFS_TEST_UNPRIVILEGED=1 to run only the unprivileged tests on purpose.',
    );
  });

  it('an unprivileged run of the suite (setpriv to nobody) fails on that check', function () {
    // Needs root to drop to another user; a non-root run already fails the check above.
    if (privilegeGap() !== undefined) this.skip();
    this.timeout(120_000);
    const root = fs.realpathSync(ROOT);
    let mocha = fs.realpathSync(require.resolve('mocha/bin/mocha.js', { paths: [ROOT] }));
    // The checkout may sit below a directory nobody cannot enter (a CI clone in /root or a 0700
    // temp dir): nobody sees it through a bind mount at a path anyone can reach, in a private mount
    // namespace that goes away with the run.
    const view = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-nobody-view-'));
    fs.chmodSync(view, 0o755);
    // The checkout and ../shared beside it (test files read the golden vectors as they load).
    const repo = path.join(view, 'repo');
    const shared = path.join(root, '..', 'shared');
    fs.mkdirSync(repo);
    fs.mkdirSync(path.join(view, 'shared'));
    if (mocha.startsWith(root + path.sep)) mocha = path.join(repo, path.relative(root, mocha));
    const env = { ...process.env };
    delete env.FAMFS_TEST_UNPRIVILEGED;
    // npm test's own mocha configuration (every test file is loaded), narrowed to the check.
    const script =
      'mount --bind "$1" "$2" && { [ ! -d "$6" ] || mount --bind "$6" "$7"; } && cd "$2" && ' +
      'exec setpriv --reuid=65534 --regid=65534 --clear-groups "$3" "$4" --grep "$5" --reporter spec';
    let r: ReturnType<typeof spawnSync>;
    try {
      r = spawnSync(
        'unshare',
        ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', root, repo, process.execPath, mocha, CHECK_TITLE, shared, path.join(view, 'shared')],
        {
          env,
          encoding: 'utf8',
          timeout: 110_000,
        },
      );
    } finally {
      // rmdir, never a recursive delete: were a bind still there, it would be the checkout.
      for (const d of [repo, path.join(view, 'shared'), view]) fs.rmdirSync(d);
    }
    const out = `${String(r.stdout)}\n${String(r.stderr)}`;
    assert.equal(r.error, undefined, `setpriv did not run: ${String(r.error)}`);
    assert.notEqual(r.status, 0, `mocha as nobody exited 0:\n${out}`);
    assert.match(out, /0 passing/, out);
    assert.match(out, /1 failing/, out);
    assert.match(out, /npm test must run as root with \/dev\/fuse \(not root \(uid 65534\)/, out);
  });
});
