/**
 * Guest helper: asks the host agent to compare a famfs file's extents, as `famfs ls --json`
 * reports them, with the bytes the file should hold. Prints one result per extent.
 *
 *   node host-verify-file.js LS_JSON_FILE RELPATH EXPECTED_FILE RESULT_NAME
 */
import * as fs from 'fs';

import { hostVerify, result, runGuestCheck } from './report.js';

interface LsExtent {
  offset: number;
  len: number;
}
interface LsEntry {
  path: string;
  type: string;
  size?: number;
  extents?: LsExtent[];
}

function parseLs(text: string): LsEntry[] {
  const doc: unknown = JSON.parse(text);
  const entries = (doc as { entries?: unknown }).entries;
  if (!Array.isArray(entries)) throw new Error('famfs ls --json: no entries array');
  return entries as LsEntry[];
}

runGuestCheck(async (ctx) => {
  const [lsFile, relpath, expectedFile, name] = process.argv.slice(2);
  if (lsFile === undefined || relpath === undefined || expectedFile === undefined || name === undefined) {
    throw new Error('usage: host-verify-file LS_JSON RELPATH EXPECTED NAME');
  }
  const entry = parseLs(fs.readFileSync(lsFile, 'utf8')).find((e) => e.path === relpath);
  const expected = fs.readFileSync(expectedFile);
  if (entry?.extents === undefined || entry.size !== expected.length) {
    result(ctx, name, 'fail', `${relpath}: not a file of ${expected.length} bytes in famfs ls (${JSON.stringify(entry)})`);
    return;
  }
  // Walk the file's bytes across its extents in order (famfs' simple extent list, no interleave).
  let pos = 0;
  for (const [i, ext] of entry.extents.entries()) {
    if (pos >= expected.length) break;
    const n = Math.min(ext.len, expected.length - pos);
    try {
      const answer = await hostVerify(ctx, `${name}-${i}`, ext.offset, expected.subarray(pos, pos + n));
      result(ctx, `${name}-extent${i}`, 'ok', `${relpath} [${pos}, ${pos + n}) at devdax 0x${ext.offset.toString(16)}: ${answer}`);
    } catch (e) {
      result(ctx, `${name}-extent${i}`, 'fail', `${relpath} extent ${i}: ${e instanceof Error ? e.message : String(e)}`);
    }
    pos += n;
  }
});
