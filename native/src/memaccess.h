// Fault-tolerant access to mapped device memory.
//
// A load or store to a devdax/emulation mapping can raise SIGBUS (poisoned line, device gone,
// backing file shrunk). Every access that may fault goes through one of the Guarded* calls:
// while such a call runs, the calling thread has a sigjmp_buf armed, and the process-wide
// handler jumps back to it, so the call returns false with the fault details instead of
// killing the process. A fault on a thread that is not inside a guarded call is passed on to
// whatever handler was installed before ours (or the default action), so genuine bugs still
// crash. Safe to use from any number of threads at once (JS main thread, workers, FUSE threads).
#pragma once

#include <cstddef>
#include <cstdint>

namespace famfs_native {

struct Fault {
  int signo = 0;       // SIGBUS or SIGSEGV
  int code = 0;        // si_code (e.g. BUS_ADRERR, BUS_MCEERR_AR)
  uintptr_t addr = 0;  // si_addr: the faulting address
};

// Installs the SIGBUS/SIGSEGV handler once per process; later calls do nothing.
// The Guarded* calls install it themselves, so calling this is optional.
void InstallFaultHandlers();

// memcpy(dst, src, n); false (and *fault filled, if non-null) if either side faulted.
// On a fault, an unspecified prefix of dst may have been written.
bool GuardedCopy(void* dst, const void* src, size_t n, Fault* fault);

// memmove(dst, src, n) (overlap allowed) under the same guard.
bool GuardedMove(void* dst, const void* src, size_t n, Fault* fault);

// memset(dst, value, n) under the same guard.
bool GuardedFill(void* dst, int value, size_t n, Fault* fault);
// Zero [dst, dst+n) so that the zeros are in memory (not just in this CPU's cache) when it
// returns: non-temporal stores for the aligned body (they bypass and evict cache lines), plain
// stores + flush for the ragged edges, then a store fence. No separate flush pass is needed.
bool GuardedZeroPersistent(void* dst, size_t n, Fault* fault);

// memcpy(dst, src, n) for ranges that do not overlap, with the copy in memory when it returns
// (non-temporal stores for the aligned body, plain stores + flush for the edges, store fence):
// a clone needs no separate flush pass, and the stores skip the read-for-ownership of dst.
// Overlapping ranges fall back to memmove + flush.
bool GuardedCopyPersistent(void* dst, const void* src, size_t n, Fault* fault);

// Writes back every cache line overlapping [p, p+n) (CLWB, else CLFLUSHOPT, else CLFLUSH),
// then SFENCE: after it returns true, the stores before it are visible in memory.
bool GuardedFlush(const void* p, size_t n, Fault* fault);

// Evicts every cache line overlapping [p, p+n) (CLFLUSHOPT, else CLFLUSH), then MFENCE, so
// the next load reads memory (what another host wrote) rather than a stale line.
bool GuardedInvalidate(const void* p, size_t n, Fault* fault);

// The instruction GuardedFlush uses: "clwb" | "clflushopt" | "clflush" (x86-64, chosen at run
// time with cpuid), or "fence" on other architectures (portable fallback).
const char* FlushMethodName();

// The instruction GuardedInvalidate uses: "clflushopt" | "clflush" | "fence".
const char* InvalidateMethodName();

// Cache line size used for flushing (from cpuid on x86-64, else 64).
size_t CacheLineSize();

}  // namespace famfs_native
