// The wire-offset -> spool-seq window and ACK validation.

#include "drain/offset_window.h"

#include "gtest/gtest.h"

namespace zb {
namespace {

TEST(OffsetWindowTest, OffsetsStartAtZeroAndAckReleasesCoveredRequests) {
  OffsetWindow w;
  EXPECT_EQ(w.Add(1, 10, 10, 100, 5), 0);
  EXPECT_EQ(w.Add(11, 11, 1, 10, 6), 1);
  EXPECT_EQ(w.Add(12, 20, 9, 90, 7), 2);
  EXPECT_EQ(w.records(), 20u);
  auto a = w.Ack(1);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->last_seq, 11u);
  EXPECT_EQ(a->records, 11u);
  EXPECT_EQ(a->requests.size(), 2u);
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.last_acked(), 1);
}

TEST(OffsetWindowTest, RepeatedAckReleasesNothing) {
  OffsetWindow w;
  w.Add(1, 1, 1, 1, 0);
  w.Add(2, 2, 1, 1, 0);
  ASSERT_TRUE(w.Ack(0).ok());
  auto again = w.Ack(0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->records, 0u);
  EXPECT_EQ(w.size(), 1u);
}

TEST(OffsetWindowTest, AckBelowLastAckedIsRejectedAndChangesNothing) {
  OffsetWindow w;
  for (int i = 0; i < 3; ++i) w.Add(i + 1, i + 1, 1, 1, 0);
  ASSERT_TRUE(w.Ack(1).ok());
  auto bad = w.Ack(0);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.last_acked(), 1);
  EXPECT_EQ(w.size(), 1u);
}

TEST(OffsetWindowTest, AckBeyondLastSentIsRejected) {
  OffsetWindow w;
  w.Add(1, 5, 5, 5, 0);
  auto bad = w.Ack(1);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("[-1, 0]"), std::string::npos) << bad.status();
  EXPECT_EQ(w.size(), 1u);
  // Nothing sent at all: any ack is out of range.
  OffsetWindow empty;
  EXPECT_FALSE(empty.Ack(0).ok());
}

TEST(OffsetWindowTest, ResetRestartsWireOffsetsAtZero) {
  OffsetWindow w;
  w.Add(1, 1, 1, 1, 0);
  w.Add(2, 2, 1, 1, 0);
  w.Reset();
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.last_acked(), -1);
  EXPECT_EQ(w.Add(1, 2, 2, 2, 0), 0);
}

}  // namespace
}  // namespace zb
