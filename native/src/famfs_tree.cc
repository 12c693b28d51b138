// The famfs log tree in native memory: replay's rules (pkg/famfs/tree.ts) applied to the entries
// of a log buffer as they are decoded (famfs_decode.h), without a JavaScript object per entry.
// fsck uses it for a whole log: a cold fsck of 15,420 entries spent most of its time building and
// then walking 15,420 JavaScript nodes it only counted.
//
//   logTreeNew(deviceSize, reservedBytes, allocUnit, generation[, expectedEntries]) -> tree (an external)
//   logTreeApplySlots(tree, buf, count, firstSlot, seqMin, seqMax, deletesAllowed) -> slots applied
//       decodes and applies slots up to the first one DecodeOne leaves to decodeEntryAt
//   logTreeApplyEntry(tree, kind, index, relpath, fields: Float64Array)
//       an entry decodeEntryAt decoded (kind 0 file, 1 mkdir, 2 delete, 3 no tree effect); fields:
//       file [size, flags, uid, gid, mode, fmapKind, chunk, n, (devindex, offset, len) * n],
//       mkdir [uid, gid, mode], delete [targetIndex, targetType (0 file, 1 mkdir)]
//   logTreeCounts(tree) -> Float64Array [slot, nextIndex, files, dirs, generation]
//   logTreeSetNextIndex(tree, nextIndex)
//   logTreeProblems(tree) -> [{ index, code, relpath, a, s, sKind, size, fmapKind, chunk, extents }]
//   logTreeRootFiles(tree, prefix) -> [{ index, relpath, bytes }] live files in the root whose name
//       starts with prefix, in the order the root's children map holds them
//   logTreeSpace(tree, horizon, totalUnits, metaUnits, region2Start, region2Units)
//       -> Float64Array [freeUnits, largestFreeRun, pendingUnits, collisions]
//
// Every rule and every number here mirrors tree.ts and allocator.ts (IntervalSweep, summary), in
// the same double arithmetic; problems come back as codes with their operands, and tree.ts words
// them (one wording). test/famfs-fsck-native.test.ts runs fsck both ways over damaged logs and
// requires identical reports.
//
// Paths are compared as JavaScript compares the strings decodeEntryAt makes of them: a name that is
// not valid UTF-8 is first rewritten as its decoded string (U+FFFD per maximal invalid subpart, the
// WHATWG decoder V8 and Buffer.toString use), so two byte strings are equal here exactly when their
// JavaScript strings are.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "famfs_decode.h"
#include "module_init.h"

namespace famfs_native {
namespace {

enum Problem : int32_t {
  kFmap = 0,         // relpath; the entry's size and fmap (tree.ts fmapProblem words it)
  kNoParent = 1,     // relpath
  kParentFile = 2,   // relpath
  kBadPath = 3,      // relpath
  kExists = 4,       // relpath, a = index of the entry that holds the name
  kDelMissing = 5,   // relpath, a = target index
  kDelMismatch = 6,  // relpath, a = target index, target type; s / s_kind = the target's relpath / kind
  kDelNonEmpty = 7,  // s = the target's relpath
};

struct Ext {
  double dev, off, len;
};

struct Node {
  double index;
  int32_t parent;
  uint8_t kind;  // 0 file, 1 dir
  bool live;
  uint8_t fmap_kind;
  uint32_t mode, uid, gid, flags;
  double size, chunk;
  uint32_t ext_at, ext_n;
  uint32_t path_at, path_len;  // the relpath, in Tree::arena
  uint32_t name_at;            // the name is the relpath from here
  uint32_t children;
  uint64_t path_hash, name_hash;  // Hash of the relpath, and of the name (root children only)
};

// Open addressing over node ids (no allocation per entry: a full log is 15,420 inserts). Keys are
// the nodes' relpaths, or their names (by_name: the root's children), read from the arena; each
// slot keeps 32 bits of its key's hash, so a probe compares strings only on a likely match and a
// rehash hashes nothing again.
struct NameIndex {
  static constexpr int32_t kEmpty = -1, kGone = -2;
  struct Slot {
    int32_t id;
    uint32_t h;
  };
  bool by_name = false;
  std::vector<Slot> slots;
  size_t live = 0, taken = 0;  // taken counts tombstones too
};
struct ProblemRec {
  double index;
  int32_t code;
  std::string relpath;
  double a;
  uint32_t target_type;
  std::string s;
  uint8_t s_kind;
  double size, chunk;
  uint8_t fmap_kind;
  std::vector<Ext> ext;
};

struct Held {
  double index;
  std::vector<Ext> ext;
};

struct Tree {
  double device_size, reserved, alloc_unit;
  double generation;
  double next_index = 0;
  double slot = 0;
  double files = 0, dirs = 0;
  std::vector<Node> nodes;  // nodes[0] is the root
  std::vector<Ext> exts;    // extents of file nodes
  std::string arena;        // every node's relpath
  NameIndex by_path;        // live nodes by relpath
  // The last parent ParentOf found (consecutive entries mostly share one); -1 after any removal.
  int32_t last_parent = -1;
  NameIndex root_kids;  // live children of the root by name

  std::vector<double> idx;  // log index of nodes[k + 1], ascending
  std::vector<ProblemRec> problems;
  std::vector<Held> orphaned;
  std::vector<Held> released;
  std::string scratch;
};

std::string_view Path(const Tree& t, const Node& n) { return std::string_view(t.arena).substr(n.path_at, n.path_len); }

std::string_view Key(const Tree& t, const NameIndex& ix, int32_t id) {
  const Node& n = t.nodes[id];
  const std::string_view p = Path(t, n);
  return ix.by_name ? p.substr(n.name_at) : p;
}

inline uint64_t Hash(std::string_view k) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ k.size();
  size_t i = 0;
  for (; i + 8 <= k.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, k.data() + i, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  std::memcpy(&w, k.data() + i, k.size() - i);
  h = (h ^ w) * 0x94D049BB133111EBULL;
  return h ^ (h >> 31);
}

int32_t FindHashed(const Tree& t, const NameIndex& ix, std::string_view k, uint64_t h) {
  if (ix.slots.empty()) return -1;
  const size_t mask = ix.slots.size() - 1;
  const uint32_t h32 = static_cast<uint32_t>(h >> 32);
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const NameIndex::Slot& s = ix.slots[i];
    if (s.id == NameIndex::kEmpty) return -1;
    if (s.id >= 0 && s.h == h32 && Key(t, ix, s.id) == k) return s.id;
  }
}

int32_t Find(const Tree& t, const NameIndex& ix, std::string_view k) { return FindHashed(t, ix, k, Hash(k)); }

// Places id with its key's hash h (only the slot's 32 bits and the low bits for the bucket are used).
void PlaceHashed(NameIndex* ix, int32_t id, uint64_t h) {
  const size_t mask = ix->slots.size() - 1;
  size_t i = h & mask;
  while (ix->slots[i].id >= 0) i = (i + 1) & mask;
  if (ix->slots[i].id == NameIndex::kEmpty) ix->taken++;
  ix->slots[i] = NameIndex::Slot{id, static_cast<uint32_t>(h >> 32)};
  ix->live++;
}

// Room for `more` keys beyond the live ones, at most half full (tombstones dropped); a moved key's
// bucket comes from the full hash its Node keeps.
void Reserve(const Tree& t, NameIndex* ix, size_t more);

void Insert(const Tree& t, NameIndex* ix, int32_t id, uint64_t h) {
  if ((ix->taken + 1) * 4 >= ix->slots.size() * 3) Reserve(t, ix, 1);
  PlaceHashed(ix, id, h);
}

void Reserve(const Tree& t, NameIndex* ix, size_t more) {
  const size_t want = (ix->live + more) * 2;
  if (ix->slots.size() >= want && (ix->taken + more) * 4 < ix->slots.size() * 3) return;
  size_t cap = 64;
  while (cap < want) cap *= 2;
  std::vector<NameIndex::Slot> old;
  old.swap(ix->slots);
  ix->slots.assign(cap, NameIndex::Slot{NameIndex::kEmpty, 0});
  ix->live = ix->taken = 0;
  for (const NameIndex::Slot& o : old) {
    if (o.id < 0) continue;
    const Node& n = t.nodes[o.id];
    PlaceHashed(ix, o.id, ix->by_name ? n.name_hash : n.path_hash);
  }
}

void Erase(const Tree& t, NameIndex* ix, std::string_view k) {
  if (ix->slots.empty()) return;
  const uint64_t h = Hash(k);
  const uint32_t h32 = static_cast<uint32_t>(h >> 32);
  const size_t mask = ix->slots.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    NameIndex::Slot& s = ix->slots[i];
    if (s.id == NameIndex::kEmpty) return;
    if (s.id >= 0 && s.h == h32 && Key(t, *ix, s.id) == k) {
      s.id = NameIndex::kGone;
      ix->live--;
      return;
    }
  }
}

// x % m === 0 as JavaScript computes it (fmod), without a libm call for the integers it sees.
inline bool Divides(double x, double m) {
  if (m >= 1 && x >= 0 && x < 9007199254740992.0 && m < 9007199254740992.0 && x == std::floor(x) &&
      m == std::floor(m)) {
    return static_cast<uint64_t>(x) % static_cast<uint64_t>(m) == 0;
  }
  return std::fmod(x, m) == 0;
}

// Appends the string decodeEntryAt would make of these bytes, as UTF-8.
void AppendDecodedUtf8(const uint8_t* p, size_t n, std::string* out) {
  size_t i = 0;
  while (i < n && p[i] < 0x80) i++;
  out->append(reinterpret_cast<const char*>(p), i);
  if (i == n) return;
  static const char kReplacement[] = "\xEF\xBF\xBD";
  uint32_t needed = 0, seen = 0;
  uint8_t lower = 0x80, upper = 0xBF;
  size_t start = 0;
  while (i < n) {
    const uint8_t b = p[i];
    if (needed == 0) {
      if (b <= 0x7F) {
        out->push_back(static_cast<char>(b));
      } else if (b >= 0xC2 && b <= 0xDF) {
        needed = 1;
        start = i;
      } else if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) lower = 0xA0;
        if (b == 0xED) upper = 0x9F;
        needed = 2;
        start = i;
      } else if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) lower = 0x90;
        if (b == 0xF4) upper = 0x8F;
        needed = 3;
        start = i;
      } else {
        out->append(kReplacement, 3);
      }
      i++;
      continue;
    }
    if (b < lower || b > upper) {
      // The sequence so far is one replacement; b is looked at again as a first byte.
      needed = seen = 0;
      lower = 0x80;
      upper = 0xBF;
      out->append(kReplacement, 3);
      continue;
    }
    lower = 0x80;
    upper = 0xBF;
    i++;
    if (++seen == needed) {
      out->append(reinterpret_cast<const char*>(p + start), i - start);
      needed = seen = 0;
    }
  }
  if (needed != 0) out->append(kReplacement, 3);
}

// ECMAScript ToInt32 of a non-negative integer below 2^53, as the & in tree.ts computes it.
inline uint32_t Low32(double v) { return static_cast<uint32_t>(static_cast<uint64_t>(v)); }

// tree.ts fmapProblem: true when the map cannot be trusted.
bool FmapBad(const Tree& t, uint8_t fmap_kind, double chunk, const Ext* x, uint32_t n, double size) {
  for (uint32_t i = 0; i < n; i++) {
    const Ext& e = x[i];
    if (e.dev != 0) return true;
    if (e.len <= 0) return true;
    if (!Divides(e.off, t.alloc_unit) || !Divides(e.len, t.alloc_unit)) return true;
    if (e.off < t.reserved) return true;
    if (e.off + e.len > t.device_size) return true;
  }
  if (fmap_kind == 1) {
    if (!Divides(chunk, t.alloc_unit) || (Low32(chunk) & Low32(chunk - 1)) != 0) return true;
    for (uint32_t i = 0; i < n; i++) {
      if (x[i].len != x[0].len || !Divides(x[i].len, chunk)) return true;
    }
  }
  double cap = 0;
  for (uint32_t i = 0; i < n; i++) cap += x[i].len;
  return cap < size;
}

ProblemRec& AddProblem(Tree* t, double index, int32_t code, std::string_view relpath) {
  t->problems.emplace_back();
  ProblemRec& p = t->problems.back();
  p.index = index;
  p.code = code;
  p.relpath = relpath;
  p.a = 0;
  p.target_type = 0;
  p.s_kind = 0;
  p.size = p.chunk = 0;
  p.fmap_kind = 0;
  return p;
}

// tree.ts parentOf: the parent's node id, or -1 after recording why not. Sets the hashes AddNode
// indexes the new node by.
int32_t ParentOf(Tree* t, double index, std::string_view relpath, size_t* name_at, uint64_t* path_hash,
                 uint64_t* name_hash) {
  const size_t cut = relpath.rfind('/');
  const std::string_view parent_path = cut == std::string_view::npos ? std::string_view() : relpath.substr(0, cut);
  *name_at = cut == std::string_view::npos ? 0 : cut + 1;
  const char* name = relpath.data() + *name_at;
  const size_t name_len = relpath.size() - *name_at;
  int32_t parent = -1;
  if (parent_path.empty() || parent_path == ".") {
    parent = 0;
  } else if (t->last_parent > 0 && Path(*t, t->nodes[t->last_parent]) == parent_path) {
    parent = t->last_parent;
  } else {
    parent = Find(*t, t->by_path, parent_path);
    t->last_parent = parent;
  }
  if (parent < 0) {
    AddProblem(t, index, kNoParent, relpath);
    return -1;
  }
  if (t->nodes[parent].kind != 1) {
    AddProblem(t, index, kParentFile, relpath);
    return -1;
  }
  const bool dots =
      name_len == 0 || (name_len == 1 && name[0] == '.') || (name_len == 2 && name[0] == '.' && name[1] == '.');
  if (dots || relpath[0] == '/' || relpath == ".meta" || relpath.substr(0, 6) == ".meta/") {
    AddProblem(t, index, kBadPath, relpath);
    return -1;
  }
  // Below the root a child's relpath is its parent's relpath, '/', its name: this one's.
  *path_hash = Hash(relpath);
  *name_hash = 0;
  int32_t existing;
  if (parent == 0) {
    *name_hash = Hash(std::string_view(name, name_len));
    existing = FindHashed(*t, t->root_kids, std::string_view(name, name_len), *name_hash);
  } else {
    existing = FindHashed(*t, t->by_path, relpath, *path_hash);
  }
  if (existing >= 0) {
    AddProblem(t, index, kExists, relpath).a = t->nodes[existing].index;
    return -1;
  }
  return parent;
}

// Adds a node with this relpath (its other fields set by the caller) and indexes it.
Node& AddNode(Tree* t, double index, int32_t parent, uint8_t kind, std::string_view relpath, size_t name_at,
              uint64_t path_hash, uint64_t name_hash) {
  Node n{};
  n.index = index;
  n.parent = parent;
  n.kind = kind;
  n.live = true;
  n.path_at = static_cast<uint32_t>(t->arena.size());
  n.path_len = static_cast<uint32_t>(relpath.size());
  n.name_at = static_cast<uint32_t>(name_at);
  n.path_hash = path_hash;
  n.name_hash = name_hash;
  t->arena.append(relpath);
  t->nodes.push_back(n);
  const int32_t id = static_cast<int32_t>(t->nodes.size() - 1);
  Insert(*t, &t->by_path, id, path_hash);
  if (parent == 0) Insert(*t, &t->root_kids, id, name_hash);
  t->nodes[parent].children++;
  t->idx.push_back(index);
  return t->nodes[id];
}

int32_t FindLive(const Tree& t, double index) {
  auto it = std::lower_bound(t.idx.begin(), t.idx.end(), index);
  if (it == t.idx.end() || *it != index) return -1;
  const int32_t id = static_cast<int32_t>(it - t.idx.begin()) + 1;
  return t.nodes[id].live ? id : -1;
}

void ApplyFile(Tree* t, double index, std::string_view relpath, double size, uint32_t flags, uint32_t uid, uint32_t gid,
               uint32_t mode, uint8_t fmap_kind, double chunk, const Ext* x, uint32_t n) {
  if (FmapBad(*t, fmap_kind, chunk, x, n, size)) {
    ProblemRec& p = AddProblem(t, index, kFmap, relpath);
    p.size = size;
    p.chunk = chunk;
    p.fmap_kind = fmap_kind;
    p.ext.assign(x, x + n);
    return;
  }
  size_t name_at = 0;
  uint64_t ph = 0, nh = 0;
  const int32_t parent = ParentOf(t, index, relpath, &name_at, &ph, &nh);
  if (parent < 0) {
    t->orphaned.push_back(Held{index, std::vector<Ext>(x, x + n)});
    return;
  }
  const uint32_t ext_at = static_cast<uint32_t>(t->exts.size());
  t->exts.insert(t->exts.end(), x, x + n);
  Node& node = AddNode(t, index, parent, 0, relpath, name_at, ph, nh);
  node.fmap_kind = fmap_kind;
  node.mode = mode & 07777;
  node.uid = uid;
  node.gid = gid;
  node.flags = flags;
  node.size = size;
  node.chunk = chunk;
  node.ext_at = ext_at;
  node.ext_n = n;
  t->files++;
}

void ApplyMkdir(Tree* t, double index, std::string_view relpath, uint32_t uid, uint32_t gid, uint32_t mode) {
  size_t name_at = 0;
  uint64_t ph = 0, nh = 0;
  const int32_t parent = ParentOf(t, index, relpath, &name_at, &ph, &nh);
  if (parent < 0) return;
  Node& node = AddNode(t, index, parent, 1, relpath, name_at, ph, nh);
  node.mode = mode & 07777;
  node.uid = uid;
  node.gid = gid;
  t->dirs++;
}

void ApplyDelete(Tree* t, double index, std::string_view relpath, double target_index, uint32_t target_type) {
  const int32_t id = FindLive(*t, target_index);
  if (id < 0) {
    AddProblem(t, index, kDelMissing, relpath).a = target_index;
    return;
  }
  Node& n = t->nodes[id];
  const std::string_view target = Path(*t, n);
  if (target != relpath || (n.kind == 0) != (target_type == 0)) {
    ProblemRec& p = AddProblem(t, index, kDelMismatch, relpath);
    p.a = target_index;
    p.target_type = target_type;
    p.s = std::string(target);
    p.s_kind = n.kind;
    return;
  }
  if (n.kind == 1 && n.children > 0) {
    AddProblem(t, index, kDelNonEmpty, relpath).s = std::string(target);
    return;
  }
  n.live = false;
  t->last_parent = -1;
  Erase(*t, &t->by_path, target);
  if (n.parent == 0) Erase(*t, &t->root_kids, target.substr(n.name_at));
  t->nodes[n.parent].children--;
  if (n.kind == 0) {
    t->files--;
    t->released.push_back(
        Held{index, std::vector<Ext>(t->exts.begin() + n.ext_at, t->exts.begin() + n.ext_at + n.ext_n)});
  } else {
    t->dirs--;
  }
}

// tree.ts apply: log indexes only grow; in generation 0 they have no gaps.
void Advance(Napi::Env env, Tree* t, double index) {
  if (index < t->next_index || (t->generation == 0 && index != t->next_index)) {
    throw Napi::Error::New(env, "tree expects entry " + std::to_string(static_cast<int64_t>(t->next_index)) +
                                    (t->generation == 0 ? "" : " or later") + ", got " +
                                    std::to_string(static_cast<int64_t>(index)));
  }
  t->next_index = index + 1;
  t->slot++;
}

Tree* Get(const Napi::CallbackInfo& info, size_t args) {
  if (info.Length() < args || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "log tree expected");
  return info[0].As<Napi::External<Tree>>().Data();
}

Napi::Value New(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber()) {
    throw Napi::TypeError::New(env, "logTreeNew(deviceSize, reservedBytes, allocUnit, generation)");
  }
  if (DecodeLayout() == nullptr) throw Napi::Error::New(env, "logTreeNew: configureLogDecode first");
  Tree* t = new Tree();
  t->device_size = info[0].As<Napi::Number>().DoubleValue();
  t->reserved = info[1].As<Napi::Number>().DoubleValue();
  t->alloc_unit = info[2].As<Napi::Number>().DoubleValue();
  t->generation = info[3].As<Napi::Number>().DoubleValue();
  Node root{};
  root.index = -1;
  root.parent = -1;
  root.kind = 1;
  root.live = true;
  root.mode = 0755;
  t->nodes.push_back(root);
  t->root_kids.by_name = true;
  // The caller's estimate of the entries to come (a replay knows the log header's count): every
  // array sized once, instead of regrown and the path index rehashed once per 1 MiB chunk.
  if (info.Length() > 4 && info[4].IsNumber()) {
    const double want = info[4].As<Napi::Number>().DoubleValue();
    if (want > 0 && want <= (1 << 24)) {
      const size_t n = static_cast<size_t>(want);
      t->nodes.reserve(n + 1);
      t->idx.reserve(n);
      t->exts.reserve(n);
      t->arena.reserve(n * 16);
      Reserve(*t, &t->by_path, n);
    }
  }
  return Napi::External<Tree>::New(env, t, [](Napi::Env, Tree* p) { delete p; });
}

Napi::Value ApplySlots(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 7);
  if (!info[1].IsTypedArray() || !info[2].IsNumber() || !info[3].IsNumber() || !info[4].IsNumber() ||
      !info[5].IsNumber() || !info[6].IsBoolean()) {
    throw Napi::TypeError::New(
        env, "logTreeApplySlots(tree, buf: Uint8Array, count, firstSlot, seqMin, seqMax, deletesAllowed: boolean)");
  }
  const Layout& L = *DecodeLayout();
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  const int64_t count = info[2].As<Napi::Number>().Int64Value();
  const double first_slot = info[3].As<Napi::Number>().DoubleValue();
  double seq_min = info[4].As<Napi::Number>().DoubleValue();
  const double seq_max = info[5].As<Napi::Number>().DoubleValue();
  const bool deletes_allowed = info[6].As<Napi::Boolean>().Value();
  if (count < 0 || static_cast<uint64_t>(count) * L.entry_size > buf.ByteLength()) {
    throw Napi::RangeError::New(env, "logTreeApplySlots: slots exceed the buffer");
  }
  const bool compacted = seq_min >= 0;
  const size_t more = static_cast<size_t>(count);
  // Room for every slot up front, growing geometrically (a log arrives in 1 MiB chunks: an exact
  // reserve per chunk would copy the arrays once per chunk).
  auto grow = [](auto& v, size_t need) {
    if (v.capacity() < need) v.reserve(std::max(need, v.capacity() * 2));
  };
  grow(t->nodes, t->nodes.size() + more);
  grow(t->idx, t->idx.size() + more);
  grow(t->exts, t->exts.size() + more);
  grow(t->arena, t->arena.size() + more * 16);
  Reserve(*t, &t->by_path, more);
  Decoded d;
  Ext x[kDecodedMaxExtents];
  int64_t n = 0;
  for (; n < count; n++) {
    if (!DecodeOne(L, buf.Data() + n * L.entry_size, first_slot + static_cast<double>(n), seq_min, seq_max,
                   deletes_allowed, &d)) {
      break;
    }
    Advance(env, t, d.index);
    std::string& path = t->scratch;
    path.clear();
    AppendDecodedUtf8(d.path, d.path_len, &path);
    if (d.kind == 0) {
      for (uint32_t i = 0; i < d.nx; i++) x[i] = Ext{d.ext[i * 3], d.ext[i * 3 + 1], d.ext[i * 3 + 2]};
      ApplyFile(t, d.index, path, d.size, d.flags, d.uid, d.gid, d.mode, static_cast<uint8_t>(d.fmap_kind), d.chunk, x,
                d.nx);
    } else if (d.kind == 1) {
      ApplyMkdir(t, d.index, path, d.uid, d.gid, d.mode);
    } else {
      ApplyDelete(t, d.index, path, d.target_index, d.target_type);
    }
    if (compacted) seq_min = d.index + 1;
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value ApplyEntry(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 5);
  if (!info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsString() || !info[4].IsTypedArray()) {
    throw Napi::TypeError::New(env, "logTreeApplyEntry(tree, kind, index, relpath: string, fields: Float64Array)");
  }
  const uint32_t kind = info[1].As<Napi::Number>().Uint32Value();
  const double index = info[2].As<Napi::Number>().DoubleValue();
  const std::string relpath_s = info[3].As<Napi::String>().Utf8Value();
  const std::string_view relpath = relpath_s;
  Napi::Float64Array f = info[4].As<Napi::Float64Array>();
  const size_t len = f.ElementLength();
  auto at = [&](size_t i) -> double {
    if (i >= len) throw Napi::RangeError::New(env, "logTreeApplyEntry: fields too short");
    return f[i];
  };
  Advance(env, t, index);
  if (kind == 0) {
    const uint32_t n = static_cast<uint32_t>(at(7));
    if (n > kDecodedMaxExtents) throw Napi::RangeError::New(env, "logTreeApplyEntry: too many extents");
    Ext x[kDecodedMaxExtents];
    for (uint32_t i = 0; i < n; i++) x[i] = Ext{at(8 + i * 3), at(9 + i * 3), at(10 + i * 3)};
    ApplyFile(t, index, relpath, at(0), static_cast<uint32_t>(at(1)), static_cast<uint32_t>(at(2)),
              static_cast<uint32_t>(at(3)), static_cast<uint32_t>(at(4)), static_cast<uint8_t>(at(5)), at(6), x, n);
  } else if (kind == 1) {
    ApplyMkdir(t, index, relpath, static_cast<uint32_t>(at(0)), static_cast<uint32_t>(at(1)),
               static_cast<uint32_t>(at(2)));
  } else if (kind == 2) {
    ApplyDelete(t, index, relpath, at(0), static_cast<uint32_t>(at(1)));
  }
  return env.Undefined();
}

Napi::Value Counts(const Napi::CallbackInfo& info) {
  Tree* t = Get(info, 1);
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), 5);
  out[0] = t->slot;
  out[1] = t->next_index;
  out[2] = t->files;
  out[3] = t->dirs;
  out[4] = t->generation;
  return out;
}

Napi::Value SetNextIndex(const Napi::CallbackInfo& info) {
  Tree* t = Get(info, 2);
  if (!info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "logTreeSetNextIndex(tree, nextIndex)");
  t->next_index = info[1].As<Napi::Number>().DoubleValue();
  return info.Env().Undefined();
}

Napi::Value Problems(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 1);
  Napi::Array out = Napi::Array::New(env, t->problems.size());
  for (size_t i = 0; i < t->problems.size(); i++) {
    const ProblemRec& p = t->problems[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", p.index);
    o.Set("code", p.code);
    o.Set("relpath", p.relpath);
    o.Set("a", p.a);
    o.Set("targetType", p.target_type);
    o.Set("s", p.s);
    o.Set("sKind", static_cast<uint32_t>(p.s_kind));
    o.Set("size", p.size);
    o.Set("fmapKind", static_cast<uint32_t>(p.fmap_kind));
    o.Set("chunk", p.chunk);
    Napi::Float64Array x = Napi::Float64Array::New(env, p.ext.size() * 3);
    for (size_t k = 0; k < p.ext.size(); k++) {
      x[k * 3] = p.ext[k].dev;
      x[k * 3 + 1] = p.ext[k].off;
      x[k * 3 + 2] = p.ext[k].len;
    }
    o.Set("extents", x);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

Napi::Value RootFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 2);
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "logTreeRootFiles(tree, prefix: string)");
  const std::string prefix = info[1].As<Napi::String>().Utf8Value();
  Napi::Array out = Napi::Array::New(env);
  uint32_t k = 0;
  // Nodes are created in log order and never revived: the live root children in creation order are
  // the root's children map in insertion order.
  for (size_t id = 1; id < t->nodes.size(); id++) {
    const Node& n = t->nodes[id];
    if (!n.live || n.parent != 0 || n.kind != 0) continue;
    const std::string_view relpath = Path(*t, n);
    if (relpath.substr(n.name_at, prefix.size()) != prefix) continue;
    double bytes = 0;
    for (uint32_t i = 0; i < n.ext_n; i++) bytes += t->exts[n.ext_at + i].len;
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", n.index);
    o.Set("relpath", Napi::String::New(env, relpath.data(), relpath.size()));
    o.Set("bytes", bytes);
    out.Set(k++, o);
  }
  return out;
}

// allocator.ts: Allocator.rebuild's intervals, IntervalSweep.sweep, SpaceMap.fromRuns and summary.
Napi::Value Space(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 6);
  for (size_t i = 1; i < 6; i++) {
    if (!info[i].IsNumber()) {
      throw Napi::TypeError::New(env, "logTreeSpace(tree, horizon, totalUnits, metaUnits, region2Start, region2Units)");
    }
  }
  const double horizon = info[1].As<Napi::Number>().DoubleValue();
  const double total = info[2].As<Napi::Number>().DoubleValue();
  const double meta_units = info[3].As<Napi::Number>().DoubleValue();
  const double region2_start = info[4].As<Napi::Number>().DoubleValue();
  const double region2_units = info[5].As<Napi::Number>().DoubleValue();
  const double au = t->alloc_unit;
  constexpr int kMeta = 0, kFile = 1, kOther = 2;
  std::vector<double> events;
  std::vector<std::pair<double, double>> past_end;  // FILE intervals that end past the device
  std::vector<std::pair<double, double>> pending;
  events.reserve(2 * (t->exts.size() + 2));
  auto add = [&](double start, double count, int kind) {
    if (count <= 0) return;
    events.push_back(start * 8 + 4 + kind);
    events.push_back((start + count) * 8 + kind);
    if (kind == kFile && start + count > total) past_end.emplace_back(start, start + count);
  };
  add(0, meta_units, kMeta);
  if (region2_units > 0) add(region2_start, region2_units, kMeta);
  for (size_t id = 1; id < t->nodes.size(); id++) {
    const Node& n = t->nodes[id];
    if (!n.live || n.kind != 0) continue;
    for (uint32_t i = 0; i < n.ext_n; i++) {
      const Ext& e = t->exts[n.ext_at + i];
      add(e.off / au, e.len / au, kFile);
    }
  }
  for (const Held& o : t->orphaned) {
    for (const Ext& e : o.ext) {
      if (Divides(e.off, au) && Divides(e.len, au)) add(e.off / au, e.len / au, kOther);
    }
  }
  for (const Held& r : t->released) {
    if (r.index < horizon) continue;
    for (const Ext& e : r.ext) {
      add(e.off / au, e.len / au, kOther);
      pending.emplace_back(e.off / au, (e.off + e.len) / au);
    }
  }
  // Files laid out one after the other (what a fill leaves) give events already in order.
  if (!std::is_sorted(events.begin(), events.end())) std::sort(events.begin(), events.end());
  int64_t depth[3] = {0, 0, 0};
  double collisions = 0, prev = 0, free_from = 0;
  bool any_used = false;
  std::vector<double> runs;
  for (double ev : events) {
    // ev % 8 (events are integers below 2^53 but for orphaned extents far out: fmod then).
    const double low = ev >= 0 && ev < 9007199254740992.0 && ev == std::floor(ev)
                           ? static_cast<double>(static_cast<uint64_t>(ev) & 7)
                           : std::fmod(ev, 8);
    const double p = std::min((ev - low) / 8, total);
    if (p > prev) {
      const int64_t files = depth[kFile];
      if (files > 0) collisions += static_cast<double>(files - 1 + (depth[kMeta] > 0 ? 1 : 0)) * (p - prev);
    }
    const bool was_used = any_used;
    const int kind = static_cast<int>(low) & 3;
    depth[kind] += (static_cast<int>(low) & 4) ? 1 : -1;
    any_used = depth[0] + depth[1] + depth[2] > 0;
    if (!was_used && any_used) {
      if (p > free_from) {
        runs.push_back(free_from);
        runs.push_back(p);
      }
    } else if (was_used && !any_used) {
      free_from = p;
    }
    prev = p;
  }
  for (const auto& [s, e] : past_end) collisions += e - std::max(s, total);
  if (!any_used && total > free_from) {
    runs.push_back(free_from);
    runs.push_back(total);
  }
  // SpaceMap.fromRuns merges adjacent runs.
  double free_units = 0, largest = 0, run_s = 0, run_e = -1;
  bool have = false;
  for (size_t i = 0; i + 1 < runs.size(); i += 2) {
    if (have && run_e == runs[i]) {
      run_e = runs[i + 1];
      continue;
    }
    if (have) {
      free_units += run_e - run_s;
      largest = std::max(largest, run_e - run_s);
    }
    run_s = runs[i];
    run_e = runs[i + 1];
    have = true;
  }
  if (have) {
    free_units += run_e - run_s;
    largest = std::max(largest, run_e - run_s);
  }
  // Allocator.summary counts each pending unit once.
  std::sort(pending.begin(), pending.end());
  double pending_units = 0, cover = -1;
  for (const auto& [s, e] : pending) {
    const double from = std::max(s, cover);
    if (e > from) pending_units += std::ceil(e) - std::ceil(from);
    cover = std::max(cover, e);
  }
  Napi::Float64Array out = Napi::Float64Array::New(env, 4);
  out[0] = free_units;
  out[1] = largest;
  out[2] = pending_units;
  out[3] = collisions;
  return out;
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("logTreeNew", Napi::Function::New(env, New, "logTreeNew"));
  exports.Set("logTreeApplySlots", Napi::Function::New(env, ApplySlots, "logTreeApplySlots"));
  exports.Set("logTreeApplyEntry", Napi::Function::New(env, ApplyEntry, "logTreeApplyEntry"));
  exports.Set("logTreeCounts", Napi::Function::New(env, Counts, "logTreeCounts"));
  exports.Set("logTreeSetNextIndex", Napi::Function::New(env, SetNextIndex, "logTreeSetNextIndex"));
  exports.Set("logTreeProblems", Napi::Function::New(env, Problems, "logTreeProblems"));
  exports.Set("logTreeRootFiles", Napi::Function::New(env, RootFiles, "logTreeRootFiles"));
  exports.Set("logTreeSpace", Napi::Function::New(env, Space, "logTreeSpace"));
}

}  // namespace

FAMFS_NATIVE_MODULE_INIT(famfs_tree, Init);

}  // namespace famfs_native
