// RocksDB options, families and the open of the spool (rocksdb_store.h).

#include "spool/rocksdb_store.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "rocksdb/cache.h"
#include "rocksdb/convenience.h"
#include "rocksdb/options.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"

namespace zb {

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(absl::StrCat("spool full (disk full): ", msg));
  if (s.IsIOError()) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

namespace {

// A record key's lane prefix ("L" <lane> 0x00): RocksDB keeps an insert
// hint per prefix, so appending a lane's next record (its keys only grow)
// costs O(1) in the memtable's skip list instead of a search from the top.
class LanePrefixTransform final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "zerobusd.LanePrefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), LanePrefixSize(View(key)));
  }
  bool InDomain(const rocksdb::Slice& key) const override { return LanePrefixSize(View(key)) > 0; }
};

}  // namespace

Tuning TuningFor(uint64_t memory_budget) {
  Tuning t;
  const uint64_t budget = std::max<uint64_t>(memory_budget, kMinSpoolMemoryBudget);
  // Half for the two write buffers of the records, an eighth for the block
  // cache; the rest is the group commit's batch (max_group_bytes) and slack.
  t.memtable_bytes = budget / 4;
  t.dead_memtable_bytes = std::clamp<uint64_t>(budget / 32, 256u << 10, 4u << 20);
  t.block_cache_bytes = budget / 8;
  return t;
}

namespace {

rocksdb::DBOptions MakeDbOptions(bool create, const Tuning& tuning) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = create;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  // A torn last WAL record (an append whose fsync never finished, so nobody
  // was told "accepted") is dropped; corruption anywhere else fails the open.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  // Synced WALs that later shrink or vanish fail the open.
  db_options.track_and_verify_wals_in_manifest = true;
  db_options.max_background_jobs = 2;
  // The memtable's insert hints need this off. The spool's writer thread
  // writes all but one kind of batch; the tidy thread's range deletes
  // (SpoolTidier::DropDeletedFiles) start outside the hints' domain.
  db_options.allow_concurrent_memtable_write = false;
  // Table files kept open at once (more are opened on demand): the spool's
  // share of the descriptors the daemon reserves beside intake's
  // connections (CheckRuntimeConfig), whatever the backlog's size.
  db_options.max_open_files = 256;
  // A write-ahead log file lives until every family's memtable holding its
  // writes is flushed: a dead letter written once would keep every later
  // log. Past this total the oldest family is flushed and the logs go.
  db_options.max_total_wal_size = 4 * (tuning.memtable_bytes + tuning.dead_memtable_bytes);
  return db_options;
}

// `insert_hints`: see LanePrefixTransform; never while a write-ahead log
// that an older zerobusd wrote may be replayed (OpenRocksDbSpool).
std::vector<rocksdb::ColumnFamilyDescriptor> MakeFamilies(const Tuning& tuning, bool insert_hints) {
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.write_buffer_size = tuning.memtable_bytes;
  cf_options.max_write_buffer_number = 2;
  if (insert_hints) cf_options.memtable_insert_with_hint_prefix_extractor = std::make_shared<LanePrefixTransform>();
  // Smaller table files than RocksDB's 64 MiB, so a drained range covers
  // whole files more often and they are dropped without a rewrite
  // (SpoolTidier::DropDeletedFiles).
  cf_options.target_file_size_base = std::max<uint64_t>(tuning.memtable_bytes, 2u << 20);
  cf_options.max_bytes_for_level_base = 4 * cf_options.target_file_size_base;
  cf_options.compression = rocksdb::kNoCompression;
  for (auto c : rocksdb::GetSupportedCompressions()) {
    if (c == rocksdb::kLZ4Compression) cf_options.compression = c;
  }
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 64 << 10;
  // One cache for both families, index and filter blocks inside it: what
  // reading a backlog holds stays within the budget.
  table.block_cache = rocksdb::NewLRUCache(tuning.block_cache_bytes);
  table.cache_index_and_filter_blocks = true;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::ColumnFamilyOptions small_options = cf_options;
  small_options.write_buffer_size = tuning.dead_memtable_bytes;
  small_options.memtable_insert_with_hint_prefix_extractor = nullptr;
  return {{rocksdb::kDefaultColumnFamilyName, cf_options},
          {kDeadLetterFamily, small_options},
          {kMetaFamily, small_options}};
}

absl::Status OpenError(const rocksdb::Status& s, const std::string& path) {
  if (s.IsNoSpace()) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot open spool at ", path, ": ", s.ToString(),
                                                     " (its filesystem is full: free space on it and start again; "
                                                     "the spool was left as it was)"));
  }
  const bool damaged = s.IsCorruption() || s.IsIOError() || s.IsNotFound();
  return absl::Status(damaged ? absl::StatusCode::kDataLoss : FromRocks(s, "").code(),
                      absl::StrCat("cannot open spool at ", path, ": ", s.ToString(),
                                   damaged ? absl::StrCat(" (the spool looks damaged; it was left untouched: check it "
                                                          "with `zerobusctl spool verify --path ",
                                                          path, "`)")
                                           : ""));
}

}  // namespace

void OpenDb::Close() {
  if (!db) return;
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  handles.clear();
  db->Close();
  db.reset();
}

absl::Status Open(const std::string& path, bool read_only, bool create, OpenDb* out, const Tuning& tuning,
                  bool insert_hints) {
  rocksdb::DBOptions db_options = MakeDbOptions(create, tuning);
  std::vector<rocksdb::ColumnFamilyDescriptor> families = MakeFamilies(tuning, insert_hints);
  if (read_only) {
    // An older spool may lack the dead-letter store or the meta family.
    std::vector<std::string> existing;
    if (rocksdb::DB::ListColumnFamilies(db_options, path, &existing).ok()) {
      families.erase(std::remove_if(families.begin(), families.end(),
                                    [&](const rocksdb::ColumnFamilyDescriptor& f) {
                                      return std::find(existing.begin(), existing.end(), f.name) == existing.end();
                                    }),
                     families.end());
    }
  }
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = read_only ? rocksdb::DB::OpenForReadOnly(db_options, path, families, &out->handles, &raw)
                                : rocksdb::DB::Open(db_options, path, families, &out->handles, &raw);
  if (!s.ok()) return OpenError(s, path);
  out->db.reset(raw);
  return absl::OkStatus();
}

namespace {

// Reads destinations ("D") and lane metas ("M") of `family` into `state`;
// true when it found any.
absl::StatusOr<bool> LoadMetas(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family, const std::string& path,
                               SpoolState* state) {
  bool found = false;
  {
    const std::string dest_upper = "E";
    rocksdb::Slice dest_upper_slice(dest_upper);
    rocksdb::ReadOptions dest_ro;
    dest_ro.iterate_upper_bound = &dest_upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(dest_ro, family));
    for (it->Seek("D"); it->Valid(); it->Next()) {
      state->destinations[it->key().ToString().substr(1)] = it->value().ToString();
      found = true;
    }
    ZB_RETURN_IF_ERROR(FromRocks(it->status(), absl::StrCat("spool at ", path)));
  }
  const std::string upper = "N";
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, family));
  for (it->Seek("M"); it->Valid(); it->Next()) {
    const std::string lane = it->key().ToString().substr(1);
    std::optional<LaneStats> st = DecodeLaneMeta(View(it->value()));
    if (!st) return absl::DataLossError(absl::StrCat("spool at ", path, ": bad meta for lane ", lane));
    state->lanes[lane] = *st;
    found = true;
  }
  ZB_RETURN_IF_ERROR(FromRocks(it->status(), absl::StrCat("spool at ", path)));
  return found;
}

}  // namespace

absl::StatusOr<SpoolState> LoadState(const OpenDb& open, const std::string& path) {
  SpoolState state;
  rocksdb::DB* db = open.db.get();
  // The older layout first: the meta family, written later, wins.
  ZB_ASSIGN_OR_RETURN(state.metas_in_records, LoadMetas(db, open.records(), path, &state));
  if (open.meta() != nullptr) ZB_RETURN_IF_ERROR(LoadMetas(db, open.meta(), path, &state).status());
  if (open.dead() != nullptr) {
    std::string value;
    rocksdb::Status get = db->Get(rocksdb::ReadOptions(), open.dead(), kDeadLetterMetaKey, &value);
    if (get.ok()) {
      std::optional<DeadLetterMeta> dead = DecodeDeadLetterMeta(value);
      if (!dead) return absl::DataLossError(absl::StrCat("spool at ", path, ": bad dead-letter store meta"));
      state.dead = *dead;
    } else if (!get.IsNotFound()) {
      return FromRocks(get, absl::StrCat("spool at ", path));
    }
  }
  return state;
}


}  // namespace zb
