#pragma once
// Which of one lane's seqs are done, out on a stream, or waiting to be
// sent, when several streams drain the lane (architecture.md invariants
// 2-4). Streams take contiguous spans; each ACK marks its span done, in any
// order; a stream that fails gives its unacked spans back, and they are
// sent again (lowest first) before fresh records. What is done past the
// lowest unfinished seq is remembered until the gap below it closes: the
// cursor's memory is bounded by the spans in flight, not by the backlog.
//
// Pure and not thread-safe: one lane's, on its loop.

#include <cstdint>
#include <optional>

#include "spool/seq_ranges.h"
#include "spool/spool.h"

namespace zb {

class LaneCursor {
 public:
  // Every seq <= done_up_to is done (acked, dead-lettered or dropped).
  explicit LaneCursor(SeqNo done_up_to = 0);

  // Where the next read starts, and the last seq it may take: a span a
  // failed stream gave back (the lowest), else the fresh records from the
  // first never sent (last: no bound; the read ends where the spool does).
  struct Span {
    SeqNo first = 0;
    SeqNo last = 0;
    bool resend = false;  // a span given back
  };
  // nullopt: nothing waits to be sent (every seq up to `durable` is out or
  // done).
  std::optional<Span> Next(SeqNo durable) const;

  // A stream took [first, last] (read from a span Next gave).
  void Take(SeqNo first, SeqNo last);
  // [first, last] is done: acked, or found gone from the spool. Returns
  // whether done_up_to moved.
  bool Done(SeqNo first, SeqNo last);
  // A stream ended without ACKs for [first, last]: sent again.
  void GiveBack(SeqNo first, SeqNo last);
  // Records up to `seq` left the spool without an ACK (drop_oldest, or a
  // delete of another instance): done.
  void SkipTo(SeqNo seq);

  // Every seq <= this is done.
  SeqNo done_up_to() const { return done_up_to_; }
  // The highest seq ever taken.
  SeqNo last_taken() const { return next_fresh_ - 1; }
  // Seqs up to `durable` that are neither done nor out.
  uint64_t waiting(SeqNo durable) const;
  // Seqs taken and not yet done or given back.
  uint64_t out() const;
  // Ranges the cursor remembers (done above done_up_to, given back): its
  // memory.
  size_t ranges_held() const { return done_.ranges().size() + given_back_.ranges().size(); }

 private:
  void Advance();

  SeqNo done_up_to_;
  SeqNo next_fresh_;    // first seq never taken
  SeqRanges done_;      // done seqs above done_up_to_
  SeqRanges given_back_;  // taken, then given back: to send again
};

}  // namespace zb
