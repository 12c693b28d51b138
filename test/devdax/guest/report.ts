/**
 * The guest-side helpers of the devdax tier for checks written in TypeScript (compiled to
 * dist/test/devdax/guest/*.js and run by the guests' node from the shared checkout).
 * Mirrors test/devdax/guest/lib.sh: the same result lines, flags and payloads.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

export type Role = 'A' | 'B';
export type Status = 'ok' | 'fail' | 'skip';

function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`devdax guest: ${name} is not set (run from test/devdax/guest/main.sh)`);
  return v;
}

export interface GuestContext {
  readonly role: Role;
  readonly other: Role;
  readonly nonce: string;
  readonly dax: string;
  readonly run: string;
  readonly work: string;
  readonly check: string;
}

export function guestContext(): GuestContext {
  const role = env('ROLE');
  if (role !== 'A' && role !== 'B') throw new Error(`devdax guest: ROLE must be A or B, got ${role}`);
  return {
    role,
    other: role === 'A' ? 'B' : 'A',
    nonce: env('NONCE'),
    dax: env('DAX', '/dev/dax0.0'),
    run: env('RUN'),
    work: env('WORK', '/tmp'),
    check: env('CHECK', path.basename(process.argv[1] ?? 'node')),
  };
}

function uptimeMs(): number {
  try {
    return Math.round(Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000);
  } catch {
    return -1;
  }
}

let failures = 0;

/** One structured result line (the host collects every line starting with DEVDAX-RESULT). */
export function result(ctx: GuestContext, name: string, status: Status, detail = '', extra: Record<string, number | string | boolean> = {}): void {
  if (status === 'fail') failures++;
  const line = { check: ctx.check, role: ctx.role, name, status, detail, uptime_ms: uptimeMs(), ...extra };
  process.stdout.write(`DEVDAX-RESULT ${JSON.stringify(line)}\n`);
}

/** Runs `fn`; ok when it returns normally (its string return value becomes the detail), fail when it throws. */
export function check(ctx: GuestContext, name: string, fn: () => string | void): boolean {
  try {
    const detail = fn();
    result(ctx, name, 'ok', typeof detail === 'string' ? detail : '');
    return true;
  } catch (e) {
    result(ctx, name, 'fail', e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    return false;
  }
}

/** `fn` must throw an error whose `code` is `code`; ok reports the message (so the log shows it is clear). */
export function checkThrows(ctx: GuestContext, name: string, code: string, fn: () => unknown): boolean {
  try {
    fn();
  } catch (e) {
    const got = (e as { code?: unknown }).code;
    const msg = e instanceof Error ? e.message : String(e);
    if (got === code) {
      result(ctx, name, 'ok', `${code}: ${msg}`);
      return true;
    }
    result(ctx, name, 'fail', `expected ${code}, got ${String(got)}: ${msg}`);
    return false;
  }
  result(ctx, name, 'fail', `expected ${code}, but it succeeded`);
  return false;
}

export class AssertionFailed extends Error {
  override readonly name = 'AssertionFailed';
}

export function assertThat(cond: boolean, message: string): asserts cond {
  if (!cond) throw new AssertionFailed(message);
}

/** Tell the other guest `name` happened (a flag file on the run share). */
export function signal(ctx: GuestContext, name: string): void {
  fs.writeFileSync(path.join(ctx.run, 'sync', `${name}.${ctx.role}`), '');
}

/** Wait for the other guest's `name`; throws on timeout or when the other guest has exited. */
export async function awaitSignal(ctx: GuestContext, name: string, seconds = 60): Promise<void> {
  const flag = path.join(ctx.run, 'sync', `${name}.${ctx.other}`);
  const exited = path.join(ctx.run, 'sync', `exited.${ctx.other}`);
  const deadline = Date.now() + seconds * 1000;
  while (!fs.existsSync(flag)) {
    if (fs.existsSync(exited)) throw new AssertionFailed(`await ${name}: guest ${ctx.other} has exited`);
    // The other guest is past this check, so it will signal nothing more in it (it failed early).
    if (fs.existsSync(path.join(ctx.run, 'sync', `end-${ctx.check}.${ctx.other}`))) {
      throw new AssertionFailed(`await ${name}: guest ${ctx.other} already finished ${ctx.check}`);
    }
    if (Date.now() > deadline) throw new AssertionFailed(`await ${name}: timeout after ${seconds} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Deterministic bytes for `name` in this run: AES-256-CTR keystream under sha256("nonce/name")
 * (the same function as lib.sh's `payload`), so B and the host can recompute what A wrote.
 */
export function payload(ctx: GuestContext, name: string, size: number): Buffer {
  const key = crypto.createHash('sha256').update(`${ctx.nonce}/${name}`).digest();
  const cipher = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

/**
 * Ask the host agent whether the backing file holds `bytes` at devdax offset `daxOffset`.
 * Resolves with the agent's answer; rejects when it disagrees or does not answer.
 */
export async function hostVerify(ctx: GuestContext, name: string, daxOffset: number, bytes: Uint8Array): Promise<string> {
  const base = path.join(ctx.run, 'hostreq', `${ctx.role}-${name}`);
  fs.writeFileSync(`${base}.bin`, bytes);
  fs.writeFileSync(`${base}.req.tmp`, `${daxOffset}\n`);
  fs.renameSync(`${base}.req.tmp`, `${base}.req`);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (fs.existsSync(`${base}.ok`)) return fs.readFileSync(`${base}.ok`, 'utf8').trim();
    if (fs.existsSync(`${base}.fail`)) throw new AssertionFailed(`host disagrees: ${fs.readFileSync(`${base}.fail`, 'utf8').trim()}`);
    if (Date.now() > deadline) throw new AssertionFailed('the host agent did not answer in 30 s');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Exit code for the check: non-zero when any result failed. */
export function finish(): void {
  process.exitCode = failures === 0 ? 0 : 1;
}

/** Runs an async check body, turning an escaped exception into a failed result. */
export function runGuestCheck(body: (ctx: GuestContext) => Promise<void>): void {
  const ctx = guestContext();
  body(ctx)
    .catch((e: unknown) => result(ctx, 'uncaught', 'fail', e instanceof Error ? (e.stack ?? e.message) : String(e)))
    .finally(finish);
}
