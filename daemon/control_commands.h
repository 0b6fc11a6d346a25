#pragma once
// The control socket's requests and replies (JSON, one line each): parsing
// requests into typed commands and rendering replies. The daemon executes
// them. Request forms:
//   {"cmd":"status"}
//   {"cmd":"dlq.list", "route":R?, "from_id":N?, "limit":N?, "payloads":B?}
//   {"cmd":"dlq.replay"|"dlq.purge", "route":R? | "ids":[N,...]? | "all":true}
//   {"cmd":"resume"}                      (un-park every parked route)
// Replies: {"ok":true, ...} or {"ok":false, "error":"what was wrong"}.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "spool/dead_letters.h"

namespace zb {

struct ControlCommand {
  enum class Kind { kStatus, kDlqList, kDlqReplay, kDlqPurge, kResume } kind = Kind::kStatus;
  DeadLetterFilter filter;
  uint64_t from_id = 0;
  size_t limit = 100;
  bool payloads = false;
};

// InvalidArgumentError naming what is wrong with the request.
absl::StatusOr<ControlCommand> ParseControlCommand(const std::string& line);

std::string ControlError(const std::string& message);

// {"ok":true,"entries":[...],"next_id":N} (next_id 0: no more).
std::string RenderDeadLetters(const std::vector<DeadLetter>& entries, bool payloads, uint64_t next_id);

// The failures of one kind a lane has seen.
struct LaneFailure {
  std::string kind;  // "token", "connect", "tls", "stream"
  uint64_t count = 0;
  int64_t last_unix_us = 0;
  std::string last_message;
  std::string explanation;  // why, in plain words, when known
};

// One lane's state, as `status` reports it.
struct LaneStatus {
  std::string lane;   // the spool lane ("readings", or "readings@2" after a change of table)
  std::string route;
  std::string table;
  std::string state;
  std::string parked_reason;
  bool configured = true;  // false: the route left the config; its records still drain
  uint64_t spooled = 0;
  uint64_t bytes = 0;
  uint64_t inflight_requests = 0;   // all of the lane's streams
  uint64_t open_streams = 0;
  uint64_t max_streams = 1;
  std::vector<LaneFailure> failures;  // kinds seen at least once
  uint64_t failing_attempts = 0;      // failed attempts in a row now; 0: working (or idle)
  double oldest_age_seconds = 0;      // of the oldest spooled record (0 when none)
};

// A route whose schema is its table, while the table was never read: it has
// no lane yet and refuses records.
struct WaitingRoute {
  std::string route;
  std::string table;
  std::string reason;  // why the last read failed ("" before the first read ends)
};

struct DaemonStatus {
  bool ready = false;
  std::vector<LaneStatus> lanes;
  std::vector<WaitingRoute> waiting_routes;
  uint64_t spool_bytes = 0;
  uint64_t spool_max_bytes = 0;
  bool spool_full = false;
  DeadLetterStats dead_letters;
};

std::string RenderStatus(const DaemonStatus& status);

// A reply that carries one count, e.g. {"ok":true,"replayed":3}.
std::string RenderCount(const std::string& key, uint64_t n, const std::string& note = "");

}  // namespace zb
