// The FUSE fd deposit (see fuse_deposit.h).
#include "fuse_deposit.h"
#include "fuse_handover.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace famfs_fuse {
namespace {

constexpr size_t kMaxRecord = 64 * 1024;
constexpr size_t kMaxFds = 16;

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Sends one record with optional descriptors.
bool SendRecord(int s, const std::string& data, const std::vector<int>& fds) {
  struct iovec iov = {const_cast<char*>(data.data()), data.size()};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = sendmsg(s, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(data.size());
}

// Receives one record: >0 its size, 0 the peer closed, <0 -errno. Descriptors land in *fds (CLOEXEC).
ssize_t RecvRecord(int s, std::string* data, std::vector<int>* fds, int flags) {
  std::vector<char> buf(kMaxRecord);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  struct iovec iov = {buf.data(), buf.size()};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC | flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* d = reinterpret_cast<const int*>(CMSG_DATA(c));
      fds->insert(fds->end(), d, d + count);
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    for (int fd : *fds) close(fd);
    fds->clear();
    return -EMSGSIZE;
  }
  data->assign(buf.data(), static_cast<size_t>(n));
  return n;
}

// Only root (or the holder's own user) may deposit or withdraw a FUSE connection.
bool PeerAllowed(int s) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == 0 || cred.uid == geteuid();
}

// True when the peer of `s` has closed its end.
bool PeerGone(int s) {
  struct pollfd p = {s, POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) != 0;
}

}  // namespace

std::unique_ptr<DepositHolder> DepositHolder::Start(const std::string& path, int64_t orphan_timeout_ms,
                                                    std::string* err) {
  struct sockaddr_un sa;
  if (!UnixAddress(path, &sa, err)) return nullptr;
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *err = ErrnoMessage("socket");
    return nullptr;
  }
  // A socket file left by a holder that died (or still runs: the newest node plugin takes the name;
  // servers still connected to the old one deposit here once it goes).
  unlink(path.c_str());
  mode_t old = umask(0177);
  int rc = bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
  umask(old);
  if (rc != 0 || listen(fd, 16) != 0) {
    *err = std::string("bind/listen ") + path + ": " + std::strerror(errno);
    close(fd);
    return nullptr;
  }
  chmod(path.c_str(), 0600);
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) {
    *err = ErrnoMessage("pipe");
    close(fd);
    unlink(path.c_str());
    return nullptr;
  }
  std::unique_ptr<DepositHolder> h(new DepositHolder(fd, pipefd[0], pipefd[1], path, orphan_timeout_ms));
  h->thread_ = std::thread([p = h.get()] { p->Loop(); });
  return h;
}

DepositHolder::DepositHolder(int listen_fd, int wake_r, int wake_w, std::string path, int64_t orphan_timeout_ms)
    : listen_fd_(listen_fd),
      wake_r_(wake_r),
      wake_w_(wake_w),
      path_(std::move(path)),
      orphan_timeout_ms_(orphan_timeout_ms) {}

DepositHolder::~DepositHolder() { Stop(); }

void DepositHolder::CloseAll(std::vector<int>* fds) {
  for (int fd : *fds) close(fd);
  fds->clear();
}

void DepositHolder::Stop() {
  if (stopping_.exchange(true)) return;
  ssize_t w = write(wake_w_, "x", 1);
  (void)w;
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> g(mu_);
  for (auto& kv : entries_) CloseAll(&kv.second.fds);
  entries_.clear();
  for (int c : clients_) close(c);
  clients_.clear();
  // Only our own socket file: a newer holder may have taken the name.
  struct stat st;
  struct stat mine;
  if (fstat(listen_fd_, &mine) == 0 && stat(path_.c_str(), &st) == 0 && st.st_ino == mine.st_ino) unlink(path_.c_str());
  close(listen_fd_);
  close(wake_r_);
  close(wake_w_);
}

std::vector<DepositHolder::EntryStatus> DepositHolder::Status() {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<EntryStatus> out;
  int64_t now = NowMs();
  for (const auto& kv : entries_) {
    EntryStatus s;
    s.key = kv.first;
    s.blob = kv.second.blob;
    s.orphaned = kv.second.depositor < 0;
    s.orphaned_ms = s.orphaned ? now - kv.second.orphaned_at_ms : 0;
    s.fds = kv.second.fds.size();
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<DepositHolder::Expired> DepositHolder::TakeExpired() {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<Expired> out;
  out.swap(expired_);
  return out;
}

bool DepositHolder::Drop(const std::string& key) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  CloseAll(&it->second.fds);
  entries_.erase(it);
  return true;
}

// Caller holds mu_.
void DepositHolder::CloseClient(int fd) {
  clients_.erase(std::remove(clients_.begin(), clients_.end(), fd), clients_.end());
  int64_t now = NowMs();
  for (auto& kv : entries_) {
    if (kv.second.depositor == fd) {
      kv.second.depositor = -1;
      kv.second.orphaned_at_ms = now;
    }
  }
  close(fd);
}

// Caller holds mu_.
void DepositHolder::Expire() {
  int64_t now = NowMs();
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    if (e.depositor < 0 && now - e.orphaned_at_ms >= orphan_timeout_ms_) {
      CloseAll(&e.fds);
      expired_.push_back({it->first, e.blob});
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

// Caller holds mu_. One request from `client`.
void DepositHolder::Handle(int client) {
  std::string rec;
  std::vector<int> fds;
  ssize_t n = RecvRecord(client, &rec, &fds, MSG_DONTWAIT);
  if (n == -EAGAIN) return;
  if (n <= 0) {
    CloseAll(&fds);
    CloseClient(client);
    return;
  }
  auto reply = [&](char status, const std::string& blob, const std::vector<int>& out) {
    if (!SendRecord(client, std::string(1, status) + blob, out)) CloseClient(client);
  };
  if (rec.size() < 3) {
    CloseAll(&fds);
    reply('E', "short request", {});
    return;
  }
  char op = rec[0];
  size_t klen = static_cast<uint8_t>(rec[1]) | (static_cast<size_t>(static_cast<uint8_t>(rec[2])) << 8);
  if (klen == 0 || 3 + klen > rec.size()) {
    CloseAll(&fds);
    reply('E', "bad key", {});
    return;
  }
  std::string key = rec.substr(3, klen);
  std::string blob = rec.substr(3 + klen);
  switch (op) {
    case 'D': {
      if (fds.empty()) {
        reply('E', "deposit without descriptors", {});
        return;
      }
      Entry& e = entries_[key];
      // The new descriptors first, then the old ones go: the connection never loses its last holder here.
      std::vector<int> old;
      old.swap(e.fds);
      e.fds = std::move(fds);
      CloseAll(&old);
      e.blob = blob;
      e.depositor = client;
      e.orphaned_at_ms = 0;
      reply('K', "", {});
      return;
    }
    case 'W': {
      CloseAll(&fds);
      auto it = entries_.find(key);
      if (it == entries_.end()) {
        reply('N', "", {});
        return;
      }
      int dep = it->second.depositor;
      // Its EOF may not have been seen yet: look now.
      if (dep >= 0 && PeerGone(dep)) CloseClient(dep);
      if (it->second.depositor >= 0) {
        reply('B', "", {});
        return;
      }
      reply('K', it->second.blob, it->second.fds);
      return;
    }
    case 'X': {
      CloseAll(&fds);
      auto it = entries_.find(key);
      if (it != entries_.end()) {
        CloseAll(&it->second.fds);
        entries_.erase(it);
      }
      reply('K', "", {});
      return;
    }
    default:
      CloseAll(&fds);
      reply('E', "unknown op", {});
  }
}

void DepositHolder::Loop() {
  for (;;) {
    std::vector<struct pollfd> pfds;
    int64_t timeout = 1000;
    {
      std::lock_guard<std::mutex> g(mu_);
      Expire();
      int64_t now = NowMs();
      for (const auto& kv : entries_) {
        if (kv.second.depositor < 0) {
          timeout =
              std::min<int64_t>(timeout, std::max<int64_t>(0, kv.second.orphaned_at_ms + orphan_timeout_ms_ - now));
        }
      }
      pfds.push_back({wake_r_, POLLIN, 0});
      pfds.push_back({listen_fd_, POLLIN, 0});
      for (int c : clients_) pfds.push_back({c, POLLIN | POLLRDHUP, 0});
    }
    int r = poll(pfds.data(), pfds.size(), static_cast<int>(timeout));
    if (stopping_.load()) return;
    if (r < 0 && errno != EINTR) return;
    if (r <= 0) continue;
    std::lock_guard<std::mutex> g(mu_);
    if (pfds[1].revents & POLLIN) {
      int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c >= 0) {
        if (PeerAllowed(c)) {
          clients_.push_back(c);
        } else {
          close(c);
        }
      }
    }
    for (size_t i = 2; i < pfds.size(); i++) {
      short ev = pfds[i].revents;
      if (ev == 0) continue;
      if (ev & POLLIN) {
        Handle(pfds[i].fd);
      } else {
        CloseClient(pfds[i].fd);
      }
    }
  }
}

int DepositConnect(const std::string& path, std::string* err) {
  struct sockaddr_un sa;
  if (!UnixAddress(path, &sa, err)) return -1;
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) {
    *err = ErrnoMessage("socket");
    return -1;
  }
  if (connect(s, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
    *err = ErrnoMessage("connect");
    close(s);
    return -1;
  }
  return s;
}

bool DepositRequest(int fd, char op, const std::string& key, const std::string& blob, const std::vector<int>& fds,
                    int timeout_ms, char* status, std::string* reply_blob, std::vector<int>* reply_fds,
                    std::string* err) {
  if (key.empty() || key.size() > 0xffff || fds.size() > kMaxFds || 3 + key.size() + blob.size() > kMaxRecord) {
    *err = "bad deposit request";
    return false;
  }
  std::string rec(1, op);
  rec.push_back(static_cast<char>(key.size() & 0xff));
  rec.push_back(static_cast<char>(key.size() >> 8));
  rec += key;
  rec += blob;
  if (!SendRecord(fd, rec, fds)) {
    *err = ErrnoMessage("sendmsg");
    return false;
  }
  struct pollfd p = {fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, timeout_ms);
  } while (r < 0 && errno == EINTR);
  if (r <= 0) {
    *err = r == 0 ? "the fd deposit did not answer in time" : ErrnoMessage("poll");
    return false;
  }
  std::string got;
  ssize_t n = RecvRecord(fd, &got, reply_fds, 0);
  if (n <= 0) {
    *err = n == 0 ? std::string("the fd deposit closed the connection")
                  : std::string("recvmsg: ") + std::strerror(static_cast<int>(-n));
    return false;
  }
  *status = got[0];
  reply_blob->assign(got, 1, std::string::npos);
  return true;
}

bool DepositHungUp(int fd) { return PeerGone(fd); }

}  // namespace famfs_fuse
