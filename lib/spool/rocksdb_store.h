#pragma once
// How the spool opens RocksDB: options from the memory budget, column
// families, the open itself and the state read back from the metas. Inside
// the spool module only (rocksdb_spool.cc, spool_verify.cc); RocksDB
// appears in no header outside it.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rocksdb/db.h"
#include "spool/spool.h"
#include "spool/spool_format.h"

namespace zb {

inline constexpr char kDeadLetterFamily[] = "dead_letters";

inline absl::string_view View(const rocksdb::Slice& s) { return absl::string_view(s.data(), s.size()); }

// A RocksDB status as ours: Corruption is DataLossError, NoSpace
// ResourceExhaustedError ("spool full (disk full)"), IOError Unavailable.
absl::Status FromRocks(const rocksdb::Status& s, const std::string& what);

// What RocksDB may hold in memory, carved out of SpoolOptions::memory_budget
// (and clipped by the free-space guard), so the daemon's memory is set by
// configuration whatever the load.
struct Tuning {
  size_t memtable_bytes = 8u << 20;       // one write buffer of the records; two may exist (one flushing)
  size_t dead_memtable_bytes = 1u << 20;  // the dead-letter store's write buffer
  size_t block_cache_bytes = 4u << 20;    // table blocks, index and filter blocks included
};
Tuning TuningFor(uint64_t memory_budget);

// An open RocksDB with its column family handles; closes on destruction.
struct OpenDb {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // default; dead letters (may be absent read-only)
  ~OpenDb() { Close(); }
  void Close();
  rocksdb::ColumnFamilyHandle* dead() const { return handles.size() > 1 ? handles[1] : nullptr; }
};

// Opens the spool's RocksDB. `insert_hints`: the memtable keeps an insert
// hint per lane (appends cost O(1) in its skip list); never while a
// write-ahead log an older zerobusd wrote may be replayed (its range
// tombstones lie inside the hints' domain: see KeyAfterRecord).
absl::Status Open(const std::string& path, bool read_only, bool create, OpenDb* out, const Tuning& tuning = Tuning{},
                  bool insert_hints = false);

// What the metas say: every lane's counters, destinations, the dead-letter
// store's totals. Reads no record.
struct SpoolState {
  std::map<std::string, LaneStats> lanes;
  std::map<std::string, std::string> destinations;
  DeadLetterMeta dead;
};
absl::StatusOr<SpoolState> LoadState(const OpenDb& open, const std::string& path);

}  // namespace zb
