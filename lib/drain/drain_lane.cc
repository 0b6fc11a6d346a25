#include "drain/drain_lane.h"

#include <algorithm>

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

DrainLane::Slot::Slot(asio::io_context& loop, uint32_t index)
    : index(index),
      retry_timer(loop),
      create_timer(loop),
      ack_timer(loop),
      grace_timer(loop),
      pace_timer(loop),
      idle_timer(loop) {}

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
      park_timer_(loop),
      linger_timer_(loop) {
  const uint32_t n = std::clamp<uint32_t>(options_.max_streams, 1, kMaxStreamLabels);
  for (uint32_t i = 0; i < n; ++i) {
    slots_.push_back(std::make_unique<Slot>(loop, i));
    if (options_.stream_quota) slots_.back()->pacer.emplace(*options_.stream_quota, MonotonicClock::now());
  }
  metrics_.LaneParked(options_.route, false);  // a lane replaced on reload starts afresh
  // Watch first, then read where the lane ends: nothing made durable in
  // between is missed.
  durable_watch_ = spool_.WatchDurable(options_.route, PostTo(loop), [this](SeqNo last_seq) { OnAppended(last_seq); });
  const LaneStats stats = spool_.Stats(options_.route);
  cursor_ = LaneCursor(stats.deleted_up_to);
  durable_seq_ = stats.next_seq - 1;
  PublishGauges();
}

DrainLane::~DrainLane() {
  durable_watch_.reset();
  for (auto& s : slots_) s->stream.reset();
}

LaneState DrainLane::state() const {
  ZB_CHECK_ON_LOOP(loop_);
  switch (mode_) {
    case Mode::kParked: return LaneState::kParked;
    case Mode::kDeadLettering: return LaneState::kDeadLettering;
    case Mode::kStopping: return LaneState::kStopping;
    case Mode::kStopped: return LaneState::kStopped;
    case Mode::kRunning: break;
  }
  // The busiest stream's: the first found in this order.
  constexpr std::pair<StreamState, LaneState> kOrder[] = {
      {StreamState::kStreaming, LaneState::kStreaming}, {StreamState::kClosing, LaneState::kStreaming},
      {StreamState::kRotating, LaneState::kRotating},   {StreamState::kDraining, LaneState::kDraining},
      {StreamState::kConnecting, LaneState::kConnecting}, {StreamState::kBackoff, LaneState::kBackoff},
  };
  for (const auto& [stream_state, lane_state] : kOrder) {
    for (const auto& s : slots_) {
      if (s->state == stream_state) return lane_state;
    }
  }
  return LaneState::kIdle;
}

size_t DrainLane::inflight_requests() const {
  ZB_CHECK_ON_LOOP(loop_);
  return InflightRequests();
}

size_t DrainLane::open_streams() const {
  ZB_CHECK_ON_LOOP(loop_);
  return OpenStreams();
}

size_t DrainLane::InflightRequests() const {
  size_t n = 0;
  for (const auto& s : slots_) n += s->window.size();
  return n;
}

size_t DrainLane::OpenStreams() const {
  size_t n = 0;
  for (const auto& s : slots_) n += Open(*s) ? 1 : 0;
  return n;
}

bool DrainLane::busy_for_test() const {
  ZB_CHECK_ON_LOOP(loop_);
  return read_in_flight_ || linger_armed_ || paced_for_test();
}

bool DrainLane::paced_for_test() const {
  ZB_CHECK_ON_LOOP(loop_);
  for (const auto& s : slots_) {
    if (s->paced) return true;
  }
  return false;
}

void DrainLane::Start() {
  ZB_CHECK_ON_LOOP(loop_);
  Wake();
}

void DrainLane::Wake() {
  if (!Running() || !HasRecords()) return;
  Slot* closed = nullptr;
  for (const auto& s : slots_) {
    if (s->state == StreamState::kClosed) {
      if (closed == nullptr) closed = s.get();
    } else if (s->state != StreamState::kClosing) {
      return;  // open, or on its way
    }
  }
  if (closed != nullptr) Connect(*closed);
}

void DrainLane::OnAppended(SeqNo last_seq) {
  ZB_CHECK_ON_LOOP(loop_);
  durable_seq_ = std::max(durable_seq_, last_seq);
  Wake();
  Pump();
}

bool DrainLane::Resume() {
  ZB_CHECK_ON_LOOP(loop_);
  if (mode_ == Mode::kParked) {
    spdlog::info("route {}: resuming (was parked: {})", options_.route, parked_reason_);
    metrics_.LaneParked(options_.route, false);
    parked_reason_.clear();
    auth_retry_used_ = false;
    consecutive_dead_letters_ = 0;
  } else if (Running()) {
    // Only the streams that fail or are stuck are rebuilt: the others work.
    std::vector<Slot*> stuck;
    for (auto& slot : slots_) {
      if (Stuck(*slot)) stuck.push_back(slot.get());
    }
    if (stuck.empty()) return false;
    spdlog::info("route {}: resuming: dropping {} stuck stream(s) of {} ({}) and reconnecting them now on a new "
                 "connection",
                 options_.route, stuck.size(), slots_.size(), LaneStateName(state()));
    streams_.ResetConnection();
    backoff_.Reset();
    uint64_t resent = 0;
    for (Slot* s : stuck) resent += TearDown(*s);
    if (resent > 0) route_metrics_.ResentRecords(resent);
    for (Slot* s : stuck) {
      if (s->state == StreamState::kClosed) Connect(*s);
    }
    Wake();
    Pump();
    return true;
  } else {
    return false;
  }
  streams_.ResetConnection();
  backoff_.Reset();
  park_timer_.cancel();
  mode_ = Mode::kRunning;
  Wake();
  return true;
}

bool DrainLane::Stuck(const Slot& s) const {
  // ACKs come every few hundred ms while requests are in flight; this long
  // without any server message is not a slow server but a stuck one.
  constexpr auto kSilence = std::chrono::seconds(5);
  const auto now = MonotonicClock::now();
  switch (s.state) {
    case StreamState::kBackoff:
      return true;
    case StreamState::kConnecting:
      return now - s.connect_started > kSilence;
    case StreamState::kStreaming:
    case StreamState::kRotating:
      // Silent since the server last spoke or since the oldest request in
      // flight went out, whichever is later (an idle stream that just got
      // records is not stuck).
      return !s.window.empty() && now - std::max(s.last_server_message, s.window_started) > kSilence;
    default:
      return false;
  }
}

void DrainLane::NewGeneration(Slot& s) {
  ++s.gen;  // events and reads of the previous call are dropped from now on
  s.paced.reset();  // given back by TearDown; read again
  s.pace_timer.cancel();
  s.idle_timer.cancel();
}

template <typename Fire>
void DrainLane::OnSlotTimer(Slot& s, MonotonicTimer& timer, MonotonicClock::duration after, Fire fire) {
  const uint64_t gen = s.gen;
  Slot* slot = &s;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  timer.expires_after(after);
  timer.async_wait([weak, slot, gen, fire = std::move(fire)](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || slot->gen != gen) return;
    fire(*self, *slot);
  });
}

void DrainLane::Connect(Slot& s) {
  // Records may have left without an ACK (drop_oldest): start after them.
  cursor_.SkipTo(spool_.Stats(options_.route).deleted_up_to);
  // The first stream opens while anything is unacked; another only while
  // records wait to be sent.
  const bool needed = s.index == 0 ? HasRecords() : cursor_.waiting(durable_seq_) > 0;
  if (!needed || !Running()) {
    s.state = StreamState::kClosed;
    if (OpenStreams() == 0 && !HasRecords()) {
      EndOutage("idle (nothing to send)");  // a failure with nothing at stake is not an ongoing outage
    }
    PublishGauges();
    return;
  }
  s.state = StreamState::kConnecting;
  s.connect_started = MonotonicClock::now();
  if (options_.on_stream_open) options_.on_stream_open();
  NewGeneration(s);
  const uint64_t gen = s.gen;
  Slot* slot = &s;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  // The whole open (token + create reply) is bounded by create_timeout.
  OnSlotTimer(s, s.create_timer, options_.create_timeout, [](DrainLane& self, Slot& slot) {
    if (slot.state != StreamState::kConnecting) return;
    const auto ms = self.options_.create_timeout.count();
    if (slot.stream == nullptr) {
      self.Fail(slot, absl::DeadlineExceededError(absl::StrCat("no OAuth token within create_timeout_ms (", ms, " ms)")),
                FailureKind::kToken);
    } else if (!slot.stream->response_started()) {
      // Not even response headers: the connection is dead or the endpoint
      // does not answer. A new connection is made for the next attempt.
      self.Fail(slot,
                absl::DeadlineExceededError(absl::StrCat("no answer from ", self.options_.endpoint,
                                                         " within create_timeout_ms (", ms,
                                                         " ms): the connection looks dead")),
                FailureKind::kConnect);
    } else {
      self.Fail(slot,
                absl::DeadlineExceededError(
                    absl::StrCat("stream creation timed out: no create_stream_response within ", ms, " ms")),
                FailureKind::kStream);
    }
  });
  tokens_.GetToken(
      options_.table,
      [weak, slot, gen](absl::StatusOr<std::string> token) {
        if (auto self = weak.lock()) self->OnToken(*slot, gen, std::move(token));
      },
      PostTo(loop_));
}

void DrainLane::OnToken(Slot& s, uint64_t gen, absl::StatusOr<std::string> token) {
  ZB_CHECK_ON_LOOP(loop_);
  if (gen != s.gen || s.state != StreamState::kConnecting) return;
  if (!token.ok()) {
    metrics_.TokenFetchFailure(options_.route, options_.table);
    s.create_timer.cancel();
    const absl::Status& status = token.status();
    if (absl::IsUnavailable(status) || absl::IsCancelled(status)) {
      // The endpoint is down, slow, or answered something unusable: a
      // service fault, retried.
      const auto delay = backoff_.Next();
      ReportFailure(FailureKind::kToken, status, absl::StrCat("retrying in ", delay.count(), " ms"));
      ScheduleReconnect(s, delay);
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
  Slot* slot = &s;
  s.window.Reset();
  s.stream = streams_.Open(params, [weak, slot, gen](StreamEvent ev) {
    if (auto self = weak.lock()) self->OnStreamEvent(*slot, gen, std::move(ev));
  });
}

void DrainLane::OnStreamEvent(Slot& s, uint64_t gen, StreamEvent ev) {
  ZB_CHECK_ON_LOOP(loop_);
  if (gen != s.gen) return;
  if (ev.kind == StreamEvent::Kind::kCreated || ev.kind == StreamEvent::Kind::kAck ||
      ev.kind == StreamEvent::Kind::kCloseSignal) {
    s.last_server_message = MonotonicClock::now();
  }
  if (ev.kind != StreamEvent::Kind::kWriteDone && !s.window.empty()) ArmAckTimer(s);
  switch (ev.kind) {
    case StreamEvent::Kind::kCreated:
      if (s.state != StreamState::kConnecting) {
        Fail(s, absl::InternalError("unexpected second create_stream_response"));
        return;
      }
      OnCreated(s, ev.text);
      return;
    case StreamEvent::Kind::kAck:
      if (s.state == StreamState::kConnecting) {
        Fail(s, absl::InternalError("ACK before create_stream_response"));
        return;
      }
      OnAck(s, ev.offset);
      return;
    case StreamEvent::Kind::kCloseSignal:
      OnCloseSignal(s, ev.grace);
      return;
    case StreamEvent::Kind::kProtocolError:
      Fail(s, absl::InternalError(absl::StrCat("protocol error from server: ", ev.text)));
      return;
    case StreamEvent::Kind::kWriteDone:
      if (ev.ok) Pump();  // room in the stream's queue
      return;           // else kDone follows with the reason
    case StreamEvent::Kind::kReadClosed:
      return;  // kDone follows with the reason
    case StreamEvent::Kind::kDone:
      if (mode_ == Mode::kStopping) {
        TearDown(s);
        MaybeFinishStop();
        return;
      }
      if (s.state == StreamState::kRotating || s.state == StreamState::kDraining) {
        FinishRotation(s);  // the rotation's close (6002 or OK) is routine
        return;
      }
      if (s.state == StreamState::kClosing && s.window.empty()) {
        // Closed for idleness: routine, whatever the server's last word.
        TearDown(s);
        spdlog::debug("route {}: stream {} (#{}) closed: idle", options_.route, s.stream_id, s.index);
        Wake();  // records that came meanwhile may need a stream
        Pump();
        return;
      }
      Fail(s, ev.status.ok() ? absl::UnavailableError("stream closed by server without errors") : ev.status,
           ev.link == StreamEvent::Link::kTlsFailed       ? FailureKind::kTls
           : ev.link == StreamEvent::Link::kConnectFailed ? FailureKind::kConnect
                                                          : FailureKind::kStream);
      return;
  }
}

void DrainLane::OnCreated(Slot& s, const std::string& stream_id) {
  s.create_timer.cancel();
  s.state = StreamState::kStreaming;
  s.stream_id = stream_id;
  s.last_sent = MonotonicClock::now();
  metrics_.StreamOpened(options_.route);
  if (slots_.size() == 1) {
    spdlog::info("route {}: stream {} open to {} (resuming at seq {}, {} records spooled{})", options_.route,
                 stream_id, options_.table, cursor_.done_up_to() + 1, Spooled(),
                 isolation_.active ? ", isolating a refused record" : "");
  } else {
    spdlog::info("route {}: stream {} (#{}, {} of at most {} open) open to {} ({} records spooled, {} waiting{})",
                 options_.route, stream_id, s.index, OpenStreams(), slots_.size(), options_.table, Spooled(),
                 cursor_.waiting(durable_seq_), isolation_.active ? ", isolating a refused record" : "");
  }
  PublishGauges();
  ArmIdleTimer(s);
  Pump();
}

DrainLane::Slot* DrainLane::ReadyStream(bool* held) {
  *held = false;
  // While isolating a refused record, one request at a time.
  const uint32_t max_inflight = isolation_.active ? 1 : options_.max_inflight_requests;
  // The lowest-numbered stream first: the others are there for what it
  // cannot carry, and go idle (and close) when it can.
  for (auto& slot : slots_) {
    Slot& s = *slot;
    if (s.state == StreamState::kRotating || s.state == StreamState::kDraining) {
      *held = true;  // cannot send until it is replaced
      continue;
    }
    if (s.state != StreamState::kStreaming || s.stream == nullptr) continue;
    if (s.paced || s.window.size() >= max_inflight) {
      *held = true;
      continue;
    }
    if (s.stream->queued_writes() >= kMaxQueuedRequests) continue;  // kWriteDone pumps again
    return &s;
  }
  return nullptr;
}

void DrainLane::Pump() {
  if (!Running() || read_in_flight_) return;
  const std::optional<LaneCursor::Span> span = cursor_.Next(durable_seq_);
  if (!span) return;
  bool held = false;
  Slot* ready = ReadyStream(&held);
  if (ready == nullptr) {
    if (held) MaybeOpenStream();
    return;
  }
  Slot& s = *ready;
  uint32_t max_records = options_.max_batch_records;
  if (isolation_.active && span->first <= isolation_.until) {
    max_records = static_cast<uint32_t>(std::min<uint64_t>(isolation_.batch, isolation_.until - span->first + 1));
  }
  if (span->resend) max_records = static_cast<uint32_t>(std::min<uint64_t>(max_records, span->last - span->first + 1));
  // No request larger than the pace's buckets: one would trip the quota.
  if (s.pacer) max_records = static_cast<uint32_t>(std::min<uint64_t>(max_records, s.pacer->max_rows()));
  const uint64_t available = cursor_.waiting(durable_seq_);
  if (!isolation_.active && available < max_records && InflightRequests() > 0 && options_.linger.count() > 0 &&
      !linger_expired_) {
    // Requests are in flight anyway: wait briefly for a fuller batch.
    if (!linger_armed_) {
      linger_armed_ = true;
      std::weak_ptr<DrainLane> weak = weak_from_this();
      linger_timer_.expires_after(options_.linger);
      linger_timer_.async_wait([weak](const boost::system::error_code& ec) {
        auto self = weak.lock();
        if (ec || !self || !self->linger_armed_) return;
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
  const uint64_t read_id = ++read_id_;
  const uint64_t gen = s.gen;
  Slot* slot = &s;
  std::weak_ptr<DrainLane> weak = weak_from_this();
  // max_batch_bytes bounds the request as encoded (its records, their
  // framing and the envelope), so no request passes the service's limit.
  uint64_t request_budget = options_.max_batch_bytes;
  if (s.pacer) request_budget = std::min(request_budget, s.pacer->max_bytes());
  // (A record larger than the budget still goes, alone.)
  const uint64_t record_budget = request_budget - std::min(request_budget, kRequestEnvelopeBytes);
  spool_.ReadFromAsync(
      options_.route, span->first, max_records, record_budget, kRecordFramingBytes,
      [weak, read_id, slot, gen, span = *span, durable = durable_seq_](absl::StatusOr<std::vector<SpoolRecord>> records) {
        if (auto self = weak.lock()) self->OnRead(read_id, *slot, gen, span, durable, std::move(records));
      },
      PostTo(loop_));
}

void DrainLane::MaybeOpenStream() {
  // One stream opens at a time, none while one fails or while a refused
  // record is isolated (one request at a time then).
  if (isolation_.active) return;
  Slot* closed = nullptr;
  uint64_t carried = 0;  // what the open streams send in the next half second, about
  for (auto& slot : slots_) {
    Slot& s = *slot;
    if (s.state == StreamState::kConnecting || s.state == StreamState::kBackoff) return;
    if (s.state == StreamState::kClosed) {
      if (closed == nullptr) closed = &s;
      continue;
    }
    if (!s.pacer) {
      carried += options_.max_batch_records;
      continue;
    }
    // Half a second at its pace, in rows, or in bytes at the size of the
    // records read last, whichever is fewer.
    const uint64_t by_bytes = s.pacer->max_bytes() / std::max<uint64_t>(1, record_bytes_estimate_);
    carried += std::max<uint64_t>(1, std::min(s.pacer->max_rows(), by_bytes));
  }
  if (closed == nullptr || cursor_.waiting(durable_seq_) <= carried) return;
  spdlog::debug("route {}: opening stream #{}: {} records wait and every open stream is at its pace or window",
                options_.route, closed->index, cursor_.waiting(durable_seq_));
  Connect(*closed);
}

void DrainLane::OnRead(uint64_t read_id, Slot& s, uint64_t gen, LaneCursor::Span span, SeqNo durable_at_read,
                       absl::StatusOr<std::vector<SpoolRecord>> records) {
  ZB_CHECK_ON_LOOP(loop_);
  if (read_id != read_id_) return;  // a TearDownAll dropped it
  read_in_flight_ = false;
  if (gen != s.gen || s.state != StreamState::kStreaming || s.stream == nullptr || !Running()) {
    // That stream ended or stops sending: nothing was taken; another reads.
    Pump();
    return;
  }
  if (!records.ok()) {
    if (!absl::IsDataLoss(records.status())) {
      Fail(s, absl::UnavailableError(absl::StrCat("spool read: ", records.status().message())));  // retried
      return;
    }
    // A damaged record cannot be sent and must not be skipped silently
    // (architecture.md invariant 9): the lane parks, other lanes go on.
    TearDownAll();
    Park(absl::StrCat("cannot read the spool at seq ", span.first, ": ", records.status().message(),
                      "; the spool is damaged (check it with `zerobusctl spool verify`)"));
    return;
  }
  // A span given back ends where it ends; what follows is another's.
  while (!records->empty() && records->back().seq > span.last) records->pop_back();
  if (records->empty()) {
    // Nothing left of that span: gone from the spool meanwhile (dropped,
    // dead-lettered). A fresh read that finds nothing saw every record that
    // was durable when it was issued gone (drop_oldest).
    cursor_.Done(span.first, span.resend ? span.last : durable_at_read);
    Pump();
    return;
  }
  ReadBatch batch;
  batch.payloads.reserve(records->size());
  for (auto& r : *records) {
    batch.bytes += r.payload.size();
    batch.payloads.push_back(std::move(r.payload));
  }
  batch.first = records->front().seq;
  batch.last = records->back().seq;
  record_bytes_estimate_ = batch.bytes / batch.payloads.size() + kRecordFramingBytes;
  batch.oldest_append_us = records->front().append_time_us;
  // Seqs before the first record read are gone from the spool.
  if (batch.first > span.first) cursor_.Done(span.first, batch.first - 1);
  cursor_.Take(batch.first, batch.last);
  durable_seq_ = std::max(durable_seq_, batch.last);
  SendPaced(s, std::move(batch));
}

void DrainLane::SendPaced(Slot& s, ReadBatch batch) {
  if (s.pacer) {
    // What the service counts: the rows, and the request as encoded (at
    // most this much; see kRequestEnvelopeBytes).
    const uint64_t rows = batch.payloads.size();
    const uint64_t request_bytes = kRequestEnvelopeBytes + batch.bytes + rows * kRecordFramingBytes;
    const MonotonicClock::duration wait = s.pacer->Delay(rows, request_bytes, MonotonicClock::now());
    if (wait > MonotonicClock::duration::zero()) {
      route_metrics_.PacedSeconds(std::chrono::duration<double>(wait).count());
      s.paced = std::move(batch);
      OnSlotTimer(s, s.pace_timer, wait, [](DrainLane& self, Slot& slot) {
        // Rotating or stopping: it is not sent; it goes back to the lane
        // when the call ends (TearDown).
        if (!slot.paced || slot.state != StreamState::kStreaming || slot.stream == nullptr || !self.Running()) return;
        ReadBatch held = std::move(*slot.paced);
        slot.paced.reset();
        self.SendPaced(slot, std::move(held));
      });
      Pump();  // another stream may take the next read
      return;
    }
  }
  Send(s, std::move(batch));
}

void DrainLane::Send(Slot& s, ReadBatch batch) {
  const int64_t offset = s.window.Add(batch.first, batch.last, static_cast<uint32_t>(batch.payloads.size()),
                                      batch.bytes, batch.oldest_append_us);
  s.stream->Write(offset, std::move(batch.payloads));
  s.last_sent = MonotonicClock::now();
  if (s.window.size() == 1) {
    s.window_started = s.last_sent;
    ArmAckTimer(s);
  }
  PublishGauges();
  Pump();
}

void DrainLane::OnAck(Slot& s, int64_t offset) {
  auto acked = s.window.Ack(offset);
  if (!acked.ok()) {
    spdlog::error("route {}: stream {}: {}; reopening the stream", options_.route, s.stream_id,
                  std::string(acked.status().message()));
    Fail(s, absl::InternalError(std::string(acked.status().message())));
    return;
  }
  if (acked->records > 0) {
    // Each request's span is deleted: adjacent ones as one range.
    const auto on_deleted = [route = options_.route](absl::Status st) {
      if (!st.ok()) spdlog::error("route {}: spool delete failed: {}", route, st.ToString());
    };
    std::optional<std::pair<SeqNo, SeqNo>> range;
    for (const auto& r : acked->requests) {
      cursor_.Done(r.first_seq, r.last_seq);
      if (range && r.first_seq == range->second + 1) {
        range->second = r.last_seq;
        continue;
      }
      if (range) spool_.DeleteRangeAsync(options_.route, range->first, range->second, on_deleted);
      range.emplace(r.first_seq, r.last_seq);
    }
    if (range) spool_.DeleteRangeAsync(options_.route, range->first, range->second, on_deleted);
    route_metrics_.AckedRecords(acked->records);
    route_metrics_.StreamAckedRecords(s.index, acked->records);
    const int64_t now = NowUs();
    for (const auto& r : acked->requests) metrics_.AckLatency(static_cast<double>(now - r.oldest_append_us) / 1e6);
    backoff_.Reset();
    EndOutage("recovered");  // records are delivered: not just a stream that opened
    auth_retry_used_ = false;  // the credentials work: a later refusal gets its fresh-token retry again
    consecutive_dead_letters_ = 0;
    if (isolation_.active && cursor_.done_up_to() >= isolation_.until) {
      spdlog::info("route {}: isolation done: every record up to seq {} is delivered or dead-lettered",
                   options_.route, isolation_.until);
      isolation_ = Isolation{};
    } else if (isolation_.active) {
      // Accepted: the refused record is elsewhere; grow back quickly.
      isolation_.batch = std::min(isolation_.batch * 2, options_.max_batch_records);
    }
  }
  if (s.window.empty()) {
    s.ack_timer.cancel();
    ArmIdleTimer(s);
  }
  PublishGauges();
  if (mode_ == Mode::kStopping) {
    if (s.window.empty()) CloseForStop(s);
    return;
  }
  if (s.state == StreamState::kRotating && s.window.empty()) {
    BeginRotationDrain(s);  // everything in flight is acked: replace the stream now
    return;
  }
  if (s.state == StreamState::kDraining && s.window.empty()) {
    FinishRotation(s);
    return;
  }
  Pump();
}

void DrainLane::ArmIdleTimer(Slot& s) {
  if (slots_.size() == 1) return;  // the one stream stays open
  OnSlotTimer(s, s.idle_timer, options_.stream_idle_close, [](DrainLane& self, Slot& slot) {
    if (!self.Running() || slot.state != StreamState::kStreaming || !slot.window.empty() || slot.paced) return;
    if (MonotonicClock::now() - slot.last_sent < self.options_.stream_idle_close) {
      self.ArmIdleTimer(slot);  // sent meanwhile: look again later
      return;
    }
    // Another stream stays open (records that come go there at once).
    const bool another = std::any_of(self.slots_.begin(), self.slots_.end(), [&](const auto& o) {
      return o.get() != &slot && o->state == StreamState::kStreaming;
    });
    if (!another) return;  // an ACK that empties its window looks again
    spdlog::debug("route {}: stream {} (#{}) idle for {} ms: closing it", self.options_.route, slot.stream_id,
                  slot.index, self.options_.stream_idle_close.count());
    slot.state = StreamState::kClosing;
    slot.stream->WritesDone();  // kDone follows
    self.PublishGauges();
    // A server that never ends the half-closed call does not keep it.
    self.OnSlotTimer(slot, slot.grace_timer, self.options_.max_close_grace, [](DrainLane& lane, Slot& closing) {
      if (closing.state != StreamState::kClosing || !lane.Running()) return;
      lane.TearDown(closing);
      lane.Wake();
      lane.Pump();
    });
  });
}

void DrainLane::OnCloseSignal(Slot& s, std::chrono::milliseconds grace) {
  // Stopping: the stream closes once its ACKs are in anyway.
  if (s.state != StreamState::kStreaming || !Running()) return;
  metrics_.StreamRotation(options_.route);
  const auto wait = std::min(grace, options_.max_close_grace);
  spdlog::info("route {}: stream {} rotating (server grace {} ms, {} requests in flight)", options_.route,
               s.stream_id, grace.count(), s.window.size());
  if (s.window.empty() || wait.count() == 0) {
    BeginRotationDrain(s);
    return;
  }
  s.state = StreamState::kRotating;  // stop sending; keep applying ACKs
  OnSlotTimer(s, s.grace_timer, wait, [](DrainLane& self, Slot& slot) {
    if (slot.state == StreamState::kRotating) self.BeginRotationDrain(slot);
  });
}

void DrainLane::BeginRotationDrain(Slot& s) {
  // Half-close (END_STREAM before any cancel), then take late ACKs for a
  // moment: each one saves a duplicate.
  if (s.window.empty()) {
    if (s.stream) s.stream->WritesDone();
    FinishRotation(s);
    return;
  }
  s.state = StreamState::kDraining;
  if (s.stream) s.stream->WritesDone();
  OnSlotTimer(s, s.grace_timer, options_.rotation_drain, [](DrainLane& self, Slot& slot) {
    if (slot.state == StreamState::kDraining) self.FinishRotation(slot);
  });
}

void DrainLane::FinishRotation(Slot& s) {
  if (mode_ == Mode::kStopping) {
    TearDown(s);
    MaybeFinishStop();
    return;
  }
  // A rotation is routine: no failure is counted and the new stream opens at
  // once, resending whatever was not acked (at-least-once).
  const uint64_t resent = TearDown(s);
  if (resent > 0) {
    route_metrics_.ResentRecords(resent);
    spdlog::info("route {}: {} records of the rotated stream were not acked; resending them", options_.route, resent);
  }
  Connect(s);
  Pump();
}

uint64_t DrainLane::TearDown(Slot& s) {
  uint64_t resent = 0;
  // What was sent and not acked, or read and held for the pace, goes back.
  for (const InflightRequest& r : s.window.requests()) {
    cursor_.GiveBack(r.first_seq, r.last_seq);
    resent += r.records;
  }
  if (s.paced) cursor_.GiveBack(s.paced->first, s.paced->last);
  s.create_timer.cancel();
  s.ack_timer.cancel();
  s.grace_timer.cancel();
  s.retry_timer.cancel();
  if (s.stream) s.stream->Cancel();
  s.stream.reset();
  NewGeneration(s);
  s.window.Reset();
  s.state = StreamState::kClosed;
  PublishGauges();
  return resent;
}

uint64_t DrainLane::TearDownAll() {
  uint64_t resent = 0;
  for (auto& s : slots_) resent += TearDown(*s);
  ++read_id_;  // a read under way is dropped: nothing of it was taken
  read_in_flight_ = false;
  linger_armed_ = false;
  linger_expired_ = false;
  linger_timer_.cancel();
  return resent;
}

void DrainLane::Fail(Slot& s, const absl::Status& failure, FailureKind kind) {
  // The server's structured reason (ErrorInfo) joins the words, so every
  // log line, park reason and dead letter shows which check failed.
  const std::string reason = ServerErrorReason(failure);
  const absl::Status status =
      reason.empty() ? absl::Status(failure.code(), failure.message())
                     : absl::Status(failure.code(), absl::StrCat(failure.message(), " [", reason, "]"));
  if (mode_ == Mode::kStopping) {
    TearDown(s);
    MaybeFinishStop();
    return;
  }
  if (!Running()) {
    TearDown(s);
    return;
  }
  // Whether create_stream was answered: a refusal after that with requests
  // in flight is about records, before it about the table.
  const bool created = Open(s);
  const InflightRequest oldest = s.window.empty() ? InflightRequest{} : s.window.front();
  const size_t requests_in_flight = s.window.size();
  const uint64_t resent = TearDown(s);
  if (resent > 0) route_metrics_.ResentRecords(resent);
  const absl::StatusCode code = status.code();
  metrics_.StreamFailure(options_.route, StatusCodeName(code));
  // Only a stream's: at create time it is not about the stream's pace.
  if (code == absl::StatusCode::kResourceExhausted && created) {
    metrics_.QuotaTrip(options_.route);
    if (s.pacer) {
      // The real quota is below the configured one (or another client
      // shares it): this stream goes slower from now on, its pace coming
      // back a little every second.
      s.pacer->Throttled(MonotonicClock::now());
      spdlog::warn("route {}: Zerobus ended stream #{} for its quota ({}); pacing it at {:.0f}% of {} rows/s and "
                   "{} bytes/s (zerobus.stream_quota) from now",
                   options_.route, s.index, status.ToString(), s.pacer->pace() * 100,
                   options_.stream_quota->rows_per_second, options_.stream_quota->bytes_per_second);
    }
  }
  // A connection that failed, or went silent (our own timeouts), is not
  // used again: the next attempt dials a new one.
  if (kind == FailureKind::kConnect || kind == FailureKind::kTls || code == absl::StatusCode::kDeadlineExceeded) {
    streams_.ResetConnection();
  }

  if (code == absl::StatusCode::kUnauthenticated || code == absl::StatusCode::kPermissionDenied) {
    tokens_.Invalidate(options_.table);
    CountFailure(kind, status);
    // The token is the table's: every stream's is refused too.
    const uint64_t others = TearDownAll();
    if (others > 0) route_metrics_.ResentRecords(others);
    if (!auth_retry_used_) {
      auth_retry_used_ = true;
      spdlog::warn("route {}: Zerobus refused the token for {} ({}); retrying once with a fresh token",
                   options_.route, options_.table, status.ToString());
      ScheduleReconnect(*slots_[0], options_.backoff.min_delay);
      return;
    }
    Park(absl::StrCat("Zerobus refused a fresh token for table ", options_.table, ": ", status.ToString(), "; ",
                      OperatorHint(code)));
    return;
  }
  if (code == absl::StatusCode::kInvalidArgument && created && requests_in_flight > 0) {
    // One stream finds the refused record; the others' spans go back.
    const SeqNo last_sent = cursor_.last_taken();
    const uint64_t others = TearDownAll();
    if (others > 0) route_metrics_.ResentRecords(others);
    Isolate(status, reason, oldest, requests_in_flight, last_sent);
    return;
  }
  if (!IsRetryable(code)) {
    CountFailure(kind, status);
    const uint64_t others = TearDownAll();
    if (others > 0) route_metrics_.ResentRecords(others);
    Park(absl::StrCat("Zerobus refused the stream for table ", options_.table, ": ", status.ToString(), "; ",
                      OperatorHint(code)));
    return;
  }
  const auto delay = backoff_.Next();
  ReportFailure(kind, status,
                absl::StrCat(resent > 0 ? absl::StrCat(resent, " records will be resent; ") : std::string(),
                             "reconnecting in ", delay.count(), " ms"));
  ScheduleReconnect(s, delay);
  Pump();  // the other streams take what it gave back
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
                   Spooled(), next);
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

void DrainLane::Isolate(const absl::Status& status, const std::string& reason, const InflightRequest& oldest,
                        size_t requests_in_flight, SeqNo last_sent) {
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
                 options_.route, status.ToString(), cursor_.done_up_to() + 1, last_sent);
  }
  ++isolation_.failures;
  if (!refused_request_known || oldest.records > 1) {
    isolation_.batch = refused_request_known ? oldest.records / 2 : std::max<uint32_t>(1, oldest.records);
    ScheduleReconnect(*slots_[0], options_.backoff.min_delay);
    return;
  }
  // The one request in flight, of one record, was refused: that record goes
  // to the dead-letter store, with the server's verdict.
  const SeqNo seq = oldest.first_seq;
  DeadLetterInfo info;
  info.table = options_.table;
  info.code = StatusCodeName(status.code());
  info.message = std::string(status.message());
  info.reason = reason;
  info.attempts = isolation_.failures;
  info.first_failure_us = isolation_.first_failure_us;
  mode_ = Mode::kDeadLettering;
  // What is acked below it: make sure the spool has let it go (a delete
  // that failed earlier is issued again, in order before the move).
  const SeqNo acked_below = std::min(cursor_.done_up_to(), seq - 1);
  if (acked_below > 0) spool_.DeleteUpToAsync(options_.route, acked_below, nullptr);
  std::weak_ptr<DrainLane> weak = weak_from_this();
  spool_.dead_letters().MoveAsync(
      options_.route, seq, std::move(info),
      [weak, seq](absl::Status st) {
        if (auto self = weak.lock()) self->OnDeadLettered(seq, st);
      },
      PostTo(loop_));
}

void DrainLane::OnDeadLettered(SeqNo seq, const absl::Status& status) {
  ZB_CHECK_ON_LOOP(loop_);
  if (mode_ != Mode::kDeadLettering) return;  // stopped meanwhile
  mode_ = Mode::kRunning;
  const bool already_gone = absl::IsNotFound(status);  // dropped by policy meanwhile: nothing moved
  if (!status.ok() && !already_gone) {
    // The record stays at the head of the lane; it is found again.
    const auto delay = backoff_.Next();
    spdlog::error("route {}: cannot move seq {} to the dead-letter store: {}; retrying in {} ms", options_.route,
                  seq, status.ToString(), delay.count());
    ScheduleReconnect(*slots_[0], delay);
    return;
  }
  cursor_.Done(seq, seq);
  if (!already_gone) {
    metrics_.DeadLetterRecords(options_.route, 1);
    ++consecutive_dead_letters_;
    spdlog::error("route {}: record seq {} moved to the dead-letter store: Zerobus refused it for {} "
                  "(see `zerobusctl dlq list --route {}`)",
                  options_.route, seq, options_.table, options_.route);
  }
  isolation_.failures = 0;
  isolation_.first_failure_us = NowUs();
  isolation_.batch = 2;
  if (cursor_.done_up_to() >= isolation_.until) isolation_ = Isolation{};
  if (consecutive_dead_letters_ >= options_.max_consecutive_dead_letters) {
    Park(absl::StrCat(consecutive_dead_letters_, " records in a row were refused by table ", options_.table,
                      " with nothing accepted between them: the table, not the records, looks wrong; ",
                      OperatorHint(absl::StatusCode::kInvalidArgument),
                      ". The dead-lettered records can be replayed with `zerobusctl dlq replay`"));
    return;
  }
  ScheduleReconnect(*slots_[0], options_.backoff.min_delay);
}

void DrainLane::Park(const std::string& reason) {
  TearDownAll();
  mode_ = Mode::kParked;
  parked_reason_ = reason;
  isolation_ = Isolation{};
  metrics_.LaneParked(options_.route, true);
  spdlog::error("route {}: parked: {}. Its records stay spooled ({} now); it tries again in {} s, or at once on "
                "SIGHUP (systemctl reload zerobusd)",
                options_.route, reason, Spooled(),
                std::chrono::duration_cast<std::chrono::seconds>(options_.parked_retry).count());
  std::weak_ptr<DrainLane> weak = weak_from_this();
  park_timer_.expires_after(options_.parked_retry);
  park_timer_.async_wait([weak](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    self->Resume();
  });
}

void DrainLane::ScheduleReconnect(Slot& s, std::chrono::milliseconds delay) {
  s.state = StreamState::kBackoff;
  PublishGauges();
  OnSlotTimer(s, s.retry_timer, delay, [](DrainLane& self, Slot& slot) {
    if (slot.state == StreamState::kBackoff) self.Connect(slot);
  });
}

void DrainLane::ArmAckTimer(Slot& s) {
  OnSlotTimer(s, s.ack_timer, options_.ack_timeout, [](DrainLane& self, Slot& slot) {
    if (slot.window.empty()) return;
    self.Fail(slot, absl::DeadlineExceededError("server ack timeout: no message from the server while requests "
                                                "were in flight"));
  });
}

void DrainLane::Stop(std::function<void()> done) {
  ZB_CHECK_ON_LOOP(loop_);
  stop_done_ = std::move(done);
  const Mode previous = mode_;
  mode_ = Mode::kStopping;
  park_timer_.cancel();
  linger_timer_.cancel();
  linger_armed_ = false;
  if (previous != Mode::kRunning) {
    FinishStop();
    return;
  }
  for (auto& slot : slots_) {
    Slot& s = *slot;
    s.retry_timer.cancel();
    s.create_timer.cancel();
    s.grace_timer.cancel();
    s.idle_timer.cancel();
    if (s.stream == nullptr || !Open(s)) {
      TearDown(s);  // connecting or waiting: nothing in flight
    } else if (s.window.empty()) {
      CloseForStop(s);
    }
    // else: OnAck closes it once its window drains (or Abort at the deadline).
  }
  MaybeFinishStop();
}

void DrainLane::CloseForStop(Slot& s) {
  if (s.state == StreamState::kClosing || s.stream == nullptr) return;
  // (A draining rotation has half-closed already.)
  if (s.state != StreamState::kDraining) s.stream->WritesDone();  // kDone follows once the server ends the call
  s.state = StreamState::kClosing;
}

void DrainLane::MaybeFinishStop() {
  if (mode_ != Mode::kStopping) return;
  for (const auto& s : slots_) {
    if (s->state != StreamState::kClosed) return;
  }
  FinishStop();
}

void DrainLane::Abort() {
  ZB_CHECK_ON_LOOP(loop_);
  if (mode_ == Mode::kStopped) return;
  mode_ = Mode::kStopping;
  FinishStop();
}

void DrainLane::FinishStop() {
  if (mode_ == Mode::kStopped) return;
  mode_ = Mode::kStopped;
  TearDownAll();
  park_timer_.cancel();
  PublishGauges();
  if (stop_done_) {
    auto done = std::move(stop_done_);
    stop_done_ = nullptr;
    done();
  }
}

void DrainLane::PublishGauges() {
  route_metrics_.InflightRequests(InflightRequests());
  const size_t open = OpenStreams();
  if (open != open_streams_published_) {
    open_streams_published_ = open;
    metrics_.OpenStreams(options_.route, open);
  }
}

}  // namespace zb
