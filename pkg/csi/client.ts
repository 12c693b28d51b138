// A small promise-based CSI client over the same proto definition: the driver's liveness check
// calls Probe through its own socket with it (driver.ts); tests and benches use it too.
import * as grpc from '@grpc/grpc-js';
import { loadCsiPackageDefinition } from './proto';
import { grpcAddress, parseEndpoint, type CsiServiceName } from './server';

/** An error returned by the server, with its gRPC status. */
export type CsiCallError = grpc.ServiceError;

type UnaryMethod = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response: unknown) => void,
) => grpc.ClientUnaryCall;

export class CsiClient {
  private readonly clients = new Map<CsiServiceName, grpc.Client>();
  private readonly address: string;

  constructor(
    endpoint: string,
    private readonly defaultTimeoutMs = 30_000,
  ) {
    this.address = grpcAddress(parseEndpoint(endpoint));
  }

  private client(service: CsiServiceName): grpc.Client {
    let c = this.clients.get(service);
    if (c === undefined) {
      const def = loadCsiPackageDefinition()[`csi.v1.${service}`] as grpc.ServiceDefinition;
      const Ctor = grpc.makeGenericClientConstructor(def, service);
      c = new Ctor(this.address, grpc.credentials.createInsecure());
      this.clients.set(service, c);
    }
    return c;
  }

  /** Calls service.method with request; rejects with a grpc.ServiceError carrying .code. */
  call<Res = unknown>(service: CsiServiceName, method: string, request: object = {}, timeoutMs = this.defaultTimeoutMs): Promise<Res> {
    const c = this.client(service) as unknown as Record<string, UnaryMethod | undefined>;
    const fn = c[method];
    if (typeof fn !== 'function') return Promise.reject(new Error(`csi.v1.${service} has no method ${method}`));
    return new Promise<Res>((resolve, reject) => {
      fn.call(c, request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(err);
        else resolve(res as Res);
      });
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
