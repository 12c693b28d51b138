// Kubelet plugin registration, done by the node plugin itself (no node-driver-registrar sidecar).
//
// The kubelet watches <kubelet dir>/plugins_registry/ for unix sockets that serve the
// pluginregistration Registration service (proto/pluginregistration.proto). On a new socket it asks
// GetInfo who we are and where our CSI socket is (as a host path), calls NodeGetInfo on that socket,
// records the driver with its topology in the node's CSINode object, then tells us the outcome with
// NotifyRegistrationStatus. Deleting our socket unregisters the driver from the node.
//
// A kubelet that refused the registration (or a registration socket someone deleted) is reported by
// health(): the node plugin's /healthz then fails, and the kubelet's liveness probe restarts the
// container, which registers again — what node-driver-registrar does by exiting.
import * as fs from 'fs';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Logger } from 'pino';
import type { Health } from './identity';
import { findProjectFile } from './proto';
import { prepareUnixSocket } from './server';

/** The CSI versions the kubelet may pick from (it accepts 1.x). */
export const CSI_SUPPORTED_VERSIONS = ['1.0.0'] as const;

export interface PluginInfo {
  type: string;
  name: string;
  endpoint: string;
  supported_versions: string[];
}

export interface RegistrationStatus {
  plugin_registered: boolean;
  error: string;
}

export interface KubeletRegistrationOptions {
  /** The kubelet's plugins_registry directory as this process sees it (the chart mounts it at /registration). */
  registrationDir: string;
  driverName: string;
  /** The node plugin's CSI socket as the KUBELET sees it: <kubelet dir>/plugins/<driver>/csi.sock on the host. */
  csiEndpoint: string;
  log: Logger;
}

/** What the kubelet has told us so far. */
export type RegistrationState =
  | { state: 'waiting' } // socket up, the kubelet has not reported yet
  | { state: 'registered'; at: Date }
  | { state: 'refused'; error: string; at: Date };

let cachedDefinition: grpc.ServiceDefinition | undefined;

/** The pluginregistration.Registration service definition (loaded once). */
export function registrationServiceDefinition(): grpc.ServiceDefinition {
  if (cachedDefinition === undefined) {
    const pkg = protoLoader.loadSync(findProjectFile(path.join('proto', 'pluginregistration.proto')), {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
    });
    cachedDefinition = pkg['pluginregistration.Registration'] as grpc.ServiceDefinition;
  }
  return cachedDefinition;
}

/** The socket name node-driver-registrar uses too, so switching between the two leaves no stale twin. */
export function registrationSocketPath(registrationDir: string, driverName: string): string {
  return path.join(registrationDir, `${driverName}-reg.sock`);
}

export class KubeletRegistration {
  readonly socketPath: string;
  private readonly server = new grpc.Server();
  private current: RegistrationState = { state: 'waiting' };
  private socketIno: number | undefined;
  private stopped = false;

  private constructor(private readonly opts: KubeletRegistrationOptions) {
    this.socketPath = registrationSocketPath(opts.registrationDir, opts.driverName);
  }

  /**
   * Serves the Registration service on <registrationDir>/<driver>-reg.sock. Call it once the CSI socket
   * serves: the kubelet calls NodeGetInfo on it right after GetInfo.
   */
  static async start(opts: KubeletRegistrationOptions): Promise<KubeletRegistration> {
    if (!path.isAbsolute(opts.csiEndpoint))
      throw new Error(`kubelet registration: CSI endpoint ${JSON.stringify(opts.csiEndpoint)} must be an absolute host path`);
    if (!fs.existsSync(opts.registrationDir)) {
      throw new Error(`kubelet registration directory ${opts.registrationDir} does not exist: mount <kubelet dir>/plugins_registry there`);
    }
    const r = new KubeletRegistration(opts);
    await r.listen();
    return r;
  }

  private async listen(): Promise<void> {
    const log = this.opts.log;
    const info: PluginInfo = {
      type: 'CSIPlugin',
      name: this.opts.driverName,
      endpoint: this.opts.csiEndpoint,
      supported_versions: [...CSI_SUPPORTED_VERSIONS],
    };
    this.server.addService(registrationServiceDefinition(), {
      GetInfo: (_call: grpc.ServerUnaryCall<unknown, PluginInfo>, cb: grpc.sendUnaryData<PluginInfo>) => {
        log.debug({ info }, 'kubelet asked for plugin info');
        cb(null, info);
      },
      NotifyRegistrationStatus: (call: grpc.ServerUnaryCall<RegistrationStatus, object>, cb: grpc.sendUnaryData<object>) => {
        const s = call.request;
        if (s.plugin_registered) {
          this.current = { state: 'registered', at: new Date() };
          log.info({ driver: this.opts.driverName, endpoint: this.opts.csiEndpoint }, 'registered with the kubelet');
        } else {
          this.current = { state: 'refused', error: s.error, at: new Date() };
          log.error(
            { driver: this.opts.driverName, error: s.error },
            'the kubelet refused the registration; /healthz now fails so the container restarts and registers again',
          );
        }
        cb(null, {});
      },
    });
    await prepareUnixSocket(this.socketPath);
    await new Promise<void>((resolve, reject) =>
      this.server.bindAsync(`unix://${this.socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.socketIno = fs.statSync(this.socketPath).ino;
    log.info({ socket: this.socketPath, endpoint: this.opts.csiEndpoint }, 'kubelet registration socket listening');
  }

  get state(): RegistrationState {
    return this.current;
  }

  /** Unhealthy when the kubelet refused us or our socket is gone or replaced (the kubelet cannot reach us). */
  health(): Health {
    if (this.current.state === 'refused') {
      return { state: 'unhealthy', message: `the kubelet refused the registration of ${this.opts.driverName}: ${this.current.error}` };
    }
    let ino: number | undefined;
    try {
      ino = fs.statSync(this.socketPath).ino;
    } catch {
      ino = undefined;
    }
    if (ino === undefined || ino !== this.socketIno) {
      return { state: 'unhealthy', message: `registration socket ${this.socketPath} was removed or replaced: the kubelet no longer sees this plugin` };
    }
    return { state: 'ready' };
  }

  /** Stops serving and removes the socket: the kubelet unregisters the driver from this node. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    try {
      // Only our own socket: a successor's socket at the same path stays.
      if (fs.statSync(this.socketPath).ino === this.socketIno) fs.rmSync(this.socketPath, { force: true });
    } catch {
      /* already gone */
    }
  }
}
