/**
 * bench/famfs-core child: one full replay or one fsck of the filled device in this fresh process
 * (run.ts starts one per sample). Nothing is imported before the clock starts: the modules' load
 * is timed apart (loadCpu), so the op's figures are what a mount or a `famfs fsck` pays once its
 * code is loaded.
 */
import { performance } from 'perf_hooks';

export type ColdOp = 'replay' | 'replay-all' | 'replay-js' | 'fsck' | 'fsck-js';
export interface ColdSample {
  wall: number;
  cpu: number;
  loadCpu: number;
}
/** Child mode: one replay or fsck in this fresh process; modules are loaded first and timed apart. */
function coldChild(op: ColdOp, path: string, files: number): void {
  const cpu = (): number => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const c0 = cpu();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const famfs = require('../../pkg/famfs') as typeof import('../../pkg/famfs');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const device = require('../../pkg/device') as typeof import('../../pkg/device');
  device.loadNative();
  const loadCpu = cpu() - c0;
  const dev = device.openDevice(path, { readOnly: true });
  const s = performance.now();
  const c = cpu();
  if (op === 'replay' || op === 'replay-all' || op === 'replay-js') {
    // replay: the tree in the native log tree, node objects made when looked up; replay-all: and
    // then every node made (what a FUSE server's inode table asks for); replay-js: every node a
    // JavaScript object from the start (a build without the addon, and the replay before).
    const r = famfs.FamfsFs.open(dev, { readOnly: true, nativeTree: op !== 'replay-js' });
    if (r.tree.fileCount !== files) throw new Error(`replay saw ${r.tree.fileCount} files, want ${files}`);
    if (op === 'replay-all') {
      let n = 0;
      for (const node of r.tree.nodes()) if (node.kind === 'file') n++;
      if (n !== files) throw new Error(`replay made ${n} file nodes, want ${files}`);
    }
  } else {
    const rep = famfs.fsck(dev, { native: op === 'fsck' });
    if (!rep.clean || rep.files !== files) throw new Error(`fsck: ${rep.files} files, ${rep.errors.join('; ')}`);
  }
  const sample: ColdSample = { wall: performance.now() - s, cpu: cpu() - c, loadCpu };
  dev.close();
  process.stdout.write(JSON.stringify(sample));
}

if (require.main === module) coldChild(process.argv[2] as ColdOp, process.argv[3], Number(process.argv[4]));
