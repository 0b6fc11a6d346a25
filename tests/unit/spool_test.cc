// Spool against a real RocksDB in a temp dir: order, durability across
// reopen, delete-after-ack, checksums and group commit from many threads,
// the free-space guard, who has the spool open, and its file modes.

#include "spool/spool.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "spool/dead_letters.h"
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

TEST(SpoolTest, WriterTimesSayWhereTheWritersTimeWent) {
  TempDir dir;
  auto spool = Open(dir.path());
  const SpoolWriterTimes before = spool->WriterTimes();
  EXPECT_EQ(before.commits, 0u);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(spool->Append("lane", {std::string(1000, 'r')}).ok());
  ASSERT_TRUE(spool->DeleteUpTo("lane", 20).ok());
  const SpoolWriterTimes t = spool->WriterTimes();
  EXPECT_EQ(t.commits, 21u);
  EXPECT_GT(t.logging + t.memtable, 0.0);
  EXPECT_GT(t.syncing, 0.0) << "every append was fsync'd";
  EXPECT_GT(t.idle, 0.0);
  for (double phase : {t.idle, t.building, t.logging, t.syncing, t.memtable, t.stalled, t.answering}) {
    EXPECT_GE(phase, 0.0);
  }
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

// An append is answered only once what the spool publishes (Stats, what a
// drain starts from) covers it, and what it published survives a reopen.
TEST(SpoolTest, AnAppendIsAnsweredOnlyOnceItsStatsArePublished) {
  TempDir dir;
  auto spool = Open(dir.path());
  constexpr int kThreads = 4, kEach = 200;
  std::atomic<int> answered{0}, behind{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        spool->AppendAsync(absl::StrCat("lane", t % 2), {std::string(100, 'p'), std::string(50, 'q')},
                           [&, lane = absl::StrCat("lane", t % 2)](absl::StatusOr<AppendResult> r) {
                             EXPECT_TRUE(r.ok()) << r.status();
                             if (r.ok() && spool->Stats(lane).next_seq <= r->last_seq) ++behind;
                             ++answered;
                           });
      }
    });
  }
  for (auto& p : producers) p.join();
  ASSERT_TRUE(zb::testing::WaitFor([&] { return answered.load() == kThreads * kEach; }, std::chrono::seconds(30)));
  EXPECT_EQ(behind.load(), 0) << "answered before its stats were published";
  spool.reset();
  spool = Open(dir.path());
  for (const char* lane : {"lane0", "lane1"}) {
    EXPECT_EQ(spool->Stats(lane).next_seq, 2u * kThreads / 2 * kEach + 1) << lane;
    EXPECT_EQ(spool->Stats(lane).records, 2u * kThreads / 2 * kEach) << lane;
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
    EXPECT_FALSE(spool->dead_letters().Move("a", 3, {}).ok()) << "only the oldest record may move";
    DeadLetterInfo info;
    info.table = "main.edge.t";
    info.code = "INVALID_ARGUMENT";
    info.message = "bad record";
    info.attempts = 3;
    info.first_failure_us = 42;
    ASSERT_TRUE(spool->dead_letters().Move("a", 2, info).ok());
    EXPECT_EQ(spool->Stats("a").records, 1u);
    EXPECT_EQ(spool->Stats("a").deleted_up_to, 2u);
    EXPECT_EQ(spool->dead_letters().Totals().records, 1u);
    EXPECT_EQ(spool->TotalBytes(), 11u) << "dead letters count toward the spool's bytes";
  }
  auto spool = Open(dir.path());  // the store survives a restart
  auto listed = spool->dead_letters().List({});
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
  EXPECT_TRUE(spool->dead_letters().List({.lane = "other"})->empty());

  auto replayed = spool->dead_letters().Replay({.lane = "a"});
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ((*replayed)["a"].first_seq, 4u) << "replayed records go to the lane's tail";
  EXPECT_EQ(Payloads(*spool->ReadFrom("a", 1, 10, 1 << 20)), (std::vector<std::string>{"good2", "poison"}));
  EXPECT_EQ(spool->dead_letters().Totals().records, 0u);

  ASSERT_TRUE(spool->DeleteUpTo("a", 3).ok());
  ASSERT_TRUE(spool->dead_letters().Move("a", 4, {}).ok());
  auto purged = spool->dead_letters().Purge({});
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(*purged, 1u);
  EXPECT_EQ(spool->dead_letters().Totals().bytes, 0u);
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

int CountOf(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// The guard reads the free space before every write (here through the
// probe, which a test can move at will), so a disk that fills between two
// writes stops the very next one.
// A spool whose free-space guard (min_free_bytes 64 MiB) reads `free`.
SpoolOptions GuardedBy(const TempDir& dir, const std::atomic<uint64_t>& free) {
  SpoolOptions o;
  o.path = dir.path();
  o.min_free_bytes = 64ull << 20;
  o.free_bytes_probe = [&free] { return free.load(); };
  return o;
}

TEST(SpoolTest, FreeSpaceGuardLooksBeforeEveryWriteHoldsWhatMayWaitAndLetsDeletesThrough) {
  TempDir dir;
  std::atomic<uint64_t> free{1ull << 40};
  SpoolOptions o = GuardedBy(dir, free);
  // What RocksDB keeps under the default memory budget (32 MiB): a flush of
  // its two 8 MiB memtables, the 1 MiB ones of the dead-letter store and of
  // the lane metas, and 1 MiB.
  constexpr uint64_t kReserve = 19ull << 20;
  std::mutex mu;  // declared before the spool: its callbacks may run until it is gone
  std::vector<std::string> done;
  ::testing::internal::CaptureStdout();  // the spool's log lines
  {
    auto spool = OpenWith(o);
    ASSERT_TRUE(spool->Append("a", {"1", "2", "3"}).ok());

    free = (64ull << 20) + 1000;  // filled by someone else, just now
    auto refused = spool->Append("a", {"4"});
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(refused.status().message().find(absl::StrCat("has ", (64ull << 20) + 1000, " bytes free")),
              std::string::npos)
        << refused.status();
    EXPECT_NE(refused.status().message().find("would leave less than spool.min_free_bytes (67108864)"),
              std::string::npos)
        << refused.status();
    EXPECT_TRUE(spool->full());
    EXPECT_FALSE(spool->Append("a", {"5"}).ok());
    // A producer that may wait is held, not refused.
    spool->AppendWhenRoomAsync("a", std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"6"}),
                               [&](absl::StatusOr<AppendResult> r) {
                                 std::lock_guard<std::mutex> lock(mu);
                                 done.push_back(r.ok() ? absl::StrCat("6 at ", r->first_seq) : "failed");
                               });
    // Deletes free space: above the reserve they still go through.
    ASSERT_TRUE(spool->DeleteUpTo("a", 1).ok());
    EXPECT_EQ(spool->Stats("a").deleted_up_to, 1u);
    EXPECT_TRUE(spool->full());

    // Below the reserve nothing reaches RocksDB: a delete is held (not lost,
    // not failed), a dead-letter move refused.
    free = kReserve - 1;
    std::promise<absl::Status> deleted;
    spool->DeleteUpToAsync("a", 2, [&](absl::Status s) { deleted.set_value(s); });
    const absl::Status moved = spool->dead_letters().Move("a", 2, {});
    EXPECT_EQ(moved.code(), absl::StatusCode::kResourceExhausted) << moved;
    EXPECT_NE(moved.message().find("RocksDB needs for its memtable flushes and WAL (spool.min_free_bytes is 67108864)"),
              std::string::npos)
        << moved;
    auto delete_result = deleted.get_future();
    EXPECT_EQ(delete_result.wait_for(std::chrono::seconds(0)), std::future_status::timeout) << "the delete is held";
    EXPECT_EQ(spool->Stats("a").deleted_up_to, 1u);
    {
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_TRUE(done.empty());
    }

    // Space comes back: what waited goes in by itself, and the spool says so.
    free = 1ull << 40;
    ASSERT_EQ(delete_result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_TRUE(delete_result.get().ok());
    ASSERT_TRUE(zb::testing::WaitFor(
        [&] {
          std::lock_guard<std::mutex> lock(mu);
          return !done.empty();
        },
        std::chrono::seconds(10)));
    EXPECT_EQ(done, std::vector<std::string>{"6 at 4"});
    ASSERT_TRUE(zb::testing::WaitFor([&] { return !spool->full(); }, std::chrono::seconds(10)));
    EXPECT_EQ(spool->Stats("a").deleted_up_to, 2u);
    EXPECT_EQ(Payloads(*spool->ReadFrom("a", 1, 10, 1 << 20)), (std::vector<std::string>{"3", "6"}));
  }
  const std::string log = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(CountOf(log, " is full: "), 1) << "one line when it fills, not one per refusal:\n" << log;
  EXPECT_EQ(CountOf(log, " has room again "), 1) << log;
}

TEST(SpoolTest, ASpoolThisProcessHasOpenIsInUse) {
  TempDir dir;
  auto first = Open(dir.path());
  auto second = OpenRocksDbSpool(SpoolOptions{.path = dir.path()});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find(
                absl::StrCat("spool ", dir.path(), " is in use by pid ", ::getpid(), " (this process)")),
            std::string::npos)
      << second.status();
  EXPECT_TRUE(first->Append("a", {"x"}).ok());
  first.reset();
  EXPECT_TRUE(OpenRocksDbSpool(SpoolOptions{.path = dir.path()}).ok()) << "free again once closed";
}

// The other process of SecondProcessIsToldWhichPidHoldsTheSpool: holds the
// spool at $ZB_SPOOL_TEST_HOLD open until <that path>.release exists.
TEST(SpoolTest, HoldsASpoolOpenForAnotherTest) {
  const char* path = std::getenv("ZB_SPOOL_TEST_HOLD");
  if (path == nullptr) GTEST_SKIP() << "run only by SecondProcessIsToldWhichPidHoldsTheSpool";
  auto spool = OpenRocksDbSpool(SpoolOptions{.path = path});
  ASSERT_TRUE(spool.ok()) << spool.status();
  zb::testing::WriteFile(std::string(path) + ".ready", "");
  ASSERT_TRUE(zb::testing::WaitFor([&] { return std::filesystem::exists(std::string(path) + ".release"); },
                                   std::chrono::seconds(60)));
}

// RocksDB's lock is an fcntl lock, which only another process can see.
TEST(SpoolTest, SecondProcessIsToldWhichPidHoldsTheSpool) {
  TempDir dir;
  const std::string path = dir.Sub("spool");
  ASSERT_TRUE(Open(path)->Append("a", {"x"}).ok());
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  ::setenv("ZB_SPOOL_TEST_HOLD", path.c_str(), 1);
  zb::testing::Process holder({self, "--gtest_filter=SpoolTest.HoldsASpoolOpenForAnotherTest"}, dir.Sub("holder.log"));
  ::unsetenv("ZB_SPOOL_TEST_HOLD");
  ASSERT_TRUE(zb::testing::WaitFor([&] { return std::filesystem::exists(path + ".ready") || !holder.Running(); },
                                   std::chrono::seconds(30)));
  ASSERT_TRUE(std::filesystem::exists(path + ".ready")) << zb::testing::ReadFileOrEmpty(dir.Sub("holder.log"));

  auto second = OpenRocksDbSpool(SpoolOptions{.path = path});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find(absl::StrCat("spool ", path, " is in use by pid ", holder.pid(), ":")),
            std::string::npos)
      << second.status();
  EXPECT_EQ(second.status().message().find("damaged"), std::string::npos) << second.status();

  zb::testing::WriteFile(path + ".release", "");
  ASSERT_EQ(holder.Wait(std::chrono::seconds(30)), 0) << zb::testing::ReadFileOrEmpty(dir.Sub("holder.log"));
  auto spool = Open(path);
  EXPECT_EQ(spool->Stats("a").records, 1u);
}

class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }

 private:
  mode_t old_;
};

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(SpoolTest, TheSpoolFolderIs0700AndItsOwnFiles0600WhateverTheUmask) {
  TempDir dir;
  {
    ScopedUmask umask(022);
    const std::string path = dir.Sub("var/lib/spool");  // its parents are made too
    ASSERT_TRUE(Open(path)->Append("a", {"x"}).ok());  // closing writes the watermark
    EXPECT_EQ(ModeOf(path), 0700u);
    EXPECT_EQ(ModeOf(path + "/ZEROBUSD-WATERMARK"), 0600u);
  }
  {
    ScopedUmask umask(0777);  // even a umask that leaves the owner nothing
    const std::string path = dir.Sub("odd");
    ASSERT_TRUE(Open(path)->Append("a", {"x"}).ok());
    EXPECT_EQ(ModeOf(path), 0700u);
  }
  {
    // RocksDB's own files follow the umask; the daemon's is 077.
    ScopedUmask umask(077);
    const std::string path = dir.Sub("strict");
    ASSERT_TRUE(Open(path)->Append("a", {"x"}).ok());
    EXPECT_EQ(ModeOf(path), 0700u);
    int files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(path)) {
      EXPECT_EQ(ModeOf(entry.path().string()) & 077, 0u) << entry.path();
      ++files;
    }
    EXPECT_GT(files, 3);
  }
}

TEST(SpoolTest, AnExistingSpoolFolderOthersCanReachIsTightenedTo0700) {
  TempDir dir;
  ScopedUmask umask(022);
  const std::string path = dir.Sub("spool");
  std::filesystem::create_directories(path);
  ASSERT_EQ(::chmod(path.c_str(), 0755), 0);
  ASSERT_TRUE(Open(path)->Append("a", {"x"}).ok());  // an empty folder
  EXPECT_EQ(ModeOf(path), 0700u);
  ASSERT_EQ(::chmod(path.c_str(), 0750), 0);  // a spool with records
  auto spool = Open(path);
  EXPECT_EQ(ModeOf(path), 0700u);
  EXPECT_EQ(spool->Stats("a").records, 1u);
}

// Several streams acknowledge parts of one lane: ranges arrive in any order,
// overlap, and survive restarts; the counters stay exact and deleted_up_to
// passes over every gap that earlier ranges left.
TEST(SpoolTest, RangeDeletesInAnyOrderAcrossRestartsKeepTheCountersExact) {
  TempDir dir;
  std::vector<std::string> recs;
  for (int i = 1; i <= 100; ++i) recs.push_back(std::string(static_cast<size_t>(i), 'r'));  // seq i: i bytes
  auto bytes_of = [](SeqNo first, SeqNo last) { return (first + last) * (last - first + 1) / 2; };
  uint64_t live_bytes = bytes_of(1, 100);
  {
    auto spool = Open(dir.path());
    ASSERT_TRUE(spool->Append("lane", recs).ok());
    ASSERT_TRUE(spool->DeleteRange("lane", 50, 60).ok());
    live_bytes -= bytes_of(50, 60);
    EXPECT_EQ(spool->Stats("lane").deleted_up_to, 0u) << "the oldest records are still there";
    EXPECT_EQ(spool->Stats("lane").records, 89u);
    ASSERT_TRUE(spool->DeleteRange("lane", 55, 70).ok());  // overlaps: only 61..70 are new
    live_bytes -= bytes_of(61, 70);
    EXPECT_EQ(spool->Stats("lane").records, 79u);
    EXPECT_EQ(spool->Stats("lane").bytes, live_bytes);
    ASSERT_TRUE(spool->DeleteRange("lane", 10, 20).ok());
    live_bytes -= bytes_of(10, 20);
  }
  {
    auto spool = Open(dir.path());
    LaneStats st = spool->Stats("lane");
    EXPECT_EQ(st.records, 68u);
    EXPECT_EQ(st.bytes, live_bytes);
    EXPECT_EQ(st.deleted_up_to, 0u);
    auto read = spool->ReadFrom("lane", 1, 1000, 1 << 20);
    ASSERT_TRUE(read.ok());
    ASSERT_EQ(read->size(), 68u);
    EXPECT_EQ((*read)[9].seq, 21u) << "deleted records are not read again";
    // The oldest ones go: deleted_up_to passes over 10..20 and stops at 21.
    ASSERT_TRUE(spool->DeleteRange("lane", 1, 9).ok());
    live_bytes -= bytes_of(1, 9);
    EXPECT_EQ(spool->Stats("lane").deleted_up_to, 20u);
    // Then the rest before the gap 50..70: it jumps to 70.
    ASSERT_TRUE(spool->DeleteUpTo("lane", 49).ok());
    live_bytes -= bytes_of(21, 49);
    st = spool->Stats("lane");
    EXPECT_EQ(st.deleted_up_to, 70u);
    EXPECT_EQ(st.records, 30u);
    EXPECT_EQ(st.bytes, live_bytes);
    // The newest before the rest, then the rest.
    ASSERT_TRUE(spool->DeleteRange("lane", 90, 100).ok());
    EXPECT_EQ(spool->Stats("lane").deleted_up_to, 70u);
    ASSERT_TRUE(spool->DeleteRange("lane", 71, 89).ok());
    st = spool->Stats("lane");
    EXPECT_EQ(st.deleted_up_to, 100u);
    EXPECT_EQ(st.records, 0u);
    EXPECT_EQ(st.bytes, 0u);
    // The lane goes on after them.
    auto more = spool->Append("lane", {"next"});
    ASSERT_TRUE(more.ok());
    EXPECT_EQ(more->first_seq, 101u);
  }
  auto report = VerifyRocksDbSpool(dir.path());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

// Ranges queued together commit in one batch, whose own tombstones are not
// visible yet: overlapping ones must still count each record once.
TEST(SpoolTest, OverlappingRangesInOneGroupCountEachRecordOnce) {
  TempDir dir;
  auto spool = Open(dir.path());
  std::vector<std::string> recs(200, "0123456789");
  ASSERT_TRUE(spool->Append("lane", recs).ok());
  std::vector<std::promise<absl::Status>> done(6);
  const std::vector<std::pair<SeqNo, SeqNo>> ranges = {{120, 150}, {100, 130}, {140, 160}, {1, 50}, {40, 99}, {170, 170}};
  for (size_t i = 0; i < ranges.size(); ++i) {
    spool->DeleteRangeAsync("lane", ranges[i].first, ranges[i].second, [&, i](absl::Status s) { done[i].set_value(s); });
  }
  for (auto& d : done) ASSERT_TRUE(d.get_future().get().ok());
  const LaneStats st = spool->Stats("lane");
  EXPECT_EQ(st.deleted_up_to, 160u);
  EXPECT_EQ(st.records, 39u);  // 161..169 and 171..200
  EXPECT_EQ(st.bytes, 390u);
  auto read = spool->ReadFrom("lane", 1, 1000, 1 << 20);
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 39u);
  EXPECT_EQ(read->front().seq, 161u);
}

TEST(SpoolTest, ADeleteOfRecordsNotYetDurableIsRefused) {
  TempDir dir;
  auto spool = Open(dir.path());
  ASSERT_TRUE(spool->Append("lane", {"a", "b"}).ok());
  const absl::Status beyond = spool->DeleteRange("lane", 1, 3);
  EXPECT_EQ(beyond.code(), absl::StatusCode::kInternal) << beyond;
  EXPECT_EQ(spool->Stats("lane").records, 2u);
}

// A caller's executor of its own: a thread that runs posted tasks in order.
// A task, and what it captured, are destroyed on that thread.
class ThreadExecutor {
 public:
  ThreadExecutor() : thread_([this] { Run(); }) {}
  ~ThreadExecutor() { Join(); }

  std::thread::id id() const { return thread_.get_id(); }
  Spool::Post post() {
    return [this](std::function<void()> task) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        tasks_.push_back(std::move(task));
      }
      cv_.notify_one();
    };
  }
  // Runs `fn` on the executor and returns once it has.
  void RunAndWait(std::function<void()> fn) {
    std::promise<void> ran;
    post()([&] {
      fn();
      ran.set_value();
    });
    ran.get_future().wait();
  }
  // Runs what is queued, then stops the thread.
  void Join() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      task = nullptr;
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest exists
};

// The spool tells a lane's watchers when its records are durable, on the
// watcher's executor (a thread of its own here), coalesced, and never after
// the watch is gone.
TEST(SpoolTest, DurableNotificationsRunOnTheWatchersExecutorAndStopWithTheWatch) {
  TempDir dir;
  auto spool = Open(dir.path());
  ThreadExecutor executor;
  const std::thread::id executor_id = executor.id();
  const Spool::Post post = executor.post();
  std::atomic<SeqNo> seen{0};
  std::atomic<int> calls{0};
  std::atomic<bool> wrong_thread{false};
  std::atomic<SeqNo> other_lane{0};
  std::unique_ptr<Spool::DurableWatch> watch = spool->WatchDurable("a", post, [&](SeqNo last) {
    if (std::this_thread::get_id() != executor_id) wrong_thread = true;
    if (last < seen.load()) wrong_thread = true;  // never backwards
    seen = last;
    calls++;
  });
  std::unique_ptr<Spool::DurableWatch> other =
      spool->WatchDurable("b", post, [&](SeqNo last) { other_lane = last; });
  for (int i = 0; i < 50; ++i) spool->AppendAsync("a", std::vector<std::string>{"x", "y"}, nullptr);
  ASSERT_TRUE(spool->Append("a", {"z"}).ok());
  ASSERT_TRUE(zb::testing::WaitFor([&] { return seen.load() == 101; }, std::chrono::seconds(10)));
  EXPECT_FALSE(wrong_thread.load());
  EXPECT_LE(calls.load(), 51) << "at most one per commit";
  EXPECT_EQ(other_lane.load(), 0u) << "another lane's watcher hears nothing";
  // Dead-letter replays make records durable too.
  ASSERT_TRUE(spool->dead_letters().Move("a", 1, {}).ok());
  auto replayed = spool->dead_letters().Replay({});
  ASSERT_TRUE(replayed.ok());
  ASSERT_TRUE(zb::testing::WaitFor([&] { return seen.load() == 102; }, std::chrono::seconds(10)));
  // Gone: nothing more, even for a notification already queued.
  executor.RunAndWait([&] { watch.reset(); });
  const int before = calls.load();
  ASSERT_TRUE(spool->Append("a", {"after"}).ok());
  ASSERT_TRUE(spool->Append("b", {"b1"}).ok());
  ASSERT_TRUE(zb::testing::WaitFor([&] { return other_lane.load() == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(calls.load(), before);
  executor.RunAndWait([&] { other.reset(); });
}

// Below the reserve, deletes are held; held ranges of a lane that touch
// merge (the covered ones are answered at once), the rest wait apart, and
// all go in once space returns.
TEST(SpoolTest, HeldRangeDeletesMergeWhereTheyTouchAndGoInWhenSpaceReturns) {
  TempDir dir;
  std::atomic<uint64_t> free{1ull << 40};
  SpoolOptions o = GuardedBy(dir, free);
  ::testing::internal::CaptureStdout();
  {
    auto spool = OpenWith(o);
    ASSERT_TRUE(spool->Append("a", std::vector<std::string>(100, "x")).ok());
    free = 1u << 20;  // below the reserve
    std::vector<std::promise<absl::Status>> done(4);
    std::vector<std::future<absl::Status>> results;
    for (auto& d : done) results.push_back(d.get_future());
    spool->DeleteRangeAsync("a", 10, 20, [&](absl::Status s) { done[0].set_value(s); });
    spool->DeleteRangeAsync("a", 30, 40, [&](absl::Status s) { done[1].set_value(s); });
    spool->DeleteRangeAsync("a", 60, 70, [&](absl::Status s) { done[2].set_value(s); });
    spool->DeleteRangeAsync("a", 21, 29, [&](absl::Status s) { done[3].set_value(s); });  // joins 10..20 and 30..40
    // The two it joined are covered by the union: answered at once.
    ASSERT_EQ(results[0].wait_for(std::chrono::seconds(10)), std::future_status::ready);
    ASSERT_EQ(results[1].wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_TRUE(results[0].get().ok());
    EXPECT_TRUE(results[1].get().ok());
    EXPECT_EQ(results[2].wait_for(std::chrono::milliseconds(300)), std::future_status::timeout) << "held";
    EXPECT_EQ(results[3].wait_for(std::chrono::milliseconds(0)), std::future_status::timeout) << "held";
    EXPECT_EQ(spool->Stats("a").records, 100u);
    free = 1ull << 40;
    ASSERT_EQ(results[2].wait_for(std::chrono::seconds(10)), std::future_status::ready);
    ASSERT_EQ(results[3].wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_TRUE(results[2].get().ok());
    EXPECT_TRUE(results[3].get().ok());
    EXPECT_EQ(spool->Stats("a").records, 100u - 31u - 11u);
    EXPECT_EQ(spool->Stats("a").deleted_up_to, 0u);
    auto read = spool->ReadFrom("a", 1, 1000, 1 << 20);
    ASSERT_TRUE(read.ok());
    ASSERT_EQ(read->size(), 58u);
    EXPECT_EQ((*read)[9].seq, 41u);
  }
  ::testing::internal::GetCapturedStdout();
}

// Given the caller's executor, every async call answers on it, and what the
// callback captured is released there, never on the spool's threads.
TEST(SpoolTest, CallbacksGivenAnExecutorRunAndAreReleasedOnIt) {
  TempDir dir;
  auto spool = Open(dir.path());
  ThreadExecutor executor;
  const std::thread::id executor_id = executor.id();
  const Spool::Post post = executor.post();
  // Notes the thread it is destroyed on.
  struct Witness {
    Witness(std::atomic<int>* wrong, std::thread::id want) : wrong(wrong), want(want) {}
    std::atomic<int>* wrong;
    std::thread::id want;
    ~Witness() {
      if (std::this_thread::get_id() != want) ++*wrong;
    }
  };
  std::atomic<int> wrong_thread{0}, answered{0};
  auto check = [&] {
    if (std::this_thread::get_id() != executor_id) ++wrong_thread;
    ++answered;
  };
  // Each witness is made inside the callback's capture: the callback holds
  // the only reference, so whichever thread releases it is the one seen.
  spool->AppendAsync(
      "a", std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"x", "y"}),
      [check, witness = std::make_shared<Witness>(&wrong_thread, executor_id)](absl::StatusOr<AppendResult>) {
        check();
      },
      post);
  spool->ReadFromAsync(
      "a", 1, 10, 1 << 20, 0,
      [check, witness = std::make_shared<Witness>(&wrong_thread, executor_id)](
          absl::StatusOr<std::vector<SpoolRecord>>) { check(); },
      post);
  ASSERT_TRUE(zb::testing::WaitFor([&] { return answered.load() == 2; }, std::chrono::seconds(10)));
  spool->DeleteRangeAsync("a", 1, 1, [check](absl::Status) { check(); }, post);
  DeadLetters& dead_letters = spool->dead_letters();
  dead_letters.MoveAsync("a", 2, {}, [check](absl::Status) { check(); }, post);
  dead_letters.ListAsync({}, 0, 10, [check](absl::StatusOr<std::vector<DeadLetter>>) { check(); }, post);
  dead_letters.ReplayAsync({}, [check](absl::StatusOr<std::map<std::string, AppendResult>>) { check(); }, post);
  dead_letters.PurgeAsync({}, [check](absl::StatusOr<uint64_t>) { check(); }, post);
  ASSERT_TRUE(zb::testing::WaitFor([&] { return answered.load() == 7; }, std::chrono::seconds(10)));
  EXPECT_EQ(wrong_thread.load(), 0);
  executor.Join();
  EXPECT_EQ(wrong_thread.load(), 0) << "every witness was released on the executor";
}

}  // namespace
}  // namespace zb
