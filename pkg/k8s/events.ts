// Kubernetes Events on the objects users look at (PVCs, PVs, the FamfsPool), so that
// `kubectl describe pvc` shows "volume placed at offset X", "memory error", "log nearly full".
//
// Like client-go's recorder, repeated identical events are folded into one object whose count and
// lastTimestamp grow, instead of flooding etcd. Events on cluster-scoped objects (PV, FamfsPool) go to
// the "default" namespace, which is where kubectl describe looks for them.
import { CoreV1Api, KubeConfig, PatchStrategy, V1MicroTime, setHeaderOptions, type CoreV1Event } from '@kubernetes/client-node';
import { randomBytes } from 'crypto';
import type { Logger } from 'pino';

export type EventType = 'Normal' | 'Warning';

/** What an event is about. `namespace` is absent for cluster-scoped objects. */
export interface ObjectRef {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
  uid?: string;
}

/** Reasons this driver emits (CamelCase, as kubectl users expect). */
export const EventReason = {
  VolumePlaced: 'VolumePlaced',
  VolumeFreed: 'VolumeFreed',
  MemoryError: 'MemoryError',
  LogNearlyFull: 'LogNearlyFull',
  AttachRefused: 'AttachRefused',
  MasterChanged: 'MasterChanged',
  ReplayBehind: 'ReplayBehind',
  HostTimedOut: 'HostTimedOut',
  LogEntryRewritten: 'LogEntryRewritten',
} as const;

export class EventRecorderError extends Error {
  readonly code = 'EVENT_RECORD_FAILED';
  constructor(
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'EventRecorderError';
  }
}

export interface EventRecorderOptions {
  kubeConfig: KubeConfig;
  /** reportingComponent / source.component, e.g. "famfs-csi-controller". */
  component: string;
  /** reportingInstance / source.host, e.g. the pod or node name. */
  instance: string;
  log?: Logger;
}

interface Folded {
  namespace: string;
  name: string;
  count: number;
}

const MAX_MESSAGE_BYTES = 1024; // the API server rejects longer messages

export class EventRecorder {
  private readonly api: CoreV1Api;
  private readonly folded = new Map<string, Folded>();

  constructor(private readonly opts: EventRecorderOptions) {
    this.api = opts.kubeConfig.makeApiClient(CoreV1Api);
  }

  /**
   * Records an event and returns the stored object. Throws EventRecorderError when the API refuses;
   * callers that must not fail because of an event use `emit` instead.
   */
  async record(ref: ObjectRef, type: EventType, reason: string, message: string): Promise<CoreV1Event> {
    ref = await this.withUid(ref);
    const namespace = ref.namespace ?? 'default';
    const msg = Buffer.byteLength(message) > MAX_MESSAGE_BYTES ? `${message.slice(0, MAX_MESSAGE_BYTES - 3)}...` : message;
    const key = [ref.kind, namespace, ref.name, ref.uid ?? '', type, reason, msg].join('\0');
    const now = new Date();
    const seen = this.folded.get(key);
    try {
      if (seen) {
        const count = seen.count + 1;
        const patched = await this.api.patchNamespacedEvent(
          { name: seen.name, namespace: seen.namespace, body: { count, lastTimestamp: now.toISOString() } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
        seen.count = count;
        return patched;
      }
    } catch (err: unknown) {
      // The folded event may have expired (events live ~1h); start a new one.
      this.opts.log?.debug({ err: String(err) }, 'folding event failed, creating a new one');
      this.folded.delete(key);
    }
    const name = `${ref.name}.${now.getTime().toString(16)}${randomBytes(3).toString('hex')}`;
    const body: CoreV1Event = {
      metadata: { name, namespace },
      involvedObject: { apiVersion: ref.apiVersion, kind: ref.kind, name: ref.name, namespace: ref.namespace, uid: ref.uid },
      type,
      reason,
      message: msg,
      count: 1,
      firstTimestamp: now,
      lastTimestamp: now,
      eventTime: new V1MicroTime(now.getTime()),
      action: reason,
      reportingComponent: this.opts.component,
      reportingInstance: this.opts.instance,
      source: { component: this.opts.component, host: this.opts.instance },
    };
    try {
      const created = await this.api.createNamespacedEvent({ namespace, body });
      this.folded.set(key, { namespace, name, count: 1 });
      if (this.folded.size > 4096) this.folded.delete(this.folded.keys().next().value as string);
      return created;
    } catch (err: unknown) {
      throw new EventRecorderError(`recording ${reason} on ${ref.kind} ${ref.name}: ${String(err)}`, err);
    }
  }

  /**
   * kubectl describe finds events by the object's uid as well as its name, so an event without the uid
   * would be invisible there. Fill it in for the kinds this driver reports on.
   */
  private async withUid(ref: ObjectRef): Promise<ObjectRef> {
    if (ref.uid) return ref;
    try {
      if (ref.kind === 'PersistentVolumeClaim' && ref.namespace) {
        const o = await this.api.readNamespacedPersistentVolumeClaim({ name: ref.name, namespace: ref.namespace });
        return { ...ref, uid: o.metadata?.uid };
      }
      if (ref.kind === 'PersistentVolume') {
        const o = await this.api.readPersistentVolume({ name: ref.name });
        return { ...ref, uid: o.metadata?.uid };
      }
    } catch (err: unknown) {
      this.opts.log?.debug({ err: String(err), object: `${ref.kind}/${ref.name}` }, 'uid lookup failed; event recorded without it');
    }
    return ref;
  }

  /** Fire and forget: an event that cannot be written is logged, never fatal to the caller. */
  emit(ref: ObjectRef, type: EventType, reason: string, message: string): void {
    this.record(ref, type, reason, message).catch((err: unknown) => {
      this.opts.log?.warn({ err: String(err), reason, object: `${ref.kind}/${ref.name}` }, 'event not recorded');
    });
  }
}

export function pvcRef(namespace: string, name: string, uid?: string): ObjectRef {
  return { apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace, name, uid };
}

export function pvRef(name: string, uid?: string): ObjectRef {
  return { apiVersion: 'v1', kind: 'PersistentVolume', name, uid };
}
