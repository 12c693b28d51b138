/**
 * A stand-in for a pod using a published famfs volume: a separate process in its own mount namespace
 * (private propagation, as a container's: re-mounts made at the host path later never reach it) that
 * writes and reads its volume's file in a loop, through one long-lived descriptor and through a fresh
 * open per round. It reports progress, the longest stall between two rounds, and the first error.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';

const BLOCK = 4096;
export const POD_BLOCK = BLOCK;

/** The bytes round `i` writes into block `i % blocks` (deterministic, so the parent can check the memory). */
export function podBlock(i: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  for (let off = 0; off < BLOCK; off += 8) {
    b.writeUInt32LE(i >>> 0, off);
    b.writeUInt32LE((i * 2654435761) >>> 0, off + 4);
  }
  return b;
}

// Runs in the child (node -e): argv = [file, blocks]. One line per event on stdout.
const LOOP = `
const fs = require('fs');
const [file, blocksArg] = process.argv.slice(1);
const blocks = Number(blocksArg);
${podBlock.toString()}
const BLOCK = ${BLOCK};
const POD_BLOCK = BLOCK;
let i = 0, last = Date.now(), maxGap = 0, maxGapAt = 0;
const keep = fs.openSync(file, 'r+');
const out = (s) => process.stdout.write(s + '\\n');
process.on('SIGTERM', () => { out('done ' + i + ' ' + maxGap + ' ' + maxGapAt); process.exit(0); });
out('ready');
function round() {
  const k = i % blocks;
  const want = podBlock(i);
  const got = Buffer.alloc(POD_BLOCK);
  try {
    // The long-lived descriptor (what a database pod holds), then a fresh open by path.
    fs.writeSync(keep, want, 0, POD_BLOCK, k * POD_BLOCK);
    const fd = fs.openSync(file, 'r');
    try { fs.readSync(fd, got, 0, POD_BLOCK, k * POD_BLOCK); } finally { fs.closeSync(fd); }
  } catch (e) {
    out('err ' + i + ' ' + (e.code || '') + ' ' + String(e.message).replace(/\\n/g, ' '));
    process.exit(1);
  }
  if (!got.equals(want)) { out('bad ' + i); process.exit(1); }
  const now = Date.now();
  if (now - last > maxGap) { maxGap = now - last; maxGapAt = i; }
  last = now;
  i++;
  if (i % 16 === 0) out('ok ' + i + ' ' + maxGap);
  // Yield between rounds so SIGTERM (the report) gets through.
  setImmediate(round);
}
round();
`;

export class PodIoLoop {
  readonly child: ChildProcess;
  private buf = '';
  rounds = 0;
  maxGapMs = 0;
  error: string | undefined;
  exited: string | undefined;
  final: { rounds: number; maxGapMs: number } | undefined;
  private ready = false;

  constructor(
    readonly file: string,
    readonly blocks: number,
  ) {
    this.child = spawn('unshare', ['--mount', '--propagation', 'private', process.execPath, '-e', LOOP, file, String(blocks)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.setEncoding('utf8');
    this.child.stdout?.on('data', (s: string) => {
      this.buf += s;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.line(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
    });
    this.child.stderr?.on('data', (s: Buffer) => (this.error ??= `stderr: ${s.toString().trim()}`));
    this.child.on('exit', (code, sig) => (this.exited = sig ?? String(code)));
  }

  private line(l: string): void {
    const [what, a, b, ...rest] = l.split(' ');
    if (what === 'ready') this.ready = true;
    else if (what === 'ok') {
      this.rounds = Number(a);
      this.maxGapMs = Number(b);
    } else if (what === 'done') this.final = { rounds: Number(a), maxGapMs: Number(b) };
    else if (what === 'err' || what === 'bad') this.error ??= `round ${a}: ${[b, ...rest].join(' ')}`.trim() || what;
  }

  async started(ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.ready && this.exited === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (!this.ready) throw new Error(`pod loop did not start: ${this.error ?? this.exited ?? 'timeout'}`);
  }

  /** Stops the loop; returns its final round count (every round before it succeeded) and longest stall. */
  async stop(): Promise<{ rounds: number; maxGapMs: number }> {
    if (this.exited === undefined) {
      const gone = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      await gone;
    }
    if (this.final === undefined) throw new Error(`pod loop ended without a report: ${this.error ?? this.exited ?? '?'}`);
    return this.final;
  }

  kill(): void {
    if (this.exited === undefined) this.child.kill('SIGKILL');
  }
}

/** Expected content of the file after `rounds` rounds of the loop (blocks never written stay as `initial`). */
export function podExpected(initial: Buffer, blocks: number, rounds: number): Buffer {
  const b = Buffer.from(initial);
  for (let k = 0; k < blocks && k < rounds; k++) {
    const lastRound = k + Math.floor((rounds - 1 - k) / blocks) * blocks;
    podBlock(lastRound).copy(b, k * POD_BLOCK);
  }
  return b;
}

/** Reads `len` bytes of a file straight from the emulated device's memory, through its extents. */
export function deviceBytes(devicePath: string, extents: { offset: number; len: number }[], len: number): Buffer {
  const out = Buffer.alloc(len);
  const fd = fs.openSync(devicePath, 'r');
  try {
    let done = 0;
    for (const e of extents) {
      if (done >= len) break;
      const n = Math.min(e.len, len - done);
      fs.readSync(fd, out, done, n, e.offset);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}
