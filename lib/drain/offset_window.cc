#include "drain/offset_window.h"

#include "absl/strings/str_cat.h"

namespace zb {

void OffsetWindow::Reset() {
  inflight_.clear();
  next_offset_ = 0;
  last_acked_ = -1;
  records_ = 0;
}

int64_t OffsetWindow::Add(SeqNo first_seq, SeqNo last_seq, uint32_t records, uint64_t bytes,
                          int64_t oldest_append_us) {
  InflightRequest r{next_offset_, first_seq, last_seq, records, bytes, oldest_append_us};
  inflight_.push_back(r);
  records_ += records;
  return next_offset_++;
}

absl::StatusOr<AckedRange> OffsetWindow::Ack(int64_t ack) {
  const int64_t last_sent = next_offset_ - 1;
  if (ack < last_acked_ || ack > last_sent) {
    return absl::InvalidArgumentError(absl::StrCat("invalid durability ACK offset ", ack, ": expected a value in [",
                                                   last_acked_, ", ", last_sent, "]"));
  }
  AckedRange out;
  while (!inflight_.empty() && inflight_.front().offset <= ack) {
    out.last_seq = inflight_.front().last_seq;
    out.records += inflight_.front().records;
    records_ -= inflight_.front().records;
    out.requests.push_back(inflight_.front());
    inflight_.pop_front();
  }
  last_acked_ = ack;
  return out;
}

}  // namespace zb
