#pragma once
// Rate-limited logging of a condition that can repeat very fast (a failing
// accept, a refused peer, a dropped record): the first occurrence is logged,
// then at most one summary line per interval, which says how many
// occurrences were not logged in between. A host that makes the condition
// happen thousands of times a second gets a line every `interval`, never a
// line per occurrence.
//
//   RateLimitedLog accept_log(std::chrono::seconds(5));
//   uint64_t suppressed = 0;
//   if (accept_log.ShouldLog(std::chrono::steady_clock::now(), &suppressed)) {
//     spdlog::warn("accept failed: {} ({} more since the last report)", ec.message(), suppressed);
//   }
//
// Thread-safe: any thread may call any method (a mutex guards the counters;
// the calls are meant for error paths, not per-record hot paths).

#include <chrono>
#include <cstdint>
#include <mutex>

namespace zb {

class RateLimitedLog {
 public:
  using Clock = std::chrono::steady_clock;

  // `interval`: the least time between two logged occurrences.
  explicit RateLimitedLog(Clock::duration interval) : interval_(interval) {}
  RateLimitedLog(const RateLimitedLog&) = delete;
  RateLimitedLog& operator=(const RateLimitedLog&) = delete;

  // Counts one occurrence at `now`. Returns true when the caller should log
  // it: the first occurrence ever, and then the first one at least
  // `interval` after the last logged one. When it returns true,
  // `*suppressed_since_last` (may be null) is set to the number of
  // occurrences counted but not logged since the last logged one, and that
  // count starts over. When it returns false, the occurrence is counted and
  // `*suppressed_since_last` is left alone.
  bool ShouldLog(Clock::time_point now, uint64_t* suppressed_since_last) {
    std::lock_guard<std::mutex> lock(mu_);
    ++total_;
    if (logged_once_ && now - last_logged_ < interval_) {
      ++suppressed_;
      return false;
    }
    logged_once_ = true;
    last_logged_ = now;
    if (suppressed_since_last != nullptr) *suppressed_since_last = suppressed_;
    suppressed_ = 0;
    return true;
  }

  // Occurrences counted but not logged since the last logged one (e.g. for
  // a closing "N more" line when the condition ends).
  uint64_t suppressed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return suppressed_;
  }

  // Every occurrence ever counted, logged or not.
  uint64_t total() const {
    std::lock_guard<std::mutex> lock(mu_);
    return total_;
  }

 private:
  const Clock::duration interval_;
  mutable std::mutex mu_;
  bool logged_once_ = false;         // guarded by mu_
  Clock::time_point last_logged_{};  // guarded by mu_
  uint64_t suppressed_ = 0;          // guarded by mu_
  uint64_t total_ = 0;               // guarded by mu_
};

}  // namespace zb
