/**
 * Typed face of the addon's FUSE part (native/src/fuse_addon.cc). The addon object is checked
 * once; nothing untyped leaves this module.
 */
import { loadNative, type NativeDeviceHandle } from '../device/index.js';
import { FuseError } from './errors.js';

export interface NativeExtent {
  offset: number;
  len: number;
}

export type NativeFmap = { kind: 'simple'; extents: NativeExtent[] } | { kind: 'interleave'; chunkSize: number; strips: NativeExtent[] };

/** One row of the inode table handed to C++ (parsed once per update, never per request). */
export interface NativeInode {
  ino: number;
  /** Parent directory's ino (the root names itself). */
  parent: number;
  name: string;
  kind: 'dir' | 'file';
  /** Permission bits only. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Never writable through the mount (the .meta files). */
  readOnly?: boolean;
  fmap?: NativeFmap;
}

export interface NativeSessionOptions {
  fsname?: string;
  subtype?: string;
  readOnly?: boolean;
  directIo?: boolean;
  /** Reply to reads with iovecs into the mapping (the kernel copies); false: guarded copy first. */
  zeroCopyReads?: boolean;
  cloneFd?: boolean;
  maxThreads?: number;
  attrTimeout?: number;
  entryTimeout?: number;
  /** Seconds since the epoch, reported as every file's atime/mtime/ctime. */
  mountTime?: number;
  /** Extended attributes served on the root directory. */
  rootXattrs?: Record<string, string>;
  debug?: boolean;
}

export interface NativeStatfs {
  totalBytes: number;
  freeBytes: number;
  totalInodes: number;
  freeInodes: number;
}

export interface NativeFault {
  signo: number;
  code: number;
  addr: bigint;
}

export interface NativeCacheOpResult {
  ok: boolean;
  error?: 'ENOENT' | 'EIO';
  fault?: NativeFault;
}

export interface NativeSessionStatus {
  running: boolean;
  /** False once the kernel connection ended (unmounted from outside, aborted). */
  serving: boolean;
  failed: boolean;
  failureMessage: string | null;
  logIndex: number;
  inodes: number;
  directIo: boolean;
  threads: number;
  connectionId: number;
  flushMethod: string;
  counters: {
    reads: number;
    readBytes: number;
    writes: number;
    writeBytes: number;
    lookups: number;
    refused: number;
    faults: number;
    staleHandles: number;
    /** Requests answered EIO because the host was past its self-fence deadline. */
    fenced: number;
  };
  /** Past the self-fence deadline: reads, writes and flushes answer EIO (docs/format.md "One clock"). */
  fenced: boolean;
  /** The deadline on fenceClockMs()'s clock; null when this host takes no part in reclaim. */
  fenceDeadlineMs: number | null;
  faults: (NativeFault & { ino: number; op: string })[];
}

/** What the old server negotiated with the kernel, carried over in a handover. */
export interface NativeHandoverParams {
  protoMajor: number;
  protoMinor: number;
  maxReadahead: number;
  connectionId: number;
  /** The old server's pid (it exits once the new one confirms). */
  pid: number;
}

export interface NativeFuseSession {
  /** Old side: stop answering, send every /dev/fuse fd to the listener at `path`. */
  handoverTo(path: string): void;
  /** Old side: resume serving (the new server never confirmed). */
  cancelHandover(): void;
  /** Old side: the connection is someone else's now; never unmount it from here. */
  abandon(): void;
  /** New side: serve the connection on `fd` instead of mounting. */
  adopt(fd: number, params: NativeHandoverParams, inodes: NativeInode[], logIndex: number): void;
  /** New side, after the old server exited: resend what it left unanswered, close its fds. */
  finishAdoption(extraFds: number[]): void;
  start(inodes: NativeInode[], logIndex: number): void;
  /** The /dev/fuse descriptor the session reads (-1 when not serving): what the fd deposit holds. */
  sessionFd(): number;
  /** What was negotiated with the kernel (what an adopter needs), with this process's pid. */
  handoverParams(): NativeHandoverParams;
  /** Returns the number of kernel invalidation notices sent. */
  update(inodes: NativeInode[], logIndex: number): number;
  setStatfs(s: NativeStatfs): void;
  /** Arm the self-fence at `ms` on fenceClockMs()'s clock; null disables it. */
  setFenceDeadline(ms: number | null): void;
  setDirectIo(on: boolean): void;
  setFileDirectIo(ino: number, on: boolean): void;
  /** Files (or directories: all under them) this host serves read-only: changes answer EROFS; `writable` wins. */
  setGuard(readOnlyInos: number[], writableInos: number[]): void;
  flushFile(ino: number): NativeCacheOpResult;
  invalidateFile(ino: number): NativeCacheOpResult;
  status(): NativeSessionStatus;
  stop(): void;
}

type SessionCtor = new (device: NativeDeviceHandle, mountpoint: string, options: NativeSessionOptions) => NativeFuseSession;

interface HandoverFns {
  fuseHandoverListen(path: string): number;
  /** `peer`: the connection the old server sent on, open until its process is gone. */
  fuseHandoverAccept(fd: number, timeoutMs: number): { fds: number[]; message: string; peer: number };
  /** True once the old server's end of `peer` is closed (its process, every thread of it, is gone). Never blocks. */
  fuseHandoverPeerGone(peer: number): boolean;
  fuseCloseFd(fd: number): void;
}

/** One entry of the fd deposit as its holder sees it. */
export interface NativeDepositEntry {
  key: string;
  blob: string;
  /** The depositing server's connection closed (it died) and nobody has deposited since. */
  orphaned: boolean;
  orphanedMs: number;
  fds: number;
}

export interface NativeDepositHolder {
  status(): NativeDepositEntry[];
  /** Entries given up (orphan timeout) since the last call. */
  takeExpired(): { key: string; blob: string }[];
  /** Forgets an entry, closing its descriptors; true if there was one. */
  drop(key: string): boolean;
  /** Closes every held descriptor and stops listening. */
  stop(): void;
}

export interface DepositFns {
  FuseDepositHolder: new (path: string, orphanTimeoutMs: number) => NativeDepositHolder;
  fuseDepositConnect(path: string): number;
  /** op: 'D' deposit, 'W' withdraw, 'X' drop; status 'K' ok, 'N' none, 'B' busy, 'E' bad request. */
  fuseDepositRequest(
    fd: number,
    op: 'D' | 'W' | 'X',
    key: string,
    blob: string,
    fds: number[],
    timeoutMs: number,
  ): { status: string; blob: string; fds: number[] };
  fuseDepositHungUp(fd: number): boolean;
  fuseCloseFd(fd: number): void;
}

/** The addon's fd deposit (fuse_deposit.h). */
export function depositNative(): DepositFns {
  const addon = loadNative() as unknown as Partial<DepositFns>;
  if (typeof addon.FuseDepositHolder !== 'function' || typeof addon.fuseDepositRequest !== 'function') {
    throw new FuseError('ENATIVE', 'the native addon has no FUSE fd deposit (stale build?); rebuild with: npm run build:native');
  }
  return addon as DepositFns;
}

/** The addon's handover transport (SCM_RIGHTS over a unix socket). */
export function handoverNative(): HandoverFns {
  const addon = loadNative() as unknown as Partial<HandoverFns>;
  if (typeof addon.fuseHandoverListen !== 'function' || typeof addon.fuseHandoverAccept !== 'function' || typeof addon.fuseHandoverPeerGone !== 'function') {
    throw new FuseError('ENATIVE', 'the native addon has no FUSE handover (stale build?); rebuild with: npm run build:native');
  }
  return addon as HandoverFns;
}

/**
 * The clock the native fence is judged on (CLOCK_BOOTTIME, ms): it keeps counting through a
 * suspend, so a host never believes less time passed than did.
 */
export function fenceClockMs(): number {
  const f = (loadNative() as unknown as { fenceClockMs?: unknown }).fenceClockMs;
  if (typeof f !== 'function') throw new FuseError('ENATIVE', 'the native addon has no fence clock (stale build?); rebuild with: npm run build:native');
  return (f as () => number)();
}

/** The FuseSession constructor of the loaded addon; throws FuseError 'ENATIVE' if it has none. */
export function fuseSessionClass(): SessionCtor {
  const addon: unknown = loadNative();
  const ctor = (addon as { FuseSession?: unknown }).FuseSession;
  if (typeof ctor !== 'function') {
    throw new FuseError('ENATIVE', 'the native addon has no FUSE server (stale build?); rebuild with: npm run build:native');
  }
  return ctor as SessionCtor;
}
