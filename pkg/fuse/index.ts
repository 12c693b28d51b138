/** The famfs FUSE server: C++ session on the device mapping, TS log follower and control socket. */
export { FamfsFuseServer, type AdoptedConnection, type FuseServerOptions, type CatchupResult, type ServerStatus } from './server.js';
export { ControlServer, defaultControlSocket } from './control.js';
export { controlRequest } from './control-client.js';
export { parseControlRequest, type ControlReply, type ControlRequest } from './control-protocol.js';
export { FuseError, type FuseErrorCode } from './errors.js';
export { ROOT_INO, META_DIR_INO, SUPERBLOCK_INO, LOG_INO, FIRST_LOG_INO, buildInodeTable, resolvePath } from './inode-table.js';
export { requestHandover, completeHandover } from './handover.js';
export { FuseSupervisor, FuseSupervisorError, startDetached, type FuseSupervisorOptions, type FuseHealth, type FlushRoute } from './supervisor.js';
export { serveForeground, controlSocketFor, type DaemonOptions } from './daemon.js';
export { EMPTY_GUARD, GUARD_ALL, guardFileFor, loadGuard, parseGuard, sameGuard, saveGuard, type ReadOnlyGuard } from './guard.js';
