/**
 * A CSI controller (gRPC server on a unix socket) over one mapping of a famfs device, for tests that
 * run two controllers on one device (csi-controller-failover, csi-controller-state).
 */
import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { CsiClient, type CsiCallError } from '../../pkg/csi/client';
import { controllerService } from '../../pkg/csi/controller';
import { CsiServer } from '../../pkg/csi/server';
import { ControllerStore } from '../../pkg/csi/store';
import { Volumes } from '../../pkg/csi/volumes';
import type { DaxDevice } from '../../pkg/device';
import type { FamfsFs } from '../../pkg/famfs';

/** The gRPC status name a call ends with ('OK' when it succeeds) and its details. */
export async function grpcOutcome(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
    return { code: 'OK', message: '' };
  } catch (e) {
    const err = e as CsiCallError;
    return { code: status[err.code] ?? 'UNKNOWN', message: err.details };
  }
}

export interface Controller {
  device: DaxDevice;
  famfs: FamfsFs;
  state: ControllerStore;
  server: CsiServer;
  client: CsiClient;
}

/** Serves the Controller service for `famfs` on unix://DIR/NAME.sock, every node existing. */
export async function startController(dir: string, name: string, device: DaxDevice, famfs: FamfsFs): Promise<Controller> {
  const state = new ControllerStore(famfs);
  const server = new CsiServer({ endpoint: `unix://${dir}/${name}.sock`, log: pino({ level: 'silent' }) });
  server.addService(
    'Controller',
    controllerService({
      volumes: new Volumes(state),
      pool: 'p1',
      topologyKey: 'famfs.csi.cxl.io/pool',
      nodeExists: () => true,
      condition: () => ({ abnormal: false, message: 'ok' }),
    }),
  );
  await server.start();
  return { device, famfs, state, server, client: new CsiClient(`unix://${dir}/${name}.sock`, 10_000) };
}

/** Closes each started controller's client, server and device mapping. */
export async function stopControllers(cs: (Controller | undefined)[]): Promise<void> {
  for (const c of cs) {
    if (!c) continue;
    c.client.close();
    await c.server.stop(200);
    c.device.close();
  }
}
