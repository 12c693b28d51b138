// A mapped famfs device: a devdax character device (/dev/daxX.Y) or a regular file standing in
// for one. DeviceMapping is the C++ object (usable from any thread: FUSE workers included);
// device.cc also exposes it to JS as the `DaxDevice` class of the addon.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "memaccess.h"

namespace famfs_native {

enum class DeviceKind { kDevdax, kFile };

struct OpenOptions {
  std::string path;
  bool read_only = false;
  // Create the file (regular file only) if missing, or size it if it is empty.
  bool create = false;
  uint64_t create_size = 0;
  // Window to map, in device bytes. Both must be multiples of the device alignment (2 MiB on a
  // typical devdax); map_length 0 = to the end of the device. Offsets in every call are then
  // relative to map_offset. Default: the whole device.
  uint64_t map_offset = 0;
  uint64_t map_length = 0;
};

// Thrown by DeviceMapping::Open; `code` is one of ENOENT, EACCES, ENOTDAX, EINVAL, ERANGE,
// EEXIST, or another errno name (ENOMEM, ...).
class OpenError : public std::runtime_error {
 public:
  OpenError(std::string code, const std::string& message) : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

enum class IoStatus {
  kOk,
  kRange,     // [off, off+n) is not inside the mapping: nothing touched
  kReadOnly,  // write on a read-only mapping: nothing touched
  kFailed,    // the device was already marked failed: nothing touched
  kFault,     // this access faulted (SIGBUS): the device is now marked failed
};

class DeviceMapping {
 public:
  static std::shared_ptr<DeviceMapping> Open(const OpenOptions& options);  // throws OpenError
  ~DeviceMapping();                                                        // munmap + close
  DeviceMapping(const DeviceMapping&) = delete;
  DeviceMapping& operator=(const DeviceMapping&) = delete;

  uint8_t* base() const { return base_; }  // start of the mapped window
  size_t size() const { return size_; }    // bytes in the window
  DeviceKind kind() const { return kind_; }
  const char* kind_name() const { return kind_ == DeviceKind::kDevdax ? "devdax" : "file"; }
  const std::string& path() const { return path_; }
  bool read_only() const { return read_only_; }
  bool map_sync() const { return map_sync_; }
  size_t alignment() const { return alignment_; }
  uint64_t map_offset() const { return map_offset_; }
  uint64_t device_size() const { return device_size_; }

  bool InRange(uint64_t off, uint64_t n) const { return off <= size_ && n <= size_ - off; }

  // Marks the device failed (thread-safe; the first reason is kept). Every later access
  // through this object returns kFailed / throws EFAULT_DEVICE.
  void MarkFailed(const char* why);
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::string failure_message() const;

  // Range-checked, guarded accessors for C++ callers (FUSE threads). On kFault the device is
  // marked failed with a message naming the offset; *fault (optional) gets the details.
  IoStatus ReadAt(uint64_t off, void* dst, size_t n, Fault* fault = nullptr);
  IoStatus WriteAt(uint64_t off, const void* src, size_t n, Fault* fault = nullptr);
  IoStatus CopyWithin(uint64_t dst_off, uint64_t src_off, size_t n, Fault* fault = nullptr);
  IoStatus FlushRange(uint64_t off, size_t n, Fault* fault = nullptr);
  IoStatus InvalidateRange(uint64_t off, size_t n, Fault* fault = nullptr);
  // Emulation files only: punch a hole over [off, off+n) (page aligned) so it reads zero without
  // being written, and its pages go back to the system. False when the device cannot (devdax,
  // unaligned, a file system without hole punching): the caller zeroes instead.
  bool Discard(uint64_t off, size_t n);
  // The host-wide famfs writer lock: flock(2) LOCK_EX on this mapping's file descriptor, never
  // blocking. Every process that opened the same inode (the emulation file, or /dev/daxX.Y seen
  // through a hostPath /dev) competes for it; the kernel drops it when the holder exits, killed
  // or not. Returns 1 when taken (or already held through this descriptor), 0 when another open
  // of the inode holds it, or -errno.
  int TryLockWriter();
  void UnlockWriter();
  // The host-wide host-slot lock: an open file description lock (F_OFD_SETLK) on byte 0 of the
  // same inode, independent of the flock above (Linux keeps the two kinds apart), so a host's
  // replay-position ack excludes the other ackers of this host without waiting for the log
  // writer, which may hold its lock back to back under load. Same returns as TryLockWriter.
  int TryLockHostSlots();
  void UnlockHostSlots();

  // Builds the "memory fault at ..." message for a fault taken during `what` (and marks the
  // device failed when the faulting address lies inside this mapping). Returns the message.
  std::string RecordFault(const Fault& fault, const char* what, uint64_t off, size_t n);

 private:
  DeviceMapping() = default;

  std::string path_;
  DeviceKind kind_ = DeviceKind::kFile;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint64_t map_offset_ = 0;
  uint64_t device_size_ = 0;
  size_t alignment_ = 0;
  bool read_only_ = false;
  bool map_sync_ = false;

  std::atomic<bool> failed_{false};
  mutable std::mutex failure_mu_;
  std::string failure_message_;
};

// The mapping behind a JS DaxDevice object (from this addon), or nullptr if `obj` is not one
// or has been closed. Call on the JS thread. The pointer stays valid until the JS object's
// close(); a FUSE session that outlives that must hold ShareDevice() instead.
DeviceMapping* UnwrapDevice(Napi::Object obj);
// Shared ownership of the mapping: keeps it mapped after the JS object is closed/collected.
std::shared_ptr<DeviceMapping> ShareDevice(Napi::Object obj);

// Registers the DaxDevice class and device helpers on the addon's exports (per environment).
void InitDevice(Napi::Env env, Napi::Object exports);

}  // namespace famfs_native
