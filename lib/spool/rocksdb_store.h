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

// Column families: records in the default one (only "L" keys, appended in
// order, so RocksDB moves a backlog's table files down the levels without
// rewriting them), lane metas and destinations in "meta" (rewritten with
// every commit: apart, they do not make every table file overlap the
// next), the dead-letter store in "dead_letters". Spools from before the
// "meta" family keep metas and destinations in the default one: LoadState
// reads both, and the first read-write open moves them (OpenRocksDbSpool).
inline constexpr char kDeadLetterFamily[] = "dead_letters";
inline constexpr char kMetaFamily[] = "meta";

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
// A read-only open of an older spool may lack "dead_letters" and "meta":
// their accessors then return nullptr.
struct OpenDb {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  ~OpenDb() { Close(); }
  void Close();
  rocksdb::ColumnFamilyHandle* records() const { return handles.empty() ? nullptr : handles[0]; }
  rocksdb::ColumnFamilyHandle* dead() const { return Find(kDeadLetterFamily); }
  rocksdb::ColumnFamilyHandle* meta() const { return Find(kMetaFamily); }
  rocksdb::ColumnFamilyHandle* Find(const std::string& name) const {
    for (auto* h : handles) {
      if (h->GetName() == name) return h;
    }
    return nullptr;
  }
  // Gives the handles up (records, dead letters, meta), keeping the DB.
  std::vector<rocksdb::ColumnFamilyHandle*> Release() {
    std::vector<rocksdb::ColumnFamilyHandle*> out = {records(), dead(), meta()};
    handles.clear();
    return out;
  }
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
  bool metas_in_records = false;  // the older layout: some are in the default family
};
absl::StatusOr<SpoolState> LoadState(const OpenDb& open, const std::string& path);

}  // namespace zb
