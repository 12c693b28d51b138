/**
 * Restarting or upgrading a famfs FUSE server without unmounting (design-hazards §1): pods'
 * bind mounts pin the FUSE connection, so the connection itself moves to the new process.
 *
 *   new: listen on <control>.handover          old: (control op "handover")
 *   new: ask old to hand over          ─────►  old: stop answering; send all /dev/fuse fds
 *   new: receive fds, adopt the session fd, start workers, FUSE_NOTIFY_RESEND
 *   new: "handover-done"               ─────►  old: exit without unmounting
 *   new: wait for old to exit, resend again, close old's extra fds, take the control socket
 *
 * Requests the old server read but did not answer are resent by the kernel (Linux 6.9+), so
 * callers see a pause, not an error. Until its process is completely gone, the old server's FUSE
 * threads keep reading requests off the shared connection (and leave them unanswered): the last
 * resend must come after that. The old server keeps its end of the handover socket open until then
 * (heldUntilExit), so its end of stream is the signal, also across pid namespaces (containers),
 * where the old pid means nothing here and its control socket closes before its threads end.
 * Resending earlier left such requests in a queue nobody reads (readers hung in
 * request_wait_answer, /sys/fs/fuse/connections/<n>/waiting > 0) or, when the old server's clone fds
 * were closed, failed them with ECONNABORTED.
 */
import * as fs from 'fs';
import * as net from 'net';

import { controlRequest } from './control-client.js';
import { FuseError } from './errors.js';
import { handoverNative, type NativeHandoverParams } from './native.js';
import type { AdoptedConnection, FamfsFuseServer } from './server.js';

function parseParams(message: string): NativeHandoverParams {
  const v = JSON.parse(message) as Record<string, unknown>;
  const num = (k: string): number => {
    const n = v[k];
    if (typeof n !== 'number' || !Number.isFinite(n)) throw new FuseError('EHANDOVER', `handover message lacks ${k}`);
    return n;
  };
  return {
    protoMajor: num('protoMajor'),
    protoMinor: num('protoMinor'),
    maxReadahead: num('maxReadahead'),
    connectionId: num('connectionId'),
    pid: num('pid'),
  };
}

/** Asks the server behind `controlSocket` for its connection; returns the received fds. */
export async function requestHandover(controlSocket: string, timeoutMs = 10_000): Promise<AdoptedConnection> {
  const native = handoverNative();
  const listenPath = `${controlSocket}.handover`;
  const lfd = native.fuseHandoverListen(listenPath);
  try {
    const r = await controlRequest(controlSocket, { op: 'handover', to: listenPath }, timeoutMs);
    if (!r.ok) throw new FuseError('EHANDOVER', `the running server refused the handover: ${r.error}`);
    // The old server sent the fds before replying: they are waiting in the socket.
    const got = native.fuseHandoverAccept(lfd, timeoutMs);
    try {
      const heldUntilExit = (JSON.parse(got.message) as Record<string, unknown>)['heldUntilExit'] === true;
      return { fds: got.fds, params: parseParams(got.message), peer: { fd: got.peer, heldUntilExit } };
    } catch (e) {
      for (const fd of [...got.fds, got.peer]) native.fuseCloseFd(fd);
      throw e;
    }
  } finally {
    fs.rmSync(listenPath, { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True while something accepts connections on the old server's control socket. */
function controlSocketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * Confirms to the old server, waits for it to exit, then finishes the adoption. The old server may run
 * in another container or pod (another pid namespace): its pid is then meaningless here, and may even
 * name a process of ours (the chart's node pod shares one pid namespace among its containers). A server
 * of this release keeps the handover connection open until its process is gone, which tells its exit
 * wherever it runs: its pid is not looked at. An earlier release's server closed that connection at
 * once; its pid is looked at unless it cannot be it (ours, or 1: a container's init, which as our
 * namespace's init would outlive us), and its exit is also seen as its control socket no longer
 * answering (it closes it right before exiting).
 */
export async function completeHandover(server: FamfsFuseServer, controlSocket: string, conn: AdoptedConnection, timeoutMs = 10_000): Promise<void> {
  const r = await controlRequest(controlSocket, { op: 'handover-done' }, timeoutMs);
  if (!r.ok) throw new FuseError('EHANDOVER', `the old server did not accept the confirmation: ${r.error}`);
  const native = handoverNative();
  const peer = conn.peer;
  const pidVisible = peer?.heldUntilExit !== true && conn.params.pid !== process.pid && conn.params.pid !== 1;
  const gone = async (): Promise<boolean> =>
    (peer === undefined || native.fuseHandoverPeerGone(peer.fd)) && !(pidVisible && alive(conn.params.pid)) && !(await controlSocketAnswers(controlSocket));
  try {
    const deadline = Date.now() + timeoutMs;
    while (!(await gone()) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    if (!(await gone())) throw new FuseError('EHANDOVER', `old server (pid ${conn.params.pid}) did not exit`);
    // An old server of an earlier release closed the handover socket at once: its pid may mean nothing
    // here either (another container), so give its last threads a moment to end with its process.
    if (!pidVisible && peer?.heldUntilExit !== true) await new Promise((res) => setTimeout(res, 200));
  } finally {
    if (peer !== undefined) native.fuseCloseFd(peer.fd);
  }
  server.finishAdoption();
}
