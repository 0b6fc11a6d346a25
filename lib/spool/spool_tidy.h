#pragma once
// The spool's tidy thread: gives deleted records' disk back. Internal to the
// spool module (rocksdb_spool.cc owns one per spool).
//
// A range delete only hides records: their bytes stay in the table files
// (and the write-ahead log) until a flush or compaction rewrites them, which
// RocksDB does only as later writes push it to, so a drained backlog kept
// hundreds of MB for minutes. This gives them back, at most every
// kTidyInterval (spool_tidy.cc):
//  - a lane whose deleted records hold more than kTidyDeletedBytes of
//    table files has the files that hold nothing else dropped while the
//    rest still drains (no rewrite), and if that is not enough, the range
//    compacted;
//  - a drained spool (no records in any lane) has its memtables flushed,
//    which frees their memory and the write-ahead log (unless dead-letter
//    writes still hold it, until max_total_wal_size flushes them): at once
//    on the next look (at most kTidyInterval after the drain) when the
//    records' memtable holds drained_flush_bytes or more, else at most
//    every drained_flush_interval; holding more than
//    kTidyDrainedBytes of table files, it is compacted whole, which drops
//    every deleted record: it comes back to a few KiB.
// Why flush a drained spool at once: acked records leave by range deletes,
// but their bytes stay in the memtable until it fills, so what a drained
// daemon held depended on where the load left RocksDB's flush cycle (in
// bench/route_soak.sh, 200 routes, malloc's use after a drain swung between
// 67 and 127 MiB with it). The flush drops every record the range deletes
// cover, writes a table of a few KiB and gives the memtable's memory back
// (daemon/main.cc): use after a drain then stays at 65-75 MiB.
// Compaction reads what it drops and writes only what still lives, and
// runs only while the reserve is free (SpaceGuard).

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "rocksdb/rocksdb_namespace.h"
#include "spool/space_guard.h"
#include "spool/spool.h"

namespace ROCKSDB_NAMESPACE {
class ColumnFamilyHandle;
class DB;
}  // namespace ROCKSDB_NAMESPACE

namespace zb {

class SpoolTidier {
 public:
  // A snapshot of every lane's stats, as last published. Called on the
  // tidy thread.
  using LanesFn = std::function<std::map<std::string, LaneStats>()>;

  struct Options {
    uint64_t drained_flush_bytes = 2u << 20;
    std::chrono::milliseconds drained_flush_interval{2000};
  };

  // Starts the tidy thread ("zb-spool-tidy"), which waits for Request().
  // `db`, the column families (records, dead letters, lane metas) and
  // `guard` must outlive Stop(); `guard` is read (FreeBytes) on the tidy
  // thread, so must `lanes` be callable there. `path`: the spool's folder,
  // for log lines.
  SpoolTidier(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* records, rocksdb::ColumnFamilyHandle* dead,
              rocksdb::ColumnFamilyHandle* meta, const SpaceGuard* guard, LanesFn lanes, std::string path,
              Options options);
  SpoolTidier(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* records, rocksdb::ColumnFamilyHandle* dead,
              rocksdb::ColumnFamilyHandle* meta, const SpaceGuard* guard, LanesFn lanes, std::string path)
      : SpoolTidier(db, records, dead, meta, guard, std::move(lanes), std::move(path), Options{}) {}
  // Stop(), if not done.
  ~SpoolTidier();

  SpoolTidier(const SpoolTidier&) = delete;
  SpoolTidier& operator=(const SpoolTidier&) = delete;

  // Any thread. Asks the tidy thread to look for deleted records' disk.
  // Requests in between two looks are merged; one after Stop() does
  // nothing.
  void Request();

  // The owner's thread, before `db` closes. Stops the tidy thread: a
  // manual compaction under way ends now (DisableManualCompaction: none
  // runs on `db` after this), and the thread is joined. Later calls do
  // nothing.
  void Stop();

 private:
  void Loop();  // tidy thread
  void Tidy();  // tidy thread
  // Tidy thread. Drops the table files that hold only deleted records of
  // `lane` (seqs up to `deleted_up_to`, which the lane's published stats
  // say are deleted). False if RocksDB refused (logged); true also when
  // no file lay wholly inside the range.
  bool DropDeletedFiles(const std::string& lane, SeqNo deleted_up_to);

  rocksdb::DB* const db_;
  rocksdb::ColumnFamilyHandle* const default_cf_;
  rocksdb::ColumnFamilyHandle* const dead_cf_;
  rocksdb::ColumnFamilyHandle* const meta_cf_;
  const SpaceGuard* const guard_;
  const LanesFn lanes_;
  const std::string path_;
  const Options options_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool requested_ = false;  // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  // Tidy thread only; none yet: the first drained look flushes.
  std::optional<std::chrono::steady_clock::time_point> last_drained_flush_;
  std::thread thread_;  // last: started once the rest is set
};

}  // namespace zb
