/** Client side of the control socket: one request, one reply. */
import * as net from 'net';

import { FuseError } from './errors.js';
import type { ControlReply, ControlRequest } from './control-protocol.js';

export async function controlRequest(socketPath: string, request: ControlRequest | string, timeoutMs = 10_000): Promise<ControlReply> {
  const line = typeof request === 'string' ? request : JSON.stringify(request);
  return new Promise<ControlReply>((resolve, reject) => {
    const conn = net.connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new FuseError('ECONTROL', `no reply from ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(line + '\n'));
    conn.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      conn.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as ControlReply);
      } catch {
        reject(new FuseError('ECONTROL', `bad reply from ${socketPath}`));
      }
    });
    conn.on('error', (e) => {
      clearTimeout(timer);
      reject(new FuseError('ECONTROL', `control socket ${socketPath}: ${e.message}`));
    });
  });
}
