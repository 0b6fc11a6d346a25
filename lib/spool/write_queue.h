#pragma once
// The spool writer's inbox: leveldb's queue of writers, with typed requests
// (spool/write_requests.h). Any thread pushes; the writer thread takes, in
// arrival order, either one group commit (appends and range deletes, up to
// max_group_bytes of appended payload) or one request that commits alone.
// Thread-safe; RocksDB-free.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "spool/write_requests.h"

namespace zb {

class WriteQueue {
 public:
  // A group takes requests while its appends' payload is under
  // `max_group_bytes`; its first request always goes, however large.
  explicit WriteQueue(uint64_t max_group_bytes) : max_group_bytes_(max_group_bytes) {}

  WriteQueue(const WriteQueue&) = delete;
  WriteQueue& operator=(const WriteQueue&) = delete;

  // Any thread. A request pushed before Close is still taken; one pushed
  // after Take answered `closed` never is (the spool's users stop calling
  // it before they destroy it).
  void Push(WriteRequest request);

  // Any thread: Take answers `closed` once the queue is empty.
  void Close();

  struct Next {
    std::vector<GroupRequest> group;    // commit together, in this order
    std::optional<WriteRequest> alone;  // or this one, by itself
    bool closed = false;                // closed and empty: the writer ends
  };

  // Writer thread. Waits until there is a request, or the queue is closed;
  // with `poll`, for at most that long (both empty then: the writer has
  // something to look at again now and then, e.g. whether room came back).
  Next Take(std::optional<std::chrono::milliseconds> poll);

 private:
  const uint64_t max_group_bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WriteRequest> queue_;  // guarded by mu_
  bool closed_ = false;             // guarded by mu_
};

}  // namespace zb
