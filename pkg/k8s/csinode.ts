// Which node ids this driver serves in a cluster: a node runs the driver when its CSINode object
// lists the driver with that node id (the kubelet writes it when the node plugin registers). The
// controller asks this for ControllerPublishVolume, which must answer NOT_FOUND for any other node.
import { ApiException, KubeConfig, StorageV1Api, type V1CSINode } from '@kubernetes/client-node';

export class CsiNodeLookupError extends Error {
  override readonly name = 'CsiNodeLookupError';
}

const servesDriver = (n: V1CSINode, driverName: string, nodeId: string): boolean =>
  (n.spec?.drivers ?? []).some((d) => d.name === driverName && d.nodeID === nodeId);

/**
 * `(nodeId) => whether a CSINode lists driverName with that node id`. The CSINode named like the
 * node id is read first (the chart's node id is the node name); otherwise every CSINode is searched.
 * An API failure throws CsiNodeLookupError (the caller answers UNAVAILABLE: the CO retries).
 */
export function csiNodeLookup(kubeConfig: KubeConfig, driverName: string): (nodeId: string) => Promise<boolean> {
  const api = kubeConfig.makeApiClient(StorageV1Api);
  return async (nodeId: string): Promise<boolean> => {
    try {
      try {
        if (servesDriver(await api.readCSINode({ name: nodeId }), driverName, nodeId)) return true;
      } catch (e) {
        if (!(e instanceof ApiException && e.code === 404)) throw e;
      }
      const all = await api.listCSINode();
      return all.items.some((n) => servesDriver(n, driverName, nodeId));
    } catch (e) {
      const why = e instanceof ApiException ? `HTTP ${e.code}` : e instanceof Error ? e.message : String(e);
      throw new CsiNodeLookupError(`cannot read CSINode objects to check node ${nodeId}: ${why}`, { cause: e });
    }
  };
}
