/**
 * One size parser, two dialects (pkg/size, docs/sizes.md): the famfs CLI's `2M` = 2 MiB and the
 * Kubernetes quantity `2M` = 2,000,000 bytes; lowercase m refused in both; rule violations name the
 * spelling that was probably meant. Also through the real CLI and the real driver binary.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import fc from 'fast-check';
import { quantityToScalar } from '@kubernetes/client-node/dist/util.js';
import { formatSize, isPowerOfTwo, parseSize, SizeError } from '../pkg/size';
import { parseVolumeParams } from '../pkg/csi/params';
import { CsiError } from '../pkg/csi/errors';
import { status } from '@grpc/grpc-js';

const MiB = 1024 ** 2;

function refused(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SizeError, `expected SizeError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

describe('sizes: one parser, two dialects', () => {
  // [text, famfs bytes | null (refused), kubernetes bytes | null]
  const table: [string, number | null, number | null][] = [
    ['4096', 4096, 4096],
    ['2M', 2 * MiB, 2_000_000],
    ['2Mi', 2 * MiB, 2 * MiB],
    ['2MiB', 2 * MiB, 2 * MiB],
    ['2MB', 2 * MiB, null],
    ['64K', 64 * 1024, null],
    ['64k', 64 * 1024, 64_000],
    ['64Ki', 64 * 1024, 64 * 1024],
    ['8G', 8 * 1024 ** 3, 8e9],
    ['8g', 8 * 1024 ** 3, null],
    ['8Gi', 8 * 1024 ** 3, 8 * 1024 ** 3],
    ['1T', 1024 ** 4, 1e12],
    ['1.5Gi', 1.5 * 1024 ** 3, 1.5 * 1024 ** 3],
    ['1e9', null, 1e9],
    [' 2Mi ', 2 * MiB, 2 * MiB],
    ['4m', null, null],
    ['4mi', null, null],
    ['-1', null, null],
    ['0.5', null, null],
    ['2X', null, null],
    ['', null, null],
    ['99999999Ei', null, null],
  ];
  for (const [text, famfs, k8s] of table) {
    it(`${JSON.stringify(text)}: famfs ${famfs ?? 'refused'}, kubernetes ${k8s ?? 'refused'}`, () => {
      if (famfs === null) assert.throws(() => parseSize(text, 'famfs', 'x'), SizeError);
      else assert.equal(parseSize(text, 'famfs', 'x'), famfs);
      if (k8s === null) assert.throws(() => parseSize(text, 'kubernetes', 'x'), SizeError);
      else assert.equal(parseSize(text, 'kubernetes', 'x'), k8s);
    });
  }

  it('lowercase m is refused in both dialects with the spelling to use instead', () => {
    refused(() => parseSize('4m', 'famfs', '-s'), /-s "4m": lowercase "m".*milli.*write 4Mi.*or 4M/);
    refused(() => parseSize('4m', 'kubernetes', 'parameter chunkSize'), /parameter chunkSize "4m": lowercase "m".*4Mi.*4M is 4 x 1000000/);
  });

  it('a value that is not a multiple says which spelling was probably meant', () => {
    refused(
      () => parseSize('2M', 'kubernetes', 'chunkSize', { multipleOf: 2 * MiB, powerOfTwo: true }),
      /2000000 bytes; it must be a power of two and a multiple of 2Mi.*did you mean 2Mi\?/,
    );
    refused(() => parseSize('8G', 'kubernetes', '--device-size', { multipleOf: 2 * MiB }), /did you mean 8Gi\?/);
    refused(() => parseSize('3M', 'famfs', '--chunk', { multipleOf: 2 * MiB, powerOfTwo: true }), /nearest size that fits is 4M \(4194304 bytes\)/);
    refused(() => parseSize('3000000', 'famfs', '--size', { multipleOf: 2 * MiB }), /nearest size that fits is 4M/);
    refused(() => parseSize('3Mi', 'kubernetes', 'chunkSize', { multipleOf: 2 * MiB }), /nearest size that fits is 4Mi/);
    refused(() => parseSize('0', 'famfs', '-s', { min: 1 }), /it must be at least 1$/);
    refused(
      () => parseSize('3M', 'famfs', '--loglen', { powerOfTwo: true, min: 8 * MiB }),
      /it must be a power of two and at least 8M \(8388608 bytes\); the nearest size that fits is 8M/,
    );
    assert.equal(parseSize('4Mi', 'kubernetes', 'chunkSize', { multipleOf: 2 * MiB, powerOfTwo: true }), 4 * MiB);
    assert.equal(parseSize('8G', 'famfs', '--size', { multipleOf: 2 * MiB }), 8 * 1024 ** 3);
  });

  it('powers of two above 4 GiB are judged arithmetically (no 32-bit truncation)', () => {
    assert.ok(isPowerOfTwo(2 ** 40));
    assert.ok(!isPowerOfTwo(3 * 2 ** 32));
    refused(() => parseSize('12Gi', 'kubernetes', 'x', { powerOfTwo: true }), /must be a power of two; the nearest size that fits is 16Gi/);
  });

  it('formatSize spells sizes in each dialect', () => {
    assert.equal(formatSize(2 * MiB, 'kubernetes'), '2Mi');
    assert.equal(formatSize(2 * MiB, 'famfs'), '2M');
    assert.equal(formatSize(3 * 1024 ** 4, 'famfs'), '3T');
    assert.equal(formatSize(1000, 'kubernetes'), '1000');
  });

  it('agrees with client-node quantityToScalar on every integer quantity both accept', () => {
    const suffixes = ['', 'k', 'M', 'G', 'T', 'Ki', 'Mi', 'Gi', 'Ti'];
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4096 }), fc.constantFrom(...suffixes), (n, suffix) => {
        const q = `${n}${suffix}`;
        assert.equal(parseSize(q, 'kubernetes', 'q'), Number(quantityToScalar(q)));
      }),
    );
  });

  it('StorageClass chunkSize goes through the Kubernetes dialect and answers INVALID_ARGUMENT with the hint', () => {
    assert.equal(parseVolumeParams({ nstrips: '2', nbuckets: '2', chunkSize: '4Mi' }).interleave?.chunkSize, 4 * MiB);
    assert.throws(
      () => parseVolumeParams({ nstrips: '2', nbuckets: '2', chunkSize: '2M' }),
      (e: unknown) => e instanceof CsiError && e.code === status.INVALID_ARGUMENT && /parameter chunkSize "2M".*did you mean 2Mi\?/.test(e.message),
    );
    assert.throws(
      () => parseVolumeParams({ nstrips: '2', nbuckets: '2', chunkSize: '2m' }),
      (e: unknown) => e instanceof CsiError && e.code === status.INVALID_ARGUMENT && /milli/.test(e.message),
    );
  });

  describe('through the real binaries', () => {
    const root = path.resolve(__dirname, '..');
    const dev = `/dev/shm/famfs-size-test-${process.pid}-${Math.random().toString(36).slice(2)}.img`;
    after(() => fs.rmSync(dev, { force: true }));
    const run = (bin: string, args: string[]) =>
      spawnSync(process.execPath, [path.join(root, 'cmd', bin), ...args], {
        encoding: 'utf8',
        env: { ...process.env, FAMFS_SYSTEM_UUID: '11111111-2222-4333-8444-555555555555' },
      });

    it('famfs mkfs --size 64m exits 2 and creates nothing; --size 64Mi works; creat -s 2M and -s 2Mi both make 2 MiB files', () => {
      const bad = run('famfs.js', ['mkfs', '--size', '64m', dev]);
      assert.equal(bad.status, 2, bad.stderr);
      assert.match(bad.stderr, /lowercase "m"/);
      assert.ok(!fs.existsSync(dev), 'no file left behind');
      const ok = run('famfs.js', ['mkfs', '--size', '64Mi', dev]);
      assert.equal(ok.status, 0, ok.stderr);
      assert.equal(fs.statSync(dev).size, 64 * MiB);
      const c = run('famfs.js', ['creat', '-s', '2Mi', dev, 'a']);
      assert.equal(c.status, 0, c.stderr);
      const c2 = run('famfs.js', ['creat', '-s', '2M', dev, 'b']);
      assert.equal(c2.status, 0, c2.stderr);
      const ls = JSON.parse(run('famfs.js', ['ls', '--json', dev]).stdout) as { entries: { path: string; size?: number }[] };
      assert.deepEqual(
        ls.entries.filter((e) => e.size !== undefined).map((e) => [e.path, e.size]),
        [
          ['a', 2 * MiB],
          ['b', 2 * MiB],
        ],
      );
    });

    it('famfs-csi --device-size 8G is refused with "did you mean 8Gi?"', () => {
      const r = run('famfs-csi.js', [
        '--mode',
        'controller',
        '--device-size',
        '8G',
        '--device',
        dev,
        '--endpoint',
        `unix:///tmp/famfs-size-${process.pid}.sock`,
      ]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /--device-size "8G" is 8000000000 bytes.*did you mean 8Gi\?/);
    });
  });
});
