/**
 * A CSI controller that does nothing, on famfs-csi's own gRPC stack (grpc-js, proto-loader and
 * pkg/csi/server.ts with its logging and status mapping). bench/csi measures it next to famfs-csi
 * in the same run: what our stack costs per call, with no storage behind it.
 *
 *   node dist/bench/csi/floor-grpcjs.js unix:///path/to/socket
 */
import pino from 'pino';
import { CsiServer } from '../../pkg/csi/server';
import type { CreateVolumeRequest, CreateVolumeResponse } from '../../pkg/csi/types';

async function main(): Promise<void> {
  const endpoint = process.argv[2];
  if (endpoint === undefined) {
    console.error('usage: floor-grpcjs unix:///path/to/socket');
    process.exit(2);
  }
  // The level famfs-csi runs at in the bench: per-RPC lines are built and dropped the same way.
  const server = new CsiServer({ endpoint, log: pino({ level: 'warn' }) });
  const volumes = new Map<string, number>();
  server.addService('Identity', {
    GetPluginInfo: () => ({ name: 'floor.csi.local', vendor_version: '0', manifest: {} }),
    GetPluginCapabilities: () => ({ capabilities: [] }),
    Probe: () => ({ ready: { value: true } }),
  });
  server.addService('Controller', {
    CreateVolume: (req: CreateVolumeRequest): CreateVolumeResponse => {
      const size = Number(req.capacity_range?.required_bytes ?? 0);
      volumes.set(req.name, size);
      return { volume: { volume_id: `floor-${req.name}`, capacity_bytes: String(size), volume_context: {}, accessible_topology: [] } };
    },
    DeleteVolume: (req: { volume_id: string }) => {
      volumes.delete(req.volume_id.replace(/^floor-/, ''));
      return {};
    },
  });
  await server.start();
  const stop = (): void => {
    void server.stop(100).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
