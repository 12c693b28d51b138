// Batch CRC of famfs log entries: one call computes the CRC of every entry in a buffer of
// consecutive entries, where calling zlib's crc32 from JavaScript once per entry (a subarray and a
// native call each) was a third of a full log replay.
//
//   crc32Slots(buf: Uint8Array, count: number, stride: number, length: number) -> Uint32Array
//       out[i] = crc32(buf[i*stride .. i*stride+length))
//
// crc32 is zlib's (the polynomial famfs uses), folded with carry-less multiplies (crc32_fold.h).
#include <napi.h>

#include "crc32_fold.h"
#include "module_init.h"

namespace famfs_native {
namespace {

Napi::Value Crc32Slots(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsNumber()) {
    throw Napi::TypeError::New(env, "crc32Slots(buf: Uint8Array, count: number, stride: number, length: number)");
  }
  Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
  const int64_t count = info[1].As<Napi::Number>().Int64Value();
  const int64_t stride = info[2].As<Napi::Number>().Int64Value();
  const int64_t length = info[3].As<Napi::Number>().Int64Value();
  if (count < 0 || stride <= 0 || length < 0 || length > stride ||
      (count > 0 && static_cast<uint64_t>((count - 1) * stride + length) > buf.ByteLength())) {
    throw Napi::RangeError::New(env, "crc32Slots: slots exceed the buffer");
  }
  Napi::Uint32Array out = Napi::Uint32Array::New(env, static_cast<size_t>(count));
  const uint8_t* base = buf.Data();
  for (int64_t i = 0; i < count; i++) {
    out[static_cast<size_t>(i)] = Crc32(0, base + i * stride, static_cast<size_t>(length));
  }
  return out;
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("crc32Slots", Napi::Function::New(env, Crc32Slots, "crc32Slots"));
}

}  // namespace

FAMFS_NATIVE_MODULE_INIT(famfs_crc, Init);

}  // namespace famfs_native
