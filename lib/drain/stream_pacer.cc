#include "drain/stream_pacer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace zb {
namespace {

constexpr double kSlowestPace = 1.0 / 64;
constexpr double kPaceRecoveredPerSecond = 1.0 / 20;

}  // namespace

StreamPacer::StreamPacer(StreamQuota quota, TimePoint now)
    : quota_(quota),
      rows_(static_cast<double>(quota.rows_per_second)),
      bytes_(static_cast<double>(quota.bytes_per_second)),
      filled_at_(now) {}

void StreamPacer::Refill(TimePoint now) {
  if (now <= filled_at_) return;
  const double seconds = std::chrono::duration<double>(now - filled_at_).count();
  filled_at_ = now;
  // The buckets fill at the pace of the interval's start, then the pace
  // recovers: a bound on what the service saw, never above it.
  rows_ = std::min(rows_ + seconds * pace_ * quota_.rows_per_second, pace_ * quota_.rows_per_second);
  bytes_ = std::min(bytes_ + seconds * pace_ * quota_.bytes_per_second, pace_ * quota_.bytes_per_second);
  pace_ = std::min(1.0, pace_ + seconds * kPaceRecoveredPerSecond);
}

StreamPacer::Duration StreamPacer::Delay(uint64_t rows, uint64_t bytes, TimePoint now) {
  Refill(now);
  const double row_rate = pace_ * quota_.rows_per_second, byte_rate = pace_ * quota_.bytes_per_second;
  // What each bucket must hold first: the cost, or all it can hold.
  const double need_rows = std::min<double>(rows, row_rate), need_bytes = std::min<double>(bytes, byte_rate);
  const double wait_s = std::max({0.0, (need_rows - rows_) / row_rate, (need_bytes - bytes_) / byte_rate});
  if (wait_s > 0) {
    // At least a microsecond: a wait that rounds to zero would spin.
    return std::max<Duration>(std::chrono::microseconds(1),
                              std::chrono::duration_cast<Duration>(std::chrono::duration<double>(wait_s)));
  }
  rows_ -= static_cast<double>(rows);
  bytes_ -= static_cast<double>(bytes);
  return Duration::zero();
}

void StreamPacer::Throttled(TimePoint now) {
  Refill(now);
  pace_ = std::max(kSlowestPace, pace_ / 2);
  rows_ = std::min(rows_, 0.0);
  bytes_ = std::min(bytes_, 0.0);
}

}  // namespace zb
