// Where proto/csi.proto lives and how it is loaded. One place, so the server, the tests and the bench
// clients all decode messages the same way (int64 as decimal strings, enums as names).
import * as fs from 'fs';
import * as path from 'path';
import * as protoLoader from '@grpc/proto-loader';

/** Loader options shared by every CSI client and server in this project. */
export const CSI_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/**
 * Finds a file of the project (e.g. "proto/csi.proto", "package.json") by walking up from this module,
 * so it works both from the sources (pkg/csi) and from the build (dist/pkg/csi).
 */
export function findProjectFile(relative: string): string {
  let dir = __dirname;
  for (;;) {
    const candidate = path.join(dir, relative);
    if (fs.existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`${relative} not found above ${__dirname}`);
    dir = parent;
  }
}

export function csiProtoPath(): string {
  return findProjectFile(path.join('proto', 'csi.proto'));
}

let cached: protoLoader.PackageDefinition | undefined;

/** The csi.v1 package definition (loaded once per process). */
export function loadCsiPackageDefinition(): protoLoader.PackageDefinition {
  cached ??= protoLoader.loadSync(csiProtoPath(), CSI_LOADER_OPTIONS);
  return cached;
}
