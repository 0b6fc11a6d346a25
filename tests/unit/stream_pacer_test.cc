// StreamPacer on a clock the test moves: one second's worth at once, then
// the quota's pace; never more than the quota over any stretch; requests
// larger than a second's worth; halving on RESOURCE_EXHAUSTED and the
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

TEST(StreamPacerTest, ANewStreamSendsOneSecondsWorthAtOnceThenAtThePace) {
  StreamPacer pacer({.rows_per_second = 1000, .bytes_per_second = 1'000'000}, kStart);
  EXPECT_EQ(pacer.Delay(1000, 10, kStart), StreamPacer::Duration::zero());
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(100, 10, kStart)), milliseconds(100));
  // Asking again changes nothing; once the wait has passed it goes.
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(100, 10, kStart)), milliseconds(100));
  EXPECT_EQ(pacer.Delay(100, 10, kStart + milliseconds(100)), StreamPacer::Duration::zero());
}

// A sender that always asks again after the wait it was given: what it
// sends in `span` never passes the quota plus one second's worth, and
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
  const uint64_t bound = expected_rows_per_second * (span / seconds(1) + 1);
  EXPECT_LE(rows, bound + rows_each);
  EXPECT_GE(rows, bound * 95 / 100);
}

TEST(StreamPacerTest, WhatGoesNeverPassesTheRowQuota) { ExpectPacedUnderQuota(150, 10, 1000); }

TEST(StreamPacerTest, WhatGoesNeverPassesTheByteQuota) {
  // 1,000 bytes a row: the byte quota (100 kB/s) binds at 100 rows/s.
  ExpectPacedUnderQuota(10, 10'000, 100);
}

TEST(StreamPacerTest, ARequestLargerThanOneSecondsWorthWaitsForAFullBucketAndLeavesADebt) {
  StreamPacer pacer({.rows_per_second = 100, .bytes_per_second = 1'000'000}, kStart);
  EXPECT_EQ(pacer.Delay(250, 10, kStart), StreamPacer::Duration::zero()) << "a full bucket lets it go";
  // 150 rows of debt and 10 more: 1.6 s.
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(10, 10, kStart)), milliseconds(1600));
  // Half a second later, a large one waits for the bucket to be full again.
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(250, 10, kStart + milliseconds(500))),
            milliseconds(2000));
}

TEST(StreamPacerTest, ResourceExhaustedHalvesThePaceWhichComesBackATwentiethOfTheQuotaPerSecond) {
  StreamPacer pacer({.rows_per_second = 1000, .bytes_per_second = 1'000'000}, kStart);
  pacer.Throttled(kStart);
  EXPECT_DOUBLE_EQ(pacer.pace(), 0.5);
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
  EXPECT_EQ(pacer.Delay(1000, 10, kStart + seconds(1)), StreamPacer::Duration::zero());
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(pacer.Delay(100, 10, kStart)), milliseconds(100));
}

}  // namespace
}  // namespace zb
