#include "spool/spool_tidy.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include "rocksdb/convenience.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "spdlog/spdlog.h"
#include "spool/spool_format.h"

namespace zb {
namespace {

// How often the tidy thread looks for deleted records' disk to give back,
// at most.
constexpr std::chrono::seconds kTidyInterval{1};
// A lane whose deleted records take more than this much of the table files
// has that range compacted while it drains, and a drained spool holding
// more table files than this is compacted.
constexpr uint64_t kTidyDeletedBytes = 32u << 20;
constexpr uint64_t kTidyDrainedBytes = 4u << 20;
// After dropping whole files, what is left of the deleted range is
// compacted only past this: the parts of files that straddle its end (one
// per level, a part of a file each) stay; deleted records in level-0 files,
// which are never dropped, go.
constexpr uint64_t kTidyLeftAfterDropBytes = kTidyDeletedBytes / 2;

}  // namespace

SpoolTidier::SpoolTidier(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* records, rocksdb::ColumnFamilyHandle* dead,
                         rocksdb::ColumnFamilyHandle* meta, const SpaceGuard* guard, LanesFn lanes, std::string path,
                         Options options)
    : db_(db),
      default_cf_(records),
      dead_cf_(dead),
      meta_cf_(meta),
      guard_(guard),
      lanes_(std::move(lanes)),
      path_(std::move(path)),
      options_(options),
      thread_([this] {
        pthread_setname_np(pthread_self(), "zb-spool-tidy");
        Loop();
      }) {}

SpoolTidier::~SpoolTidier() { Stop(); }

void SpoolTidier::Request() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    requested_ = true;
  }
  cv_.notify_one();
}

void SpoolTidier::Stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  db_->DisableManualCompaction();  // a compaction under way ends now
  thread_.join();
}

// Tidy thread: one look per request, at most every kTidyInterval (what the
// header says, and why).
void SpoolTidier::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || requested_; });
    if (stopping_) return;
    requested_ = false;
    lock.unlock();
    Tidy();
    lock.lock();
    // At most every kTidyInterval: requests in between are merged.
    cv_.wait_for(lock, kTidyInterval, [this] { return stopping_; });
    if (stopping_) return;
  }
}

void SpoolTidier::Tidy() {
  if (!guard_->ReserveFree()) return;
  const std::map<std::string, LaneStats> lanes = lanes_();
  const bool drained =
      std::all_of(lanes.begin(), lanes.end(), [](const auto& lane) { return lane.second.records == 0; });
  rocksdb::CompactRangeOptions compact;
  compact.exclusive_manual_compaction = false;  // RocksDB's own compactions go on
  compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
  uint64_t files = 0;
  if (drained) {
    // What the memtables still hold of a drained spool is deleted records
    // and metas, and it pins the write-ahead log: flushed, both go (the
    // flush drops what the range deletes cover and writes a few KiB). A
    // small memtable at most every drained_flush_interval, so a slow steady
    // flow that drains often does not flush at every ACK; one skipped is
    // looked at again.
    uint64_t entries = 0, active_bytes = 0;
    db_->GetIntProperty(default_cf_, rocksdb::DB::Properties::kCurSizeActiveMemTable, &active_bytes);
    for (rocksdb::ColumnFamilyHandle* family : {default_cf_, meta_cf_}) {
      for (const std::string& property : {rocksdb::DB::Properties::kNumEntriesActiveMemTable,
                                          rocksdb::DB::Properties::kNumEntriesImmMemTables}) {
        uint64_t n = 0;
        if (db_->GetIntProperty(family, property, &n)) entries += n;
      }
    }
    if (entries > 0) {
      const auto now = std::chrono::steady_clock::now();
      if (active_bytes >= options_.drained_flush_bytes ||
          !last_drained_flush_ || now - *last_drained_flush_ >= options_.drained_flush_interval) {
        last_drained_flush_ = now;
        rocksdb::FlushOptions flush;
        flush.allow_write_stall = true;
        db_->Flush(flush, {default_cf_, meta_cf_});
      } else {
        Request();  // looked at again after kTidyInterval
      }
    }
    if (!db_->GetIntProperty(default_cf_, rocksdb::DB::Properties::kLiveSstFilesSize, &files) ||
        files <= kTidyDrainedBytes) {
      return;
    }
    rocksdb::FlushOptions flush;
    flush.allow_write_stall = true;
    if (!db_->Flush(flush, {default_cf_, dead_cf_, meta_cf_}).ok()) return;
    rocksdb::Status s = db_->CompactRange(compact, default_cf_, nullptr, nullptr);
    uint64_t after = 0;
    db_->GetIntProperty(default_cf_, rocksdb::DB::Properties::kLiveSstFilesSize, &after);
    if (s.ok()) {
      spdlog::info("spool {} drained: its table files went from {} to {} bytes", path_, files, after);
    } else if (!s.IsIncomplete()) {  // Incomplete: stopped for shutdown
      spdlog::warn("spool {}: compacting the drained spool failed: {}", path_, s.ToString());
    }
    return;
  }
  for (const auto& [name, lane] : lanes) {
    if (lane.deleted_up_to == 0) continue;
    const std::string begin = RecordKey(name, 0);
    const std::string end = RecordKey(name, lane.deleted_up_to + 1);
    const auto deleted_bytes = [&] {
      rocksdb::Range range(begin, end);
      uint64_t bytes = 0;
      if (!db_->GetApproximateSizes(rocksdb::SizeApproximationOptions{}, default_cf_, &range, 1, &bytes).ok()) {
        return uint64_t{0};
      }
      return bytes;
    };
    if (deleted_bytes() <= kTidyDeletedBytes) continue;
    // A backlog drained from its start leaves whole table files of deleted
    // records: they go without a rewrite. Compacting the range instead
    // rewrote live records too (a table file holding the newest records and
    // a range delete spans the whole lane, and pulls every file below it
    // into the compaction): a 1.8 GB backlog took 3.1 GB while it drained.
    // (A refusal falls back to compacting: that never brings a record back.)
    if (DropDeletedFiles(name, lane.deleted_up_to) && deleted_bytes() <= kTidyLeftAfterDropBytes) continue;
    const rocksdb::Slice b(begin), e(end);
    rocksdb::Status s = db_->CompactRange(compact, default_cf_, &b, &e);
    if (!s.ok() && !s.IsIncomplete()) {
      spdlog::warn("spool {}: compacting the deleted records of lane {} failed: {}", path_, name, s.ToString());
    }
  }
}

bool SpoolTidier::DropDeletedFiles(const std::string& lane, SeqNo deleted_up_to) {
  // Range deletes start where the previous one ended, so a table file may
  // lie inside the deleted range while the only delete that hides some
  // records of a file straddling its end is in it: dropping the first would
  // bring those records back. One range delete over the whole deleted range
  // first, synced (which also makes the lane's meta that says so durable),
  // keeps every one of them hidden, whatever goes.
  rocksdb::WriteBatch batch;
  batch.DeleteRange(default_cf_, KeyAfterRecord(lane, 0), RecordKey(lane, deleted_up_to + 1));
  rocksdb::WriteOptions write;
  write.sync = true;
  if (!db_->Write(write, &batch).ok()) return false;
  // Files of levels 1 and down that hold nothing but keys up to the last
  // deleted record (RocksDB leaves level 0 to compactions).
  const std::string begin = RecordKey(lane, 0), end = RecordKey(lane, deleted_up_to);
  const rocksdb::Slice b(begin), e(end);
  rocksdb::Status s = rocksdb::DeleteFilesInRange(db_, default_cf_, &b, &e, /*include_end=*/true);
  if (!s.ok()) {
    spdlog::warn("spool {}: dropping the table files of lane {}'s deleted records failed: {}", path_, lane,
                 s.ToString());
    return false;
  }
  return true;
}

}  // namespace zb
