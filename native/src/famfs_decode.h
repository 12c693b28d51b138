// One famfs log entry decoded from its 544 bytes, shared by the batch decoder (famfs_decode.cc)
// and the native log tree (famfs_tree.cc). The struct offsets are pkg/famfs/layout.ts's, handed
// over once by configureLogDecode (pkg/famfs/decode-batch.ts): this file defines no on-media
// struct. DecodeOne takes an entry only when layout.ts's decodeEntryAt would accept it with
// exactly these values; otherwise it returns false and the caller leaves the slot to decodeEntryAt.
#pragma once

#include <cstddef>
#include <cstdint>

namespace famfs_native {

struct Layout {
  uint32_t entry_size, crc, seqnum, type, payload;
  uint32_t fm_size, fm_flags, fm_uid, fm_gid, fm_mode, fm_relpath, fm_fmap;
  uint32_t fmap_ext_type, fmap_count, fmap_extents, simple_extent_size, ie_nstrips, ie_chunk, ie_strips;
  uint32_t md_uid, md_gid, md_mode, md_relpath;
  uint32_t del_target_index, del_target_type, del_relpath;
  uint32_t relpath_field, max_simple_extents, max_strips;
  uint32_t type_file, type_mkdir, type_delete, ext_simple, ext_interleave;
};

// The layout configureLogDecode set; nullptr before.
const Layout* DecodeLayout();

constexpr size_t kDecodedMaxExtents = 16;  // layout.ts MAX_SIMPLE_EXTENTS and MAX_STRIPS (checked at configure)

struct Decoded {
  uint32_t kind;  // 0 file, 1 mkdir, 2 delete
  double index;   // log index (the seqnum)
  // FILE: size, flags, uid, gid, mode, fmap kind (0 simple, 1 interleave), chunk size, extents.
  // MKDIR: uid, gid, mode. DELETE: target index, target type (0 file, 1 mkdir).
  double size, chunk, target_index;
  uint32_t flags, uid, gid, mode, fmap_kind, target_type, nx;
  // u64 fields as (lo, hi) words, for callers that hand them on as words: size or target index,
  // chunk size, and per extent devindex, offset, len.
  uint32_t w_size[2], w_chunk[2], w_ext[kDecodedMaxExtents * 6];
  double ext[kDecodedMaxExtents * 3];  // devindex, offset, len per extent
  const uint8_t* path;
  size_t path_len;
};

// Decodes the entry at `e` (slot `slot`). seq_min < 0: famfs' own log (seqnum == slot); otherwise
// the seqnum must lie in [seq_min, seq_max). `deletes_allowed`: the superblock is known to enable
// delete entries. False: decodeEntryAt decides (and words why).
bool DecodeOne(const Layout& L, const uint8_t* e, double slot, double seq_min, double seq_max, bool deletes_allowed,
               Decoded* out);

}  // namespace famfs_native
