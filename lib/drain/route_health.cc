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
  if (outage_failures_ == 0) {
    outage_start_ = now;
    for (auto& at : kind_reported_) at.reset();
    for (auto& tally : tallies_) tally.explanation.clear();  // about an earlier outage
  }
  ++outage_failures_;
  last_kind_ = kind;
  // A change of kind is news, unless this kind was said a moment ago (a
  // failure that flips between two kinds is not said per attempt).
  auto& kind_reported = kind_reported_[static_cast<size_t>(kind)];
  const bool kind_is_news = !kind_reported.has_value() || now - *kind_reported >= heartbeat_;
  if (outage_failures_ <= loud_failures_ || (new_kind && kind_is_news)) {
    last_report_ = now;
    kind_reported = now;
    return Report::kLoud;
  }
  if (now - last_report_ >= heartbeat_) {
    last_report_ = now;
    kind_reported = now;
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
