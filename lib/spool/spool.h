#pragma once
// The durable write-ahead spool: one ordered log per lane (a lane is a route).
// A record enters with Append (group-committed, fsync'd before the callback
// when SpoolOptions::sync) and leaves only with DeleteUpTo, which the drain
// calls once a durability ACK covers it. The spool is the only copy of
// unacked records (architecture.md, invariants 1-3).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace zb {

// Per-lane sequence number: dense, increasing, never reused, persisted.
using SeqNo = uint64_t;

struct SpoolOptions {
  std::string path;
  // true: an Append's callback runs only after an fsync covers its records.
  bool sync = true;
  // A group commit takes queued appends up to about this many payload bytes.
  size_t max_group_bytes = 16u << 20;
};

struct SpoolRecord {
  SeqNo seq = 0;
  int64_t append_time_us = 0;  // wall clock (unix µs) when the record was appended
  std::string payload;
};

struct LaneStats {
  uint64_t records = 0;
  uint64_t bytes = 0;         // payload bytes
  SeqNo next_seq = 1;         // seq the next Append will get
  SeqNo deleted_up_to = 0;    // every seq <= this is gone
};

struct AppendResult {
  SeqNo first_seq = 0;  // seqs of the appended records: first_seq .. last_seq
  SeqNo last_seq = 0;
};

// Thread-safe. Appends and deletes run on the spool's own writer thread, so no
// caller blocks on fsync; ReadFromAsync runs on its reader thread (a cold
// backlog read may wait for the disk); ReadFrom runs on the caller's thread.
class Spool {
 public:
  using AppendCallback = std::function<void(absl::StatusOr<AppendResult>)>;
  using DeleteCallback = std::function<void(absl::Status)>;
  using ReadCallback = std::function<void(absl::StatusOr<std::vector<SpoolRecord>>)>;

  virtual ~Spool() = default;

  // Queues `records` for `lane`; they get consecutive seqs, in call order
  // across callers. `done` runs on the writer thread once the records are
  // durable (or failed: nothing of this call was stored). Must not block.
  virtual void AppendAsync(const std::string& lane, std::vector<std::string> records,
                           AppendCallback done) = 0;

  // Queues removal of every record of `lane` with seq <= `up_to` (no fsync: a
  // lost delete only re-sends an acked record). `done` may be empty.
  virtual void DeleteUpToAsync(const std::string& lane, SeqNo up_to, DeleteCallback done) = 0;

  // Up to `max_records` records of `lane` with seq >= `from`, in seq order,
  // stopping before `max_bytes` of payload is exceeded (at least one record is
  // returned if any exists). A record that fails its checksum is DataLossError.
  virtual absl::StatusOr<std::vector<SpoolRecord>> ReadFrom(const std::string& lane, SeqNo from,
                                                            size_t max_records,
                                                            size_t max_bytes) = 0;

  // ReadFrom on the reader thread; `done` runs there with the result (or
  // CancelledError when the spool is destroyed first). Must not block.
  virtual void ReadFromAsync(const std::string& lane, SeqNo from, size_t max_records, size_t max_bytes,
                             ReadCallback done) = 0;

  // Unix µs of the oldest record of `lane`, or 0 when it is empty.
  virtual int64_t OldestAppendTimeUs(const std::string& lane) = 0;

  virtual LaneStats Stats(const std::string& lane) = 0;
  // Every lane that ever held a record (a lane stays known after it empties).
  virtual std::vector<std::string> Lanes() = 0;
  virtual uint64_t TotalBytes() = 0;

  // Blocking conveniences over the async calls (not for the event loop).
  absl::StatusOr<AppendResult> Append(const std::string& lane, std::vector<std::string> records);
  absl::Status DeleteUpTo(const std::string& lane, SeqNo up_to);
};

// Opens (creating if missing) a RocksDB-backed spool at options.path. Fails
// closed on a damaged spool: the error says what is wrong; it never starts
// empty over existing data.
absl::StatusOr<std::unique_ptr<Spool>> OpenRocksDbSpool(const SpoolOptions& options);

}  // namespace zb
