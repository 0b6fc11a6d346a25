#pragma once
// The in-flight window of one stream: wire offset -> spool seqs. Wire offsets
// restart at 0 on every EphemeralStream call; spool seqs are stable. Every ACK
// is validated against what was sent (architecture.md, "two offset spaces").

#include <cstdint>
#include <deque>

#include "absl/status/statusor.h"
#include "spool/spool.h"

namespace zb {

struct InflightRequest {
  int64_t offset = 0;
  SeqNo first_seq = 0;
  SeqNo last_seq = 0;
  uint32_t records = 0;
  uint64_t bytes = 0;
  int64_t oldest_append_us = 0;
};

// What an ACK released.
struct AckedRange {
  SeqNo last_seq = 0;            // delete the spool up to here
  uint64_t records = 0;
  std::deque<InflightRequest> requests;  // the requests it covered, in order
};

// Not thread-safe; owned by one drain lane on the loop thread.
class OffsetWindow {
 public:
  // Forgets everything: a new call starts at wire offset 0.
  void Reset();
  // Records a request about to be sent; returns its wire offset.
  int64_t Add(SeqNo first_seq, SeqNo last_seq, uint32_t records, uint64_t bytes, int64_t oldest_append_us);
  // Applies a cumulative ACK. It must lie in [last_acked, last_sent]; a repeat
  // of last_acked releases nothing. Anything else is a protocol error
  // (InvalidArgument) and changes nothing.
  absl::StatusOr<AckedRange> Ack(int64_t ack_up_to_offset);

  size_t size() const { return inflight_.size(); }
  // The oldest unacked request. REQUIRES: !empty().
  const InflightRequest& front() const { return inflight_.front(); }
  bool empty() const { return inflight_.empty(); }
  // The unacked requests, oldest first.
  const std::deque<InflightRequest>& requests() const { return inflight_; }
  uint64_t records() const { return records_; }
  int64_t last_acked() const { return last_acked_; }
  int64_t next_offset() const { return next_offset_; }

 private:
  std::deque<InflightRequest> inflight_;
  int64_t next_offset_ = 0;
  int64_t last_acked_ = -1;
  uint64_t records_ = 0;
};

}  // namespace zb
