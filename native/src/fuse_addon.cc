// JS face of the famfs FUSE server: the `FuseSession` class of the addon.
//
//   new FuseSession(daxDeviceHandle, mountpoint, options)   // not mounted yet
//   .start(inodes, logIndex)       mounts and starts the C++ worker threads
//   .update(inodes, logIndex)      swaps the inode table, returns kernel notifications sent
//   .setStatfs({...}) .setDirectIo(on) .setFileDirectIo(ino, on)
//   .setGuard(readOnlyInos, writableInos)  files this host serves read-only (EROFS), see GuardSets
//   .flushFile(ino) .invalidateFile(ino)  -> { ok, error?, fault? }
//   .status() .stop()
//
// The inode list is an array of plain objects (see pkg/fuse/native.ts for the shape); it is
// parsed once per update on the JS thread, never per request.
#include <napi.h>

#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "fuse_deposit.h"
#include "fuse_handover.h"
#include "fuse_server.h"
#include "module_init.h"

namespace famfs_fuse {
namespace {

uint64_t U64(const Napi::Object& o, const char* key, uint64_t dflt = 0) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (v.IsBigInt()) {
    bool lossless = false;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("field ") + key + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0) throw Napi::RangeError::New(o.Env(), std::string("field ") + key + " must not be negative");
  return static_cast<uint64_t>(d);
}

bool Bool(const Napi::Object& o, const char* key, bool dflt) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : dflt;
}

std::vector<Extent> Extents(const Napi::Env& env, Napi::Value v) {
  std::vector<Extent> out;
  if (!v.IsArray()) throw Napi::TypeError::New(env, "extents must be an array");
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Object e = a.Get(i).As<Napi::Object>();
    out.push_back({U64(e, "offset"), U64(e, "len")});
  }
  return out;
}

TablePtr ParseTable(const Napi::Env& env, Napi::Value list, uint64_t log_index) {
  if (!list.IsArray()) throw Napi::TypeError::New(env, "inodes must be an array");
  auto table = std::make_shared<Table>();
  table->log_index = log_index;
  Napi::Array a = list.As<Napi::Array>();
  table->inodes.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    Inode n;
    n.ino = U64(o, "ino");
    n.parent = U64(o, "parent");
    n.name = o.Get("name").As<Napi::String>().Utf8Value();
    std::string kind = o.Get("kind").As<Napi::String>().Utf8Value();
    if (kind == "dir") {
      n.kind = Kind::kDir;
    } else if (kind == "file") {
      n.kind = Kind::kFile;
    } else {
      throw Napi::TypeError::New(env, "inode kind must be 'dir' or 'file'");
    }
    n.mode = static_cast<uint32_t>(U64(o, "mode"));
    n.uid = static_cast<uint32_t>(U64(o, "uid"));
    n.gid = static_cast<uint32_t>(U64(o, "gid"));
    n.size = U64(o, "size");
    n.read_only = Bool(o, "readOnly", false);
    Napi::Value fm = o.Get("fmap");
    if (n.kind == Kind::kFile && fm.IsObject()) {
      Napi::Object f = fm.As<Napi::Object>();
      std::string fk = f.Get("kind").As<Napi::String>().Utf8Value();
      if (fk == "interleave") {
        n.interleaved = true;
        n.chunk = U64(f, "chunkSize");
        n.extents = Extents(env, f.Get("strips"));
        if (n.chunk == 0 || n.extents.empty()) throw Napi::RangeError::New(env, "bad interleaved fmap");
      } else {
        n.extents = Extents(env, f.Get("extents"));
      }
    }
    if (n.ino == 0) throw Napi::RangeError::New(env, "inode number 0");
    if (!table->inodes.emplace(n.ino, std::move(n)).second) {
      throw Napi::RangeError::New(env, "duplicate inode number");
    }
  }
  std::string err = table->Finish();
  if (!err.empty()) throw Napi::Error::New(env, err);
  return table;
}

Napi::Object FaultObject(Napi::Env env, const famfs_native::Fault& f) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("signo", f.signo);
  o.Set("code", f.code);
  o.Set("addr", Napi::BigInt::New(env, static_cast<uint64_t>(f.addr)));
  return o;
}

class FuseSessionWrap : public Napi::ObjectWrap<FuseSessionWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FuseSession",
                       {
                           InstanceMethod<&FuseSessionWrap::Start>("start"),
                           InstanceMethod<&FuseSessionWrap::Update>("update"),
                           InstanceMethod<&FuseSessionWrap::SetStatfs>("setStatfs"),
                           InstanceMethod<&FuseSessionWrap::SetDirectIo>("setDirectIo"),
                           InstanceMethod<&FuseSessionWrap::SetFileDirectIo>("setFileDirectIo"),
                           InstanceMethod<&FuseSessionWrap::SetGuard>("setGuard"),
                           InstanceMethod<&FuseSessionWrap::FlushFile>("flushFile"),
                           InstanceMethod<&FuseSessionWrap::InvalidateFile>("invalidateFile"),
                           InstanceMethod<&FuseSessionWrap::Status>("status"),
                           InstanceMethod<&FuseSessionWrap::SetFenceDeadline>("setFenceDeadline"),
                           InstanceMethod<&FuseSessionWrap::Stop>("stop"),
                           InstanceMethod<&FuseSessionWrap::HandoverTo>("handoverTo"),
                           InstanceMethod<&FuseSessionWrap::CancelHandover>("cancelHandover"),
                           InstanceMethod<&FuseSessionWrap::Abandon>("abandon"),
                           InstanceMethod<&FuseSessionWrap::Adopt>("adopt"),
                           InstanceMethod<&FuseSessionWrap::FinishAdoption>("finishAdoption"),
                           InstanceMethod<&FuseSessionWrap::SessionFd>("sessionFd"),
                           InstanceMethod<&FuseSessionWrap::HandoverParamsJs>("handoverParams"),
                       });
  }

  explicit FuseSessionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FuseSessionWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsString() || !info[2].IsObject()) {
      throw Napi::TypeError::New(env, "FuseSession(deviceHandle, mountpoint, options)");
    }
    device_ = famfs_native::ShareDevice(info[0].As<Napi::Object>());
    if (!device_) throw Napi::TypeError::New(env, "not an open DaxDevice handle");
    Napi::Object o = info[2].As<Napi::Object>();
    ServerOptions opts;
    opts.mountpoint = info[1].As<Napi::String>().Utf8Value();
    if (o.Get("fsname").IsString()) opts.fsname = o.Get("fsname").As<Napi::String>().Utf8Value();
    if (o.Get("subtype").IsString()) opts.subtype = o.Get("subtype").As<Napi::String>().Utf8Value();
    opts.read_only = Bool(o, "readOnly", false);
    opts.direct_io = Bool(o, "directIo", false);
    opts.zero_copy_reads = Bool(o, "zeroCopyReads", true);
    opts.clone_fd = Bool(o, "cloneFd", true);
    opts.debug = Bool(o, "debug", false);
    opts.max_threads = static_cast<unsigned>(U64(o, "maxThreads", 0));
    opts.mount_time = U64(o, "mountTime", 0);
    if (o.Get("attrTimeout").IsNumber()) opts.attr_timeout = o.Get("attrTimeout").As<Napi::Number>().DoubleValue();
    if (o.Get("entryTimeout").IsNumber()) opts.entry_timeout = o.Get("entryTimeout").As<Napi::Number>().DoubleValue();
    Napi::Value xa = o.Get("rootXattrs");
    if (xa.IsObject()) {
      Napi::Object x = xa.As<Napi::Object>();
      Napi::Array keys = x.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); i++) {
        std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
        opts.root_xattrs.emplace_back(k, x.Get(k).As<Napi::String>().Utf8Value());
      }
    }
    std::shared_ptr<famfs_native::DeviceMapping> dev = device_;
    DeviceView view;
    view.base = dev->base();
    view.size = dev->size();
    view.writable = !dev->read_only();
    view.on_fault = [dev](const famfs_native::Fault& f) {
      std::string why = "memory error while serving FUSE I/O (signal " + std::to_string(f.signo) + ", addr 0x";
      char hex[32];
      snprintf(hex, sizeof hex, "%llx)", static_cast<unsigned long long>(f.addr));
      dev->MarkFailed((why + hex).c_str());
    };
    view.is_failed = [dev]() { return dev->failed(); };
    server_ = std::make_unique<Server>(std::move(view), std::move(opts));
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TablePtr t =
        ParseTable(env, info[0], info.Length() > 1 ? static_cast<uint64_t>(info[1].ToNumber().DoubleValue()) : 0);
    std::string err = server_->Start(t);
    if (!err.empty()) throw Napi::Error::New(env, err);
    return env.Undefined();
  }

  Napi::Value Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TablePtr t =
        ParseTable(env, info[0], info.Length() > 1 ? static_cast<uint64_t>(info[1].ToNumber().DoubleValue()) : 0);
    return Napi::Number::New(env, server_->Update(t));
  }

  Napi::Value SetStatfs(const Napi::CallbackInfo& info) {
    Napi::Object o = info[0].As<Napi::Object>();
    StatfsTotals s;
    s.total_bytes = U64(o, "totalBytes");
    s.free_bytes = U64(o, "freeBytes");
    s.total_inodes = U64(o, "totalInodes");
    s.free_inodes = U64(o, "freeInodes");
    server_->SetStatfs(s);
    return info.Env().Undefined();
  }

  Napi::Value SetDirectIo(const Napi::CallbackInfo& info) {
    server_->SetDirectIo(info[0].ToBoolean().Value());
    return info.Env().Undefined();
  }

  Napi::Value SetFileDirectIo(const Napi::CallbackInfo& info) {
    server_->SetFileDirectIo(static_cast<uint64_t>(info[0].ToNumber().DoubleValue()), info[1].ToBoolean().Value());
    return info.Env().Undefined();
  }

  Napi::Value SetGuard(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsArray()) {
      Napi::TypeError::New(env, "setGuard(readOnlyInos: number[], writableInos: number[])")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto g = std::make_shared<GuardSets>();
    auto fill = [](const Napi::Array& a, std::unordered_set<uint64_t>* out) {
      for (uint32_t i = 0; i < a.Length(); i++) out->insert(static_cast<uint64_t>(a.Get(i).ToNumber().DoubleValue()));
    };
    fill(info[0].As<Napi::Array>(), &g->read_only);
    fill(info[1].As<Napi::Array>(), &g->writable);
    server_->SetGuard(std::move(g));
    return env.Undefined();
  }

  Napi::Value CacheOp(const Napi::CallbackInfo& info, bool flush) {
    Napi::Env env = info.Env();
    uint64_t ino = static_cast<uint64_t>(info[0].ToNumber().DoubleValue());
    famfs_native::Fault f;
    std::string err;
    bool ok = flush ? server_->FlushFile(ino, &f, &err) : server_->InvalidateFile(ino, &f, &err);
    Napi::Object r = Napi::Object::New(env);
    r.Set("ok", ok);
    if (!ok) {
      r.Set("error", err);
      if (f.signo != 0) r.Set("fault", FaultObject(env, f));
    }
    return r;
  }
  Napi::Value FlushFile(const Napi::CallbackInfo& info) { return CacheOp(info, true); }
  Napi::Value InvalidateFile(const Napi::CallbackInfo& info) { return CacheOp(info, false); }

  Napi::Value Status(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object r = Napi::Object::New(env);
    const Counters& c = server_->counters();
    TablePtr t = server_->table();
    r.Set("running", server_->running());
    r.Set("serving", server_->serving());
    r.Set("failed", server_->failed());
    r.Set("failureMessage",
          device_->failed() ? Napi::Value(Napi::String::New(env, device_->failure_message())) : env.Null());
    r.Set("logIndex", Napi::Number::New(env, t ? static_cast<double>(t->log_index) : 0));
    r.Set("inodes", Napi::Number::New(env, t ? static_cast<double>(t->inodes.size()) : 0));
    r.Set("directIo", server_->direct_io());
    r.Set("threads", server_->threads());
    r.Set("connectionId", Napi::Number::New(env, static_cast<double>(server_->connection_id())));
    r.Set("flushMethod", famfs_native::FlushMethodName());
    Napi::Object k = Napi::Object::New(env);
    k.Set("reads", Napi::Number::New(env, static_cast<double>(c.reads.load())));
    k.Set("readBytes", Napi::Number::New(env, static_cast<double>(c.read_bytes.load())));
    k.Set("writes", Napi::Number::New(env, static_cast<double>(c.writes.load())));
    k.Set("writeBytes", Napi::Number::New(env, static_cast<double>(c.write_bytes.load())));
    k.Set("lookups", Napi::Number::New(env, static_cast<double>(c.lookups.load())));
    k.Set("refused", Napi::Number::New(env, static_cast<double>(c.refused.load())));
    k.Set("faults", Napi::Number::New(env, static_cast<double>(c.faults.load())));
    k.Set("staleHandles", Napi::Number::New(env, static_cast<double>(c.stale.load())));
    k.Set("fenced", Napi::Number::New(env, static_cast<double>(c.fenced.load())));
    r.Set("counters", k);
    int64_t deadline = server_->fence_deadline_ns();
    r.Set("fenced", server_->Fenced());
    r.Set("fenceDeadlineMs", deadline == INT64_MAX
                                 ? env.Null()
                                 : Napi::Value(Napi::Number::New(env, static_cast<double>(deadline) / 1e6)));
    Napi::Array fa = Napi::Array::New(env);
    uint32_t i = 0;
    for (const FaultRecord& fr : server_->faults()) {
      Napi::Object o = FaultObject(env, fr.fault);
      o.Set("ino", Napi::Number::New(env, static_cast<double>(fr.ino)));
      o.Set("op", fr.op);
      fa.Set(i++, o);
    }
    r.Set("faults", fa);
    return r;
  }

  // setFenceDeadline(ms on fenceClockMs' clock | null): null disables the fence.
  Napi::Value SetFenceDeadline(const Napi::CallbackInfo& info) {
    if (info[0].IsNull() || info[0].IsUndefined()) {
      server_->SetFenceDeadlineNs(INT64_MAX);
    } else {
      double ms = info[0].ToNumber().DoubleValue();
      server_->SetFenceDeadlineNs(ms <= 0 ? 0 : static_cast<int64_t>(ms * 1e6));
    }
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    server_->Stop();
    return info.Env().Undefined();
  }

  Napi::Value HandoverTo(const Napi::CallbackInfo& info) {
    std::string err;
    if (!server_->HandoverTo(info[0].As<Napi::String>().Utf8Value(), &err)) throw Napi::Error::New(info.Env(), err);
    return info.Env().Undefined();
  }

  Napi::Value CancelHandover(const Napi::CallbackInfo& info) {
    server_->CancelHandover();
    return info.Env().Undefined();
  }

  Napi::Value Abandon(const Napi::CallbackInfo& info) {
    server_->Abandon();
    return info.Env().Undefined();
  }

  // adopt(fd, {protoMajor, protoMinor, maxReadahead, connectionId}, inodes, logIndex)
  Napi::Value Adopt(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = info[0].ToNumber().Int32Value();
    Napi::Object p = info[1].As<Napi::Object>();
    HandoverParams params;
    params.proto_major = static_cast<uint32_t>(U64(p, "protoMajor", 7));
    params.proto_minor = static_cast<uint32_t>(U64(p, "protoMinor"));
    params.max_readahead = static_cast<uint32_t>(U64(p, "maxReadahead"));
    params.conn_id = U64(p, "connectionId");
    TablePtr t = ParseTable(env, info[2], static_cast<uint64_t>(info[3].ToNumber().DoubleValue()));
    std::string err = server_->Adopt(fd, params, t);
    if (!err.empty()) throw Napi::Error::New(env, err);
    return env.Undefined();
  }

  Napi::Value FinishAdoption(const Napi::CallbackInfo& info) {
    std::vector<int> fds;
    Napi::Array a = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) fds.push_back(a.Get(i).ToNumber().Int32Value());
    server_->FinishAdoption(fds);
    return info.Env().Undefined();
  }

  // The /dev/fuse descriptor the session reads (-1 when not serving): what goes into the fd deposit.
  Napi::Value SessionFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), server_->session_fd()); }

  Napi::Value HandoverParamsJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    HandoverParams p = server_->handover_params();
    Napi::Object o = Napi::Object::New(env);
    o.Set("protoMajor", p.proto_major);
    o.Set("protoMinor", p.proto_minor);
    o.Set("maxReadahead", p.max_readahead);
    o.Set("connectionId", Napi::Number::New(env, static_cast<double>(p.conn_id)));
    o.Set("pid", Napi::Number::New(env, getpid()));
    return o;
  }

  std::shared_ptr<famfs_native::DeviceMapping> device_;
  std::unique_ptr<Server> server_;
};

// new FuseDepositHolder(path, orphanTimeoutMs): .status() .takeExpired() .stop() (fuse_deposit.h).
class DepositHolderWrap : public Napi::ObjectWrap<DepositHolderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FuseDepositHolder",
                       {
                           InstanceMethod<&DepositHolderWrap::Status>("status"),
                           InstanceMethod<&DepositHolderWrap::TakeExpired>("takeExpired"),
                           InstanceMethod<&DepositHolderWrap::Drop>("drop"),
                           InstanceMethod<&DepositHolderWrap::Stop>("stop"),
                       });
  }

  explicit DepositHolderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DepositHolderWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) {
      throw Napi::TypeError::New(env, "FuseDepositHolder(path, orphanTimeoutMs)");
    }
    std::string err;
    holder_ = DepositHolder::Start(info[0].As<Napi::String>().Utf8Value(),
                                   static_cast<int64_t>(info[1].As<Napi::Number>().DoubleValue()), &err);
    if (!holder_) throw Napi::Error::New(env, err);
  }

 private:
  Napi::Value Status(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array a = Napi::Array::New(env);
    if (!holder_) return a;
    uint32_t i = 0;
    for (const auto& s : holder_->Status()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("key", s.key);
      o.Set("blob", s.blob);
      o.Set("orphaned", s.orphaned);
      o.Set("orphanedMs", Napi::Number::New(env, static_cast<double>(s.orphaned_ms)));
      o.Set("fds", Napi::Number::New(env, static_cast<double>(s.fds)));
      a.Set(i++, o);
    }
    return a;
  }

  Napi::Value TakeExpired(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array a = Napi::Array::New(env);
    if (!holder_) return a;
    uint32_t i = 0;
    for (const auto& e : holder_->TakeExpired()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("key", e.key);
      o.Set("blob", e.blob);
      a.Set(i++, o);
    }
    return a;
  }

  Napi::Value Drop(const Napi::CallbackInfo& info) {
    bool had = holder_ && holder_->Drop(info[0].As<Napi::String>().Utf8Value());
    return Napi::Boolean::New(info.Env(), had);
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    holder_.reset();
    return info.Env().Undefined();
  }

  std::unique_ptr<DepositHolder> holder_;
};

Napi::Value DepositConnectJs(const Napi::CallbackInfo& info) {
  std::string err;
  int fd = DepositConnect(info[0].As<Napi::String>().Utf8Value(), &err);
  if (fd < 0) throw Napi::Error::New(info.Env(), err);
  return Napi::Number::New(info.Env(), fd);
}

// fuseDepositRequest(fd, op, key, blob, fds, timeoutMs) -> { status, blob, fds }. Blocks up to timeoutMs.
Napi::Value DepositRequestJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].ToNumber().Int32Value();
  std::string op = info[1].As<Napi::String>().Utf8Value();
  std::string key = info[2].As<Napi::String>().Utf8Value();
  std::string blob = info[3].As<Napi::String>().Utf8Value();
  std::vector<int> fds;
  Napi::Array a = info[4].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) fds.push_back(a.Get(i).ToNumber().Int32Value());
  int timeout_ms = info[5].ToNumber().Int32Value();
  if (op.size() != 1) throw Napi::TypeError::New(env, "op is one character");
  char status = 0;
  std::string reply;
  std::vector<int> got;
  std::string err;
  if (!DepositRequest(fd, op[0], key, blob, fds, timeout_ms, &status, &reply, &got, &err)) {
    throw Napi::Error::New(env, err);
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("status", std::string(1, status));
  r.Set("blob", reply);
  Napi::Array out = Napi::Array::New(env, got.size());
  for (uint32_t i = 0; i < got.size(); i++) out.Set(i, Napi::Number::New(env, got[i]));
  r.Set("fds", out);
  return r;
}

Napi::Value DepositHungUpJs(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), DepositHungUp(info[0].ToNumber().Int32Value()));
}

Napi::Value CloseFdJs(const Napi::CallbackInfo& info) {
  int fd = info[0].ToNumber().Int32Value();
  if (fd >= 0) close(fd);
  return info.Env().Undefined();
}

Napi::Value HandoverListenJs(const Napi::CallbackInfo& info) {
  std::string err;
  int fd = HandoverListen(info[0].As<Napi::String>().Utf8Value(), &err);
  if (fd < 0) throw Napi::Error::New(info.Env(), err);
  return Napi::Number::New(info.Env(), fd);
}

// Blocks the calling thread up to timeoutMs: the new server has nothing else to do meanwhile.
Napi::Value HandoverAcceptJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int listen_fd = info[0].ToNumber().Int32Value();
  int timeout_ms = info[1].ToNumber().Int32Value();
  std::vector<int> fds;
  std::string json, err;
  int conn = -1;
  bool ok = HandoverAccept(listen_fd, timeout_ms, &fds, &json, &err, &conn);
  close(listen_fd);
  if (!ok) throw Napi::Error::New(env, err);
  Napi::Object r = Napi::Object::New(env);
  // The old server's end stays open until its process is gone: see fuseHandoverPeerGone.
  r.Set("peer", Napi::Number::New(env, conn));
  Napi::Array a = Napi::Array::New(env, fds.size());
  for (uint32_t i = 0; i < fds.size(); i++) a.Set(i, Napi::Number::New(env, fds[i]));
  r.Set("fds", a);
  r.Set("message", json);
  return r;
}

// True once the old server's process is gone (its end of the handover connection closed).
Napi::Value HandoverPeerGoneJs(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), HandoverPeerGone(info[0].ToNumber().Int32Value()));
}

// The self-fence clock in ms (CLOCK_BOOTTIME), the clock setFenceDeadline's deadline is on.
Napi::Value FenceClockMsJs(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FenceClockNs()) / 1e6);
}

void InitFuse(Napi::Env env, Napi::Object exports) {
  exports.Set("fenceClockMs", Napi::Function::New(env, FenceClockMsJs, "fenceClockMs"));
  exports.Set("fuseHandoverListen", Napi::Function::New(env, HandoverListenJs, "fuseHandoverListen"));
  exports.Set("fuseHandoverAccept", Napi::Function::New(env, HandoverAcceptJs, "fuseHandoverAccept"));
  exports.Set("fuseHandoverPeerGone", Napi::Function::New(env, HandoverPeerGoneJs, "fuseHandoverPeerGone"));
  exports.Set("FuseSession", FuseSessionWrap::Define(env));
  exports.Set("FuseDepositHolder", DepositHolderWrap::Define(env));
  exports.Set("fuseDepositConnect", Napi::Function::New(env, DepositConnectJs, "fuseDepositConnect"));
  exports.Set("fuseDepositRequest", Napi::Function::New(env, DepositRequestJs, "fuseDepositRequest"));
  exports.Set("fuseDepositHungUp", Napi::Function::New(env, DepositHungUpJs, "fuseDepositHungUp"));
  exports.Set("fuseCloseFd", Napi::Function::New(env, CloseFdJs, "fuseCloseFd"));
}

}  // namespace
}  // namespace famfs_fuse

FAMFS_NATIVE_MODULE_INIT(fuse, famfs_fuse::InitFuse);
