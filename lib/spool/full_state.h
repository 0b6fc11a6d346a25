#pragma once
// Whether the spool is full, and what must come back before it is not: the
// "spool is full" / "has room again" state machine, which logs one line on
// entering and one on leaving. The spool's writer thread owns it and drives
// it (refusals, records leaving, appends going in); full() may be read on
// any thread. The writer does what the state asks of RocksDB (a flush for
// space) and decides when the state may be left at all (nothing waits for
// room, no latched error). Internal to the spool module; RocksDB-free.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace zb {

class FullState {
 public:
  // What MaybeLeave reads of the spool, only when it needs it, on the
  // writer thread.
  struct Room {
    uint64_t max_bytes = 0;    // spool.max_bytes (0: none)
    bool drop_oldest = false;  // spool.drop_oldest
    std::function<uint64_t()> total_bytes;  // payload bytes the spool holds now
    std::function<uint64_t()> free_bytes;   // free bytes of its filesystem now
  };

  // `path`: the spool's folder, for log lines.
  FullState(std::string path, Room room);

  FullState(const FullState&) = delete;
  FullState& operator=(const FullState&) = delete;

  // Any thread.
  bool full() const { return full_.load(); }

  // Writer thread. A write refused for room (`why`) makes the spool full:
  // the first refusal logs one line; later ones only widen what must come
  // back before it is not full again (`need`: payload bytes for max_bytes,
  // free bytes for the disk). `disk`: refused by the space guard (or by
  // RocksDB for a full disk), else for max_bytes. True when this refusal
  // made the spool full.
  bool NoteRefusal(const absl::Status& why, bool disk, uint64_t need);

  // Writer thread. Records left the spool (a commit freed payload bytes).
  void NoteRecordsLeft() { left_ = true; }

  // Writer thread. Whether an append of `payload_bytes` that needs
  // `free_bytes_needed` free bytes (SpaceGuard::Need) is as large as the
  // largest one refused since the spool became full (false while not full).
  bool Fits(uint64_t payload_bytes, uint64_t free_bytes_needed) const;
  // Writer thread. Such an append went in (committed).
  void NoteFitWentIn() { fit_ = true; }

  // Writer thread, while nothing waits for room (appends, deletes) and no
  // error is latched (the caller checks). The spool stops being full once
  // since the last refusal either what waited went in (`parked_went_in`),
  // or an append as large as the largest one refused went in, or records
  // left and the largest write refused would fit now. (Space RocksDB gives
  // back by itself, e.g. a flush, does not count: the state does not flap
  // while producers are refused.) Logs one line. True when it left.
  bool MaybeLeave(bool parked_went_in);

  // Writer thread. Whether a write was refused by the disk since the spool
  // became full (its flushes may give space back).
  bool by_disk() const { return by_disk_; }

 private:
  const std::string path_;
  const Room room_;
  std::atomic<bool> full_{false};
  // Writer thread only: why the spool is full (while full_), and what must
  // come back.
  bool by_cap_ = false;     // an append was refused for spool.max_bytes
  uint64_t cap_need_ = 0;   // payload bytes of the largest one
  bool by_disk_ = false;    // a write was refused by the space guard
  uint64_t disk_need_ = 0;  // free bytes the largest one needed
  bool left_ = false;       // records left since the last refusal
  bool fit_ = false;        // an append as large as the largest one refused went in since
  std::chrono::steady_clock::time_point since_;
};

}  // namespace zb
