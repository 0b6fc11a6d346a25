#pragma once
// The daemon's monotonic clock for timeouts and timers: the steady clock
// plus an offset that only tests move (AdvanceForTest), so a test lets the
// minutes of an ACK timeout or a stuck-stream check pass without waiting for
// them. Asio timers of this clock (MonotonicTimer) fire as its time passes
// (after an advance, WakeTimersForTest). In the daemon the offset stays 0.
// Thread-safe.

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <atomic>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>

namespace zb {

struct MonotonicClock {
  using duration = std::chrono::steady_clock::duration;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<MonotonicClock>;
  static constexpr bool is_steady = true;

  static time_point now() noexcept {
    return time_point(std::chrono::steady_clock::now().time_since_epoch() + duration(Offset().load()));
  }
  // Moves this clock (never back) for every user in the process. Tests only.
  static void AdvanceForTest(duration by) { Offset() += by.count(); }

 private:
  static std::atomic<rep>& Offset() {
    static std::atomic<rep> offset{0};
    return offset;
  }
};

using MonotonicTimer = boost::asio::basic_waitable_timer<MonotonicClock>;

// After AdvanceForTest: makes `loop` look at its timers again. Asio arms a
// timerfd for its earliest timer in real time and re-arms it only when a
// timer becomes the earliest one; a timer that expired long ago is.
inline void WakeTimersForTest(boost::asio::io_context& loop) {
  auto nudge = std::make_shared<MonotonicTimer>(loop);
  nudge->expires_at(MonotonicClock::time_point::min());
  nudge->async_wait([nudge](const boost::system::error_code&) {});
}

}  // namespace zb
