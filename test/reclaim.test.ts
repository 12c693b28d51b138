/**
 * Reclaim safety (issue 11): one clock judges host liveness, and a host that may have fallen out of
 * the horizon fences itself. These tests drive the real format code (FamfsFs on shared memory);
 * test/fuse-fence.test.ts drives a real FUSE host process.
 */
import { strict as assert } from 'assert';
import * as fc from 'fast-check';
import { DEFAULT_LOG_LEN, FamfsError, FamfsFs, fenceSlackMs, fenceWindowMs, fmapExtents, CLOCK_RATE_ERROR, OpenOptions } from '../pkg/famfs';
import { BufferMedia } from './helpers/buffer-media';

const MASTER = '11111111-2222-4333-8444-555555555555';
const MiB = 1 << 20;
const MIN = 60_000;

function hostUuid(i: number): string {
  return `99999999-8888-4777-8666-${i.toString(16).padStart(12, '0')}`;
}

function device(size = 64 * MiB, hostLiveMs?: number): BufferMedia {
  const media = new BufferMedia(Buffer.alloc(size), size);
  FamfsFs.mkfs(media, { systemUuid: MASTER, devicePath: '/dev/shm/reclaim-test', logLen: DEFAULT_LOG_LEN, hostLiveMs });
  return media;
}

function overlaps(a: { offset: number; len: number }[], b: { offset: number; len: number }[]): boolean {
  return a.some((x) => b.some((y) => x.offset < y.offset + y.len && y.offset < x.offset + x.len));
}

describe('reclaim: one clock', () => {
  for (const skew of [-5 * MIN, 5 * MIN]) {
    it(`a host whose clock is ${skew < 0 ? '5 min behind' : '5 min ahead of'} the master's keeps its protection`, () => {
      const media = device();
      const master = FamfsFs.open(media, { hostUuid: MASTER });
      const victim = master.creat('victim', 20 * MiB);
      // The host's clocks are off by `skew`; it acks the current log (before the delete).
      const hostOpts: OpenOptions = { hostUuid: hostUuid(1), now: () => Date.now() + skew };
      const host = FamfsFs.open(media, hostOpts);
      host.ackReplay(hostUuid(1), 'skewed');
      master.rm('victim');
      // The host has not replayed the delete: its memory must stay off limits, whatever the clocks say.
      for (let i = 0; i < 2; i++) {
        const f = master.creat(`new-${i}`, 12 * MiB);
        assert.equal(overlaps(fmapExtents(f.fmap), fmapExtents(victim.fmap)), false, `new-${i} reuses the memory of a file the skewed host still serves`);
        master.rm(`new-${i}`);
        host.ackReplay(hostUuid(1), 'skewed'); // alive, still behind: it keeps acking its old position
      }
      assert.ok(master.usage().pendingFreeBytes >= 20 * MiB);
      // Once it replays and acks, the memory comes back.
      host.catchUp();
      host.ackReplay(hostUuid(1), 'skewed');
      const g = master.creat('after-ack', 54 * MiB); // the whole device: only possible with the victim's memory back
      assert.equal(overlaps(fmapExtents(g.fmap), fmapExtents(victim.fmap)), true, 'after the ack the memory is reused');
    });
  }

  it('a host counts as gone only after the master itself watched its slot unchanged for hostLiveMs; a new master waits a full window', () => {
    const media = device();
    let mono = 0;
    const master = FamfsFs.open(media, { hostUuid: MASTER, monotonicNow: () => mono });
    const victim = master.creat('victim', 20 * MiB);
    const host = FamfsFs.open(media, { hostUuid: hostUuid(2) });
    host.ackReplay(hostUuid(2), 'stalls');
    master.hostLiveness(); // the master looks now (it notes a change only when it sees one)
    master.rm('victim');
    mono += 59_999;
    assert.equal(overlaps(fmapExtents(master.creat('a', 20 * MiB).fmap), fmapExtents(victim.fmap)), false, 'still inside the window');
    // A second master (failover) with the whole window already "elapsed" on a clock it never watched with.
    let mono2 = 1e9;
    const second = FamfsFs.open(media, { hostUuid: MASTER, monotonicNow: () => mono2 });
    assert.ok(second.horizon() <= host.tree.nextIndex, 'a new master treats every host as live at first sight');
    mono2 += 59_999;
    assert.ok(second.horizon() <= host.tree.nextIndex, 'and for a full window of its own');
    mono += 2;
    const b = master.creat('b', 20 * MiB);
    assert.equal(overlaps(fmapExtents(b.fmap), fmapExtents(victim.fmap)), true, 'watched silent for 60 s: the memory is reused');
    const [h] = master.hostLiveness();
    assert.equal(h.live, false);
    // The eviction is on the device, naming the host, its position and what the timeout released.
    const ev = master.evictions();
    assert.equal(ev.length, 1);
    assert.equal(ev[0].hostUuid, hostUuid(2));
    assert.equal(ev[0].ackedIndex, host.tree.nextIndex);
    assert.ok(ev[0].silentMs >= 60_000);
    assert.ok(master.tree.released.some((r) => r.relpath === 'victim' && r.deleteIndex >= ev[0].ackedIndex && r.deleteIndex < ev[0].reclaimUpTo));
    // The host comes back: one ack makes it live again.
    host.catchUp();
    host.ackReplay(hostUuid(2), 'stalls');
    assert.equal(master.hostLiveness()[0].live, true);
  });

  it("the FUSE host on the master's own machine (same system UUID) holds deleted memory back like any host", () => {
    const media = device();
    const master = FamfsFs.open(media, { hostUuid: MASTER });
    const victim = master.creat('victim', 20 * MiB);
    // The node plugin's FUSE server on the master's machine acks with the machine's UUID.
    const localFuse = FamfsFs.open(media, { hostUuid: MASTER, readOnly: true });
    localFuse.ackReplay(MASTER, 'master-node');
    master.rm('victim');
    const f = master.creat('next', 20 * MiB);
    assert.equal(overlaps(fmapExtents(f.fmap), fmapExtents(victim.fmap)), false, "reused memory the master's own FUSE host still maps");
    localFuse.catchUp();
    localFuse.ackReplay(MASTER, 'master-node');
    const g = master.creat('after', 14 * MiB);
    assert.equal(overlaps(fmapExtents(g.fmap), fmapExtents(victim.fmap)), true);
  });

  it('the fence window leaves the master a wait longer than the host can serve, at the worst allowed clock rates', () => {
    for (const L of [200, 1000, 1500, 60_000, 600_000]) {
      const F = fenceWindowMs(L);
      const r = CLOCK_RATE_ERROR;
      assert.ok(F > 0 && F < L, `F(${L}) = ${F}`);
      // Host clock slow by r: F on it is F/(1-r) real; the master's fast by r: L on it is L/(1+r) real.
      assert.ok(F / (1 - r) + fenceSlackMs(L) <= L / (1 + r), `L=${L}: ${F / (1 - r)} + ${fenceSlackMs(L)} > ${L / (1 + r)}`);
    }
    assert.throws(
      () => FamfsFs.mkfs(new BufferMedia(Buffer.alloc(64 * MiB), 64 * MiB), { systemUuid: MASTER, devicePath: 'x', hostLiveMs: 50 }),
      (e: unknown) => e instanceof FamfsError && e.code === 'EINVAL',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Property: over random schedules of acks, stalls, clock offsets and rates, deletes and creates,
// no host that is still serving (its fence not expired) ever lacks a delete whose memory the master
// may already have reused.
// ---------------------------------------------------------------------------------------------

type Step =
  { op: 'advance'; ms: number } | { op: 'ackBegin'; host: number } | { op: 'ackFinish'; host: number } | { op: 'creat' } | { op: 'rm' } | { op: 'observe' };

interface HostClock {
  offsetMs: number;
  rate: number;
}

const L = 1000;
const HOSTS = 3;

const clockArb: fc.Arbitrary<HostClock> = fc.record({
  offsetMs: fc.constantFrom(-5 * MIN, -1, 0, 1, 5 * MIN),
  rate: fc.double({ min: 1 - CLOCK_RATE_ERROR, max: 1 + CLOCK_RATE_ERROR, noNaN: true }),
});
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 3 * L }).map((ms) => ({ op: 'advance' as const, ms })) },
  // Steps near the window's edges, where a wrong margin would show.
  { weight: 2, arbitrary: fc.constantFrom(1, 10, L - 60, L - 10, L, L + 1, fenceWindowMs(L)).map((ms) => ({ op: 'advance' as const, ms })) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: HOSTS - 1 }).map((host) => ({ op: 'ackBegin' as const, host })) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: HOSTS - 1 }).map((host) => ({ op: 'ackFinish' as const, host })) },
  { weight: 3, arbitrary: fc.constant({ op: 'creat' as const }) },
  { weight: 3, arbitrary: fc.constant({ op: 'rm' as const }) },
  { weight: 2, arbitrary: fc.constant({ op: 'observe' as const }) },
);
const scheduleArb = fc.record({
  master: clockArb,
  hosts: fc.array(clockArb, { minLength: HOSTS, maxLength: HOSTS }),
  steps: fc.array(stepArb, { minLength: 1, maxLength: 80 }),
});

type Schedule = { master: HostClock; hosts: HostClock[]; steps: Step[] };

/** Always tried: the host acks, a delete follows, and the master's window ends exactly L later. */
const EDGE: Schedule = {
  master: { offsetMs: 0, rate: 1 },
  hosts: [
    { offsetMs: -5 * MIN, rate: 1 },
    { offsetMs: 0, rate: 1 - CLOCK_RATE_ERROR },
    { offsetMs: 5 * MIN, rate: 1 + CLOCK_RATE_ERROR },
  ],
  steps: [
    { op: 'creat' },
    { op: 'ackBegin', host: 0 },
    { op: 'ackFinish', host: 0 },
    { op: 'rm' },
    { op: 'advance', ms: L - 10 },
    { op: 'advance', ms: 10 },
    { op: 'observe' },
  ],
};

/**
 * Runs a schedule and returns the first violation, or undefined. `rule` is how the master judges
 * liveness: 'one-clock' is the code under test (HostWatch on the master's monotonic clock, hosts
 * fenced by fenceWindowMs); 'host-clocks' is the rule before issue 11 (each host writes its own
 * wall-clock time; gone when the master's wall clock is more than L past it; hosts never fence).
 */
function run(s: Schedule, rule: 'one-clock' | 'host-clocks'): string | undefined {
  const media = device(24 * MiB, L);
  let T = 0; // real time
  const EPOCH = 1.7e12; // wall clocks near today, offsets of minutes either way
  const clockOf = (c: HostClock) => () => EPOCH + c.offsetMs + c.rate * T;
  const masterMono = clockOf(s.master);
  const master = FamfsFs.open(media, { hostUuid: MASTER, hostLiveMs: L, monotonicNow: masterMono, now: masterMono });
  master.takeOver(MASTER);
  const hosts = s.hosts.map((c, i) => ({
    uuid: hostUuid(i),
    clock: clockOf(c),
    clockAt: (at: number) => EPOCH + c.offsetMs + c.rate * at,
    fs: FamfsFs.open(media, { hostUuid: hostUuid(i), now: clockOf(c) }),
    t0: undefined as number | undefined,
    deadline: -Infinity, // fenced until its first ack
    wallAck: -Infinity,
    ackedIndex: 0,
  }));
  const reclaimed = new Set<number>(); // delete indexes whose memory the master may have reused
  let files = 0;
  const live: string[] = [];
  const oldHorizon = (): number => {
    let h = master.tree.nextIndex;
    for (const x of hosts) if (x.wallAck !== -Infinity && masterMono() - x.wallAck <= L) h = Math.min(h, x.ackedIndex);
    return h;
  };
  const check = (): string | undefined => {
    const H = rule === 'one-clock' ? master.horizon() : oldHorizon();
    for (const r of master.tree.released) if (r.deleteIndex < H) reclaimed.add(r.deleteIndex);
    for (const x of hosts) {
      // Serving: under one clock, the host accepted a request within the last fenceSlackMs of real
      // time (its clock then was before its deadline); a host of the old rule never stops serving.
      const serving = rule === 'host-clocks' ? true : x.clockAt(T - fenceSlackMs(L)) < x.deadline;
      if (!serving) continue;
      for (const d of reclaimed) {
        if (x.fs.tree.nextIndex <= d)
          return `T=${T}: host ${x.uuid} serves at log position ${x.fs.tree.nextIndex} (deadline ${x.deadline}, clock ${x.clock()}) but delete ${d} was reclaimed`;
      }
    }
    return undefined;
  };
  for (const st of s.steps) {
    switch (st.op) {
      case 'advance':
        T += st.ms;
        break;
      case 'ackBegin': {
        // server.ts order: read the clock, publish the position, (later) replay again, arm.
        const x = hosts[st.host];
        x.t0 = x.clock();
        x.fs.ackReplay(x.uuid, 'h');
        x.ackedIndex = x.fs.tree.nextIndex;
        x.wallAck = x.clock(); // the old rule's heartbeat: the host's own clock
        break;
      }
      case 'ackFinish': {
        const x = hosts[st.host];
        x.fs.catchUp();
        if (x.t0 !== undefined) x.deadline = x.t0 + fenceWindowMs(L);
        x.t0 = undefined;
        break;
      }
      case 'creat':
        try {
          master.creat(`f${files}`, 2 * MiB);
          live.push(`f${files++}`);
        } catch (e) {
          if (!(e instanceof FamfsError && e.code === 'ENOSPC')) throw e;
        }
        break;
      case 'rm': {
        const name = live.shift();
        if (name) master.rm(name);
        break;
      }
      case 'observe':
        break;
    }
    const v = check();
    if (v) return v;
  }
  return undefined;
}

describe('reclaim: property over random ack, stall and clock schedules', function () {
  this.timeout(120_000);

  it('one clock: no serving host ever misses a delete whose memory may have been reused', () => {
    fc.assert(
      fc.property(scheduleArb, (s) => {
        const v = run(s, 'one-clock');
        assert.equal(v, undefined, v);
      }),
      { numRuns: 100, examples: [[EDGE]] },
    );
  });

  it('negative control: the same schedules under the old host-clock rule do find a violation', () => {
    const r = fc.check(
      fc.property(scheduleArb, (s) => run(s, 'host-clocks') === undefined),
      { numRuns: 100 },
    );
    assert.equal(r.failed, true, 'the property must be able to fail');
  });
});
