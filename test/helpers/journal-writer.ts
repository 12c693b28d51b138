// A node plugin's publish records changed in a tight loop, in a process of its own, so that a test can
// kill it (SIGKILL) at any point: mid-append, mid-compaction, between calls. The changes are a
// deterministic function of (seed, index); after each acknowledged change the process prints
// `ack <index>` on stdout.
//
//   node journal-writer.js STATE_DIR SEED START COUNT COMPACT_MIN_BYTES
import * as fs from 'fs';
import { NodeStateStore, type PublishedVolume } from '../../pkg/mount/mount-records';
import { seededRandom } from './seeded-random';

/** Keys the changes draw from: few, so that puts replace and deletes hit. */
export const JOURNAL_KEYS = 40;

export type JournalOp = { put: PublishedVolume } | { del: string };

/** The index-th change of a run with this seed. */
export function journalOp(seed: number, index: number): JournalOp {
  const r = seededRandom((seed * 1_000_003 + index) >>> 0);
  const key = `/kubelet/pods/p${r.int(JOURNAL_KEYS)}/volumes/mount`;
  if (r.next() < 0.35) return { del: key };
  return {
    put: {
      volumeId: `vol-${index.toString(16).padStart(8, '0')}`,
      targetPath: key,
      source: `/kubelet/plugins/node/vol-${index}/globalmount`,
      stagingPath: `/kubelet/plugins/node/vol-${index}/globalmount`,
      kind: r.next() < 0.5 ? 'mount' : 'block',
      readOnly: r.next() < 0.3,
      accessMode: 'SINGLE_NODE_WRITER',
      flags: [],
      publishedAt: `change ${index}`,
    },
  };
}

/** The publish records after changes [0, n) of a run. */
export function journalModel(seed: number, n: number, from: Map<string, PublishedVolume> = new Map(), start = 0): Map<string, PublishedVolume> {
  const m = new Map(from);
  for (let i = start; i < n; i++) {
    const op = journalOp(seed, i);
    if ('put' in op) m.set(op.put.targetPath, op.put);
    else m.delete(op.del);
  }
  return m;
}

async function main(): Promise<void> {
  const [dir, seed, start, count, compactMin] = process.argv.slice(2);
  if (dir === undefined || compactMin === undefined) throw new Error('usage: journal-writer STATE_DIR SEED START COUNT COMPACT_MIN_BYTES');
  const store = new NodeStateStore(dir, { compactMinBytes: Number(compactMin) });
  await store.load();
  fs.writeSync(1, 'ready\n');
  const end = Number(start) + Number(count);
  for (let i = Number(start); i < end; i++) {
    const op = journalOp(Number(seed), i);
    await store.update((d) => {
      if ('put' in op) d.published[op.put.targetPath] = op.put;
      else delete d.published[op.del];
    });
    fs.writeSync(1, `ack ${i}\n`);
  }
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
