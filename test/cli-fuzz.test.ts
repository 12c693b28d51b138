/**
 * Fuzzing the famfs CLI in-process on a real emulated device: whatever the arguments, the CLI
 * returns a known exit code (never throws), and a failed command writes nothing.
 */
import { strict as assert } from 'assert';
import * as fc from 'fast-check';
import * as fs from 'fs';
import { DaxDevice } from '../pkg/device';
import { createEmulatedDevice, removeEmulatedDevice } from '../testkit/emulated-device';
import { FamfsFs, fsck } from '../pkg/famfs';
import { runCli, EXIT } from '../pkg/cli/program';

const MASTER = '11111111-2222-4333-8444-555555555555';

describe('famfs CLI fuzz (in-process, real device)', () => {
  const name = `cli-fuzz-${process.pid}`;
  let dev: DaxDevice;
  let path: string;
  const saved = process.env.FAMFS_SYSTEM_UUID;

  before(() => {
    process.env.FAMFS_SYSTEM_UUID = MASTER;
    dev = createEmulatedDevice(name, 8 * 1024 ** 3);
    path = dev.path;
    const f = FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: path });
    f.mkdir('d');
    f.creat('d/file', 4096);
  });
  after(() => {
    dev.close();
    removeEmulatedDevice(name);
    if (saved === undefined) delete process.env.FAMFS_SYSTEM_UUID;
    else process.env.FAMFS_SYSTEM_UUID = saved;
  });

  const nasty = fc.oneof(
    fc.constantFrom(
      '',
      '.',
      '..',
      '../x',
      '/abs',
      'd',
      'd/file',
      'd/file/x',
      'a\0b',
      'x'.repeat(79),
      'x'.repeat(80),
      'x'.repeat(300),
      'ünïcødé/ファイル',
      '.meta',
      '.meta/.log',
      ' ',
      '-',
      '--',
      'd//x',
      'd/./x',
    ),
    fc.string({ maxLength: 20 }),
  );
  const num = fc.oneof(
    fc.constantFrom('0', '-1', '1', '4096', '2M', '3M', '64G', '1e3', '0x10', 'NaN', '9'.repeat(30), '12Q', '', '2.5M'),
    fc.string({ maxLength: 6 }),
  );
  const command = fc.oneof(
    fc.tuple(fc.constant('creat'), num, nasty).map(([c, s, p]) => [c, '-s', s, path, p]),
    fc.tuple(fc.constant('creat'), num, num, num, nasty).map(([c, s, n, b, p]) => [c, '-s', s, '--nstrips', n, '--nbuckets', b, path, p]),
    fc.tuple(fc.constant('creat'), num, num, nasty).map(([c, s, m, p]) => [c, '-s', s, '-m', m, '-u', m, path, p]),
    fc.tuple(fc.constant('mkdir'), fc.boolean(), nasty).map(([c, p, r]) => (p ? [c, '-p', path, r] : [c, path, r])),
    fc.tuple(fc.constant('rm'), nasty).map(([c, p]) => [c, path, p]),
    fc.tuple(fc.constant('verify'), num, nasty).map(([c, s, p]) => [c, '-S', s, path, p]),
    fc.tuple(fc.constant('flush'), nasty).map(([c, p]) => [c, path, p]),
    fc.tuple(fc.constantFrom('ls', 'fsck', 'hosts'), nasty).map(([c, p]) => [c, p]),
    fc.tuple(fc.constant('mkfs'), num, nasty).map(([c, n, p]) => [c, '--loglen', n, p]),
    fc.array(nasty, { maxLength: 5 }),
  );

  it('never throws, always a known exit code; failures change nothing', async () => {
    const codes = new Set<number>(Object.values(EXIT));
    let failures = 0;
    await fc.assert(
      fc.asyncProperty(command, async (args: string[]) => {
        const before = dev.read(0, 10 << 20);
        const out: string[] = [];
        const code = await runCli(args, { out: (s) => out.push(s), err: (s) => out.push(s), progress: false });
        assert.ok(codes.has(code), `exit ${code} for ${JSON.stringify(args)}`);
        if (code !== EXIT.OK && args[0] !== 'verify') {
          failures++;
          assert.ok(dev.read(0, 10 << 20).equals(before), `failed command wrote metadata: ${JSON.stringify(args)} → ${out.join(' | ')}`);
          assert.ok(out.join('\n').length > 0, `silent failure for ${JSON.stringify(args)}`);
        }
      }),
      { numRuns: 400 },
    );
    assert.ok(failures > 100);
    const r = fsck(dev);
    assert.deepEqual(r.errors, []);
    assert.ok(fs.existsSync(path));
  });
});
