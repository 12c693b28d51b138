// The famfs FUSE server: a libfuse3 low-level session whose requests are answered by libfuse's
// own worker threads straight from the device mapping and an inode table handed in by JS.
// No JavaScript runs per request; JS only swaps the table, sets statfs totals and asks for
// flush/invalidate/status on the control path.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "fuse_table.h"
#include "memaccess.h"

namespace famfs_fuse {

// The mapping the server reads and writes. `on_fault` marks the device failed (device layer).
struct DeviceView {
  uint8_t* base = nullptr;
  uint64_t size = 0;
  bool writable = false;
  std::function<void(const famfs_native::Fault&)> on_fault;
  std::function<bool()> is_failed;
};

struct ServerOptions {
  std::string mountpoint;
  std::string fsname = "famfs";
  std::string subtype = "famfs";
  bool read_only = false;
  bool direct_io = false;
  bool zero_copy_reads = true;  // reply with iovecs into the mapping (kernel copies, EFAULT -> EIO)
  bool clone_fd = true;
  unsigned max_threads = 0;  // 0: 2 x CPUs (at least 4)
  double attr_timeout = 1.0;
  double entry_timeout = 1.0;
  uint32_t max_write = 1u << 20;
  bool debug = false;
  uint64_t mount_time = 0;  // seconds since the epoch, used for every timestamp
  // Extended attributes served on the root directory (name -> value), e.g. user.famfs.shadow.
  std::vector<std::pair<std::string, std::string>> root_xattrs;
};

struct StatfsTotals {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
  uint64_t total_inodes = 0;
  uint64_t free_inodes = 0;
};

struct FaultRecord {
  famfs_native::Fault fault;
  uint64_t ino = 0;
  std::string op;
};

// What the kernel and the old server negotiated, carried to a server adopting the connection.
struct HandoverParams {
  uint32_t proto_major = 7;
  uint32_t proto_minor = 0;
  uint32_t max_readahead = 0;
  uint64_t conn_id = 0;
};

// Files this host serves read-only (issue 12): the node plugin publishes them here only through
// read-only binds, but a pod with CAP_SYS_ADMIN can `mount -o remount,bind,rw` its copy of such a
// bind, and the kernel then lets its writes through to us. So the server itself refuses every
// change to them with EROFS, whatever the caller's mount flags say. Inode numbers: a file, or a
// directory (everything under it); `writable` wins over `read_only` anywhere above a file (a
// read-write publish of a file inside a directory shared read-only).
struct GuardSets {
  std::unordered_set<uint64_t> read_only;
  std::unordered_set<uint64_t> writable;
};
using GuardPtr = std::shared_ptr<const GuardSets>;

struct Counters {
  std::atomic<uint64_t> reads{0}, read_bytes{0}, writes{0}, write_bytes{0};
  std::atomic<uint64_t> lookups{0}, refused{0}, faults{0}, stale{0}, fenced{0};
};

// The self-fence clock (reclaim safety, docs/format.md "One clock"): CLOCK_BOOTTIME keeps
// counting while the machine is suspended, so a host can never believe less time passed than did.
int64_t FenceClockNs();

class Server {
 public:
  Server(DeviceView dev, ServerOptions opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Mounts and starts the worker loop on its own thread; error text or empty.
  std::string Start(TablePtr initial);
  // Unmounts (lazily if busy), aborts the connection if workers do not finish in time, joins.
  void Stop();
  bool running() const { return running_.load(); }
  // False once the worker loop has ended (unmounted from outside, connection aborted).
  bool serving() const { return running_.load() && !loop_done_.load(); }

  // Handover, old side: stop answering (requests read from now on are left for the kernel to
  // resend to the new server), hand every /dev/fuse fd to `path`. Then Abandon() before exiting
  // (no unmount), or CancelHandover() to resume serving if the new server never confirmed.
  bool HandoverTo(const std::string& path, std::string* err);
  void CancelHandover();
  void Abandon();
  bool handing_over() const { return handing_over_.load(std::memory_order_relaxed); }
  // Handover, new side: serve the connection on `fd` (already initialised by the old server).
  std::string Adopt(int fd, const HandoverParams& params, TablePtr initial);
  // After the old server exited: resend what it left unanswered, then drop its extra fds.
  void FinishAdoption(const std::vector<int>& extra_fds);
  HandoverParams handover_params() const;
  // The /dev/fuse descriptor the session reads, -1 when not serving (deposited with the node plugin).
  int session_fd() const { return session_ != nullptr && running_.load() ? fuse_session_fd(session_) : -1; }

  // Swaps in a new table and tells the kernel about removed/changed entries.
  // Returns how many kernel notifications were sent.
  unsigned Update(TablePtr next);
  TablePtr table() const { return std::atomic_load(&table_); }

  void SetStatfs(const StatfsTotals& t);
  // Replaces the read-only guard (an empty or null set guards nothing: the default).
  void SetGuard(GuardPtr g) { std::atomic_store(&guard_, std::move(g)); }
  // True when a change to `ino` must answer EROFS: the mount-wide read-only option, a read-only
  // mapping, or the guard covering it (the file or a directory above it, and no writable entry).
  bool ReadOnlyHere(const Table& t, uint64_t ino) const;
  void SetDirectIo(bool on) { direct_io_.store(on); }
  bool direct_io() const { return direct_io_.load(); }
  void SetFileDirectIo(uint64_t ino, bool on);
  // Write back (flush) or evict (invalidate) the CPU cache lines of a file's extents;
  // invalidate also drops the kernel page cache of the inode. false + *fault on a memory error.
  bool FlushFile(uint64_t ino, famfs_native::Fault* fault, std::string* err);
  bool InvalidateFile(uint64_t ino, famfs_native::Fault* fault, std::string* err);

  // Self-fence: reads, writes and flushes answer EIO once FenceClockNs() reaches the deadline.
  // INT64_MAX disables the fence (a host that takes no part in reclaim), 0 fences at once.
  void SetFenceDeadlineNs(int64_t ns) { fence_deadline_ns_.store(ns, std::memory_order_release); }
  int64_t fence_deadline_ns() const { return fence_deadline_ns_.load(std::memory_order_acquire); }
  bool Fenced() const;

  const Counters& counters() const { return counters_; }
  bool failed() const;
  std::vector<FaultRecord> faults() const;
  unsigned threads() const { return max_threads_; }
  uint64_t connection_id() const { return conn_id_; }

  // --- request handlers (called from libfuse worker threads) ---
  void OnInit(struct fuse_conn_info* conn);
  void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void OnGetattr(fuse_req_t req, fuse_ino_t ino);
  void OnSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set);
  void OnOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi);
  void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  void OnWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off);
  void OnFsync(fuse_req_t req, fuse_ino_t ino);
  void OnOpendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi);
  void OnReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus);
  void OnStatfs(fuse_req_t req);
  void OnGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void OnListxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void Refuse(fuse_req_t req);
  // A namespace or metadata mutation at `ino` (the file, or the directory a name is changed in):
  // EROFS where this host serves it read-only, else the usual refusal (EPERM).
  void RefuseAt(fuse_req_t req, uint64_t ino);
  void RefuseAt(fuse_req_t req, uint64_t ino, uint64_t other);

 private:
  const Inode* OpenFile(fuse_req_t req, const TablePtr& t, fuse_ino_t ino);
  const Inode* Dir(fuse_req_t req, const TablePtr& t, fuse_ino_t ino);
  // Runs a guarded cache operation over every device range of file `ino`.
  bool ForFileRanges(uint64_t ino, const char* what, bool (*op)(const void*, size_t, famfs_native::Fault*),
                     famfs_native::Fault* fault, std::string* err);

  void FillStat(const Table& t, const Inode& n, struct stat* st) const;
  void ReplyEntry(fuse_req_t req, const Table& t, const Inode& n);
  bool CheckRange(const std::vector<Piece>& pieces) const;
  void RecordFault(const famfs_native::Fault& f, uint64_t ino, const char* op);
  void StartLoop();
  struct fuse_session* NewSession();
  bool NotifyReady() const { return running_.load() && session_ != nullptr && initialized_.load(); }

  DeviceView dev_;
  ServerOptions opts_;
  TablePtr table_;
  struct fuse_session* session_ = nullptr;
  std::thread loop_;
  std::atomic<bool> running_{false};
  std::atomic<bool> initialized_{false};
  std::atomic<bool> loop_done_{false};
  std::atomic<bool> direct_io_{false};
  std::atomic<int64_t> fence_deadline_ns_{INT64_MAX};
  GuardPtr guard_;  // atomic_load/atomic_store only: read by every worker on mutating requests
  unsigned max_threads_ = 0;
  uint64_t conn_id_ = 0;
  mutable std::mutex mu_;  // guards statfs_, direct_files_, faults_
  StatfsTotals statfs_;
  std::unordered_set<uint64_t> direct_files_;
  std::vector<FaultRecord> faults_;
  std::atomic<bool> local_failed_{false};
  std::atomic<bool> handing_over_{false};
  // Old side of a handover: our end of the connection the fds went over, open until this process is
  // gone (never closed after Abandon): the new server resends what we read only once it ends.
  int handover_conn_ = -1;
  bool adopted_ = false;  // session fd came from a handover: we unmount ourselves on Stop
  HandoverParams params_;
  Counters counters_;
};

}  // namespace famfs_fuse
