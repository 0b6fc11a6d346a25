#pragma once
// The spool's free-space guard (SpoolOptions::min_free_bytes). The writer
// thread asks it before every RocksDB write, with that write's own bytes, so
// RocksDB never meets a full disk: a WAL write that fails with ENOSPC leaves
// RocksDB unable to go on (Debian's build, with assertions, aborts on it).
// Free space is read anew for every write, never cached: another process may
// fill the disk at any moment.

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace zb {

class SpaceGuard {
 public:
  enum class Write {
    kGrow,  // adds records (appends, dead-letter replay): must leave min_free_bytes
    kKeep,  // frees or keeps space (deletes, dead-letter moves and purges, lane
            // destinations): must leave the reserve
  };

  // `reserve_bytes`: what RocksDB must always have free to flush its
  // memtables and finish its WAL; clipped to `min_free_bytes`. `probe`, when
  // set, replaces statvfs (tests). `min_free_bytes` 0: the guard is off.
  SpaceGuard(std::string path, uint64_t min_free_bytes, uint64_t reserve_bytes, std::function<uint64_t()> probe);

  bool enabled() const { return min_free_bytes_ > 0; }
  uint64_t min_free_bytes() const { return min_free_bytes_; }
  uint64_t reserve_bytes() const { return reserve_bytes_; }

  // Free bytes of the spool's filesystem now (statvfs f_bavail, or the
  // probe); 0 when they cannot be read, so a failing statvfs refuses writes.
  uint64_t FreeBytes() const;
  // Whether a write that only keeps or frees space (a flush, a compaction)
  // may run: the guard is off, or the reserve is free.
  bool ReserveFree() const { return !enabled() || FreeBytes() >= reserve_bytes_; }

  // Disk bytes a write batch of `batch_bytes` may take: its WAL record with
  // framing now, and as much again when its memtable is flushed to a table
  // file (the WAL goes only after that).
  static uint64_t Cost(uint64_t batch_bytes);

  // Free bytes a write of `kind` and `batch_bytes` needs.
  uint64_t Need(Write kind, uint64_t batch_bytes) const;

  // Ok when a write of `kind` and `batch_bytes` fits `free` (always, when the
  // guard is off); else ResourceExhaustedError("spool full: ...") naming
  // spool.min_free_bytes and the numbers.
  absl::Status Check(Write kind, uint64_t free, uint64_t batch_bytes) const;

 private:
  std::string path_;
  uint64_t min_free_bytes_;
  uint64_t reserve_bytes_;
  std::function<uint64_t()> probe_;
};

}  // namespace zb
