// SCM_RIGHTS transport and kernel resend for FUSE connection handover. See fuse_handover.h.
#include "fuse_handover.h"

#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace famfs_fuse {
namespace {

constexpr size_t kMaxFds = 64;
constexpr size_t kMaxJson = 16 * 1024;
// enum fuse_notify_code: FUSE_NOTIFY_RESEND (protocol 7.40); the installed kernel headers are older.
constexpr int32_t kNotifyResend = 7;

}  // namespace

bool UnixAddress(const std::string& path, struct sockaddr_un* sa, std::string* err) {
  std::memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (path.size() >= sizeof sa->sun_path) {
    *err = "socket path too long: " + path;
    return false;
  }
  std::memcpy(sa->sun_path, path.c_str(), path.size());
  return true;
}

std::string ErrnoMessage(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

std::vector<int> FuseDeviceFds() {
  std::vector<int> out;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return out;
  while (struct dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    char target[64];
    ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    int fd = std::atoi(e->d_name);
    if (std::strcmp(target, "/dev/fuse") == 0 && fd != dirfd(d)) out.push_back(fd);
  }
  closedir(d);
  return out;
}

int HandoverListen(const std::string& path, std::string* err) {
  struct sockaddr_un sa;
  if (!UnixAddress(path, &sa, err)) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = ErrnoMessage("socket");
    return -1;
  }
  unlink(path.c_str());
  mode_t old = umask(0177);
  int rc = bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
  umask(old);
  if (rc != 0 || listen(fd, 1) != 0) {
    *err = ErrnoMessage("bind/listen");
    close(fd);
    return -1;
  }
  return fd;
}

bool HandoverSend(const std::string& path, const std::vector<int>& fds, const std::string& json, std::string* err,
                  int* keep_open) {
  if (fds.empty() || fds.size() > kMaxFds || json.size() > kMaxJson) {
    *err = "bad handover message";
    return false;
  }
  struct sockaddr_un sa;
  if (!UnixAddress(path, &sa, err)) return false;
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    *err = ErrnoMessage("socket");
    return false;
  }
  if (connect(s, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
    *err = ErrnoMessage("connect");
    close(s);
    return false;
  }
  // One message: 4-byte length, then the JSON; the descriptors ride on the first byte.
  uint32_t len = static_cast<uint32_t>(json.size());
  struct iovec iov[2] = {{&len, sizeof len}, {const_cast<char*>(json.data()), json.size()}};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  ssize_t n = sendmsg(s, &msg, MSG_NOSIGNAL);
  bool ok = n == static_cast<ssize_t>(sizeof len + json.size());
  if (!ok) *err = n < 0 ? ErrnoMessage("sendmsg") : "short sendmsg";
  if (ok && keep_open != nullptr) {
    *keep_open = s;
  } else {
    close(s);
  }
  return ok;
}

bool HandoverAccept(int listen_fd, int timeout_ms, std::vector<int>* fds, std::string* json, std::string* err,
                    int* conn) {
  struct pollfd p = {listen_fd, POLLIN, 0};
  int pr = poll(&p, 1, timeout_ms);
  if (pr <= 0) {
    *err = pr == 0 ? "no handover arrived in time" : ErrnoMessage("poll");
    return false;
  }
  int s = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (s < 0) {
    *err = ErrnoMessage("accept");
    return false;
  }
  std::vector<char> buf(sizeof(uint32_t) + kMaxJson);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  // The length first (the descriptors ride on it), then exactly that much JSON: the sender may keep the
  // connection open (see HandoverSend), so never wait for more than it sent.
  struct iovec iov = {buf.data(), sizeof(uint32_t)};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  if (n < static_cast<ssize_t>(sizeof(uint32_t))) {
    *err = n < 0 ? ErrnoMessage("recvmsg") : "short handover message";
    close(s);
    return false;
  }
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
      fds->assign(data, data + count);
    }
  }
  uint32_t len = 0;
  std::memcpy(&len, buf.data(), sizeof len);
  size_t have = static_cast<size_t>(n) - sizeof len;
  while (have < len && len <= kMaxJson) {
    ssize_t more = read(s, buf.data() + sizeof len + have, len - have);
    if (more <= 0) break;
    have += static_cast<size_t>(more);
  }
  if (len > kMaxJson || have < len || fds->empty()) {
    close(s);
    *err = "incomplete handover message";
    for (int fd : *fds) close(fd);
    fds->clear();
    return false;
  }
  if (conn != nullptr) {
    *conn = s;
  } else {
    close(s);
  }
  json->assign(buf.data() + sizeof len, len);
  return true;
}

bool HandoverPeerGone(int conn) {
  struct pollfd p = {conn, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) return true;
  // The sender writes nothing after its message: readable means end of stream.
  char c;
  return recv(conn, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

int NotifyResend(int fuse_fd) {
  struct {
    uint32_t len;
    int32_t error;  // notification code, as fuse_out_header.error with unique 0
    uint64_t unique;
  } h = {sizeof h, kNotifyResend, 0};
  ssize_t n = write(fuse_fd, &h, sizeof h);
  return n == static_cast<ssize_t>(sizeof h) ? 0 : -errno;
}

}  // namespace famfs_fuse
