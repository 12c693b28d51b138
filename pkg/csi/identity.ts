// Identity service: who the plugin is, what it offers, and whether it is healthy.
import * as fs from 'fs';
import { failedPrecondition } from './errors';
import { findProjectFile } from './proto';
import type {
  GetPluginCapabilitiesRequest,
  GetPluginCapabilitiesResponse,
  GetPluginInfoRequest,
  GetPluginInfoResponse,
  ProbeRequest,
  ProbeResponse,
} from './types';
import type { RpcHandler } from './server';

/** What a health check reports. "starting" answers ready=false; "unhealthy" fails the Probe. */
export type Health = { state: 'ready' } | { state: 'starting'; message: string } | { state: 'unhealthy'; message: string };
export type HealthCheck = () => Promise<Health> | Health;

export interface IdentityOptions {
  driverName: string;
  /** Defaults to package.json's version. */
  version?: string;
  /** Extra facts for GetPluginInfo.manifest (e.g. mode, pool). */
  manifest?: Record<string, string>;
  health: HealthCheck;
}

export interface IdentityHandlers {
  GetPluginInfo: RpcHandler<GetPluginInfoRequest, GetPluginInfoResponse>;
  GetPluginCapabilities: RpcHandler<GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse>;
  Probe: RpcHandler<ProbeRequest, ProbeResponse>;
}

let cachedVersion: string | undefined;

/** The version in package.json, read once. */
export function packageVersion(): string {
  if (cachedVersion === undefined) {
    const pkg = JSON.parse(fs.readFileSync(findProjectFile('package.json'), 'utf8')) as { version?: unknown };
    if (typeof pkg.version !== 'string') throw new Error('package.json has no version');
    cachedVersion = pkg.version;
  }
  return cachedVersion;
}

/**
 * CSI driver names: at most 63 characters, reverse domain name notation, alphanumerics, '-', '.'
 * and starting and ending with an alphanumeric (spec: GetPluginInfoResponse.name).
 */
export function validateDriverName(name: string): void {
  if (name.length === 0 || name.length > 63 || !/^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$/.test(name)) {
    throw new Error(`driver name ${JSON.stringify(name)}: must be 1..63 characters of [a-zA-Z0-9.-], starting and ending alphanumeric`);
  }
}

export function identityService(opts: IdentityOptions): IdentityHandlers {
  validateDriverName(opts.driverName);
  const info: GetPluginInfoResponse = {
    name: opts.driverName,
    vendor_version: opts.version ?? packageVersion(),
    manifest: { ...(opts.manifest ?? {}) },
  };
  return {
    GetPluginInfo: () => info,
    // Reported by controller and node instances alike: capabilities describe the plugin as a whole.
    // No VolumeExpansion: famfs files cannot grow.
    GetPluginCapabilities: () => ({
      capabilities: [{ service: { type: 'CONTROLLER_SERVICE' } }, { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } }],
    }),
    Probe: async () => {
      const health = await opts.health();
      switch (health.state) {
        case 'ready':
          return { ready: { value: true } };
        case 'starting':
          return { ready: { value: false } };
        case 'unhealthy':
          throw failedPrecondition(`plugin unhealthy: ${health.message}`);
      }
    },
  };
}
