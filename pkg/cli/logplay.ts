/**
 * `famfs logplay --dryrun` (what a host replaying the log would create) and `famfs check` (does a
 * mounted famfs show exactly what the log says). Both read only.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FamfsFs, TreeNode } from '../famfs';

export interface PlayedEntry {
  index: number;
  action: 'mkdir' | 'create';
  path: string;
  mode: string;
  uid: number;
  gid: number;
  size?: number;
}

export interface DryRun {
  /** The next log index: every entry below it was considered. */
  nextIndex: number;
  /** What a host would create, in log order (entries since deleted are not shown). */
  entries: PlayedEntry[];
  /** Entries a host would skip, and why (the tree never exposes them). */
  skipped: { index: number; message: string }[];
  /** Files deleted through the famfs-csi extension whose memory is not yet reusable. */
  pendingDeletes: number;
}

export function dryRun(fsys: FamfsFs): DryRun {
  const nodes = [...fsys.tree.nodes()].filter((n) => n.relpath !== '').sort((a, b) => a.index - b.index);
  return {
    nextIndex: fsys.tree.nextIndex,
    entries: nodes.map((n) => ({
      index: n.index,
      action: n.kind === 'dir' ? 'mkdir' : 'create',
      path: n.relpath,
      mode: `0${n.mode.toString(8)}`,
      uid: n.uid,
      gid: n.gid,
      ...(n.kind === 'file' ? { size: n.size } : {}),
    })),
    skipped: fsys.tree.problems.map((p) => ({ index: p.index, message: p.message })),
    pendingDeletes: fsys.tree.released.length,
  };
}

export function dryRunText(r: DryRun): string[] {
  const lines = r.entries.map((e) =>
    e.action === 'mkdir'
      ? `would mkdir  ${e.path}/ (${e.mode} ${e.uid}:${e.gid}) [log ${e.index}]`
      : `would create ${e.path} (${e.size} bytes, ${e.mode} ${e.uid}:${e.gid}) [log ${e.index}]`,
  );
  for (const s of r.skipped) lines.push(`would skip log entry ${s.index}: ${s.message}`);
  const files = r.entries.filter((e) => e.action === 'create').length;
  lines.push(
    `${r.entries.length - files} directories, ${files} files from log entries 0..${r.nextIndex - 1}; ${r.skipped.length} skipped (dry run: nothing changed)`,
  );
  return lines;
}

/** Differences between the mounted tree under `mountpoint` and the log's tree. */
export function checkMount(fsys: FamfsFs, mountpoint: string): { problems: string[]; files: number; directories: number } {
  const problems: string[] = [];
  let files = 0;
  let directories = 0;
  const visit = (n: TreeNode) => {
    const p = path.join(mountpoint, n.relpath);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch (e) {
      problems.push(`${n.relpath || '/'}: in the log (entry ${n.index}) but not in the mount (${(e as NodeJS.ErrnoException).code})`);
      return;
    }
    if (n.kind === 'dir') {
      directories += n.relpath === '' ? 0 : 1;
      if (!st.isDirectory()) {
        problems.push(`${n.relpath}: a directory in the log but not in the mount`);
        return;
      }
      const want = new Set(n.children.keys());
      for (const name of fs.readdirSync(p)) {
        if (n.relpath === '' && name === '.meta') continue; // famfs' metadata files
        if (!want.has(name)) problems.push(`${path.posix.join(n.relpath, name)}: in the mount but not in the log (deleted, or not from this device)`);
      }
      for (const c of n.children.values()) visit(c);
      return;
    }
    files++;
    if (!st.isFile()) problems.push(`${n.relpath}: a file in the log but not in the mount`);
    else if (st.size !== n.size) problems.push(`${n.relpath}: ${st.size} bytes in the mount, ${n.size} in the log`);
    if ((st.mode & 0o7777) !== n.mode || st.uid !== n.uid || st.gid !== n.gid) {
      problems.push(`${n.relpath}: mount shows 0${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}, the log 0${n.mode.toString(8)} ${n.uid}:${n.gid}`);
    }
  };
  visit(fsys.tree.root);
  return { problems, files, directories };
}
