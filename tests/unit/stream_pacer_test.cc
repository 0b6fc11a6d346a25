// StreamPacer on a clock the test moves: half a second's worth at once,
// then the quota's pace; never more than the quota over any stretch;
// requests larger than the buckets; halving on RESOURCE_EXHAUSTED and the
// additive way back.

#include "drain/stream_pacer.h"

#include <chrono>
#include <cstdint>

#include "gtest/gtest.h"

namespace zb {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using TimePoint = StreamPacer::TimePoint;

const TimePoint kStart = TimePoint(seconds(1000));

TEST(StreamPacerTest, ANewStreamSendsHalfASecondsWorthAtOnceThenAtThePace) {
  StreamPacer pacer({.rows_per_second = 1000, .bytes_per_second = 1'000'000}, kStart);
  EXPECT_EQ(pacer.max_rows(), 500u);
  EXPECT_EQ(pacer.max_bytes(), 500'000u);
  EXPECT_EQ(pacer.Delay(500, 10, kStart), StreamPacer::Duration::zero());
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(100, 10, kStart)), milliseconds(100));
  // Asking again changes nothing; once the wait has passed it goes.
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(100, 10, kStart)), milliseconds(100));
  EXPECT_EQ(pacer.Delay(100, 10, kStart + milliseconds(100)), StreamPacer::Duration::zero());
}

// A sender that always asks again after the wait it was given: what it
// sends in `span` never passes the quota plus half a second's worth, and
// comes within 5 % of it.
void ExpectPacedUnderQuota(uint64_t rows_each, uint64_t bytes_each, uint64_t expected_rows_per_second) {
  StreamPacer pacer({.rows_per_second = 1000, .bytes_per_second = 100'000}, kStart);
  const auto span = seconds(20);
  TimePoint now = kStart;
  uint64_t rows = 0;
  for (int asks = 0; now < kStart + span; ++asks) {
    ASSERT_LT(asks, 100'000) << "a pacer that never makes the sender wait";
    const StreamPacer::Duration wait = pacer.Delay(rows_each, bytes_each, now);
    if (wait == StreamPacer::Duration::zero()) {
      rows += rows_each;
    } else {
      now += wait;
    }
  }
  const uint64_t at_pace = expected_rows_per_second * (span / seconds(1));
  EXPECT_LE(rows, at_pace + expected_rows_per_second / 2 + rows_each);
  EXPECT_GE(rows, at_pace * 95 / 100);
}

TEST(StreamPacerTest, WhatGoesNeverPassesTheRowQuota) { ExpectPacedUnderQuota(150, 10, 1000); }

TEST(StreamPacerTest, WhatGoesNeverPassesTheByteQuota) {
  // 1,000 bytes a row: the byte quota (100 kB/s) binds at 100 rows/s.
  ExpectPacedUnderQuota(10, 10'000, 100);
}

TEST(StreamPacerTest, ARequestLargerThanTheBucketsWaitsForThemFullAndLeavesADebt) {
  StreamPacer pacer({.rows_per_second = 100, .bytes_per_second = 1'000'000}, kStart);
  EXPECT_EQ(pacer.Delay(250, 10, kStart), StreamPacer::Duration::zero()) << "full buckets let it go";
  // 200 rows of debt and 10 more: 2.1 s.
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(10, 10, kStart)), milliseconds(2100));
  // Half a second later, a large one waits for the buckets to be full (50).
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(250, 10, kStart + milliseconds(500))),
            milliseconds(2000));
  // A quota of 1 row a second still lets a row go.
  StreamPacer slow({.rows_per_second = 1, .bytes_per_second = 1024}, kStart);
  EXPECT_EQ(slow.max_rows(), 1u);
  EXPECT_EQ(slow.Delay(1, 100, kStart), StreamPacer::Duration::zero());
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(slow.Delay(1, 100, kStart)), milliseconds(1000));
}

TEST(StreamPacerTest, ResourceExhaustedHalvesThePaceWhichComesBackATwentiethOfTheQuotaPerSecond) {
  StreamPacer pacer({.rows_per_second = 1000, .bytes_per_second = 1'000'000}, kStart);
  pacer.Throttled(kStart);
  EXPECT_DOUBLE_EQ(pacer.pace(), 0.5);
  EXPECT_EQ(pacer.max_rows(), 250u) << "requests shrink with the pace";
  // The buckets were emptied: 100 rows at half the pace take 200 ms.
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(100, 10, kStart)), milliseconds(200));
  pacer.Throttled(kStart);
  EXPECT_DOUBLE_EQ(pacer.pace(), 0.25);
  (void)pacer.Delay(1, 1, kStart + seconds(5));
  EXPECT_DOUBLE_EQ(pacer.pace(), 0.5);
  (void)pacer.Delay(1, 1, kStart + seconds(60));
  EXPECT_DOUBLE_EQ(pacer.pace(), 1.0) << "back to the quota, and no further";
  for (int i = 0; i < 20; ++i) pacer.Throttled(kStart + seconds(60));
  EXPECT_DOUBLE_EQ(pacer.pace(), 1.0 / 64) << "never below a 64th";
}

TEST(StreamPacerTest, ATimeBeforeTheLastIsTakenAsTheLast) {
  StreamPacer pacer({.rows_per_second = 1000, .bytes_per_second = 1'000'000}, kStart);
  EXPECT_EQ(pacer.Delay(500, 10, kStart + seconds(1)), StreamPacer::Duration::zero());
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(100, 10, kStart)), milliseconds(100));
}

}  // namespace
}  // namespace zb
