// The spool writer's inbox (WriteQueue) and the ranges a batch deletes
// (SeqRanges), without RocksDB: what one group commit takes, what commits
// alone, how the queue closes, and range arithmetic at its edges.

#include "spool/write_queue.h"

#include <algorithm>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "spool/seq_ranges.h"

namespace zb {
namespace {

AppendRequest Append(const std::string& lane, size_t records, size_t bytes_each) {
  AppendRequest append;
  append.lane = lane;
  append.records = std::make_shared<const std::vector<std::string>>(records, std::string(bytes_each, 'x'));
  return append;
}

DeleteRequest Delete(const std::string& lane, SeqNo first, SeqNo last) {
  DeleteRequest del;
  del.lane = lane;
  del.first = first;
  del.last = last;
  return del;
}

// The lane of every request of a group, in order.
std::vector<std::string> Lanes(const std::vector<GroupRequest>& group) {
  std::vector<std::string> lanes;
  for (const auto& request : group) lanes.push_back(LaneOf(request));
  return lanes;
}

TEST(WriteQueueTest, AGroupTakesAppendsAndDeletesInOrderUntilItsPayloadReachesTheBound) {
  WriteQueue queue(/*max_group_bytes=*/1000);
  queue.Push(Append("a", 4, 100));  // 400 of payload
  queue.Push(Delete("b", 1, 10));   // none
  queue.Push(Append("c", 5, 100));  // 900: taken, the group was under the bound
  queue.Push(Append("d", 2, 100));  // 1100: taken, 900 was still under it
  queue.Push(Append("e", 1, 10));   // the bound was reached: the next group's
  WriteQueue::Next first = queue.Take(std::nullopt);
  EXPECT_FALSE(first.closed);
  EXPECT_FALSE(first.alone);
  EXPECT_EQ(Lanes(first.group), (std::vector<std::string>{"a", "b", "c", "d"}));
  WriteQueue::Next second = queue.Take(std::nullopt);
  EXPECT_EQ(Lanes(second.group), (std::vector<std::string>{"e"}));
}

TEST(WriteQueueTest, AnAppendLargerThanTheBoundGoesAloneInItsGroup) {
  WriteQueue queue(/*max_group_bytes=*/100);
  queue.Push(Append("big", 1, 5000));
  queue.Push(Append("next", 1, 10));
  EXPECT_EQ(Lanes(queue.Take(std::nullopt).group), (std::vector<std::string>{"big"}));
  EXPECT_EQ(Lanes(queue.Take(std::nullopt).group), (std::vector<std::string>{"next"}));
}

TEST(WriteQueueTest, DeletesAddNoPayloadSoManyShareOneGroup) {
  WriteQueue queue(/*max_group_bytes=*/1);
  for (SeqNo i = 1; i <= 100; ++i) queue.Push(Delete("a", i, i));
  queue.Push(Append("b", 1, 10));
  queue.Push(Append("c", 1, 10));
  WriteQueue::Next next = queue.Take(std::nullopt);
  ASSERT_EQ(next.group.size(), 101u);  // the append that reaches the bound is the last one in
  EXPECT_EQ(LaneOf(next.group.back()), "b");
  EXPECT_EQ(Lanes(queue.Take(std::nullopt).group), (std::vector<std::string>{"c"}));
}

TEST(WriteQueueTest, ARequestThatCommitsAloneEndsTheGroupBeforeItAndIsTakenByItself) {
  WriteQueue queue(/*max_group_bytes=*/1 << 20);
  queue.Push(Append("a", 1, 10));
  queue.Push(DestinationRequest{"a", "main.s.t", nullptr});
  queue.Push(Append("b", 1, 10));
  queue.Push(AbortWaitingRequest{"stopping"});
  queue.Push(AbortWaitingRequest{"again"});

  EXPECT_EQ(Lanes(queue.Take(std::nullopt).group), (std::vector<std::string>{"a"}));
  WriteQueue::Next destination = queue.Take(std::nullopt);
  EXPECT_TRUE(destination.group.empty());
  ASSERT_TRUE(destination.alone);
  EXPECT_EQ(std::get<DestinationRequest>(*destination.alone).destination, "main.s.t");
  EXPECT_EQ(Lanes(queue.Take(std::nullopt).group), (std::vector<std::string>{"b"}));
  // Two in a row: one at a time, in order.
  WriteQueue::Next abort = queue.Take(std::nullopt);
  ASSERT_TRUE(abort.alone);
  EXPECT_EQ(std::get<AbortWaitingRequest>(*abort.alone).reason, "stopping");
  abort = queue.Take(std::nullopt);
  ASSERT_TRUE(abort.alone);
  EXPECT_EQ(std::get<AbortWaitingRequest>(*abort.alone).reason, "again");
}

TEST(WriteQueueTest, APollWithNothingQueuedComesBackEmptyAndNotClosed) {
  WriteQueue queue(1000);
  WriteQueue::Next next = queue.Take(std::chrono::milliseconds(1));
  EXPECT_TRUE(next.group.empty());
  EXPECT_FALSE(next.alone);
  EXPECT_FALSE(next.closed);
}

TEST(WriteQueueTest, TakeWithoutAPollWaitsForAPushFromAnotherThread) {
  WriteQueue queue(1000);
  std::promise<void> taking;
  auto taken = std::async(std::launch::async, [&] {
    taking.set_value();
    return queue.Take(std::nullopt);
  });
  taking.get_future().wait();
  queue.Push(Append("late", 1, 10));
  ASSERT_EQ(taken.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(Lanes(taken.get().group), (std::vector<std::string>{"late"}));
}

TEST(WriteQueueTest, CloseWakesAWaitingWriter) {
  WriteQueue queue(1000);
  auto taken = std::async(std::launch::async, [&] { return queue.Take(std::nullopt); });
  queue.Close();
  ASSERT_EQ(taken.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(taken.get().closed);
}

TEST(WriteQueueTest, WhatWasQueuedBeforeCloseIsStillTakenThenClosed) {
  WriteQueue queue(1);
  queue.Push(Append("a", 1, 10));
  queue.Push(AbortWaitingRequest{"closing"});
  queue.Close();
  WriteQueue::Next next = queue.Take(std::nullopt);
  EXPECT_FALSE(next.closed);
  EXPECT_EQ(Lanes(next.group), (std::vector<std::string>{"a"}));
  next = queue.Take(std::nullopt);
  EXPECT_FALSE(next.closed);
  EXPECT_TRUE(next.alone);
  next = queue.Take(std::nullopt);
  EXPECT_TRUE(next.closed);
  EXPECT_TRUE(queue.Take(std::chrono::milliseconds(1)).closed);  // and stays so
}

TEST(SeqRangesTest, RangesThatOverlapOrTouchBecomeOne) {
  SeqRanges ranges;
  ranges.Add(10, 20);
  ranges.Add(30, 40);
  EXPECT_EQ(ranges.ranges().size(), 2u);
  ranges.Add(21, 29);  // touches both
  EXPECT_EQ(ranges.ranges(), (std::map<SeqNo, SeqNo>{{10, 40}}));
  ranges.Add(5, 12);  // overlaps the start
  ranges.Add(42, 50);  // a gap of one (41) stays a gap
  EXPECT_EQ(ranges.ranges(), (std::map<SeqNo, SeqNo>{{5, 40}, {42, 50}}));
  ranges.Add(1, 100);  // covers everything
  EXPECT_EQ(ranges.ranges(), (std::map<SeqNo, SeqNo>{{1, 100}}));
}

TEST(SeqRangesTest, RemoveSplitsTrimsAndDropsRanges) {
  SeqRanges ranges;
  ranges.Add(10, 20);
  ranges.Add(30, 40);
  ranges.Add(50, 60);
  ranges.Remove(15, 16);  // splits one
  EXPECT_EQ(ranges.ranges(), (std::map<SeqNo, SeqNo>{{10, 14}, {17, 20}, {30, 40}, {50, 60}}));
  ranges.Remove(19, 55);  // trims two ends, drops one whole
  EXPECT_EQ(ranges.ranges(), (std::map<SeqNo, SeqNo>{{10, 14}, {17, 18}, {56, 60}}));
  ranges.Remove(1, 9);  // nothing there
  ranges.Remove(61, 100);
  EXPECT_EQ(ranges.size(), 5u + 2u + 5u);
  ranges.Remove(10, 10);  // the first seq of a range
  ranges.Remove(60, 60);  // the last
  EXPECT_EQ(ranges.ranges(), (std::map<SeqNo, SeqNo>{{11, 14}, {17, 18}, {56, 59}}));
  ranges.Remove(0, ~SeqNo{0});
  EXPECT_TRUE(ranges.empty());
  EXPECT_EQ(ranges.size(), 0u);
}

TEST(SeqRangesTest, TheTopOfTheSeqSpaceDoesNotWrapAround) {
  const SeqNo top = ~SeqNo{0};
  SeqRanges ranges;
  ranges.Add(1, 1);
  ranges.Add(top - 1, top);
  EXPECT_EQ(ranges.ranges(), (std::map<SeqNo, SeqNo>{{1, 1}, {top - 1, top}}));
  EXPECT_EQ(ranges.EndOfRangeHolding(top), top);
  EXPECT_FALSE(ranges.Contains(top - 2));
  ranges.Add(2, top - 2);
  EXPECT_EQ(ranges.ranges(), (std::map<SeqNo, SeqNo>{{1, top}}));
  EXPECT_TRUE(ranges.Uncovered(1, top).empty());
}

TEST(SeqRangesTest, EndOfRangeHoldingAnswersOnlyInsideARange) {
  SeqRanges ranges;
  ranges.Add(10, 20);
  EXPECT_FALSE(ranges.EndOfRangeHolding(9));
  EXPECT_EQ(ranges.EndOfRangeHolding(10), 20u);
  EXPECT_EQ(ranges.EndOfRangeHolding(20), 20u);
  EXPECT_FALSE(ranges.EndOfRangeHolding(21));
  EXPECT_FALSE(SeqRanges().Contains(0));
}

TEST(SeqRangesTest, UncoveredIsWhatIsLeftOfTheAskedRange) {
  using Parts = std::vector<std::pair<SeqNo, SeqNo>>;
  SeqRanges ranges;
  EXPECT_EQ(ranges.Uncovered(1, 5), (Parts{{1, 5}}));
  ranges.Add(10, 20);
  ranges.Add(30, 40);
  EXPECT_EQ(ranges.Uncovered(1, 50), (Parts{{1, 9}, {21, 29}, {41, 50}}));
  EXPECT_EQ(ranges.Uncovered(15, 35), (Parts{{21, 29}}));
  EXPECT_EQ(ranges.Uncovered(12, 18), Parts{});
  EXPECT_EQ(ranges.Uncovered(20, 30), (Parts{{21, 29}}));
  EXPECT_EQ(ranges.Uncovered(21, 29), (Parts{{21, 29}}));
  EXPECT_EQ(ranges.Uncovered(5, 10), (Parts{{5, 9}}));
}

// Against a plain set of seqs: random adds, every answer the same.
TEST(SeqRangesTest, AgreesWithASetOfSeqsUnderRandomAdds) {
  std::mt19937 random(9);
  for (int round = 0; round < 200; ++round) {
    SeqRanges ranges;
    std::set<SeqNo> model;
    for (int add = 0; add < 12; ++add) {
      const SeqNo first = 1 + random() % 60, last = first + random() % 8;
      ranges.Add(first, last);
      for (SeqNo s = first; s <= last; ++s) model.insert(s);
    }
    std::optional<SeqNo> previous_end;
    for (const auto& [first, last] : ranges.ranges()) {
      ASSERT_LE(first, last);
      if (previous_end) {
        ASSERT_GT(first, *previous_end + 1) << "ranges that touch were not merged";
      }
      previous_end = last;
    }
    for (SeqNo s = 0; s < 75; ++s) ASSERT_EQ(ranges.Contains(s), model.count(s) > 0) << s;
    const SeqNo from = 1 + random() % 70, to = from + random() % 20;
    std::set<SeqNo> uncovered;
    for (const auto& [a, b] : ranges.Uncovered(from, to)) {
      for (SeqNo s = a; s <= b; ++s) uncovered.insert(s);
    }
    for (SeqNo s = from; s <= to; ++s) ASSERT_EQ(uncovered.count(s) > 0, model.count(s) == 0) << s;
    ASSERT_EQ(uncovered.size(), static_cast<size_t>(std::count_if(uncovered.begin(), uncovered.end(), [&](SeqNo s) {
                                  return s >= from && s <= to;
                                })));
  }
}

}  // namespace
}  // namespace zb
