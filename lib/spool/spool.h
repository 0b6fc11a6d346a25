#pragma once
// The durable write-ahead spool: one ordered log per lane (a lane is a route).
// A record enters with Append (group-committed, fsync'd before the callback
// when SpoolOptions::sync) and leaves only with DeleteUpTo, which the drain
// calls once a durability ACK covers it, or with a move into the
// dead-letter store beside the lanes (spool/dead_letters.h). The spool is
// the only copy of unacked records (architecture.md, invariants 1-3).

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/post_fn.h"

namespace zb {

inline constexpr uint64_t kMinSpoolMemoryBudget = 8u << 20;

// Per-lane sequence number: dense, increasing, never reused, persisted.
using SeqNo = uint64_t;

struct SpoolOptions {
  std::string path;
  // true: an Append's callback runs only after an fsync covers its records.
  bool sync = true;
  // A group commit takes queued appends up to about this many payload bytes
  // (at most an eighth of memory_budget).
  size_t max_group_bytes = 16u << 20;
  // The memory RocksDB may use: two write buffers of a quarter each, an
  // eighth of block cache, the group commit's batch, the dead-letter store's
  // write buffer; and beside RocksDB, a sixteenth for the writer's ledger of
  // recent record sizes (size_ledger.h). The daemon's memory then depends on configuration, not on
  // the load or the backlog. At least kMinSpoolMemoryBudget.
  uint64_t memory_budget = 32u << 20;
  // Cap on payload bytes held (every lane plus the dead-letter store); 0:
  // none. Counted from the lane metadata, so it holds across restarts.
  uint64_t max_bytes = 0;
  // true: an append that would pass max_bytes first deletes the oldest
  // records (oldest lane head first), reporting each drop to on_drop.
  // false: such an append fails with ResourceExhaustedError ("spool full").
  bool drop_oldest = false;
  // The free-space guard (0: none). The writer thread reads the free space
  // of the spool's filesystem (statvfs) before every RocksDB write and counts
  // what that write will take (its WAL record now, its memtable flush later),
  // so RocksDB never meets a full disk:
  //  - appends and dead-letter replays must leave at least min_free_bytes;
  //  - writes that free or keep space (deletes of acked ranges, dead-letter
  //    moves and purges, lane destinations) must leave the smaller reserve
  //    RocksDB needs to flush its memtables and finish its WAL; a delete that
  //    does not fit is held (one per lane) and committed by itself once it
  //    does.
  // A refused write fails with ResourceExhaustedError naming
  // spool.min_free_bytes and the numbers; appends waiting for room (and held
  // deletes) go in by themselves once space returns.
  uint64_t min_free_bytes = 0;
  // For tests: returns the free bytes of the spool's filesystem instead of
  // statvfs. Called before every write (on the writer thread) and at close;
  // must not block.
  std::function<uint64_t()> free_bytes_probe;
  // Called on the writer thread after a commit that dropped records of
  // `lane` under drop_oldest. Must not block or call into the spool.
  std::function<void(const std::string& lane, uint64_t records, uint64_t bytes)> on_drop;
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

class DeadLetters;  // spool/dead_letters.h

// Where the writer thread's time went since the spool opened, in seconds.
struct SpoolWriterTimes {
  double idle = 0;       // waiting for work
  double building = 0;   // taking groups, checking room, encoding the batch
  double logging = 0;    // appending batches to RocksDB's write-ahead log
  double syncing = 0;    // fsync of the log
  double memtable = 0;   // inserting into the memtable
  double stalled = 0;    // held by RocksDB (write stalls while flushes catch up)
  double answering = 0;  // running the callbacks of committed operations
  uint64_t commits = 0;  // RocksDB writes
};

// Thread-safe. Appends and deletes run on the spool's own writer thread, so no
// caller blocks on fsync; ReadFromAsync runs on its reader thread (a cold
// backlog read may wait for the disk); ReadFrom runs on the caller's thread.
//
// Threading rule of every async call: given the caller's executor (`on`, a
// Post that queues a task there, e.g. onto the daemon's event loop), `done`
// runs on it, and the caller never hops threads itself; without one (tests,
// tools, the blocking conveniences), `done` runs on the spool's thread and
// must not block or call back into the spool synchronously.
class Spool {
 public:
  using AppendCallback = std::function<void(absl::StatusOr<AppendResult>)>;
  using DeleteCallback = std::function<void(absl::Status)>;
  using ReadCallback = std::function<void(absl::StatusOr<std::vector<SpoolRecord>>)>;
  // Queues a task on the caller's executor; never runs it inline. A `done`
  // given one is delivered through it (DeliverVia): the queued task holds
  // the only reference to what `done` captured, so that is released on the
  // executor's thread, not the spool's.
  using Post = PostFn;

  virtual ~Spool() = default;

  // Queues `records` for `lane`; they get consecutive seqs, in call order
  // across callers. `done` runs on the writer thread once the records are
  // durable (or failed: nothing of this call was stored; a caller that wants
  // to try again still holds `records`). Must not block.
  using Records = std::shared_ptr<const std::vector<std::string>>;
  virtual void AppendAsync(const std::string& lane, Records records, AppendCallback done) = 0;
  void AppendAsync(const std::string& lane, std::vector<std::string> records, AppendCallback done) {
    AppendAsync(lane, std::make_shared<const std::vector<std::string>>(std::move(records)), std::move(done));
  }
  void AppendAsync(const std::string& lane, Records records, AppendCallback done, const Post& on) {
    AppendAsync(lane, std::move(records), DeliverVia(on, std::move(done)));
  }

  // Like AppendAsync, but a full spool (max_bytes, min_free_bytes) makes the
  // records wait, in arrival order across every caller, until they fit;
  // `done` runs then. AbortWaitingAppends fails every waiting append with
  // UnavailableError(reason) (shutdown).
  virtual void AppendWhenRoomAsync(const std::string& lane, Records records, AppendCallback done) = 0;
  void AppendWhenRoomAsync(const std::string& lane, Records records, AppendCallback done, const Post& on) {
    AppendWhenRoomAsync(lane, std::move(records), DeliverVia(on, std::move(done)));
  }
  virtual void AbortWaitingAppends(const std::string& reason) = 0;

  // Where a lane's records go (an opaque text the daemon defines: table,
  // format, schema), kept so a lane whose route left the configuration can
  // still drain. Written in order with appends, on the writer thread.
  virtual void SetLaneDestinationAsync(const std::string& lane, std::string destination, DeleteCallback done) = 0;
  // "" when never set.
  virtual std::string LaneDestination(const std::string& lane) = 0;
  // Every destination set, by lane (also of lanes that never held a record).
  virtual std::map<std::string, std::string> LaneDestinations() = 0;

  // Queues removal of the records of `lane` with first <= seq <= last, in
  // any order relative to other deletes: ranges may arrive out of order
  // and overlap (several streams acknowledge parts of one lane), and
  // records already gone are skipped, so the lane's counters stay exact.
  // deleted_up_to (LaneStats) advances over every seq that is gone, gaps
  // that earlier ranges left included. No fsync: a lost delete only
  // re-sends an acked record. `done` may be empty. A delete the free-space
  // guard stops is held, not failed, and committed by itself once it
  // fits; `done` runs then. Held ranges of a lane that touch are merged:
  // the merged one's `done` is answered at once (the union covers it).
  virtual void DeleteRangeAsync(const std::string& lane, SeqNo first, SeqNo last, DeleteCallback done) = 0;
  void DeleteRangeAsync(const std::string& lane, SeqNo first, SeqNo last, DeleteCallback done, const Post& on) {
    DeleteRangeAsync(lane, first, last, DeliverVia(on, std::move(done)));
  }
  // DeleteRangeAsync of every record of `lane` with seq <= `up_to`.
  void DeleteUpToAsync(const std::string& lane, SeqNo up_to, DeleteCallback done, const Post& on = {}) {
    DeleteRangeAsync(lane, 1, up_to, DeliverVia(on, std::move(done)));
  }

  // A lane's durable end, published by the spool: once records of `lane`
  // are durable (appends, dead-letter replays), `on_durable(last_seq)` runs
  // through `post` (the caller's executor: post must queue the task there,
  // never run it inline). Notifications coalesce: one is queued at a time
  // and it carries the latest seq. The watch ends when the returned handle
  // is destroyed, which must happen on the executor's thread, before the
  // spool is destroyed; no call runs after that.
  class DurableWatch {
   public:
    virtual ~DurableWatch() = default;
  };
  virtual std::unique_ptr<DurableWatch> WatchDurable(const std::string& lane, Post post,
                                                     std::function<void(SeqNo last_seq)> on_durable) = 0;

  // Up to `max_records` records of `lane` with seq >= `from`, in seq order,
  // stopping before `max_bytes` is exceeded, each record counting as its
  // payload plus `per_record_bytes` (what the caller adds per record, e.g.
  // a request's framing); at least one record is returned if any exists. A
  // record that fails its checksum is DataLossError.
  virtual absl::StatusOr<std::vector<SpoolRecord>> ReadFrom(const std::string& lane, SeqNo from,
                                                            size_t max_records, size_t max_bytes,
                                                            size_t per_record_bytes) = 0;
  absl::StatusOr<std::vector<SpoolRecord>> ReadFrom(const std::string& lane, SeqNo from, size_t max_records,
                                                    size_t max_bytes) {
    return ReadFrom(lane, from, max_records, max_bytes, 0);
  }

  // ReadFrom on the reader thread; `done` runs there with the result (or
  // CancelledError when the spool is destroyed first). Must not block.
  virtual void ReadFromAsync(const std::string& lane, SeqNo from, size_t max_records, size_t max_bytes,
                             size_t per_record_bytes, ReadCallback done) = 0;
  void ReadFromAsync(const std::string& lane, SeqNo from, size_t max_records, size_t max_bytes,
                     size_t per_record_bytes, ReadCallback done, const Post& on) {
    ReadFromAsync(lane, from, max_records, max_bytes, per_record_bytes, DeliverVia(on, std::move(done)));
  }

  // The dead-letter store beside the lanes, sharing this spool's writer:
  // moves out of a lane and replays into one are atomic with the lane's
  // change. Lives as long as the spool.
  virtual DeadLetters& dead_letters() = 0;

  // Unix µs of the oldest record of `lane`, or 0 when it is empty.
  virtual int64_t OldestAppendTimeUs(const std::string& lane) = 0;

  virtual LaneStats Stats(const std::string& lane) = 0;
  // Every lane that ever held a record (a lane stays known after it empties).
  virtual std::vector<std::string> Lanes() = 0;
  // Payload bytes held: every lane plus the dead-letter store.
  virtual uint64_t TotalBytes() = 0;
  // Whether the spool is full: an append was refused or is waiting for room
  // (max_bytes or min_free_bytes), and the room it asked for has not come
  // back since. Entering and leaving this state each log one line.
  virtual bool full() = 0;
  virtual SpoolWriterTimes WriterTimes() = 0;

  // Blocking conveniences over the async calls (not for the event loop).
  absl::StatusOr<AppendResult> Append(const std::string& lane, std::vector<std::string> records);
  absl::Status SetLaneDestination(const std::string& lane, std::string destination);
  absl::Status DeleteUpTo(const std::string& lane, SeqNo up_to);
  absl::Status DeleteRange(const std::string& lane, SeqNo first, SeqNo last);
};

// What `zerobusctl spool verify` found.
struct SpoolReport {
  struct Lane {
    std::string name;
    uint64_t records = 0;  // counted
    uint64_t bytes = 0;    // counted payload bytes
    LaneStats meta;        // what the lane's metadata says
  };
  std::vector<Lane> lanes;
  uint64_t dead_letters = 0;
  std::vector<std::string> problems;  // empty: the spool is sound
};

// Opens the spool at `path` read-only (safe while a daemon runs on it) and
// checks every block checksum, every record envelope and dead letter, and
// that each lane's metadata matches its records. An error means it cannot
// even be opened (the message says why).
absl::StatusOr<SpoolReport> VerifyRocksDbSpool(const std::string& path);

// Opens (creating if missing) a RocksDB-backed spool at options.path. Fails
// closed on a damaged spool: the error (DataLossError for damage) says what is
// wrong; it never starts empty over existing data (a folder that holds files
// but no spool is refused, not initialized). A spool another process (or
// this one) has open is FailedPreconditionError "spool <path> is in use by
// pid N", checked before anything else. The folder is made (or tightened to)
// mode 0700, whatever the umask; the spool's own files are 0600 (RocksDB's
// files follow the umask: the daemon runs with umask 077).
absl::StatusOr<std::unique_ptr<Spool>> OpenRocksDbSpool(const SpoolOptions& options);

}  // namespace zb
