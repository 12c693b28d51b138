// Leader election on a coordination.k8s.io/v1 Lease, the same protocol client-go and the CSI sidecars
// use, so `kubectl get lease` reads the same way for all of them.
//
// Protocol: a candidate reads the Lease. It may take it when nobody holds it, when the holder released
// it (empty holderIdentity), or when the record has not changed for a whole lease duration *as measured
// on this candidate's own monotonic clock* — never by comparing renewTime with our wall clock, because
// the hosts' clocks may disagree. Every write carries the resourceVersion that was read, so two
// candidates racing for an expired lease cannot both win (the loser gets 409 Conflict).
//
// The leader renews every retryPeriod. If it cannot renew for renewDeadline it stops leading on its
// own, before the lease can expire for the others (renewDeadline < leaseDuration).
//
// Fencing: leaseTransitions grows by one on every change of holder, so the value at acquisition is an
// epoch that no earlier leader can have. The famfs writer stores it in the shared memory and checks it
// before every append; a leader that was paused and wakes up late finds a newer epoch there and stops.
// `holdsLease()` is the local half of that check: false as soon as the last successful renewal is older
// than renewDeadline.
import { ApiException, CoordinationV1Api, KubeConfig, V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { LeaderElectionError } from './lease-config';

// Defined apart so that reading the settings (config.ts) does not load @kubernetes/client-node.
export { LeaderElectionError, parseDuration } from './lease-config';

export interface LeadershipInfo {
  /** leaseTransitions when we took the lease: strictly greater than any earlier leader's epoch. */
  epoch: number;
  identity: string;
  /** Aborted when we stop leading (lost renewal, stop() called). */
  signal: AbortSignal;
}

export interface LeaderElectorOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  name: string;
  /** Unique per candidate; by convention the pod name. */
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  onStartedLeading?: (info: LeadershipInfo) => void;
  onStoppedLeading?: (info: { epoch: number; identity: string; reason: string }) => void;
  /** Called whenever the observed holder changes (including to us, and to nobody as ''). */
  onNewLeader?: (identity: string) => void;
  log?: Logger;
}

const DEFAULTS = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** The client deserializes MicroTime fields as strings although they are typed as Dates. */
function timeText(v: unknown): string {
  return v instanceof Date ? v.toISOString() : typeof v === 'string' ? v : '';
}

function isApiStatus(err: unknown, code: number): boolean {
  return err instanceof ApiException && err.code === code;
}

export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly stopController = new AbortController();
  private running: Promise<void> | undefined;

  /** The record as we last saw it, and when (monotonic) it last changed. */
  private observedKey = '';
  private observedAt = 0;
  private observedHolder = '';

  private leading: { epoch: number; lastRenewAt: number; abort: AbortController } | undefined;
  /** After resign(): do not campaign before this (monotonic ms), so another candidate gets the lease. */
  private cooldownUntil = 0;

  constructor(private readonly opts: LeaderElectorOptions) {
    this.api = opts.kubeConfig.makeApiClient(CoordinationV1Api);
    this.leaseDurationMs = opts.leaseDurationMs ?? DEFAULTS.leaseDurationMs;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? DEFAULTS.renewDeadlineMs;
    this.retryPeriodMs = opts.retryPeriodMs ?? DEFAULTS.retryPeriodMs;
    if (!opts.identity) throw new LeaderElectionError('INVALID_CONFIG', 'identity is required');
    if (!(this.renewDeadlineMs < this.leaseDurationMs)) {
      throw new LeaderElectionError(
        'INVALID_CONFIG',
        `renewDeadline (${this.renewDeadlineMs} ms) must be shorter than leaseDuration (${this.leaseDurationMs} ms)`,
      );
    }
    if (!(this.retryPeriodMs < this.renewDeadlineMs)) {
      throw new LeaderElectionError('INVALID_CONFIG', `retryPeriod (${this.retryPeriodMs} ms) must be shorter than renewDeadline (${this.renewDeadlineMs} ms)`);
    }
    if (this.leaseDurationMs < 1000) throw new LeaderElectionError('INVALID_CONFIG', 'leaseDuration must be at least 1s (the Lease stores whole seconds)');
  }

  get identity(): string {
    return this.opts.identity;
  }

  /** True while we lead and our last renewal is recent enough that nobody else can have taken over. */
  holdsLease(): boolean {
    return this.leading !== undefined && monotonicMs() - this.leading.lastRenewAt < this.renewDeadlineMs;
  }

  /** Epoch of our leadership; throws NOT_LEADER when holdsLease() is false. */
  currentEpoch(): number {
    if (!this.leading || !this.holdsLease())
      throw new LeaderElectionError('NOT_LEADER', `${this.identity} does not hold lease ${this.opts.namespace}/${this.opts.name}`);
    return this.leading.epoch;
  }

  /** Holder we last observed ('' when none). */
  observedLeader(): string {
    return this.observedHolder;
  }

  /** Starts campaigning in the background; resolves at once. */
  start(): void {
    if (this.stopController.signal.aborted) throw new LeaderElectionError('STOPPED', 'elector was stopped');
    this.running ??= this.loop().catch((err: unknown) => {
      this.opts.log?.error({ err }, 'leader election loop failed');
    });
  }

  /** Stops campaigning; a leader steps down first and releases the lease so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopController.abort();
    await this.running;
    if (this.leading) {
      await this.release();
      this.stepDown('stopped');
    }
  }

  /**
   * Gives up leadership now (e.g. the famfs takeover failed on this host) and stays out of the race
   * for one lease duration, so a healthier candidate takes over. Keeps campaigning afterwards.
   */
  async resign(reason: string): Promise<void> {
    if (!this.leading) return;
    this.cooldownUntil = monotonicMs() + this.leaseDurationMs;
    await this.release();
    this.stepDown(reason);
  }

  private async loop(): Promise<void> {
    const stop = this.stopController.signal;
    while (!stop.aborted) {
      try {
        await this.round();
      } catch (err: unknown) {
        // A bug or an unexpected answer must not end the campaign; the renew deadline still applies.
        this.opts.log?.error({ err }, 'leader election round failed');
      }
      await sleep(this.retryPeriodMs, stop);
    }
  }

  private async round(): Promise<void> {
    if (!this.leading && monotonicMs() < this.cooldownUntil) return;
    await this.tryAcquireOrRenew();
    this.checkRenewDeadline();
  }

  /** Steps down once the last successful renewal is older than renewDeadline. */
  private checkRenewDeadline(): void {
    if (this.leading && monotonicMs() - this.leading.lastRenewAt >= this.renewDeadlineMs) {
      this.stepDown('failed to renew within the renew deadline');
    }
  }

  private stepDown(reason: string): void {
    const l = this.leading;
    if (!l) return;
    this.leading = undefined;
    l.abort.abort();
    this.opts.log?.warn({ lease: this.opts.name, epoch: l.epoch, reason }, 'stopped leading');
    this.opts.onStoppedLeading?.({ epoch: l.epoch, identity: this.identity, reason });
  }

  private observe(lease: V1Lease): void {
    const spec = lease.spec ?? {};
    const key = `${lease.metadata?.resourceVersion ?? ''}|${spec.holderIdentity ?? ''}|${timeText(spec.renewTime)}`;
    if (key !== this.observedKey) {
      this.observedKey = key;
      this.observedAt = monotonicMs();
    }
    const holder = spec.holderIdentity ?? '';
    if (holder !== this.observedHolder) {
      this.observedHolder = holder;
      this.opts.onNewLeader?.(holder);
    }
  }

  /** One round. Returns true when we hold the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name } = this.opts;
    const now = new V1MicroTime(Date.now());
    const durationSeconds = Math.ceil(this.leaseDurationMs / 1000);
    let current: V1Lease;
    try {
      current = await this.api.readNamespacedLease({ name, namespace });
    } catch (err: unknown) {
      if (!isApiStatus(err, 404)) {
        this.opts.log?.warn({ err: String(err) }, 'reading lease failed');
        return false;
      }
      try {
        const created = await this.api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: { holderIdentity: this.identity, leaseDurationSeconds: durationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
          },
        });
        this.observe(created);
        this.becomeLeader(0);
        return true;
      } catch (createErr: unknown) {
        if (!isApiStatus(createErr, 409)) this.opts.log?.warn({ err: String(createErr) }, 'creating lease failed');
        return false;
      }
    }
    this.observe(current);
    const spec = current.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const weHold = holder === this.identity;
    const expired = monotonicMs() - this.observedAt >= (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
    if (holder !== '' && !weHold && !expired) {
      if (this.leading) this.stepDown(`lease is held by ${holder}`);
      return false;
    }

    const transitions = (spec.leaseTransitions ?? 0) + (weHold ? 0 : 1);
    const body: V1Lease = {
      ...current,
      spec: {
        ...spec,
        holderIdentity: this.identity,
        leaseDurationSeconds: durationSeconds,
        renewTime: now,
        acquireTime: weHold ? spec.acquireTime : now,
        leaseTransitions: transitions,
      },
    };
    try {
      // resourceVersion from the read makes this a compare-and-swap.
      const updated = await this.api.replaceNamespacedLease({ name, namespace, body });
      this.observe(updated);
    } catch (err: unknown) {
      if (!isApiStatus(err, 409)) this.opts.log?.warn({ err: String(err) }, 'updating lease failed');
      return false;
    }
    if (this.leading && this.leading.epoch === transitions) {
      this.leading.lastRenewAt = monotonicMs();
    } else {
      // We were not leading, or someone else led in between and we are back: a new term either way.
      if (this.leading) this.stepDown('lease changed hands while we were not looking');
      this.becomeLeader(transitions);
    }
    return true;
  }

  private becomeLeader(epoch: number): void {
    const abort = new AbortController();
    this.leading = { epoch, lastRenewAt: monotonicMs(), abort };
    // A renewal request can hang without an error; this timer makes the step-down happen on time anyway.
    const watchdog = setInterval(() => this.checkRenewDeadline(), Math.max(50, Math.floor(this.retryPeriodMs / 2)));
    watchdog.unref();
    abort.signal.addEventListener('abort', () => clearInterval(watchdog), { once: true });
    this.opts.log?.info({ lease: this.opts.name, epoch, identity: this.identity }, 'started leading');
    this.opts.onStartedLeading?.({ epoch, identity: this.identity, signal: abort.signal });
  }

  /** Gives the lease up: empty holder, so candidates take it without waiting for expiry. */
  private async release(): Promise<void> {
    const { namespace, name } = this.opts;
    try {
      const current = await this.api.readNamespacedLease({ name, namespace });
      if (current.spec?.holderIdentity !== this.identity) return;
      const now = new V1MicroTime(Date.now());
      await this.api.replaceNamespacedLease({
        name,
        namespace,
        body: { ...current, spec: { ...current.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: now, acquireTime: now } },
      });
    } catch (err: unknown) {
      this.opts.log?.warn({ err: String(err) }, 'releasing lease failed (others take over after it expires)');
    }
  }
}
