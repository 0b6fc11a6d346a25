#pragma once
// One route's drain: reads the spool from the lane's lowest unacked seq,
// sends batches on up to max_streams Zerobus streams, each within a bounded
// in-flight window and paced under the per-stream quota, maps ACKs back to
// spool seqs and deletes only what an ACK covers (architecture.md
// invariants 2-4, 8).
//
// Streams: the first opens when records wait; another opens, one at a time,
// when every open stream is held by its pace or its full window and more
// records wait than the open streams carry in half a second; a stream with
// nothing in flight for stream_idle_close closes while another stream is
// open. Each request takes a contiguous span of seqs (LaneCursor); its ACK
// deletes exactly that span, in whatever order the streams' ACKs come. Order
// across streams is not kept (the service does not keep it either); with
// max_streams 1 the lane sends in seq order on one stream.
//
// What goes wrong is classified as the protocol notes say:
//  - retryable codes: that stream's unacked spans go back to the lane (any
//    stream resends them, lowest first); it reconnects after capped
//    exponential backoff with full jitter, forever; the other streams go on;
//  - CloseStreamSignal: that stream stops sending, waits for its in-flight
//    ACKs (up to the server's grace), half-closes, takes late ACKs briefly,
//    reopens at once; routine, not a failure;
//  - RESOURCE_EXHAUSTED on a created stream: a quota trip; that stream's
//    pace halves before it reconnects;
//  - UNAUTHENTICATED / PERMISSION_DENIED: every stream ends; drop the cached
//    token and retry once at once with a fresh one; again: park;
//  - INVALID_ARGUMENT on a stream that was open with requests in flight: a
//    record-level refusal; every stream ends, and one stream resends one
//    request at a time, halving the failing request, until the one record
//    is found; it moves to the dead-letter store and the lane flows on;
//  - other non-retryable codes (NOT_FOUND, refusals at create, ...): the
//    table needs the operator; every stream ends and the lane parks (metric
//    and log line) until Resume() (SIGHUP) or a long timer.
//
// Loop thread only: every method, and every callback it makes. Each public
// method checks it (ZB_CHECK_ON_LOOP, in every build), and so do the
// handlers other modules' callbacks reach (spool, stream, token source,
// connect-failure explanation): each seam is given the loop as its executor
// and answers there, and one that answered on another thread aborts there
// instead of racing. The lane may be built before its loop runs (nothing
// can call it yet); it is destroyed on the loop or once no thread runs the
// loop.

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <optional>
#include <string>
#include <vector>

#include "auth/token_source.h"
#include "common/backoff.h"
#include "common/loop_post.h"
#include "common/loop_thread.h"
#include "drain/lane_cursor.h"
#include "drain/offset_window.h"
#include "drain/route_health.h"
#include "drain/stream_pacer.h"
#include "metrics/metrics.h"
#include "spool/spool.h"
#include "zerobus/ingest_stream.h"

namespace zb {

// Why connecting fails, in words, and what makes two explanations the same
// reason (the text may carry times that change with every probe).
struct ConnectExplanation {
  std::string reason;  // e.g. "tls/60/10": stage and codes
  std::string text;
};

// Requests a lane hands to one stream ahead of the one gRPC is writing. A
// stream takes no read while this many wait (or while a batch waits for its
// pace): what a stream holds in memory to send is at most this many plus
// one requests of max_batch_bytes, and a lane has max_streams streams, while
// max_inflight_requests counts the requests on the wire and at the server
// too. Two keep the transport busy: when a write ends, the next is ready
// and the lane reads a new one.
inline constexpr size_t kMaxQueuedRequests = 2;

struct DrainLaneOptions {
  std::string route;
  std::string table;
  bool proto = false;
  std::string descriptor_proto;
  // Streams the lane may hold open to its table at once (1: one ordered
  // stream). At most kMaxStreamLabels.
  uint32_t max_streams = 1;
  // A stream with nothing in flight this long closes, unless it is the
  // lane's only open stream.
  std::chrono::milliseconds stream_idle_close{30'000};
  // Per stream.
  uint32_t max_inflight_requests = 64;
  uint32_t max_batch_records = 1000;
  // The encoded request: records, their framing and the envelope (see
  // kRecordFramingBytes). One record larger than this goes alone.
  uint64_t max_batch_bytes = 2u << 20;
  // While requests are in flight, a batch with fewer than max_batch_records
  // waits up to this long for more records (an idle lane sends at once).
  std::chrono::milliseconds linger{5};
  std::chrono::milliseconds ack_timeout{60'000};
  std::chrono::milliseconds create_timeout{15'000};
  // Longest wait for in-flight ACKs after a CloseStreamSignal before the
  // stream is replaced anyway.
  std::chrono::milliseconds max_close_grace{10'000};
  // After the half-close that ends a rotation, late ACKs are still taken
  // for this long (fewer duplicates).
  std::chrono::milliseconds rotation_drain{500};
  // A parked lane tries again by itself after this long.
  std::chrono::milliseconds parked_retry{600'000};
  // This many records dead-lettered in a row with no ACK between them
  // means the table, not the records, is at fault: the lane parks.
  uint32_t max_consecutive_dead_letters = 100;
  // The service's per-stream quota: each stream paces its requests under
  // it (none: sent as fast as the window allows).
  std::optional<StreamQuota> stream_quota;
  BackoffOptions backoff;
  // While the lane keeps failing, a heartbeat line at most this often (the
  // first failures and every change of kind are logged at once).
  std::chrono::milliseconds failure_log_interval{120'000};
  // "host:port" of the Zerobus endpoint, for messages.
  std::string endpoint;
  // Optional. Explains a failure to connect in the operator's words (which
  // certificate check failed, what refused the connection), off the loop.
  // Called on the loop; `done` must run exactly once, through `on` (the
  // lane's loop: queued there, never inline, never on another thread). Asked
  // when the failure's kind changes and at each heartbeat, not per attempt.
  std::function<void(const PostFn& on, std::function<void(ConnectExplanation)> done)> explain_connect_failure;
  // Optional. Told on the loop at every stream open, before the token is
  // asked for (a route whose schema is its table reads the table again);
  // the open does not wait for what it does.
  std::function<void()> on_stream_open;
};

// The lane's state: its own while parked, dead-lettering or stopping, else
// the busiest of its streams' (streaming before rotating, draining,
// connecting, backoff; idle when no stream is open).
enum class LaneState {
  kIdle,           // nothing to send, no stream
  kConnecting,     // token, then create_stream
  kStreaming,
  kRotating,       // CloseStreamSignal: not sending, waiting for ACKs
  kDraining,       // half-closed after a rotation, taking late ACKs
  kBackoff,        // waiting to reconnect
  kDeadLettering,  // moving a refused record to the dead-letter store
  kParked,         // a table-level error: waiting for the operator
  kStopping,
  kStopped,
};
const char* LaneStateName(LaneState s);

class DrainLane : public std::enable_shared_from_this<DrainLane> {
 public:
  // All references must outlive the lane.
  DrainLane(boost::asio::io_context& loop, const DrainLaneOptions& options, Spool& spool,
            IngestStreamFactory& streams, TokenSource& tokens, Metrics& metrics);
  ~DrainLane();

  // Begins draining (connects at once if the spool holds records). New
  // records reach the lane by themselves: the spool tells it when they are
  // durable (Spool::WatchDurable, on the loop).
  void Start();
  // The operator says go (SIGHUP, `zerobusctl resume`): a parked lane tries
  // again now; the streams of a lane that fail or are stuck (reconnecting,
  // or with requests the server has not answered for a while) are dropped
  // and reconnect now on a new connection, while its working streams go on.
  // A lane that works is left alone. Returns whether the lane was parked or
  // any stream rebuilt.
  bool Resume();
  // Stops sending, waits for every stream's in-flight ACKs, half-closes;
  // `done` runs once every stream is closed or Abort() is called. Unacked
  // records stay spooled.
  void Stop(std::function<void()> done);
  // Cancels every stream at once (shutdown deadline passed).
  void Abort();

  // Reads, on the loop like the rest (tests too: they read through the loop).
  LaneState state() const;
  const std::string& parked_reason() const {
    ZB_CHECK_ON_LOOP(loop_);
    return parked_reason_;
  }
  // Failures by kind since the lane was made (status, metrics).
  const RouteHealth& health() const {
    ZB_CHECK_ON_LOOP(loop_);
    return health_;
  }
  // Requests in flight, all streams.
  size_t inflight_requests() const;
  // Streams open now (created, not yet ended).
  size_t open_streams() const;
  // Every seq <= this is acked (deleted or being deleted), dead-lettered or
  // dropped.
  SeqNo acked_seq() const {
    ZB_CHECK_ON_LOOP(loop_);
    return cursor_.done_up_to();
  }
  // A spool read or a linger wait is under way: more requests may follow
  // without any new event (tests wait for this to settle).
  bool busy_for_test() const;
  // A stream holds a batch that waits for the stream quota's pace.
  bool paced_for_test() const;

 private:
  // Records read from the spool, to go as one request: seqs first..last
  // (the records present among them; the others are gone from the spool).
  struct ReadBatch {
    SeqNo first = 0, last = 0;
    std::vector<std::string> payloads;
    uint64_t bytes = 0;  // payload
    int64_t oldest_append_us = 0;
  };
  // Record-level refusals being narrowed down to single records.
  struct Isolation {
    bool active = false;
    SeqNo until = 0;         // isolation ends once everything up to here is acked
    uint32_t batch = 1;      // records per request while isolating
    uint32_t failures = 0;   // refusals seen in this isolation
    int64_t first_failure_us = 0;
  };
  // What the lane itself is doing; while running, its streams say more.
  enum class Mode { kRunning, kParked, kDeadLettering, kStopping, kStopped };
  enum class StreamState {
    kClosed,      // no call
    kBackoff,     // waiting to reconnect
    kConnecting,  // token, then create_stream
    kStreaming,
    kRotating,    // CloseStreamSignal: not sending, waiting for its ACKs
    kDraining,    // half-closed after a rotation, taking late ACKs
    kClosing,     // half-closed (idle, or the lane stops): waiting for the end
  };
  // One of the lane's streams (a slot: its number names it in metrics and
  // logs, and its pace outlives the calls it makes).
  struct Slot {
    Slot(boost::asio::io_context& loop, uint32_t index);
    const uint32_t index;
    StreamState state = StreamState::kClosed;
    uint64_t gen = 0;  // bumps with every call; stale events are dropped
    std::unique_ptr<IngestStream> stream;
    std::string stream_id;
    OffsetWindow window;
    // When the server last said anything on the call, when the connect
    // began, when the window last went from empty to not, and when a
    // request last went out. On MonotonicClock (tests move it).
    MonotonicClock::time_point last_server_message, connect_started, window_started, last_sent;
    MonotonicTimer retry_timer, create_timer, ack_timer, grace_timer, pace_timer, idle_timer;
    // A batch read and waiting for the pace (one at most: the slot takes no
    // read meanwhile); sent when pace_timer fires.
    std::optional<ReadBatch> paced;
    // Kept across calls: the slower pace a RESOURCE_EXHAUSTED set outlives
    // the call it ended.
    std::optional<StreamPacer> pacer;
  };

  bool Running() const { return mode_ == Mode::kRunning; }
  bool Open(const Slot& s) const {
    return s.state == StreamState::kStreaming || s.state == StreamState::kRotating ||
           s.state == StreamState::kDraining || s.state == StreamState::kClosing;
  }
  // The public reads, unchecked (also before the loop runs).
  size_t InflightRequests() const;
  size_t OpenStreams() const;
  bool HasRecords() const { return durable_seq_ > cursor_.done_up_to(); }
  uint64_t Spooled() const { return durable_seq_ - cursor_.done_up_to(); }

  // Records up to `last_seq` are durable in the spool.
  void OnAppended(SeqNo last_seq);
  // Opens the first stream when none is open or on its way.
  void Wake();
  void Connect(Slot& s);
  void OnToken(Slot& s, uint64_t gen, absl::StatusOr<std::string> token);
  void OnStreamEvent(Slot& s, uint64_t gen, StreamEvent ev);
  void OnCreated(Slot& s, const std::string& stream_id);
  void OnAck(Slot& s, int64_t offset);
  void OnCloseSignal(Slot& s, std::chrono::milliseconds grace);
  // Hands the next read to the first stream that can send one; opens
  // another stream when every open one is held and records wait.
  void Pump();
  // The stream that may send the next request, if any; `held` says whether
  // an open stream is held by its pace or a full window.
  Slot* ReadyStream(bool* held);
  void MaybeOpenStream();
  // `durable_at_read`: the lane's durable end when the read was issued.
  void OnRead(uint64_t read_id, Slot& s, uint64_t gen, LaneCursor::Span span, SeqNo durable_at_read,
              absl::StatusOr<std::vector<SpoolRecord>> records);
  // Sends `batch` on `s` now if its pace allows, else holds it in s.paced
  // until it does.
  void SendPaced(Slot& s, ReadBatch batch);
  void Send(Slot& s, ReadBatch batch);
  void NewGeneration(Slot& s);
  void BeginRotationDrain(Slot& s);
  void FinishRotation(Slot& s);
  // Ends the stream's call (if any); what it had in flight or held goes
  // back to the lane, to be sent again. Returns those records.
  uint64_t TearDown(Slot& s);
  // TearDown of every stream; the lane's read and linger are dropped too.
  uint64_t TearDownAll();
  // `kind`: what failed (a connect or TLS failure, and our own timeouts,
  // replace the connection).
  void Fail(Slot& s, const absl::Status& status, FailureKind kind = FailureKind::kStream);
  RouteHealth::Report CountFailure(FailureKind kind, const absl::Status& status);
  // Counts a failure and logs it as RouteHealth says (`next`: what happens
  // now, e.g. "reconnecting in 400 ms").
  void ReportFailure(FailureKind kind, const absl::Status& status, const std::string& next);
  void OnExplained(FailureKind kind, const std::string& status_text, ConnectExplanation explanation);
  // Ends the current outage, if any, saying `how` ("recovered").
  void EndOutage(const char* how);
  bool Stuck(const Slot& s) const;
  // `reason`: the server's structured reason in words (ServerErrorReason).
  void Isolate(const absl::Status& status, const std::string& reason, const InflightRequest& oldest,
               size_t requests_in_flight, SeqNo last_sent);
  void OnDeadLettered(SeqNo seq, const absl::Status& status);
  void Park(const std::string& reason);
  void ScheduleReconnect(Slot& s, std::chrono::milliseconds delay);
  // Runs fire(*this, s) on the loop once `timer` (one of s's) expires after
  // `after`, unless it is cancelled or re-armed, the lane is gone, or `s`
  // has begun another call meanwhile (its gen moved).
  template <typename Fire>
  void OnSlotTimer(Slot& s, MonotonicTimer& timer, MonotonicClock::duration after, Fire fire);
  void ArmAckTimer(Slot& s);
  void ArmIdleTimer(Slot& s);
  void CloseForStop(Slot& s);
  void MaybeFinishStop();
  void FinishStop();
  void PublishGauges();

  boost::asio::io_context& loop_;
  const DrainLaneOptions options_;
  Spool& spool_;
  IngestStreamFactory& streams_;
  TokenSource& tokens_;
  Metrics& metrics_;
  RouteMetrics& route_metrics_;  // this route's hot-path series

  Mode mode_ = Mode::kRunning;
  std::vector<std::unique_ptr<Slot>> slots_;  // max_streams of them
  LaneCursor cursor_;
  SeqNo durable_seq_ = 0;  // highest seq known to be in the spool
  Backoff backoff_;
  bool auth_retry_used_ = false;  // the one fresh-token retry after an auth refusal
  Isolation isolation_;
  uint32_t consecutive_dead_letters_ = 0;
  std::string parked_reason_;
  RouteHealth health_;
  bool explaining_ = false;  // an explanation is on its way (one at a time)
  // The ConnectExplanation::reasons said in this outage.
  std::set<std::string> explained_;
  MonotonicTimer park_timer_;
  MonotonicTimer linger_timer_;
  // One spool read at a time for the whole lane (the reader thread is one
  // anyway): the span it reads is taken only when it returns, so streams
  // never claim the same seqs. read_id_ tells a current read from one a
  // TearDownAll dropped.
  bool read_in_flight_ = false;
  uint64_t read_id_ = 0;
  bool linger_armed_ = false;
  bool linger_expired_ = false;  // send the partial batch now
  size_t open_streams_published_ = ~size_t{0};
  // A record's size in a request, as of the last read (MaybeOpenStream).
  uint64_t record_bytes_estimate_ = kRecordFramingBytes;
  std::function<void()> stop_done_;
  // Declared last, and reset first in ~DrainLane: the watch ends before
  // anything else of the lane goes. The lane is destroyed on the loop, or,
  // at shutdown (~Daemon), after the loop has stopped, on the thread that
  // ran it; either way no notification runs meanwhile, and one still queued
  // finds the watch gone and does nothing (Spool::WatchDurable).
  std::unique_ptr<Spool::DurableWatch> durable_watch_;
};

}  // namespace zb
