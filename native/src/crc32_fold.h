// zlib's crc32 (IEEE 802.3, the CRC famfs puts in its superblock, log header and entries), folded
// with carry-less multiplies where the CPU has them. zlib's table-driven crc32 ran at 0.6-1.6 GB/s
// here: the CRCs of a full log (15,420 entries) alone took 5-15 ms, more than famfs C's whole
// fsck. Same value as zlib's crc32 for every input (test/famfs-decode-batch.test.ts compares them).
#pragma once

#include <cstddef>
#include <cstdint>

namespace famfs_native {

// crc32(crc, p, n) as zlib computes it (crc = 0 to start).
uint32_t Crc32(uint32_t crc, const uint8_t* p, size_t n);

}  // namespace famfs_native
