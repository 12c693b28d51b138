// The record journal behind the node plugin's publish records (pkg/mount/record-journal.ts) and the
// store that migrates older plugins' files into it (pkg/mount/mount-records.ts): torn writes at every
// byte, damaged bytes, a writer process killed (SIGKILL) mid-append and mid-compaction, upgrades from
// 0.1.0's node-published.json and what a downgrade leaves. Plain files: no root needed.
import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseJournal, RecordJournal, encodeFrame, type JournalReport } from '../pkg/mount/record-journal';
import {
  NODE_PUBLISHED_FILE,
  NODE_PUBLISHED_JOURNAL,
  NODE_STATE_FILE,
  NodeStateStore,
  PUBLISHED_TOMBSTONE,
  readNodeRecords,
  validateNodeState,
  type PublishedVolume,
} from '../pkg/mount/mount-records';
import { StateFileError } from '../pkg/mount/state-file-error';
import { journalModel } from './helpers/journal-writer';
import { seededRandom } from './helpers/seeded-random';

interface Rec {
  v: number;
  pad: string;
}
const validate = (key: string, r: unknown): Rec => {
  if (typeof r !== 'object' || r === null || typeof (r as Rec).v !== 'number') throw new Error(`bad record ${key}`);
  return r as Rec;
};

type Op = { put: [string, Rec] } | { del: string };

function ops(seed: number, n: number, keys = 20): Op[] {
  const r = seededRandom(seed);
  return Array.from({ length: n }, (_, i) => {
    const k = `k${r.int(keys)}`;
    return r.next() < 0.3 ? { del: k } : { put: [k, { v: i, pad: 'x'.repeat(r.int(200)) }] };
  });
}

function apply(m: Map<string, Rec>, op: Op): Map<string, Rec> {
  const n = new Map(m);
  if ('put' in op) n.set(op.put[0], op.put[1]);
  else n.delete(op.del);
  return n;
}

async function run(j: RecordJournal<Rec>, op: Op): Promise<void> {
  if ('put' in op) await j.change(new Map([op.put]), []);
  else await j.change(new Map(), [op.del]);
}

const sorted = <T>(m: ReadonlyMap<string, T>): [string, T][] => [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

describe('record journal', function () {
  this.timeout(120_000);
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'journal-test-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('appends one frame per change, reads every change back, and compacts into a snapshot as it grows', async () => {
    const file = path.join(dir, 'j');
    const j = new RecordJournal<Rec>(file, { validate, durable: false, compactMinBytes: 4096 });
    j.reset(new Map());
    let model = new Map<string, Rec>();
    let maxSize = 0;
    let shrunk = 0;
    let last = fs.statSync(file).size;
    for (const op of ops(1, 2000)) {
      const before = fs.statSync(file).size;
      await run(j, op);
      model = apply(model, op);
      const size = fs.statSync(file).size;
      if (size < before) shrunk++;
      else if (!('del' in op && size === before)) assert.ok(size > before, 'a change appends');
      maxSize = Math.max(maxSize, size);
      last = size;
    }
    j.close();
    assert.ok(shrunk > 5, `compacted ${shrunk} times`);
    // A snapshot of ~20 records is a few KB: compaction keeps the file near twice that.
    assert.ok(maxSize < 64 * 1024, `the journal stayed small (max ${maxSize} bytes)`);
    const again = new RecordJournal<Rec>(file, { validate, durable: true });
    const report = again.open();
    assert.deepEqual(sorted(again.records), sorted(model));
    assert.equal(report.tornTail, undefined);
    assert.deepEqual(report.damage, []);
    assert.equal(report.bytes, last);
    // durable appends (fdatasync) read back the same way
    await again.change(new Map([['durable', { v: -1, pad: '' }]]), []);
    again.close();
    const third = new RecordJournal<Rec>(file, { validate, durable: false });
    third.open();
    assert.equal(third.records.get('durable')?.v, -1);
    third.close();
  });

  it('a write torn at any byte of its frame loads the records before it; the tail is cut off and the next change follows an intact frame', async () => {
    const file = path.join(dir, 'j');
    const j = new RecordJournal<Rec>(file, { validate, durable: false, compactMinBytes: 2048 });
    j.reset(new Map());
    let model = new Map<string, Rec>();
    let checked = 0;
    for (const [i, op] of ops(2, 120).entries()) {
      const before = fs.readFileSync(file);
      const modelBefore = model;
      await run(j, op);
      model = apply(model, op);
      const after = fs.readFileSync(file);
      // Only appends can tear (a compaction replaces the file by rename): every 10th change, every byte.
      if (i % 10 !== 0 || after.length <= before.length || !after.subarray(0, before.length).equals(before)) continue;
      const torn = path.join(dir, 'torn');
      for (let cut = before.length; cut < after.length; cut++) {
        fs.writeFileSync(torn, after.subarray(0, cut));
        const t = new RecordJournal<Rec>(torn, { validate, durable: false });
        const r = t.open();
        assert.deepEqual(sorted(t.records), sorted(modelBefore), `cut at ${cut} of ${after.length}: the records before the change`);
        assert.deepEqual(r.damage, [], 'a torn end is not damage in the middle');
        if (cut > before.length) assert.equal(r.tornTail?.offset, before.length, `cut at ${cut}: torn tail reported`);
        else assert.equal(r.tornTail, undefined);
        assert.equal(fs.statSync(torn).size, before.length, 'the torn frame was cut off');
        await t.change(new Map([['after-tear', { v: cut, pad: '' }]]), []);
        t.close();
        const u = new RecordJournal<Rec>(torn, { validate, durable: false });
        const r2 = u.open();
        u.close();
        assert.equal(r2.tornTail, undefined);
        assert.deepEqual(sorted(u.records), sorted(new Map([...modelBefore, ['after-tear', { v: cut, pad: '' }]])));
        checked++;
      }
    }
    j.close();
    assert.ok(checked > 500, `${checked} torn lengths checked`);
  });

  it('damage in the middle is reported, never skipped silently: the intact frames after it apply, and records written before it are dropped so none deleted in it comes back', async () => {
    const file = path.join(dir, 'j');
    const j = new RecordJournal<Rec>(file, { validate, durable: false, compactMinBytes: 1 << 20 });
    j.reset(new Map([['base', { v: 0, pad: '' }]]));
    await j.change(new Map([['a', { v: 1, pad: '' }]]), []);
    await j.change(new Map([['b', { v: 2, pad: '' }]]), []);
    const beforeDel = fs.statSync(file).size;
    await j.change(new Map(), ['a']); // the frame that will be damaged
    const afterDel = fs.statSync(file).size;
    await j.change(new Map([['c', { v: 3, pad: '' }]]), []);
    await j.change(new Map([['b', { v: 4, pad: '' }]]), []);
    j.close();
    const good = fs.readFileSync(file);
    const bad = Buffer.from(good);
    bad[beforeDel + 14] = (bad[beforeDel + 14] ?? 0) ^ 0x20; // a bit inside the delete's payload
    fs.writeFileSync(file, bad);
    const d = new RecordJournal<Rec>(file, { validate, durable: false });
    const r = d.open();
    assert.equal(r.damage.length, 1, JSON.stringify(r));
    assert.equal(r.damage[0]?.offset, beforeDel);
    assert.equal(r.damage[0]?.bytes, afterDel - beforeDel);
    assert.match(r.damage[0]?.reason ?? '', /CRC/);
    assert.equal(d.records.has('a'), false, 'the record the damaged frame deleted does not come back');
    assert.equal(d.records.has('base'), false, 'written before the damage: uncertain, dropped');
    assert.deepEqual(r.uncertain, ['a', 'base']);
    assert.deepEqual(sorted(d.records), [
      ['b', { v: 4, pad: '' }],
      ['c', { v: 3, pad: '' }],
    ]);
    assert.ok(r.damagedCopy !== undefined && fs.readFileSync(r.damagedCopy).equals(bad), 'the damaged file is kept for inspection');
    d.close();
    // Rewritten as a snapshot: the damage is reported once.
    const e = new RecordJournal<Rec>(file, { validate, durable: false });
    const r2 = e.open();
    e.close();
    assert.deepEqual(r2.damage, []);
    assert.deepEqual(sorted(e.records), sorted(d.records));
  });

  it('random damage (flipped bits, zeroed ranges, frames cut out): the tail is reported as torn or the damage as damage; no record comes back or takes an old value', async () => {
    const file = path.join(dir, 'j');
    const j = new RecordJournal<Rec>(file, { validate, durable: false, compactMinBytes: 1 << 20 });
    j.reset(new Map());
    const sizes: number[] = [fs.statSync(file).size];
    const models: Map<string, Rec>[] = [new Map<string, Rec>()];
    for (const op of ops(3, 60, 12)) {
      await run(j, op);
      models.push(apply(models[models.length - 1] ?? new Map(), op));
      sizes.push(fs.statSync(file).size);
    }
    j.close();
    const good = fs.readFileSync(file);
    const final = models[models.length - 1] ?? new Map<string, Rec>();
    const r = seededRandom(4);
    let tails = 0;
    let middles = 0;
    for (let trial = 0; trial < 400; trial++) {
      const bad = Buffer.from(good);
      const kind = trial % 3;
      let damaged: Buffer = bad;
      // Every fifth trial hits the last frame (a torn-looking end), the others anywhere.
      const lastFrame = sizes[sizes.length - 2] ?? 0;
      const at = trial % 5 === 4 ? lastFrame + r.int(good.length - lastFrame) : r.int(good.length);
      if (kind === 0) bad[at] = (bad[at] ?? 0) ^ (1 << r.int(8));
      else if (kind === 1) bad.fill(0, at, Math.min(good.length, at + 1 + r.int(64)));
      else {
        // cut one whole frame out (no damaged byte left): only the sequence numbers show it
        const f = 1 + r.int(sizes.length - 2);
        const s0 = sizes[f] ?? 0;
        const s1 = sizes[f + 1] ?? 0;
        if (s1 === s0) continue;
        damaged = Buffer.concat([good.subarray(0, s0), good.subarray(s1)]);
      }
      fs.writeFileSync(file, damaged);
      const d = new RecordJournal<Rec>(file, { validate, durable: false });
      let rep: JournalReport;
      try {
        rep = d.open();
      } finally {
        d.close();
      }
      const got = new Map(d.records);
      if (rep.damage.length === 0) {
        // Only the end was hit: the records of some earlier prefix of the changes, reported as torn
        // (or not at all when the last frames were cut out whole: a shorter journal).
        const end = rep.tornTail?.offset ?? damaged.length;
        if (rep.tornTail === undefined) assert.equal(kind, 2, `trial ${trial}: damage neither torn tail nor middle`);
        const prefix = sizes.indexOf(end);
        assert.ok(prefix >= 0, `trial ${trial}: torn tail at a frame boundary`);
        assert.deepEqual(sorted(got), sorted(models[prefix] ?? new Map()), `trial ${trial}`);
        tails++;
      } else {
        // Whatever survives is the latest value of a live record: nothing deleted comes back, no old value.
        for (const [k, v] of got) {
          const latest = rep.tornTail === undefined ? final.get(k) : undefined;
          if (rep.tornTail === undefined) assert.deepEqual(v, latest, `trial ${trial}: ${k} is current`);
          else
            assert.ok(
              models.some((m) => m.get(k)?.v === v.v),
              `trial ${trial}: ${k} was written`,
            );
        }
        middles++;
      }
    }
    assert.ok(tails > 10 && middles > 100, `tails ${tails}, middles ${middles}`);
  });

  it('a crash during compaction leaves the old journal: a half-written or complete temp snapshot is ignored and removed', () => {
    const file = path.join(dir, 'j');
    const j = new RecordJournal<Rec>(file, { validate, durable: false });
    j.reset(new Map([['old', { v: 1, pad: '' }]]));
    j.close();
    const snap = encodeFrame({ v: 1, q: 2, snap: { new: { v: 2, pad: '' } } });
    fs.writeFileSync(path.join(dir, `.j.${process.pid}.0.tmp`), snap.subarray(0, 20));
    fs.writeFileSync(path.join(dir, `.j.99999.7.tmp`), snap);
    const k = new RecordJournal<Rec>(file, { validate, durable: false });
    const r = k.open();
    k.close();
    assert.deepEqual(sorted(k.records), [['old', { v: 1, pad: '' }]]);
    assert.deepEqual(r.damage, []);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['j']);
  });

  it('refuses a journal of a newer format (EVERSION) instead of misreading it', () => {
    const buf = encodeFrame({ v: 2, q: 1, snap: {} });
    assert.throws(
      () => parseJournal(buf, validate),
      (e: unknown) => e instanceof StateFileError && e.code === 'EVERSION',
    );
  });
});

describe('node publish records: journal, crash safety and upgrades', function () {
  this.timeout(300_000);
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-records-test-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const rec = (target: string, volumeId = 'vol-1'): PublishedVolume => ({
    volumeId,
    targetPath: target,
    source: '/stage/v1',
    stagingPath: '/stage/v1',
    kind: 'mount',
    readOnly: false,
    accessMode: 'SINGLE_NODE_WRITER',
    flags: [],
    publishedAt: 'now',
  });
  /** node-published.json exactly as famfs-csi 0.1.0 wrote it. */
  const write010 = (published: Record<string, PublishedVolume>): void =>
    fs.writeFileSync(path.join(dir, NODE_PUBLISHED_FILE), JSON.stringify({ version: 1, published }, null, 2) + '\n');

  async function loaded(): Promise<{ store: NodeStateStore; keys: string[] }> {
    const store = new NodeStateStore(dir);
    const doc = await store.load();
    store.close();
    return { store, keys: Object.keys(doc.published).sort() };
  }

  it("migrates 0.1.0's node-published.json into the journal and leaves a tombstone that 0.1.0's reader refuses", async () => {
    write010({ '/pods/a': rec('/pods/a'), '/pods/b': rec('/pods/b') });
    fs.writeFileSync(path.join(dir, NODE_STATE_FILE), JSON.stringify({ version: 1, staged: {}, published: {} }));
    const { store, keys } = await loaded();
    assert.deepEqual(keys, ['/pods/a', '/pods/b']);
    assert.equal(store.publishedReport.migratedFrom, `${NODE_PUBLISHED_FILE} (version 1)`);
    assert.ok(fs.existsSync(path.join(dir, NODE_PUBLISHED_JOURNAL)));
    const tomb: unknown = JSON.parse(fs.readFileSync(path.join(dir, NODE_PUBLISHED_FILE), 'utf8'));
    assert.deepEqual(tomb, PUBLISHED_TOMBSTONE);
    // 0.1.0 validates node-published.json with this same function (as {...doc, staged: {}}).
    assert.throws(
      () => validateNodeState({ ...(tomb as object), staged: {} }),
      (e: unknown) => e instanceof StateFileError && e.code === 'EVERSION',
    );
    // Changes go to the journal from now on; the tombstone stays as it is.
    const s = new NodeStateStore(dir);
    await s.update((d) => {
      delete d.published['/pods/a'];
      d.published['/pods/c'] = rec('/pods/c');
    });
    s.close();
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, NODE_PUBLISHED_FILE), 'utf8')), PUBLISHED_TOMBSTONE);
    const again = await loaded();
    assert.deepEqual(again.keys, ['/pods/b', '/pods/c']);
    assert.equal(again.store.publishedReport.migratedFrom, undefined);
  });

  it('a crash during the migration (journal written, document not yet replaced) migrates again to the same records', async () => {
    write010({ '/pods/a': rec('/pods/a') });
    const s = new NodeStateStore(dir);
    await s.load();
    s.close();
    write010({ '/pods/a': rec('/pods/a') }); // the state between the journal's rename and the tombstone's
    assert.deepEqual((await loaded()).keys, ['/pods/a']);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, NODE_PUBLISHED_FILE), 'utf8')), PUBLISHED_TOMBSTONE);
  });

  it("after a downgrade (0.1.0 ran and rewrote node-published.json) the next upgrade takes that document's records, not the stale journal's", async () => {
    const s = new NodeStateStore(dir);
    await s.update((d) => {
      d.published['/pods/a'] = rec('/pods/a');
      d.published['/pods/b'] = rec('/pods/b');
    });
    s.close();
    // 0.1.0 starts: refuses the tombstone, drops it, writes an empty version 1 document (load), then
    // unpublishes /pods/a without a record and publishes /pods/z (its writes).
    write010({});
    write010({ '/pods/z': rec('/pods/z') });
    const { store, keys } = await loaded();
    assert.deepEqual(keys, ['/pods/z'], 'neither /pods/a (unpublished while downgraded) nor /pods/b comes back');
    assert.equal(store.publishedReport.migratedFrom, `${NODE_PUBLISHED_FILE} (version 1)`);
    // 0.1.0 started and did nothing but its load: an empty document, so the journal's records are dropped too.
    const t = new NodeStateStore(dir);
    await t.update((d) => {
      d.published['/pods/q'] = rec('/pods/q');
    });
    t.close();
    write010({});
    assert.deepEqual((await loaded()).keys, []);
  });

  it('records of plugins before 0.1.0 (inside node-state.json) are migrated and removed from it; an unreadable document is dropped with the reason', async () => {
    fs.writeFileSync(path.join(dir, NODE_STATE_FILE), JSON.stringify({ version: 1, staged: {}, published: { '/pods/p2': rec('/pods/p2', 'vol-2') } }));
    const { store, keys } = await loaded();
    assert.deepEqual(keys, ['/pods/p2']);
    assert.equal(store.publishedReport.migratedFrom, NODE_STATE_FILE);
    assert.deepEqual((JSON.parse(fs.readFileSync(path.join(dir, NODE_STATE_FILE), 'utf8')) as { published: unknown }).published, {});
    fs.writeFileSync(path.join(dir, NODE_PUBLISHED_FILE), '{"version":1,"publ');
    const b = await loaded();
    assert.deepEqual(b.keys, []);
    assert.match(b.store.publishedDropped ?? '', /not valid JSON/);
  });

  it('readNodeRecords (csi-rebuild-state) reads what a load would, and writes nothing', async () => {
    write010({ '/pods/a': rec('/pods/a') });
    fs.writeFileSync(
      path.join(dir, NODE_STATE_FILE),
      JSON.stringify({
        version: 1,
        staged: { '/st/1': { volumeId: 'vol-1', stagingPath: '/st/1', famfsMount: '/m', readOnly: false, accessMode: 'SINGLE_NODE_WRITER', stagedAt: 'now' } },
        published: {},
      }),
    );
    const listing = (): string[] => fs.readdirSync(dir).map((n) => `${n}:${fs.readFileSync(path.join(dir, n)).toString('base64')}`);
    const before = listing();
    const r = readNodeRecords(dir);
    assert.deepEqual(listing(), before, 'nothing written');
    assert.deepEqual(Object.keys(r.published), ['/pods/a']);
    assert.deepEqual(Object.keys(r.staged), ['/st/1']);
    const s = new NodeStateStore(dir);
    await s.update((d) => {
      d.published['/pods/b'] = rec('/pods/b');
    });
    s.close();
    assert.deepEqual(Object.keys(readNodeRecords(dir).published).sort(), ['/pods/a', '/pods/b']);
  });

  it('a writer killed (SIGKILL) at random points, mid-append and mid-compaction, loads to the records before or after its call in flight, every time', async () => {
    const writer = path.join(__dirname, 'helpers', 'journal-writer.js');
    const seed = Number(process.env['JOURNAL_KILL_SEED'] ?? Date.now() % 100_000);
    const r = seededRandom(seed);
    let done = 0;
    let model = new Map<string, PublishedVolume>();
    let tornTails = 0;
    let midCompaction = 0;
    const kills = Number(process.env['JOURNAL_KILLS'] ?? 30);
    for (let k = 0; k < kills; k++) {
      const child = spawn(process.execPath, [writer, dir, String(seed), String(done), '1000000', '512'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      const target = 1 + r.int(300);
      const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      await new Promise<void>((resolve) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          // Kill once it acknowledged `target` changes: it is somewhere in a later one by then.
          if ((out.match(/^ack /gm)?.length ?? 0) >= target) {
            child.kill('SIGKILL');
            resolve();
          }
        });
        child.on('close', () => resolve());
      });
      await exited;
      assert.equal(child.signalCode, 'SIGKILL', `writer ended by itself: ${err}`);
      const acks = [...out.matchAll(/^ack (\d+)$/gm)].map((m) => Number(m[1]));
      const lastAck = acks.length > 0 ? Math.max(...acks) : done - 1;
      assert.ok(
        acks.every((a, i) => a === done + i),
        'acknowledged in order',
      );
      // Acknowledged: changes < lastAck + 1. In flight: lastAck + 1 (written or not).
      const older = journalModel(seed, lastAck + 1, model, done);
      const newer = journalModel(seed, lastAck + 2, older, lastAck + 1);
      if (fs.readdirSync(dir).some((n) => n.endsWith('.tmp'))) midCompaction++;
      const readOnly = readNodeRecords(dir).published;
      const store = new NodeStateStore(dir);
      const doc = await store.load();
      store.close();
      const report = store.publishedReport.journal;
      assert.ok(report !== undefined && report.damage.length === 0, `kill ${k}: no damage: ${JSON.stringify(report)}`);
      if (report.tornTail !== undefined) tornTails++;
      const got = sorted(new Map(Object.entries(doc.published)));
      assert.deepEqual(sorted(new Map(Object.entries(readOnly))), got, `kill ${k}: the read-only reader sees what the load sees`);
      const isOlder = JSON.stringify(got) === JSON.stringify(sorted(older));
      const isNewer = JSON.stringify(got) === JSON.stringify(sorted(newer));
      assert.ok(isOlder || isNewer, `kill ${k} (seed ${seed}, after ack ${lastAck}): records are neither before nor after change ${lastAck + 1}`);
      model = isNewer ? newer : older;
      done = isNewer ? lastAck + 2 : lastAck + 1;
      assert.deepEqual(
        fs.readdirSync(dir).filter((n) => n.endsWith('.tmp')),
        [],
        'no temp file of a compaction left after a load',
      );
    }
    assert.ok(done > kills, `${done} changes made over ${kills} kills`);
    assert.ok(model.size > 0, 'the run left records to check');
    console.log(`      ${kills} kills (seed ${seed}), ${done} changes, ${tornTails} torn tails, ${midCompaction} killed mid-compaction (temp file left)`);
  });
});
