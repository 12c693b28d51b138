// A replay keeps its tree in the native log tree (native/src/famfs_tree.cc) and makes node objects
// only when they are looked up (pkg/famfs/tree.ts); without the addon, or with nativeTree: false,
// every node is a JavaScript object from the start. Both must hold exactly the same tree: this
// test replays many damaged logs both ways and requires the same nodes (looked up before and after
// the rest were made), children in the same order, the same problems, released and orphaned
// extents, slots and deletes, the same free space, and then the same changes and state after more
// entries are applied to both. The last case reads the logs from a real device, where the native
// tree reads the log straight from the mapping.
import { strict as assert } from 'assert';
import { DEFAULT_LOG_LEN, FamfsFs, type DirNode, type LogEntry, type Media, type TreeChange, type TreeNode } from '../pkg/famfs';
import { nativeTreeAvailable } from '../pkg/famfs/native-tree';
import { createEmulatedDevice, removeEmulatedDevice } from '../testkit/emulated-device';
import { compactedBase, craftedBody, damage, deletesBase, plainBase, SIZE, type Base } from './helpers/damaged-logs';
import { seededRandom, type SeededRandom } from './helpers/seeded-random';

type Projected = Record<string, unknown>;

function proj(n: TreeNode | undefined): Projected | undefined {
  if (n === undefined) return undefined;
  const common = { kind: n.kind, relpath: n.relpath, name: n.name, index: n.index, mode: n.mode, uid: n.uid, gid: n.gid };
  return n.kind === 'file' ? { ...common, size: n.size, flags: n.flags, fmap: n.fmap } : common;
}

function projChange(c: TreeChange | undefined): Projected | undefined {
  if (c === undefined) return undefined;
  return c.op === 'add' ? { op: 'add', node: proj(c.node) } : { op: 'remove', node: proj(c.node), deleteIndex: c.deleteIndex };
}

/** Everything a user of the tree can see, plus the allocator rebuilt from it at two horizons. */
function state(f: FamfsFs): Projected {
  const t = f.tree;
  const nodes = [...t.nodes()];
  const dirs = [t.root, ...nodes.filter((n): n is DirNode => n.kind === 'dir')];
  const space = (horizon: number) => {
    f.allocator.rebuild(horizon);
    return { runs: f.allocator.freeRuns(), summary: f.allocator.summary(), pending: f.allocator.pendingCount };
  };
  return {
    counts: { slot: t.slot, nextIndex: t.nextIndex, files: t.fileCount, dirs: t.dirCount, generation: t.generation, live: t.byIndex.size },
    problems: [...t.problems],
    released: [...t.released],
    orphaned: [...t.orphaned],
    slotIndexes: [...t.slotIndexes],
    deletes: [...t.deletes],
    nodes: nodes.map(proj),
    byIndex: [...t.byIndex].map(([k, n]) => [k, proj(n)]),
    files: [...t.files()].map((n) => n.index),
    children: dirs.map((d) => [d.relpath, [...d.children].map(([name, c]) => [name, c.index])]),
    spaceAll: space(0),
    spaceNow: space(t.nextIndex),
  };
}

/** Relpaths worth looking up in both trees: every node's, its parent's, and a few that exist in neither. */
function paths(f: FamfsFs): string[] {
  const out = new Set<string>(['', '.', 'nope', 'a/nope', 'd/f2/x', '.meta', 'a\uD800', '\uFFFD/A', 'r0\u0000x']);
  for (const n of f.tree.nodes()) {
    out.add(n.relpath);
    out.add(n.relpath.slice(0, Math.max(0, n.relpath.lastIndexOf('/'))));
  }
  return [...out];
}

function open(media: Media, nativeTree: boolean): FamfsFs | string {
  try {
    return FamfsFs.open(media, { readOnly: true, nativeTree });
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
}

/**
 * Opens `media` both ways and compares them; then applies `more` crafted entries to both trees
 * and compares every change and the state after. `natMedia` (when given) is what the native side
 * opens: the same bytes on a real device. Returns false when neither side could open it.
 */
function compare(r: SeededRandom, b: Base, what: string, more: number, natMedia: Media = b.media): boolean {
  const nat = open(natMedia, true);
  const js = open(b.media, false);
  if (typeof nat === 'string' || typeof js === 'string') {
    assert.equal(nat, js, `${what}: opening failed one way only`);
    return false;
  }
  assert.equal(nat.tree.isNative, nativeTreeAvailable(), `${what}: the default open is native when the addon has the log tree`);
  assert.equal(js.tree.isNative, false, what);
  // Lookups first (objects made one at a time, from an untouched native tree), in a random order.
  const want = paths(js);
  const order = r.int(3);
  if (order === 0) for (const p of want) assert.deepEqual(proj(nat.tree.lookup(p)), proj(js.tree.lookup(p)), `${what}: lookup("${p}")`);
  if (order === 1) for (const [k] of js.tree.byIndex) assert.deepEqual(proj(nat.tree.byIndex.get(k)), proj(js.tree.byIndex.get(k)), `${what}: byIndex ${k}`);
  assert.deepEqual(state(nat), state(js), `${what}: trees differ`);
  for (const p of want) assert.deepEqual(proj(nat.tree.lookup(p)), proj(js.tree.lookup(p)), `${what}: lookup("${p}") after`);

  // More entries, applied one by one as a host catching up applies them.
  for (let k = 0; k < more; k++) {
    const index = js.tree.nextIndex;
    const live = [...js.tree.byIndex.values()];
    const body = craftedBody(r, b, live);
    // File type bits in the mode now and then (famfs keeps only the permission bits).
    if ((body.type === 'file' || body.type === 'mkdir') && r.int(3) === 0) body.mode |= r.pick([0o100000, 0o40000, 0o170000]);
    const entry: LogEntry = { index, seqnum: index, body };
    // Some directories' children made first: applied entries must keep those Maps current.
    if (r.int(2) === 0 && live.length > 0) {
      const d = nat.tree.lookup(r.pick(live).relpath);
      if (d?.kind === 'dir') void d.children.size;
    }
    const a: TreeChange | undefined = nat.tree.apply(entry);
    const j: TreeChange | undefined = js.tree.apply(entry);
    assert.deepEqual(projChange(a), projChange(j), `${what}: apply #${k} ${JSON.stringify(entry.body)}`);
  }
  if (more > 0) {
    assert.deepEqual(state(nat), state(js), `${what}: trees differ after ${more} more entries`);
    // famfs' own log has no gaps: both refuse an entry that skips one, with the same words.
    if (js.tree.generation === 0) {
      const wrong: LogEntry = { index: js.tree.nextIndex + 1, seqnum: 0, body: { type: 'mkdir', uid: 0, gid: 0, mode: 0o755, relpath: 'late' } };
      const refusal = (f: FamfsFs): string => {
        try {
          f.tree.apply(wrong);
        } catch (e) {
          return (e as Error).message;
        }
        return 'accepted';
      };
      const jsErr = refusal(js);
      assert.ok(jsErr.startsWith('tree expects entry'), `${what}: the JavaScript tree took an entry out of order: ${jsErr}`);
      assert.equal(refusal(nat), jsErr, `${what}: an entry out of order`);
    }
  }
  return true;
}

describe('famfs tree: the native log tree holds the same tree as JavaScript objects do', function () {
  this.timeout(600_000);

  it('this build has the native log tree (otherwise both sides below are the JavaScript tree)', () => {
    assert.equal(nativeTreeAvailable(), true);
  });

  it('intact logs (famfs-only, deletes and a quarantined entry, compacted twice): same tree, same after 40 more entries', () => {
    const r = seededRandom(0x7ee1);
    for (const b of [plainBase(), deletesBase(), compactedBase()]) assert.equal(compare(r, b, b.name, 40), true, b.name);
  });

  it('1,000 damaged logs: same tree both ways, and the same after more entries', () => {
    const r = seededRandom(0x7ee2);
    const bases = [plainBase(), deletesBase(), compactedBase()];
    let opened = 0;
    for (let run = 0; run < 1000; run++) {
      const b = bases[run % bases.length];
      b.media.buffer.set(b.pristine.subarray(b.logAt, b.logAt + DEFAULT_LOG_LEN), b.logAt);
      const what = `${b.name} run ${run} (seed ${r.seed}): ${damage(r, b, b.nodes)}`;
      if (compare(r, b, what, r.int(12))) opened++;
    }
    assert.ok(opened > 850, `only ${opened} of 1000 damaged logs opened`);
  });

  it('from a real device (the log read straight from the mapping): same tree, and an intact log is never copied out', () => {
    const r = seededRandom(0x7ee3);
    for (const b of [plainBase(), deletesBase(), compactedBase()]) {
      const name = `tree-native-${process.pid}-${b.name.replace(/\W/g, '')}`;
      const dev = createEmulatedDevice(name, SIZE);
      try {
        dev.write(0, b.pristine);
        let logCopies = 0;
        const counting: Media = {
          size: dev.size,
          nativeHandle: dev.nativeHandle,
          read: (o, l) => dev.read(o, l),
          readInto: (o, t) => {
            if (o >= b.logAt + 48 && o < b.logAt + DEFAULT_LOG_LEN) logCopies++;
            dev.readInto(o, t);
          },
          write: (o, d) => dev.write(o, d),
          flush: (o, l) => dev.flush(o, l),
          invalidate: (o, l) => dev.invalidate(o, l),
        };
        assert.equal(compare(r, b, `${b.name} on a device`, 0, counting), true);
        // The first delete entry is decoded by JavaScript, which asks whether the superblock
        // enables deletes (one chunk copied); nothing else is.
        const copies = b.nodes.length > 0 && b.name.startsWith('deletes') ? 1 : 0;
        assert.equal(logCopies, copies, `${b.name}: the intact log was read through a copy ${logCopies} times`);
        for (let run = 0; run < 100; run++) {
          b.media.buffer.set(b.pristine.subarray(b.logAt, b.logAt + DEFAULT_LOG_LEN), b.logAt);
          const what = `${b.name} on a device, run ${run} (seed ${r.seed}): ${damage(r, b, b.nodes)}`;
          dev.write(b.logAt, b.media.buffer.subarray(b.logAt, b.logAt + DEFAULT_LOG_LEN));
          compare(r, b, what, r.int(4), dev);
        }
      } finally {
        dev.close();
        removeEmulatedDevice(name);
      }
    }
  });
});
