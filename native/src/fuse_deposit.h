// The FUSE fd deposit: a copy of a famfs-fused's /dev/fuse descriptor kept by another process (the
// CSI node plugin), so the kernel connection outlives a crash of the FUSE server. While one open
// file references the connection, the kernel neither aborts it nor fails the requests queued on it:
// pods' reads and writes wait, and a restarted server withdraws the descriptor and serves them.
//
// Transport: a SOCK_SEQPACKET unix socket (one record per message, descriptors as SCM_RIGHTS).
//   request  [op:1][key length:2, LE][key][blob]   + descriptors (deposit only)
//   reply    [status:1][blob]                      + descriptors (withdraw only)
// ops: 'D' deposit (replaces the key's entry; this connection becomes its depositor),
//      'W' withdraw (copies of the descriptors and the blob, only when the depositor is gone),
//      'X' drop (forget the entry, closing the held descriptors).
// status: 'K' ok, 'N' no entry, 'B' busy (the depositor still lives), 'E' bad request.
// An entry whose depositor's connection closed is orphaned; nobody withdrawing it within the orphan
// timeout makes the holder close its descriptors (the kernel then aborts the connection if nothing
// else holds it): pods get an error instead of hanging forever.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace famfs_fuse {

class DepositHolder {
 public:
  struct EntryStatus {
    std::string key;
    std::string blob;
    bool orphaned = false;
    int64_t orphaned_ms = 0;  // how long it has been orphaned
    size_t fds = 0;
  };
  struct Expired {
    std::string key;
    std::string blob;
  };

  // Listens at `path` (mode 0600; an existing socket file is replaced). nullptr and *err on failure.
  static std::unique_ptr<DepositHolder> Start(const std::string& path, int64_t orphan_timeout_ms, std::string* err);
  ~DepositHolder();
  DepositHolder(const DepositHolder&) = delete;
  DepositHolder& operator=(const DepositHolder&) = delete;

  std::vector<EntryStatus> Status();
  // Entries that expired (orphan timeout) since the last call.
  std::vector<Expired> TakeExpired();
  // Forgets `key`'s entry, closing its descriptors. True if there was one.
  bool Drop(const std::string& key);
  // Closes every held descriptor and stops listening.
  void Stop();

 private:
  struct Entry {
    std::vector<int> fds;
    std::string blob;
    int depositor = -1;  // client connection fd, -1 once it closed (orphaned)
    int64_t orphaned_at_ms = 0;
  };
  DepositHolder(int listen_fd, int wake_r, int wake_w, std::string path, int64_t orphan_timeout_ms);
  void Loop();
  void CloseClient(int fd);
  void Handle(int client);
  void Expire();
  static void CloseAll(std::vector<int>* fds);

  int listen_fd_;
  int wake_r_;
  int wake_w_;
  std::string path_;
  int64_t orphan_timeout_ms_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;  // guards entries_, clients_, expired_
  std::map<std::string, Entry> entries_;
  std::vector<int> clients_;
  std::vector<Expired> expired_;
};

// Client side (famfs-fused). Connects to the holder; -1 and *err on failure.
int DepositConnect(const std::string& path, std::string* err);
// One request and its reply (waiting up to timeout_ms). false and *err on a transport failure.
bool DepositRequest(int fd, char op, const std::string& key, const std::string& blob, const std::vector<int>& fds,
                    int timeout_ms, char* status, std::string* reply_blob, std::vector<int>* reply_fds,
                    std::string* err);
// True when the holder's end of the connection is gone (the node plugin exited).
bool DepositHungUp(int fd);

}  // namespace famfs_fuse
