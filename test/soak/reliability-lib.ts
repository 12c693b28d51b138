// Small tools the reliability and security tests share: raw log surgery on the shared device (the
// way a torn write or a flipped bit would leave it), the famfs CLI as a real process, a node
// plugin's FUSE server status, and polling.
import { spawnSync } from 'child_process';
import * as path from 'path';
import type { DaxDevice } from '../../pkg/device';
import { encodeEntry, encodeLogCounters, entryOffset, LE, LH, LOG_OFFSET, type EntryBody } from '../../pkg/famfs/layout';
import type { NodePlugin } from '../helpers/node-env';

/** dist/test/soak → dist/cmd */
export const FAMFS_CLI = path.join(__dirname, '..', '..', 'cmd', 'famfs.js');
export const CSI_MAIN = path.join(__dirname, '..', '..', 'cmd', 'famfs-csi.js');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it returns true (or a truthy value) or `ms` pass; returns the last value. */
export async function waitFor<T>(cond: () => Promise<T> | T, ms: number, stepMs = 50): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v || Date.now() >= deadline) return v;
    await sleep(stepMs);
  }
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the famfs CLI as users do, as the host with system UUID `uuid`. */
export function famfsCli(args: string[], uuid: string): CliResult {
  const r = spawnSync(process.execPath, [FAMFS_CLI, ...args], { encoding: 'utf8', env: { ...process.env, FAMFS_SYSTEM_UUID: uuid }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export interface FsckJson {
  clean: boolean;
  errors: string[];
  warnings: string[];
  log?: { entriesUsed: number; replayedEntries: number };
  files: number;
}

/** `famfs fsck --json`: the parsed report and the exit status. */
export function fsckCli(device: string, uuid: string): { status: number | null; report: FsckJson } {
  const r = famfsCli(['fsck', '--json', device], uuid);
  return { status: r.status, report: JSON.parse(r.stdout) as FsckJson };
}

/** The log header's raw 48 bytes and its counters, read past any stale CPU lines. */
export function rawHeader(device: DaxDevice): { raw: Buffer; nextIndex: number } {
  device.invalidate(LOG_OFFSET, LH.SIZE);
  const raw = device.read(LOG_OFFSET, LH.SIZE);
  return { raw, nextIndex: Number(raw.readBigUInt64LE(LH.nextIndex)) };
}

export function writeFlushed(device: DaxDevice, offset: number, data: Buffer): void {
  device.write(offset, data);
  device.flush(offset, data.length);
}

export function entryAt(device: DaxDevice, index: number): Buffer {
  const off = LOG_OFFSET + entryOffset(index);
  device.invalidate(off, LE.SIZE);
  return device.read(off, LE.SIZE);
}

export function putEntry(device: DaxDevice, index: number, raw: Buffer): void {
  writeFlushed(device, LOG_OFFSET + entryOffset(index), raw);
}

/** Sets next_seqnum/next_index as an append does (after its entries are in place). */
export function setCounters(device: DaxDevice, nextIndex: number): void {
  writeFlushed(device, LOG_OFFSET + LH.nextSeqnum, encodeLogCounters(nextIndex, nextIndex));
}

/**
 * Appends entries the way a master whose writes were damaged in flight would: the (possibly
 * corrupted) bytes go to their slots first, then the counters move past them. Returns the first
 * index used.
 */
export function appendRaw(device: DaxDevice, raws: Buffer[]): number {
  const first = rawHeader(device).nextIndex;
  raws.forEach((r, k) => putEntry(device, first + k, r));
  setCounters(device, first + raws.length);
  return first;
}

export function encode(index: number, body: EntryBody): Buffer {
  return encodeEntry(index, body);
}

/** A copy of `raw` with byte `pos` XOR `mask` (mask != 0). */
export function flipped(raw: Buffer, pos: number, mask: number): Buffer {
  const b = Buffer.from(raw);
  b[pos] = (b[pos] ?? 0) ^ (mask & 0xff || 1);
  return b;
}

/** A copy of `raw` whose bytes from `at` on are what the slot held before (a write torn at `at`). */
export function torn(raw: Buffer, before: Buffer, at: number): Buffer {
  const b = Buffer.from(raw);
  before.copy(b, at, at);
  return b;
}

export interface FuseStatus {
  logIndex: number;
  failed: boolean;
  failureMessage: string | null;
  serving: boolean;
  replayStop: { index: number; reason: string } | null;
  /** Entries the server replayed and then found rewritten (issue 10). */
  rewrittenEntries: { index: number; nowValid: boolean; servedPath: string | null }[];
  pid: number;
}

/** The node plugin's FUSE server status over its control socket. */
export async function fuseStatus(p: NodePlugin): Promise<FuseStatus> {
  const node = p.driver.node;
  if (node === undefined) throw new Error(`${p.nodeId} runs no Node service`);
  const r = await node.fuse.control({ op: 'status' });
  if (!r.ok) throw new Error(`status: ${r.error}`);
  return r as unknown as FuseStatus;
}

/** Asks the server to replay now; returns the reply (ok:false when the header is unreadable). */
export async function fuseCatchup(p: NodePlugin): Promise<Record<string, unknown>> {
  const node = p.driver.node;
  if (node === undefined) throw new Error(`${p.nodeId} runs no Node service`);
  return await node.fuse.control({ op: 'catchup' });
}

/** errno name of a synchronous fs call, or 'OK'. */
export function errnoOf(fn: () => unknown): string {
  try {
    fn();
    return 'OK';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}
