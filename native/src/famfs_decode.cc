// Batch decode of famfs log entries: the common, valid entries of a buffer of consecutive 544-byte
// slots in one call, returned as numbers and one string, where decoding them one by one in
// JavaScript was most of a cold replay (a fresh process runs that code in V8's interpreter).
//
//   decodeLogSlots(buf: Uint8Array, count: number, firstSlot: number, seqMin: number, seqMax: number,
//                  deletesAllowed: boolean)
//     -> { n: number, words: Uint32Array(n * 13), extents: Uint32Array, paths: string }
//
// The layout is pkg/famfs/layout.ts's (the one definition of the structs); the offsets below are
// passed in by pkg/famfs/decode-batch.ts from it, and test/famfs-decode-batch.test.ts decodes the
// same bytes, valid and damaged, both ways. This decoder takes an entry only when layout.ts's
// decodeEntryAt would accept it with exactly these values; at the first slot it is not sure of (bad
// CRC, a seqnum out of place, an unknown type or extent type, a field out of range, an add_daxdev
// entry, a delete while deletes are not known to be allowed) it stops, and the caller hands that
// slot to decodeEntryAt, which says why (or decodes it) in the one place that words it.
//
// seqMin < 0: famfs' own log, slot i must hold seqnum i. Otherwise a compacted log: the seqnum must
// lie in [seqMin, seqMax) and above the previous entry's.
//
// words (u32), per entry: type (0 file, 1 mkdir, 2 delete), index lo, hi, size | targetIndex lo,
// hi, flags | targetType (0 file, 1 mkdir), uid, gid, mode, fmap kind (0 simple, 1 interleave),
// extent count, chunk size lo, hi. extents: devindex, offset, len per extent as lo, hi words,
// entries' extents one after the other. Every u64 is a safe integer (hi <= 0x1fffff): the caller
// makes it hi * 2^32 + lo as layout.ts does, so small values stay small integers in V8 (from a
// Float64Array every field was a boxed double, and the tree's maps hashed those: replay's tree
// building took twice as long). paths: the relpath of every entry, each followed by a NUL.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "crc32_fold.h"
#include "famfs_decode.h"
#include "module_init.h"

namespace famfs_native {
namespace {

Layout g_layout;
constexpr size_t kRow = 13;  // words per entry
bool g_configured = false;

inline uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// A u64 that must be a safe integer (layout.ts u64n): false when its high word says otherwise.
// Stores its two words at out[0] (lo) and out[1] (hi).
inline bool U64n(const uint8_t* p, uint32_t* out) {
  out[0] = U32(p);
  out[1] = U32(p + 4);
  return out[1] <= 0x1fffff;
}

inline double Value(const uint32_t* w) { return static_cast<double>(w[1]) * 4294967296.0 + static_cast<double>(w[0]); }

// The relpath field: up to its NUL, or the whole field when there is none (terminated says which).
inline size_t PathLen(const uint8_t* p, size_t field, bool* terminated) {
  const void* nul = std::memchr(p, 0, field);
  *terminated = nul != nullptr;
  return nul ? static_cast<size_t>(static_cast<const uint8_t*>(nul) - p) : field;
}

Napi::Value Configure(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "configureLogDecode(layout: object)");
  Napi::Object o = info[0].As<Napi::Object>();
  auto get = [&](const char* k) -> uint32_t {
    Napi::Value v = o.Get(k);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("configureLogDecode: ") + k + " is not a number");
    return v.As<Napi::Number>().Uint32Value();
  };
  Layout l;
  l.entry_size = get("entrySize");
  l.crc = get("crc");
  l.seqnum = get("seqnum");
  l.type = get("type");
  l.payload = get("payload");
  l.fm_size = get("fmSize");
  l.fm_flags = get("fmFlags");
  l.fm_uid = get("fmUid");
  l.fm_gid = get("fmGid");
  l.fm_mode = get("fmMode");
  l.fm_relpath = get("fmRelpath");
  l.fm_fmap = get("fmFmap");
  l.fmap_ext_type = get("fmapExtType");
  l.fmap_count = get("fmapCount");
  l.fmap_extents = get("fmapExtents");
  l.simple_extent_size = get("simpleExtentSize");
  l.ie_nstrips = get("ieNstrips");
  l.ie_chunk = get("ieChunk");
  l.ie_strips = get("ieStrips");
  l.md_uid = get("mdUid");
  l.md_gid = get("mdGid");
  l.md_mode = get("mdMode");
  l.md_relpath = get("mdRelpath");
  l.del_target_index = get("delTargetIndex");
  l.del_target_type = get("delTargetType");
  l.del_relpath = get("delRelpath");
  l.relpath_field = get("relpathField");
  l.max_simple_extents = get("maxSimpleExtents");
  l.max_strips = get("maxStrips");
  l.type_file = get("typeFile");
  l.type_mkdir = get("typeMkdir");
  l.type_delete = get("typeDelete");
  l.ext_simple = get("extSimple");
  l.ext_interleave = get("extInterleave");
  // Everything read must lie inside the entry, before its CRC.
  const uint32_t fmap_end = l.payload + l.fm_fmap + l.fmap_extents + l.ie_strips + l.max_strips * l.simple_extent_size;
  const uint32_t simple_end = l.payload + l.fm_fmap + l.fmap_extents + l.max_simple_extents * l.simple_extent_size;
  if (l.max_simple_extents > kDecodedMaxExtents || l.max_strips > kDecodedMaxExtents) {
    throw Napi::RangeError::New(env, "configureLogDecode: more extents than the native decoder holds");
  }
  if (l.crc + 8 > l.entry_size || fmap_end > l.crc || simple_end > l.crc ||
      l.payload + l.fm_relpath + l.relpath_field > l.crc || l.payload + l.md_relpath + l.relpath_field > l.crc ||
      l.payload + l.del_relpath + l.relpath_field > l.crc) {
    throw Napi::RangeError::New(env, "configureLogDecode: fields outside the entry");
  }
  g_layout = l;
  g_configured = true;
  return env.Undefined();
}

}  // namespace

const Layout* DecodeLayout() { return g_configured ? &g_layout : nullptr; }

bool DecodeOne(const Layout& L, const uint8_t* e, double slot, double seq_min, double seq_max, bool deletes_allowed,
               Decoded* d) {
  if (U32(e + L.crc) != Crc32(0, e, L.crc) || U32(e + L.crc + 4) != 0) return false;
  uint32_t seq[2];
  const bool seq_ok = U64n(e + L.seqnum, seq);
  const double index = Value(seq);
  if (!seq_ok || (seq_min >= 0 ? index < seq_min || index >= seq_max : index != slot)) return false;
  const uint32_t type = U32(e + L.type);
  const uint8_t* p = e + L.payload;
  bool terminated = false;
  d->index = index;
  d->size = d->chunk = d->target_index = 0;
  d->flags = d->uid = d->gid = d->mode = d->fmap_kind = d->target_type = d->nx = 0;
  d->w_size[0] = d->w_size[1] = d->w_chunk[0] = d->w_chunk[1] = 0;
  if (type == L.type_file) {
    d->kind = 0;
    d->path = p + L.fm_relpath;
    d->path_len = PathLen(d->path, L.relpath_field, &terminated);
    if (!terminated || !U64n(p + L.fm_size, d->w_size)) return false;
    d->size = Value(d->w_size);
    d->flags = U32(p + L.fm_flags);
    d->uid = U32(p + L.fm_uid);
    d->gid = U32(p + L.fm_gid);
    d->mode = U32(p + L.fm_mode);
    const uint8_t* f = p + L.fm_fmap;
    const uint32_t ext_type = U32(f + L.fmap_ext_type);
    const uint32_t cnt = U32(f + L.fmap_count);
    const uint8_t* xs = nullptr;
    if (ext_type == L.ext_simple) {
      if (cnt < 1 || cnt > L.max_simple_extents) return false;
      d->fmap_kind = 0;
      d->nx = cnt;
      xs = f + L.fmap_extents;
    } else if (ext_type == L.ext_interleave) {
      const uint8_t* ie = f + L.fmap_extents;
      uint32_t nstrips[2];
      if (cnt != 1 || !U64n(ie + L.ie_nstrips, nstrips) || !U64n(ie + L.ie_chunk, d->w_chunk) || nstrips[1] != 0 ||
          nstrips[0] < 1 || nstrips[0] > L.max_strips || (d->w_chunk[0] == 0 && d->w_chunk[1] == 0)) {
        return false;
      }
      d->fmap_kind = 1;
      d->chunk = Value(d->w_chunk);
      d->nx = nstrips[0];
      xs = ie + L.ie_strips;
    } else {
      return false;
    }
    for (uint32_t i = 0; i < d->nx; i++) {
      uint32_t* w = d->w_ext + i * 6;
      const uint8_t* x = xs + i * L.simple_extent_size;
      if (!U64n(x, &w[0]) || !U64n(x + 8, &w[2]) || !U64n(x + 16, &w[4])) return false;
      d->ext[i * 3] = Value(&w[0]);
      d->ext[i * 3 + 1] = Value(&w[2]);
      d->ext[i * 3 + 2] = Value(&w[4]);
    }
    return true;
  }
  if (type == L.type_mkdir) {
    d->kind = 1;
    d->path = p + L.md_relpath;
    d->path_len = PathLen(d->path, L.relpath_field, &terminated);
    d->uid = U32(p + L.md_uid);
    d->gid = U32(p + L.md_gid);
    d->mode = U32(p + L.md_mode);
    return terminated;
  }
  if (type == L.type_delete) {
    // A delete's relpath need not be terminated (the field's 80 bytes are the name then).
    d->kind = 2;
    d->path = p + L.del_relpath;
    d->path_len = PathLen(d->path, L.relpath_field, &terminated);
    const uint32_t tt = U32(p + L.del_target_type);
    if (!deletes_allowed || (tt != L.type_file && tt != L.type_mkdir) || !U64n(p + L.del_target_index, d->w_size)) {
      return false;
    }
    d->target_type = tt == L.type_file ? 0 : 1;
    d->target_index = Value(d->w_size);
    return true;
  }
  return false;  // add_daxdev, unknown types: decodeEntryAt's
}

namespace {

Napi::Value DecodeLogSlots(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!g_configured) throw Napi::Error::New(env, "decodeLogSlots: configureLogDecode first");
  if (info.Length() < 6 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsNumber() || !info[4].IsNumber() || !info[5].IsBoolean()) {
    throw Napi::TypeError::New(
        env,
        "decodeLogSlots(buf: Uint8Array, count: number, firstSlot: number, seqMin: number, seqMax: number, "
        "deletesAllowed: boolean)");
  }
  const Layout& L = g_layout;
  Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
  const int64_t count = info[1].As<Napi::Number>().Int64Value();
  const double first_slot = info[2].As<Napi::Number>().DoubleValue();
  double seq_min = info[3].As<Napi::Number>().DoubleValue();
  const double seq_max = info[4].As<Napi::Number>().DoubleValue();
  const bool deletes_allowed = info[5].As<Napi::Boolean>().Value();
  if (count < 0 || static_cast<uint64_t>(count) * L.entry_size > buf.ByteLength()) {
    throw Napi::RangeError::New(env, "decodeLogSlots: slots exceed the buffer");
  }
  const bool compacted = seq_min >= 0;
  std::vector<uint32_t> words;
  std::vector<uint32_t> ext;
  std::string paths;
  words.reserve(static_cast<size_t>(count) * kRow);
  ext.reserve(static_cast<size_t>(count) * 6);
  paths.reserve(static_cast<size_t>(count) * 24);
  int64_t n = 0;
  Decoded d;
  for (; n < count; n++) {
    const uint8_t* e = buf.Data() + n * L.entry_size;
    if (!DecodeOne(L, e, first_slot + static_cast<double>(n), seq_min, seq_max, deletes_allowed, &d)) break;
    uint32_t row[kRow] = {0};
    row[0] = d.kind;
    row[1] = static_cast<uint32_t>(std::fmod(d.index, 4294967296.0));
    row[2] = static_cast<uint32_t>(d.index / 4294967296.0);
    row[3] = d.w_size[0];
    row[4] = d.w_size[1];
    row[5] = d.kind == 2 ? d.target_type : d.flags;
    row[6] = d.uid;
    row[7] = d.gid;
    row[8] = d.mode;
    row[9] = d.fmap_kind;
    row[10] = d.nx;
    row[11] = d.w_chunk[0];
    row[12] = d.w_chunk[1];
    words.insert(words.end(), row, row + kRow);
    if (d.kind == 0) ext.insert(ext.end(), d.w_ext, d.w_ext + d.nx * 6);
    paths.append(reinterpret_cast<const char*>(d.path), d.path_len);
    paths.push_back('\0');
    if (compacted) seq_min = d.index + 1;
  }
  Napi::Uint32Array out_words = Napi::Uint32Array::New(env, words.size());
  if (!words.empty()) std::memcpy(out_words.Data(), words.data(), words.size() * sizeof(uint32_t));
  Napi::Uint32Array out_ext = Napi::Uint32Array::New(env, ext.size());
  if (!ext.empty()) std::memcpy(out_ext.Data(), ext.data(), ext.size() * sizeof(uint32_t));
  Napi::Object r = Napi::Object::New(env);
  r.Set("n", Napi::Number::New(env, static_cast<double>(n)));
  r.Set("words", out_words);
  r.Set("extents", out_ext);
  r.Set("paths", Napi::String::New(env, paths.data(), paths.size()));
  return r;
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("configureLogDecode", Napi::Function::New(env, Configure, "configureLogDecode"));
  exports.Set("decodeLogSlots", Napi::Function::New(env, DecodeLogSlots, "decodeLogSlots"));
}

}  // namespace

FAMFS_NATIVE_MODULE_INIT(famfs_decode, Init);

}  // namespace famfs_native
