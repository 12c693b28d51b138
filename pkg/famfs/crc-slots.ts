// The CRC of every entry in a buffer of consecutive log entries, in one native call (the addon's
// crc32Slots). Replay and fsck check one CRC per entry; done from JavaScript, each needs a subarray
// and a call into zlib, which cost a third of a full replay. Without the addon (a build without
// the native layer) the same CRCs are computed here with zlib.
import { crc32 } from 'zlib';
import { loadNative } from '../device/native';

type SlotsFn = (buf: Uint8Array, count: number, stride: number, length: number) => Uint32Array;

let impl: SlotsFn | undefined;

function zlibSlots(buf: Uint8Array, count: number, stride: number, length: number): Uint32Array {
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = crc32(buf.subarray(i * stride, i * stride + length)) >>> 0;
  return out;
}

function resolve(): SlotsFn {
  try {
    const fn = (loadNative() as unknown as { crc32Slots?: unknown }).crc32Slots;
    if (typeof fn === 'function') return fn as SlotsFn;
  } catch {
    // No addon in this build: zlib below computes the same values.
  }
  return zlibSlots;
}

/** out[i] = crc32 of buf[i*stride, i*stride+length): famfs' CRC (zlib's polynomial). */
export function crcSlots(buf: Uint8Array, count: number, stride: number, length: number): Uint32Array {
  impl ??= resolve();
  return impl(buf, count, stride, length);
}
