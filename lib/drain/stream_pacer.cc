#include "drain/stream_pacer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace zb {
namespace {

constexpr double kSlowestPace = 1.0 / 64;
constexpr double kPaceRecoveredPerSecond = 1.0 / 20;
// What the buckets hold, in seconds of the pace.
constexpr double kBurstSeconds = 0.5;
// The shortest wait: a wait that rounds to nothing would spin the loop.
constexpr std::chrono::milliseconds kShortestWait{1};

}  // namespace

StreamPacer::StreamPacer(StreamQuota quota, TimePoint now) : quota_(quota), filled_at_(now) {
  rows_ = row_capacity();
  bytes_ = byte_capacity();
}

double StreamPacer::row_capacity() const { return kBurstSeconds * pace_ * static_cast<double>(quota_.rows_per_second); }
double StreamPacer::byte_capacity() const {
  return kBurstSeconds * pace_ * static_cast<double>(quota_.bytes_per_second);
}

uint64_t StreamPacer::max_rows() const { return std::max<uint64_t>(1, static_cast<uint64_t>(row_capacity())); }
uint64_t StreamPacer::max_bytes() const { return std::max<uint64_t>(1, static_cast<uint64_t>(byte_capacity())); }

void StreamPacer::Refill(TimePoint now) {
  if (now <= filled_at_) return;
  const double seconds = std::chrono::duration<double>(now - filled_at_).count();
  filled_at_ = now;
  // The tokens of the interval at its starting pace; then the pace
  // recovers, and the buckets hold what the new pace allows (never less
  // than before, so a request that fit still fits).
  rows_ += seconds * pace_ * static_cast<double>(quota_.rows_per_second);
  bytes_ += seconds * pace_ * static_cast<double>(quota_.bytes_per_second);
  pace_ = std::min(1.0, pace_ + seconds * kPaceRecoveredPerSecond);
  rows_ = std::min(rows_, row_capacity());
  bytes_ = std::min(bytes_, byte_capacity());
}

StreamPacer::Duration StreamPacer::Delay(uint64_t rows, uint64_t bytes, TimePoint now) {
  Refill(now);
  const double row_rate = pace_ * static_cast<double>(quota_.rows_per_second);
  const double byte_rate = pace_ * static_cast<double>(quota_.bytes_per_second);
  // What each bucket must hold first: the cost, or all it can hold.
  const double need_rows = std::min<double>(static_cast<double>(rows), row_capacity());
  const double need_bytes = std::min<double>(static_cast<double>(bytes), byte_capacity());
  const double wait_s = std::max({0.0, (need_rows - rows_) / row_rate, (need_bytes - bytes_) / byte_rate});
  if (wait_s > 0) {
    return std::max<Duration>(kShortestWait,
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
