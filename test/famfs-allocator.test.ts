// The allocator's one-sweep rebuild against the plain definition: marking each used interval in
// order in a run list (what rebuild did before), for random sets of metadata, file, orphaned and
// pending intervals, overlapping or not.
import { strict as assert } from 'assert';
import * as fc from 'fast-check';
import { IntervalSweep, SpaceMap } from '../pkg/famfs/allocator';

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
    assert.deepEqual(map.freeRuns(), [{ start: 2, count: 3 }, { start: 8, count: 12 }]);
    assert.equal(map.firstFit(4), 8);
    assert.equal(map.largestFreeRun, 12);
    assert.equal(map.markUsed(8, 4), 0);
    map.release(8, 4);
    assert.deepEqual(map.freeRuns(), [{ start: 2, count: 3 }, { start: 8, count: 12 }]);
  });
});
