/**
 * Guest check: the host-wide famfs writer lock (flock(2) on the device inode) on a real
 * /dev/dax0.0 char device, in guest A. Negative control first: while another process holds the
 * lock, a write and a take-over fail ELOCKED and write nothing, and succeed once it is gone (so
 * flock on the char device really excludes another process). Then two writer processes append at
 * once, and do contend (ELOCKED retries counted): every acknowledged entry is in the log once, at
 * its index and memory, and fsck is clean.
 */

import { openDevice } from '../../../pkg/device/index.js';
import { FamfsError, FamfsFs, fmapExtents, fsck, type Extent } from '../../../pkg/famfs/index.js';
import { spawnLogWriter, type WriterLine } from '../../helpers/log-writer-child.js';
import { assertThat, check, result, runGuestCheck, type GuestContext } from './report.js';

const MIB = 1 << 20;
const MASTER = '11111111-2222-4333-8444-5555aaaa0d0a';
const COUNT = 30;

function lockHeldControl(ctx: GuestContext): Promise<void> {
  return (async () => {
    const holder = spawnLogWriter(['hold', ctx.dax]);
    try {
      await holder.ready;
      assertThat(holder.child.exitCode === null, 'the lock holder exited before taking the lock');
      const dev = openDevice(ctx.dax, { writerLockWaitMs: 200 });
      try {
        const m = FamfsFs.open(dev, { hostUuid: MASTER });
        const before = m.header().nextIndex;
        const epoch = m.extBlock().epoch;
        const codes: string[] = [];
        for (const op of [() => m.creat('held/f', 2 * MIB, { parents: {} }), () => m.takeOver(MASTER)]) {
          try {
            op();
            codes.push('none');
          } catch (e) {
            codes.push(e instanceof FamfsError ? e.code : String(e));
          }
        }
        assertThat(
          codes.every((c) => c === 'ELOCKED'),
          `under another process's lock: ${codes.join(', ')} (want ELOCKED)`,
        );
        assertThat(m.header().nextIndex === before && m.extBlock().epoch === epoch, 'something was written under the other process lock');
        holder.child.kill('SIGKILL');
        await holder.done;
        m.creat('held/f', 2 * MIB, { parents: {} });
        assertThat(m.header().nextIndex === before + 2, `after the holder died: next_index ${m.header().nextIndex}, want ${before + 2}`);
        result(ctx, 'lock-held-elocked', 'ok', 'another process holding flock on /dev/dax0.0: creat and takeOver ELOCKED, nothing written; done once it died');
      } finally {
        dev.close();
      }
    } finally {
      holder.child.kill('SIGKILL');
    }
  })().catch((e: unknown) => result(ctx, 'lock-held-elocked', 'fail', (e as Error).message));
}

async function race(ctx: GuestContext): Promise<void> {
  // Lock wait 0: every time one writer finds the other holding the lock it counts an ELOCKED and retries.
  const runs = ['a', 'b'].map((w) => spawnLogWriter(['create', ctx.dax, MASTER, w, String(COUNT), '0', 'stdin']));
  try {
    await Promise.all(runs.map((r) => r.ready));
    for (const r of runs) r.child.stdin?.end('go\n');
    const results = await Promise.all(runs.map((r) => r.done));
    check(ctx, 'race-no-collision', () => {
      const creates: WriterLine[] = [];
      const deleted = new Set<string>();
      let locked = 0;
      results.forEach((r, w) => {
        assertThat(r.code === 0, `writer ${w} exited ${r.code}: ${r.err.slice(-500)}`);
        const errors = r.lines.filter((l) => l.op === 'error');
        assertThat(errors.length === 0, `writer ${w}: ${JSON.stringify(errors.slice(0, 3))}`);
        locked += r.lines.find((l) => l.op === 'done')?.locked ?? 0;
        for (const l of r.lines) {
          if (l.op === 'create') creates.push(l);
          if (l.op === 'delete') deleted.add(l.relpath as string);
        }
      });
      assertThat(creates.length === 2 * COUNT, `${creates.length} creates acknowledged, want ${2 * COUNT}`);
      const byIndex = new Map<number, string>();
      for (const c of creates) {
        const other = byIndex.get(c.index as number);
        assertThat(other === undefined, `log index ${c.index} acknowledged for both ${other} and ${c.relpath}`);
        byIndex.set(c.index as number, c.relpath as string);
      }
      const dev = openDevice(ctx.dax, { readOnly: true });
      try {
        const f = FamfsFs.open(dev, { readOnly: true });
        const live: Extent[] = [];
        for (const c of creates) {
          const n = f.lookup(c.relpath as string);
          if (deleted.has(c.relpath as string)) {
            assertThat(n === undefined, `${c.relpath} was deleted but is in the log`);
            continue;
          }
          assertThat(n !== undefined && n.kind === 'file' && n.index === c.index, `acknowledged ${c.relpath} (index ${c.index}) is not in the log there`);
          const ext = fmapExtents(n.fmap);
          assertThat(
            JSON.stringify(ext.map((e) => [e.offset, e.len])) === JSON.stringify(c.extents),
            `${c.relpath}: memory differs from what was acknowledged`,
          );
          live.push(...ext);
        }
        live.sort((a, b) => a.offset - b.offset);
        for (let i = 1; i < live.length; i++)
          assertThat(live[i - 1].offset + live[i - 1].len <= live[i].offset, `two live files share memory at 0x${live[i].offset.toString(16)}`);
        const report = fsck(dev);
        assertThat(report.errors.length === 0 && report.clean, `fsck: ${report.errors.slice(0, 3).join('; ')}`);
      } finally {
        dev.close();
      }
      // The two really overlapped while one held the lock (else the race proved nothing): on one
      // vCPU the writer preempted mid-write leaves the other retrying (thousands of times in practice).
      assertThat(locked > 0, 'no writer ever found the other holding the lock: the two did not race');
      return `${creates.length} creates by 2 processes, every index once, replay and fsck agree; ${locked} ELOCKED retries (the other process held the lock)`;
    });
  } finally {
    for (const r of runs) r.child.kill('SIGKILL');
  }
}

runGuestCheck(async (ctx) => {
  if (ctx.role !== 'A') return;
  check(ctx, 'mkfs', () => {
    const dev = openDevice(ctx.dax);
    try {
      FamfsFs.mkfs(dev, { systemUuid: MASTER, devicePath: ctx.dax, force: true });
    } finally {
      dev.close();
    }
  });
  await lockHeldControl(ctx);
  await race(ctx);
});
