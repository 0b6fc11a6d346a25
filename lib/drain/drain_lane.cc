#include "drain/drain_lane.h"

#include "absl/strings/str_cat.h"
#include "common/loop_post.h"
#include "common/loop_thread.h"
#include "spdlog/spdlog.h"
#include "spool/dead_letters.h"

namespace zb {
namespace asio = boost::asio;

const char* LaneStateName(LaneState s) {
  switch (s) {
    case LaneState::kIdle: return "idle";
    case LaneState::kConnecting: return "connecting";
    case LaneState::kStreaming: return "streaming";
    case LaneState::kRotating: return "rotating";
    case LaneState::kDraining: return "draining";
    case LaneState::kBackoff: return "backoff";
    case LaneState::kDeadLettering: return "dead-lettering";
    case LaneState::kParked: return "parked";
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

// "45s", "12m30s", "3h05m".
std::string DurationWords(MonotonicClock::duration d) {
  const int64_t s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m", absl::Dec(s % 60, absl::kZeroPad2), "s");
  return absl::StrCat(s / 3600, "h", absl::Dec(s / 60 % 60, absl::kZeroPad2), "m");
}

// What the operator should do about a token endpoint's refusal.
std::string TokenHint(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return "check zerobus.client_id/client_secret and the service principal's USE CATALOG, USE SCHEMA and "
             "explicit SELECT + MODIFY grants on the table";
    case absl::StatusCode::kFailedPrecondition:
      return "check zerobus.workspace_url: it should be the workspace's address, https://<workspace host>";
    default:
      return "check the zerobus section of the configuration";
  }
}

// What the operator should do about a table-level refusal.
std::string OperatorHint(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kNotFound:
      return "check that the table exists and routes[].table names it";
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return "check zerobus.client_id/client_secret and the service principal's USE CATALOG, USE SCHEMA and "
             "explicit SELECT + MODIFY grants on the table";
    case absl::StatusCode::kInvalidArgument:
      return "check the table against the route (format, schema; tables in default storage are not supported)";
    default:
      return "see the server's message";
  }
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
      route_metrics_(metrics.Route(options.route)),
      backoff_(options.backoff),
      health_(options.failure_log_interval),
      retry_timer_(loop),
      create_timer_(loop),
      ack_timer_(loop),
      grace_timer_(loop),
      linger_timer_(loop),
      pace_timer_(loop) {
  if (options_.stream_quota) pacer_.emplace(*options_.stream_quota, MonotonicClock::now());
  metrics_.LaneParked(options_.route, false);  // a lane replaced on reload starts afresh
  // Watch first, then read where the lane ends: nothing made durable in
  // between is missed.
  durable_watch_ = spool_.WatchDurable(options_.route, PostTo(loop), [this](SeqNo last_seq) { OnAppended(last_seq); });
  const LaneStats stats = spool_.Stats(options_.route);
  acked_seq_ = stats.deleted_up_to;
  next_read_seq_ = acked_seq_ + 1;
  durable_seq_ = stats.next_seq - 1;
}

DrainLane::~DrainLane() {
  durable_watch_.reset();
  stream_.reset();
}

void DrainLane::Start() {
  ZB_CHECK_ON_LOOP(loop_);
  if (state_ == LaneState::kIdle && HasRecords()) Connect();
}

void DrainLane::OnAppended(SeqNo last_seq) {
  ZB_CHECK_ON_LOOP(loop_);
  durable_seq_ = std::max(durable_seq_, last_seq);
  if (state_ == LaneState::kIdle) Connect();
  else if (state_ == LaneState::kStreaming) Pump();
}

bool DrainLane::Resume() {
  ZB_CHECK_ON_LOOP(loop_);
  if (state_ == LaneState::kParked) {
    spdlog::info("route {}: resuming (was parked: {})", options_.route, parked_reason_);
    metrics_.LaneParked(options_.route, false);
    parked_reason_.clear();
    auth_retry_used_ = false;
    consecutive_dead_letters_ = 0;
  } else if (Stuck()) {
    spdlog::info("route {}: resuming: dropping its connection ({}) and reconnecting now on a new one",
                 options_.route, LaneStateName(state_));
    const uint64_t resent = TearDown();
    if (resent > 0) route_metrics_.ResentRecords(resent);
  } else {
    return false;
  }
  streams_.ResetConnection();
  backoff_.Reset();
  retry_timer_.cancel();
  state_ = LaneState::kIdle;
  if (HasRecords()) Connect();
  return true;
}

bool DrainLane::Stuck() const {
  // ACKs come every few hundred ms while requests are in flight; this long
  // without any server message is not a slow server but a stuck one.
  constexpr auto kSilence = std::chrono::seconds(5);
  const auto now = MonotonicClock::now();
  switch (state_) {
    case LaneState::kBackoff:
      return true;
    case LaneState::kConnecting:
      return now - connect_started_ > kSilence;
    case LaneState::kStreaming:
    case LaneState::kRotating:
      // Silent since the server last spoke or since the oldest request in
      // flight went out, whichever is later (an idle stream that just got
      // records is not stuck).
      return !window_.empty() && now - std::max(last_server_message_, window_started_) > kSilence;
    default:
      return false;
  }
}

void DrainLane::NewGeneration() {
  ++gen_;  // events and reads of the previous stream are dropped from now on
  read_in_flight_ = false;
  linger_armed_ = false;
  linger_expired_ = false;
  linger_timer_.cancel();
  paced_.reset();  // read again from acked_seq_ + 1 on the next stream
  pace_timer_.cancel();
}

void DrainLane::Connect() {
  // Records may have left without an ACK (drop_oldest): start after them.
  acked_seq_ = std::max(acked_seq_, spool_.Stats(options_.route).deleted_up_to);
  if (!HasRecords()) {
    state_ = LaneState::kIdle;
    EndOutage("idle (nothing to send)");  // a failure with nothing at stake is not an ongoing outage
    return;
  }
  state_ = LaneState::kConnecting;
  connect_started_ = MonotonicClock::now();
  NewGeneration();
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  // The whole open (token + create reply) is bounded by create_timeout.
  create_timer_.expires_after(options_.create_timeout);
  create_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->gen_ != gen || self->state_ != LaneState::kConnecting) return;
    const auto ms = self->options_.create_timeout.count();
    if (self->stream_ == nullptr) {
      self->Fail(absl::DeadlineExceededError(absl::StrCat("no OAuth token within create_timeout_ms (", ms, " ms)")),
                 FailureKind::kToken);
    } else if (!self->stream_->response_started()) {
      // Not even response headers: the connection is dead or the endpoint
      // does not answer. A new connection is made for the next attempt.
      self->Fail(absl::DeadlineExceededError(absl::StrCat("no answer from ", self->options_.endpoint,
                                                          " within create_timeout_ms (", ms,
                                                          " ms): the connection looks dead")),
                 FailureKind::kConnect);
    } else {
      self->Fail(absl::DeadlineExceededError(
                     absl::StrCat("stream creation timed out: no create_stream_response within ", ms, " ms")),
                 FailureKind::kStream);
    }
  });
  tokens_.GetToken(
      options_.table,
      [weak, gen](absl::StatusOr<std::string> token) {
        if (auto self = weak.lock()) self->OnToken(gen, std::move(token));
      },
      PostTo(loop_));
}

void DrainLane::OnToken(uint64_t gen, absl::StatusOr<std::string> token) {
  ZB_CHECK_ON_LOOP(loop_);
  if (gen != gen_ || state_ != LaneState::kConnecting) return;
  if (!token.ok()) {
    metrics_.TokenFetchFailure(options_.route, options_.table);
    create_timer_.cancel();
    const absl::Status& status = token.status();
    if (absl::IsUnavailable(status) || absl::IsCancelled(status)) {
      // The endpoint is down, slow, or answered something unusable: a
      // service fault, retried.
      const auto delay = backoff_.Next();
      ReportFailure(FailureKind::kToken, status, absl::StrCat("retrying in ", delay.count(), " ms"));
      ScheduleReconnect(delay);
      return;
    }
    CountFailure(FailureKind::kToken, status);
    Park(absl::StrCat("the OAuth token endpoint refused the request for table ", options_.table, ": ",
                      status.message(), "; ", TokenHint(status.code())));
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
  ZB_CHECK_ON_LOOP(loop_);
  if (gen != gen_) return;
  if (ev.kind == StreamEvent::Kind::kCreated || ev.kind == StreamEvent::Kind::kAck ||
      ev.kind == StreamEvent::Kind::kCloseSignal) {
    last_server_message_ = MonotonicClock::now();
  }
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
      if (ev.ok) Pump();  // room in the stream's queue
      return;           // else kDone follows with the reason
    case StreamEvent::Kind::kReadClosed:
      return;  // kDone follows with the reason
    case StreamEvent::Kind::kDone:
      if (state_ == LaneState::kStopping) {
        FinishStop();
        return;
      }
      if (state_ == LaneState::kRotating || state_ == LaneState::kDraining) {
        FinishRotation();  // the rotation's close (6002 or OK) is routine
        return;
      }
      Fail(ev.status.ok() ? absl::UnavailableError("stream closed by server without errors") : ev.status,
           ev.link == StreamEvent::Link::kTlsFailed       ? FailureKind::kTls
           : ev.link == StreamEvent::Link::kConnectFailed ? FailureKind::kConnect
                                                          : FailureKind::kStream);
      return;
  }
}

void DrainLane::OnCreated(const std::string& stream_id) {
  create_timer_.cancel();
  state_ = LaneState::kStreaming;
  stream_id_ = stream_id;
  metrics_.StreamOpened(options_.route);
  spdlog::info("route {}: stream {} open to {} (resuming at seq {}, {} records spooled{})", options_.route,
               stream_id, options_.table, next_read_seq_, durable_seq_ - acked_seq_,
               isolation_.active ? ", isolating a refused record" : "");
  Pump();
}

void DrainLane::Pump() {
  if (state_ != LaneState::kStreaming || stream_ == nullptr || read_in_flight_ || paced_) return;
  // While isolating a refused record, one request at a time, no larger than
  // the isolation's batch and not past its range.
  const uint32_t max_inflight = isolation_.active ? 1 : options_.max_inflight_requests;
  if (window_.size() >= max_inflight || next_read_seq_ > durable_seq_) return;
  if (stream_->queued_writes() >= kMaxQueuedRequests) return;  // kWriteDone pumps again
  uint32_t max_records = options_.max_batch_records;
  if (isolation_.active && next_read_seq_ <= isolation_.until) {
    max_records = static_cast<uint32_t>(std::min<uint64_t>(isolation_.batch, isolation_.until - next_read_seq_ + 1));
  }
  // No request larger than the pace's buckets: one would trip the quota.
  if (pacer_) max_records = static_cast<uint32_t>(std::min<uint64_t>(max_records, pacer_->max_rows()));
  const uint64_t available = durable_seq_ - next_read_seq_ + 1;
  if (!isolation_.active && available < max_records && !window_.empty() && options_.linger.count() > 0 &&
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
  // max_batch_bytes bounds the request as encoded (its records, their
  // framing and the envelope), so no request passes the service's limit.
  uint64_t request_budget = options_.max_batch_bytes;
  if (pacer_) request_budget = std::min(request_budget, pacer_->max_bytes());
  // (A record larger than the budget still goes, alone.)
  const uint64_t record_budget = request_budget - std::min(request_budget, kRequestEnvelopeBytes);
  spool_.ReadFromAsync(
      options_.route, next_read_seq_, max_records, record_budget, kRecordFramingBytes,
      [weak, gen](absl::StatusOr<std::vector<SpoolRecord>> records) {
        if (auto self = weak.lock()) self->OnRead(gen, std::move(records));
      },
      PostTo(loop_));
}

void DrainLane::OnRead(uint64_t gen, absl::StatusOr<std::vector<SpoolRecord>> records) {
  ZB_CHECK_ON_LOOP(loop_);
  if (gen != gen_) return;  // read for a stream that is gone
  read_in_flight_ = false;
  if (state_ != LaneState::kStreaming || stream_ == nullptr) return;  // rotating or stopping: send nothing new
  if (!records.ok()) {
    if (!absl::IsDataLoss(records.status())) {
      Fail(absl::UnavailableError(absl::StrCat("spool read: ", records.status().message())));  // retried
      return;
    }
    // A damaged record cannot be sent and must not be skipped silently
    // (architecture.md invariant 9): the lane parks, other lanes go on.
    const SeqNo at = next_read_seq_;
    TearDown();
    Park(absl::StrCat("cannot read the spool at seq ", at, ": ", records.status().message(),
                      "; the spool is damaged (check it with `zerobusctl spool verify`)"));
    return;
  }
  if (records->empty()) return;
  ReadBatch batch;
  batch.payloads.reserve(records->size());
  for (auto& r : *records) {
    batch.bytes += r.payload.size();
    batch.payloads.push_back(std::move(r.payload));
  }
  batch.first = records->front().seq;
  batch.last = records->back().seq;
  batch.oldest_append_us = records->front().append_time_us;
  next_read_seq_ = batch.last + 1;
  durable_seq_ = std::max(durable_seq_, batch.last);
  SendPaced(std::move(batch));
}

void DrainLane::SendPaced(ReadBatch batch) {
  if (pacer_) {
    // What the service counts: the rows, and the request as encoded (at
    // most this much; see kRequestEnvelopeBytes).
    const uint64_t rows = batch.payloads.size();
    const uint64_t request_bytes = kRequestEnvelopeBytes + batch.bytes + rows * kRecordFramingBytes;
    const MonotonicClock::duration wait = pacer_->Delay(rows, request_bytes, MonotonicClock::now());
    if (wait > MonotonicClock::duration::zero()) {
      route_metrics_.PacedSeconds(std::chrono::duration<double>(wait).count());
      paced_ = std::move(batch);
      const uint64_t gen = gen_;
      std::weak_ptr<DrainLane> weak = weak_from_this();
      pace_timer_.expires_after(wait);
      pace_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
        auto self = weak.lock();
        if (ec || !self || self->gen_ != gen || !self->paced_) return;
        // Rotating or stopping: it is not sent; the next stream reads it
        // again (NewGeneration).
        if (self->state_ != LaneState::kStreaming || self->stream_ == nullptr) return;
        ReadBatch held = std::move(*self->paced_);
        self->paced_.reset();
        self->SendPaced(std::move(held));
      });
      return;
    }
  }
  Send(std::move(batch));
}

void DrainLane::Send(ReadBatch batch) {
  const int64_t offset = window_.Add(batch.first, batch.last, static_cast<uint32_t>(batch.payloads.size()),
                                     batch.bytes, batch.oldest_append_us);
  stream_->Write(offset, std::move(batch.payloads));
  if (window_.size() == 1) {
    window_started_ = MonotonicClock::now();
    ArmAckTimer();
  }
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
    acked_seq_ = std::max(acked_seq_, acked->last_seq);
    spool_.DeleteUpToAsync(options_.route, acked_seq_, [route = options_.route](absl::Status s) {
      if (!s.ok()) spdlog::error("route {}: spool delete failed: {}", route, s.ToString());
    });
    route_metrics_.AckedRecords(acked->records);
    const int64_t now = NowUs();
    for (const auto& r : acked->requests) metrics_.AckLatency(static_cast<double>(now - r.oldest_append_us) / 1e6);
    backoff_.Reset();
    EndOutage("recovered");  // records are delivered: not just a stream that opened
    auth_retry_used_ = false;  // the credentials work: a later refusal gets its fresh-token retry again
    consecutive_dead_letters_ = 0;
    if (isolation_.active && acked_seq_ >= isolation_.until) {
      spdlog::info("route {}: isolation done: every record up to seq {} is delivered or dead-lettered",
                   options_.route, isolation_.until);
      isolation_ = Isolation{};
    } else if (isolation_.active) {
      // Accepted: the refused record is elsewhere; grow back quickly.
      isolation_.batch = std::min(isolation_.batch * 2, options_.max_batch_records);
    }
  }
  if (window_.empty()) ack_timer_.cancel();
  PublishGauges();
  if (state_ == LaneState::kRotating && window_.empty()) {
    BeginRotationDrain();  // everything in flight is acked: replace the stream now
    return;
  }
  if (state_ == LaneState::kDraining && window_.empty()) {
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
    BeginRotationDrain();
    return;
  }
  state_ = LaneState::kRotating;  // stop sending; keep applying ACKs
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  grace_timer_.expires_after(wait);
  grace_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->gen_ != gen || self->state_ != LaneState::kRotating) return;
    self->BeginRotationDrain();
  });
}

void DrainLane::BeginRotationDrain() {
  // Half-close (END_STREAM before any cancel), then take late ACKs for a
  // moment: each one saves a duplicate.
  if (window_.empty()) {
    if (stream_) stream_->WritesDone();
    FinishRotation();
    return;
  }
  state_ = LaneState::kDraining;
  if (stream_) stream_->WritesDone();
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  grace_timer_.expires_after(options_.rotation_drain);
  grace_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->gen_ != gen || self->state_ != LaneState::kDraining) return;
    self->FinishRotation();
  });
}

void DrainLane::FinishRotation() {
  // A rotation is routine: no failure is counted and the new stream opens at
  // once, resending whatever was not acked (at-least-once).
  const uint64_t resent = TearDown();
  if (resent > 0) {
    route_metrics_.ResentRecords(resent);
    spdlog::info("route {}: {} records of the rotated stream were not acked; resending them", options_.route, resent);
  }
  state_ = LaneState::kIdle;
  Connect();
}

uint64_t DrainLane::TearDown() {
  const uint64_t inflight = window_.records();
  create_timer_.cancel();
  ack_timer_.cancel();
  grace_timer_.cancel();
  if (stream_) stream_->Cancel();
  stream_.reset();
  NewGeneration();
  window_.Reset();
  next_read_seq_ = acked_seq_ + 1;
  PublishGauges();
  return inflight;
}

void DrainLane::Fail(const absl::Status& status, FailureKind kind) {
  if (state_ == LaneState::kStopping) {
    FinishStop();
    return;
  }
  if (state_ == LaneState::kStopped) return;
  // Whether create_stream was answered: a refusal after that with requests
  // in flight is about records, before it about the table.
  const bool created = state_ == LaneState::kStreaming || state_ == LaneState::kRotating ||
                       state_ == LaneState::kDraining;
  const InflightRequest oldest = window_.empty() ? InflightRequest{} : window_.front();
  const size_t requests_in_flight = window_.size();
  // A batch held for the pace was read, not sent.
  const SeqNo last_sent = paced_ ? paced_->first - 1 : next_read_seq_ - 1;
  const uint64_t resent = TearDown();
  if (resent > 0) route_metrics_.ResentRecords(resent);
  const absl::StatusCode code = status.code();
  metrics_.StreamFailure(options_.route, StatusCodeName(code));
  // Only a stream's: at create time it is not about the stream's pace.
  if (code == absl::StatusCode::kResourceExhausted && pacer_ && created) {
    // The real quota is below the configured one (or another client shares
    // it): slower from now on, the pace coming back a little every second.
    pacer_->Throttled(MonotonicClock::now());
    spdlog::warn("route {}: Zerobus ended the stream for its quota ({}); pacing at {:.0f}% of {} rows/s and {} "
                 "bytes/s (zerobus.stream_quota) from now",
                 options_.route, status.ToString(), pacer_->pace() * 100, options_.stream_quota->rows_per_second,
                 options_.stream_quota->bytes_per_second);
  }
  // A connection that failed, or went silent (our own timeouts), is not
  // used again: the next attempt dials a new one.
  if (kind == FailureKind::kConnect || kind == FailureKind::kTls || code == absl::StatusCode::kDeadlineExceeded) {
    streams_.ResetConnection();
  }

  if (code == absl::StatusCode::kUnauthenticated || code == absl::StatusCode::kPermissionDenied) {
    tokens_.Invalidate(options_.table);
    CountFailure(kind, status);
    if (!auth_retry_used_) {
      auth_retry_used_ = true;
      spdlog::warn("route {}: Zerobus refused the token for {} ({}); retrying once with a fresh token",
                   options_.route, options_.table, status.ToString());
      ScheduleReconnect(options_.backoff.min_delay);
      return;
    }
    Park(absl::StrCat("Zerobus refused a fresh token for table ", options_.table, ": ", status.ToString(), "; ",
                      OperatorHint(code)));
    return;
  }
  if (code == absl::StatusCode::kInvalidArgument && created && requests_in_flight > 0) {
    Isolate(status, oldest, requests_in_flight, last_sent);
    return;
  }
  if (!IsRetryable(code)) {
    CountFailure(kind, status);
    Park(absl::StrCat("Zerobus refused the stream for table ", options_.table, ": ", status.ToString(), "; ",
                      OperatorHint(code)));
    return;
  }
  const auto delay = backoff_.Next();
  ReportFailure(kind, status,
                absl::StrCat(resent > 0 ? absl::StrCat(resent, " records will be resent; ") : std::string(),
                             "reconnecting in ", delay.count(), " ms"));
  ScheduleReconnect(delay);
}

void DrainLane::EndOutage(const char* how) {
  if (!health_.failing()) return;
  const auto outage = MonotonicClock::now() - health_.outage_start();
  const uint64_t failures = health_.outage_failures();
  health_.Succeeded();
  explained_.clear();
  spdlog::info("route {}: {} after {} failed attempt(s) over {}", options_.route, how, failures,
               DurationWords(outage));
}

RouteHealth::Report DrainLane::CountFailure(FailureKind kind, const absl::Status& status) {
  metrics_.RouteFailure(options_.route, FailureKindName(kind), static_cast<double>(NowUs()) / 1e6);
  return health_.Failed(kind, status.ToString(), MonotonicClock::now(), NowUs());
}

void DrainLane::ReportFailure(FailureKind kind, const absl::Status& status, const std::string& next) {
  // Long outages are normal on edge hosts: say it at once, then as a
  // heartbeat, never on every retry and never not at all.
  const bool changed = !health_.failing() || health_.last_kind() != kind;
  const RouteHealth::Report report = CountFailure(kind, status);
  const uint64_t attempt = health_.outage_failures();
  const FailureTally& tally = health_.tally(kind);
  switch (report) {
    case RouteHealth::Report::kLoud:
      spdlog::warn("route {}: {} failure (attempt {}): {}; {}", options_.route, FailureKindName(kind), attempt,
                   status.ToString(), next);
      break;
    case RouteHealth::Report::kHeartbeat:
      // With the reason in words when one is known.
      spdlog::warn("route {}: still failing: {} attempts over {}, the last a {} failure: {}; {} records spooled; {}",
                   options_.route, attempt, DurationWords(MonotonicClock::now() - health_.outage_start()),
                   FailureKindName(kind), tally.explanation.empty() ? status.ToString() : tally.explanation,
                   durable_seq_ - acked_seq_, next);
      break;
    case RouteHealth::Report::kQuiet:
      spdlog::debug("route {}: {} failure (attempt {}): {}; {}", options_.route, FailureKindName(kind), attempt,
                    status.ToString(), next);
      break;
  }
  // The library's words ("handshake failed") do not say which check
  // failed; an explanation does. Asked at the start of an outage, on a
  // change of kind and at each heartbeat (so a new reason, say expired ->
  // wrong host, shows within an interval), never per attempt, and one at a
  // time per lane.
  if ((kind == FailureKind::kConnect || kind == FailureKind::kTls) && options_.explain_connect_failure &&
      (changed || report == RouteHealth::Report::kHeartbeat) && !explaining_) {
    explaining_ = true;
    std::weak_ptr<DrainLane> weak = weak_from_this();
    options_.explain_connect_failure(PostTo(loop_), [weak, kind, text = status.ToString()](ConnectExplanation e) {
      if (auto self = weak.lock()) self->OnExplained(kind, text, std::move(e));
    });
  }
}

void DrainLane::OnExplained(FailureKind kind, const std::string& status_text, ConnectExplanation explained) {
  ZB_CHECK_ON_LOOP(loop_);
  explaining_ = false;
  if (!health_.failing()) return;  // recovered meanwhile: old news
  health_.Explain(kind, explained.text);
  // Each reason is said once per outage (the heartbeats repeat the latest
  // one as warnings), so a failure that flips between two reasons is not
  // said per attempt either.
  if (!explained_.insert(explained.reason).second) return;
  if (explained_.size() > 16) explained_.clear();  // reasons are few; this only bounds odd cases
  spdlog::error("route {}: cannot connect to {}: {}. gRPC said: {}. (Said once per reason; `zerobusctl status` "
                "counts the attempts.)",
                options_.route, options_.endpoint, explained.text, status_text);
}

void DrainLane::Isolate(const absl::Status& status, const InflightRequest& oldest, size_t requests_in_flight,
                        SeqNo last_sent) {
  // Which request the server refused is known only when one was in flight,
  // as while isolating; otherwise the oldest is resent alone first.
  const bool refused_request_known = isolation_.active && requests_in_flight == 1;
  if (!isolation_.active) {
    isolation_.active = true;
    isolation_.until = last_sent;
    isolation_.first_failure_us = NowUs();
    isolation_.failures = 0;
    spdlog::warn("route {}: Zerobus refused a request ({}); finding the refused record(s) among seqs {}..{} by "
                 "sending smaller requests, one at a time",
                 options_.route, status.ToString(), acked_seq_ + 1, last_sent);
  }
  ++isolation_.failures;
  if (!refused_request_known || oldest.records > 1) {
    isolation_.batch = refused_request_known ? oldest.records / 2 : std::max<uint32_t>(1, oldest.records);
    ScheduleReconnect(options_.backoff.min_delay);
    return;
  }
  // The one request in flight, of one record, was refused: that record goes
  // to the dead-letter store, with the server's verdict.
  const SeqNo seq = oldest.first_seq;
  DeadLetterInfo info;
  info.table = options_.table;
  info.code = StatusCodeName(status.code());
  info.message = std::string(status.message());
  info.attempts = isolation_.failures;
  info.first_failure_us = isolation_.first_failure_us;
  state_ = LaneState::kDeadLettering;
  // Everything before it is acked; make sure the spool has let it go (a
  // delete that failed earlier is issued again, in order before the move).
  if (seq > 1) spool_.DeleteUpToAsync(options_.route, seq - 1, nullptr);
  std::weak_ptr<DrainLane> weak = weak_from_this();
  spool_.dead_letters().MoveAsync(
      options_.route, seq, std::move(info),
      [weak, seq](absl::Status s) {
        if (auto self = weak.lock()) self->OnDeadLettered(seq, s);
      },
      PostTo(loop_));
}

void DrainLane::OnDeadLettered(SeqNo seq, const absl::Status& status) {
  ZB_CHECK_ON_LOOP(loop_);
  if (state_ != LaneState::kDeadLettering) return;  // stopped meanwhile
  const bool already_gone = absl::IsNotFound(status);  // dropped by policy meanwhile: nothing moved
  if (!status.ok() && !already_gone) {
    // The record stays at the head of the lane; it is found again.
    const auto delay = backoff_.Next();
    spdlog::error("route {}: cannot move seq {} to the dead-letter store: {}; retrying in {} ms", options_.route,
                  seq, status.ToString(), delay.count());
    ScheduleReconnect(delay);
    return;
  }
  acked_seq_ = std::max(acked_seq_, seq);
  if (!already_gone) {
    metrics_.DeadLetterRecords(options_.route, 1);
    ++consecutive_dead_letters_;
  }
  if (!already_gone) spdlog::error("route {}: record seq {} moved to the dead-letter store: Zerobus refused it for {} "
                "(see `zerobusctl dlq list --route {}`)",
                options_.route, seq, options_.table, options_.route);
  isolation_.failures = 0;
  isolation_.first_failure_us = NowUs();
  isolation_.batch = 2;
  if (acked_seq_ >= isolation_.until) isolation_ = Isolation{};
  if (consecutive_dead_letters_ >= options_.max_consecutive_dead_letters) {
    Park(absl::StrCat(consecutive_dead_letters_, " records in a row were refused by table ", options_.table,
                      " with nothing accepted between them: the table, not the records, looks wrong; ",
                      OperatorHint(absl::StatusCode::kInvalidArgument),
                      ". The dead-lettered records can be replayed with `zerobusctl dlq replay`"));
    return;
  }
  state_ = LaneState::kIdle;
  ScheduleReconnect(options_.backoff.min_delay);
}

void DrainLane::Park(const std::string& reason) {
  state_ = LaneState::kParked;
  parked_reason_ = reason;
  isolation_ = Isolation{};
  metrics_.LaneParked(options_.route, true);
  spdlog::error("route {}: parked: {}. Its records stay spooled ({} now); it tries again in {} s, or at once on "
                "SIGHUP (systemctl reload zerobusd)",
                options_.route, reason, durable_seq_ - acked_seq_,
                std::chrono::duration_cast<std::chrono::seconds>(options_.parked_retry).count());
  std::weak_ptr<DrainLane> weak = weak_from_this();
  retry_timer_.expires_after(options_.parked_retry);
  retry_timer_.async_wait([weak](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    self->Resume();
  });
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
    self->Connect();
  });
}

void DrainLane::ArmAckTimer() {
  const uint64_t gen = gen_;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  ack_timer_.expires_after(options_.ack_timeout);
  ack_timer_.async_wait([weak, gen](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->gen_ != gen || self->window_.empty()) return;
    self->Fail(absl::DeadlineExceededError("server ack timeout: no message from the server while requests were "
                                           "in flight"));
  });
}

void DrainLane::Stop(std::function<void()> done) {
  ZB_CHECK_ON_LOOP(loop_);
  stop_done_ = std::move(done);
  const LaneState previous = state_;
  state_ = LaneState::kStopping;
  retry_timer_.cancel();
  create_timer_.cancel();
  grace_timer_.cancel();
  if (stream_ == nullptr || previous == LaneState::kConnecting || previous == LaneState::kBackoff ||
      previous == LaneState::kIdle || previous == LaneState::kParked || previous == LaneState::kDeadLettering) {
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
  ZB_CHECK_ON_LOOP(loop_);
  if (state_ == LaneState::kStopped) return;
  state_ = LaneState::kStopping;
  FinishStop();
}

void DrainLane::FinishStop() {
  if (state_ == LaneState::kStopped) return;
  state_ = LaneState::kStopped;
  ack_timer_.cancel();
  retry_timer_.cancel();
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

void DrainLane::PublishGauges() { route_metrics_.InflightRequests(window_.size()); }

}  // namespace zb
