// Entry point of the famfs-csi native addon: runs the initializers that each part registered
// with FAMFS_NATIVE_MODULE_INIT (see module_init.h).
#include <napi.h>

#include <utility>
#include <vector>

#include "module_init.h"

namespace famfs_native {
namespace {

std::vector<std::pair<const char*, ModuleInitFn>>& Registry() {
  static std::vector<std::pair<const char*, ModuleInitFn>> registry;  // built before Init runs
  return registry;
}

}  // namespace

bool RegisterModuleInit(const char* name, ModuleInitFn fn) {
  Registry().emplace_back(name, fn);
  return true;
}

void RunModuleInits(Napi::Env env, Napi::Object exports) {
  Napi::Array parts = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& [name, fn] : Registry()) {
    fn(env, exports);
    parts.Set(i++, Napi::String::New(env, name));
  }
  exports.Set("parts", parts);
}

}  // namespace famfs_native

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  famfs_native::RunModuleInits(env, exports);
  return exports;
}

NODE_API_MODULE(famfs_native, Init)
