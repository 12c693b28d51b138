// Loading a Kubernetes API configuration: the first module on the way that loads
// @kubernetes/client-node. config.ts decides whether there is one without loading it.
import { KubeConfig } from '@kubernetes/client-node';
import { K8sConfigError, type KubeConfigSource } from './config';

/** In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config (what kubectl would use). */
export function loadKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new K8sConfigError('no Kubernetes API configured (not in a pod, no KUBECONFIG)');
  return kc;
}

/** The configuration a source (config.ts kubeConfigSource) names. */
export function loadKubeConfigFrom(source: KubeConfigSource): KubeConfig {
  const kc = new KubeConfig();
  if (source.kind === 'in-cluster') kc.loadFromCluster();
  else kc.loadFromFile(source.file);
  if (!kc.getCurrentCluster()) throw new K8sConfigError('the Kubernetes configuration names no current cluster');
  return kc;
}
