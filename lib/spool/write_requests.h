#pragma once
// What the spool's writer thread is asked to do: one type per request, each
// with the fields it needs and none reused for another meaning. Appends and
// range deletes commit together in group commits (GroupRequest); the others
// commit alone, in queue order. Internal to the spool; RocksDB-free.

#include <string>
#include <variant>

#include "absl/status/status.h"
#include "spool/dead_letters.h"
#include "spool/spool.h"

namespace zb {

struct AppendRequest {
  std::string lane;
  Spool::Records records;
  Spool::AppendCallback done;
  bool wait_for_room = false;  // a full spool parks it (in order) instead of refusing it
  // Set by the commits that handle it.
  bool parked = false;      // it waits for room
  bool was_parked = false;  // it waited for room, and is tried again
  absl::Status status;
  AppendResult result;
};

struct DeleteRequest {
  std::string lane;
  SeqNo first = 1;
  SeqNo last = 0;
  Spool::DeleteCallback done;
  // Set by the commit: the space guard held it (committed once it fits).
  bool held = false;
  absl::Status status;
};

struct DestinationRequest {
  std::string lane;
  std::string destination;
  Spool::DeleteCallback done;
};

struct DeadLetterMoveRequest {
  std::string lane;
  SeqNo seq = 0;
  DeadLetterInfo info;
  DeadLetters::MoveCallback done;
};

struct DeadLetterReplayRequest {
  DeadLetterFilter filter;
  DeadLetters::ReplayCallback done;
};

struct DeadLetterPurgeRequest {
  DeadLetterFilter filter;
  DeadLetters::PurgeCallback done;
};

// Fails every append waiting for room with UnavailableError(reason).
struct AbortWaitingRequest {
  std::string reason;
};

using GroupRequest = std::variant<AppendRequest, DeleteRequest>;
using WriteRequest = std::variant<AppendRequest, DeleteRequest, DestinationRequest, DeadLetterMoveRequest,
                                  DeadLetterReplayRequest, DeadLetterPurgeRequest, AbortWaitingRequest>;

inline const std::string& LaneOf(const GroupRequest& request) {
  return std::visit([](const auto& r) -> const std::string& { return r.lane; }, request);
}

}  // namespace zb
