/**
 * Writes test/vectors/famfs-csi-compacted: a device this project's writer made, used and compacted
 * twice (generation 2, back in famfs' own log region), with entries appended after the last switch.
 * famfs-compacted-vector.test.ts reads it with the current code: a later change that misreads a
 * device an earlier release compacted fails there. Run only when the compacted format changes on
 * purpose, with a new revision, and keep the old vector beside the new one:
 *
 *     npm run build && node dist/test/vectors/make-compacted.js
 */
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { FamfsFs, fmapExtents, readActiveLog, TreeNode } from '../../pkg/famfs';
import { freshFamfs, MASTER_UUID } from '../helpers/famfs-image';

const MiB = 1 << 20;
const OUT = path.resolve(__dirname, '..', '..', '..', 'test', 'vectors', 'famfs-csi-compacted');

/** Every live node as the test compares it: log index, path, kind, size, extents. */
export function describeNode(n: TreeNode): string {
  const owner = `${(n.mode & 0o7777).toString(8)} ${n.uid}:${n.gid}`;
  return n.kind === 'file'
    ? `${n.index} file ${n.relpath} ${owner} ${n.size} ${fmapExtents(n.fmap)
        .map((e) => `${e.offset}+${e.len}`)
        .join(',')}`
    : `${n.index} dir ${n.relpath} ${owner}`;
}

function churn(f: FamfsFs, tag: string, cycles: number): void {
  for (let i = 0; i < cycles; i++) {
    f.mkdir(`${tag}${i}`);
    f.creat(`${tag}${i}/data`, 2 * MiB);
    f.rm(`${tag}${i}/data`);
    f.rm(`${tag}${i}`);
  }
}

function main(): void {
  const { media, fs: f } = freshFamfs({ size: 64 * MiB, now: () => Date.UTC(2026, 10, 30) });
  f.mkdir('csi');
  f.mkdir('csi/vol-a');
  f.creat('csi/vol-a/data', 4 * MiB, { mode: 0o666 });
  f.creat('model.bin', 6 * MiB, { mode: 0o444 });
  churn(f, 'x', 5);
  f.compact();
  f.mkdir('csi/vol-b');
  f.creat('csi/vol-b/data', 2 * MiB, { mode: 0o640, uid: 1000, gid: 2000 });
  churn(f, 'y', 4);
  f.rm('model.bin');
  f.compact();
  f.creat('after-switch', 2 * MiB);
  const active = readActiveLog(media, f.superblock.uuid);
  const manifest = {
    note: 'written by test/vectors/make-compacted.ts (famfs-csi); the device image is device.bin.gz (the first 64 MiB, all of it)',
    masterUuid: MASTER_UUID,
    fsUuid: f.superblock.uuid,
    superblockVersion: f.superblock.version.toString(),
    generation: active.generation,
    activeLogOffset: active.offset,
    altOffset: active.altOffset,
    nextIndex: f.tree.nextIndex,
    nodes: [...f.tree.nodes()].map(describeNode).sort(),
  };
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(path.join(OUT, 'device.bin.gz'), zlib.gzipSync(media.buffer, { level: 9 }));
  fs.writeFileSync(path.join(OUT, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  process.stdout.write(`wrote ${OUT}: generation ${active.generation}, ${manifest.nodes.length} nodes, next index ${manifest.nextIndex}\n`);
}

if (require.main === module) main();
