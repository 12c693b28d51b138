/**
 * Root-only control socket of a famfs FUSE server (unix stream socket, JSON lines; see
 * control-protocol.ts). The socket file is created 0600 inside a 0700 directory, so only root
 * can connect: flush/invalidate/direct-io change what other tenants' reads see.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import type { Logger } from 'pino';

import { FuseError } from './errors.js';
import { ControlParseError, parseControlRequest, type ControlReply, type ControlRequest } from './control-protocol.js';
import type { FamfsFuseServer } from './server.js';

/** Where a mount's control socket lives unless told otherwise: /run/famfs-fused/<hash>/sock. */
export function defaultControlSocket(mountpoint: string): string {
  const id = createHash('sha256').update(path.resolve(mountpoint)).digest('hex').slice(0, 16);
  return path.join('/run/famfs-fused', id, 'sock');
}

export interface ControlHooks {
  /** The new server confirmed a handover: exit without unmounting (called after the reply is sent). */
  onHandedOver?: () => void;
}

/** How long a started handover may wait for the new server's confirmation before we resume. */
const HANDOVER_CONFIRM_MS = 10_000;

export class ControlServer {
  private constructor(
    private readonly server: net.Server,
    readonly socketPath: string,
  ) {}

  static async listen(socketPath: string, target: FamfsFuseServer, logger: Logger, hooks: ControlHooks = {}): Promise<ControlServer> {
    const dir = path.dirname(socketPath);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    // A stale socket from a server that died: connecting to it fails, so remove it.
    if (fs.existsSync(socketPath)) {
      if (await isListening(socketPath)) throw new FuseError('EINVAL', `control socket ${socketPath} is in use by a running server`);
      fs.rmSync(socketPath, { force: true });
    }
    const state: HandoverState = { timer: undefined };
    const server = net.createServer((conn) => serveConnection(conn, target, logger, hooks, state));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const old = process.umask(0o177);
      server.listen(socketPath, () => {
        process.umask(old);
        resolve();
      });
    });
    fs.chmodSync(socketPath, 0o600);
    return new ControlServer(server, socketPath);
  }

  /** Stops accepting (the socket file goes at once), then waits for open connections to end. */
  async close(): Promise<void> {
    fs.rmSync(this.socketPath, { force: true });
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function isListening(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

interface HandoverState {
  timer: NodeJS.Timeout | undefined;
}

function serveConnection(conn: net.Socket, target: FamfsFuseServer, logger: Logger, hooks: ControlHooks, state: HandoverState): void {
  let pending = '';
  conn.setEncoding('utf8');
  conn.on('error', () => conn.destroy());
  conn.on('data', (chunk: string) => {
    pending += chunk;
    if (pending.length > 1 << 16) {
      conn.end(JSON.stringify({ ok: false, code: 'EINVAL', error: 'request line too long' }) + '\n');
      return;
    }
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim() === '') continue;
      const reply = handle(line, target, logger, state);
      const after = reply.ok && (reply as Record<string, unknown>)['handedOver'] === true ? hooks.onHandedOver : undefined;
      conn.write(JSON.stringify(reply) + '\n', () => after?.());
    }
  });
}

function handle(line: string, target: FamfsFuseServer, logger: Logger, state: HandoverState): ControlReply {
  let req: ControlRequest;
  try {
    req = parseControlRequest(line);
  } catch (e) {
    if (e instanceof ControlParseError) return { ok: false, code: e.code, error: e.message };
    throw e;
  }
  try {
    switch (req.op) {
      case 'catchup': {
        const r = target.catchup();
        return { ok: true, ...r };
      }
      case 'status':
        return { ok: true, ...statusForWire(target) };
      case 'flush':
        target.flush(req.path);
        logger.info({ path: req.path }, 'flushed file (handoff: giving up)');
        return { ok: true, path: req.path };
      case 'invalidate':
        target.invalidate(req.path);
        logger.info({ path: req.path }, 'invalidated file (handoff: taking over)');
        return { ok: true, path: req.path };
      case 'handover':
        target.handoverTo(req.to);
        logger.info({ to: req.to }, 'handing the FUSE connection over; waiting for confirmation');
        state.timer = setTimeout(() => {
          state.timer = undefined;
          target.cancelHandover();
          logger.warn('handover not confirmed in time: serving again');
        }, HANDOVER_CONFIRM_MS);
        return { ok: true, pid: process.pid };
      case 'handover-done':
        if (state.timer === undefined) return { ok: false, code: 'EINVAL', error: 'no handover in progress' };
        clearTimeout(state.timer);
        state.timer = undefined;
        target.abandon();
        logger.info('handover confirmed: exiting without unmounting');
        return { ok: true, handedOver: true };
      case 'guard':
        target.setGuard({ readOnly: req.readOnly, writable: req.writable });
        return { ok: true, readOnly: req.readOnly.length, writable: req.writable.length };
      case 'guard-show':
        return { ok: true, ...target.guardNow() };
      case 'direct-io':
        target.setDirectIo(req.on, req.path);
        logger.info({ on: req.on, path: req.path }, 'direct I/O changed');
        return { ok: true, directIo: req.on, ...(req.path !== undefined ? { path: req.path } : {}) };
    }
  } catch (e) {
    const code = typeof (e as { code?: unknown }).code === 'string' ? (e as { code: string }).code : 'EIO';
    return { ok: false, code, error: (e as Error).message };
  }
}

/** Status with bigints (fault addresses) turned into hex strings for JSON. */
function statusForWire(target: FamfsFuseServer): Record<string, unknown> {
  const s = target.status();
  return {
    ...s,
    pid: process.pid,
    native: {
      ...s.native,
      faults: s.native.faults.map((f) => ({ ...f, addr: `0x${f.addr.toString(16)}` })),
    },
  };
}
