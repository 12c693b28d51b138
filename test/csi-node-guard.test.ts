// The node plugin's read-only guard bookkeeping (pkg/csi/node-guard.ts): which famfs paths famfs-fused
// is told to refuse changes to, from the node's stagings and publishes, and when it is told. The
// end-to-end behaviour (real FUSE, real binds, a privileged writer) is in test/csi-share.test.ts and
// test/fuse-guard.test.ts; this checks the set itself over cases those do not build.
import { strict as assert } from 'assert';
import pino from 'pino';

import type { ReadOnlyGuard } from '../pkg/fuse/guard';
import { NodeGuardSync, type GuardRecord } from '../pkg/csi/node-guard';

function guardWith(records: [string, GuardRecord][] = []): { g: NodeGuardSync; sent: ReadOnlyGuard[]; reply: { code?: string } } {
  const sent: ReadOnlyGuard[] = [];
  const reply: { code?: string } = {};
  const g = new NodeGuardSync({
    send: (x) => {
      sent.push(x);
      return Promise.resolve(reply.code === undefined ? { ok: true } : { ok: false, code: reply.code, error: 'refused' });
    },
    records: () => Promise.resolve(records),
    log: pino({ level: 'silent' }),
    retryMs: 300,
  });
  return { g, sent, reply };
}

describe('node plugin: read-only guard bookkeeping', () => {
  it('guards read-only stagings and publishes; a read-write publish of the same path, or of a file below, lifts only that path', async () => {
    const { g, sent } = guardWith([
      ['/stage/share', { path: 'csi/src', readOnly: true }],
      ['/pods/a', { path: 'csi/src', readOnly: true }],
      ['/pods/rwo', { path: 'csi/other', readOnly: false }],
    ]);
    await g.sync(true);
    assert.deepEqual(sent, [{ readOnly: ['csi/src'], writable: [] }], 'a read-write volume nobody reads read-only is not in the set');
    await g.begin('/pods/m', 'models', true);
    await g.begin('/pods/w', 'models/w.bin', false);
    assert.deepEqual(g.current(), { readOnly: ['csi/src', 'models'], writable: ['models/w.bin'] });
    await g.begin('/pods/b', '/csi/src/', false);
    assert.deepEqual(g.current(), { readOnly: ['models'], writable: ['csi/src', 'models/w.bin'] });
    await g.drop('/pods/b');
    await g.drop('/pods/w');
    assert.deepEqual(g.current(), { readOnly: ['csi/src', 'models'], writable: [] });
    // Counted per path: one of two read-only targets going keeps the guard.
    await g.drop('/pods/a');
    assert.deepEqual(g.current().readOnly, ['csi/src', 'models']);
    await g.drop('/stage/share');
    assert.deepEqual(g.current().readOnly, ['models']);
    assert.deepEqual(sent.at(-1), g.current(), 'famfs-fused holds what the entries ask for');
  });

  it('sends nothing for read-write publishes no read-only path overlaps (the publish hot path)', async () => {
    const { g, sent } = guardWith([['/pods/ro', { path: 'csi/shared', readOnly: true }]]);
    await g.sync(true);
    const n = sent.length;
    for (let i = 0; i < 200; i++) await g.begin(`/pods/p${i}`, `csi/vol-${i}`, false);
    for (let i = 0; i < 200; i++) await g.drop(`/pods/p${i}`);
    assert.equal(sent.length, n);
    await g.begin('/pods/ro2', 'csi/shared', true);
    assert.equal(sent.length, n, 'a second read-only target of a guarded path changes nothing');
  });

  it('beginQuiet counts a bind at once only when famfs-fused needs to be told nothing; otherwise it changes nothing', async () => {
    const { g, sent } = guardWith([['/pods/ro', { path: 'csi/shared', readOnly: true }]]);
    assert.equal(g.beginQuiet('/pods/early', 'csi/early', false), undefined, 'before the records are loaded and sent');
    await g.sync(true);
    const n = sent.length;
    const held = g.current();
    const rw = g.beginQuiet('/pods/rw', 'csi/vol-1', false);
    assert.ok(rw !== undefined, 'a read-write bind no read-only path overlaps');
    assert.ok(g.beginQuiet('/pods/ro2', 'csi/shared', true) !== undefined, 'a second read-only target of a guarded path');
    assert.equal(g.beginQuiet('/pods/ro3', 'csi/new', true), undefined, 'a new read-only path must be sent first');
    assert.equal(g.beginQuiet('/pods/rw2', 'csi/shared', false), undefined, 'a read-write bind of a guarded path lifts the guard first');
    assert.deepEqual(g.current(), held);
    await g.sync();
    assert.equal(sent.length, n, 'the refused ones left nothing to send');
    // A quiet bind that fails goes away; one that succeeded is dropped like any other.
    await assert.rejects(rw.fail(new Error('mount failed')), /mount failed/);
    await g.drop('/pods/ro2');
    await g.drop('/pods/ro');
    assert.deepEqual(sent.at(-1), { readOnly: [], writable: [] }, 'the last read-only target lifts the guard (the entries were counted)');
  });

  it('a bind that fails puts the entry back; a refusal by famfs-fused fails the change with UNAVAILABLE and keeps nothing of it', async () => {
    const { g, sent, reply } = guardWith();
    const intent = await g.begin('/pods/x', 'csi/x', true);
    assert.deepEqual(sent.at(-1), { readOnly: ['csi/x'], writable: [] });
    await assert.rejects(intent.fail(new Error('mount failed')), /mount failed/);
    assert.deepEqual(sent.at(-1), { readOnly: [], writable: [] }, 'the guard follows the failed bind away');
    reply.code = 'EINVAL'; // a famfs-fused without the op
    await assert.rejects(g.begin('/pods/y', 'csi/y', true), (e: Error & { code?: number }) => /refused the read-only guard/.test(e.message) && e.code === 14);
    assert.deepEqual(g.current(), { readOnly: [], writable: [] });
    reply.code = 'EAGAIN'; // handing over, for longer than retryMs
    await assert.rejects(g.begin('/pods/y', 'csi/y', true), /within 300 ms/);
    g.close();
  });
});
