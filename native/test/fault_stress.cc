// Test-only addon (build/Release/famfs_test.node; never shipped in the image): the device layer's
// sources (addon.cc, memaccess.cc, device.cc) plus testing.faultStress, so the production addon
// carries no test hook.
//
// testing.faultStress(device, faultOffset, goodOffset, threads, iterations): C++ threads (as the
// FUSE server runs them) each alternate a guarded copy that faults with one that does not,
// bypassing the failed flag, to prove the guard is per-thread and reusable. `device` is a
// DaxDevice of this addon. Returns {faults, ok, wrongAddress} totals.
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "../src/device.h"
#include "../src/memaccess.h"
#include "../src/module_init.h"

namespace famfs_native {
namespace {

uint64_t Count(const Napi::Value& v, const char* what) {
  if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 0) {
    throw Napi::RangeError::New(v.Env(), std::string("faultStress: ") + what + " must be a non-negative number");
  }
  return static_cast<uint64_t>(v.As<Napi::Number>().DoubleValue());
}

Napi::Value FaultStress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceMapping* d = info[0].IsObject() ? UnwrapDevice(info[0].As<Napi::Object>()) : nullptr;
  if (d == nullptr)
    throw Napi::TypeError::New(env, "faultStress: first argument must be an open DaxDevice of this addon");
  const uint64_t bad = Count(info[1], "faultOffset");
  const uint64_t good = Count(info[2], "goodOffset");
  const uint64_t threads = Count(info[3], "threads");
  const uint64_t iterations = Count(info[4], "iterations");
  if (!d->InRange(bad, 64) || !d->InRange(good, 64) || threads == 0 || threads > 64) {
    throw Napi::RangeError::New(env, "faultStress: offsets must be inside the device and threads in 1..64");
  }
  std::atomic<uint64_t> faults{0}, ok{0}, wrong{0};
  std::vector<std::thread> pool;
  for (uint64_t t = 0; t < threads; t++) {
    pool.emplace_back([&] {
      uint8_t buf[64];
      for (uint64_t i = 0; i < iterations; i++) {
        Fault f;
        if (GuardedCopy(buf, d->base() + bad, sizeof buf, &f)) {
          wrong++;  // must have faulted
        } else if (f.addr < reinterpret_cast<uintptr_t>(d->base() + bad) ||
                   f.addr >= reinterpret_cast<uintptr_t>(d->base() + bad + sizeof buf)) {
          wrong++;
        } else {
          faults++;
        }
        if (GuardedCopy(buf, d->base() + good, sizeof buf, &f))
          ok++;
        else
          wrong++;
      }
    });
  }
  for (auto& th : pool) th.join();
  Napi::Object out = Napi::Object::New(env);
  out.Set("faults", Napi::Number::New(env, static_cast<double>(faults.load())));
  out.Set("ok", Napi::Number::New(env, static_cast<double>(ok.load())));
  out.Set("wrongAddress", Napi::Number::New(env, static_cast<double>(wrong.load())));
  return out;
}

void InitTesting(Napi::Env env, Napi::Object exports) {
  Napi::Object testing = Napi::Object::New(env);
  testing.Set("faultStress", Napi::Function::New(env, FaultStress, "faultStress"));
  exports.Set("testing", testing);
}

}  // namespace

FAMFS_NATIVE_MODULE_INIT(testing, InitTesting);

}  // namespace famfs_native
