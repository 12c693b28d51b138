// fsck's first step in one call: is the superblock and famfs' own log header (generation 0) valid,
// and what do they say. Only the clean answer comes from here: when any check layout.ts's
// validateSuperblock or validateLogHeader makes would fail, or a value falls where this code does
// not mirror JavaScript's number arithmetic (2^48 and up, a device path that is not ASCII, a
// compacted log), fsckHead returns undefined and pkg/famfs/fsck.ts runs the JavaScript checks,
// which word every problem. In a fresh process those checks cost ~1.5 ms in first calls of
// JavaScript code and Node builtins (BigInt reads, hex and UTF-8 decoding) for 248 bytes.
//
//   fsckHead(sb: Uint8Array, lh: Uint8Array, mediaSize: number, layout: Float64Array, out: Float64Array)
//     -> "uuid\0systemUuid\0devicePath\0version" | undefined
//     out: [extended (0/1), deviceSize, logLen, nextIndex, nextSeqnum]
//
// `layout` carries layout.ts's offsets and constants (pkg/famfs/native-tree.ts HEAD_LAYOUT, in the
// order of the enum below): nothing about the format is written down here a second time.
// test/famfs-fsck-native.test.ts runs fsck both ways over damaged superblocks and log headers.
#include <napi.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "crc32_fold.h"
#include "module_init.h"

namespace famfs_native {
namespace {

enum Head {
  kSbSize,
  kSbMagic,
  kSbVersion,
  kSbLogOffset,
  kSbLogLen,
  kSbAllocUnit,
  kSbOmfMajor,
  kSbUuid,
  kSbSystemUuid,
  kSbCrc,
  kSbDaxdevSize,
  kSbDaxdevPath,
  kDaxdevPathField,
  kSuperblockMagicLo,
  kSuperblockMagicHi,
  kVersionLo,  // FAMFS_VERSION
  kVersionHi,
  kExtVersionLo,  // FAMFS_CSI_EXT_VERSION
  kExtVersionHi,
  kExt2VersionLo,  // FAMFS_CSI_EXT2_VERSION
  kExt2VersionHi,
  kLogOffset,
  kMinLogLen,
  kAllocUnit,
  kSmallAllocUnit,
  kOmfMajor,
  kLhSize,
  kLhMagic,
  kLhLen,
  kLhLastIndex,
  kLhCrc,
  kLhNextSeqnum,
  kLhNextIndex,
  kLogMagicLo,
  kLogMagicHi,
  kLogHeaderSize,
  kLogEntrySize,
  kHeadFields
};

uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

uint64_t U64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Below this every value and sum fsck's JavaScript forms from these fields is an exact double.
constexpr uint64_t kExact = uint64_t{1} << 48;

void Uuid(const uint8_t* p, std::string* s) {
  static const char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s->push_back('-');
    s->push_back(kHex[p[i] >> 4]);
    s->push_back(kHex[p[i] & 15]);
  }
}

Napi::Value FsckHead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsNumber() ||
      !info[3].IsTypedArray() || !info[4].IsTypedArray()) {
    throw Napi::TypeError::New(env,
                               "fsckHead(sb: Uint8Array, lh: Uint8Array, mediaSize: number, layout: Float64Array, "
                               "out: Float64Array)");
  }
  Napi::Uint8Array sb_a = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array lh_a = info[1].As<Napi::Uint8Array>();
  const double media_size = info[2].As<Napi::Number>().DoubleValue();
  Napi::Float64Array lay = info[3].As<Napi::Float64Array>();
  Napi::Float64Array out = info[4].As<Napi::Float64Array>();
  if (lay.ElementLength() != kHeadFields || out.ElementLength() < 5) {
    throw Napi::RangeError::New(env, "fsckHead: layout or out has the wrong length");
  }
  auto L = [&](Head h) -> uint64_t { return static_cast<uint64_t>(lay[h]); };
  auto pair = [&](Head lo) -> uint64_t { return L(lo) | (L(static_cast<Head>(lo + 1)) << 32); };
  if (sb_a.ByteLength() < L(kSbSize) || lh_a.ByteLength() < L(kLhSize) ||
      L(kSbDaxdevPath) + L(kDaxdevPathField) > L(kSbSize) || L(kSbCrc) + 8 > L(kSbSize) || L(kLhCrc) + 8 > L(kLhSize)) {
    throw Napi::RangeError::New(env, "fsckHead: buffers smaller than the layout");
  }
  const uint8_t* sb = sb_a.Data();
  const uint8_t* lh = lh_a.Data();
  Napi::Value no = env.Undefined();

  // validateSuperblock: no problem at all.
  if (U64(sb + L(kSbMagic)) != pair(kSuperblockMagicLo)) return no;
  const uint64_t version = U64(sb + L(kSbVersion));
  const bool extended = version == pair(kExtVersionLo);
  // A compacted log (revision 2) has its header elsewhere: the JavaScript path finds it.
  if (version != pair(kVersionLo) && !extended) return no;
  if (U64(sb + L(kSbCrc)) != Crc32(0, sb, L(kSbCrc))) return no;
  const uint64_t log_offset = U64(sb + L(kSbLogOffset));
  const uint64_t log_len = U64(sb + L(kSbLogLen));
  const uint64_t alloc_unit = U64(sb + L(kSbAllocUnit));
  const uint64_t device_size = U64(sb + L(kSbDaxdevSize));
  if (log_len >= kExact || device_size >= kExact) return no;
  if (log_offset != L(kLogOffset)) return no;
  // JavaScript's (logLen & (logLen - 1)) works on the low 32 bits; so does this.
  if (log_len < L(kMinLogLen) || (static_cast<uint32_t>(log_len) & static_cast<uint32_t>(log_len - 1)) != 0) return no;
  if (alloc_unit != L(kAllocUnit) && alloc_unit != L(kSmallAllocUnit)) return no;
  if (U32(sb + L(kSbOmfMajor)) != L(kOmfMajor)) return no;
  if (device_size < L(kLogOffset) + log_len) return no;
  if (static_cast<double>(device_size) > media_size) return no;
  // The path up to its NUL (or the whole field), ASCII only: UTF-8 decoding stays JavaScript's.
  const uint8_t* path = sb + L(kSbDaxdevPath);
  size_t path_len = 0;
  const size_t field = L(kDaxdevPathField);
  while (path_len < field && path[path_len] != 0) {
    if (path[path_len] >= 0x80) return no;
    path_len++;
  }

  // validateLogHeader (generation 0): no problem at all.
  if (U64(lh + L(kLhMagic)) != pair(kLogMagicLo)) return no;
  if (U64(lh + L(kLhCrc)) != Crc32(0, lh, L(kLhCrc))) return no;
  const uint64_t len = U64(lh + L(kLhLen));
  const uint64_t last_index = U64(lh + L(kLhLastIndex));
  const uint64_t next_seqnum = U64(lh + L(kLhNextSeqnum));
  const uint64_t next_index = U64(lh + L(kLhNextIndex));
  if (len >= kExact || last_index >= kExact || next_seqnum >= kExact || next_index >= kExact) return no;
  if (len != log_len) return no;
  // logCapacity: Math.floor((len - LOG_HEADER_SIZE) / LOG_ENTRY_SIZE), in doubles as there.
  const double cap = std::floor((static_cast<double>(len) - lay[kLogHeaderSize]) / lay[kLogEntrySize]);
  if (static_cast<double>(last_index) != cap - 1) return no;
  if (next_index > last_index + 1) return no;
  if (next_seqnum != next_index) return no;

  out[0] = extended ? 1 : 0;
  out[1] = static_cast<double>(device_size);
  out[2] = static_cast<double>(log_len);
  out[3] = static_cast<double>(next_index);
  out[4] = static_cast<double>(next_seqnum);
  std::string s;
  s.reserve(128);
  Uuid(sb + L(kSbUuid), &s);
  s.push_back('\0');
  Uuid(sb + L(kSbSystemUuid), &s);
  s.push_back('\0');
  s.append(reinterpret_cast<const char*>(path), path_len);
  s.push_back('\0');
  char v[24];
  std::snprintf(v, sizeof v, "%" PRIu64, version);
  s.append(v);
  return Napi::String::New(env, s.data(), s.size());
}

// The extension block and host slot table, in the order of pkg/famfs/native-tree.ts HOSTS_LAYOUT.
enum Hosts {
  kExtMagic,
  kExtRevision,
  kExtSlotCount,
  kExtEpoch,
  kExtFsUuid,
  kExtCrc,
  kExtSize,
  kLiveHostLiveMs,
  kLiveCrc,
  kExtMagicLo,
  kExtMagicHi,
  kExtRevisionMax,
  kHsHostUuid,
  kHsAckedIndex,
  kHsBeat,
  kHsName,
  kHsCrc,
  kHostSlotSize,
  kHostNameField,
  kMaxHostSlots,
  kHostsFields
};

// fsckHosts(area: Uint8Array, slots: Uint8Array, layout: Float64Array, out: Float64Array)
//   -> "fsUuid\0hostUuid\0name\0hostUuid\0name..." | undefined
//   out: [epoch, hosts, then slot, ackedIndex, beat per host]
// What readExtBlock and readHostSlots read when the block (revision 2 and up) and every slot in use
// pass their CRCs and hold values this code mirrors exactly (below 2^48, ASCII names); undefined
// otherwise, when fsck reads them in JavaScript (which re-reads torn slots and words the damage).
Napi::Value FsckHosts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
      !info[3].IsTypedArray()) {
    throw Napi::TypeError::New(
        env, "fsckHosts(area: Uint8Array, slots: Uint8Array, layout: Float64Array, out: Float64Array)");
  }
  Napi::Uint8Array area_a = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array slots_a = info[1].As<Napi::Uint8Array>();
  Napi::Float64Array lay = info[2].As<Napi::Float64Array>();
  Napi::Float64Array out = info[3].As<Napi::Float64Array>();
  if (lay.ElementLength() != kHostsFields) throw Napi::RangeError::New(env, "fsckHosts: layout has the wrong length");
  auto L = [&](Hosts h) -> uint64_t { return static_cast<uint64_t>(lay[h]); };
  const uint64_t slot_size = L(kHostSlotSize);
  const uint64_t max_slots = L(kMaxHostSlots);
  if (area_a.ByteLength() < 2 * L(kExtSize) || L(kHsCrc) + 8 > slot_size ||
      L(kHsName) + L(kHostNameField) > slot_size || slot_size > 64) {
    throw Napi::RangeError::New(env, "fsckHosts: buffers smaller than the layout");
  }
  const uint8_t* b = area_a.Data();
  Napi::Value no = env.Undefined();
  if (U64(b + L(kExtMagic)) != (L(kExtMagicLo) | (L(kExtMagicHi) << 32))) return no;
  const uint32_t revision = U32(b + L(kExtRevision));
  if (revision < 2 || revision > L(kExtRevisionMax)) return no;
  if (U32(b + L(kExtCrc)) != Crc32(0, b, L(kExtCrc))) return no;
  if (revision >= 3) {
    const uint8_t* live = b + L(kExtSize);
    if (U64(live + L(kLiveCrc)) != Crc32(0, live, L(kLiveCrc))) return no;
    const uint64_t ms = U64(live + L(kLiveHostLiveMs));
    if (ms < 1 || ms >= kExact) return no;
  }
  const uint64_t epoch = U64(b + L(kExtEpoch));
  const uint32_t count = U32(b + L(kExtSlotCount));
  if (epoch >= kExact || count > max_slots) return no;
  // The caller read the slots the block counts (readHostSlots reads no more).
  if (slots_a.ByteLength() < count * slot_size || out.ElementLength() < 2 + 3 * static_cast<size_t>(count)) return no;
  std::string s;
  s.reserve(64);
  Uuid(b + L(kExtFsUuid), &s);
  s.push_back('\0');
  static const uint8_t kZero[64] = {};
  uint32_t hosts = 0;
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t* h = slots_a.Data() + static_cast<size_t>(i) * slot_size;
    bool zero = true;
    for (uint64_t k = 0; k < slot_size && zero; k += sizeof kZero) {
      zero = std::memcmp(h + k, kZero, std::min<uint64_t>(sizeof kZero, slot_size - k)) == 0;
    }
    if (zero) continue;
    if (std::memcmp(h + L(kHsHostUuid), kZero, 16) == 0) return no;
    if (U64(h + L(kHsCrc)) != Crc32(0, h, L(kHsCrc))) return no;
    const uint64_t acked = U64(h + L(kHsAckedIndex));
    const uint64_t beat = U64(h + L(kHsBeat));
    if (acked >= kExact || beat >= kExact) return no;
    const uint8_t* name = h + L(kHsName);
    size_t name_len = 0;
    while (name_len < L(kHostNameField) && name[name_len] != 0) {
      if (name[name_len] >= 0x80) return no;
      name_len++;
    }
    Uuid(h + L(kHsHostUuid), &s);
    s.push_back('\0');
    s.append(reinterpret_cast<const char*>(name), name_len);
    s.push_back('\0');
    out[2 + 3 * hosts] = i;
    out[3 + 3 * hosts] = static_cast<double>(acked);
    out[4 + 3 * hosts] = static_cast<double>(beat);
    hosts++;
  }
  out[0] = static_cast<double>(epoch);
  out[1] = hosts;
  return Napi::String::New(env, s.data(), s.size());
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("fsckHead", Napi::Function::New(env, FsckHead, "fsckHead"));
  exports.Set("fsckHosts", Napi::Function::New(env, FsckHosts, "fsckHosts"));
}

}  // namespace

FAMFS_NATIVE_MODULE_INIT(famfs_fsck, Init);

}  // namespace famfs_native
