// The spool's "full" state machine, without RocksDB: when a refusal makes
// the spool full, what must come back before it has room again, and the
// one line it logs on entering and on leaving.

#include "spool/full_state.h"

#include <memory>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

// The spool as FullState sees it: its payload bytes and free disk, with
// counts of how often they were read.
struct FakeSpool {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
  int total_reads = 0;
  int free_reads = 0;

  FullState::Room Room(uint64_t max_bytes, bool drop_oldest = false) {
    return FullState::Room{.max_bytes = max_bytes,
                           .drop_oldest = drop_oldest,
                           .total_bytes =
                               [this] {
                                 ++total_reads;
                                 return total_bytes;
                               },
                           .free_bytes =
                               [this] {
                                 ++free_reads;
                                 return free_bytes;
                               }};
  }
};

const absl::Status kCapRefusal =
    absl::ResourceExhaustedError("spool full: 900 of spool.max_bytes (1000) in use, 200 more asked");
const absl::Status kDiskRefusal = absl::ResourceExhaustedError(
    "spool full: the filesystem of /spool has 10 bytes free; taking 5 more would leave less than "
    "spool.min_free_bytes (100)");

// Captures what spdlog's default logger writes while it lives, one
// "level: message" line each.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    sink->set_pattern("%l: %v");
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

TEST(FullStateTest, TheFirstRefusalMakesTheSpoolFullAndLogsOneLine) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(1000));
  EXPECT_FALSE(state.full());
  EXPECT_FALSE(state.MaybeLeave(/*parked_went_in=*/true)) << "not full: nothing to leave";
  LogCapture log;
  EXPECT_TRUE(state.NoteRefusal(kCapRefusal, /*disk=*/false, 200));
  EXPECT_TRUE(state.full());
  EXPECT_FALSE(state.NoteRefusal(kCapRefusal, /*disk=*/false, 300)) << "already full";
  EXPECT_FALSE(state.NoteRefusal(kDiskRefusal, /*disk=*/true, 50)) << "already full";
  EXPECT_TRUE(state.full());
  EXPECT_EQ(log.text(),
            "warning: spool /spool is full: 900 of spool.max_bytes (1000) in use, 200 more asked. Records that do "
            "not fit wait (when_full: block) or are refused until there is room\n");
}

TEST(FullStateTest, TheLogLineDropsTheSpoolFullPrefixOfTheReason) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(0));
  LogCapture log;
  state.NoteRefusal(absl::ResourceExhaustedError("spool full (disk full): rocksdb said no"), /*disk=*/true, 1);
  EXPECT_EQ(log.text(),
            "warning: spool /spool is full: rocksdb said no. Records that do not fit wait (when_full: block) or are "
            "refused until there is room\n");
}

TEST(FullStateTest, WhatWaitedGoingInLeavesAtOnceAndLogsOneLine) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(1000));
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
  spool.total_bytes = 1000;  // still no room: what went in answers it anyway
  LogCapture log;
  EXPECT_TRUE(state.MaybeLeave(/*parked_went_in=*/true));
  EXPECT_FALSE(state.full());
  EXPECT_EQ(spool.total_reads, 0) << "nothing read when what waited went in";
  EXPECT_EQ(spool.free_reads, 0);
  EXPECT_EQ(log.text().rfind("info: spool /spool has room again after ", 0), 0u) << log.text();
  EXPECT_NE(log.text().find(" s: records are taken again\n"), std::string::npos) << log.text();
  EXPECT_FALSE(state.MaybeLeave(true)) << "left once";
}

TEST(FullStateTest, ByMaxBytesItStaysFullUntilRecordsLeftAndTheLargestRefusedFits) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(1000));
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 100);  // the need only widens
  spool.total_bytes = 0;
  EXPECT_FALSE(state.MaybeLeave(false)) << "no record left since the refusal";
  EXPECT_EQ(spool.total_reads, 0);
  state.NoteRecordsLeft();
  spool.total_bytes = 801;
  EXPECT_FALSE(state.MaybeLeave(false)) << "801 + 200 > 1000";
  EXPECT_TRUE(state.full());
  EXPECT_EQ(spool.free_reads, 0) << "never refused by the disk";
  spool.total_bytes = 800;
  EXPECT_TRUE(state.MaybeLeave(false));
  EXPECT_FALSE(state.full());
}

TEST(FullStateTest, ARefusalAfterRecordsLeftAsksForThemToLeaveAgain) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(1000));
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
  state.NoteRecordsLeft();
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
  spool.total_bytes = 0;
  EXPECT_FALSE(state.MaybeLeave(false));
  state.NoteRecordsLeft();
  EXPECT_TRUE(state.MaybeLeave(false));
}

TEST(FullStateTest, UnderDropOldestOrWithoutACapRecordsLeavingAreEnough) {
  for (const auto& [max_bytes, drop_oldest] : {std::pair<uint64_t, bool>{1000, true}, {0, false}}) {
    FakeSpool spool;
    FullState state("/spool", spool.Room(max_bytes, drop_oldest));
    state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
    spool.total_bytes = 5000;
    state.NoteRecordsLeft();
    EXPECT_TRUE(state.MaybeLeave(false)) << max_bytes << " " << drop_oldest;
    EXPECT_EQ(spool.total_reads, 0);
  }
}

TEST(FullStateTest, ByDiskItStaysFullUntilRecordsLeftAndTheLargestNeedIsFree) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(0));
  EXPECT_FALSE(state.by_disk());
  state.NoteRefusal(kDiskRefusal, /*disk=*/true, 5000);
  state.NoteRefusal(kDiskRefusal, /*disk=*/true, 3000);
  EXPECT_TRUE(state.by_disk());
  spool.free_bytes = 1u << 30;
  EXPECT_FALSE(state.MaybeLeave(false)) << "space the spool did not give back does not count";
  EXPECT_EQ(spool.free_reads, 0);
  state.NoteRecordsLeft();
  spool.free_bytes = 4999;
  EXPECT_FALSE(state.MaybeLeave(false));
  EXPECT_EQ(spool.free_reads, 1);
  EXPECT_EQ(spool.total_reads, 0) << "never refused for max_bytes";
  spool.free_bytes = 5000;
  EXPECT_TRUE(state.MaybeLeave(false));
}

TEST(FullStateTest, ByBothItWaitsForBoth) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(1000));
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
  state.NoteRefusal(kDiskRefusal, /*disk=*/true, 5000);
  state.NoteRecordsLeft();
  spool.total_bytes = 0;
  spool.free_bytes = 0;
  EXPECT_FALSE(state.MaybeLeave(false)) << "the disk";
  spool.total_bytes = 1000;
  spool.free_bytes = 5000;
  EXPECT_FALSE(state.MaybeLeave(false)) << "the cap";
  spool.total_bytes = 800;
  EXPECT_TRUE(state.MaybeLeave(false));
}

TEST(FullStateTest, AnAppendAsLargeAsTheLargestRefusedGoingInLeaves) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(1000));
  EXPECT_FALSE(state.Fits(1u << 30, 1u << 30)) << "not full";
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
  state.NoteRefusal(kDiskRefusal, /*disk=*/true, 5000);
  EXPECT_FALSE(state.Fits(199, 5000)) << "smaller than the largest refused for the cap";
  EXPECT_FALSE(state.Fits(200, 4999)) << "needs less free disk than the largest refused";
  EXPECT_TRUE(state.Fits(200, 5000));
  spool.total_bytes = 1000;  // no room by the numbers: what went in answers it
  state.NoteFitWentIn();
  EXPECT_TRUE(state.MaybeLeave(false));
  EXPECT_EQ(spool.total_reads, 0);
  EXPECT_EQ(spool.free_reads, 0);
}

TEST(FullStateTest, ARefusalAfterAFitAsksForItAgain) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(1000));
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
  state.NoteFitWentIn();
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 200);
  spool.total_bytes = 1000;
  EXPECT_FALSE(state.MaybeLeave(false));
}

TEST(FullStateTest, EnteringAgainForgetsWhyItWasFullBefore) {
  FakeSpool spool;
  FullState state("/spool", spool.Room(1000));
  state.NoteRefusal(kDiskRefusal, /*disk=*/true, 5000);
  state.NoteRefusal(kCapRefusal, /*disk=*/false, 900);
  ASSERT_TRUE(state.MaybeLeave(true));
  LogCapture log;
  EXPECT_TRUE(state.NoteRefusal(kCapRefusal, /*disk=*/false, 100));
  EXPECT_FALSE(state.by_disk());
  EXPECT_NE(log.text().find("warning: spool /spool is full: "), std::string::npos) << "a line on entering again";
  EXPECT_TRUE(state.Fits(100, 0)) << "the old needs are gone";
  state.NoteRecordsLeft();
  spool.total_bytes = 900;
  spool.free_bytes = 0;
  EXPECT_TRUE(state.MaybeLeave(false)) << "900 + 100 fits; the disk is not asked";
  EXPECT_EQ(spool.free_reads, 0);
}

}  // namespace
}  // namespace zb
