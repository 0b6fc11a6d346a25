// LaneCursor: which seqs of a lane are done, out on a stream or waiting,
// when several streams take spans and their ACKs come in any order.

#include "drain/lane_cursor.h"

#include "gtest/gtest.h"

namespace zb {
namespace {

constexpr SeqNo kNoBound = ~SeqNo{0};

TEST(LaneCursorTest, FreshSpansStartWhereTheLastTakeEnded) {
  LaneCursor cursor(10);  // 1..10 are gone already
  EXPECT_EQ(cursor.done_up_to(), 10u);
  EXPECT_FALSE(cursor.Next(10).has_value());  // nothing durable past the done mark
  auto span = cursor.Next(25);
  ASSERT_TRUE(span.has_value());
  EXPECT_EQ(span->first, 11u);
  EXPECT_EQ(span->last, kNoBound);
  EXPECT_FALSE(span->resend);
  EXPECT_EQ(cursor.waiting(25), 15u);
  cursor.Take(11, 15);
  cursor.Take(16, 20);
  EXPECT_EQ(cursor.Next(25)->first, 21u);
  EXPECT_EQ(cursor.waiting(25), 5u);
  EXPECT_EQ(cursor.out(), 10u);
  EXPECT_EQ(cursor.last_taken(), 20u);
  cursor.Take(21, 25);
  EXPECT_FALSE(cursor.Next(25).has_value());
}

TEST(LaneCursorTest, AcksOutOfOrderMoveTheDoneMarkOnlyOnceTheGapBelowCloses) {
  LaneCursor cursor;
  cursor.Take(1, 10);   // stream A
  cursor.Take(11, 20);  // stream B
  cursor.Take(21, 30);  // stream C
  EXPECT_FALSE(cursor.Done(21, 30));  // C acks first
  EXPECT_FALSE(cursor.Done(11, 20));
  EXPECT_EQ(cursor.done_up_to(), 0u);
  EXPECT_EQ(cursor.out(), 10u);
  EXPECT_TRUE(cursor.Done(1, 10));  // the gap closes: everything is done
  EXPECT_EQ(cursor.done_up_to(), 30u);
  EXPECT_EQ(cursor.out(), 0u);
  EXPECT_FALSE(cursor.Done(5, 8));  // an ACK of a resent copy changes nothing
  EXPECT_EQ(cursor.done_up_to(), 30u);
}

TEST(LaneCursorTest, SpansGivenBackAreSentAgainLowestFirstBeforeFreshRecords) {
  LaneCursor cursor;
  cursor.Take(1, 10);
  cursor.Take(11, 20);
  cursor.Take(21, 30);
  cursor.Take(31, 40);
  cursor.Done(1, 10);
  // Stream B (11..20, 31..40) fails; C (21..30) goes on.
  cursor.GiveBack(31, 40);
  cursor.GiveBack(11, 20);
  EXPECT_EQ(cursor.waiting(50), 20u + 10u);
  EXPECT_EQ(cursor.out(), 10u);
  auto span = cursor.Next(50);
  ASSERT_TRUE(span.has_value());
  EXPECT_TRUE(span->resend);
  EXPECT_EQ(span->first, 11u);
  EXPECT_EQ(span->last, 20u);
  cursor.Take(11, 15);  // a smaller request takes part of it
  span = cursor.Next(50);
  EXPECT_EQ(span->first, 16u);
  EXPECT_EQ(span->last, 20u);
  cursor.Take(16, 20);
  span = cursor.Next(50);
  EXPECT_EQ(span->first, 31u);
  EXPECT_EQ(span->last, 40u);
  cursor.Take(31, 40);
  span = cursor.Next(50);
  EXPECT_FALSE(span->resend);
  EXPECT_EQ(span->first, 41u);  // then fresh records
  cursor.Done(11, 40);
  EXPECT_EQ(cursor.done_up_to(), 40u);
}

TEST(LaneCursorTest, WhatIsDoneMeanwhileIsNotGivenBack) {
  LaneCursor cursor;
  cursor.Take(1, 30);
  cursor.Done(11, 20);  // a copy sent by another stream was acked
  cursor.GiveBack(1, 30);
  auto span = cursor.Next(30);
  ASSERT_TRUE(span.has_value());
  EXPECT_EQ(span->first, 1u);
  EXPECT_EQ(span->last, 10u);
  cursor.Take(1, 10);
  span = cursor.Next(30);
  EXPECT_EQ(span->first, 21u);
  EXPECT_EQ(span->last, 30u);
  EXPECT_EQ(cursor.waiting(30), 10u);
  // Giving back what was never taken, or what is done, adds nothing.
  cursor.GiveBack(31, 50);
  cursor.GiveBack(11, 20);
  EXPECT_EQ(cursor.waiting(30), 10u);
}

TEST(LaneCursorTest, SeqsGoneFromTheSpoolAreDone) {
  LaneCursor cursor;
  cursor.Take(1, 10);
  cursor.GiveBack(1, 10);
  // A read of the span found it gone (dropped meanwhile): done, not resent.
  cursor.Done(1, 10);
  EXPECT_EQ(cursor.done_up_to(), 10u);
  EXPECT_EQ(cursor.Next(20)->first, 11u);
  EXPECT_FALSE(cursor.Next(20)->resend);
  // drop_oldest removed 11..15 before they were read.
  cursor.SkipTo(15);
  EXPECT_EQ(cursor.done_up_to(), 15u);
  EXPECT_EQ(cursor.Next(20)->first, 16u);
  cursor.SkipTo(3);  // behind: nothing changes
  EXPECT_EQ(cursor.done_up_to(), 15u);
}

TEST(LaneCursorTest, ASkipPastSpansOutAndGivenBackForgetsThem) {
  LaneCursor cursor;
  cursor.Take(1, 20);
  cursor.GiveBack(1, 10);
  cursor.Done(15, 20);
  cursor.SkipTo(30);  // everything up to 30 left the spool
  EXPECT_EQ(cursor.done_up_to(), 30u);
  EXPECT_EQ(cursor.out(), 0u);
  EXPECT_EQ(cursor.waiting(30), 0u);
  EXPECT_FALSE(cursor.Next(30).has_value());
  EXPECT_EQ(cursor.Next(31)->first, 31u);
}

TEST(LaneCursorTest, AMillionSeqsTakenByFourStreamsAndAckedNewestFirstAllEndDone) {
  // Four streams take spans in turn; each round's ACKs come newest first,
  // so the done mark moves only with the oldest, and a failed stream gives
  // a span back now and then. What the cursor remembers stays bounded by
  // the spans in flight, not by the million seqs.
  LaneCursor cursor;
  constexpr SeqNo kSpan = 100;
  constexpr int kStreams = 4;
  SeqNo next = 1;
  std::vector<std::pair<SeqNo, SeqNo>> in_flight;
  while (next <= 1'000'000) {
    for (int i = 0; i < kStreams; ++i, next += kSpan) {
      cursor.Take(next, next + kSpan - 1);
      in_flight.emplace_back(next, next + kSpan - 1);
    }
    // Every tenth round the newest span fails and is taken again.
    if (next / (kSpan * kStreams) % 10 == 0) {
      cursor.GiveBack(in_flight.back().first, in_flight.back().second);
      EXPECT_TRUE(cursor.Next(next - 1)->resend);
      cursor.Take(in_flight.back().first, in_flight.back().second);
    }
    // Acked newest first.
    while (!in_flight.empty()) {
      cursor.Done(in_flight.back().first, in_flight.back().second);
      in_flight.pop_back();
      ASSERT_LE(cursor.ranges_held(), 1u) << "the done spans above the mark are one range";
    }
    ASSERT_EQ(cursor.ranges_held(), 0u);
  }
  EXPECT_EQ(cursor.done_up_to(), next - 1);
  EXPECT_EQ(cursor.out(), 0u);
}

}  // namespace
}  // namespace zb
