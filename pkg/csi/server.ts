// The gRPC server that carries the CSI services over a unix socket (or TCP, for local tools).
//
// Handlers are plain async functions `(request) => response` that throw CsiErrors; this module turns
// them into grpc-js unary handlers, maps whatever they throw to a gRPC status in one place, and logs
// one line per RPC (method, duration, status). Methods a service does not implement answer
// UNIMPLEMENTED, which is what the spec asks for.
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { toCsiError, CsiError, unimplemented } from './errors';
import { loadCsiPackageDefinition } from './proto';

export type CsiServiceName = 'Identity' | 'Controller' | 'GroupController' | 'SnapshotMetadata' | 'Node';

export interface RpcContext {
  /** e.g. "/csi.v1.Controller/CreateVolume" */
  readonly method: string;
  /** Child logger bound to the method. */
  readonly log: Logger;
  /** Absolute deadline the client set, if any (ms since epoch). */
  readonly deadline?: number;
}

export type RpcHandler<Req, Res> = (request: Req, ctx: RpcContext) => Promise<Res> | Res;

/** A service implementation: method name → handler. Missing methods answer UNIMPLEMENTED. */
export type ServiceHandlers<H> = { [K in keyof H]: RpcHandler<never, unknown> };

export type Endpoint = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** Parses `unix:///abs/path`, `unix:/abs/path`, `/abs/path`, `tcp://host:port` or `host:port`. */
export function parseEndpoint(endpoint: string): Endpoint {
  let rest: string;
  if (endpoint.startsWith('unix://')) rest = endpoint.slice('unix://'.length);
  else if (endpoint.startsWith('unix:')) rest = endpoint.slice('unix:'.length);
  else if (endpoint.startsWith('/')) rest = endpoint;
  else {
    const hostPort = endpoint.startsWith('tcp://') ? endpoint.slice('tcp://'.length) : endpoint;
    const m = /^(\[[^\]]+\]|[^:/]+):(\d{1,5})$/.exec(hostPort);
    if (m === null) throw new Error(`endpoint ${JSON.stringify(endpoint)}: expected unix:///path or host:port`);
    const port = Number(m[2]);
    if (port > 65535) throw new Error(`endpoint ${endpoint}: port out of range`);
    return { kind: 'tcp', host: m[1], port };
  }
  if (!path.isAbsolute(rest)) throw new Error(`endpoint ${JSON.stringify(endpoint)}: the socket path must be absolute`);
  return { kind: 'unix', path: path.normalize(rest) };
}

/** The address string grpc-js expects for an endpoint (client or server side). */
export function grpcAddress(ep: Endpoint): string {
  return ep.kind === 'unix' ? `unix://${ep.path}` : `${ep.host}:${ep.port}`;
}

/** Methods that CO sidecars poll constantly: logged at debug so they do not drown the log. */
const CHATTY_METHODS = new Set(['Probe', 'GetPluginInfo', 'GetPluginCapabilities', 'ControllerGetCapabilities', 'NodeGetCapabilities', 'NodeGetInfo']);

/** Fields whose values must never reach a log (the proto marks them csi_secret). */
function redactSecrets(request: unknown): unknown {
  if (request === null || typeof request !== 'object') return request;
  const copy: Record<string, unknown> = { ...(request as Record<string, unknown>) };
  if (copy['secrets'] !== undefined && copy['secrets'] !== null) {
    copy['secrets'] = Object.fromEntries(Object.keys(copy['secrets']).map((k) => [k, '***']));
  }
  return copy;
}

export interface RpcObservation {
  service: string;
  method: string;
  code: grpc.status;
  seconds: number;
}

export interface CsiServerOptions {
  endpoint: string;
  log: Logger;
  /** Called after every RPC (metrics). */
  onRpc?: (o: RpcObservation) => void;
}

export class CsiServer {
  private readonly server = new grpc.Server({
    // Kubelet and sidecars keep one connection for the plugin's lifetime; be tolerant with keepalives.
    'grpc.keepalive_permit_without_calls': 1,
  });
  private readonly endpoint: Endpoint;
  private readonly log: Logger;
  private readonly onRpc: ((o: RpcObservation) => void) | undefined;
  private readonly services = new Set<CsiServiceName>();
  private started = false;

  constructor(opts: CsiServerOptions) {
    this.endpoint = parseEndpoint(opts.endpoint);
    this.log = opts.log;
    this.onRpc = opts.onRpc;
  }

  /** Registers a CSI service. Call before start(). */
  addService<H extends ServiceHandlers<H>>(name: CsiServiceName, handlers: H): this {
    if (this.started) throw new Error('addService after start');
    if (this.services.has(name)) throw new Error(`service ${name} registered twice`);
    const definition = loadCsiPackageDefinition()[`csi.v1.${name}`] as grpc.ServiceDefinition | undefined;
    if (definition === undefined) throw new Error(`csi.v1.${name} not in proto/csi.proto`);
    const impl: grpc.UntypedServiceImplementation = {};
    const table = handlers as unknown as Record<string, RpcHandler<unknown, unknown> | undefined>;
    for (const [methodName, md] of Object.entries(definition)) {
      if (md.requestStream || md.responseStream) {
        // Only SnapshotMetadata streams, and we do not offer it.
        impl[methodName] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
          call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: `${methodName} is not supported by this driver` });
        };
        continue;
      }
      const handler = table[methodName];
      impl[methodName] = this.wrapUnary(name, methodName, md.path, handler);
    }
    for (const key of Object.keys(table)) {
      if (!(key in definition)) throw new Error(`handler ${name}.${key} matches no RPC in csi.v1.${name}`);
    }
    this.server.addService(definition, impl);
    this.services.add(name);
    return this;
  }

  private wrapUnary(
    service: string,
    method: string,
    fullPath: string,
    handler: RpcHandler<unknown, unknown> | undefined,
  ): grpc.handleUnaryCall<unknown, unknown> {
    const log = this.log.child({ rpc: method });
    const chatty = CHATTY_METHODS.has(method);
    return (call, callback) => {
      const started = process.hrtime.bigint();
      const deadline = call.getDeadline();
      const ctx: RpcContext = {
        method: fullPath,
        log,
        ...(deadline instanceof Date ? { deadline: deadline.getTime() } : typeof deadline === 'number' && Number.isFinite(deadline) ? { deadline } : {}),
      };
      if (log.isLevelEnabled('debug')) log.debug({ request: redactSecrets(call.request) }, 'request');
      const finish = (code: grpc.status, err?: CsiError): void => {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const fields = { code: grpc.status[code], duration_ms: Math.round(seconds * 1e6) / 1e3 };
        if (err === undefined) {
          if (chatty) log.debug(fields, 'ok');
          else log.info(fields, 'ok');
        } else if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) {
          log.error({ ...fields, err: err.cause ?? err }, err.message);
        } else {
          log.warn(fields, err.message);
        }
        this.onRpc?.({ service, method, code, seconds });
      };
      Promise.resolve()
        .then(() => {
          if (handler === undefined) throw unimplemented(`${method} is not supported by this driver`);
          return handler(call.request, ctx);
        })
        .then(
          (response) => {
            finish(grpc.status.OK);
            callback(null, response);
          },
          (thrown: unknown) => {
            const err = toCsiError(thrown, method);
            finish(err.code, err);
            callback({ code: err.code, details: err.message }, null);
          },
        );
    };
  }

  /** Binds the endpoint and starts serving. A stale unix socket from a dead process is removed first. */
  async start(): Promise<void> {
    if (this.started) throw new Error('already started');
    if (this.endpoint.kind === 'unix') await prepareUnixSocket(this.endpoint.path);
    // The socket is created by bind(); a restrictive umask closes the window in which it would be
    // reachable by others before the chmod below.
    const oldUmask = this.endpoint.kind === 'unix' ? process.umask(0o177) : undefined;
    try {
      await new Promise<number>((resolve, reject) => {
        this.server.bindAsync(grpcAddress(this.endpoint), grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
      });
    } finally {
      if (oldUmask !== undefined) process.umask(oldUmask);
    }
    if (this.endpoint.kind === 'unix') await fs.promises.chmod(this.endpoint.path, 0o600);
    this.started = true;
    this.log.info({ endpoint: grpcAddress(this.endpoint), services: [...this.services] }, 'CSI server listening');
  }

  /** Stops accepting calls, lets running ones finish for up to graceMs, then cuts them. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (this.endpoint.kind === 'unix') await fs.promises.rm(this.endpoint.path, { force: true });
    this.log.info('CSI server stopped');
  }
}

/** True when something accepts connections on the unix socket at `p`. */
export function socketIsLive(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(p);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/**
 * Makes `p` bindable: creates its directory (0750) and removes a leftover socket of a dead process.
 * A live socket or a non-socket file at `p` is an error, never silently replaced.
 */
export async function prepareUnixSocket(p: string): Promise<void> {
  await fs.promises.mkdir(path.dirname(p), { recursive: true, mode: 0o750 });
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) throw new Error(`${p} exists and is not a socket; refusing to replace it`);
  if (await socketIsLive(p)) throw new Error(`${p}: another server is listening on this socket`);
  await fs.promises.unlink(p);
}
