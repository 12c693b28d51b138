// Everything driver-runtime.ts uses that loads @kubernetes/client-node, behind one module it imports
// dynamically, and only when a Kubernetes API is configured: client-node alone costs ~55 MiB of
// RssAnon, more than the whole driver without it.
export { csiNodeLookup } from './csinode';
export { startControllerIntegration } from './driver-integration';
export { EventReason, EventRecorder, pvcRef } from './events';
export { FAMFSPOOL_GROUP, FAMFSPOOL_KIND, FAMFSPOOL_VERSION } from './famfspool';
export { loadKubeConfigFrom } from './kubeconfig';
export { MemoryErrorReporter } from './memory-errors';
