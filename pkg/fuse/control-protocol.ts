/**
 * The control socket's wire format: one request per line, one JSON reply per line.
 *
 * A request is either JSON ({"op":"flush","path":"a/b"}) or the short text form
 * (`flush a/b`, `direct-io on`, `direct-io off a/b`). Replies are {"ok":true,...} or
 * {"ok":false,"code":"ENOENT","error":"..."}.
 */
import { parseGuard, type ReadOnlyGuard } from './guard.js';
import { FuseError } from './errors.js';

export type ControlRequest =
  | { op: 'catchup' }
  | { op: 'status' }
  | { op: 'flush'; path: string }
  | { op: 'invalidate'; path: string }
  | { op: 'direct-io'; on: boolean; path?: string }
  /**
   * Replace the read-only guard (guard.ts): files under `readOnly` answer EROFS to every change, unless
   * under a `writable` path. The whole set each time (idempotent; the node plugin's records decide).
   */
  | ({ op: 'guard' } & ReadOnlyGuard)
  /** The read-only guard as the server holds it: {readOnly, writable, file} (status only counts them). */
  | { op: 'guard-show' }
  /** Send this server's /dev/fuse fds to the new server listening at `to` (restart/upgrade). */
  | { op: 'handover'; to: string }
  /** The new server serves now: exit without unmounting. */
  | { op: 'handover-done' };

export type ControlReply = ({ ok: true } & Record<string, unknown>) | { ok: false; code: string; error: string };

export class ControlParseError extends Error {
  readonly code = 'EINVAL';
}

export function parseControlRequest(line: string): ControlRequest {
  const text = line.trim();
  if (text.startsWith('{')) {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      throw new ControlParseError('request is not valid JSON');
    }
    if (typeof v !== 'object' || v === null) throw new ControlParseError('request must be an object');
    const o = v as Record<string, unknown>;
    const path = typeof o['path'] === 'string' ? o['path'] : undefined;
    switch (o['op']) {
      case 'catchup':
      case 'status':
        return { op: o['op'] };
      case 'flush':
      case 'invalidate':
        if (path === undefined) throw new ControlParseError(`${o['op']} needs a "path"`);
        return { op: o['op'], path };
      case 'handover':
        if (typeof o['to'] !== 'string') throw new ControlParseError('handover needs "to": <socket path>');
        return { op: 'handover', to: o['to'] };
      case 'handover-done':
        return { op: 'handover-done' };
      case 'guard-show':
        return { op: 'guard-show' };
      case 'guard':
        try {
          return { op: 'guard', ...parseGuard(o, 'guard') };
        } catch (e) {
          if (e instanceof FuseError) throw new ControlParseError(e.message);
          throw e;
        }
      case 'direct-io':
        if (typeof o['on'] !== 'boolean') throw new ControlParseError('direct-io needs "on": true|false');
        return path === undefined ? { op: 'direct-io', on: o['on'] } : { op: 'direct-io', on: o['on'], path };
      default:
        throw new ControlParseError(`unknown op ${JSON.stringify(o['op'])}`);
    }
  }
  const [op, ...rest] = text.split(/\s+/);
  switch (op) {
    case 'catchup':
    case 'status':
      return { op };
    case 'guard-show':
      return { op: 'guard-show' };
    case 'flush':
    case 'invalidate':
      if (rest.length !== 1 || rest[0] === '') throw new ControlParseError(`usage: ${op} <relpath>`);
      return { op, path: rest[0] };
    case 'direct-io': {
      const on = rest[0];
      if (on !== 'on' && on !== 'off') throw new ControlParseError('usage: direct-io on|off [relpath]');
      return rest[1] !== undefined ? { op, on: on === 'on', path: rest[1] } : { op, on: on === 'on' };
    }
    default:
      throw new ControlParseError(`unknown command ${JSON.stringify(op)} (catchup, status, flush, invalidate, direct-io, guard-show; guard as JSON)`);
  }
}
