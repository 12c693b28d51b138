// The allocator's one-sweep rebuild against the plain definition: marking each used interval in
// order in a run list (what rebuild did before), for random sets of metadata, file, orphaned and
// pending intervals, overlapping or not.
import { strict as assert } from 'assert';
import * as fc from 'fast-check';
import { Allocator, IntervalSweep, SpaceMap } from '../pkg/famfs/allocator';
import { DEFAULT_LOG_LEN, FamfsFs } from '../pkg/famfs';
import { BufferMedia } from './helpers/buffer-media';

interface Iv {
  start: number;
  count: number;
  kind: number;
}

function byMarking(total: number, ivs: Iv[]): { runs: { start: number; count: number }[]; collisions: number } {
  const map = new SpaceMap(total);
  let collisions = 0;
  // The order rebuild used: metadata, then files (counted), then orphaned/pending (not counted).
  for (const k of [IntervalSweep.METADATA, IntervalSweep.FILE, IntervalSweep.OTHER]) {
    for (const iv of ivs.filter((x) => x.kind === k)) {
      const c = map.markUsed(iv.start, iv.count);
      if (k === IntervalSweep.FILE) collisions += c;
    }
  }
  return { runs: map.freeRuns(), collisions };
}

describe('allocator rebuild sweep', () => {
  it('gives the free runs and collision count that marking the intervals one by one gives', () => {
    const iv = (total: number) =>
      fc.record({ start: fc.integer({ min: 0, max: total - 1 }), count: fc.integer({ min: 1, max: 40 }), kind: fc.constantFrom(0, 1, 1, 1, 2) });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }).chain((total) => fc.tuple(fc.constant(total), fc.array(iv(total), { maxLength: 60 }))),
        ([total, ivs]) => {
          const sweep = new IntervalSweep();
          for (const x of ivs) sweep.add(x.start, x.count, x.kind);
          const got = sweep.sweep(total);
          const want = byMarking(total, ivs);
          assert.deepEqual(got.map.freeRuns(), want.runs);
          assert.equal(got.collisions, want.collisions);
          assert.equal(got.map.totalUnits, total);
        },
      ),
      { numRuns: 2000, seed: 15 },
    );
  });

  it('a map built from runs allocates like one built by marking', () => {
    const sweep = new IntervalSweep();
    sweep.add(0, 2, IntervalSweep.METADATA);
    sweep.add(5, 3, IntervalSweep.FILE);
    const { map } = sweep.sweep(20);
    assert.deepEqual(map.freeRuns(), [
      { start: 2, count: 3 },
      { start: 8, count: 12 },
    ]);
    assert.equal(map.firstFit(4), 8);
    assert.equal(map.largestFreeRun, 12);
    assert.equal(map.markUsed(8, 4), 0);
    map.release(8, 4);
    assert.deepEqual(map.freeRuns(), [
      { start: 2, count: 3 },
      { start: 8, count: 12 },
    ]);
  });

  it('reclaim hands passed deletes back in place, leaving the map a rebuild from the tree would give', () => {
    const MiB = 1024 * 1024;
    const media = new BufferMedia(Buffer.alloc(64 * MiB), 1024 * MiB);
    const f = FamfsFs.mkfs(media, { systemUuid: '51111111-2222-4333-8444-555555555555', devicePath: '/dev/shm/none' });
    let made = 0;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 6 })), { minLength: 1, maxLength: 40 }), (ops) => {
        let n = 0;
        for (const [del, units] of ops) {
          const files = [...f.tree.files()];
          if (del && files.length > 0) f.rm(files[n % files.length].relpath);
          else f.creat(`f${made++}`, units * 2 * MiB);
          n++;
          // The live allocator reclaims lazily (before a create); then a fresh allocator rebuilt
          // from the same tree must see the same free runs.
          f.reclaimReplayed();
          const fresh = new Allocator(f.tree, f.allocator.deviceSize, DEFAULT_LOG_LEN);
          fresh.rebuild(f.horizon());
          const runs = (a: Allocator): unknown => (a as unknown as { map: SpaceMap }).map.freeRuns();
          assert.deepEqual(runs(f.allocator), runs(fresh));
          assert.deepEqual(f.allocator.summary(), fresh.summary());
        }
      }),
      { numRuns: 30, seed: 7 },
    );
  });
});
