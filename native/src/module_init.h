// Self-registration of the addon's parts. Each part (device.cc, the FUSE server's fuse_*.cc, ...)
// registers its initializer with FAMFS_NATIVE_MODULE_INIT at static-initialization time, and
// addon.cc runs them all for every environment that loads the addon (main thread and each
// worker_thread), so adding a part needs no edit to addon.cc.
#pragma once

#include <napi.h>

namespace famfs_native {

using ModuleInitFn = void (*)(Napi::Env env, Napi::Object exports);

// Returns true so it can initialize a static. Not for use after the addon has loaded.
bool RegisterModuleInit(const char* name, ModuleInitFn fn);

// Runs every registered initializer, in registration order.
void RunModuleInits(Napi::Env env, Napi::Object exports);

}  // namespace famfs_native

#define FAMFS_NATIVE_MODULE_INIT(name, fn) \
  static const bool famfs_native_registered_##name = ::famfs_native::RegisterModuleInit(#name, fn)
