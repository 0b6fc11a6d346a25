#pragma once
// A route's failures by kind (token, connect, TLS, stream) and how loudly to
// report each one, so a long outage neither floods the log nor goes quiet:
// the first failures of an outage and every change of kind are said at
// once (a kind said less than an interval ago is not news again); after
// that one heartbeat line per interval says the route is still failing; a
// success ends the outage. Pure bookkeeping: the caller logs and
// counts metrics. Loop thread only (one per lane), like the lane.

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/clock.h"

namespace zb {

enum class FailureKind {
  kToken,    // no OAuth token (endpoint unreachable, refused, bad reply)
  kConnect,  // no connection to the Zerobus endpoint (refused, unreachable, DNS, dead)
  kTls,      // the TLS handshake with the endpoint failed (certificate, CA, host name)
  kStream,   // the stream was refused, broken or timed out once connected
};
inline constexpr std::array<FailureKind, 4> kFailureKinds = {FailureKind::kToken, FailureKind::kConnect,
                                                             FailureKind::kTls, FailureKind::kStream};
// "token", "connect", "tls", "stream": metric labels and status keys.
const char* FailureKindName(FailureKind kind);

struct FailureTally {
  uint64_t count = 0;        // since the daemon started
  int64_t last_unix_us = 0;  // wall clock of the last one; 0: never
  std::string last_message;
  // Why, in the operator's words, when known (a connect or TLS failure's
  // explanation); kept while failures of this kind go on.
  std::string explanation;
};

class RouteHealth {
 public:
  using Clock = MonotonicClock;
  // How a failure should be reported.
  enum class Report {
    kLoud,       // the outage's first failures, or a new kind of failure: warn
    kHeartbeat,  // the interval has passed since the last line: warn, with the outage so far
    kQuiet,      // debug only
  };

  // `heartbeat`: the least time between two lines about one outage once it
  // is no longer new. `loud_failures`: how many failures of an outage are
  // all reported.
  explicit RouteHealth(Clock::duration heartbeat, uint32_t loud_failures = 3)
      : heartbeat_(heartbeat), loud_failures_(loud_failures) {}

  Report Failed(FailureKind kind, std::string message, Clock::time_point now, int64_t now_unix_us);
  // Sets the explanation of `kind`'s failures (it came later, off the loop).
  void Explain(FailureKind kind, std::string explanation) {
    tallies_[static_cast<size_t>(kind)].explanation = std::move(explanation);
  }
  // The route works (a stream opened, or an ACK came). Returns true when
  // that ends an outage (the caller says it recovered).
  bool Succeeded();

  const FailureTally& tally(FailureKind kind) const { return tallies_[static_cast<size_t>(kind)]; }
  bool failing() const { return outage_failures_ > 0; }
  // The current outage (valid while failing()).
  uint64_t outage_failures() const { return outage_failures_; }
  Clock::time_point outage_start() const { return outage_start_; }
  FailureKind last_kind() const { return last_kind_; }

 private:
  const Clock::duration heartbeat_;
  const uint32_t loud_failures_;
  std::array<FailureTally, kFailureKinds.size()> tallies_;
  uint64_t outage_failures_ = 0;
  Clock::time_point outage_start_;
  Clock::time_point last_report_;
  std::array<std::optional<Clock::time_point>, kFailureKinds.size()> kind_reported_;  // in this outage
  FailureKind last_kind_ = FailureKind::kStream;
};

}  // namespace zb
