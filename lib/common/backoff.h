#pragma once
// Capped exponential backoff with full jitter ("AWS full jitter"): the n-th
// delay is uniform in [0, min(max, initial * multiplier^n)], but never below
// `min_delay`. Not thread-safe; one instance per retry loop.

#include <chrono>
#include <cstdint>
#include <functional>
#include <random>

namespace zb {

struct BackoffOptions {
  std::chrono::milliseconds initial{200};    // ceiling of the first delay
  std::chrono::milliseconds max{30'000};     // cap of the ceiling
  double multiplier = 2.0;
  std::chrono::milliseconds min_delay{10};   // floor, so retries never spin
};

class Backoff {
 public:
  // `seed` makes the jitter reproducible in tests.
  explicit Backoff(const BackoffOptions& options, uint64_t seed = std::random_device{}());

  // Delay before the next attempt; grows the ceiling.
  std::chrono::milliseconds Next();
  // After a success: the next failure starts from `initial` again.
  void Reset() { attempt_ = 0; }
  int attempts() const { return attempt_; }

 private:
  BackoffOptions options_;
  std::mt19937_64 rng_;
  int attempt_ = 0;
};

}  // namespace zb
