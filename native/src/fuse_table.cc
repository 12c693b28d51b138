// Inode table helpers: file-offset -> device mapping and index building.
#include "fuse_table.h"

#include <algorithm>

namespace famfs_fuse {

bool Inode::MapRange(uint64_t off, uint64_t len, std::vector<Piece>* out) const {
  if (len == 0) return true;
  if (!interleaved) {
    // Simple extents are laid end to end in file order.
    uint64_t ext_start = 0;
    for (const Extent& e : extents) {
      uint64_t ext_end = ext_start + e.len;
      if (off < ext_end) {
        uint64_t in = off - ext_start;
        uint64_t n = std::min(len, e.len - in);
        if (!out->empty() && out->back().device_offset + out->back().len == e.offset + in) {
          out->back().len += n;
        } else {
          out->push_back({e.offset + in, n});
        }
        off += n;
        len -= n;
        if (len == 0) return true;
      }
      ext_start = ext_end;
    }
    return false;
  }
  // Interleaved: chunk i of the file is in strip (i % nstrips), row floor(i / nstrips).
  const uint64_t nstrips = extents.size();
  if (nstrips == 0 || chunk == 0) return false;
  while (len > 0) {
    uint64_t ci = off / chunk;
    uint64_t in = off % chunk;
    const Extent& strip = extents[ci % nstrips];
    uint64_t row = ci / nstrips;
    uint64_t strip_off = row * chunk + in;
    if (strip_off >= strip.len) return false;
    uint64_t n = std::min({len, chunk - in, strip.len - strip_off});
    uint64_t dev = strip.offset + strip_off;
    if (!out->empty() && out->back().device_offset + out->back().len == dev) {
      out->back().len += n;
    } else {
      out->push_back({dev, n});
    }
    off += n;
    len -= n;
  }
  return true;
}

bool Inode::SameAs(const Inode& o) const {
  if (ino != o.ino || parent != o.parent || name != o.name || kind != o.kind || mode != o.mode || uid != o.uid ||
      gid != o.gid || size != o.size || read_only != o.read_only || interleaved != o.interleaved || chunk != o.chunk ||
      extents.size() != o.extents.size()) {
    return false;
  }
  for (size_t i = 0; i < extents.size(); i++) {
    if (extents[i].offset != o.extents[i].offset || extents[i].len != o.extents[i].len) return false;
  }
  return true;
}

std::string Table::Finish() {
  if (inodes.find(kRootIno) == inodes.end()) return "inode table has no root (ino 1)";
  by_name.clear();
  by_name.reserve(inodes.size());
  for (auto& kv : inodes) {
    kv.second.children.clear();
    kv.second.subdirs = 0;
  }
  for (auto& kv : inodes) {
    Inode& n = kv.second;
    if (n.ino == kRootIno) continue;
    auto p = inodes.find(n.parent);
    if (p == inodes.end() || p->second.kind != Kind::kDir) {
      return "inode " + std::to_string(n.ino) + " (" + n.name + ") has no parent directory " + std::to_string(n.parent);
    }
    if (n.name.empty() || n.name == "." || n.name == ".." || n.name.find('/') != std::string::npos) {
      return "inode " + std::to_string(n.ino) + " has an invalid name";
    }
    if (!by_name.emplace(Key(n.parent, n.name), n.ino).second) {
      return "duplicate name " + n.name + " in directory " + std::to_string(n.parent);
    }
    p->second.children.emplace_back(n.ino, n.name);
    if (n.kind == Kind::kDir) p->second.subdirs++;
  }
  for (auto& kv : inodes) {
    auto& c = kv.second.children;
    std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  }
  return std::string();
}

}  // namespace famfs_fuse
