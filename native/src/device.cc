// DeviceMapping (open/map a devdax device or emulation file) and its JS face, DaxDevice.
#include "device.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "module_init.h"

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

namespace famfs_native {
namespace {

constexpr uint64_t kMaxSafeInteger = 9007199254740991ULL;  // 2^53 - 1

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "EIO";
}

std::string ErrnoText(int err) { return std::strerror(err); }

[[noreturn]] void ThrowOpen(const std::string& code, const std::string& msg) { throw OpenError(code, msg); }

[[noreturn]] void ThrowSys(const std::string& what, const std::string& path, int err) {
  ThrowOpen(ErrnoName(err), what + " " + path + ": " + ErrnoText(err));
}

bool ReadSysfsNumber(const std::string& file, uint64_t* out) {
  std::ifstream in(file);
  if (!in) return false;
  std::string text;
  std::getline(in, text);
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 0);
  if (errno != 0 || end == text.c_str()) return false;
  *out = v;
  return true;
}

std::string SysfsDir(dev_t rdev) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "/sys/dev/char/%u:%u", major(rdev), minor(rdev));
  return buf;
}

// A devdax device's sysfs node belongs to the "dax" subsystem (bus/dax or class/dax).
bool IsDevdax(const std::string& sysdir) {
  char target[512];
  const ssize_t n = readlink((sysdir + "/subsystem").c_str(), target, sizeof target - 1);
  if (n <= 0) return false;
  target[n] = '\0';
  const char* slash = std::strrchr(target, '/');
  return std::strcmp(slash != nullptr ? slash + 1 : target, "dax") == 0;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

const char* SignalName(int signo) { return signo == SIGBUS ? "SIGBUS" : signo == SIGSEGV ? "SIGSEGV" : "signal"; }

}  // namespace

// ---- DeviceMapping --------------------------------------------------------------------------

std::shared_ptr<DeviceMapping> DeviceMapping::Open(const OpenOptions& o) {
  std::shared_ptr<DeviceMapping> dev(new DeviceMapping());
  dev->path_ = o.path;
  dev->read_only_ = o.read_only;
  const int access = o.read_only ? O_RDONLY : O_RDWR;

  struct stat st;
  if (stat(o.path.c_str(), &st) != 0) {
    const int err = errno;
    if (err != ENOENT || !o.create) ThrowSys("cannot open device", o.path, err);
    if (o.read_only) ThrowOpen("EINVAL", "cannot create " + o.path + " read-only");
    if (o.create_size == 0) ThrowOpen("EINVAL", "cannot create " + o.path + " with size 0");
    dev->fd_ = open(o.path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
    if (dev->fd_ < 0) ThrowSys("cannot create", o.path, errno);
  } else if (S_ISCHR(st.st_mode) || S_ISREG(st.st_mode)) {
    dev->fd_ = open(o.path.c_str(), access | O_CLOEXEC);
    if (dev->fd_ < 0) ThrowSys("cannot open device", o.path, errno);
  } else {
    ThrowOpen("EINVAL", o.path + " is neither a devdax character device nor a regular file");
  }
  // From here on the fd is what counts (the path may have been replaced since stat()).
  if (fstat(dev->fd_, &st) != 0) ThrowSys("cannot stat", o.path, errno);

  if (S_ISCHR(st.st_mode)) {
    dev->kind_ = DeviceKind::kDevdax;
    const std::string sysdir = SysfsDir(st.st_rdev);
    if (!IsDevdax(sysdir)) {
      ThrowOpen("ENOTDAX", o.path + " is a character device but not a devdax device (" + sysdir +
                               " is not in the dax subsystem); use /dev/daxX.Y in devdax mode or an emulation file");
    }
    uint64_t size = 0, align = 0;
    if (!ReadSysfsNumber(sysdir + "/size", &size) || size == 0) {
      ThrowOpen("ENOTDAX", "cannot read the size of devdax " + o.path + " from " + sysdir + "/size");
    }
    if (!ReadSysfsNumber(sysdir + "/align", &align) && !ReadSysfsNumber(sysdir + "/device/align", &align)) {
      align = 2u << 20;  // kernels without the attribute use 2 MiB pages for devdax
    }
    if (align == 0 || (align & (align - 1)) != 0) align = 2u << 20;
    if (o.create && o.create_size > size) {
      ThrowOpen("ERANGE", "devdax " + o.path + " holds " + std::to_string(size) + " bytes, asked for " +
                              std::to_string(o.create_size));
    }
    dev->device_size_ = size - size % align;  // a devdax mapping is made of whole pages
    dev->alignment_ = align;
  } else if (S_ISREG(st.st_mode)) {
    dev->kind_ = DeviceKind::kFile;
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (o.create && o.create_size != 0 && size != o.create_size) {
      if (size != 0) {
        ThrowOpen("EEXIST", o.path + " exists with " + std::to_string(size) + " bytes, asked to create " +
                                std::to_string(o.create_size) + "; remove it first or open it without create");
      }
      if (o.read_only) ThrowOpen("EINVAL", "cannot size " + o.path + " read-only");
      if (ftruncate(dev->fd_, static_cast<off_t>(o.create_size)) != 0) ThrowSys("cannot size", o.path, errno);
      size = o.create_size;
    }
    if (size == 0) ThrowOpen("EINVAL", o.path + " is an empty file: give a size to create the emulated device");
    dev->device_size_ = size;
    dev->alignment_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  } else {
    ThrowOpen("EINVAL", o.path + " is neither a devdax character device nor a regular file");
  }

  // The window to map: aligned start; aligned length unless it runs to the end of a file.
  const uint64_t align = dev->alignment_;
  if (o.map_offset % align != 0) {
    ThrowOpen("EINVAL", "map offset " + Hex(o.map_offset) + " of " + o.path +
                            " is not a multiple of the device alignment " + Hex(align));
  }
  if (o.map_offset >= dev->device_size_) {
    ThrowOpen("ERANGE", "map offset " + Hex(o.map_offset) + " is beyond the end of " + o.path + " (" +
                            std::to_string(dev->device_size_) + " bytes)");
  }
  const uint64_t length = o.map_length != 0 ? o.map_length : dev->device_size_ - o.map_offset;
  if (length > dev->device_size_ - o.map_offset) {
    ThrowOpen("ERANGE", "map window " + Hex(o.map_offset) + "+" + Hex(length) + " exceeds " + o.path + " (" +
                            std::to_string(dev->device_size_) + " bytes)");
  }
  const bool to_end = o.map_offset + length == dev->device_size_;
  if (length % align != 0 && !(dev->kind_ == DeviceKind::kFile && to_end)) {
    ThrowOpen("EINVAL", "map length " + Hex(length) + " of " + o.path + " is not a multiple of the device alignment " +
                            Hex(align));
  }

  // MAP_SYNC (only valid with MAP_SHARED_VALIDATE) makes CPU flushes sufficient for persistence
  // on a DAX mapping; devices/filesystems without DAX refuse it, and then plain MAP_SHARED is
  // what we get (tmpfs emulation files always land there).
  const int prot = PROT_READ | (o.read_only ? 0 : PROT_WRITE);
  void* p = MAP_FAILED;
  if (!o.read_only) {
    p = mmap(nullptr, length, prot, MAP_SHARED_VALIDATE | MAP_SYNC, dev->fd_, static_cast<off_t>(o.map_offset));
    dev->map_sync_ = p != MAP_FAILED;
  }
  if (p == MAP_FAILED) {
    p = mmap(nullptr, length, prot, MAP_SHARED, dev->fd_, static_cast<off_t>(o.map_offset));
    if (p == MAP_FAILED) ThrowSys("cannot map", o.path, errno);
  }
  dev->base_ = static_cast<uint8_t*>(p);
  dev->size_ = length;
  dev->map_offset_ = o.map_offset;
  InstallFaultHandlers();
  return dev;
}

DeviceMapping::~DeviceMapping() {
  if (base_ != nullptr) munmap(base_, size_);
  if (fd_ >= 0) close(fd_);
}

void DeviceMapping::MarkFailed(const char* why) {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (failure_message_.empty()) failure_message_ = why != nullptr && *why != '\0' ? why : "device marked failed";
  }
  failed_.store(true, std::memory_order_release);
}

std::string DeviceMapping::failure_message() const {
  std::lock_guard<std::mutex> lock(failure_mu_);
  return failure_message_;
}

std::string DeviceMapping::RecordFault(const Fault& fault, const char* what, uint64_t off, size_t n) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(base_);
  const bool inside = fault.addr >= lo && fault.addr - lo < size_;
  std::string msg = std::string(SignalName(fault.signo)) + " (si_code " + std::to_string(fault.code) + ") during " +
                    what + " of " + std::to_string(n) + " bytes at offset " + Hex(off) + " of " + path_;
  if (inside) {
    msg += ": memory fault at device offset " + Hex(map_offset_ + (fault.addr - lo)) +
           " (poisoned memory, device removed, or emulation file shrunk). The device is now marked failed: stop "
           "using it, unmount what is served from it, check the device (or its backing file) and reopen it";
    MarkFailed(msg.c_str());
  } else {
    msg += ": memory fault at address " + Hex(fault.addr) +
           ", outside this device's mapping (in the other buffer); this device is not marked failed";
  }
  return msg;
}

IoStatus DeviceMapping::ReadAt(uint64_t off, void* dst, size_t n, Fault* fault) {
  if (failed()) return IoStatus::kFailed;
  if (!InRange(off, n)) return IoStatus::kRange;
  Fault f;
  if (GuardedCopy(dst, base_ + off, n, &f)) return IoStatus::kOk;
  RecordFault(f, "read", off, n);
  if (fault != nullptr) *fault = f;
  return IoStatus::kFault;
}

IoStatus DeviceMapping::WriteAt(uint64_t off, const void* src, size_t n, Fault* fault) {
  if (failed()) return IoStatus::kFailed;
  if (read_only_) return IoStatus::kReadOnly;
  if (!InRange(off, n)) return IoStatus::kRange;
  Fault f;
  if (GuardedCopy(base_ + off, src, n, &f)) return IoStatus::kOk;
  RecordFault(f, "write", off, n);
  if (fault != nullptr) *fault = f;
  return IoStatus::kFault;
}

IoStatus DeviceMapping::CopyWithin(uint64_t dst_off, uint64_t src_off, size_t n, Fault* fault) {
  if (failed()) return IoStatus::kFailed;
  if (read_only_) return IoStatus::kReadOnly;
  if (!InRange(dst_off, n) || !InRange(src_off, n)) return IoStatus::kRange;
  Fault f;
  if (GuardedMove(base_ + dst_off, base_ + src_off, n, &f)) return IoStatus::kOk;
  RecordFault(f, "copy", src_off, n);
  if (fault != nullptr) *fault = f;
  return IoStatus::kFault;
}

bool DeviceMapping::Discard(uint64_t off, size_t n) {
  if (failed() || read_only_ || kind_ != DeviceKind::kFile || !InRange(off, n) || n == 0) return false;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (off % page != 0 || n % page != 0) return false;
  return fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(map_offset_ + off),
                   static_cast<off_t>(n)) == 0;
}

int DeviceMapping::TryLockWriter() {
  for (;;) {
    if (flock(fd_, LOCK_EX | LOCK_NB) == 0) return 1;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return 0;
    return -errno;
  }
}

void DeviceMapping::UnlockWriter() {
  while (flock(fd_, LOCK_UN) != 0 && errno == EINTR) {
  }
}

namespace {
// Byte 0 of the inode, write-locked: what TryLockHostSlots takes (any fixed byte would do; the lock
// names a range of the inode, it does not touch the device's bytes).
int HostSlotsLock(int fd, short type, int cmd) {
  struct flock l;
  std::memset(&l, 0, sizeof l);
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = 0;
  l.l_len = 1;
  return fcntl(fd, cmd, &l);
}
}  // namespace

int DeviceMapping::TryLockHostSlots() {
  for (;;) {
    if (HostSlotsLock(fd_, F_WRLCK, F_OFD_SETLK) == 0) return 1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) return 0;
    return -errno;
  }
}

void DeviceMapping::UnlockHostSlots() {
  while (HostSlotsLock(fd_, F_UNLCK, F_OFD_SETLK) != 0 && errno == EINTR) {
  }
}

IoStatus DeviceMapping::FlushRange(uint64_t off, size_t n, Fault* fault) {
  if (failed()) return IoStatus::kFailed;
  if (!InRange(off, n)) return IoStatus::kRange;
  Fault f;
  if (GuardedFlush(base_ + off, n, &f)) return IoStatus::kOk;
  RecordFault(f, "flush", off, n);
  if (fault != nullptr) *fault = f;
  return IoStatus::kFault;
}

IoStatus DeviceMapping::InvalidateRange(uint64_t off, size_t n, Fault* fault) {
  if (failed()) return IoStatus::kFailed;
  if (!InRange(off, n)) return IoStatus::kRange;
  Fault f;
  if (GuardedInvalidate(base_ + off, n, &f)) return IoStatus::kOk;
  RecordFault(f, "invalidate", off, n);
  if (fault != nullptr) *fault = f;
  return IoStatus::kFault;
}

// ---- JS face: class DaxDevice ---------------------------------------------------------------

namespace {

// Marks objects created by this addon's DaxDevice constructor, so UnwrapDevice can refuse
// anything else (another addon's object, a plain JS object).
constexpr napi_type_tag kDeviceTag = {0x6a3c1f0e9b2d4c55ULL, 0x8e17a2b4c9d06f31ULL};

[[noreturn]] void ThrowCode(Napi::Env env, Napi::Error err, const char* code) {
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

[[noreturn]] void ThrowRange(Napi::Env env, const std::string& msg) {
  ThrowCode(env, Napi::RangeError::New(env, msg), "ERANGE");
}

[[noreturn]] void ThrowInvalid(Napi::Env env, const std::string& msg) {
  ThrowCode(env, Napi::TypeError::New(env, msg), "EINVAL");
}

uint64_t ToUint(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > static_cast<double>(kMaxSafeInteger) || d != static_cast<double>(static_cast<uint64_t>(d))) {
      ThrowRange(env,
                 std::string(what) + " must be a non-negative integer below 2^53, got " + v.ToString().Utf8Value());
    }
    return static_cast<uint64_t>(d);
  }
  if (v.IsBigInt()) {
    bool lossless = false;
    const uint64_t u = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowRange(env, std::string(what) + " must be a non-negative 64-bit integer");
    return u;
  }
  ThrowInvalid(env, std::string(what) + " must be a number or bigint");
}

size_t ElementSize(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array:
      return 1;
    case napi_int16_array:
    case napi_uint16_array:
      return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      return 4;
    default:
      return 8;  // float64, bigint64, biguint64
  }
}

// The bytes of a Buffer/Uint8Array (any TypedArray, or a DataView) argument. One N-API call on
// the hot path: this runs for every small log read/write.
void BytesOf(Napi::Env env, const Napi::Value& v, const char* what, uint8_t** data, size_t* len) {
  napi_typedarray_type type;
  size_t length = 0;
  void* p = nullptr;
  if (napi_get_typedarray_info(env, v, &type, &length, &p, nullptr, nullptr) == napi_ok) {
    *data = static_cast<uint8_t*>(p);  // already adjusted by byteOffset
    *len = length * ElementSize(type);
    return;
  }
  if (v.IsDataView()) {
    Napi::DataView dv = v.As<Napi::DataView>();
    *data = static_cast<uint8_t*>(dv.ArrayBuffer().Data()) + dv.ByteOffset();
    *len = dv.ByteLength();
    return;
  }
  ThrowInvalid(env, std::string(what) + " must be a Buffer or Uint8Array");
}

class JsDevice : public Napi::ObjectWrap<JsDevice> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DaxDevice",
                       {
                           InstanceMethod<&JsDevice::Read>("read"),
                           InstanceMethod<&JsDevice::ReadInto>("readInto"),
                           InstanceMethod<&JsDevice::Write>("write"),
                           InstanceMethod<&JsDevice::Copy>("copy"),
                           InstanceMethod<&JsDevice::CopyPersistent>("copyPersistent"),
                           InstanceMethod<&JsDevice::Discard>("discard"),
                           InstanceMethod<&JsDevice::Flush>("flush"),
                           InstanceMethod<&JsDevice::Zero>("zero"),
                           InstanceMethod<&JsDevice::Invalidate>("invalidate"),
                           InstanceMethod<&JsDevice::ReadFresh>("readFresh"),
                           InstanceMethod<&JsDevice::WriteFlushIf>("writeFlushIf"),
                           InstanceMethod<&JsDevice::View>("view"),
                           InstanceMethod<&JsDevice::Close>("close"),
                           InstanceMethod<&JsDevice::MarkFailedJs>("markFailed"),
                           InstanceMethod<&JsDevice::TryLockWriter>("tryLockWriter"),
                           InstanceMethod<&JsDevice::UnlockWriter>("unlockWriter"),
                           InstanceMethod<&JsDevice::TryLockHostSlots>("tryLockHostSlots"),
                           InstanceMethod<&JsDevice::UnlockHostSlots>("unlockHostSlots"),
                           InstanceAccessor<&JsDevice::Size>("size"),
                           InstanceAccessor<&JsDevice::DeviceSize>("deviceSize"),
                           InstanceAccessor<&JsDevice::MapOffset>("mapOffset"),
                           InstanceAccessor<&JsDevice::Kind>("kind"),
                           InstanceAccessor<&JsDevice::Path>("path"),
                           InstanceAccessor<&JsDevice::ReadOnly>("readOnly"),
                           InstanceAccessor<&JsDevice::MapSync>("mapSync"),
                           InstanceAccessor<&JsDevice::Alignment>("alignment"),
                           InstanceAccessor<&JsDevice::FlushMethod>("flushMethod"),
                           InstanceAccessor<&JsDevice::InvalidateMethod>("invalidateMethod"),
                           InstanceAccessor<&JsDevice::Failed>("failed"),
                           InstanceAccessor<&JsDevice::FailureMessage>("failureMessage"),
                           InstanceAccessor<&JsDevice::Closed>("closed"),
                       });
  }

  // new DaxDevice(path, { readOnly?, createSize?, mapOffset?, mapLength? })
  explicit JsDevice(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsDevice>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) ThrowInvalid(env, "DaxDevice(path, options): path must be a string");
    OpenOptions o;
    o.path = info[0].As<Napi::String>().Utf8Value();
    if (info.Length() > 1 && info[1].IsObject()) {
      Napi::Object opts = info[1].As<Napi::Object>();
      if (opts.Has("readOnly")) o.read_only = opts.Get("readOnly").ToBoolean().Value();
      Napi::Value cs = opts.Get("createSize");
      if (!cs.IsUndefined() && !cs.IsNull()) {
        o.create = true;
        o.create_size = ToUint(env, cs, "createSize");
      }
      Napi::Value mo = opts.Get("mapOffset");
      if (!mo.IsUndefined() && !mo.IsNull()) o.map_offset = ToUint(env, mo, "mapOffset");
      Napi::Value ml = opts.Get("mapLength");
      if (!ml.IsUndefined() && !ml.IsNull()) o.map_length = ToUint(env, ml, "mapLength");
    }
    try {
      dev_ = DeviceMapping::Open(o);
    } catch (const OpenError& e) {
      ThrowCode(env, Napi::Error::New(env, e.what()), e.code().c_str());
    }
    napi_status st = napi_type_tag_object(env, info.This(), &kDeviceTag);
    if (st != napi_ok) NAPI_THROW_VOID(Napi::Error::New(env, "cannot tag DaxDevice object"));
  }

  DeviceMapping* mapping() const { return dev_.get(); }
  std::shared_ptr<DeviceMapping> shared() const { return dev_; }

 private:
  // The open, healthy mapping, or a thrown ECLOSED / EFAULT_DEVICE error.
  DeviceMapping& Live(Napi::Env env) {
    if (!dev_) ThrowCode(env, Napi::Error::New(env, "device is closed"), "ECLOSED");
    if (dev_->failed()) ThrowFailed(env, dev_->failure_message(), nullptr);
    return *dev_;
  }

  [[noreturn]] void ThrowFailed(Napi::Env env, const std::string& msg, const uint64_t* offset) {
    Napi::Error err = Napi::Error::New(env, "device failed: " + msg);
    if (offset != nullptr) err.Set("offset", Napi::Number::New(env, static_cast<double>(*offset)));
    err.Set("path", Napi::String::New(env, dev_->path()));
    ThrowCode(env, err, "EFAULT_DEVICE");
  }

  void CheckRange(Napi::Env env, const DeviceMapping& d, uint64_t off, uint64_t n, const char* what) {
    if (!d.InRange(off, n)) {
      ThrowRange(env, std::string(what) + ": range [" + std::to_string(off) + ", " + std::to_string(off) + "+" +
                          std::to_string(n) + ") is outside the device (" + std::to_string(d.size()) + " bytes)");
    }
  }

  void CheckWritable(Napi::Env env, const DeviceMapping& d) {
    if (d.read_only()) {
      ThrowCode(env, Napi::Error::New(env, "device " + d.path() + " is open read-only"), "EACCES");
    }
  }

  [[noreturn]] void ThrowFault(Napi::Env env, DeviceMapping& d, const Fault& f, const char* what, uint64_t off,
                               size_t n) {
    const std::string msg = d.RecordFault(f, what, off, n);
    uint64_t at = off;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(d.base());
    if (f.addr >= lo && f.addr - lo < d.size()) at = f.addr - lo;
    ThrowFailed(env, msg, &at);
  }

  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    const uint64_t off = ToUint(env, info[0], "offset");
    const uint64_t n = ToUint(env, info[1], "length");
    CheckRange(env, d, off, n, "read");
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, n);
    Fault f;
    if (!GuardedCopy(out.Data(), d.base() + off, n, &f)) ThrowFault(env, d, f, "read", off, n);
    return out;
  }

  Napi::Value ReadInto(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    const uint64_t off = ToUint(env, info[0], "offset");
    uint8_t* data = nullptr;
    size_t n = 0;
    BytesOf(env, info[1], "target", &data, &n);
    CheckRange(env, d, off, n, "readInto");
    Fault f;
    if (!GuardedCopy(data, d.base() + off, n, &f)) ThrowFault(env, d, f, "read", off, n);
    return Napi::Number::New(env, static_cast<double>(n));
  }

  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    CheckWritable(env, d);
    const uint64_t off = ToUint(env, info[0], "offset");
    uint8_t* data = nullptr;
    size_t n = 0;
    BytesOf(env, info[1], "data", &data, &n);
    CheckRange(env, d, off, n, "write");
    Fault f;
    if (!GuardedCopy(d.base() + off, data, n, &f)) ThrowFault(env, d, f, "write", off, n);
    return Napi::Number::New(env, static_cast<double>(n));
  }

  Napi::Value Copy(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    CheckWritable(env, d);
    const uint64_t dst = ToUint(env, info[0], "dstOffset");
    const uint64_t src = ToUint(env, info[1], "srcOffset");
    const uint64_t n = ToUint(env, info[2], "length");
    CheckRange(env, d, dst, n, "copy (destination)");
    CheckRange(env, d, src, n, "copy (source)");
    Fault f;
    if (!GuardedMove(d.base() + dst, d.base() + src, n, &f)) ThrowFault(env, d, f, "copy", src, n);
    return env.Undefined();
  }

  // Like Copy, with the bytes in memory on return (no flush pass): clones and snapshots.
  Napi::Value CopyPersistent(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    CheckWritable(env, d);
    const uint64_t dst = ToUint(env, info[0], "dstOffset");
    const uint64_t src = ToUint(env, info[1], "srcOffset");
    const uint64_t n = ToUint(env, info[2], "length");
    CheckRange(env, d, dst, n, "copy (destination)");
    CheckRange(env, d, src, n, "copy (source)");
    Fault f;
    if (!GuardedCopyPersistent(d.base() + dst, d.base() + src, n, &f)) ThrowFault(env, d, f, "copy", src, n);
    return env.Undefined();
  }

  // Emulation files: punch a hole (reads zero, pages released); false when the device cannot.
  Napi::Value Discard(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    CheckWritable(env, d);
    const uint64_t off = ToUint(env, info[0], "offset");
    const uint64_t n = ToUint(env, info[1], "length");
    CheckRange(env, d, off, n, "discard");
    return Napi::Boolean::New(env, d.Discard(off, n));
  }

  // One shape for every cache/range operation: (offset, length), bounds-checked, guarded.
  using RangeOp = bool (*)(void*, size_t, Fault*);
  Napi::Value GuardedRange(const Napi::CallbackInfo& info, const char* what, RangeOp op, bool writes) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    if (writes) CheckWritable(env, d);
    const uint64_t off = ToUint(env, info[0], "offset");
    const uint64_t n = ToUint(env, info[1], "length");
    CheckRange(env, d, off, n, what);
    Fault f;
    if (!op(d.base() + off, n, &f)) ThrowFault(env, d, f, what, off, n);
    return env.Undefined();
  }

  // Zero a range so the zeros reach memory (non-temporal stores + fence): new volumes must
  // never show a former tenant's bytes, and this is much cheaper than write + flush.
  Napi::Value Zero(const Napi::CallbackInfo& info) {
    return GuardedRange(
        info, "zero", [](void* p, size_t n, Fault* f) { return GuardedZeroPersistent(p, n, f); }, true);
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    return GuardedRange(
        info, "flush", [](void* p, size_t n, Fault* f) { return GuardedFlush(p, n, f); }, false);
  }

  Napi::Value Invalidate(const Napi::CallbackInfo& info) {
    return GuardedRange(
        info, "invalidate", [](void* p, size_t n, Fault* f) { return GuardedInvalidate(p, n, f); }, false);
  }

  // readFresh(offset, target): invalidate [offset, offset+target.length), then copy it into target:
  // a read that sees what other hosts wrote, in one call instead of invalidate + readInto (a
  // writer does several per append: log header, generation records, extension block).
  Napi::Value ReadFresh(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    const uint64_t off = ToUint(env, info[0], "offset");
    uint8_t* data = nullptr;
    size_t n = 0;
    BytesOf(env, info[1], "target", &data, &n);
    CheckRange(env, d, off, n, "readFresh");
    Fault f;
    if (!GuardedInvalidate(d.base() + off, n, &f)) ThrowFault(env, d, f, "invalidate", off, n);
    if (!GuardedCopy(data, d.base() + off, n, &f)) ThrowFault(env, d, f, "read", off, n);
    return Napi::Number::New(env, static_cast<double>(n));
  }

  // writeFlushIf(offset, data, checkOffsetA?, expectedA?, checkOffsetB?, expectedB?): reads each
  // given check range fresh (invalidated first) and compares it with its expected bytes; when all
  // match, writes `data` at offset and flushes it (data undefined: writes nothing) and returns
  // true; on the first mismatch returns false having written nothing. Every argument is checked
  // before anything is read or written. The famfs writer's "the slot is still empty, then write
  // the entry" and "still our fencing epoch, then publish" in one call each: the caller decides
  // what a mismatch means (it re-reads and judges the bytes the slow way).
  Napi::Value WriteFlushIf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    const uint64_t off = ToUint(env, info[0], "offset");
    uint8_t* data = nullptr;
    size_t n = 0;
    const bool writes = info.Length() > 1 && !info[1].IsUndefined();
    if (writes) {
      CheckWritable(env, d);
      BytesOf(env, info[1], "data", &data, &n);
      CheckRange(env, d, off, n, "writeFlushIf");
    }
    struct Check {
      uint64_t off = 0;
      const uint8_t* want = nullptr;
      size_t n = 0;
    } checks[2];
    size_t nchecks = 0;
    for (size_t a = 2; a + 1 < info.Length() && nchecks < 2; a += 2) {
      if (info[a].IsUndefined() && info[a + 1].IsUndefined()) continue;
      Check& c = checks[nchecks++];
      c.off = ToUint(env, info[a], "checkOffset");
      uint8_t* w = nullptr;
      BytesOf(env, info[a + 1], "expected", &w, &c.n);
      c.want = w;
      CheckRange(env, d, c.off, c.n, "writeFlushIf (check)");
    }
    Fault f;
    for (size_t i = 0; i < nchecks; i++) {
      const Check& c = checks[i];
      uint8_t local[1024];
      std::unique_ptr<uint8_t[]> big;
      uint8_t* got = local;
      if (c.n > sizeof local) {
        big.reset(new uint8_t[c.n]);
        got = big.get();
      }
      if (!GuardedInvalidate(d.base() + c.off, c.n, &f)) ThrowFault(env, d, f, "invalidate", c.off, c.n);
      if (!GuardedCopy(got, d.base() + c.off, c.n, &f)) ThrowFault(env, d, f, "read", c.off, c.n);
      if (std::memcmp(got, c.want, c.n) != 0) return Napi::Boolean::New(env, false);
    }
    if (writes) {
      if (!GuardedCopy(d.base() + off, data, n, &f)) ThrowFault(env, d, f, "write", off, n);
      if (!GuardedFlush(d.base() + off, n, &f)) ThrowFault(env, d, f, "flush", off, n);
    }
    return Napi::Boolean::New(env, true);
  }

  // Zero-copy Buffer over the mapping. UNGUARDED: a fault while JS touches it kills the
  // process. The Buffer keeps the mapping alive (close() does not unmap under it).
  Napi::Value View(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    const uint64_t off = ToUint(env, info[0], "offset");
    const uint64_t n = ToUint(env, info[1], "length");
    CheckRange(env, d, off, n, "view");
    if (n == 0) return Napi::Buffer<uint8_t>::New(env, 0);
    auto* keep = new std::shared_ptr<DeviceMapping>(dev_);
    return Napi::Buffer<uint8_t>::New(
        env, d.base() + off, n, [](Napi::Env, uint8_t*, std::shared_ptr<DeviceMapping>* k) { delete k; }, keep);
  }

  // Drops this object's hold on the mapping; it is unmapped once no view Buffer or FUSE
  // session (ShareDevice) holds it either. Idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    dev_.reset();
    return info.Env().Undefined();
  }

  // One shape for both host-wide locks: true when taken, false when another process holds it;
  // throws with the errno name as code on any other failure. `how` names the call for the message.
  Napi::Value TryLock(const Napi::CallbackInfo& info, int (DeviceMapping::*take)(), const char* how) {
    Napi::Env env = info.Env();
    DeviceMapping& d = Live(env);
    const int r = (d.*take)();
    if (r < 0) {
      ThrowCode(env, Napi::Error::New(env, "cannot lock " + d.path() + " (" + how + "): " + ErrnoText(-r)),
                ErrnoName(-r).c_str());
    }
    return Napi::Boolean::New(env, r == 1);
  }

  // The host-wide writer lock (DeviceMapping::TryLockWriter).
  Napi::Value TryLockWriter(const Napi::CallbackInfo& info) {
    return TryLock(info, &DeviceMapping::TryLockWriter, "flock");
  }

  // Works on a failed device too (it runs in the finally of the write that failed); a closed
  // object has nothing left to release through.
  Napi::Value UnlockWriter(const Napi::CallbackInfo& info) {
    if (dev_) dev_->UnlockWriter();
    return info.Env().Undefined();
  }

  // The host-slot lock (DeviceMapping::TryLockHostSlots).
  Napi::Value TryLockHostSlots(const Napi::CallbackInfo& info) {
    return TryLock(info, &DeviceMapping::TryLockHostSlots, "fcntl F_OFD_SETLK");
  }

  Napi::Value UnlockHostSlots(const Napi::CallbackInfo& info) {
    if (dev_) dev_->UnlockHostSlots();
    return info.Env().Undefined();
  }

  Napi::Value MarkFailedJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!dev_) ThrowCode(env, Napi::Error::New(env, "device is closed"), "ECLOSED");
    const std::string why = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "marked failed by caller";
    dev_->MarkFailed(why.c_str());
    return env.Undefined();
  }

  Napi::Value Number(Napi::Env env, double v) { return Napi::Number::New(env, v); }
  const DeviceMapping& Any(Napi::Env env) {
    if (!dev_) ThrowCode(env, Napi::Error::New(env, "device is closed"), "ECLOSED");
    return *dev_;
  }

  // Info accessors keep working after close where it makes sense (failed, closed).
  Napi::Value Size(const Napi::CallbackInfo& i) { return Number(i.Env(), static_cast<double>(Any(i.Env()).size())); }
  Napi::Value DeviceSize(const Napi::CallbackInfo& i) {
    return Number(i.Env(), static_cast<double>(Any(i.Env()).device_size()));
  }
  Napi::Value MapOffset(const Napi::CallbackInfo& i) {
    return Number(i.Env(), static_cast<double>(Any(i.Env()).map_offset()));
  }
  Napi::Value Kind(const Napi::CallbackInfo& i) { return Napi::String::New(i.Env(), Any(i.Env()).kind_name()); }
  Napi::Value Path(const Napi::CallbackInfo& i) { return Napi::String::New(i.Env(), Any(i.Env()).path()); }
  Napi::Value ReadOnly(const Napi::CallbackInfo& i) { return Napi::Boolean::New(i.Env(), Any(i.Env()).read_only()); }
  Napi::Value MapSync(const Napi::CallbackInfo& i) { return Napi::Boolean::New(i.Env(), Any(i.Env()).map_sync()); }
  Napi::Value Alignment(const Napi::CallbackInfo& i) {
    return Number(i.Env(), static_cast<double>(Any(i.Env()).alignment()));
  }
  Napi::Value FlushMethod(const Napi::CallbackInfo& i) { return Napi::String::New(i.Env(), FlushMethodName()); }
  Napi::Value InvalidateMethod(const Napi::CallbackInfo& i) {
    return Napi::String::New(i.Env(), InvalidateMethodName());
  }
  Napi::Value Failed(const Napi::CallbackInfo& i) { return Napi::Boolean::New(i.Env(), dev_ && dev_->failed()); }
  Napi::Value FailureMessage(const Napi::CallbackInfo& i) {
    if (!dev_ || !dev_->failed()) return i.Env().Null();
    return Napi::String::New(i.Env(), dev_->failure_message());
  }
  Napi::Value Closed(const Napi::CallbackInfo& i) { return Napi::Boolean::New(i.Env(), !dev_); }

  std::shared_ptr<DeviceMapping> dev_;
};

JsDevice* UnwrapJs(Napi::Object obj) {
  bool tagged = false;
  if (napi_check_object_type_tag(obj.Env(), obj, &kDeviceTag, &tagged) != napi_ok || !tagged) return nullptr;
  return JsDevice::Unwrap(obj);
}

}  // namespace

DeviceMapping* UnwrapDevice(Napi::Object obj) {
  JsDevice* js = UnwrapJs(obj);
  return js != nullptr ? js->mapping() : nullptr;
}

std::shared_ptr<DeviceMapping> ShareDevice(Napi::Object obj) {
  JsDevice* js = UnwrapJs(obj);
  return js != nullptr ? js->shared() : nullptr;
}

void InitDevice(Napi::Env env, Napi::Object exports) {
  InstallFaultHandlers();  // at load, so no thread ever touches a mapping before it is in place
  exports.Set("DaxDevice", JsDevice::Define(env));
  exports.Set("flushMethod", Napi::String::New(env, FlushMethodName()));
  exports.Set("invalidateMethod", Napi::String::New(env, InvalidateMethodName()));
  exports.Set("cacheLineSize", Napi::Number::New(env, static_cast<double>(CacheLineSize())));
}

FAMFS_NATIVE_MODULE_INIT(device, InitDevice);

}  // namespace famfs_native
