// Spool against a real RocksDB in a temp dir: order, durability across
// reopen, delete-after-ack, checksums and group commit from many threads.

#include "spool/spool.h"

#include <atomic>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

using ::zb::testing::TempDir;

std::unique_ptr<Spool> Open(const std::string& path) {
  SpoolOptions options;
  options.path = path;
  auto spool = OpenRocksDbSpool(options);
  EXPECT_TRUE(spool.ok()) << spool.status();
  return std::move(spool).value();
}

std::vector<std::string> Payloads(const std::vector<SpoolRecord>& recs) {
  std::vector<std::string> out;
  for (const auto& r : recs) out.push_back(r.payload);
  return out;
}

TEST(SpoolTest, AppendAssignsConsecutiveSeqsAndReadsInOrder) {
  TempDir dir;
  auto spool = Open(dir.path());
  auto a = spool->Append("lane", {"r1", "r2", "r3"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->first_seq, 1u);
  EXPECT_EQ(a->last_seq, 3u);
  auto b = spool->Append("lane", {"r4"});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->first_seq, 4u);
  auto recs = spool->ReadFrom("lane", 1, 100, 1 << 20);
  ASSERT_TRUE(recs.ok());
  EXPECT_EQ(Payloads(*recs), (std::vector<std::string>{"r1", "r2", "r3", "r4"}));
  EXPECT_EQ((*recs)[2].seq, 3u);
  EXPECT_GT((*recs)[0].append_time_us, 0);
}

TEST(SpoolTest, LanesAreIndependent) {
  TempDir dir;
  auto spool = Open(dir.path());
  ASSERT_TRUE(spool->Append("a", {"a1", "a2"}).ok());
  ASSERT_TRUE(spool->Append("b", {"b1"}).ok());
  // A lane whose name is a prefix of another must not see its records.
  ASSERT_TRUE(spool->Append("ab", {"ab1"}).ok());
  EXPECT_EQ(Payloads(*spool->ReadFrom("a", 1, 100, 1 << 20)), (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(Payloads(*spool->ReadFrom("b", 1, 100, 1 << 20)), (std::vector<std::string>{"b1"}));
  EXPECT_EQ(Payloads(*spool->ReadFrom("ab", 1, 100, 1 << 20)), (std::vector<std::string>{"ab1"}));
  EXPECT_EQ(spool->Stats("a").records, 2u);
  EXPECT_EQ(spool->Stats("b").next_seq, 2u);
}

TEST(SpoolTest, ReadFromHonoursCursorAndLimits) {
  TempDir dir;
  auto spool = Open(dir.path());
  std::vector<std::string> recs;
  for (int i = 0; i < 10; ++i) recs.push_back(std::string(10, static_cast<char>('a' + i)));
  ASSERT_TRUE(spool->Append("l", recs).ok());
  auto r = spool->ReadFrom("l", 4, 3, 1 << 20);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].seq, 4u);
  EXPECT_EQ((*r)[2].seq, 6u);
  r = spool->ReadFrom("l", 1, 100, 25);  // byte cap: 2 records of 10 bytes
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 2u);
  r = spool->ReadFrom("l", 1, 100, 1);  // always at least one record
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 1u);
  r = spool->ReadFrom("l", 11, 100, 1 << 20);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(SpoolTest, DeleteUpToRemovesOnlyCoveredRecordsAndUpdatesStats) {
  TempDir dir;
  auto spool = Open(dir.path());
  ASSERT_TRUE(spool->Append("l", {"aaaa", "bb", "c", "dd"}).ok());
  EXPECT_EQ(spool->Stats("l").bytes, 9u);
  ASSERT_TRUE(spool->DeleteUpTo("l", 2).ok());
  auto r = spool->ReadFrom("l", 1, 100, 1 << 20);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Payloads(*r), (std::vector<std::string>{"c", "dd"}));
  LaneStats s = spool->Stats("l");
  EXPECT_EQ(s.records, 2u);
  EXPECT_EQ(s.bytes, 3u);
  EXPECT_EQ(s.deleted_up_to, 2u);
  EXPECT_EQ(spool->TotalBytes(), 3u);
  // Deleting an already-deleted range is a no-op.
  ASSERT_TRUE(spool->DeleteUpTo("l", 1).ok());
  EXPECT_EQ(spool->Stats("l").records, 2u);
  // Deleting beyond what exists is a caller bug and is refused.
  EXPECT_FALSE(spool->DeleteUpTo("l", 99).ok());
  ASSERT_TRUE(spool->DeleteUpTo("l", 4).ok());
  EXPECT_EQ(spool->Stats("l").records, 0u);
  EXPECT_EQ(spool->OldestAppendTimeUs("l"), 0);
}

TEST(SpoolTest, ContentOrderAndSeqsSurviveReopen) {
  TempDir dir;
  {
    auto spool = Open(dir.path());
    ASSERT_TRUE(spool->Append("l", {"1", "2", "3", "4", "5"}).ok());
    ASSERT_TRUE(spool->DeleteUpTo("l", 2).ok());
  }
  auto spool = Open(dir.path());
  LaneStats s = spool->Stats("l");
  EXPECT_EQ(s.records, 3u);
  EXPECT_EQ(s.next_seq, 6u);
  EXPECT_EQ(spool->Lanes(), std::vector<std::string>{"l"});
  EXPECT_EQ(Payloads(*spool->ReadFrom("l", 1, 100, 1 << 20)), (std::vector<std::string>{"3", "4", "5"}));
  // Seqs are never reused, even after the lane empties and the spool reopens.
  ASSERT_TRUE(spool->DeleteUpTo("l", 5).ok());
  spool.reset();
  spool = Open(dir.path());
  auto a = spool->Append("l", {"6"});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->first_seq, 6u);
}

TEST(SpoolTest, ConcurrentAppendersAreGroupCommittedWithoutLossOrReordering) {
  TempDir dir;
  auto spool = Open(dir.path());
  constexpr int kThreads = 8, kPerThread = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto r = spool->Append("l", {std::to_string(t) + ":" + std::to_string(i)});
        ASSERT_TRUE(r.ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  auto recs = spool->ReadFrom("l", 1, 1'000'000, 1 << 30);
  ASSERT_TRUE(recs.ok());
  ASSERT_EQ(recs->size(), static_cast<size_t>(kThreads * kPerThread));
  // Per producer, order is kept.
  std::vector<int> last(kThreads, -1);
  std::set<std::string> seen;
  for (const auto& r : *recs) {
    const int t = std::stoi(r.payload.substr(0, r.payload.find(':')));
    const int i = std::stoi(r.payload.substr(r.payload.find(':') + 1));
    EXPECT_EQ(i, last[t] + 1);
    last[t] = i;
    seen.insert(r.payload);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST(SpoolTest, AsyncAppendsGetSeqsAndCallbacksInCallOrder) {
  TempDir dir;
  auto spool = Open(dir.path());
  std::mutex mu;
  std::vector<int> order;
  std::vector<SeqNo> firsts(100);
  for (int i = 0; i < 100; ++i) {
    spool->AppendAsync("l", {"x", "y"}, [&, i](absl::StatusOr<AppendResult> r) {
      ASSERT_TRUE(r.ok());
      std::lock_guard<std::mutex> lock(mu);
      firsts[i] = r->first_seq;
      order.push_back(i);
    });
  }
  ASSERT_TRUE(zb::testing::WaitFor(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return order.size() == 100;
      },
      std::chrono::seconds(20)));
  std::lock_guard<std::mutex> lock(mu);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(firsts[i], static_cast<SeqNo>(1 + 2 * i));
    EXPECT_EQ(order[i], i) << "callbacks run in call order";
  }
}

std::unique_ptr<Spool> OpenWith(SpoolOptions options) {
  auto spool = OpenRocksDbSpool(options);
  EXPECT_TRUE(spool.ok()) << spool.status();
  return std::move(spool).value();
}

TEST(SpoolTest, MaxBytesRefusesAppendsThatWouldPassItAcrossLanesAndRestarts) {
  TempDir dir;
  SpoolOptions o;
  o.path = dir.path();
  o.max_bytes = 100;
  {
    auto spool = OpenWith(o);
    ASSERT_TRUE(spool->Append("a", {std::string(40, 'a')}).ok());
    ASSERT_TRUE(spool->Append("b", {std::string(40, 'b')}).ok());
    auto refused = spool->Append("a", {std::string(30, 'c')});
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(refused.status().message().find("spool full: 80 of spool.max_bytes (100) in use, 30 more asked"),
              std::string::npos)
        << refused.status();
    EXPECT_TRUE(spool->full());
    EXPECT_EQ(spool->Stats("a").records, 1u) << "a refused append stores nothing";
  }
  auto spool = OpenWith(o);  // the cap counts what the spool already holds
  EXPECT_EQ(spool->TotalBytes(), 80u);
  EXPECT_FALSE(spool->Append("b", {std::string(30, 'd')}).ok());
  ASSERT_TRUE(spool->DeleteUpTo("a", 1).ok());
  EXPECT_TRUE(spool->Append("b", {std::string(30, 'd')}).ok()) << "room again once records leave";
  EXPECT_FALSE(spool->full());
}

TEST(SpoolTest, AppendsWaitingForRoomCommitInOrderOnceRecordsLeave) {
  TempDir dir;
  SpoolOptions o;
  o.path = dir.path();
  o.max_bytes = 40;
  std::mutex mu;  // declared before the spool: its callbacks may run until it is gone
  std::vector<std::string> done;
  auto spool = OpenWith(o);
  ASSERT_TRUE(spool->Append("a", {std::string(30, 'a')}).ok());
  for (const char* name : {"first", "second"}) {
    spool->AppendWhenRoomAsync("a", std::make_shared<const std::vector<std::string>>(
                                        std::vector<std::string>{std::string(name) + std::string(10, '.')}),
                               [&, name](absl::StatusOr<AppendResult> r) {
                                 std::lock_guard<std::mutex> lock(mu);
                                 done.push_back(r.ok() ? std::string(name) : "failed");
                               });
  }
  // A third that fits on its own still queues behind the waiting ones.
  spool->AppendWhenRoomAsync("a", std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"x"}),
                             [&](absl::StatusOr<AppendResult> r) {
                               std::lock_guard<std::mutex> lock(mu);
                               done.push_back(r.ok() ? "third" : "failed");
                             });
  ASSERT_TRUE(zb::testing::WaitFor([&] { return spool->full(); }, std::chrono::seconds(10)));
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(done.empty()) << "nothing is answered while it waits";
  }
  ASSERT_TRUE(spool->DeleteUpTo("a", 1).ok());  // room for all three
  ASSERT_TRUE(zb::testing::WaitFor(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return done.size() == 3;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(done, (std::vector<std::string>{"first", "second", "third"}));
  EXPECT_EQ(Payloads(*spool->ReadFrom("a", 1, 10, 1 << 20)),
            (std::vector<std::string>{"first..........", "second..........", "x"}));
}

TEST(SpoolTest, AbortingWaitingAppendsAnswersThemWithTheReason) {
  TempDir dir;
  SpoolOptions o;
  o.path = dir.path();
  o.max_bytes = 10;
  std::promise<absl::Status> result;
  auto spool = OpenWith(o);
  spool->AppendWhenRoomAsync("a", std::make_shared<const std::vector<std::string>>(
                                      std::vector<std::string>{std::string(20, 'z')}),
                             [&](absl::StatusOr<AppendResult> r) { result.set_value(r.status()); });
  ASSERT_TRUE(zb::testing::WaitFor([&] { return spool->full(); }, std::chrono::seconds(10)));
  spool->AbortWaitingAppends("shutting down");
  const absl::Status s = result.get_future().get();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "shutting down");
  EXPECT_EQ(spool->Stats("a").records, 0u);
}

TEST(SpoolTest, DropOldestMakesRoomFromTheLaneWithTheOldestRecordAndReportsIt) {
  TempDir dir;
  SpoolOptions o;
  o.path = dir.path();
  o.max_bytes = 100;
  o.drop_oldest = true;
  std::mutex mu;
  std::map<std::string, std::pair<uint64_t, uint64_t>> dropped;
  o.on_drop = [&](const std::string& lane, uint64_t records, uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    dropped[lane].first += records;
    dropped[lane].second += bytes;
  };
  auto spool = OpenWith(o);
  ASSERT_TRUE(spool->Append("old", {std::string(20, '1'), std::string(20, '2')}).ok());
  ASSERT_TRUE(spool->Append("new", {std::string(40, '3')}).ok());
  ASSERT_TRUE(spool->Append("new", {std::string(30, '4')}).ok());  // 110 > 100: one record of "old" goes
  EXPECT_EQ(spool->TotalBytes(), 90u);
  EXPECT_EQ(Payloads(*spool->ReadFrom("old", 1, 10, 1 << 20)), (std::vector<std::string>{std::string(20, '2')}));
  EXPECT_EQ(spool->Stats("old").deleted_up_to, 1u);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(dropped["old"], (std::pair<uint64_t, uint64_t>{1, 20}));
  EXPECT_EQ(dropped.count("new"), 0u);
}

TEST(SpoolTest, MinFreeBytesGuardRefusesAppendsWithAClearReason) {
  TempDir dir;
  SpoolOptions o;
  o.path = dir.path();
  o.min_free_bytes = ~0ull >> 2;  // more than any disk has free
  auto spool = OpenWith(o);
  auto refused = spool->Append("a", {"x"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("would leave less than spool.min_free_bytes"), std::string::npos) << refused.status();
}

TEST(SpoolTest, DeadLettersMoveAtomicallyAndCanBeListedReplayedAndPurged) {
  TempDir dir;
  {
    auto spool = Open(dir.path());
    ASSERT_TRUE(spool->Append("a", {"good1", "poison", "good2"}).ok());
    ASSERT_TRUE(spool->DeleteUpTo("a", 1).ok());
    EXPECT_FALSE(spool->MoveToDeadLetters("a", 3, {}).ok()) << "only the oldest record may move";
    DeadLetterInfo info;
    info.table = "main.edge.t";
    info.code = "INVALID_ARGUMENT";
    info.message = "bad record";
    info.attempts = 3;
    info.first_failure_us = 42;
    ASSERT_TRUE(spool->MoveToDeadLetters("a", 2, info).ok());
    EXPECT_EQ(spool->Stats("a").records, 1u);
    EXPECT_EQ(spool->Stats("a").deleted_up_to, 2u);
    EXPECT_EQ(spool->DeadLetterTotals().records, 1u);
    EXPECT_EQ(spool->TotalBytes(), 11u) << "dead letters count toward the spool's bytes";
  }
  auto spool = Open(dir.path());  // the store survives a restart
  auto listed = spool->ListDeadLetters({});
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  const DeadLetter& d = listed->front();
  EXPECT_EQ(d.lane, "a");
  EXPECT_EQ(d.seq, 2u);
  EXPECT_EQ(d.payload, "poison");
  EXPECT_EQ(d.info.table, "main.edge.t");
  EXPECT_EQ(d.info.code, "INVALID_ARGUMENT");
  EXPECT_EQ(d.info.message, "bad record");
  EXPECT_EQ(d.info.attempts, 3u);
  EXPECT_EQ(d.info.first_failure_us, 42);
  EXPECT_GT(d.append_time_us, 0);
  EXPECT_GE(d.dead_lettered_us, d.append_time_us);
  EXPECT_TRUE(spool->ListDeadLetters({.lane = "other"})->empty());

  auto replayed = spool->ReplayDeadLetters({.lane = "a"});
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ((*replayed)["a"].first_seq, 4u) << "replayed records go to the lane's tail";
  EXPECT_EQ(Payloads(*spool->ReadFrom("a", 1, 10, 1 << 20)), (std::vector<std::string>{"good2", "poison"}));
  EXPECT_EQ(spool->DeadLetterTotals().records, 0u);

  ASSERT_TRUE(spool->DeleteUpTo("a", 3).ok());
  ASSERT_TRUE(spool->MoveToDeadLetters("a", 4, {}).ok());
  auto purged = spool->PurgeDeadLetters({});
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(*purged, 1u);
  EXPECT_EQ(spool->DeadLetterTotals().bytes, 0u);
  EXPECT_EQ(spool->TotalBytes(), 0u);
}

TEST(SpoolTest, LaneDestinationsPersist) {
  TempDir dir;
  {
    auto spool = Open(dir.path());
    EXPECT_EQ(spool->LaneDestination("a"), "");
    ASSERT_TRUE(spool->SetLaneDestination("a", "json main.edge.t").ok());
    EXPECT_EQ(spool->LaneDestination("a"), "json main.edge.t");
  }
  EXPECT_EQ(Open(dir.path())->LaneDestination("a"), "json main.edge.t");
}

TEST(SpoolTest, AFolderWithFilesButNoSpoolIsRefusedNotInitialized) {
  TempDir dir;
  zb::testing::WriteFile(dir.Sub("000123.log"), "leftover");
  auto spool = OpenRocksDbSpool(SpoolOptions{.path = dir.path()});
  ASSERT_FALSE(spool.ok());
  EXPECT_EQ(spool.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(spool.status().message().find("no CURRENT file"), std::string::npos) << spool.status();
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("CURRENT"))) << "nothing was created over it";
}

}  // namespace
}  // namespace zb
