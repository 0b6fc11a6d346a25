#include "common/backoff.h"

#include <algorithm>
#include <cmath>

namespace zb {

Backoff::Backoff(const BackoffOptions& options, uint64_t seed) : options_(options), rng_(seed) {}

std::chrono::milliseconds Backoff::Next() {
  const double ceiling_ms =
      std::min<double>(static_cast<double>(options_.max.count()),
                       static_cast<double>(options_.initial.count()) *
                           std::pow(options_.multiplier, std::min(attempt_, 62)));
  ++attempt_;
  std::uniform_real_distribution<double> dist(0.0, ceiling_ms);
  const auto delay = static_cast<int64_t>(dist(rng_));
  return std::chrono::milliseconds(std::max<int64_t>(delay, options_.min_delay.count()));
}

}  // namespace zb
