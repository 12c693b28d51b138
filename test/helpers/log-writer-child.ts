/**
 * Starting test/helpers/log-writer.js as a child and reading what it printed: the one way
 * test/famfs-writelock.test.ts and the devdax guest's writelock checks run it.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as path from 'path';

export const LOG_WRITER = path.join(__dirname, 'log-writer.js');

/** One JSON line log-writer printed: a write it believes done, an epoch it was handed, an error, or its end. */
export interface WriterLine {
  op: string;
  relpath?: string;
  index?: number;
  extents?: [number, number][];
  code?: string;
  message?: string;
  locked?: number;
  epoch?: number;
}

export interface WriterRun {
  child: ChildProcess;
  /** Resolves once the child says it is ready ({"op":"ready"}, or "locked" from `hold`), or has exited. */
  ready: Promise<void>;
  /** Resolves when the child exits; its exit code is for the caller to assert. */
  done: Promise<{ code: number | null; lines: WriterLine[]; err: string }>;
}

/** The plain-text handshakes log-writer prints; every other line must be JSON. */
const HANDSHAKES = new Set(['ready', 'locked']);

export function spawnLogWriter(args: string[]): WriterRun {
  const child = spawn(process.execPath, [LOG_WRITER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('"op":"ready"') || out.startsWith('locked')) onReady();
  });
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<{ code: number | null; lines: WriterLine[]; err: string }>((resolve) =>
    child.on('close', (code) => {
      onReady();
      const lines = out
        .split('\n')
        .filter((l) => l !== '' && !HANDSHAKES.has(l))
        .map((l) => JSON.parse(l) as WriterLine);
      resolve({ code, err, lines });
    }),
  );
  return { child, ready, done };
}
