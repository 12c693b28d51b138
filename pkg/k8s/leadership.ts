// The famfs master role follows the Lease: whoever holds the Lease takes over as famfs master
// (FamfsFs.takeOver writes a new fencing epoch into the shared memory before any append), and drops
// the role the moment it stops leading. This module is the glue between LeaderElector and the
// controller's state layer (pkg/csi ControllerStore.takeMasterRole / dropMasterRole).
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { LeaderElectionSettings } from './config';
import { LeaderElector } from './lease';
import type { FamfsMetrics } from './metrics';

/** What the controller's state layer offers (pkg/csi/store.ts ControllerStore has exactly these). */
export interface MasterRole {
  /** Takes over as famfs master with this host's UUID; returns the famfs fencing epoch. */
  takeMasterRole(hostUuid: string): number;
  /** Stops mutating at once. */
  dropMasterRole(reason?: string): void;
}

export interface MasterElectionOptions {
  kubeConfig: KubeConfig;
  settings: LeaderElectionSettings;
  role: MasterRole;
  /** This host's famfs identity (/opt/famfs/system_uuid): recorded in the superblock as master. */
  hostUuid: string;
  pool: string;
  metrics?: FamfsMetrics;
  log?: Logger;
  /** Told about every change, e.g. to publish it in FamfsPool status or as an Event. */
  onChange?: (state: { leading: boolean; leaseEpoch: number; famfsEpoch?: number; reason?: string }) => void;
}

export class MasterElection {
  readonly elector: LeaderElector;
  private famfsEpoch: number | undefined;

  constructor(private readonly opts: MasterElectionOptions) {
    const s = opts.settings;
    this.elector = new LeaderElector({
      kubeConfig: opts.kubeConfig,
      namespace: s.namespace,
      name: s.leaseName,
      identity: s.identity,
      leaseDurationMs: s.leaseDurationMs,
      renewDeadlineMs: s.renewDeadlineMs,
      retryPeriodMs: s.retryPeriodMs,
      log: opts.log,
      onStartedLeading: ({ epoch }) => this.started(epoch),
      onStoppedLeading: ({ epoch, reason }) => this.stopped(epoch, reason),
    });
  }

  /** famfs fencing epoch while this process is master, undefined otherwise. */
  get epoch(): number | undefined {
    return this.elector.holdsLease() ? this.famfsEpoch : undefined;
  }

  start(): void {
    this.elector.start();
  }

  async stop(): Promise<void> {
    await this.elector.stop();
  }

  private started(leaseEpoch: number): void {
    const pool = { pool: this.opts.pool };
    try {
      this.famfsEpoch = this.opts.role.takeMasterRole(this.opts.hostUuid);
    } catch (err: unknown) {
      // Holding the Lease without being able to write would block every other candidate: hand it on.
      this.opts.log?.error({ err: String(err), leaseEpoch }, 'famfs takeover failed; resigning the lease');
      this.opts.onChange?.({ leading: false, leaseEpoch, reason: `takeover failed: ${String(err)}` });
      void this.elector.resign(`famfs takeover failed: ${String(err)}`);
      return;
    }
    this.opts.metrics?.isLeader.set(pool, 1);
    this.opts.metrics?.masterEpoch.set(pool, this.famfsEpoch);
    this.opts.log?.info({ leaseEpoch, famfsEpoch: this.famfsEpoch, hostUuid: this.opts.hostUuid }, 'famfs master role taken');
    this.opts.onChange?.({ leading: true, leaseEpoch, famfsEpoch: this.famfsEpoch });
  }

  private stopped(leaseEpoch: number, reason: string): void {
    const pool = { pool: this.opts.pool };
    const was = this.famfsEpoch;
    this.famfsEpoch = undefined;
    this.opts.role.dropMasterRole(reason);
    this.opts.metrics?.isLeader.set(pool, 0);
    this.opts.metrics?.masterEpoch.set(pool, 0);
    this.opts.log?.warn({ leaseEpoch, famfsEpoch: was, reason }, 'famfs master role dropped');
    this.opts.onChange?.({ leading: false, leaseEpoch, famfsEpoch: was, reason });
  }
}
