// famfs FUSE server: request handlers and session lifecycle. See fuse_server.h.
#include "fuse_server.h"

#include <linux/fuse.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "fuse_handover.h"

namespace famfs_fuse {
namespace {

// Write pieces at least this long are copied into the device with non-temporal stores (OnWrite).
constexpr uint64_t kStreamWriteMin = 64 * 1024;

Server* Self(fuse_req_t req) { return static_cast<Server*>(fuse_req_userdata(req)); }

// The server for a request, or nullptr if it is being handed over: the request is then left
// unanswered in this fd's processing queue for the kernel to resend to the new server.
Server* Live(fuse_req_t req) {
  Server* s = Self(req);
  if (s->handing_over()) {
    fuse_reply_none(req);
    return nullptr;
  }
  return s;
}

// Trampolines: libfuse calls C functions; each forwards to the Server bound to the session.
void LlInit(void* userdata, struct fuse_conn_info* conn) { static_cast<Server*>(userdata)->OnInit(conn); }
void LlLookup(fuse_req_t r, fuse_ino_t p, const char* n) {
  if (Server* srv = Live(r)) srv->OnLookup(r, p, n);
}
void LlGetattr(fuse_req_t r, fuse_ino_t i, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->OnGetattr(r, i);
}
void LlSetattr(fuse_req_t r, fuse_ino_t i, struct stat* a, int s, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->OnSetattr(r, i, a, s);
}
void LlOpen(fuse_req_t r, fuse_ino_t i, struct fuse_file_info* fi) {
  if (Server* srv = Live(r)) srv->OnOpen(r, i, fi);
}
void LlRead(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->OnRead(r, i, s, o);
}
void LlWrite(fuse_req_t r, fuse_ino_t i, const char* b, size_t s, off_t o, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->OnWrite(r, i, b, s, o);
}
void LlFsync(fuse_req_t r, fuse_ino_t i, int, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->OnFsync(r, i);
}
void LlOpendir(fuse_req_t r, fuse_ino_t i, struct fuse_file_info* fi) {
  if (Server* srv = Live(r)) srv->OnOpendir(r, i, fi);
}
void LlReaddir(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->OnReaddir(r, i, s, o, false);
}
void LlReaddirplus(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->OnReaddir(r, i, s, o, true);
}
void LlStatfs(fuse_req_t r, fuse_ino_t) {
  if (Server* srv = Live(r)) srv->OnStatfs(r);
}
void LlGetxattr(fuse_req_t r, fuse_ino_t i, const char* n, size_t s) {
  if (Server* srv = Live(r)) srv->OnGetxattr(r, i, n, s);
}
void LlListxattr(fuse_req_t r, fuse_ino_t i, size_t s) {
  if (Server* srv = Live(r)) srv->OnListxattr(r, i, s);
}
// Every namespace or metadata mutation is refused: famfs metadata lives only in the log,
// which the master appends to through the famfs API, never through a mount.
void LlMknod(fuse_req_t r, fuse_ino_t p, const char*, mode_t, dev_t) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}
void LlMkdir(fuse_req_t r, fuse_ino_t p, const char*, mode_t) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}
void LlUnlink(fuse_req_t r, fuse_ino_t p, const char*) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}
void LlRmdir(fuse_req_t r, fuse_ino_t p, const char*) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}
void LlSymlink(fuse_req_t r, const char*, fuse_ino_t p, const char*) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}
void LlRename(fuse_req_t r, fuse_ino_t p, const char*, fuse_ino_t np, const char*, unsigned) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p, np);
}
void LlLink(fuse_req_t r, fuse_ino_t i, fuse_ino_t np, const char*) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, i, np);
}
void LlCreate(fuse_req_t r, fuse_ino_t p, const char*, mode_t, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}
void LlSetxattr(fuse_req_t r, fuse_ino_t p, const char*, const char*, size_t, int) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}
void LlRemovexattr(fuse_req_t r, fuse_ino_t p, const char*) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}
void LlFallocate(fuse_req_t r, fuse_ino_t p, int, off_t, off_t, struct fuse_file_info*) {
  if (Server* srv = Live(r)) srv->RefuseAt(r, p);
}

struct fuse_lowlevel_ops MakeOps() {
  struct fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = LlInit;
  ops.lookup = LlLookup;
  ops.getattr = LlGetattr;
  ops.setattr = LlSetattr;
  ops.open = LlOpen;
  ops.read = LlRead;
  ops.write = LlWrite;
  ops.fsync = LlFsync;
  ops.opendir = LlOpendir;
  ops.readdir = LlReaddir;
  ops.readdirplus = LlReaddirplus;
  ops.statfs = LlStatfs;
  ops.getxattr = LlGetxattr;
  ops.listxattr = LlListxattr;
  ops.mknod = LlMknod;
  ops.mkdir = LlMkdir;
  ops.unlink = LlUnlink;
  ops.rmdir = LlRmdir;
  ops.symlink = LlSymlink;
  ops.rename = LlRename;
  ops.link = LlLink;
  ops.create = LlCreate;
  ops.setxattr = LlSetxattr;
  ops.removexattr = LlRemovexattr;
  ops.fallocate = LlFallocate;
  return ops;
}

const struct fuse_lowlevel_ops kOps = MakeOps();

// The errno every refused mutation gets. EPERM rather than EROFS: the mount is writable
// (file data can be written in place), only the namespace and sizes are fixed.
constexpr int kRefused = EPERM;

uint64_t AllocatedBytes(const Inode& n) {
  uint64_t sum = 0;
  for (const Extent& e : n.extents) sum += e.len;
  return sum;
}

}  // namespace

Server::Server(DeviceView dev, ServerOptions opts) : dev_(std::move(dev)), opts_(std::move(opts)) {
  direct_io_.store(opts_.direct_io);
  unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  max_threads_ = opts_.max_threads ? opts_.max_threads : std::max(4u, 2 * cpus);
  famfs_native::InstallFaultHandlers();
}

Server::~Server() { Stop(); }

struct fuse_session* Server::NewSession() {
  std::string o = "fsname=" + opts_.fsname + ",subtype=" + opts_.subtype +
                  ",default_permissions,allow_other,max_read=" + std::to_string(opts_.max_write);
  if (opts_.read_only) o += ",ro";
  std::vector<std::string> argv_s = {"famfs-fused", "-o", o};
  if (opts_.debug) argv_s.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(&s[0]);
  struct fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  struct fuse_session* se = fuse_session_new(&args, &kOps, sizeof kOps, this);
  fuse_opt_free_args(&args);
  return se;
}

std::string Server::Start(TablePtr initial) {
  if (running_.load()) return "already running";
  std::atomic_store(&table_, std::move(initial));
  session_ = NewSession();
  if (session_ == nullptr) return "fuse_session_new failed (bad options?)";
  if (fuse_session_mount(session_, opts_.mountpoint.c_str()) != 0) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    return "mounting " + opts_.mountpoint + " failed";
  }
  StartLoop();
  // The connection id names /sys/fs/fuse/connections/<id> (used to abort a stuck unmount).
  // stat() needs the loop running: the kernel asks for the root's attributes.
  struct stat st;
  if (stat(opts_.mountpoint.c_str(), &st) == 0) {
    conn_id_ = (static_cast<uint64_t>(major(st.st_dev)) << 20) | minor(st.st_dev);
  }
  return std::string();
}

// Writes 1 to /sys/fs/fuse/connections/<id>/abort, mounting fusectl there first if needed.
static void AbortConnection(uint64_t conn_id) {
  const char* dir = "/sys/fs/fuse/connections";
  std::string p = std::string(dir) + "/" + std::to_string(conn_id) + "/abort";
  if (access(p.c_str(), F_OK) != 0) mount("fusectl", dir, "fusectl", 0, nullptr);
  int fd = open(p.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t w = write(fd, "1", 1);
    (void)w;
    close(fd);
  }
}

void Server::StartLoop() {
  running_.store(true);
  loop_done_.store(false);
  loop_ = std::thread([this] {
    // Termination signals belong to the JS main thread (it unmounts); libfuse workers inherit
    // this mask. SIGBUS/SIGSEGV stay deliverable so guarded copies work here.
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGCHLD}) sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    struct fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, opts_.clone_fd ? 1 : 0);
    fuse_loop_cfg_set_max_threads(cfg, max_threads_);
    fuse_loop_cfg_set_idle_threads(cfg, max_threads_);
    fuse_session_loop_mt(session_, cfg);
    fuse_loop_cfg_destroy(cfg);
    loop_done_.store(true);
  });
}

void Server::Stop() {
  if (!running_.exchange(false)) return;
  fuse_session_exit(session_);
  // Closes our device fd and detaches the mount; once the superblock goes, every worker's read
  // on its cloned fd returns ENODEV and the loop ends. An adopted session has no mountpoint in
  // libfuse's eyes: detach it ourselves.
  if (adopted_) {
    umount2(opts_.mountpoint.c_str(), MNT_DETACH);
  } else {
    fuse_session_unmount(session_);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (!loop_done_.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!loop_done_.load() && conn_id_ != 0) {
    // Something still holds the superblock (an open file, a bind mount): sever the connection
    // so the workers stop; holders see ENOTCONN, which is what a stopped server means.
    AbortConnection(conn_id_);
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!loop_done_.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (!loop_done_.load()) {
    // Never hang the caller (SIGTERM must end the process): leave the workers to process exit.
    fprintf(stderr, "{\"level\":40,\"msg\":\"FUSE workers did not stop; leaving them to process exit\"}\n");
    loop_.detach();
    session_ = nullptr;
    return;
  }
  if (loop_.joinable()) loop_.join();
  fuse_session_destroy(session_);
  session_ = nullptr;
}

HandoverParams Server::handover_params() const {
  std::lock_guard<std::mutex> g(mu_);
  HandoverParams p = params_;
  p.conn_id = conn_id_;
  return p;
}

bool Server::HandoverTo(const std::string& path, std::string* err) {
  if (!running_.load() || session_ == nullptr) {
    *err = "not serving";
    return false;
  }
  handing_over_.store(true);
  // The session fd first (the adopter reads and answers on it), then every other /dev/fuse fd
  // (libfuse's per-worker clones): passing them keeps their queues alive after we exit, so the
  // kernel can resend what they hold instead of aborting it.
  int master = fuse_session_fd(session_);
  std::vector<int> fds = {master};
  for (int fd : FuseDeviceFds()) {
    if (fd != master) fds.push_back(fd);
  }
  HandoverParams p = handover_params();
  char json[256];
  // heldUntilExit: we keep the connection open until this process is gone (see handover_conn_).
  snprintf(json, sizeof json,
           "{\"protoMajor\":%u,\"protoMinor\":%u,\"maxReadahead\":%u,\"connectionId\":%llu,\"pid\":%d,"
           "\"heldUntilExit\":true}",
           p.proto_major, p.proto_minor, p.max_readahead, static_cast<unsigned long long>(p.conn_id), getpid());
  if (handover_conn_ >= 0) close(handover_conn_);
  handover_conn_ = -1;
  if (!HandoverSend(path, fds, json, err, &handover_conn_)) {
    CancelHandover();
    return false;
  }
  return true;
}

void Server::CancelHandover() {
  if (handover_conn_ >= 0) close(handover_conn_);
  handover_conn_ = -1;
  if (!handing_over_.exchange(false)) return;
  // Requests dropped meanwhile sit in our queues: have the kernel deliver them again.
  if (session_ != nullptr) NotifyResend(fuse_session_fd(session_));
}

void Server::Abandon() {
  // The connection now belongs to another process: never unmount or abort it from here.
  handing_over_.store(true);
  running_.store(false);
}

std::string Server::Adopt(int fd, const HandoverParams& params, TablePtr initial) {
  if (running_.load()) return "already running";
  std::atomic_store(&table_, std::move(initial));
  // Same options as the original mount: libfuse checks init()'s max_read against them.
  session_ = NewSession();
  if (session_ == nullptr) return "fuse_session_new failed";
  // "/dev/fd/N": libfuse takes the descriptor as the session fd and mounts nothing.
  std::string dev = "/dev/fd/" + std::to_string(fd);
  if (fuse_session_mount(session_, dev.c_str()) != 0) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    return "adopting fd " + std::to_string(fd) + " failed";
  }
  adopted_ = true;
  conn_id_ = params.conn_id;
  // The kernel will not send INIT again: feed libfuse a local one with the negotiated protocol
  // so its session state is initialised. Its reply names no pending request; the kernel
  // rejects it (ENOENT) and libfuse ignores that.
  struct {
    struct fuse_in_header h;
    struct fuse_init_in a;
  } init;
  std::memset(&init, 0, sizeof init);
  init.h.len = sizeof init;
  init.h.opcode = FUSE_INIT;
  init.h.unique = 2;  // never outstanding: the kernel's INIT was answered long ago
  init.a.major = params.proto_major;
  init.a.minor = std::min<uint32_t>(params.proto_minor, FUSE_KERNEL_MINOR_VERSION);
  init.a.max_readahead = params.max_readahead;
  init.a.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS | FUSE_PARALLEL_DIROPS | FUSE_ASYNC_DIO |
                 FUSE_EXPLICIT_INVAL_DATA | FUSE_MAX_PAGES;
  struct fuse_buf b;
  std::memset(&b, 0, sizeof b);
  b.mem = &init;
  b.size = sizeof init;
  fuse_session_process_buf(session_, &b);
  if (!initialized_.load() || fuse_session_exited(session_)) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    return "local INIT for the adopted connection failed";
  }
  StartLoop();
  // Whatever the old server read and dropped while handing over: deliver it to us.
  int rc = NotifyResend(fd);
  if (rc != 0) fprintf(stderr, "{\"level\":40,\"msg\":\"FUSE_NOTIFY_RESEND failed\",\"errno\":%d}\n", -rc);
  return std::string();
}

void Server::FinishAdoption(const std::vector<int>& extra_fds) {
  if (session_ != nullptr) NotifyResend(fuse_session_fd(session_));
  for (int fd : extra_fds) close(fd);
}

unsigned Server::Update(TablePtr next) {
  TablePtr old = std::atomic_exchange(&table_, next);
  if (!old || !NotifyReady()) return 0;
  unsigned sent = 0;
  std::vector<const Inode*> removed;
  for (const auto& kv : old->inodes) {
    const Inode& o = kv.second;
    const Inode* n = next->Find(o.ino);
    if (n == nullptr) {
      removed.push_back(&o);
      continue;
    }
    if (n->SameAs(o) && n->subdirs == o.subdirs) continue;
    if (n->parent != o.parent || n->name != o.name) {
      fuse_lowlevel_notify_inval_entry(session_, o.parent, o.name.c_str(), o.name.size());
      sent++;
    }
    // Data moved: drop the cached pages too; otherwise only the attributes.
    bool data_changed = n->interleaved != o.interleaved || n->chunk != o.chunk || n->extents.size() != o.extents.size();
    for (size_t i = 0; !data_changed && i < n->extents.size(); i++) {
      data_changed = n->extents[i].offset != o.extents[i].offset || n->extents[i].len != o.extents[i].len;
    }
    fuse_lowlevel_notify_inval_inode(session_, o.ino, data_changed ? 0 : -1, 0);
    sent++;
  }
  // Deepest first (children have larger log indexes than their parents), so a directory is
  // empty in the kernel's dcache by the time its own delete notification arrives.
  std::sort(removed.begin(), removed.end(), [](const Inode* a, const Inode* b) { return a->ino > b->ino; });
  for (const Inode* o : removed) {
    int rc = fuse_lowlevel_notify_delete(session_, o->parent, o->ino, o->name.c_str(), o->name.size());
    if (rc != 0 && rc != -ENOENT && rc != -EBUSY) {
      fuse_lowlevel_notify_inval_entry(session_, o->parent, o->name.c_str(), o->name.size());
    }
    // Drop cached pages (and mapped pages) of the deleted file: its memory is not ours anymore.
    fuse_lowlevel_notify_inval_inode(session_, o->ino, 0, 0);
    sent += 2;
  }
  return sent;
}

void Server::SetStatfs(const StatfsTotals& t) {
  std::lock_guard<std::mutex> g(mu_);
  statfs_ = t;
}

void Server::SetFileDirectIo(uint64_t ino, bool on) {
  std::lock_guard<std::mutex> g(mu_);
  if (on) {
    direct_files_.insert(ino);
  } else {
    direct_files_.erase(ino);
  }
}

int64_t FenceClockNs() {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

bool Server::Fenced() const {
  int64_t d = fence_deadline_ns();
  return d != INT64_MAX && FenceClockNs() >= d;
}

bool Server::failed() const { return local_failed_.load() || (dev_.is_failed && dev_.is_failed()); }

std::vector<FaultRecord> Server::faults() const {
  std::lock_guard<std::mutex> g(mu_);
  return faults_;
}

void Server::RecordFault(const famfs_native::Fault& f, uint64_t ino, const char* op) {
  counters_.faults++;
  local_failed_.store(true);
  {
    std::lock_guard<std::mutex> g(mu_);
    if (faults_.size() < 64) faults_.push_back({f, ino, op});
  }
  if (dev_.on_fault) dev_.on_fault(f);
  fprintf(stderr,
          "{\"level\":50,\"msg\":\"memory error while serving\",\"op\":\"%s\",\"ino\":%llu,\"signo\":%d,"
          "\"code\":%d,\"addr\":\"0x%llx\"}\n",
          op, static_cast<unsigned long long>(ino), f.signo, f.code, static_cast<unsigned long long>(f.addr));
}

bool Server::CheckRange(const std::vector<Piece>& pieces) const {
  for (const Piece& p : pieces) {
    if (p.device_offset > dev_.size || p.len > dev_.size - p.device_offset) return false;
  }
  return true;
}

// Runs a guarded cache operation over every device range of file `ino`.
bool Server::ForFileRanges(uint64_t ino, const char* what, bool (*op)(const void*, size_t, famfs_native::Fault*),
                           famfs_native::Fault* fault, std::string* err) {
  TablePtr t = table();
  const Inode* n = t->Find(ino);
  if (n == nullptr || n->kind != Kind::kFile) {
    *err = "ENOENT";
    return false;
  }
  std::vector<Piece> pieces;
  if (!n->MapAll(&pieces) || !CheckRange(pieces)) {
    *err = "EIO";
    return false;
  }
  for (const Piece& p : pieces) {
    if (!op(dev_.base + p.device_offset, p.len, fault)) {
      RecordFault(*fault, ino, what);
      *err = "EIO";
      return false;
    }
  }
  return true;
}

bool Server::FlushFile(uint64_t ino, famfs_native::Fault* fault, std::string* err) {
  return ForFileRanges(ino, "flush", famfs_native::GuardedFlush, fault, err);
}

bool Server::InvalidateFile(uint64_t ino, famfs_native::Fault* fault, std::string* err) {
  if (!ForFileRanges(ino, "invalidate", famfs_native::GuardedInvalidate, fault, err)) return false;
  // Then the kernel's page cache (and any mapped pages) of this inode on this host.
  if (NotifyReady()) fuse_lowlevel_notify_inval_inode(session_, ino, 0, 0);
  return true;
}

// ---------------------------------------------------------------- request handlers

void Server::OnInit(struct fuse_conn_info* conn) {
  conn->want &= ~(FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                  FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_AUTO_INVAL_DATA);
  auto want_if = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want_if(FUSE_CAP_READDIRPLUS);
  want_if(FUSE_CAP_PARALLEL_DIROPS);
  want_if(FUSE_CAP_ASYNC_READ);
  want_if(FUSE_CAP_ASYNC_DIO);
  // Cached pages are dropped only when we say so (handoff invalidate, delete), never because
  // attributes were refreshed: file data in famfs changes behind the kernel's back anyway.
  want_if(FUSE_CAP_EXPLICIT_INVAL_DATA);
  conn->max_write = opts_.max_write;
  conn->max_read = opts_.max_write;  // must match the max_read mount option
  conn->max_readahead = opts_.max_write;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  {
    std::lock_guard<std::mutex> g(mu_);
    params_.proto_major = conn->proto_major;
    params_.proto_minor = conn->proto_minor;
    params_.max_readahead = conn->max_readahead;
  }
  initialized_.store(true);
}

void Server::FillStat(const Table&, const Inode& n, struct stat* st) const {
  std::memset(st, 0, sizeof *st);
  st->st_ino = n.ino;
  st->st_mode = (n.kind == Kind::kDir ? S_IFDIR : S_IFREG) | (n.mode & 07777);
  st->st_nlink = n.kind == Kind::kDir ? 2 + n.subdirs : 1;
  st->st_uid = n.uid;
  st->st_gid = n.gid;
  st->st_size = n.kind == Kind::kDir ? 4096 : static_cast<off_t>(n.size);
  st->st_blksize = static_cast<blksize_t>(opts_.max_write);
  st->st_blocks = n.kind == Kind::kDir ? 8 : static_cast<blkcnt_t>(AllocatedBytes(n) / 512);
  st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = static_cast<time_t>(opts_.mount_time);
}

void Server::ReplyEntry(fuse_req_t req, const Table& t, const Inode& n) {
  struct fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = n.ino;
  e.generation = 1;  // inode numbers come from log indexes and are never reused
  FillStat(t, n, &e.attr);
  e.attr_timeout = opts_.attr_timeout;
  e.entry_timeout = opts_.entry_timeout;
  fuse_reply_entry(req, &e);
}

void Server::Refuse(fuse_req_t req) {
  counters_.refused++;
  fuse_reply_err(req, kRefused);
}

bool Server::ReadOnlyHere(const Table& t, uint64_t ino) const {
  if (opts_.read_only || !dev_.writable) return true;
  GuardPtr g = std::atomic_load(&guard_);
  if (!g || g->read_only.empty()) return false;
  // Up the tree: a guarded directory covers every file under it, unless a writable entry on
  // the way (the file itself or a directory between) says this host publishes it read-write.
  bool guarded = false;
  uint64_t cur = ino;
  for (int depth = 0; depth < 4096; depth++) {
    if (g->writable.count(cur) != 0) return false;
    if (g->read_only.count(cur) != 0) guarded = true;
    if (cur == kRootIno) break;
    const Inode* n = t.Find(cur);
    if (n == nullptr) break;
    cur = n->parent;
  }
  return guarded;
}

void Server::RefuseAt(fuse_req_t req, uint64_t ino) {
  TablePtr t = table();
  if (t && ReadOnlyHere(*t, ino)) {
    counters_.refused++;
    fuse_reply_err(req, EROFS);
    return;
  }
  Refuse(req);
}

void Server::RefuseAt(fuse_req_t req, uint64_t ino, uint64_t other) {
  TablePtr t = table();
  if (t && (ReadOnlyHere(*t, ino) || ReadOnlyHere(*t, other))) {
    counters_.refused++;
    fuse_reply_err(req, EROFS);
    return;
  }
  Refuse(req);
}

void Server::OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  counters_.lookups++;
  TablePtr t = table();
  const Inode* n = t->Lookup(parent, name);
  // No negative entry is cached (plain ENOENT), so a file created later is found at once.
  if (n == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  ReplyEntry(req, *t, *n);
}

void Server::OnGetattr(fuse_req_t req, fuse_ino_t ino) {
  TablePtr t = table();
  const Inode* n = t->Find(ino);
  if (n == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  FillStat(*t, *n, &st);
  fuse_reply_attr(req, &st, opts_.attr_timeout);
}

void Server::OnSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set) {
  TablePtr t = table();
  const Inode* n = t->Find(ino);
  if (n == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  // Served read-only here: no change at all, not even a same-size truncate (O_TRUNC, truncate(2)).
  if (to_set != 0 && ReadOnlyHere(*t, ino)) {
    counters_.refused++;
    fuse_reply_err(req, EROFS);
    return;
  }
  bool sets_size = (to_set & FUSE_SET_ATTR_SIZE) != 0;
  if (sets_size && (n->kind != Kind::kFile || static_cast<uint64_t>(attr->st_size) != n->size)) {
    Refuse(req);  // famfs files are pre-allocated: no truncate, no growth
    return;
  }
  const int meta = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID;
  const int times = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW;
  // A same-size truncate carries mtime/ctime updates: it changes nothing, so it succeeds.
  if ((to_set & meta) || (!sets_size && (to_set & times))) {
    Refuse(req);
    return;
  }
  struct stat st;
  FillStat(*t, *n, &st);
  fuse_reply_attr(req, &st, opts_.attr_timeout);
}

void Server::OnOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  TablePtr t = table();
  const Inode* n = t->Find(ino);
  if (n == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (n->kind == Kind::kDir) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  // O_TRUNC without write access still changes the file (the kernel sends the truncate as a
  // setattr after this open, which refuses it too): refused here already.
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0) {
    if (ReadOnlyHere(*t, ino)) {
      counters_.refused++;
      fuse_reply_err(req, EROFS);
      return;
    }
    if (n->read_only) {
      Refuse(req);
      return;
    }
  }
  bool direct = direct_io_.load();
  if (!direct) {
    std::lock_guard<std::mutex> g(mu_);
    direct = direct_files_.count(ino) != 0;
  }
  if (direct) {
    fi->direct_io = 1;
  } else {
    // Keep pages across opens; they are dropped only by an explicit invalidate (handoff) or delete.
    fi->keep_cache = 1;
  }
  fuse_reply_open(req, fi);
}

// The live file behind an open handle, or nullptr after replying the error.
const Inode* Server::OpenFile(fuse_req_t req, const TablePtr& t, fuse_ino_t ino) {
  const Inode* n = t->Find(ino);
  if (n == nullptr) {
    // Deleted while open: its memory may belong to someone else now. Never serve it.
    counters_.stale++;
    fuse_reply_err(req, EIO);
    return nullptr;
  }
  if (n->kind != Kind::kFile) {
    fuse_reply_err(req, EISDIR);
    return nullptr;
  }
  return n;
}

void Server::OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  TablePtr t = table();
  const Inode* n = OpenFile(req, t, ino);
  if (n == nullptr) return;
  if (failed()) {
    fuse_reply_err(req, EIO);
    return;
  }
  // Past the self-fence deadline this host cannot prove the master still holds this file's
  // memory for it: it may belong to another volume now. Nothing is read until replay and ack.
  if (Fenced()) {
    counters_.fenced++;
    fuse_reply_err(req, EIO);
    return;
  }
  uint64_t uoff = static_cast<uint64_t>(off);
  if (uoff >= n->size || size == 0) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  uint64_t len = std::min<uint64_t>(size, n->size - uoff);
  thread_local std::vector<Piece> pieces;
  pieces.clear();
  if (!n->MapRange(uoff, len, &pieces) || !CheckRange(pieces)) {
    fuse_reply_err(req, EIO);
    return;
  }
  counters_.reads++;
  counters_.read_bytes += len;
  if (opts_.zero_copy_reads) {
    // The kernel copies straight out of the mapping while handling our writev. A memory error
    // there is a fault in kernel mode: the kernel fails the copy (EFAULT to us), answers the
    // caller EIO itself, and no SIGBUS is raised.
    thread_local std::vector<struct iovec> iov;
    iov.clear();
    for (const Piece& p : pieces) iov.push_back({dev_.base + p.device_offset, p.len});
    int rc = fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
    if (rc == -EFAULT) {
      famfs_native::Fault f;
      f.signo = SIGBUS;
      f.addr = reinterpret_cast<uintptr_t>(iov[0].iov_base);
      RecordFault(f, ino, "read");
    }
    return;
  }
  thread_local std::vector<char> buf;
  if (buf.size() < len) buf.resize(std::max<size_t>(len, opts_.max_write));
  uint64_t done = 0;
  for (const Piece& p : pieces) {
    famfs_native::Fault f;
    if (!famfs_native::GuardedCopy(buf.data() + done, dev_.base + p.device_offset, p.len, &f)) {
      RecordFault(f, ino, "read");
      fuse_reply_err(req, EIO);
      return;
    }
    done += p.len;
  }
  // A copy that ended past the deadline may hold another volume's bytes: never hand it out.
  if (Fenced()) {
    counters_.fenced++;
    fuse_reply_err(req, EIO);
    return;
  }
  fuse_reply_buf(req, buf.data(), len);
}

void Server::OnWrite(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off) {
  TablePtr t = table();
  const Inode* n = OpenFile(req, t, ino);
  if (n == nullptr) return;
  // Also here, not only at open: a descriptor opened while the file was published read-write
  // (before the guard was set) writes nothing once this host serves the file read-only.
  if (ReadOnlyHere(*t, ino)) {
    counters_.refused++;
    fuse_reply_err(req, EROFS);
    return;
  }
  if (n->read_only) {
    Refuse(req);
    return;
  }
  if (failed()) {
    fuse_reply_err(req, EIO);
    return;
  }
  if (Fenced()) {
    counters_.fenced++;
    fuse_reply_err(req, EIO);
    return;
  }
  uint64_t uoff = static_cast<uint64_t>(off);
  if (size == 0) {
    fuse_reply_write(req, 0);
    return;
  }
  if (uoff >= n->size) {
    // Files never grow: a write starting at or past EOF is refused; one crossing EOF is short.
    fuse_reply_err(req, EFBIG);
    return;
  }
  uint64_t len = std::min<uint64_t>(size, n->size - uoff);
  thread_local std::vector<Piece> pieces;
  pieces.clear();
  if (!n->MapRange(uoff, len, &pieces) || !CheckRange(pieces)) {
    fuse_reply_err(req, EIO);
    return;
  }
  uint64_t done = 0;
  for (const Piece& p : pieces) {
    famfs_native::Fault f;
    // Large pieces go out with non-temporal stores: the payload is not read back here, and
    // plain stores would first read every destination line from memory (read-for-ownership)
    // and push the rest of the cache out (1 MiB pieces into a 1 GiB tmpfs mapping on the bench
    // machine: ~35% less CPU per GB). The bytes are also in memory, not only in this CPU's cache,
    // when the write is answered.
    // Small pieces stay plain: their lines may well be read again soon.
    bool ok = p.len >= kStreamWriteMin
                  ? famfs_native::GuardedCopyPersistent(dev_.base + p.device_offset, data + done, p.len, &f)
                  : famfs_native::GuardedCopy(dev_.base + p.device_offset, data + done, p.len, &f);
    if (!ok) {
      RecordFault(f, ino, "write");
      fuse_reply_err(req, EIO);
      return;
    }
    done += p.len;
  }
  counters_.writes++;
  counters_.write_bytes += len;
  fuse_reply_write(req, len);
}

void Server::OnFsync(fuse_req_t req, fuse_ino_t ino) {
  // fsync on famfs = write this host's CPU cache lines of the file back to the shared memory.
  // Fenced, those lines may now cover another volume's memory.
  if (Fenced()) {
    counters_.fenced++;
    fuse_reply_err(req, EIO);
    return;
  }
  famfs_native::Fault f;
  std::string err;
  if (!FlushFile(ino, &f, &err)) {
    fuse_reply_err(req, err == "ENOENT" ? ENOENT : EIO);
    return;
  }
  fuse_reply_err(req, 0);
}

// The directory `ino`, or nullptr after replying the error.
const Inode* Server::Dir(fuse_req_t req, const TablePtr& t, fuse_ino_t ino) {
  const Inode* n = t->Find(ino);
  if (n == nullptr) {
    fuse_reply_err(req, ENOENT);
    return nullptr;
  }
  if (n->kind != Kind::kDir) {
    fuse_reply_err(req, ENOTDIR);
    return nullptr;
  }
  return n;
}

void Server::OnOpendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  TablePtr t = table();
  if (Dir(req, t, ino) == nullptr) return;
  fuse_reply_open(req, fi);
}

void Server::OnReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  TablePtr t = table();
  const Inode* n = Dir(req, t, ino);
  if (n == nullptr) return;
  // Cookies: 1 after ".", 2 after "..", child ino + 3 after a child. Children are sorted by
  // ino, so a cookie stays meaningful even if the table was swapped between two calls.
  std::vector<char> buf(size);
  size_t pos = 0;
  auto add = [&](const char* name, const Inode* who, uint64_t ino_for_dot, off_t next) -> bool {
    size_t need;
    if (plus) {
      struct fuse_entry_param e;
      std::memset(&e, 0, sizeof e);
      if (who != nullptr) {
        FillStat(*t, *who, &e.attr);
        e.ino = who->ino;
        e.generation = 1;
        e.attr_timeout = opts_.attr_timeout;
        e.entry_timeout = opts_.entry_timeout;
      } else {
        e.attr.st_ino = ino_for_dot;
        e.attr.st_mode = S_IFDIR;
      }
      need = fuse_add_direntry_plus(req, buf.data() + pos, size - pos, name, &e, next);
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof st);
      if (who != nullptr) {
        FillStat(*t, *who, &st);
      } else {
        st.st_ino = ino_for_dot;
        st.st_mode = S_IFDIR;
      }
      need = fuse_add_direntry(req, buf.data() + pos, size - pos, name, &st, next);
    }
    if (need > size - pos) return false;
    pos += need;
    return true;
  };
  bool room = true;
  if (off < 1) room = add(".", nullptr, n->ino, 1);
  if (room && off < 2) room = add("..", nullptr, n->parent ? n->parent : n->ino, 2);
  if (room) {
    auto it = n->children.begin();
    if (off >= 2) {
      uint64_t after = static_cast<uint64_t>(off) - 3;
      it = std::upper_bound(n->children.begin(), n->children.end(), after,
                            [](uint64_t v, const std::pair<uint64_t, std::string>& c) { return v < c.first; });
    }
    for (; it != n->children.end(); ++it) {
      const Inode* c = t->Find(it->first);
      if (c == nullptr) continue;
      if (!add(it->second.c_str(), c, 0, static_cast<off_t>(it->first + 3))) break;
    }
  }
  fuse_reply_buf(req, buf.data(), pos);
}

void Server::OnStatfs(fuse_req_t req) {
  StatfsTotals s;
  {
    std::lock_guard<std::mutex> g(mu_);
    s = statfs_;
  }
  struct statvfs v;
  std::memset(&v, 0, sizeof v);
  v.f_bsize = 4096;
  v.f_frsize = 4096;
  v.f_blocks = s.total_bytes / 4096;
  v.f_bfree = s.free_bytes / 4096;
  v.f_bavail = v.f_bfree;
  v.f_files = s.total_inodes;
  v.f_ffree = s.free_inodes;
  v.f_favail = s.free_inodes;
  v.f_namemax = 79;  // famfs relpaths hold at most 79 bytes
  fuse_reply_statfs(req, &v);
}

void Server::OnGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (ino == kRootIno) {
    for (const auto& kv : opts_.root_xattrs) {
      if (kv.first != name) continue;
      if (size == 0) {
        fuse_reply_xattr(req, kv.second.size());
      } else if (size < kv.second.size()) {
        fuse_reply_err(req, ERANGE);
      } else {
        fuse_reply_buf(req, kv.second.data(), kv.second.size());
      }
      return;
    }
  }
  fuse_reply_err(req, ENODATA);
}

void Server::OnListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  std::string names;
  if (ino == kRootIno) {
    for (const auto& kv : opts_.root_xattrs) {
      names += kv.first;
      names.push_back('\0');
    }
  }
  if (size == 0) {
    fuse_reply_xattr(req, names.size());
  } else if (size < names.size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, names.data(), names.size());
  }
}

}  // namespace famfs_fuse
