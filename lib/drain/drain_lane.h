#pragma once
// One route's drain: reads the spool from the lane's lowest unacked seq,
// sends batches on a Zerobus stream within a bounded in-flight window, maps
// ACKs back to spool seqs and deletes only what an ACK covers. On any stream
// failure it rewinds to the lowest unacked seq and reconnects with capped,
// jittered exponential backoff, forever (architecture.md invariants 2-4, 8).
//
// Loop thread only: every method, and every callback it makes.

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "auth/token_source.h"
#include "common/backoff.h"
#include "drain/offset_window.h"
#include "metrics/metrics.h"
#include "spool/spool.h"
#include "zerobus/ingest_stream.h"

namespace zb {

struct DrainLaneOptions {
  std::string route;
  std::string table;
  bool proto = false;
  std::string descriptor_proto;
  uint32_t max_inflight_requests = 64;
  uint32_t max_batch_records = 1000;
  uint64_t max_batch_bytes = 2u << 20;
  // While requests are in flight, a batch with fewer than max_batch_records
  // waits up to this long for more records (an idle lane sends at once).
  std::chrono::milliseconds linger{5};
  std::chrono::milliseconds ack_timeout{60'000};
  std::chrono::milliseconds create_timeout{15'000};
  // Longest wait for in-flight ACKs after a CloseStreamSignal before the
  // stream is replaced anyway.
  std::chrono::milliseconds max_close_grace{10'000};
  BackoffOptions backoff;
};

enum class LaneState { kIdle, kConnecting, kStreaming, kRotating, kBackoff, kStopping, kStopped };
const char* LaneStateName(LaneState s);

class DrainLane : public std::enable_shared_from_this<DrainLane> {
 public:
  // All references must outlive the lane.
  DrainLane(boost::asio::io_context& loop, const DrainLaneOptions& options, Spool& spool,
            IngestStreamFactory& streams, TokenSource& tokens, Metrics& metrics);
  ~DrainLane();

  // Begins draining (connects at once if the spool holds records).
  void Start();
  // New records up to `last_seq` are durable in the spool.
  void OnAppended(SeqNo last_seq);
  // Stops sending, waits for in-flight ACKs, half-closes; `done` runs once
  // the stream is closed or Abort() is called. Unacked records stay spooled.
  void Stop(std::function<void()> done);
  // Cancels the stream at once (shutdown deadline passed).
  void Abort();

  LaneState state() const { return state_; }
  size_t inflight_requests() const { return window_.size(); }
  SeqNo acked_seq() const { return acked_seq_; }
  // A spool read or a linger wait is under way: more requests may follow
  // without any new event (tests wait for this to settle).
  bool busy_for_test() const { return read_in_flight_ || linger_armed_; }

 private:
  void Connect();
  void OnToken(uint64_t gen, absl::StatusOr<std::string> token);
  void OnStreamEvent(uint64_t gen, StreamEvent ev);
  void OnCreated(const std::string& stream_id);
  void OnAck(int64_t offset);
  void OnCloseSignal(std::chrono::milliseconds grace);
  void Pump();
  void OnRead(uint64_t gen, absl::StatusOr<std::vector<SpoolRecord>> records);
  void NewGeneration();
  void FinishRotation();
  void Fail(const absl::Status& status);
  void ScheduleReconnect(std::chrono::milliseconds delay);
  void ArmAckTimer();
  void CloseForStop();
  void FinishStop();
  void PublishGauges();

  boost::asio::io_context& loop_;
  const DrainLaneOptions options_;
  Spool& spool_;
  IngestStreamFactory& streams_;
  TokenSource& tokens_;
  Metrics& metrics_;

  LaneState state_ = LaneState::kIdle;
  uint64_t gen_ = 0;  // bumps with every stream; stale events are dropped
  std::unique_ptr<IngestStream> stream_;
  std::string stream_id_;
  OffsetWindow window_;
  SeqNo acked_seq_ = 0;      // every seq <= this is acked (deleted or being deleted)
  SeqNo next_read_seq_ = 1;  // next seq to send on this stream
  SeqNo durable_seq_ = 0;    // highest seq known to be in the spool
  Backoff backoff_;
  boost::asio::steady_timer retry_timer_;
  boost::asio::steady_timer create_timer_;
  boost::asio::steady_timer ack_timer_;
  boost::asio::steady_timer grace_timer_;
  boost::asio::steady_timer linger_timer_;
  bool read_in_flight_ = false;  // a spool read for this generation is under way
  bool linger_armed_ = false;
  bool linger_expired_ = false;  // send the partial batch now
  std::function<void()> stop_done_;
};

}  // namespace zb
