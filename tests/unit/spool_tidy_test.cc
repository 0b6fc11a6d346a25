// The spool's tidy thread on a RocksDB of its own (no spool around it): a
// drained spool's deleted records leave the disk once it is asked to look,
// nothing is touched while the reserve is not free, and it stops cleanly.

#include "spool/spool_tidy.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "spool/rocksdb_store.h"
#include "spool/space_guard.h"
#include "spool/spool.h"
#include "spool/spool_format.h"
#include "testutil.h"

namespace zb {
namespace {

// A RocksDB with the spool's three column families (records, dead letters,
// lane metas) holding `records` records of lane "a" of `size` random (so
// incompressible) bytes each, flushed to table files, then range deleted
// (the delete left in the memtable, as an ACK leaves it).
class TidyTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  // Opens it as the spool does (its options, a memtable insert hint per
  // lane), with table files of about `file_bytes` (Tuning::memtable_bytes).
  void Open(uint64_t file_bytes = Tuning{}.memtable_bytes) {
    Tuning tuning;
    tuning.memtable_bytes = file_bytes;
    ASSERT_TRUE(zb::Open(dir_.path(), /*read_only=*/false, /*create=*/true, &open_, tuning, /*insert_hints=*/true)
                    .ok());
    db_ = open_.db.get();
    handles_ = open_.handles;
  }

  void Close() {
    open_.Close();
    db_ = nullptr;
    handles_.clear();
  }

  void TearDown() override { Close(); }

  // Puts records [first, last] of lane "a", `size` random bytes each.
  void PutRecords(SeqNo first, SeqNo last, size_t size) {
    std::mt19937_64 random(first);
    for (SeqNo seq = first; seq <= last; ++seq) {
      std::string payload(size, '\0');
      for (char& c : payload) c = static_cast<char>(random());
      ASSERT_TRUE(
          db_->Put(rocksdb::WriteOptions(), handles_[0], RecordKey("a", seq), EncodeEnvelope(1, payload)).ok());
    }
  }

  // The seqs of lane "a" a reader sees.
  std::vector<SeqNo> VisibleSeqs() {
    std::vector<SeqNo> seqs;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[0]));
    for (it->Seek(RecordKey("a", 0)); it->Valid() && it->key().starts_with(RecordKey("a", 0).substr(0, 3)); it->Next()) {
      seqs.push_back(SeqFromKey(absl::string_view(it->key().data(), it->key().size())));
    }
    EXPECT_TRUE(it->status().ok());
    return seqs;
  }

  // Table files of the records' family at `level`.
  std::vector<rocksdb::LiveFileMetaData> FilesAt(int level) {
    std::vector<rocksdb::LiveFileMetaData> all, out;
    db_->GetLiveFilesMetaData(&all);
    for (const auto& file : all) {
      if (file.column_family_name == rocksdb::kDefaultColumnFamilyName && file.level == level) out.push_back(file);
    }
    return out;
  }

  // The names of every table file of the records' family.
  std::set<std::string> TableFiles() {
    std::vector<rocksdb::LiveFileMetaData> all;
    db_->GetLiveFilesMetaData(&all);
    std::set<std::string> names;
    for (const auto& file : all) {
      if (file.column_family_name == rocksdb::kDefaultColumnFamilyName) names.insert(file.name);
    }
    return names;
  }

  // Appends and deletes `records` records of `size` bytes; returns the
  // lane's stats after.
  LaneStats FillAndDrain(SeqNo records, size_t size) {
    std::mt19937_64 random(7);
    LaneStats lane;
    for (SeqNo seq = 1; seq <= records; ++seq) {
      std::string payload(size, '\0');
      for (char& c : payload) c = static_cast<char>(random());
      EXPECT_TRUE(db_->Put(rocksdb::WriteOptions(), handles_[0], RecordKey("a", seq), EncodeEnvelope(1, payload)).ok());
      lane.next_seq = seq + 1;
    }
    EXPECT_TRUE(db_->Flush(rocksdb::FlushOptions(), handles_[0]).ok());
    rocksdb::WriteBatch del;
    del.DeleteRange(handles_[0], KeyAfterRecord("a", 0), RecordKey("a", lane.next_seq));
    lane.deleted_up_to = lane.next_seq - 1;
    del.Put(handles_[2], MetaKey("a"), EncodeLaneMeta(lane));
    EXPECT_TRUE(db_->Write(rocksdb::WriteOptions(), &del).ok());
    return lane;
  }

  uint64_t TableBytes() {
    uint64_t bytes = 0;
    EXPECT_TRUE(db_->GetIntProperty(handles_[0], rocksdb::DB::Properties::kLiveSstFilesSize, &bytes));
    return bytes;
  }

  uint64_t ActiveMemtableBytes() {
    uint64_t bytes = 0;
    EXPECT_TRUE(db_->GetIntProperty(handles_[0], rocksdb::DB::Properties::kCurSizeActiveMemTable, &bytes));
    return bytes;
  }

  uint64_t MemtableEntries() {
    uint64_t total = 0;
    for (rocksdb::ColumnFamilyHandle* family : {handles_[0], handles_[2]}) {
      uint64_t n = 0;
      EXPECT_TRUE(db_->GetIntProperty(family, rocksdb::DB::Properties::kNumEntriesActiveMemTable, &n));
      total += n;
    }
    return total;
  }

  zb::testing::TempDir dir_;
  OpenDb open_;
  rocksdb::DB* db_ = nullptr;  // open_'s
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

TEST_F(TidyTest, ADrainedSpoolIsFlushedAndCompactedBackToAFewKiBWhenAsked) {
  const LaneStats lane = FillAndDrain(/*records=*/1536, /*size=*/4096);  // 6 MiB
  ASSERT_GT(TableBytes(), 5u << 20);
  ASSERT_GT(MemtableEntries(), 0u);
  const SpaceGuard guard(dir_.path(), /*min_free_bytes=*/0, 0, nullptr);  // off
  std::atomic<int> looks{0};
  SpoolTidier tidier(db_, handles_[0], handles_[1], handles_[2], &guard, [&] {
    ++looks;
    return std::map<std::string, LaneStats>{{"a", lane}};
  }, dir_.path());
  EXPECT_EQ(looks.load(), 0) << "it looks only when asked";
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return TableBytes() < (64u << 10); }, std::chrono::seconds(30)))
      << TableBytes();
  EXPECT_EQ(MemtableEntries(), 0u) << "the drained memtables were flushed";
  tidier.Stop();
  tidier.Stop();  // again: nothing
  tidier.Request();  // after Stop: nothing
}

// Right after one drained flush, a drained spool is flushed again at once
// only when its records' memtable holds drained_flush_bytes (its memory
// goes back now); a smaller one waits for drained_flush_interval (here an
// hour), so a slow flow that drains at every ACK does not flush at each.
TEST_F(TidyTest, ADrainedSpoolIsFlushedAgainAtOnceOnlyWhenItsMemtableIsLarge) {
  LaneStats lane = FillAndDrain(/*records=*/16, /*size=*/4096);
  const SpaceGuard guard(dir_.path(), 0, 0, nullptr);
  std::atomic<int> looks{0};
  // While the test appends, the lane holds records: a look then (the
  // tidier looks again by itself after skipping a flush) is not drained.
  std::atomic<bool> appending{false};
  SpoolTidier tidier(db_, handles_[0], handles_[1], handles_[2], &guard, [&] {
    ++looks;
    LaneStats now = lane;
    if (appending) now.records = 1;
    return std::map<std::string, LaneStats>{{"a", now}};
  }, dir_.path(), SpoolTidier::Options{.drained_flush_bytes = 3u << 20, .drained_flush_interval = std::chrono::hours(1)});
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return MemtableEntries() == 0; }, std::chrono::seconds(30)))
      << "the first drained look flushes";

  // Small: 64 KiB appended and acked. The tidier looks, and leaves it.
  appending = true;
  PutRecords(17, 32, 4096);
  ASSERT_TRUE(db_->DeleteRange(rocksdb::WriteOptions(), handles_[0], KeyAfterRecord("a", 16), RecordKey("a", 33)).ok());
  appending = false;
  // A second look starts only once the first ended (and kTidyInterval):
  // asking twice and waiting for the second means the first decided.
  const int before_small = looks.load();
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return looks.load() > before_small; }, std::chrono::seconds(30)));
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return looks.load() > before_small + 1; }, std::chrono::seconds(30)));
  EXPECT_GT(MemtableEntries(), 0u) << "a small drained memtable waits for the interval";
  EXPECT_LT(ActiveMemtableBytes(), 3u << 20);

  // Large: 4 MiB more. Flushed on the next look.
  appending = true;
  PutRecords(33, 1056, 4096);
  ASSERT_TRUE(db_->DeleteRange(rocksdb::WriteOptions(), handles_[0], KeyAfterRecord("a", 32), RecordKey("a", 1057)).ok());
  ASSERT_GE(ActiveMemtableBytes(), 3u << 20);
  appending = false;
  tidier.Request();
  EXPECT_TRUE(zb::testing::WaitFor([&] { return MemtableEntries() == 0; }, std::chrono::seconds(30)))
      << "a large drained memtable is flushed at once";
}

TEST_F(TidyTest, ALaneWithMoreThan32MiBDeletedHasThatRangeCompactedWhileOthersHoldRecords) {
  const LaneStats a = FillAndDrain(/*records=*/9000, /*size=*/4096);  // 36 MiB
  LaneStats b;
  b.records = 1;
  b.bytes = 1;
  b.next_seq = 2;
  ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), handles_[0], RecordKey("b", 1), EncodeEnvelope(1, "x")).ok());
  ASSERT_GT(TableBytes(), 32u << 20);
  const SpaceGuard guard(dir_.path(), 0, 0, nullptr);
  SpoolTidier tidier(db_, handles_[0], handles_[1], handles_[2], &guard, [&] {
    return std::map<std::string, LaneStats>{{"a", a}, {"b", b}};
  }, dir_.path());
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return TableBytes() < (1u << 20); }, std::chrono::seconds(60)))
      << TableBytes();
  std::string value;
  EXPECT_TRUE(db_->Get(rocksdb::ReadOptions(), handles_[0], RecordKey("b", 1), &value).ok()) << "b kept its record";
}

// A backlog drained from its start: whole table files of deleted records
// are dropped, not rewritten, and no deleted record comes back, also across
// a reopen. The trap: range deletes come one after the other, so the only
// delete hiding some records of the file that straddles the drained end may
// sit in a file that lies inside the deleted range. Here records 1-9000 (4
// KiB each, 36 MiB) lie in files of 1024 records at level 2, the delete of
// 1-8300 is a file of its own at level 1, and 8301-8500 are deleted in the
// memtable: the file of 8193-9216 straddles the end (8500), and only the
// level-1 file hides its records 8193-8300.
TEST_F(TidyTest, WholeFilesOfDeletedRecordsAreDroppedAndNoDeletedRecordComesBack) {
  Close();
  Open(/*file_bytes=*/4u << 20);
  // The test places every file itself.
  ASSERT_TRUE(db_->SetOptions(handles_[0], {{"disable_auto_compactions", "true"}}).ok());
  for (SeqNo first = 1; first <= 9000; first += 1024) {
    PutRecords(first, std::min<SeqNo>(first + 1023, 9000), 4096);
    ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions(), handles_[0]).ok());
  }
  rocksdb::CompactRangeOptions to_level_2;
  to_level_2.change_level = true;
  to_level_2.target_level = 2;
  ASSERT_TRUE(db_->CompactRange(to_level_2, handles_[0], nullptr, nullptr).ok());
  ASSERT_GE(FilesAt(2).size(), 8u);
  ASSERT_TRUE(
      db_->DeleteRange(rocksdb::WriteOptions(), handles_[0], KeyAfterRecord("a", 0), RecordKey("a", 8301)).ok());
  ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions(), handles_[0]).ok());
  ASSERT_EQ(FilesAt(0).size(), 1u);
  ASSERT_TRUE(db_->CompactFiles(rocksdb::CompactionOptions(), handles_[0], {FilesAt(0)[0].name}, 1).ok());
  ASSERT_EQ(FilesAt(1).size(), 1u) << "the delete of 1-8300 is a file of its own at level 1";
  ASSERT_TRUE(
      db_->DeleteRange(rocksdb::WriteOptions(), handles_[0], KeyAfterRecord("a", 8300), RecordKey("a", 8501)).ok());
  // The lane is appended to while it drains: its memtable insert hint is
  // in use when the tidier writes its range delete.
  PutRecords(9001, 9001, 100);
  LaneStats lane;
  lane.next_seq = 9002;
  lane.deleted_up_to = 8500;
  lane.records = 501;
  std::vector<SeqNo> live;
  for (SeqNo seq = 8501; seq <= 9002; ++seq) live.push_back(seq);
  ASSERT_EQ(VisibleSeqs(), std::vector<SeqNo>(live.begin(), live.end() - 1));
  ASSERT_GT(TableBytes(), 32u << 20);

  const std::set<std::string> files_before = TableFiles();
  const SpaceGuard guard(dir_.path(), 0, 0, nullptr);
  SpoolTidier tidier(db_, handles_[0], handles_[1], handles_[2], &guard, [&] {
    return std::map<std::string, LaneStats>{{"a", lane}};
  }, dir_.path());
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return TableBytes() < (8u << 20); }, std::chrono::seconds(30)))
      << TableBytes();
  tidier.Stop();
  PutRecords(9002, 9002, 100);
  for (const std::string& file : TableFiles()) {
    EXPECT_EQ(files_before.count(file), 1u) << file << ": nothing is rewritten";
  }
  EXPECT_EQ(FilesAt(1).size(), 0u) << "the level-1 file of deletes went too";
  EXPECT_EQ(VisibleSeqs(), live) << "no deleted record came back";
  Close();
  Open(4u << 20);
  EXPECT_EQ(VisibleSeqs(), live) << "nor after a reopen";
}

TEST_F(TidyTest, NothingIsTouchedWhileTheReserveIsNotFree) {
  const LaneStats lane = FillAndDrain(/*records=*/1536, /*size=*/4096);
  const uint64_t before = TableBytes();
  std::atomic<int> probes{0};
  std::atomic<int> looks{0};
  // 1 byte free, 1 MiB reserve.
  const SpaceGuard guard(dir_.path(), /*min_free_bytes=*/2u << 20, /*reserve_bytes=*/1u << 20, [&] {
    ++probes;
    return uint64_t{1};
  });
  SpoolTidier tidier(db_, handles_[0], handles_[1], handles_[2], &guard, [&] {
    ++looks;
    return std::map<std::string, LaneStats>{{"a", lane}};
  }, dir_.path());
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return probes.load() >= 1; }, std::chrono::seconds(10)));
  // A second look comes only after the first one ended (and kTidyInterval).
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return probes.load() >= 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(looks.load(), 0) << "the lanes are not even read";
  EXPECT_EQ(TableBytes(), before);
  EXPECT_GT(MemtableEntries(), 0u) << "not flushed";
}

TEST_F(TidyTest, DestructionStopsTheThreadWithoutARequest) {
  const SpaceGuard guard(dir_.path(), 0, 0, nullptr);
  std::atomic<int> looks{0};
  {
    SpoolTidier tidier(db_, handles_[0], handles_[1], handles_[2], &guard, [&] {
      ++looks;
      return std::map<std::string, LaneStats>{};
    }, dir_.path());
  }
  EXPECT_EQ(looks.load(), 0);
}

}  // namespace
}  // namespace zb
