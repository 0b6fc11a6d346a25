// A spool an older zerobusd left behind opens under this one: its
// write-ahead log is written here with RocksDB directly, in the older
// layout (range tombstones starting at a record key; lane metas and
// destinations beside the records, no "meta" column family), and never
// flushed, as a SIGKILL leaves it.

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "spool/spool.h"
#include "spool/spool_format.h"
#include "testutil.h"

namespace zb {
namespace {

TEST(SpoolUpgradeTest, ALogWithOlderRangeTombstonesReplaysAndTheLaneGoesOn) {
  zb::testing::TempDir dir;
  {
    rocksdb::DBOptions db_options;
    db_options.create_if_missing = true;
    db_options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {{rocksdb::kDefaultColumnFamilyName, {}},
                                                             {"dead_letters", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(db_options, dir.path(), families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    LaneStats lane;
    rocksdb::WriteOptions sync;
    sync.sync = true;
    // Several batches of appends, each followed by the older range delete of
    // what it acked: [RecordKey(first), RecordKey(last + 1)).
    {
      rocksdb::WriteBatch dest;
      dest.Put(handles[0], DestinationKey("readings"), "main.edge.readings|json");
      ASSERT_TRUE(db->Write(sync, &dest).ok());
    }
    for (int round = 0; round < 50; ++round) {
      rocksdb::WriteBatch batch;
      for (int i = 0; i < 20; ++i) {
        const std::string payload = "r" + std::to_string(lane.next_seq);
        batch.Put(handles[0], RecordKey("readings", lane.next_seq++), EncodeEnvelope(1, payload));
        lane.records++;
        lane.bytes += payload.size();
      }
      batch.Put(handles[0], MetaKey("readings"), EncodeLaneMeta(lane));
      ASSERT_TRUE(db->Write(sync, &batch).ok());
      if (round % 2 == 1) {
        rocksdb::WriteBatch del;
        const SeqNo up_to = lane.next_seq - 5;
        uint64_t bytes = 0;
        for (SeqNo s = lane.deleted_up_to + 1; s <= up_to; ++s) bytes += ("r" + std::to_string(s)).size();
        del.DeleteRange(handles[0], RecordKey("readings", lane.deleted_up_to + 1), RecordKey("readings", up_to + 1));
        lane.records -= up_to - lane.deleted_up_to;
        lane.bytes -= bytes;
        lane.deleted_up_to = up_to;
        del.Put(handles[0], MetaKey("readings"), EncodeLaneMeta(lane));
        ASSERT_TRUE(db->Write(sync, &del).ok());
      }
    }
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    // Closed without a flush: everything above is only in the log.
    ASSERT_TRUE(db->Close().ok());
  }
  SpoolOptions options;
  options.path = dir.path();
  auto spool = OpenRocksDbSpool(options);
  ASSERT_TRUE(spool.ok()) << spool.status();
  const LaneStats before = (*spool)->Stats("readings");
  EXPECT_EQ(before.next_seq, 1001u);
  EXPECT_EQ(before.records, 1000u - before.deleted_up_to);
  EXPECT_EQ((*spool)->LaneDestination("readings"), "main.edge.readings|json");
  // The lane goes on: appends (in the memtable with insert hints), deletes
  // in the new layout, and reads across both.
  for (int round = 0; round < 20; ++round) {
    auto appended = (*spool)->Append("readings", {"x", "y", "z"});
    ASSERT_TRUE(appended.ok()) << appended.status();
    ASSERT_TRUE((*spool)->DeleteUpTo("readings", appended->last_seq - 1).ok());
  }
  auto left = (*spool)->ReadFrom("readings", 1, 100, 1 << 20);
  ASSERT_TRUE(left.ok()) << left.status();
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ(left->front().payload, "z");
  EXPECT_EQ((*spool)->Stats("readings").records, 1u);
  spool->reset();
  auto report = VerifyRocksDbSpool(dir.path());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
  {
    // The metas moved to their own family; none is left beside the records.
    rocksdb::DBOptions db_options;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}}, {"dead_letters", {}}, {"meta", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::OpenForReadOnly(db_options, dir.path(), families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string value;
    EXPECT_TRUE(db->Get({}, handles[0], MetaKey("readings"), &value).IsNotFound());
    EXPECT_TRUE(db->Get({}, handles[0], DestinationKey("readings"), &value).IsNotFound());
    ASSERT_TRUE(db->Get({}, handles[2], MetaKey("readings"), &value).ok());
    EXPECT_EQ(DecodeLaneMeta(value)->records, 1u);
    ASSERT_TRUE(db->Get({}, handles[2], DestinationKey("readings"), &value).ok());
    EXPECT_EQ(value, "main.edge.readings|json");
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  }
  // And it opens again as it is now.
  auto again = OpenRocksDbSpool(options);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->Stats("readings").records, 1u);
  EXPECT_EQ((*again)->LaneDestination("readings"), "main.edge.readings|json");
}

}  // namespace
}  // namespace zb
