// Entry point of the famfs-csi native addon (placeholder until the device layer lands).
#include <napi.h>

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

NODE_API_MODULE(famfs_native, Init)
