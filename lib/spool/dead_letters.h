#pragma once
// The dead-letter store: records the server refused, each kept with its
// verdict beside the lanes until an operator replays or purges it
// (zerobusctl dlq). A record enters the store from the head of its lane (a
// move) and goes back to the tail of its lane (a replay), each in one atomic
// write with the lane's change, so it is never lost or doubled midway
// (architecture.md, invariant 8). Reached through Spool::dead_letters().

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/post_fn.h"
#include "spool/spool.h"

namespace zb {

// The server's verdict on a record it refused.
struct DeadLetterInfo {
  std::string table;
  std::string code;            // gRPC status code name, e.g. "INVALID_ARGUMENT"
  std::string message;         // the server's message
  std::string reason;          // its structured reason (ErrorInfo) in words, "" when none
  uint32_t attempts = 0;       // failed sends that included the record
  int64_t first_failure_us = 0;
};

struct DeadLetter {
  uint64_t id = 0;             // unique in the store, increasing
  std::string lane;
  SeqNo seq = 0;               // its seq in the lane when it left
  DeadLetterInfo info;
  int64_t append_time_us = 0;
  int64_t dead_lettered_us = 0;
  std::string payload;
};

struct DeadLetterFilter {
  std::string lane;            // empty: every lane
  std::vector<uint64_t> ids;   // empty: every id
};

struct DeadLetterStats {
  uint64_t records = 0;
  uint64_t bytes = 0;          // payload bytes
};

// Thread-safe. Owned by the spool, which it shares its writer and reader
// threads with: moves, replays and purges run on the writer thread, in
// order with the lanes' appends and deletes; lists run on the reader
// thread. The spool's threading rule (spool.h) holds for every async call:
// given the caller's executor `on`, `done` runs there; without one, on the
// spool's thread, where it must not block or call back into the spool
// synchronously.
class DeadLetters {
 public:
  using Post = PostFn;
  using MoveCallback = std::function<void(absl::Status)>;
  using ListCallback = std::function<void(absl::StatusOr<std::vector<DeadLetter>>)>;
  using ReplayCallback = std::function<void(absl::StatusOr<std::map<std::string, AppendResult>>)>;
  using PurgeCallback = std::function<void(absl::StatusOr<uint64_t>)>;

  DeadLetters(const DeadLetters&) = delete;
  DeadLetters& operator=(const DeadLetters&) = delete;

  // Moves record `seq` of `lane`, which must be its oldest (seq ==
  // deleted_up_to + 1), into the store in one atomic write: it leaves the
  // lane as it enters the store. A seq that already left (dropped by
  // policy) moves nothing: NotFoundError. `done` runs on the writer thread.
  virtual void MoveAsync(const std::string& lane, SeqNo seq, DeadLetterInfo info, MoveCallback done) = 0;
  void MoveAsync(const std::string& lane, SeqNo seq, DeadLetterInfo info, MoveCallback done, const Post& on) {
    MoveAsync(lane, seq, std::move(info), DeliverVia(on, std::move(done)));
  }

  // Entries with id >= `from_id` matching `filter`, in id order, at most
  // `limit`; `done` runs on the reader thread (CancelledError when the
  // spool is destroyed first).
  virtual void ListAsync(const DeadLetterFilter& filter, uint64_t from_id, size_t limit, ListCallback done) = 0;
  void ListAsync(const DeadLetterFilter& filter, uint64_t from_id, size_t limit, ListCallback done, const Post& on) {
    ListAsync(filter, from_id, limit, DeliverVia(on, std::move(done)));
  }

  // Appends every matching entry's payload to the tail of its lane again
  // and removes it from the store (atomic per chunk of entries); the
  // lanes' watchers hear of the new durable end (Spool::WatchDurable) as
  // for an append. `done` gets the appended range of each lane, on the
  // writer thread.
  virtual void ReplayAsync(const DeadLetterFilter& filter, ReplayCallback done) = 0;
  void ReplayAsync(const DeadLetterFilter& filter, ReplayCallback done, const Post& on) {
    ReplayAsync(filter, DeliverVia(on, std::move(done)));
  }

  // Removes matching entries; `done` gets how many, on the writer thread.
  virtual void PurgeAsync(const DeadLetterFilter& filter, PurgeCallback done) = 0;
  void PurgeAsync(const DeadLetterFilter& filter, PurgeCallback done, const Post& on) {
    PurgeAsync(filter, DeliverVia(on, std::move(done)));
  }

  // What the store holds after its last committed change. Any thread; does
  // not block on the writer.
  virtual DeadLetterStats Totals() = 0;

  // Blocking conveniences over the async calls (not for the event loop).
  absl::Status Move(const std::string& lane, SeqNo seq, DeadLetterInfo info);
  absl::StatusOr<std::vector<DeadLetter>> List(const DeadLetterFilter& filter, uint64_t from_id = 0,
                                               size_t limit = ~size_t{0});
  absl::StatusOr<std::map<std::string, AppendResult>> Replay(const DeadLetterFilter& filter);
  absl::StatusOr<uint64_t> Purge(const DeadLetterFilter& filter);

 protected:
  DeadLetters() = default;
  // Not deleted through this interface: the spool owns it.
  ~DeadLetters() = default;
};

}  // namespace zb
