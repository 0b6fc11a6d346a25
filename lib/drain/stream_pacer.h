#pragma once
// Paces one stream under the service's per-stream quota (zerobus-protocol.md
// §6: rows and bytes per second; a stream past it is ended with
// RESOURCE_EXHAUSTED and its unacked requests are sent again). Two token
// buckets, rows and request bytes, each filled at the stream's pace and
// holding half a second of it: the service measures against a second's
// worth, so a burst delayed on its way (a retransmit, a busy loop) still
// fits. The pace starts at the quota; a RESOURCE_EXHAUSTED halves it (to no
// less than a 64th), and every second after that gives a twentieth of the
// quota back (multiplicative decrease, additive increase), so a server whose
// real quota is lower than the configured one is found without tripping it
// again and again.
//
// A request must fit in the buckets (max_rows, max_bytes): the caller builds
// no larger one. Not thread-safe: one lane's, on its loop. Times come from
// the caller (MonotonicClock in the daemon), so tests drive them.

#include <cstdint>

#include "common/clock.h"

namespace zb {

struct StreamQuota {
  uint64_t rows_per_second = 15'000;
  uint64_t bytes_per_second = 100'000'000;

  bool operator==(const StreamQuota&) const = default;
};

class StreamPacer {
 public:
  using TimePoint = MonotonicClock::time_point;
  using Duration = MonotonicClock::duration;

  // REQUIRES: both rates at least 1.
  StreamPacer(StreamQuota quota, TimePoint now);

  // How long a request of `rows` and `bytes` must wait before it goes:
  // zero means now, and its cost is taken from the buckets. A request
  // larger than the buckets (past max_rows or max_bytes) goes once they are
  // full and leaves them in debt; it is never sent before.
  Duration Delay(uint64_t rows, uint64_t bytes, TimePoint now);

  // The largest request that fits in the buckets at the current pace (at
  // least 1 row and 1 byte).
  uint64_t max_rows() const;
  uint64_t max_bytes() const;

  // The service ended the stream with RESOURCE_EXHAUSTED: halves the pace
  // and empties the buckets.
  void Throttled(TimePoint now);

  // The pace as a fraction of the quota (1: the quota itself).
  double pace() const { return pace_; }

 private:
  void Refill(TimePoint now);
  double row_capacity() const;
  double byte_capacity() const;

  const StreamQuota quota_;
  double pace_ = 1.0;
  double rows_ = 0, bytes_ = 0;  // tokens; negative: debt
  TimePoint filled_at_;
};

}  // namespace zb
