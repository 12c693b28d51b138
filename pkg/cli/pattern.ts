/**
 * Deterministic pseudo-random file content (famfs creat --seed / verify --seed): a seed names
 * the bytes, so any host can check a file without a copy of it. Each 4 KiB block is generated
 * from (seed, block number) alone, so any range can be produced or checked independently.
 */
export const PATTERN_BLOCK = 4096;

function mix(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x45d9f3b);
  return (h ^ (h >>> 13)) >>> 0;
}

/** Fill `buf` with the pattern of file bytes [fileOffset, fileOffset + buf.length). */
export function fillPattern(buf: Buffer, seed: number, fileOffset: number): void {
  if (fileOffset % PATTERN_BLOCK !== 0) throw new RangeError('pattern ranges start on a 4 KiB boundary');
  const block = Buffer.alloc(PATTERN_BLOCK);
  const words = new Uint32Array(block.buffer, block.byteOffset, PATTERN_BLOCK / 4);
  for (let off = 0; off < buf.length; off += PATTERN_BLOCK) {
    // xorshift32 seeded per block
    let x = mix(seed >>> 0, (fileOffset + off) / PATTERN_BLOCK) || 1;
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[i] = x >>> 0;
    }
    block.copy(buf, off, 0, Math.min(PATTERN_BLOCK, buf.length - off));
  }
}
