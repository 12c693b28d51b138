// Handing a live FUSE connection from one famfs-fused process to another (restart/upgrade
// without unmounting; design-hazards §1). The old server sends every /dev/fuse descriptor it
// holds over a unix socket (SCM_RIGHTS) with a JSON description of the negotiated session; the
// new server adopts the first one as its session fd and asks the kernel to resend whatever the
// old one had read but not answered (FUSE_NOTIFY_RESEND, Linux 6.9+).
#pragma once

#include <string>
#include <vector>

struct sockaddr_un;

namespace famfs_fuse {

// Fills *sa with the unix socket address `path`; false and *err when the path is too long. Shared
// by the handover and the fd deposit (fuse_deposit.cc), which both pass /dev/fuse fds over sockets.
bool UnixAddress(const std::string& path, struct sockaddr_un* sa, std::string* err);

// "what: strerror(errno)".
std::string ErrnoMessage(const char* what);

// Every descriptor of this process that is open on /dev/fuse.
std::vector<int> FuseDeviceFds();

// Listening unix socket at `path` (replaced if present, mode 0600); -1 and *err on failure.
int HandoverListen(const std::string& path, std::string* err);

// Connects to `path` and sends `json` with `fds` attached. With `keep_open`, the connection stays open
// and *keep_open receives it: the old server keeps it until its process is gone (every thread, so
// every reader of /dev/fuse), and the new server sees that as the end of the stream (HandoverPeerGone).
bool HandoverSend(const std::string& path, const std::vector<int>& fds, const std::string& json, std::string* err,
                  int* keep_open = nullptr);

// Accepts one connection on `listen_fd` (waiting up to timeout_ms) and receives its message. With
// `conn`, the accepted connection stays open and *conn receives it (see HandoverPeerGone).
bool HandoverAccept(int listen_fd, int timeout_ms, std::vector<int>* fds, std::string* json, std::string* err,
                    int* conn = nullptr);

// True once the sender's end of a handover connection is closed: the old server's process is gone,
// none of its threads can read a request off the connection any more. Never blocks.
bool HandoverPeerGone(int conn);

// Asks the kernel to put every request read but not yet answered on any fd of this connection
// back on the input queue. 0 or -errno (-EINVAL: kernel older than 6.9).
int NotifyResend(int fuse_fd);

}  // namespace famfs_fuse
