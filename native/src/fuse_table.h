// The famfs FUSE server's view of the file tree: an immutable inode table built by the
// TypeScript side from the log replay and swapped in whole when the log moves on.
//
// Workers take a reference (shared_ptr) to the current table for the duration of one request,
// so an update never blocks a reader and a table is freed when the last request using it ends.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace famfs_fuse {

// Reserved inode numbers; entries of the log get kFirstLogIno + log index (stable across
// restarts, never reused since the log only grows).
constexpr uint64_t kRootIno = 1;
constexpr uint64_t kFirstLogIno = 16;

enum class Kind : uint8_t { kDir = 1, kFile = 2 };

struct Extent {
  uint64_t offset = 0;  // absolute device byte offset
  uint64_t len = 0;
};

// One contiguous piece of a file's bytes on the device.
struct Piece {
  uint64_t device_offset = 0;
  uint64_t len = 0;
};

struct Inode {
  uint64_t ino = 0;
  uint64_t parent = 0;
  std::string name;
  Kind kind = Kind::kFile;
  uint32_t mode = 0;  // permission bits only
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  bool read_only = false;  // .meta files: never writable through the mount
  // File map: simple (extents) or interleaved (nstrips strips of chunk-sized rows).
  bool interleaved = false;
  uint64_t chunk = 0;
  std::vector<Extent> extents;  // simple extents, or the strips of an interleaved extent
  // Directories: children sorted by inode number (readdir cookies stay valid across swaps).
  std::vector<std::pair<uint64_t, std::string>> children;
  uint32_t subdirs = 0;

  // Appends to `out` the device pieces holding file bytes [off, off+len); false if the map does
  // not cover that range (a corrupt or short map: the caller answers EIO).
  bool MapRange(uint64_t off, uint64_t len, std::vector<Piece>* out) const;
  // Every device range the file's bytes [0, size) live in (for flush/invalidate).
  bool MapAll(std::vector<Piece>* out) const { return MapRange(0, size, out); }
  // True if the two describe the same attributes and place (no kernel invalidation needed).
  bool SameAs(const Inode& o) const;
};

struct Table {
  std::unordered_map<uint64_t, Inode> inodes;
  // Lookup index: (parent ino, name) -> child ino.
  std::unordered_map<std::string, uint64_t> by_name;
  uint64_t log_index = 0;  // log position this table reflects (next_index)

  static std::string Key(uint64_t parent, const std::string& name) {
    std::string k(reinterpret_cast<const char*>(&parent), sizeof parent);
    k += name;
    return k;
  }
  const Inode* Find(uint64_t ino) const {
    auto it = inodes.find(ino);
    return it == inodes.end() ? nullptr : &it->second;
  }
  const Inode* Lookup(uint64_t parent, const std::string& name) const {
    auto it = by_name.find(Key(parent, name));
    return it == by_name.end() ? nullptr : Find(it->second);
  }
  // Fills children lists and the name index; returns an error text or empty on success.
  std::string Finish();
};

using TablePtr = std::shared_ptr<const Table>;

}  // namespace famfs_fuse
