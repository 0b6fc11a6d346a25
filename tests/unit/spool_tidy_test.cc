// The spool's tidy thread on a RocksDB of its own (no spool around it): a
// drained spool's deleted records leave the disk once it is asked to look,
// nothing is touched while the reserve is not free, and it stops cleanly.

#include "spool/spool_tidy.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
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
  void SetUp() override {
    rocksdb::DBOptions db_options;
    db_options.create_if_missing = true;
    db_options.create_missing_column_families = true;
    const std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}}, {"dead_letters", {}}, {"meta", {}}};
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(db_options, dir_.path(), families, &handles_, &raw).ok());
    db_.reset(raw);
  }

  void TearDown() override {
    for (rocksdb::ColumnFamilyHandle* handle : handles_) db_->DestroyColumnFamilyHandle(handle);
    db_->Close();
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
    del.DeleteRange(handles_[0], RecordKey("a", 1), RecordKey("a", lane.next_seq));
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
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

TEST_F(TidyTest, ADrainedSpoolIsFlushedAndCompactedBackToAFewKiBWhenAsked) {
  const LaneStats lane = FillAndDrain(/*records=*/1536, /*size=*/4096);  // 6 MiB
  ASSERT_GT(TableBytes(), 5u << 20);
  ASSERT_GT(MemtableEntries(), 0u);
  const SpaceGuard guard(dir_.path(), /*min_free_bytes=*/0, 0, nullptr);  // off
  std::atomic<int> looks{0};
  SpoolTidier tidier(db_.get(), handles_[0], handles_[1], handles_[2], &guard, [&] {
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

TEST_F(TidyTest, ALaneWithMoreThan32MiBDeletedHasThatRangeCompactedWhileOthersHoldRecords) {
  const LaneStats a = FillAndDrain(/*records=*/9000, /*size=*/4096);  // 36 MiB
  LaneStats b;
  b.records = 1;
  b.bytes = 1;
  b.next_seq = 2;
  ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), handles_[0], RecordKey("b", 1), EncodeEnvelope(1, "x")).ok());
  ASSERT_GT(TableBytes(), 32u << 20);
  const SpaceGuard guard(dir_.path(), 0, 0, nullptr);
  SpoolTidier tidier(db_.get(), handles_[0], handles_[1], handles_[2], &guard, [&] {
    return std::map<std::string, LaneStats>{{"a", a}, {"b", b}};
  }, dir_.path());
  tidier.Request();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return TableBytes() < (1u << 20); }, std::chrono::seconds(60)))
      << TableBytes();
  std::string value;
  EXPECT_TRUE(db_->Get(rocksdb::ReadOptions(), handles_[0], RecordKey("b", 1), &value).ok()) << "b kept its record";
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
  SpoolTidier tidier(db_.get(), handles_[0], handles_[1], handles_[2], &guard, [&] {
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
    SpoolTidier tidier(db_.get(), handles_[0], handles_[1], handles_[2], &guard, [&] {
      ++looks;
      return std::map<std::string, LaneStats>{};
    }, dir_.path());
  }
  EXPECT_EQ(looks.load(), 0);
}

}  // namespace
}  // namespace zb
