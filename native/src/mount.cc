// Bind mounts and unmounts with mount(2), mount_setattr(2) and umount2(2): the node plugin's
// publish path without child processes (mount(8) costs a fork+exec, several milliseconds).
//
// Each call runs on the libuv thread pool and settles a Promise: the path lookups it does may
// go to a FUSE server, and the FUSE server may be this very process (all-in-one mode).
//
//   bindMount(source, target, readOnly, flags[]) -> Promise<void>
//       mount(source, target, MS_BIND) when no attribute is asked for. With readOnly or flags, the
//       bind is made detached (open_tree), given those per-mount attributes (mount_setattr) and only
//       then attached (move_mount): every copy mount propagation makes of it (a Bidirectional
//       kubelet dir: the kubelet's and the host's view) is born with them. Setting them after the
//       bind changed this namespace's copy only, and the kubelet's stayed writable. Where those
//       calls are missing: bind, then a remount that keeps the flags the bind inherited. A failed
//       attribute change undoes the bind, so a volume asked for read-only is never left writable.
//   unmount(target, lazy) -> Promise<boolean>
//       umount2(target, lazy ? MNT_DETACH : 0); false when nothing is mounted at target.
//   unmountAll(target, lazy, max) -> Promise<number>
//       umount2 until nothing is left at target (at most max times): how many were unmounted. One
//       thread-pool round trip where a loop of unmount() calls costs one per mount plus the last
//       (an unpublish: the bind and the check that nothing else is stacked there). A failure after
//       some succeeded rejects with `unmounted` set to their number.
//   bindMountIfAlive(source, target, readOnly, flags[], bind, root) -> Promise<'bound' | 'other' | 'dead'>
//       bindMount, made only when bindAlive(bind, root) says 'alive' (else that answer, and nothing
//       is mounted): a publish checks the staging bind it binds from and binds in one job.
//   bindAlive(bind, root) -> Promise<'alive' | 'other' | 'dead'>
//       Whether `bind` is a live bind of `root` (a path in the FUSE mount): stat of both shows the
//       same device and inode ('other' when not: not a mount of it, or missing), and statfs of
//       `bind` succeeds ('dead' when not: a FUSE mount sends statfs to its server, and answers
//       ENOTCONN once the connection is gone, where stat may answer from cached attributes). One
//       thread-pool job for the three calls: three parallel jobs woke three threads and cost a
//       publish two of its three scheduling delays on a busy node.
// Failures reject with an Error whose `code` is the errno name (EBUSY, EPERM, ...).
#include <napi.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "module_init.h"

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif

namespace famfs_native {
namespace {

// From <linux/mount.h>; spelled out so the build does not depend on the installed headers' age.
constexpr uint64_t kAttrRdonly = 0x00000001;
constexpr uint64_t kAttrNosuid = 0x00000002;
constexpr uint64_t kAttrNodev = 0x00000004;
constexpr uint64_t kAttrNoexec = 0x00000008;
constexpr uint64_t kAttrAtimeMask = 0x00000070;
constexpr uint64_t kAttrRelatime = 0x00000000;
constexpr uint64_t kAttrNoatime = 0x00000010;
constexpr uint64_t kAttrStrictatime = 0x00000020;
constexpr uint64_t kAttrNodiratime = 0x00000080;
constexpr unsigned kOpenTreeClone = 1;          // OPEN_TREE_CLONE
constexpr unsigned kMoveMountFEmptyPath = 0x4;  // MOVE_MOUNT_F_EMPTY_PATH

struct MountAttr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

struct BindFlags {
  uint64_t set = 0;
  uint64_t clr = 0;
  unsigned long msFlags = 0;  // the same request in MS_* terms, for the remount fallback
};

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "EIO";
}

bool ParseFlag(const std::string& f, BindFlags* out) {
  if (f == "nosuid") {
    out->set |= kAttrNosuid;
    out->msFlags |= MS_NOSUID;
  } else if (f == "nodev") {
    out->set |= kAttrNodev;
    out->msFlags |= MS_NODEV;
  } else if (f == "noexec") {
    out->set |= kAttrNoexec;
    out->msFlags |= MS_NOEXEC;
  } else if (f == "nodiratime") {
    out->set |= kAttrNodiratime;
    out->msFlags |= MS_NODIRATIME;
  } else if (f == "noatime" || f == "relatime" || f == "strictatime") {
    // The atime mode is one field: clearing the mask and setting one value.
    out->clr |= kAttrAtimeMask;
    out->set = (out->set & ~kAttrAtimeMask) | (f == "noatime"    ? kAttrNoatime
                                               : f == "relatime" ? kAttrRelatime
                                                                 : kAttrStrictatime);
    out->msFlags = (out->msFlags & ~(MS_NOATIME | MS_RELATIME | MS_STRICTATIME)) | (f == "noatime"    ? MS_NOATIME
                                                                                    : f == "relatime" ? MS_RELATIME
                                                                                                      : MS_STRICTATIME);
  } else {
    return false;
  }
  return true;
}

// Per-mount flags a mount carries now (statvfs f_flag), as MS_* for a remount that must keep them.
unsigned long CurrentMsFlags(const std::string& target) {
  struct statvfs sv {};
  if (statvfs(target.c_str(), &sv) != 0) return 0;
  unsigned long ms = 0;
  if (sv.f_flag & ST_NOSUID) ms |= MS_NOSUID;
  if (sv.f_flag & ST_NODEV) ms |= MS_NODEV;
  if (sv.f_flag & ST_NOEXEC) ms |= MS_NOEXEC;
  if (sv.f_flag & ST_NOATIME) ms |= MS_NOATIME;
  if (sv.f_flag & ST_NODIRATIME) ms |= MS_NODIRATIME;
  if (sv.f_flag & ST_RELATIME) ms |= MS_RELATIME;
  return ms;
}

// Whether `bind` is a live bind of `root`: see bindAlive above.
const char* Liveness(const std::string& bind, const std::string& root) {
  struct stat at {};
  struct stat want {};
  if (stat(bind.c_str(), &at) != 0 || stat(root.c_str(), &want) != 0 || at.st_dev != want.st_dev ||
      at.st_ino != want.st_ino)
    return "other";
  struct statfs sf {};
  return statfs(bind.c_str(), &sf) == 0 ? "alive" : "dead";
}

class MountWorker : public Napi::AsyncWorker {
 public:
  MountWorker(Napi::Env env, std::string what)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), what_(std::move(what)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Fail(const std::string& step, int err) {
    err_ = err;
    SetError(what_ + ": " + step + ": " + std::strerror(err));
  }
  void OnError(const Napi::Error& e) override {
    Napi::Error out = Napi::Error::New(Env(), e.Message());
    out.Set("code", Napi::String::New(Env(), ErrnoName(err_)));
    out.Set("errno", Napi::Number::New(Env(), err_));
    deferred_.Reject(out.Value());
  }
  Napi::Promise::Deferred deferred_;
  std::string what_;
  int err_ = 0;
};

class BindWorker : public MountWorker {
 public:
  BindWorker(Napi::Env env, std::string source, std::string target, bool readOnly, BindFlags flags,
             std::string aliveBind = "", std::string aliveRoot = "")
      : MountWorker(env, "bind mount of " + source + " on " + target),
        source_(std::move(source)),
        target_(std::move(target)),
        readOnly_(readOnly),
        flags_(flags),
        aliveBind_(std::move(aliveBind)),
        aliveRoot_(std::move(aliveRoot)) {}

  void Execute() override {
    if (!aliveBind_.empty()) {
      const char* live = Liveness(aliveBind_, aliveRoot_);
      if (std::strcmp(live, "alive") != 0) {
        result_ = live;
        return;
      }
    }
    Bind();
  }
  void OnOK() override { deferred_.Resolve(Napi::String::New(Env(), result_)); }

 private:
  void Bind() {
    uint64_t set = flags_.set | (readOnly_ ? kAttrRdonly : 0);
    if (set != 0 || flags_.clr != 0) {
      // Attributes before attaching: propagated copies are clones of the mount as it is attached.
      int fd = static_cast<int>(syscall(SYS_open_tree, AT_FDCWD, source_.c_str(), kOpenTreeClone | O_CLOEXEC));
      if (fd >= 0) {
        MountAttr attr{set, flags_.clr, 0, 0};
        int err = 0;
        const char* step = nullptr;
        if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
          err = errno;
          step = "mount_setattr on the detached bind";
        } else if (syscall(SYS_move_mount, fd, "", AT_FDCWD, target_.c_str(), kMoveMountFEmptyPath) != 0) {
          err = errno;
          step = "move_mount";
        }
        close(fd);  // a detached bind that was never attached goes with its last fd
        if (step == nullptr) return;
        if (err != ENOSYS) return Fail(step, err);
      } else if (errno != ENOSYS) {
        return Fail("open_tree(OPEN_TREE_CLONE)", errno);
      }
    }
    if (mount(source_.c_str(), target_.c_str(), nullptr, MS_BIND, nullptr) != 0) return Fail("mount(MS_BIND)", errno);
    if (set == 0 && flags_.clr == 0) return;
    MountAttr attr{set, flags_.clr, 0, 0};
    // AT_FDCWD with the path: the bind just made is the topmost mount there.
    long rc = syscall(SYS_mount_setattr, AT_FDCWD, target_.c_str(), 0u, &attr, sizeof attr);
    if (rc == 0) return;
    int err = errno;
    if (err == ENOSYS) {
      // Older kernels: a bind ignores flags on its first mount; a bind remount applies them, and
      // must repeat the flags the bind inherited or it would clear them.
      unsigned long ms = MS_REMOUNT | MS_BIND | CurrentMsFlags(target_) | flags_.msFlags | (readOnly_ ? MS_RDONLY : 0);
      if (flags_.clr & kAttrAtimeMask)
        ms = (ms & ~(MS_NOATIME | MS_RELATIME | MS_STRICTATIME)) |
             (flags_.msFlags & (MS_NOATIME | MS_RELATIME | MS_STRICTATIME));
      if (mount(nullptr, target_.c_str(), nullptr, ms, nullptr) == 0) return;
      err = errno;
    }
    // Never leave the bind writable (or without the flags asked for).
    if (umount2(target_.c_str(), 0) != 0) umount2(target_.c_str(), MNT_DETACH);
    Fail("setting mount attributes (bind undone)", err);
  }

  std::string source_;
  std::string target_;
  bool readOnly_;
  BindFlags flags_;
  std::string aliveBind_;
  std::string aliveRoot_;
  const char* result_ = "bound";
};

class UnmountWorker : public MountWorker {
 public:
  UnmountWorker(Napi::Env env, std::string target, bool lazy)
      : MountWorker(env, "unmount of " + target), target_(std::move(target)), lazy_(lazy) {}

  void Execute() override {
    if (umount2(target_.c_str(), lazy_ ? MNT_DETACH : 0) == 0) {
      unmounted_ = true;
      return;
    }
    const int err = errno;
    // EINVAL: target is not a mount point; ENOENT: it does not exist. Both: nothing to unmount.
    if (err == EINVAL || err == ENOENT) return;
    Fail(lazy_ ? "umount2(MNT_DETACH)" : "umount2", err);
  }
  void OnOK() override { deferred_.Resolve(Napi::Boolean::New(Env(), unmounted_)); }

 private:
  std::string target_;
  bool lazy_;
  bool unmounted_ = false;
};

class UnmountAllWorker : public MountWorker {
 public:
  UnmountAllWorker(Napi::Env env, std::string target, bool lazy, uint32_t max)
      : MountWorker(env, "unmount of " + target), target_(std::move(target)), lazy_(lazy), max_(max) {}

  void Execute() override {
    while (count_ < max_) {
      if (umount2(target_.c_str(), lazy_ ? MNT_DETACH : 0) != 0) {
        const int err = errno;
        if (err == EINVAL || err == ENOENT) return;  // nothing (more) mounted there
        return Fail(lazy_ ? "umount2(MNT_DETACH)" : "umount2", err);
      }
      count_++;
    }
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), count_)); }
  void OnError(const Napi::Error& e) override {
    Napi::Error out = Napi::Error::New(Env(), e.Message());
    out.Set("code", Napi::String::New(Env(), ErrnoName(err_)));
    out.Set("errno", Napi::Number::New(Env(), err_));
    out.Set("unmounted", Napi::Number::New(Env(), count_));
    deferred_.Reject(out.Value());
  }

 private:
  std::string target_;
  bool lazy_;
  uint32_t max_;
  uint32_t count_ = 0;
};

class BindAliveWorker : public MountWorker {
 public:
  BindAliveWorker(Napi::Env env, std::string bind, std::string root)
      : MountWorker(env, "liveness check of " + bind), bind_(std::move(bind)), root_(std::move(root)) {}

  void Execute() override { result_ = Liveness(bind_, root_); }
  void OnOK() override { deferred_.Resolve(Napi::String::New(Env(), result_)); }

 private:
  std::string bind_;
  std::string root_;
  const char* result_ = "other";
};

Napi::Value QueueBind(const Napi::CallbackInfo& info, bool checked) {
  Napi::Env env = info.Env();
  if (info.Length() < (checked ? 6u : 4u) || !info[0].IsString() || !info[1].IsString() || !info[2].IsBoolean() ||
      !info[3].IsArray() || (checked && (!info[4].IsString() || !info[5].IsString()))) {
    throw Napi::TypeError::New(
        env, checked ? "bindMountIfAlive(source: string, target: string, readOnly: boolean, "
                       "flags: string[], bind: string, root: string)"
                     : "bindMount(source: string, target: string, readOnly: boolean, flags: string[])");
  }
  BindFlags flags;
  Napi::Array arr = info[3].As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString() || !ParseFlag(v.As<Napi::String>().Utf8Value(), &flags)) {
      throw Napi::TypeError::New(env, "bindMount: unsupported flag " + v.ToString().Utf8Value());
    }
  }
  auto* w =
      checked ? new BindWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::String>(), info[2].As<Napi::Boolean>(),
                               flags, info[4].As<Napi::String>(), info[5].As<Napi::String>())
              : new BindWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::String>(), info[2].As<Napi::Boolean>(),
                               flags);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value BindMount(const Napi::CallbackInfo& info) { return QueueBind(info, false); }
Napi::Value BindMountIfAlive(const Napi::CallbackInfo& info) { return QueueBind(info, true); }

Napi::Value Unmount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsBoolean())
    throw Napi::TypeError::New(env, "unmount(target: string, lazy: boolean)");
  auto* w = new UnmountWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::Boolean>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value UnmountAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsBoolean() || !info[2].IsNumber())
    throw Napi::TypeError::New(env, "unmountAll(target: string, lazy: boolean, max: number)");
  auto* w = new UnmountAllWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::Boolean>(),
                                 info[2].As<Napi::Number>().Uint32Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value BindAlive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    throw Napi::TypeError::New(env, "bindAlive(bind: string, root: string)");
  auto* w = new BindAliveWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::String>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

void Init(Napi::Env env, Napi::Object exports) {
  Napi::Object m = Napi::Object::New(env);
  m.Set("bindMount", Napi::Function::New(env, BindMount, "bindMount"));
  m.Set("unmount", Napi::Function::New(env, Unmount, "unmount"));
  m.Set("unmountAll", Napi::Function::New(env, UnmountAll, "unmountAll"));
  m.Set("bindAlive", Napi::Function::New(env, BindAlive, "bindAlive"));
  m.Set("bindMountIfAlive", Napi::Function::New(env, BindMountIfAlive, "bindMountIfAlive"));
  exports.Set("mount", m);
}

}  // namespace

FAMFS_NATIVE_MODULE_INIT(mount, Init);

}  // namespace famfs_native
