// The famfs log tree in native memory: replay's rules (pkg/famfs/tree.ts) applied to the entries
// of a log buffer as they are decoded (famfs_decode.h), without a JavaScript object per entry.
// fsck uses it for a whole log, and so does every replay from an empty tree: tree.ts then makes a
// node object only when one is looked up (a cold replay of 15,420 entries spent most of its time
// making 15,420 objects nobody had asked for yet).
//
//   logTreeNew(deviceSize, reservedBytes, allocUnit, generation[, expectedEntries]) -> tree (an external)
//   logTreeApplySlots(tree, buf, count, firstSlot, seqMin, seqMax, deletesAllowed) -> slots applied
//       decodes and applies slots up to the first one DecodeOne leaves to decodeEntryAt
//   logTreeApplyDevice(tree, device, offset, count, firstSlot, seqMin, seqMax, deletesAllowed)
//       -> slots applied: the same, reading the slots straight from the DaxDevice's mapping
//   logTreeApplyEntry(tree, kind, index, relpath, fields: Float64Array[, status: Float64Array(10)])
//       -> what it did (status, when given, gets it with its parent and the counts): the id of
//       the node added, minus the id of the node removed, or 0. An entry decodeEntryAt decoded
//       (kind 0 file, 1 mkdir, 2 delete, 3 no tree effect); fields:
//       file [size, flags, uid, gid, mode, fmapKind, chunk, n, (devindex, offset, len) * n],
//       mkdir [uid, gid, mode], delete [targetIndex, targetType (0 file, 1 mkdir)]
//   logTreeCounts(tree) -> Float64Array [slot, nextIndex, files, dirs, generation, problems, orphaned,
//       released, deletes]
//   logTreeSetNextIndex(tree, nextIndex)
//   logTreeProblems(tree) -> [{ index, code, relpath, a, s, sKind, size, fmapKind, chunk, extents }]
//   logTreeRootFiles(tree, prefix) -> [{ index, relpath, bytes }] live files in the root whose name
//       starts with prefix, in the order the root's children map holds them
//   logTreeSpace(tree, horizon, totalUnits, metaUnits, region2Start, region2Units)
//       -> Float64Array [freeUnits, largestFreeRun, pendingUnits, collisions]
//   logTreeFreeRuns(tree, same arguments) -> Float64Array [collisions, start0, end0, ...]
//   logTreeFind(tree, relpath) / logTreeFindIndex(tree, index) -> live node id (root 0) or -1
//   logTreeNodes(tree, ids: Int32Array) -> { rows, exts, paths } (see Nodes)
//   logTreeChildren(tree, id) -> Int32Array, logTreeLive(tree) -> Int32Array
//   logTreeLists(tree) -> { slotIndexes, deletes, released, orphaned, orphanedExts }
//
// Every rule and every number here mirrors tree.ts and allocator.ts (IntervalSweep, summary), in
// the same double arithmetic; problems come back as codes with their operands, and tree.ts words
// them (one wording). test/famfs-fsck-native.test.ts runs fsck both ways over damaged logs and
// requires identical reports; test/famfs-tree-native.test.ts does the same for the tree itself
// (nodes, children, lists, free space, and entries applied after the replay).
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

#include "device.h"
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
  // Live children in creation order (the order tree.ts's children Map iterates): a list through
  // the nodes, -1 for none.
  int32_t first_child, last_child, prev_sib, next_sib;
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
  int32_t node = -1;  // released: the deleted node (its relpath)
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
  std::vector<double> slot_indexes;    // log index of the entry in each slot applied
  std::vector<double> deletes;         // (delete index, target index) of every delete that took effect
  int32_t last_change = 0;             // what the last entry did: node id added, -id removed, 0 nothing
  int32_t last_parent_of_change = -1;  // the parent of that node
  std::string scratch;
  std::vector<uint8_t> group;  // logTreeApplyDevice's read buffer
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
  n.first_child = n.last_child = n.next_sib = -1;
  t->arena.append(relpath);
  const int32_t id = static_cast<int32_t>(t->nodes.size());
  Node& p = t->nodes[parent];
  n.prev_sib = p.last_child;
  if (p.last_child >= 0) {
    t->nodes[p.last_child].next_sib = id;
  } else {
    p.first_child = id;
  }
  p.last_child = id;
  t->nodes.push_back(n);
  t->last_change = id;
  t->last_parent_of_change = parent;
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
  t->last_change = -id;
  t->last_parent_of_change = n.parent;
  t->deletes.push_back(index);
  t->deletes.push_back(n.index);
  {
    Node& p = t->nodes[n.parent];
    if (n.prev_sib >= 0) {
      t->nodes[n.prev_sib].next_sib = n.next_sib;
    } else {
      p.first_child = n.next_sib;
    }
    if (n.next_sib >= 0) {
      t->nodes[n.next_sib].prev_sib = n.prev_sib;
    } else {
      p.last_child = n.prev_sib;
    }
  }
  Erase(*t, &t->by_path, target);
  if (n.parent == 0) Erase(*t, &t->root_kids, target.substr(n.name_at));
  t->nodes[n.parent].children--;
  if (n.kind == 0) {
    t->files--;
    t->released.push_back(
        Held{index, std::vector<Ext>(t->exts.begin() + n.ext_at, t->exts.begin() + n.ext_at + n.ext_n), id});
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
  t->slot_indexes.push_back(index);
  t->last_change = 0;
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
  root.first_child = root.last_child = root.prev_sib = root.next_sib = -1;
  t->nodes.push_back(root);
  t->root_kids.by_name = true;
  // The caller's estimate of the entries to come (a replay knows the log header's count): every
  // array sized once, instead of regrown and the path index rehashed once per 1 MiB chunk.
  if (info.Length() > 4 && info[4].IsNumber()) {
    const double want = info[4].As<Napi::Number>().DoubleValue();
    if (want > 0 && want <= (1 << 24)) {
      const size_t n = static_cast<size_t>(want);
      t->nodes.reserve(n + 1);
      t->slot_indexes.reserve(n);
      t->idx.reserve(n);
      t->exts.reserve(n);
      t->arena.reserve(n * 16);
      Reserve(*t, &t->by_path, n);
    }
  }
  return Napi::External<Tree>::New(env, t, [](Napi::Env, Tree* p) { delete p; });
}

// Decodes and applies the slots at `buf` up to the first one DecodeOne leaves to decodeEntryAt;
// returns how many it applied. *seq_min moves past each entry of a compacted log.
int64_t ApplyRun(Napi::Env env, Tree* t, const Layout& L, const uint8_t* buf, int64_t count, double first_slot,
                 double* seq_min, double seq_max, bool deletes_allowed) {
  const bool compacted = *seq_min >= 0;
  const size_t more = static_cast<size_t>(count);
  // Room for every slot up front, growing geometrically (a log arrives in 1 MiB chunks: an exact
  // reserve per chunk would copy the arrays once per chunk).
  auto grow = [](auto& v, size_t need) {
    if (v.capacity() < need) v.reserve(std::max(need, v.capacity() * 2));
  };
  grow(t->nodes, t->nodes.size() + more);
  grow(t->idx, t->idx.size() + more);
  grow(t->exts, t->exts.size() + more);
  grow(t->slot_indexes, t->slot_indexes.size() + more);
  grow(t->arena, t->arena.size() + more * 16);
  Reserve(*t, &t->by_path, more);
  Decoded d;
  Ext x[kDecodedMaxExtents];
  int64_t n = 0;
  for (; n < count; n++) {
    if (!DecodeOne(L, buf + n * L.entry_size, first_slot + static_cast<double>(n), *seq_min, seq_max, deletes_allowed,
                   &d)) {
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
    if (compacted) *seq_min = d.index + 1;
  }
  return n;
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
  const int64_t n = ApplyRun(env, t, L, buf.Data(), count, first_slot, &seq_min, seq_max, deletes_allowed);
  return Napi::Number::New(env, static_cast<double>(n));
}

// logTreeApplyDevice(tree, device, offset, count, firstSlot, seqMin, seqMax, deletesAllowed): as
// logTreeApplySlots over the `count` slots at device offset `offset`, read straight from the
// device's mapping: each group of slots is invalidated, then copied (guarded) into a buffer that
// stays in L1 and decoded from there, where the JavaScript path invalidates a 1 MiB chunk, copies
// it into a scratch buffer and decodes that. Returns the slots applied; it stops early at a slot
// DecodeOne leaves to decodeEntryAt and at any device error (out of range, fault, failed, closed),
// which the caller's own read of the rest then reports.
Napi::Value ApplyDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 8);
  if (!info[1].IsObject() || !info[2].IsNumber() || !info[3].IsNumber() || !info[4].IsNumber() || !info[5].IsNumber() ||
      !info[6].IsNumber() || !info[7].IsBoolean()) {
    throw Napi::TypeError::New(env,
                               "logTreeApplyDevice(tree, device, offset, count, firstSlot, seqMin, seqMax, "
                               "deletesAllowed: boolean)");
  }
  const Layout& L = *DecodeLayout();
  DeviceMapping* dev = UnwrapDevice(info[1].As<Napi::Object>());
  const double offset = info[2].As<Napi::Number>().DoubleValue();
  const int64_t count = info[3].As<Napi::Number>().Int64Value();
  const double first_slot = info[4].As<Napi::Number>().DoubleValue();
  double seq_min = info[5].As<Napi::Number>().DoubleValue();
  const double seq_max = info[6].As<Napi::Number>().DoubleValue();
  const bool deletes_allowed = info[7].As<Napi::Boolean>().Value();
  if (dev == nullptr || !(offset >= 0) || offset > 9007199254740991.0 || count <= 0) {
    return Napi::Number::New(env, 0);
  }
  constexpr int64_t kGroup = 32;
  std::vector<uint8_t>& buf = t->group;
  buf.resize(static_cast<size_t>(kGroup) * L.entry_size);
  int64_t at = 0;
  while (at < count) {
    const int64_t g = std::min(kGroup, count - at);
    const uint64_t off = static_cast<uint64_t>(offset) + static_cast<uint64_t>(at) * L.entry_size;
    const size_t n = static_cast<size_t>(g) * L.entry_size;
    if (dev->failed() || !dev->InRange(off, n)) break;
    if (dev->InvalidateRange(off, n) != IoStatus::kOk || dev->ReadAt(off, buf.data(), n) != IoStatus::kOk) break;
    const int64_t k =
        ApplyRun(env, t, L, buf.data(), g, first_slot + static_cast<double>(at), &seq_min, seq_max, deletes_allowed);
    at += k;
    if (k < g) break;
  }
  return Napi::Number::New(env, static_cast<double>(at));
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
  // The caller's status array, written in place (no object per entry): [change, its parent, slot,
  // nextIndex, files, dirs, problems, orphaned, released, deletes].
  if (info.Length() > 5 && info[5].IsTypedArray() &&
      info[5].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array) {
    Napi::Float64Array st = info[5].As<Napi::Float64Array>();
    if (st.ElementLength() >= 10) {
      double* o = st.Data();
      o[0] = t->last_change;
      o[1] = t->last_change == 0 ? -1 : t->last_parent_of_change;
      o[2] = t->slot;
      o[3] = t->next_index;
      o[4] = t->files;
      o[5] = t->dirs;
      o[6] = static_cast<double>(t->problems.size());
      o[7] = static_cast<double>(t->orphaned.size());
      o[8] = static_cast<double>(t->released.size());
      o[9] = static_cast<double>(t->deletes.size() / 2);
    }
  }
  return Napi::Number::New(env, t->last_change);
}

Napi::Value Counts(const Napi::CallbackInfo& info) {
  Tree* t = Get(info, 1);
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), 9);
  out[0] = t->slot;
  out[1] = t->next_index;
  out[2] = t->files;
  out[3] = t->dirs;
  out[4] = t->generation;
  out[5] = static_cast<double>(t->problems.size());
  out[6] = static_cast<double>(t->orphaned.size());
  out[7] = static_cast<double>(t->released.size());
  out[8] = static_cast<double>(t->deletes.size() / 2);
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

// allocator.ts: Allocator.rebuild's intervals, IntervalSweep.sweep and SpaceMap.fromRuns: the free
// runs (merged, as [start, end) pairs in `runs`) and the collisions; `pending` gets the releases at
// or past the horizon as unit intervals.
void Sweep(const Tree* t, double horizon, double total, double meta_units, double region2_start, double region2_units,
           std::vector<double>* merged, double* collisions_out, std::vector<std::pair<double, double>>* pending) {
  const double au = t->alloc_unit;
  constexpr int kMeta = 0, kFile = 1, kOther = 2;
  std::vector<double> events;
  std::vector<std::pair<double, double>> past_end;  // FILE intervals that end past the device
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
      pending->emplace_back(e.off / au, (e.off + e.len) / au);
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
  merged->clear();
  for (size_t i = 0; i + 1 < runs.size(); i += 2) {
    if (!merged->empty() && merged->back() == runs[i]) {
      merged->back() = runs[i + 1];
    } else {
      merged->push_back(runs[i]);
      merged->push_back(runs[i + 1]);
    }
  }
  *collisions_out = collisions;
}

bool SpaceArgs(const Napi::CallbackInfo& info, double* v) {
  for (size_t i = 1; i < 6; i++) {
    if (!info[i].IsNumber()) return false;
    v[i - 1] = info[i].As<Napi::Number>().DoubleValue();
  }
  return true;
}

// fsck's summary: Allocator.summary of that map.
Napi::Value Space(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 6);
  double v[5];
  if (!SpaceArgs(info, v)) {
    throw Napi::TypeError::New(env, "logTreeSpace(tree, horizon, totalUnits, metaUnits, region2Start, region2Units)");
  }
  std::vector<double> runs;
  std::vector<std::pair<double, double>> pending;
  double collisions = 0;
  Sweep(t, v[0], v[1], v[2], v[3], v[4], &runs, &collisions, &pending);
  double free_units = 0, largest = 0;
  for (size_t i = 0; i + 1 < runs.size(); i += 2) {
    free_units += runs[i + 1] - runs[i];
    largest = std::max(largest, runs[i + 1] - runs[i]);
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

// Allocator.rebuild's map: [collisions, start0, end0, start1, end1, ...] (free runs in units).
Napi::Value FreeRuns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 6);
  double v[5];
  if (!SpaceArgs(info, v)) {
    throw Napi::TypeError::New(env,
                               "logTreeFreeRuns(tree, horizon, totalUnits, metaUnits, region2Start, region2Units)");
  }
  std::vector<double> runs;
  std::vector<std::pair<double, double>> pending;
  double collisions = 0;
  Sweep(t, v[0], v[1], v[2], v[3], v[4], &runs, &collisions, &pending);
  Napi::Float64Array out = Napi::Float64Array::New(env, runs.size() + 1);
  out[0] = collisions;
  std::memcpy(out.Data() + 1, runs.data(), runs.size() * sizeof(double));
  return out;
}

// Lookups for the tree's JavaScript side (tree.ts makes a node object only when one is asked for).

// logTreeFind(tree, relpath) -> id of the live node at relpath (0: the root), or -1.
Napi::Value FindPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 2);
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "logTreeFind(tree, relpath: string)");
  const std::string p = info[1].As<Napi::String>().Utf8Value();
  if (p.empty() || p == ".") return Napi::Number::New(env, 0);
  return Napi::Number::New(env, Find(*t, t->by_path, p));
}

// logTreeFindIndex(tree, index) -> id of the live node made by log entry `index`, or -1.
Napi::Value FindIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 2);
  if (!info[1].IsNumber()) throw Napi::TypeError::New(env, "logTreeFindIndex(tree, index)");
  return Napi::Number::New(env, FindLive(*t, info[1].As<Napi::Number>().DoubleValue()));
}

constexpr size_t kRow = 12;  // per node: index, kind, live, mode, uid, gid, flags, size, fmapKind, chunk, extN, parent

// logTreeNodes(tree, ids: Int32Array) -> { rows: Float64Array (kRow per node), exts: Float64Array
// (devindex, offset, len per extent, node after node), paths: the relpaths joined by NUL }.
Napi::Value Nodes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 2);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(env, "logTreeNodes(tree, ids: Int32Array)");
  }
  Napi::Int32Array ids = info[1].As<Napi::Int32Array>();
  const size_t n = ids.ElementLength();
  size_t next = 0, path_bytes = 0;
  for (size_t k = 0; k < n; k++) {
    const int32_t id = ids[k];
    if (id < 0 || static_cast<size_t>(id) >= t->nodes.size())
      throw Napi::RangeError::New(env, "logTreeNodes: no such node");
    next += t->nodes[id].ext_n;
    path_bytes += t->nodes[id].path_len + 1;
  }
  Napi::Float64Array rows = Napi::Float64Array::New(env, n * kRow);
  Napi::Float64Array exts = Napi::Float64Array::New(env, next * 3);
  std::string paths;
  paths.reserve(path_bytes);
  double* r = rows.Data();
  double* x = exts.Data();
  for (size_t k = 0; k < n; k++, r += kRow) {
    const Node& nd = t->nodes[ids[k]];
    r[0] = nd.index;
    r[1] = nd.kind;
    r[2] = nd.live ? 1 : 0;
    r[3] = nd.mode;
    r[4] = nd.uid;
    r[5] = nd.gid;
    r[6] = nd.flags;
    r[7] = nd.size;
    r[8] = nd.fmap_kind;
    r[9] = nd.chunk;
    r[10] = nd.ext_n;
    r[11] = nd.parent;
    for (uint32_t i = 0; i < nd.ext_n; i++, x += 3) {
      const Ext& e = t->exts[nd.ext_at + i];
      x[0] = e.dev;
      x[1] = e.off;
      x[2] = e.len;
    }
    if (k > 0) paths.push_back('\0');
    paths.append(Path(*t, nd));
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("rows", rows);
  out.Set("exts", exts);
  out.Set("paths", Napi::String::New(env, paths.data(), paths.size()));
  return out;
}

// logTreeChildren(tree, id) -> Int32Array: the live children of node `id`, in creation order.
Napi::Value Children(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 2);
  if (!info[1].IsNumber()) throw Napi::TypeError::New(env, "logTreeChildren(tree, id)");
  const int32_t id = info[1].As<Napi::Number>().Int32Value();
  if (id < 0 || static_cast<size_t>(id) >= t->nodes.size())
    throw Napi::RangeError::New(env, "logTreeChildren: no such node");
  const Node& p = t->nodes[id];
  Napi::Int32Array out = Napi::Int32Array::New(env, p.kind == 1 && p.live ? p.children : 0);
  size_t k = 0;
  for (int32_t c = p.first_child; c >= 0 && k < out.ElementLength(); c = t->nodes[c].next_sib) out[k++] = c;
  return out;
}

// logTreeLive(tree) -> Int32Array: every live node but the root, in log order.
Napi::Value Live(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 1);
  const size_t live = static_cast<size_t>(t->files + t->dirs);
  Napi::Int32Array out = Napi::Int32Array::New(env, live);
  size_t k = 0;
  for (size_t id = 1; id < t->nodes.size() && k < live; id++) {
    if (t->nodes[id].live) out[k++] = static_cast<int32_t>(id);
  }
  return out;
}

// logTreeLists(tree) -> { slotIndexes, deletes: (delete index, target index)*, released: (delete
// index, node id)*, orphaned: (index, extent count)*, orphanedExts: (devindex, offset, len)* }.
Napi::Value Lists(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tree* t = Get(info, 1);
  auto f64 = [&](const double* p, size_t n) {
    Napi::Float64Array a = Napi::Float64Array::New(env, n);
    if (n > 0) std::memcpy(a.Data(), p, n * sizeof(double));
    return a;
  };
  std::vector<double> released, orphaned, oext;
  for (const Held& r : t->released) {
    released.push_back(r.index);
    released.push_back(r.node);
  }
  for (const Held& o : t->orphaned) {
    orphaned.push_back(o.index);
    orphaned.push_back(static_cast<double>(o.ext.size()));
    for (const Ext& e : o.ext) {
      oext.push_back(e.dev);
      oext.push_back(e.off);
      oext.push_back(e.len);
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("slotIndexes", f64(t->slot_indexes.data(), t->slot_indexes.size()));
  out.Set("deletes", f64(t->deletes.data(), t->deletes.size()));
  out.Set("released", f64(released.data(), released.size()));
  out.Set("orphaned", f64(orphaned.data(), orphaned.size()));
  out.Set("orphanedExts", f64(oext.data(), oext.size()));
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
  exports.Set("logTreeFreeRuns", Napi::Function::New(env, FreeRuns, "logTreeFreeRuns"));
  exports.Set("logTreeApplyDevice", Napi::Function::New(env, ApplyDevice, "logTreeApplyDevice"));
  exports.Set("logTreeFind", Napi::Function::New(env, FindPath, "logTreeFind"));
  exports.Set("logTreeFindIndex", Napi::Function::New(env, FindIndex, "logTreeFindIndex"));
  exports.Set("logTreeNodes", Napi::Function::New(env, Nodes, "logTreeNodes"));
  exports.Set("logTreeChildren", Napi::Function::New(env, Children, "logTreeChildren"));
  exports.Set("logTreeLive", Napi::Function::New(env, Live, "logTreeLive"));
  exports.Set("logTreeLists", Napi::Function::New(env, Lists, "logTreeLists"));
}

}  // namespace

FAMFS_NATIVE_MODULE_INIT(famfs_tree, Init);

}  // namespace famfs_native
