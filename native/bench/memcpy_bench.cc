// Benchmark-only addon (build/Release/famfs_bench.node; never shipped in the image): the physical
// limit the FUSE paths are compared with (bench/fuse). Plain memcpy out of a read-only shared
// mapping of the device into a per-thread one-chunk buffer (or, `into`, from that buffer into a
// read-write shared mapping: the store side of a write), on `threads` C++ threads each owning a
// slice, `passes` times; returns { bytesPerSec, cpuSeconds } (cpuSeconds: the copying threads' own CPU
// time, which a loaded machine does not inflate the way it inflates wall time). It maps the device
// itself, so the production addon carries no benchmark code.
#include <fcntl.h>
#include <napi.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <time.h>
#include <thread>
#include <vector>

namespace {

// devdax maps only at its alignment (2 MiB by default); a file maps at any page.
constexpr uint64_t kMapAlign = 2ull << 20;

double ThreadCpuSeconds() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// memcpyBandwidth(path, offset, length, chunk, threads, passes, into?) -> { bytesPerSec, cpuSeconds }
// into: copy the buffer into the device (overwrites [offset, offset+length): bench memory only).
Napi::Value MemcpyBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  uint64_t offset = static_cast<uint64_t>(info[1].ToNumber().DoubleValue());
  uint64_t length = static_cast<uint64_t>(info[2].ToNumber().DoubleValue());
  uint64_t chunk = static_cast<uint64_t>(info[3].ToNumber().DoubleValue());
  unsigned threads = info[4].ToNumber().Uint32Value();
  unsigned passes = info[5].ToNumber().Uint32Value();
  bool into = info.Length() > 6 && info[6].ToBoolean().Value();
  if (threads == 0 || chunk == 0 || length == 0)
    throw Napi::RangeError::New(env, "threads, chunk and length must be positive");
  int fd = open(path.c_str(), (into ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw Napi::Error::New(env, "open " + path + ": " + strerror(errno));
  uint64_t map_off = offset / kMapAlign * kMapAlign;
  uint64_t map_len = (offset - map_off + length + kMapAlign - 1) / kMapAlign * kMapAlign;
  void* map =
      mmap(nullptr, map_len, into ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, static_cast<off_t>(map_off));
  int map_errno = errno;
  close(fd);
  if (map == MAP_FAILED) throw Napi::Error::New(env, "mmap " + path + ": " + strerror(map_errno));
  uint8_t* base = static_cast<uint8_t*>(map) + (offset - map_off);
  uint64_t per = (length / threads) / chunk * chunk;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<double> cpu(threads, 0.0);
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; t++) {
    pool.emplace_back([&, t] {
      std::vector<char> buf(chunk, 0x5a);
      uint8_t* dev = base + t * per;
      auto pass = [&] {
        for (uint64_t o = 0; o < per; o += chunk) {
          if (into) {
            memcpy(dev + o, buf.data(), chunk);
          } else {
            memcpy(buf.data(), dev + o, chunk);
          }
        }
      };
      pass();  // warm-up: page-table entries of this mapping, the buffer
      ready++;
      while (!go.load()) std::this_thread::yield();
      double c0 = ThreadCpuSeconds();
      for (unsigned p = 0; p < passes; p++) pass();
      asm volatile("" : : "r"(buf.data()) : "memory");
      cpu[t] = ThreadCpuSeconds() - c0;
    });
  }
  while (ready.load() < static_cast<int>(threads)) std::this_thread::yield();
  auto t0 = std::chrono::steady_clock::now();
  go.store(true);
  for (auto& th : pool) th.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  munmap(map, map_len);
  double cpu_sum = 0;
  for (double c : cpu) cpu_sum += c;
  Napi::Object r = Napi::Object::New(env);
  r.Set("bytesPerSec", static_cast<double>(per) * threads * passes / secs);
  r.Set("cpuSeconds", cpu_sum);
  return r;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("memcpyBandwidth", Napi::Function::New(env, MemcpyBandwidth, "memcpyBandwidth"));
  return exports;
}

}  // namespace

NODE_API_MODULE(famfs_bench, Init)
