/**
 * Issue 13's churn: 100,000 volume-shaped create+delete cycles on the default 8 MiB log (15,420
 * entries, about 3,855 cycles without compaction) while two FUSE hosts follow and a reader keeps
 * one file open on a host, checking its bytes throughout. Compaction runs by itself (threshold and
 * full log); the hosts follow every generation without unmounting.
 */
import { strict as assert } from 'assert';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { openDevice, type DaxDevice } from '../pkg/device/index.js';
import { FamfsFs } from '../pkg/famfs/fs.js';
import { fsck } from '../pkg/famfs/fsck.js';
import { forEachDeviceRun } from '../pkg/famfs/fmap.js';
import { DEFAULT_LOG_LEN, logCapacity } from '../pkg/famfs/layout.js';
import { canMount, FusedHost, sleep } from './helpers/fused-host.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const MASTER = '0c0d0e0f-1a1b-4c1d-8e1f-3031323334a5';
const CYCLES = Number(process.env['FAMFS_CHURN_CYCLES'] ?? 100_000);

(canMount ? describe : describe.skip)('famfs log compaction: 100,000 create+delete cycles with two FUSE hosts following @slow', function () {
  this.timeout(900_000);
  let dir: string;
  let devPath: string;
  let dev: DaxDevice;
  const hosts: FusedHost[] = [];

  after(async () => {
    for (const h of hosts) await h.stop().catch(() => undefined);
    dev?.close();
    if (devPath) fs.rmSync(devPath, { force: true });
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`${CYCLES} cycles: the log never fills, hosts follow every compaction, the open file reads the same bytes throughout`, async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famfs-churn-'));
    devPath = `/dev/shm/famfs-churn-${process.pid}-${randomBytes(3).toString('hex')}`;
    dev = openDevice(devPath, { create: { size: 8 * GIB } });
    FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: devPath });
    // The CSI controller's settings: the delete reserve, compaction at the default threshold.
    const m = FamfsFs.open(dev, { hostUuid: MASTER, reserveDeleteEntries: true });
    assert.equal(m.superblock.logLen, DEFAULT_LOG_LEN);
    m.mkdir('keep');
    const keep = m.creat('keep/file', 2 * MIB);
    const want = randomBytes(keep.size);
    forEachDeviceRun(keep.fmap, 0, keep.size, (devOff, fileOff, len) => dev.write(devOff, want.subarray(fileOff, fileOff + len)));
    forEachDeviceRun(keep.fmap, 0, keep.size, (devOff, _f, len) => dev.flush(devOff, len));
    for (const name of ['a', 'b'])
      hosts.push(
        await FusedHost.start(name, devPath, dir, ['--poll-ms', '50', '--host-uuid', `0c0d0e0f-1a1b-4c1d-8e1f-00000000c0${name === 'a' ? '0a' : '0b'}`]),
      );
    for (const h of hosts) {
      const deadline = Date.now() + 10_000;
      while (!fs.existsSync(h.p('keep/file'))) {
        assert.ok(Date.now() < deadline, `${h.name} never showed keep/file`);
        await sleep(20);
      }
    }
    const fd = fs.openSync(hosts[0].p('keep/file'), 'r');
    const got = Buffer.alloc(keep.size);
    const check = (when: string) => {
      got.fill(0);
      assert.equal(fs.readSync(fd, got, 0, keep.size, 0), keep.size, when);
      assert.ok(got.equals(want), `the open file's bytes changed ${when}`);
    };
    check('before the churn');

    const started = process.hrtime.bigint();
    let longestMs = 0;
    let longestCompactingMs = 0;
    let compactions = 0;
    let readerChecks = 0;
    const hostGenerations: number[][] = [[], []];
    try {
      for (let i = 0; i < CYCLES; i++) {
        const gen = m.activeLog.generation;
        const t0 = process.hrtime.bigint();
        m.mkdir(`v${i}`);
        m.creat(`v${i}/data`, 2 * MIB);
        m.rm(`v${i}/data`);
        m.rm(`v${i}`);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        longestMs = Math.max(longestMs, ms);
        if (m.activeLog.generation !== gen) {
          compactions += m.activeLog.generation - gen;
          longestCompactingMs = Math.max(longestCompactingMs, ms);
        }
        if (i % 1000 === 999) {
          check(`after cycle ${i + 1} (generation ${m.activeLog.generation})`);
          readerChecks++;
        }
        if (i % 5000 === 4999) {
          // let the event loop breathe and look where the hosts are
          for (let k = 0; k < hosts.length; k++) hostGenerations[k].push((await hosts[k].ctl({ op: 'status' }))['logGeneration'] as number);
        }
      }
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      check('after the churn');
      const f = m.creat('keep/final', 2 * MIB);
      for (const h of hosts) {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const st = await h.ctl({ op: 'status' });
          if (st['logIndex'] === m.tree.nextIndex && st['logGeneration'] === m.activeLog.generation) break;
          assert.ok(
            Date.now() < deadline,
            `${h.name} did not catch up: ${JSON.stringify({ index: st['logIndex'], gen: st['logGeneration'] })} vs ${m.tree.nextIndex}/${m.activeLog.generation}`,
          );
          await sleep(50);
        }
        assert.deepEqual(fs.readdirSync(h.p('keep')).sort(), ['file', 'final']);
        assert.deepEqual(
          fs.readdirSync(h.mountpoint).filter((n) => n !== '.meta'),
          ['keep'],
        );
        assert.equal(fs.statSync(h.p('keep/file')).ino, 16 + keep.index, `${h.name}: the inode never changed`);
        assert.equal(fs.statSync(h.p('keep/final')).ino, 16 + f.index);
      }
      const u = m.usage();
      const report = fsck(dev);
      assert.equal(report.clean, true, report.errors.join('; '));
      assert.equal(report.space!.collisions, 0);
      assert.ok(compactions >= Math.floor((CYCLES * 4) / logCapacity(DEFAULT_LOG_LEN)), `${compactions} compactions`);
      for (const g of hostGenerations) assert.ok(g.length === 0 || g[g.length - 1] > 0, 'hosts followed compacted generations during the churn');
      console.log(
        `      churn: ${CYCLES} cycles (${CYCLES * 4} log entries) in ${seconds.toFixed(1)} s = ${(CYCLES / seconds).toFixed(0)} cycles/s; ` +
          `${compactions} compactions (generation ${m.activeLog.generation}); longest cycle ${longestMs.toFixed(1)} ms, longest with a compaction ${longestCompactingMs.toFixed(1)} ms; ` +
          `log ${u.logEntriesUsed} of ${u.logEntriesTotal} entries at the end; ${readerChecks} reader checks; host generations seen every 5000 cycles: ${hostGenerations.map((g) => g.join(',')).join(' / ')}`,
      );
    } finally {
      fs.closeSync(fd);
    }
  });
});
