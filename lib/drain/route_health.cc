#include "drain/route_health.h"

namespace zb {

const char* FailureKindName(FailureKind kind) {
  switch (kind) {
    case FailureKind::kToken: return "token";
    case FailureKind::kConnect: return "connect";
    case FailureKind::kTls: return "tls";
    case FailureKind::kStream: return "stream";
  }
  return "?";
}

RouteHealth::Report RouteHealth::Failed(FailureKind kind, std::string message, Clock::time_point now,
                                        int64_t now_unix_us) {
  FailureTally& t = tallies_[static_cast<size_t>(kind)];
  ++t.count;
  t.last_unix_us = now_unix_us;
  t.last_message = std::move(message);
  const bool new_kind = outage_failures_ > 0 && kind != last_kind_;
  if (outage_failures_ == 0 || new_kind) t.explanation.clear();  // it was about an earlier state
  if (outage_failures_ == 0) outage_start_ = now;
  ++outage_failures_;
  last_kind_ = kind;
  if (outage_failures_ <= loud_failures_ || new_kind) {
    last_report_ = now;
    return Report::kLoud;
  }
  if (now - last_report_ >= heartbeat_) {
    last_report_ = now;
    return Report::kHeartbeat;
  }
  return Report::kQuiet;
}

bool RouteHealth::Succeeded() {
  const bool ended = outage_failures_ > 0;
  outage_failures_ = 0;
  return ended;
}

}  // namespace zb
