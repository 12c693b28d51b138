/**
 * The prelude every Kubernetes test shares: skip when FAMFS_SKIP_K8S=1, make sure the cached
 * tools exist (a cold build takes minutes, so the hook may wait that long), then start a real
 * etcd + kube-apiserver within `startMs`.
 */
import type { Context } from 'mocha';
import { TestCluster } from './test-cluster';
import { ensureK8sTools, k8sTestsSkipped, type K8sTool } from './toolchain';

export function startClusterOrSkip(
  ctx: Context,
  tools: readonly K8sTool[],
  opts: Parameters<typeof TestCluster.start>[0] = {},
  startMs = 120_000,
): TestCluster {
  if (k8sTestsSkipped()) ctx.skip();
  ctx.timeout(90 * 60_000);
  ensureK8sTools(tools);
  ctx.timeout(startMs);
  return TestCluster.start(opts);
}
