#include "drain/lane_cursor.h"

#include <algorithm>

namespace zb {

LaneCursor::LaneCursor(SeqNo done_up_to) : done_up_to_(done_up_to), next_fresh_(done_up_to + 1) {}

std::optional<LaneCursor::Span> LaneCursor::Next(SeqNo durable) const {
  if (!given_back_.empty()) {
    const auto& [first, last] = *given_back_.ranges().begin();
    return Span{first, last, true};
  }
  if (next_fresh_ > durable) return std::nullopt;
  return Span{next_fresh_, ~SeqNo{0}, false};
}

void LaneCursor::Take(SeqNo first, SeqNo last) {
  given_back_.Remove(first, last);
  next_fresh_ = std::max(next_fresh_, last + 1);
}

bool LaneCursor::Done(SeqNo first, SeqNo last) {
  if (last <= done_up_to_) return false;
  first = std::max(first, done_up_to_ + 1);
  given_back_.Remove(first, last);
  next_fresh_ = std::max(next_fresh_, last + 1);
  done_.Add(first, last);
  const SeqNo before = done_up_to_;
  Advance();
  return done_up_to_ != before;
}

void LaneCursor::GiveBack(SeqNo first, SeqNo last) {
  first = std::max(first, done_up_to_ + 1);
  last = std::min(last, next_fresh_ - 1);  // never taken: not out
  if (first > last) return;
  // What is done meanwhile (another stream acked a copy) stays done.
  for (const auto& [from, to] : done_.Uncovered(first, last)) given_back_.Add(from, to);
}

void LaneCursor::SkipTo(SeqNo seq) {
  if (seq <= done_up_to_) return;
  Done(done_up_to_ + 1, seq);
}

void LaneCursor::Advance() {
  while (!done_.empty()) {
    const auto& [first, last] = *done_.ranges().begin();
    if (first > done_up_to_ + 1) return;
    done_up_to_ = std::max(done_up_to_, last);
    done_.Remove(first, last);
  }
}

uint64_t LaneCursor::waiting(SeqNo durable) const {
  const uint64_t fresh = durable >= next_fresh_ ? durable - next_fresh_ + 1 : 0;
  return fresh + given_back_.size();
}

uint64_t LaneCursor::out() const {
  const uint64_t taken = next_fresh_ - 1 - done_up_to_;  // above the low mark
  return taken - std::min(taken, done_.size() + given_back_.size());
}

}  // namespace zb
