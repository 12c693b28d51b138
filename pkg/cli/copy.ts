/**
 * `famfs cp` planning: famfs' (and cp's) semantics for one or several sources and -r, decided
 * completely before the first byte is written.
 *
 *   cp FILE DEVICE DEST          DEST is an existing directory: DEST/basename(FILE); else DEST itself
 *   cp FILE... DEVICE DIR        several sources: DIR must be an existing directory
 *   cp -r SRCDIR DEVICE DEST     DEST an existing directory: DEST/basename(SRCDIR)/...; else DEST is
 *                                made as the copy of SRCDIR; existing directories are merged into
 *
 * Everything that can be refused is refused here (missing -r, empty or special source files, names
 * famfs cannot hold, a target that exists, not enough space or log entries), so a refusal writes
 * nothing. Copying itself can then only fail on I/O.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ALLOC_UNIT, checkRelpath, FamfsError, FamfsFs, InterleaveParams } from '../famfs';
import { UsageError } from './units';

export interface CopyFile {
  src: string;
  dest: string;
  size: number;
}

export interface CopyPlan {
  /** Directories to make, parents first. */
  dirs: string[];
  files: CopyFile[];
}

/** "" is the root of the file system; "." and "/" name it too. */
export function normalizeDest(dest: string): string {
  const d = dest.replace(/\/+$/, '');
  return d === '' || d === '.' ? '' : d;
}

function join(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

export function planCopy(fsys: FamfsFs, sources: string[], destArg: string, o: { recursive: boolean; interleave?: InterleaveParams }): CopyPlan {
  const dest = normalizeDest(destArg);
  if (dest !== '') checkRelpath(dest);
  const destNode = dest === '' ? fsys.tree.root : fsys.tree.lookup(dest);
  const destIsDir = destNode?.kind === 'dir';
  if (sources.length > 1 && !destIsDir) {
    throw new UsageError(
      `copying ${sources.length} sources needs an existing directory as the destination; "${destArg}" ${destNode ? 'is a file' : 'does not exist'} (famfs mkdir -p DEVICE ${destArg} first)`,
    );
  }
  const plan: CopyPlan = { dirs: [], files: [] };
  const problems: string[] = [];
  const seen = new Set<string>();
  const claim = (target: string, what: string) => {
    if (seen.has(target)) problems.push(`two sources would both become "${target}" (${what})`);
    seen.add(target);
  };

  const walk = (srcDir: string, target: string) => {
    const existing = fsys.tree.lookup(target);
    if (existing?.kind === 'file') problems.push(`"${target}" exists and is a file; ${srcDir} is a directory`);
    else if (!existing) {
      claim(target, srcDir);
      plan.dirs.push(target);
    }
    for (const ent of fs.readdirSync(srcDir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const src = path.join(srcDir, ent.name);
      const t = join(target, ent.name);
      if (ent.isDirectory()) walk(src, t);
      else if (ent.isFile()) addFile(src, t);
      else problems.push(`${src} is not a regular file or directory (famfs holds only files and directories)`);
    }
  };

  const addFile = (src: string, target: string) => {
    const st = fs.statSync(src);
    if (st.size === 0) {
      problems.push(`${src} is empty; famfs files have a fixed, non-zero size`);
      return;
    }
    const existing = fsys.tree.lookup(target);
    if (existing) {
      throw new FamfsError('EEXIST', `"${target}" already exists in famfs; famfs files cannot be overwritten (famfs rm it, or copy to another name)`);
    }
    claim(target, src);
    plan.files.push({ src, dest: target, size: st.size });
  };

  for (const src of sources) {
    const st = fs.statSync(src); // follows a symlink named on the command line, like cp
    const base = path.basename(path.resolve(src));
    if (st.isDirectory()) {
      if (!o.recursive) throw new UsageError(`${src} is a directory; use cp -r to copy a directory tree`);
      walk(src, destIsDir ? join(dest, base) : dest);
    } else if (st.isFile()) {
      addFile(src, destIsDir ? join(dest, base) : dest);
    } else {
      problems.push(`${src} is not a regular file or directory`);
    }
  }
  for (const t of [...plan.dirs, ...plan.files.map((f) => f.dest)]) {
    try {
      checkRelpath(t);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  if (problems.length > 0) throw new UsageError(`nothing copied:\n  ${problems.join('\n  ')}`);
  if (dest !== '' && !destNode) {
    // a new name (file or directory tree): its parent must exist, as for creat
    const parent = dest.includes('/') ? dest.slice(0, dest.lastIndexOf('/')) : '';
    if (parent !== '' && fsys.tree.lookup(parent)?.kind !== 'dir')
      throw new FamfsError('ENOENT', `parent directory "${parent}" does not exist (famfs mkdir -p DEVICE ${parent} first)`);
  }
  checkRoom(fsys, plan, o.interleave);
  return plan;
}

/** Enough log entries and free memory for the whole plan, so a copy does not stop half-way for space. */
function checkRoom(fsys: FamfsFs, plan: CopyPlan, interleave: InterleaveParams | undefined): void {
  const entries = plan.dirs.length + plan.files.length;
  const left = fsys.logEntriesLeft();
  if (entries > left) throw new FamfsError('ELOGFULL', `the copy needs ${entries} log entries but the famfs log has ${left} left; nothing copied`);
  fsys.reclaimReplayed();
  const need = plan.files.reduce((n, f) => n + Math.ceil(f.size / ALLOC_UNIT) * ALLOC_UNIT, 0);
  const free = fsys.usage().freeBytes;
  if (need > free) throw new FamfsError('ENOSPC', `the copy needs ${need} bytes of famfs memory but ${free} are free; nothing copied`);
  // the largest file must fit in one piece (or in its interleave), as creat would place it
  const largest = plan.files.reduce<CopyFile | undefined>((a, f) => (a === undefined || f.size > a.size ? f : a), undefined);
  if (largest) fsys.allocator.place(largest.size, interleave);
}
