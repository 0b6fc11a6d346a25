#include "drain/drain_lane.h"

#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace asio = boost::asio;

const char* LaneStateName(LaneState s) {
  switch (s) {
    case LaneState::kIdle: return "idle";
    case LaneState::kConnecting: return "connecting";
    case LaneState::kStreaming: return "streaming";
    case LaneState::kRotating: return "rotating";
    case LaneState::kBackoff: return "backoff";
    case LaneState::kStopping: return "stopping";
    case LaneState::kStopped: return "stopped";
  }
  return "?";
}

namespace {
int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

DrainLane::DrainLane(asio::io_context& loop, const DrainLaneOptions& options, Spool& spool,
                     IngestStreamFactory& streams, TokenSource& tokens, Metrics& metrics)
    : loop_(loop),
      options_(options),
      spool_(spool),
      streams_(streams),
      tokens_(tokens),
      metrics_(metrics),
      backoff_(options.backoff),
      retry_timer_(loop),
      create_timer_(loop),
      ack_timer_(loop),
      grace_timer_(loop),
      linger_timer_(loop) {
  const LaneStats stats = spool_.Stats(options_.route);
  acked_seq_ = stats.deleted_up_to;
  next_read_seq_ = acked_seq_ + 1;
  durable_seq_ = stats.next_seq - 1;
}

DrainLane::~DrainLane() { stream_.reset(); }

void DrainLane::Start() {
  if (state_ == LaneState::kIdle && durable_seq_ > acked_seq_) Connect();
}

void DrainLane::OnAppended(SeqNo last_seq) {
  durable_seq_ = std::max(durable_seq_, last_seq);
  if (state_ == LaneState::kIdle) Connect();
  else if (state_ == LaneState::kStreaming) Pump();
}

void DrainLane::Connect() {
  state_ = LaneState::kConnecting;
  NewGeneration();
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  // The whole open (token + create reply) is bounded by create_timeout.
  create_timer_.expires_after(options_.create_timeout);
  create_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->gen_ != gen || self->state_ != LaneState::kConnecting) return;
    self->Fail(absl::DeadlineExceededError("stream creation timed out"));
  });
  tokens_.GetToken(options_.table, [weak, gen, &loop = loop_](absl::StatusOr<std::string> token) {
    asio::post(loop, [weak, gen, token = std::move(token)]() mutable {
      if (auto self = weak.lock()) self->OnToken(gen, std::move(token));
    });
  });
}

void DrainLane::OnToken(uint64_t gen, absl::StatusOr<std::string> token) {
  if (gen != gen_ || state_ != LaneState::kConnecting) return;
  if (!token.ok()) {
    metrics_.TokenFetchFailure();
    Fail(absl::Status(token.status().code(), absl::StrCat("OAuth token: ", token.status().message())));
    return;
  }
  StreamOpenParams params;
  params.table = options_.table;
  params.token = std::move(*token);
  params.proto = options_.proto;
  params.descriptor_proto = options_.descriptor_proto;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  window_.Reset();
  next_read_seq_ = acked_seq_ + 1;
  stream_ = streams_.Open(params, [weak, gen](StreamEvent ev) {
    if (auto self = weak.lock()) self->OnStreamEvent(gen, std::move(ev));
  });
}

void DrainLane::OnStreamEvent(uint64_t gen, StreamEvent ev) {
  if (gen != gen_) return;
  if (ev.kind != StreamEvent::Kind::kWriteDone && !window_.empty()) ArmAckTimer();
  switch (ev.kind) {
    case StreamEvent::Kind::kCreated:
      if (state_ != LaneState::kConnecting) {
        Fail(absl::InternalError("unexpected second create_stream_response"));
        return;
      }
      OnCreated(ev.text);
      return;
    case StreamEvent::Kind::kAck:
      if (state_ == LaneState::kConnecting) {
        Fail(absl::InternalError("ACK before create_stream_response"));
        return;
      }
      OnAck(ev.offset);
      return;
    case StreamEvent::Kind::kCloseSignal:
      OnCloseSignal(ev.grace);
      return;
    case StreamEvent::Kind::kProtocolError:
      Fail(absl::InternalError(absl::StrCat("protocol error from server: ", ev.text)));
      return;
    case StreamEvent::Kind::kWriteDone:
    case StreamEvent::Kind::kReadClosed:
      return;  // kDone follows with the reason
    case StreamEvent::Kind::kDone:
      if (state_ == LaneState::kStopping) {
        FinishStop();
        return;
      }
      if (state_ == LaneState::kRotating) {
        FinishRotation();
        return;
      }
      Fail(ev.status.ok() ? absl::UnavailableError("stream closed by server without errors") : ev.status);
      return;
  }
}

void DrainLane::OnCreated(const std::string& stream_id) {
  create_timer_.cancel();
  state_ = LaneState::kStreaming;
  stream_id_ = stream_id;
  metrics_.StreamOpened(options_.route);
  spdlog::info("route {}: stream {} open to {} (resuming at seq {}, {} records spooled)", options_.route,
               stream_id, options_.table, next_read_seq_, durable_seq_ - acked_seq_);
  Pump();
}

void DrainLane::NewGeneration() {
  ++gen_;  // events and reads of the previous stream are dropped from now on
  read_in_flight_ = false;
  linger_armed_ = false;
  linger_expired_ = false;
  linger_timer_.cancel();
}

void DrainLane::Pump() {
  if (state_ != LaneState::kStreaming || stream_ == nullptr || read_in_flight_) return;
  if (window_.size() >= options_.max_inflight_requests || next_read_seq_ > durable_seq_) return;
  const uint64_t available = durable_seq_ - next_read_seq_ + 1;
  if (available < options_.max_batch_records && !window_.empty() && options_.linger.count() > 0 &&
      !linger_expired_) {
    // Requests are in flight anyway: wait briefly for a fuller batch.
    if (!linger_armed_) {
      linger_armed_ = true;
      const uint64_t gen = gen_;
      std::weak_ptr<DrainLane> weak = weak_from_this();
      linger_timer_.expires_after(options_.linger);
      linger_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
        auto self = weak.lock();
        if (ec || !self || self->gen_ != gen) return;
        self->linger_armed_ = false;
        self->linger_expired_ = true;
        self->Pump();
      });
    }
    return;
  }
  linger_expired_ = false;
  if (linger_armed_) {
    linger_armed_ = false;
    linger_timer_.cancel();
  }
  // The read runs on the spool's reader thread: a cold backlog read must not
  // stall the loop (intake and other lanes).
  read_in_flight_ = true;
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  spool_.ReadFromAsync(options_.route, next_read_seq_, options_.max_batch_records, options_.max_batch_bytes,
                       [weak, gen, &loop = loop_](absl::StatusOr<std::vector<SpoolRecord>> records) {
                         asio::post(loop, [weak, gen, records = std::move(records)]() mutable {
                           if (auto self = weak.lock()) self->OnRead(gen, std::move(records));
                         });
                       });
}

void DrainLane::OnRead(uint64_t gen, absl::StatusOr<std::vector<SpoolRecord>> records) {
  if (gen != gen_) return;  // read for a stream that is gone
  read_in_flight_ = false;
  if (state_ != LaneState::kStreaming || stream_ == nullptr) return;  // rotating or stopping: send nothing new
  if (!records.ok()) {
    // A damaged record cannot be sent; stop this lane loudly rather than
    // skip it silently (architecture.md invariant 9).
    spdlog::error("route {}: cannot read spool at seq {}: {}", options_.route, next_read_seq_,
                  records.status().ToString());
    Fail(records.status());
    return;
  }
  if (records->empty()) return;
  std::vector<std::string> payloads;
  payloads.reserve(records->size());
  uint64_t bytes = 0;
  for (auto& r : *records) {
    bytes += r.payload.size();
    payloads.push_back(std::move(r.payload));
  }
  const SeqNo first = records->front().seq;
  const SeqNo last = records->back().seq;
  const int64_t offset =
      window_.Add(first, last, static_cast<uint32_t>(payloads.size()), bytes, records->front().append_time_us);
  stream_->Write(offset, std::move(payloads));
  next_read_seq_ = last + 1;
  durable_seq_ = std::max(durable_seq_, last);
  if (window_.size() == 1) ArmAckTimer();
  PublishGauges();
  Pump();
}

void DrainLane::OnAck(int64_t offset) {
  auto acked = window_.Ack(offset);
  if (!acked.ok()) {
    spdlog::error("route {}: stream {}: {}; reopening the stream", options_.route, stream_id_,
                  std::string(acked.status().message()));
    Fail(absl::InternalError(std::string(acked.status().message())));
    return;
  }
  if (acked->records > 0) {
    acked_seq_ = acked->last_seq;
    spool_.DeleteUpToAsync(options_.route, acked_seq_, [route = options_.route](absl::Status s) {
      if (!s.ok()) spdlog::error("route {}: spool delete failed: {}", route, s.ToString());
    });
    metrics_.AckedRecords(options_.route, acked->records);
    const int64_t now = NowUs();
    for (const auto& r : acked->requests) metrics_.AckLatency(static_cast<double>(now - r.oldest_append_us) / 1e6);
    backoff_.Reset();
  }
  if (window_.empty()) ack_timer_.cancel();
  PublishGauges();
  if (state_ == LaneState::kRotating && window_.empty()) {
    // Everything in flight is acked: replace the stream now.
    if (stream_) stream_->WritesDone();
    FinishRotation();
    return;
  }
  if (state_ == LaneState::kStopping && window_.empty()) {
    CloseForStop();
    return;
  }
  Pump();
}

void DrainLane::OnCloseSignal(std::chrono::milliseconds grace) {
  if (state_ != LaneState::kStreaming) return;
  metrics_.StreamRotation(options_.route);
  const auto wait = std::min(grace, options_.max_close_grace);
  spdlog::info("route {}: stream {} rotating (server grace {} ms, {} requests in flight)", options_.route,
               stream_id_, grace.count(), window_.size());
  if (window_.empty() || wait.count() == 0) {
    if (stream_) stream_->WritesDone();
    FinishRotation();
    return;
  }
  state_ = LaneState::kRotating;  // stop sending; keep applying ACKs
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  grace_timer_.expires_after(wait);
  grace_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->gen_ != gen || self->state_ != LaneState::kRotating) return;
    if (self->stream_) self->stream_->WritesDone();
    self->FinishRotation();
  });
}

void DrainLane::FinishRotation() {
  // A rotation is routine: no failure is counted and the new stream opens at
  // once, resending whatever was not acked (at-least-once).
  grace_timer_.cancel();
  ack_timer_.cancel();
  stream_.reset();
  NewGeneration();
  state_ = LaneState::kIdle;
  window_.Reset();
  next_read_seq_ = acked_seq_ + 1;
  PublishGauges();
  if (durable_seq_ > acked_seq_) Connect();
}

void DrainLane::Fail(const absl::Status& status) {
  if (state_ == LaneState::kStopping) {
    FinishStop();
    return;
  }
  const std::string code = StatusCodeName(status.code());
  metrics_.StreamFailure(options_.route, code);
  const size_t resend = window_.size();
  create_timer_.cancel();
  ack_timer_.cancel();
  grace_timer_.cancel();
  if (stream_) stream_->Cancel();
  stream_.reset();
  NewGeneration();
  window_.Reset();
  next_read_seq_ = acked_seq_ + 1;
  PublishGauges();
  if (status.code() == absl::StatusCode::kUnauthenticated ||
      status.code() == absl::StatusCode::kPermissionDenied) {
    tokens_.Invalidate(options_.table);  // the next attempt mints a fresh token
  }
  auto delay = backoff_.Next();
  if (!IsRetryable(status.code())) {
    // Table-level problems need the operator; keep retrying slowly so the
    // lane resumes by itself once fixed (parking comes with the DLQ work).
    delay = std::max(delay, std::chrono::milliseconds(options_.backoff.max));
    spdlog::error("route {}: Zerobus refused the stream for {}: {} (needs operator action; retrying in {} ms)",
                  options_.route, options_.table, status.ToString(), delay.count());
  } else {
    // Long outages are normal on edge hosts: say it loudly at first, then
    // now and then, not on every retry.
    const int attempt = backoff_.attempts();
    const auto level = attempt <= 3 || attempt % 30 == 0 ? spdlog::level::warn : spdlog::level::debug;
    spdlog::log(level, "route {}: stream failed (attempt {}): {}; {} requests will be resent; reconnecting in {} ms",
                options_.route, attempt, status.ToString(), resend, delay.count());
  }
  ScheduleReconnect(delay);
}

void DrainLane::ScheduleReconnect(std::chrono::milliseconds delay) {
  state_ = LaneState::kBackoff;
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  retry_timer_.expires_after(delay);
  retry_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->gen_ != gen || self->state_ != LaneState::kBackoff) return;
    self->state_ = LaneState::kIdle;
    if (self->durable_seq_ > self->acked_seq_) self->Connect();
  });
}

void DrainLane::ArmAckTimer() {
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  ack_timer_.expires_after(options_.ack_timeout);
  ack_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->gen_ != gen || self->window_.empty()) return;
    self->Fail(absl::DeadlineExceededError("server ack timeout"));
  });
}

void DrainLane::Stop(std::function<void()> done) {
  stop_done_ = std::move(done);
  const LaneState previous = state_;
  state_ = LaneState::kStopping;
  retry_timer_.cancel();
  create_timer_.cancel();
  grace_timer_.cancel();
  if (stream_ == nullptr || previous == LaneState::kConnecting || previous == LaneState::kBackoff ||
      previous == LaneState::kIdle) {
    FinishStop();
    return;
  }
  if (window_.empty()) CloseForStop();
  // else: OnAck closes once the window drains (or Abort at the deadline).
}

void DrainLane::CloseForStop() {
  if (stream_) stream_->WritesDone();  // kDone follows once the server ends the call
}

void DrainLane::Abort() {
  if (state_ == LaneState::kStopped) return;
  state_ = LaneState::kStopping;
  FinishStop();
}

void DrainLane::FinishStop() {
  if (state_ == LaneState::kStopped) return;
  state_ = LaneState::kStopped;
  ack_timer_.cancel();
  if (stream_) stream_->Cancel();
  stream_.reset();
  NewGeneration();
  PublishGauges();
  if (stop_done_) {
    auto done = std::move(stop_done_);
    stop_done_ = nullptr;
    done();
  }
}

void DrainLane::PublishGauges() { metrics_.InflightRequests(options_.route, window_.size()); }

}  // namespace zb
