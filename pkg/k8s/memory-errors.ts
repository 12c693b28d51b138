// Memory errors as users see them: a MemoryError Warning Event on the PersistentVolumes (and their
// claims) whose bytes live on the failed memory, on the FamfsPool, and the famfs_memory_errors_total
// counter. The CSI code (pkg/csi) only says "memory error, maybe about volume X" through the driver's
// onMemoryError hook; this module turns that into Kubernetes objects.
//
// Edge-triggered: a device-wide failure is reported once per distinct message, a volume once per
// volume, so an RPC that the CO retries every few seconds does not flood etcd. A poll of the device's
// health catches failures no RPC ran into (e.g. the FUSE server met the poison while serving a pod).
//
// Who may see what: the controller's service account can list PVs, so it names PVs and PVCs. The node
// plugin's role deliberately has no PV access; it reports on the FamfsPool and on its Node object
// (the message names the volume id).
import { CoreV1Api, type KubeConfig, type V1PersistentVolume } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { EventReason, pvcRef, pvRef, type EventRecorder, type ObjectRef } from './events';
import { FAMFSPOOL_GROUP, FAMFSPOOL_KIND, FAMFSPOOL_VERSION } from './famfspool';
import type { FamfsMetrics } from './metrics';

export interface MemoryErrorReport {
  /** The volume (CSI volume id) the error concerns; absent for a device-wide failure. */
  volumeId?: string;
  message: string;
}

export interface MemoryErrorReporterOptions {
  kubeConfig: KubeConfig;
  events: EventRecorder;
  driverName: string;
  pool: string;
  role: 'controller' | 'node';
  nodeId: string;
  metrics?: FamfsMetrics;
  /** Polled: why the device failed, or undefined while healthy. */
  check?: () => Promise<string | undefined> | string | undefined;
  intervalMs?: number;
  log?: Logger;
}

interface PvInfo {
  pv: ObjectRef;
  pvc?: ObjectRef;
}

export class MemoryErrorReporter {
  private readonly api: CoreV1Api;
  private readonly seenDevice = new Set<string>();
  private readonly seenVolumes = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly opts: MemoryErrorReporterOptions) {
    this.api = opts.kubeConfig.makeApiClient(CoreV1Api);
  }

  /** Records a report (fire and forget, serialized); duplicates are dropped. */
  report(r: MemoryErrorReport): void {
    this.chain = this.chain
      .then(() => this.handle(r))
      .catch((err: unknown) => this.opts.log?.warn({ err: String(err) }, 'memory error not reported to Kubernetes'));
  }

  /** Resolves when every report so far was handled (stop() waits for this before the process exits). */
  flush(): Promise<void> {
    return this.chain;
  }

  start(): void {
    const check = this.opts.check;
    if (check === undefined) return;
    const every = this.opts.intervalMs ?? 5_000;
    const tick = (): void => {
      void Promise.resolve()
        .then(check)
        .then((why) => {
          if (why !== undefined) this.report({ message: why });
        })
        .catch(() => undefined)
        .finally(() => {
          if (this.timer !== undefined) this.timer = setTimeout(tick, every);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    const t = this.timer;
    this.timer = undefined;
    if (t) clearTimeout(t);
    await this.flush();
  }

  private poolRef(): ObjectRef {
    return { apiVersion: `${FAMFSPOOL_GROUP}/${FAMFSPOOL_VERSION}`, kind: FAMFSPOOL_KIND, name: this.opts.pool };
  }

  private async handle(r: MemoryErrorReport): Promise<void> {
    const key = r.volumeId ?? `device\0${r.message}`;
    const seen = r.volumeId !== undefined ? this.seenVolumes : this.seenDevice;
    if (seen.has(key)) return;
    seen.add(key);
    this.opts.metrics?.memoryErrors.inc({ pool: this.opts.pool, source: this.opts.role });
    const who = `${this.opts.role} on ${this.opts.nodeId}`;
    this.opts.log?.error({ volume: r.volumeId, message: r.message }, 'memory error: reporting it to Kubernetes');
    const ev = this.opts.events;
    ev.emit(this.poolRef(), 'Warning', EventReason.MemoryError, `${who}: ${r.message}`);
    if (this.opts.role === 'node') {
      ev.emit({ apiVersion: 'v1', kind: 'Node', name: this.opts.nodeId, uid: this.opts.nodeId }, 'Warning', EventReason.MemoryError, r.message);
      return;
    }
    const pvs = await this.driverVolumes();
    const targets = r.volumeId !== undefined ? [pvs.get(r.volumeId)].filter((p): p is PvInfo => p !== undefined) : [...pvs.values()];
    const text = r.volumeId !== undefined ? r.message : `the famfs memory holding this volume failed (${who}): ${r.message}`;
    for (const t of targets) {
      ev.emit(t.pv, 'Warning', EventReason.MemoryError, text);
      if (t.pvc) ev.emit(t.pvc, 'Warning', EventReason.MemoryError, text);
    }
  }

  /** This driver's PVs by volume handle, with the claims bound to them. */
  private async driverVolumes(): Promise<Map<string, PvInfo>> {
    const out = new Map<string, PvInfo>();
    let list: V1PersistentVolume[];
    try {
      list = (await this.api.listPersistentVolume()).items;
    } catch (err: unknown) {
      this.opts.log?.warn({ err: String(err) }, 'listing PersistentVolumes failed: MemoryError only on the FamfsPool');
      return out;
    }
    for (const pv of list) {
      const csi = pv.spec?.csi;
      if (csi?.driver !== this.opts.driverName || !pv.metadata?.name) continue;
      const claim = pv.spec?.claimRef;
      out.set(csi.volumeHandle, {
        pv: pvRef(pv.metadata.name, pv.metadata.uid),
        ...(claim?.name && claim.namespace ? { pvc: pvcRef(claim.namespace, claim.name, claim.uid) } : {}),
      });
    }
    return out;
  }
}
