#include "intake/intake_server.h"

#include <endian.h>
#include <sys/socket.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/accept_errors.h"
#include "common/log_limiter.h"
#include "common/loop_post.h"
#include "common/loop_thread.h"
#include "common/unix_socket.h"
#include "intake.pb.h"
#include "intake/frame_decoder.h"
#include "intake/line_decoder.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

namespace asio = boost::asio;
using asio::local::stream_protocol;
namespace intake = ::zerobusd::intake;

constexpr uint32_t kMaxFrameBytes = 16u << 20;
using Clock = std::chrono::steady_clock;
constexpr auto kLogInterval = std::chrono::seconds(5);  // repeating conditions: one line per interval

struct PeerCred {
  uint32_t uid = ~0u;
  uint32_t gid = ~0u;
  pid_t pid = 0;
};

bool Allowed(const IntakeRoute& route, const PeerCred& peer) {
  if (route.allow_uids.empty() && route.allow_gids.empty()) return true;
  for (uint32_t u : route.allow_uids) if (u == peer.uid) return true;
  for (uint32_t g : route.allow_gids) if (g == peer.gid) return true;
  return false;
}

// The configured routes for a message, at most about 160 bytes of them.
std::string KnownRoutes(const IntakeRouteTable& routes) {
  std::string out;
  for (const auto& [name, _] : routes) {
    if (out.size() > 160) return out + ", ...";
    absl::StrAppend(&out, out.empty() ? "" : ", ", name);
  }
  return out;
}

// A producer-chosen name quoted in a reply, cut to 64 bytes.
std::string Quoted(absl::string_view name) {
  return absl::StrCat("\"", name.substr(0, 64), name.size() > 64 ? "...\"" : "\"");
}

class Server;

// One producer connection. Owned by shared_ptr: pending waits, writes and
// spool completions each hold a reference. Loop thread only.
//
// Memory: everything the connection holds (an unfinished line or frame,
// input waiting for the spool, unread replies) is reserved from the
// server's budget (IntakeOptions::max_buffered_bytes). The socket is read
// only after it is readable and the read's bytes (or, inside a frame, the
// rest of the frame) were reserved, so idle connections hold nothing.
class Session : public std::enable_shared_from_this<Session>, private LineSink, private FrameSink {
 public:
  Session(Server* server, stream_protocol::socket socket, PeerCred peer, uint64_t id);
  void Start();
  void Stop();  // stop reading; finish replies; close
  // The server is going away: close the socket and never touch it again.
  void Detach() {
    detached_ = true;
    closed_ = true;
    boost::system::error_code ec;
    socket_.close(ec);
  }
  // Called by the server when budget may be free again.
  void BudgetFreed() { OnReadable(); }
  // Deadlines (IntakeOptions::read_timeout_ms, idle_timeout_ms). `stuck`:
  // no connection is reading an admitted record and no append is in
  // flight, so memory held by unfinished records can only be freed by
  // giving up on one.
  void Sweep(Clock::time_point now, bool stuck);
  // Reading an admitted record: the producer owes bytes, the daemon waits
  // for nothing.
  bool Progressing() const { return reading_ && Admitted() && !closed_; }
  // Nothing unfinished, nothing to answer: closing it loses nothing.
  bool IsIdle() const {
    return !closed_ && !read_closed_ && !InRecord() && pending_.empty() && !writing_ && out_next_.empty();
  }
  Clock::time_point last_activity() const { return last_activity_; }
  // Closes an idle connection (see IsIdle) at once.
  void CloseIdle();

 private:
  enum class Mode { kUnknown, kLine, kFramed };

  // A reply that may be sent once `outstanding` spool appends completed.
  struct Pending {
    int outstanding = 0;
    size_t bytes = 0;         // input bytes this entry holds against the credit window
    std::string reply;        // text (line mode) or frames (framed mode)
    uint64_t last_line = 0;   // line mode: "ok N" once complete
    bool send_ok = false;
    size_t counted = 0;       // reply bytes counted in pending_reply_bytes_
  };

  // Records of one route to append as one spool call.
  struct Group {
    std::string route;
    std::string lane;
    std::vector<std::string> payloads;
    std::vector<uint64_t> lines;  // line mode: input line of each payload
    size_t bytes = 0;
    RouteMetrics* metrics = nullptr;  // the route's (IntakeRoute::metrics)
  };

  void DoRead();
  void OnReadable();
  void OnRead(const boost::system::error_code& ec, size_t n);
  // LineSink / FrameSink.
  void OnLine(absl::string_view line) override { HandleLine(line); }
  void OnOversizeLine(uint64_t bytes) override;
  void OnFrame(absl::string_view body) override;
  void OnFrameTooLarge(uint64_t bytes) override;
  void HandleLine(absl::string_view line);
  void FlushLineChunk();
  void HandleFrame(const intake::ClientFrame& frame, size_t frame_bytes);
  void AppendReject(std::string* reply, uint64_t line, absl::string_view reason);
  // Gives up on an unfinished record: answers why, reads no more, closes
  // once the replies are out.
  void AbandonRecord(absl::string_view why);
  // Forgets an unfinished record and its admission (no more input comes).
  void DropUnfinished() {
    line_decoder_.Reset();
    frame_decoder_.Reset();
    admitted_ = false;
  }
  void Submit(std::shared_ptr<Pending> pending, Group group, std::function<void(const AppendResult&)> on_ok,
              std::function<void(const absl::Status&)> on_error);
  // One submitted group, on its way into the spool.
  struct Submission {
    std::shared_ptr<Pending> pending;
    std::string route;
    std::string lane;
    RouteMetrics* metrics = nullptr;  // the route's (IntakeRoute::metrics)
    Spool::Records records;
    size_t bytes = 0;
    std::function<void(const AppendResult&)> on_ok;
    std::function<void(const absl::Status&)> on_error;
  };
  void Attempt(std::shared_ptr<Submission> sub);
  void Completed(std::shared_ptr<Submission> sub, absl::StatusOr<AppendResult> result);
  static void AppendFrame(Pending* pending, const intake::ServerFrame& frame);
  void TryReply();
  void DoWrite();
  void MaybeClose();
  void CloseNow();
  absl::Status CheckRoute(const std::string& route, const IntakeRoute** out);

  bool InRecord() const {
    return mode_ == Mode::kLine ? line_decoder_.in_line() : mode_ == Mode::kFramed && frame_decoder_.in_frame();
  }
  size_t DecoderBytes() const {
    return mode_ == Mode::kLine ? line_decoder_.buffered_bytes()
                                : mode_ == Mode::kFramed ? frame_decoder_.buffered_bytes() : 0;
  }
  // What the connection holds in memory now: input being assembled or
  // waiting for the spool, and every reply not yet read by the producer.
  size_t Held() const {
    return inflight_bytes_ + pending_reply_bytes_ + out_.size() + out_next_.size() + DecoderBytes();
  }
  // The most the unfinished record may still add: the rest of a frame whose
  // header said its length, or of a line up to the record limit.
  size_t RecordRest() const;
  // The unfinished record was admitted: the rest of it stays reserved until
  // it ends, so it never waits for budget again (it could otherwise queue
  // behind records waiting for its memory).
  bool Admitted() const { return admitted_ && records_ended_ == admitted_at_ && InRecord(); }
  size_t AdmittedRest() const { return Admitted() ? RecordRest() : 0; }
  // Counts what was appended to `p->reply` since it was last counted.
  void Recount(Pending* p) {
    pending_reply_bytes_ += p->reply.size() - p->counted;
    p->counted = p->reply.size();
  }
  // The record clock runs only while the daemon reads for the producer:
  // time the daemon itself stops reading (credit window, memory) is not the
  // producer's fault and is added back to record_started_.
  void StallBegin() {
    if (!stalled_) stall_started_ = Clock::now();
    stalled_ = true;
  }
  void StallEnd() {
    if (stalled_) record_started_ += Clock::now() - stall_started_;
    stalled_ = false;
  }
  // Makes the reservation exactly what is held (after any change).
  void SyncReservation();

  Server* server_;
  stream_protocol::socket socket_;
  PeerCred peer_;
  uint64_t id_;
  Mode mode_ = Mode::kUnknown;
  LineDecoder line_decoder_;
  FrameDecoder frame_decoder_;
  size_t reserved_ = 0;       // bytes of the server's budget this connection holds
  size_t pending_reply_bytes_ = 0;  // replies in pending_ (waiting for earlier appends)
  uint64_t records_ended_ = 0;      // lines and frames ended so far
  bool admitted_ = false;           // the record after records_ended_ == admitted_at_ is admitted
  uint64_t admitted_at_ = 0;
  bool stalled_ = false;            // not reading because of the daemon (see StallBegin)
  Clock::time_point stall_started_;
  bool waiting_ = false;      // queued for budget
  bool reading_ = false;      // a readiness wait is armed
  bool read_closed_ = false;  // EOF, error or Stop()
  bool writing_ = false;
  bool closed_ = false;
  bool detached_ = false;  // the server is gone; handlers that still run do nothing
  // False once the server is destroyed: a closed session (no longer listed,
  // so never detached) may still get spool completions.
  std::shared_ptr<bool> server_alive_;
  bool Gone() const { return detached_ || !*server_alive_; }
  size_t inflight_bytes_ = 0;
  std::deque<std::shared_ptr<Pending>> pending_;
  std::string out_;          // being written
  std::string out_next_;     // queued behind the write in flight
  Clock::time_point last_activity_;
  Clock::time_point record_started_;  // first byte of the unfinished record
  Clock::time_point write_started_;

  // Line mode state.
  uint64_t line_no_ = 0;
  std::string last_reject_reason_;  // see AppendReject
  uint64_t last_reject_line_ = 0;
  std::string route_;        // selected by "@route"
  std::string route_error_;  // why the last "@route" failed
  std::vector<Group> chunk_groups_;
  std::string chunk_rejects_;
  size_t chunk_bytes_ = 0;
  bool chunk_has_input_ = false;
  size_t chunk_records_ = 0;  // records (lines or frames) ended by the current read

  // Framed mode state.
  bool no_wait_ = false;
};

// Why the server closed a connection by itself; each has its own
// rate-limited log line.
enum class CloseReason { kRefused, kDisplaced, kIdle, kRecordTimeout, kMemoryTimeout, kReplyTimeout, kCount };

class Server final : public IntakeServer {
 public:
  Server(asio::io_context& loop, const IntakeOptions& options, std::shared_ptr<const IntakeRouteTable> routes,
         Spool& spool, Metrics& metrics)
      : loop_(loop),
        options_(options),
        routes_(std::move(routes)),
        spool_(spool),
        metrics_(metrics),
        acceptor_(loop),
        accept_retry_(loop),
        sweep_timer_(loop),
        read_buffer_(options.read_chunk_bytes) {}

  ~Server() override {
    *alive_ = false;  // handlers still queued must not touch this object
    boost::system::error_code ec;
    acceptor_.close(ec);
    accept_retry_.cancel();
    sweep_timer_.cancel();
    auto sessions = std::move(sessions_);
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) s->Detach();
    }
    waiters_.clear();
    RemoveOwnedSocket(socket_file_);
  }

  absl::Status Listen() {
    auto owned = ListenOnUnixSocket(acceptor_, options_.socket_path, options_.socket_mode, options_.socket_gid,
                                    "intake.socket");
    if (!owned.ok()) return owned.status();
    socket_file_ = *owned;
    Accept();
    ArmSweep();
    return absl::OkStatus();
  }

  void SetRoutes(std::shared_ptr<const IntakeRouteTable> routes) override {
    ZB_CHECK_ON_LOOP(loop_);
    routes_ = std::move(routes);
  }

  void StopAccepting() override {
    ZB_CHECK_ON_LOOP(loop_);
    stopping_ = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
    accept_retry_.cancel();
    auto sessions = sessions_;  // Stop() may close a session, which erases it
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) s->Stop();
    }
  }

  size_t connection_count() const override {
    ZB_CHECK_ON_LOOP(loop_);
    return sessions_.size();
  }
  size_t buffered_bytes() const override {
    ZB_CHECK_ON_LOOP(loop_);
    return budget_used_;
  }

  // For sessions.
  const IntakeOptions& options() const { return options_; }
  const IntakeRouteTable& routes() const { return *routes_; }
  Spool& spool() { return spool_; }
  Metrics& metrics() { return metrics_; }
  asio::io_context& loop() { return loop_; }
  std::vector<char>& read_buffer() { return read_buffer_; }
  void Closed(uint64_t id) { sessions_.erase(id); }
  const std::shared_ptr<bool>& alive() const { return alive_; }
  // Spool appends submitted and not completed, all connections.
  void AppendStarted() { ++appends_in_flight_; }
  void AppendDone() { --appends_in_flight_; }

  // Budget. A reservation is granted only in arrival order: a connection
  // asking while others wait joins the queue, so a large frame is never
  // starved by small reads.
  bool Reserve(uint64_t id, const std::shared_ptr<Session>& session, size_t n) {
    const bool first = waiters_.empty() || waiters_.front().first == id;
    if (first && budget_used_ + n <= options_.max_buffered_bytes) {
      budget_used_ += n;
      if (!waiters_.empty()) waiters_.pop_front();
      return true;
    }
    bool queued = false;
    for (const auto& [wid, _] : waiters_) queued = queued || wid == id;
    if (!queued) waiters_.emplace_back(id, session);
    return false;
  }
  // Replies and records already read are held whatever the budget says.
  void ForceReserve(size_t n) { budget_used_ += n; }
  void Release(size_t n) {
    budget_used_ -= n;
    if (!waiters_.empty() && !wake_posted_) {
      wake_posted_ = true;
      asio::post(loop_, [this, alive = alive_] {
        if (!*alive) return;
        wake_posted_ = false;
        WakeWaiters();
      });
    }
  }
  void ForgetWaiter(uint64_t id) {
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      if (it->first == id) {
        const bool was_first = it == waiters_.begin();
        waiters_.erase(it);
        if (was_first && !waiters_.empty()) Release(0);  // let the next one try
        return;
      }
    }
  }

  void NoteClose(CloseReason reason, const std::string& detail) {
    static constexpr const char* kWhat[] = {
        "refused a connection: intake.max_connections reached and none is idle",
        "closed the connection idle the longest to make room (intake.max_connections)",
        "closed an idle connection (intake.idle_timeout_ms)",
        "closed a connection whose record or frame was not complete in time (intake.read_timeout_ms)",
        "closed a connection that waited too long for intake memory (intake.max_buffered_bytes)",
        "closed a connection whose producer does not read its replies (intake.read_timeout_ms)",
    };
    const auto i = static_cast<size_t>(reason);
    uint64_t suppressed = 0;
    if (!close_logs_[i].ShouldLog(Clock::now(), &suppressed)) return;
    const std::string more = suppressed == 0 ? "" : absl::StrCat(" (and ", suppressed, " more since the last report)");
    if (reason == CloseReason::kIdle || reason == CloseReason::kDisplaced) {
      spdlog::info("intake: {}: {}{}", kWhat[i], detail, more);
    } else {
      spdlog::warn("intake: {}: {}{}", kWhat[i], detail, more);
    }
  }

 private:
  void WakeWaiters() {
    // The front waiter retries; if it gets its budget it is popped and
    // the next one gets a turn.
    spdlog::trace("intake: {} waiting for memory, {} of {} bytes held", waiters_.size(), budget_used_,
                  options_.max_buffered_bytes);
    while (!waiters_.empty()) {
      const auto [id, s] = waiters_.front();
      s->BudgetFreed();
      if (!waiters_.empty() && waiters_.front().first == id) return;  // still waiting
    }
  }

  void Accept() {
    acceptor_.async_accept([this, alive = alive_](const boost::system::error_code& ec,
                                                  stream_protocol::socket socket) {
      if (!*alive || stopping_ || ec == asio::error::operation_aborted) return;
      if (ec && IsPerConnection(ec)) {  // that connection is gone; the next one may be fine
        metrics_.AcceptError("intake", AcceptErrorName(ec));
        Accept();
        return;
      }
      if (ec) {
        // Out of descriptors (or kernel memory): the pending connection
        // stays in the backlog; try again later instead of spinning.
        metrics_.AcceptError("intake", AcceptErrorName(ec));
        uint64_t suppressed = 0;
        if (accept_log_.ShouldLog(Clock::now(), &suppressed)) {
          spdlog::warn("intake: cannot accept connections: {}{}; retrying (with {} connections open)", ec.message(),
                       suppressed == 0 ? "" : absl::StrCat(", ", suppressed, " more failures since the last report"),
                       sessions_.size());
        }
        accept_backoff_ = std::min<Clock::duration>(accept_backoff_ * 2, std::chrono::seconds(1));
        accept_retry_.expires_after(accept_backoff_);
        accept_retry_.async_wait([this, alive = alive_](const boost::system::error_code& wec) {
          if (*alive && !wec && !stopping_) Accept();
        });
        return;
      }
      accept_backoff_ = std::chrono::milliseconds(5);
      PeerCred peer;
      struct ucred cred{};
      socklen_t len = sizeof(cred);
      if (getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        peer.uid = cred.uid;
        peer.gid = cred.gid;
        peer.pid = cred.pid;
      }
      if (sessions_.size() >= options_.max_connections && !DisplaceIdle()) {
        NoteClose(CloseReason::kRefused, absl::StrCat("pid ", peer.pid, " uid ", peer.uid, ", ", sessions_.size(),
                                                      " connections open"));
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        const uint64_t id = next_id_++;
        auto session = std::make_shared<Session>(this, std::move(socket), peer, id);
        sessions_[id] = session;
        session->Start();
      }
      Accept();
    });
  }

  // Closes the connection idle the longest, if any is idle.
  bool DisplaceIdle() {
    std::shared_ptr<Session> victim;
    for (auto& [id, weak] : sessions_) {
      auto s = weak.lock();
      if (s && s->IsIdle() && (!victim || s->last_activity() < victim->last_activity())) victim = s;
    }
    if (!victim) return false;
    NoteClose(CloseReason::kDisplaced, absl::StrCat(sessions_.size(), " connections open"));
    victim->CloseIdle();
    return true;
  }

  void ArmSweep() {
    uint32_t shortest = 1000;
    for (uint32_t t : {options_.read_timeout_ms, options_.idle_timeout_ms}) {
      if (t > 0) shortest = std::min(shortest, std::max<uint32_t>(t / 4, 10));
    }
    sweep_timer_.expires_after(std::chrono::milliseconds(shortest));
    sweep_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
      if (!*alive || ec) return;
      const auto now = Clock::now();
      auto sessions = sessions_;  // Sweep() may close a session, which erases it
      bool stuck = appends_in_flight_ == 0 && !waiters_.empty();
      for (auto& [id, weak] : sessions) {
        auto s = weak.lock();
        if (s && s->Progressing()) stuck = false;
      }
      for (auto& [id, weak] : sessions) {
        if (auto s = weak.lock()) s->Sweep(now, stuck);
      }
      ArmSweep();
    });
  }

  asio::io_context& loop_;
  IntakeOptions options_;
  std::shared_ptr<const IntakeRouteTable> routes_;
  Spool& spool_;
  Metrics& metrics_;
  stream_protocol::acceptor acceptor_;
  asio::steady_timer accept_retry_;
  asio::steady_timer sweep_timer_;
  Clock::duration accept_backoff_ = std::chrono::milliseconds(5);
  RateLimitedLog accept_log_{kLogInterval};
  RateLimitedLog close_logs_[static_cast<size_t>(CloseReason::kCount)] = {
      RateLimitedLog(kLogInterval), RateLimitedLog(kLogInterval), RateLimitedLog(kLogInterval),
      RateLimitedLog(kLogInterval), RateLimitedLog(kLogInterval), RateLimitedLog(kLogInterval)};
  OwnedSocketPath socket_file_;
  std::vector<char> read_buffer_;  // shared: reads are synchronous on the loop
  std::map<uint64_t, std::weak_ptr<Session>> sessions_;
  // Sessions waiting for budget; the queue owns them meanwhile (no other
  // operation holds them).
  std::deque<std::pair<uint64_t, std::shared_ptr<Session>>> waiters_;
  size_t budget_used_ = 0;
  bool wake_posted_ = false;
  size_t appends_in_flight_ = 0;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

Session::Session(Server* server, stream_protocol::socket socket, PeerCred peer, uint64_t id)
    : server_(server),
      socket_(std::move(socket)),
      peer_(peer),
      id_(id),
      line_decoder_(server->options().max_record_bytes),
      frame_decoder_(kMaxFrameBytes),
      server_alive_(server->alive()),
      last_activity_(Clock::now()) {}

size_t Session::RecordRest() const {
  if (mode_ == Mode::kFramed) return frame_decoder_.body_remaining();
  if (mode_ == Mode::kLine && line_decoder_.in_line() && !line_decoder_.discarding()) {
    const size_t most = server_->options().max_record_bytes + 1;  // +1: a trailing '\r'
    return most > line_decoder_.buffered_bytes() ? most - line_decoder_.buffered_bytes() : 0;
  }
  return 0;
}

void Session::Start() {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);  // reads happen after readiness, never block the loop
  DoRead();
}

void Session::Stop() {
  if (detached_) return;
  read_closed_ = true;
  boost::system::error_code ec;
  socket_.shutdown(stream_protocol::socket::shutdown_receive, ec);
  if (waiting_) {
    waiting_ = false;
    server_->ForgetWaiter(id_);
  }
  DropUnfinished();
  SyncReservation();
  MaybeClose();
}

void Session::CloseIdle() {
  read_closed_ = true;
  MaybeClose();
}

void Session::SyncReservation() {
  if (detached_) return;
  const size_t held = closed_ ? 0 : Held() + AdmittedRest();
  if (held > reserved_) {
    server_->ForceReserve(held - reserved_);
  } else if (held < reserved_) {
    server_->Release(reserved_ - held);
  }
  reserved_ = held;
}

void Session::Sweep(Clock::time_point now, bool stuck) {
  if (closed_ || detached_) return;
  const auto& o = server_->options();
  const auto read_timeout = std::chrono::milliseconds(o.read_timeout_ms);
  if (o.read_timeout_ms > 0 && writing_ && now - write_started_ >= read_timeout) {
    server_->NoteClose(CloseReason::kReplyTimeout, absl::StrCat("pid ", peer_.pid, ", ", out_.size(),
                                                                 " bytes unread for ", o.read_timeout_ms, " ms"));
    CloseNow();
    return;
  }
  if (o.read_timeout_ms > 0 && !read_closed_ && InRecord()) {
    // The producer's clock: only while the daemon reads for it.
    if (!stalled_ && reading_ && now - record_started_ >= read_timeout) {
      server_->NoteClose(CloseReason::kRecordTimeout, absl::StrCat("pid ", peer_.pid, ", ", DecoderBytes(),
                                                                    " bytes of it received"));
      AbandonRecord(absl::StrCat(mode_ == Mode::kFramed ? "frame" : "record", " not complete within ",
                                 o.read_timeout_ms, " ms of its first byte (intake.read_timeout_ms)"));
      return;
    }
    // Memory held only by unfinished records that all wait for memory:
    // nothing will free it, so the one waiting longest gives up.
    if (waiting_ && stuck && now - stall_started_ >= read_timeout) {
      server_->NoteClose(CloseReason::kMemoryTimeout, absl::StrCat("pid ", peer_.pid));
      AbandonRecord(absl::StrCat("intake memory is exhausted (intake.max_buffered_bytes, ", o.max_buffered_bytes,
                                 " bytes): retry later"));
      return;
    }
  }
  if (o.idle_timeout_ms > 0 && IsIdle() && now - last_activity_ >= std::chrono::milliseconds(o.idle_timeout_ms)) {
    server_->NoteClose(CloseReason::kIdle, absl::StrCat("pid ", peer_.pid, ", idle for ", o.idle_timeout_ms, " ms"));
    CloseIdle();
  }
}

void Session::AbandonRecord(absl::string_view why) {
  if (mode_ == Mode::kFramed) {
    intake::ServerFrame reply;
    auto* nack = reply.mutable_nack();
    nack->set_reason(intake::BAD_FRAME);
    nack->set_message(std::string(why));
    nack->set_record_index(-1);
    auto pending = std::make_shared<Pending>();
    AppendFrame(pending.get(), reply);
    Recount(pending.get());
    pending_.push_back(pending);
  } else {
    auto pending = std::make_shared<Pending>();
    AppendReject(&pending->reply, line_no_ + 1, why);
    Recount(pending.get());
    pending_.push_back(pending);
  }
  DropUnfinished();
  read_closed_ = true;
  if (waiting_) {
    waiting_ = false;
    server_->ForgetWaiter(id_);
  }
  boost::system::error_code ec;
  socket_.shutdown(stream_protocol::socket::shutdown_receive, ec);
  TryReply();
}

void Session::DoRead() {
  if (reading_ || waiting_ || read_closed_ || closed_ || detached_) return;
  // Credit window: input waiting for the spool, and replies the producer
  // has not read yet (sent or waiting behind an append), both stop reading
  // (resumed by TryReply / DoWrite).
  const size_t window = server_->options().max_inflight_bytes;
  if (inflight_bytes_ >= window || pending_reply_bytes_ + out_.size() + out_next_.size() >= window) {
    StallBegin();
    return;
  }
  StallEnd();
  reading_ = true;
  socket_.async_wait(stream_protocol::socket::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->reading_ = false;
                       if (self->Gone() || self->closed_) return;
                       if (ec) {
                         self->OnRead(ec, 0);
                         return;
                       }
                       self->OnReadable();
                     });
}

void Session::OnReadable() {
  if (reading_ || read_closed_ || closed_ || detached_) return;
  // Reserve what this read may add: a chunk, or the rest of the unfinished
  // record (a frame's announced length, a line's limit), which is then
  // admitted whole.
  const size_t chunk = server_->read_buffer().size();
  const size_t rest = RecordRest();
  if (rest + DecoderBytes() > server_->options().max_buffered_bytes) {
    // Could never be admitted: waiting would only hold memory.
    AbandonRecord(absl::StrCat(mode_ == Mode::kFramed ? "frame" : "record", " of up to ", rest + DecoderBytes(),
                               " bytes cannot fit in the intake memory (intake.max_buffered_bytes, ",
                               server_->options().max_buffered_bytes, " bytes)"));
    return;
  }
  // Inside a record, read no further than its most: an admitted record then
  // never asks for budget again.
  const size_t want = rest > 0 ? std::min(chunk, rest) : chunk;
  const size_t target = Held() + std::max(want, rest);
  if (target > reserved_) {
    if (!server_->Reserve(id_, shared_from_this(), target - reserved_)) {
      waiting_ = true;  // BudgetFreed() calls back here
      StallBegin();
      return;
    }
    reserved_ = target;
  }
  if (rest > 0 && !Admitted()) {
    admitted_ = true;
    admitted_at_ = records_ended_;
  }
  waiting_ = false;
  boost::system::error_code ec;
  const size_t n = socket_.read_some(asio::buffer(server_->read_buffer().data(), want), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    SyncReservation();
    DoRead();
    return;
  }
  OnRead(ec, n);
}

void Session::OnRead(const boost::system::error_code& ec, size_t n) {
  if (detached_) return;
  spdlog::trace("intake: connection {} read {} bytes ({})", id_, n, ec.message());
  const std::vector<char>& buf = server_->read_buffer();
  const bool eof = static_cast<bool>(ec);
  if (eof && ec != asio::error::eof && ec != asio::error::operation_aborted) {
    spdlog::debug("intake: connection {} read error: {}", id_, ec.message());
  }
  // Mark the read side closed before processing: processing replies and
  // re-arms reads.
  if (eof) read_closed_ = true;
  if (n > 0) {
    last_activity_ = Clock::now();
    if (mode_ == Mode::kUnknown) mode_ = buf[0] == '\0' ? Mode::kFramed : Mode::kLine;
  }
  const bool was_in_record = InRecord();
  chunk_records_ = 0;
  const absl::string_view data(buf.data(), n);
  if (mode_ == Mode::kLine) {
    line_decoder_.Feed(data, *this);
    if (eof) line_decoder_.Finish(*this);
    FlushLineChunk();
  } else if (mode_ == Mode::kFramed) {
    frame_decoder_.Feed(data, *this);
    TryReply();
  }
  if (eof) DropUnfinished();  // a frame cut off by EOF never completes
  // The unfinished record's clock starts with the read that began it.
  if (InRecord() && (!was_in_record || chunk_records_ > 0)) record_started_ = last_activity_;
  SyncReservation();
  if (eof) {
    MaybeClose();
    return;
  }
  DoRead();
}

// ---------------------------------------------------------------- line mode

// A reply is bounded whatever the input: a reason is cut at kMaxReasonBytes,
// and one that repeats the previous rejection's names that line instead, so
// a read of short bad lines yields at most about 30 bytes of reply per line.
void Session::AppendReject(std::string* reply, uint64_t line, absl::string_view reason) {
  constexpr size_t kMaxReasonBytes = 256;
  if (reason.size() > kMaxReasonBytes) reason = reason.substr(0, kMaxReasonBytes);
  if (last_reject_line_ != 0 && reason == last_reject_reason_) {
    absl::StrAppend(reply, "error ", line, " same as line ", last_reject_line_, "\n");
    return;
  }
  last_reject_reason_.assign(reason.data(), reason.size());
  last_reject_line_ = line;
  absl::StrAppend(reply, "error ", line, " ", reason, "\n");
}

absl::Status Session::CheckRoute(const std::string& route, const IntakeRoute** out) {
  const auto& routes = server_->routes();
  auto it = routes.find(route);
  if (it == routes.end()) {
    return absl::NotFoundError(absl::StrCat("unknown route ", Quoted(route), " (known: ", KnownRoutes(routes), ")"));
  }
  if (!Allowed(it->second, peer_)) {
    return absl::PermissionDeniedError(
        absl::StrCat("not allowed: uid ", peer_.uid, " gid ", peer_.gid, " may not write to route ", Quoted(route)));
  }
  *out = &it->second;
  return absl::OkStatus();
}

void Session::OnOversizeLine(uint64_t bytes) {
  ++line_no_;
  ++chunk_records_;
  ++records_ended_;
  chunk_has_input_ = true;
  const size_t max_record = server_->options().max_record_bytes;
  AppendReject(&chunk_rejects_, line_no_,
               absl::StrCat("record too large: ", bytes, " bytes, limit ", max_record, " (intake.max_record_bytes)"));
  server_->metrics().IntakeRecords(route_.empty() ? "_none" : route_, IntakeResult::kTooLarge, 1);
}

void Session::HandleLine(absl::string_view line) {
  ++line_no_;
  ++chunk_records_;
  ++records_ended_;
  chunk_has_input_ = true;
  size_t start = 0;
  while (start < line.size() && (line[start] == ' ' || line[start] == '\t')) ++start;
  if (start == line.size()) return;  // blank line
  if (line[start] == '@') {
    absl::string_view directive = line.substr(start + 1);
    if (directive.substr(0, 6) == "route ") {
      std::string name(directive.substr(6));
      while (!name.empty() && name.back() == ' ') name.pop_back();
      const IntakeRoute* route = nullptr;
      absl::Status s = CheckRoute(name, &route);
      if (!s.ok()) {
        AppendReject(&chunk_rejects_, line_no_, s.message());
        route_.clear();
        route_error_ = std::string(s.message());
      } else {
        route_ = name;
        route_error_.clear();
      }
    } else {
      AppendReject(&chunk_rejects_, line_no_,
                   absl::StrCat("unknown directive \"@", directive.substr(0, 40), "\" (known: @route NAME)"));
    }
    return;
  }
  std::string route = route_;
  if (route.empty() && route_error_.empty() && server_->routes().size() == 1) {
    route = server_->routes().begin()->first;  // the only route is the default
  }
  if (route.empty()) {
    AppendReject(&chunk_rejects_, line_no_,
                 route_error_.empty()
                     ? absl::StrCat("no route selected: send \"@route NAME\" first (known: ",
                                    KnownRoutes(server_->routes()), ")")
                     : absl::StrCat("no usable route: ", route_error_));
    server_->metrics().IntakeRecords("_none", IntakeResult::kUnknownRoute, 1);
    return;
  }
  const IntakeRoute* r = nullptr;
  if (absl::Status s = CheckRoute(route, &r); !s.ok()) {  // the table may have been reloaded
    AppendReject(&chunk_rejects_, line_no_, s.message());
    return;
  }
  auto payload = r->codec->FromJson(line.substr(start));
  if (!payload.ok()) {
    AppendReject(&chunk_rejects_, line_no_, payload.status().message());
    server_->metrics().IntakeRecords(
        route, absl::IsUnavailable(payload.status()) ? IntakeResult::kSchemaUnknown : IntakeResult::kInvalid, 1);
    return;
  }
  // The limit holds for what is spooled and sent: protobuf may be several
  // times the JSON (an unpacked repeated double turns "1," into 9 bytes).
  if (const size_t max = server_->options().max_record_bytes; payload->size() > max) {
    AppendReject(&chunk_rejects_, line_no_,
                 absl::StrCat("record too large: ", payload->size(), " bytes once encoded as protobuf (the JSON is ",
                              line.size() - start, "), limit ", max, " (intake.max_record_bytes)"));
    server_->metrics().IntakeRecords(route, IntakeResult::kTooLarge, 1);
    return;
  }
  const std::string& lane = r->lane.empty() ? r->name : r->lane;
  if (chunk_groups_.empty() || chunk_groups_.back().lane != lane) {
    chunk_groups_.push_back(Group{route, lane, {}, {}, 0, r->metrics});
  }
  Group& g = chunk_groups_.back();
  g.bytes += payload->size();
  chunk_bytes_ += line.size() + 1;
  g.payloads.push_back(std::move(*payload));
  g.lines.push_back(line_no_);
}

void Session::FlushLineChunk() {
  if (!chunk_has_input_) return;
  auto pending = std::make_shared<Pending>();
  pending->last_line = line_no_;
  pending->send_ok = true;
  pending->reply = std::move(chunk_rejects_);
  Recount(pending.get());
  pending->bytes = chunk_bytes_;
  inflight_bytes_ += chunk_bytes_;
  pending_.push_back(pending);
  std::vector<Group> groups = std::move(chunk_groups_);
  chunk_groups_.clear();
  chunk_rejects_.clear();
  chunk_bytes_ = 0;
  chunk_has_input_ = false;
  for (auto& g : groups) {
    auto lines = std::make_shared<std::vector<uint64_t>>(std::move(g.lines));
    Submit(pending, std::move(g), nullptr, [this, pending, lines](const absl::Status& s) {
      for (uint64_t line : *lines) {
        AppendReject(&pending->reply, line, absl::StrCat("not spooled: ", s.message()));
      }
    });
  }
  TryReply();
}

// -------------------------------------------------------------- framed mode

void Session::OnFrameTooLarge(uint64_t bytes) {
  ++chunk_records_;
  ++records_ended_;
  spdlog::warn("intake: connection {} (pid {}) sent a {}-byte frame (limit {}); closing", id_, peer_.pid, bytes,
               kMaxFrameBytes);
  intake::ServerFrame reply;
  auto* nack = reply.mutable_nack();
  nack->set_reason(intake::BAD_FRAME);
  nack->set_message(absl::StrCat("frame of ", bytes, " bytes exceeds the ", kMaxFrameBytes, "-byte limit"));
  nack->set_record_index(-1);
  auto pending = std::make_shared<Pending>();
  AppendFrame(pending.get(), reply);
  Recount(pending.get());
  pending_.push_back(pending);
  read_closed_ = true;  // the stream cannot be resynchronised
}

void Session::OnFrame(absl::string_view body) {
  ++chunk_records_;
  ++records_ended_;
  intake::ClientFrame frame;
  if (!frame.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    HandleFrame(intake::ClientFrame(), 0);  // answered as a bad frame
    return;
  }
  HandleFrame(frame, 4 + body.size());
}

void Session::HandleFrame(const intake::ClientFrame& frame, size_t frame_bytes) {
  auto pending = std::make_shared<Pending>();
  pending_.push_back(pending);
  auto reply_frame = [this, &pending](const intake::ServerFrame& f) {
    AppendFrame(pending.get(), f);
    Recount(pending.get());
  };
  auto nack = [&](uint64_t seq, intake::NackReason reason, std::string message, int index) {
    intake::ServerFrame f;
    auto* n = f.mutable_nack();
    n->set_seq(seq);
    n->set_reason(reason);
    n->set_message(std::move(message));
    n->set_record_index(index);
    reply_frame(f);
  };
  if (frame.has_hello()) {
    no_wait_ = frame.hello().no_wait();
    return;  // no reply
  }
  if (!frame.has_batch()) {
    nack(0, intake::BAD_FRAME, "frame is neither Hello nor Batch (or does not parse as intake.ClientFrame)", -1);
    return;
  }
  const intake::Batch& batch = frame.batch();
  const IntakeRoute* route = nullptr;
  if (absl::Status s = CheckRoute(batch.route(), &route); !s.ok()) {
    const bool unknown = absl::IsNotFound(s);
    nack(batch.seq(), unknown ? intake::UNKNOWN_ROUTE : intake::NOT_ALLOWED, std::string(s.message()), -1);
    server_->metrics().IntakeRecords(unknown ? "_unknown" : batch.route(),
                                     unknown ? IntakeResult::kUnknownRoute : IntakeResult::kNotAllowed,
                                     batch.records_size());
    return;
  }
  Group group{batch.route(), route->lane.empty() ? route->name : route->lane, {}, {}, 0, route->metrics};
  group.payloads.reserve(batch.records_size());
  for (int i = 0; i < batch.records_size(); ++i) {
    const std::string& rec = batch.records(i);
    if (rec.size() > server_->options().max_record_bytes) {
      nack(batch.seq(), intake::TOO_LARGE,
           absl::StrCat("record ", i, " is ", rec.size(), " bytes, limit ", server_->options().max_record_bytes,
                        " (intake.max_record_bytes)"),
           i);
      server_->metrics().IntakeRecords(batch.route(), IntakeResult::kTooLarge, batch.records_size());
      return;
    }
    auto payload = route->codec->FromWire(rec);
    if (!payload.ok() && absl::IsUnavailable(payload.status())) {
      // The route cannot judge records yet (its table's columns are not
      // known): nothing is wrong with the batch; it may come again.
      intake::ServerFrame f;
      auto* n = f.mutable_nack();
      n->set_seq(batch.seq());
      n->set_reason(intake::BUSY);
      n->set_message(std::string(payload.status().message()));
      n->set_retry_after_ms(1000);
      n->set_record_index(-1);
      reply_frame(f);
      server_->metrics().IntakeRecords(batch.route(), IntakeResult::kSchemaUnknown, batch.records_size());
      return;
    }
    if (!payload.ok()) {
      nack(batch.seq(), intake::INVALID_RECORD, absl::StrCat("record ", i, ": ", payload.status().message()), i);
      server_->metrics().IntakeRecords(batch.route(), IntakeResult::kInvalid, batch.records_size());
      return;
    }
    if (payload->size() > server_->options().max_record_bytes) {  // what is spooled and sent
      nack(batch.seq(), intake::TOO_LARGE,
           absl::StrCat("record ", i, " is ", payload->size(), " bytes once encoded for its route, limit ",
                        server_->options().max_record_bytes, " (intake.max_record_bytes)"),
           i);
      server_->metrics().IntakeRecords(batch.route(), IntakeResult::kTooLarge, batch.records_size());
      return;
    }
    group.bytes += payload->size();
    group.payloads.push_back(std::move(*payload));
  }
  const uint64_t seq = batch.seq();
  const uint32_t count = static_cast<uint32_t>(batch.records_size());
  pending->bytes = frame_bytes;
  inflight_bytes_ += frame_bytes;
  if (group.payloads.empty()) {
    intake::ServerFrame f;
    f.mutable_ack()->set_seq(seq);
    f.mutable_ack()->set_records(0);
    reply_frame(f);
    return;
  }
  Submit(
      pending, std::move(group),
      [pending, seq, count](const AppendResult&) {
        intake::ServerFrame f;
        f.mutable_ack()->set_seq(seq);
        f.mutable_ack()->set_records(count);
        AppendFrame(pending.get(), f);
      },
      [pending, seq](const absl::Status& s) {
        intake::ServerFrame f;
        auto* n = f.mutable_nack();
        n->set_seq(seq);
        n->set_reason(absl::IsResourceExhausted(s) ? intake::SPOOL_FULL
                      : absl::IsUnavailable(s)      ? intake::BUSY
                                                    : intake::INTERNAL);
        n->set_message(absl::StrCat("not spooled: ", s.message()));
        n->set_retry_after_ms(1000);
        n->set_record_index(-1);
        AppendFrame(pending.get(), f);
      });
}

// ----------------------------------------------------------------- common

void Session::AppendFrame(Pending* pending, const intake::ServerFrame& frame) {
  const std::string body = frame.SerializeAsString();
  const uint32_t len = htobe32(static_cast<uint32_t>(body.size()));
  pending->reply.append(reinterpret_cast<const char*>(&len), 4);
  pending->reply += body;
}

void Session::Submit(std::shared_ptr<Pending> pending, Group group, std::function<void(const AppendResult&)> on_ok,
                     std::function<void(const absl::Status&)> on_error) {
  pending->outstanding++;
  server_->AppendStarted();
  auto sub = std::make_shared<Submission>();
  sub->pending = std::move(pending);
  sub->route = group.route;
  sub->lane = group.lane;
  sub->metrics = group.metrics;
  sub->records = std::make_shared<const std::vector<std::string>>(std::move(group.payloads));
  sub->bytes = group.bytes;
  sub->on_ok = std::move(on_ok);
  sub->on_error = std::move(on_error);
  Attempt(std::move(sub));
}

void Session::Attempt(std::shared_ptr<Submission> sub) {
  auto self = shared_from_this();
  const std::string lane = sub->lane;
  Spool::Records records = sub->records;
  // The spool answers on the loop (possibly after the server is gone, at
  // shutdown: the loop outlives the spool), and the session is released
  // there, never on the spool's thread.
  auto done = [self, sub = std::move(sub), &loop = server_->loop()](absl::StatusOr<AppendResult> result) mutable {
    ZB_CHECK_ON_LOOP(loop);  // through on_loop, never on the spool's own thread
    if (self->Gone()) return;
    self->Completed(std::move(sub), std::move(result));
  };
  const PostFn on_loop = PostTo(server_->loop());
  // when_full: block makes the records wait in the spool, in order, and the
  // connection's credit stays taken meanwhile, so the socket is not read.
  if (server_->options().block_when_full && !no_wait_) {
    server_->spool().AppendWhenRoomAsync(lane, std::move(records), std::move(done), on_loop);
  } else {
    server_->spool().AppendAsync(lane, std::move(records), std::move(done), on_loop);
  }
}

void Session::Completed(std::shared_ptr<Submission> sub, absl::StatusOr<AppendResult> result) {
  server_->AppendDone();
  RouteMetrics& m = sub->metrics != nullptr ? *sub->metrics : server_->metrics().Route(sub->route);
  const size_t count = sub->records->size();
  if (!result.ok() && absl::IsResourceExhausted(result.status()) && server_->options().block_when_full) {
    // Only a producer that asked not to wait gets here under block.
    result = absl::UnavailableError(absl::StrCat("busy: ", result.status().message()));
  }
  if (result.ok()) {
    m.IntakeRecords(IntakeResult::kAccepted, count);
    m.IntakeBytes(sub->bytes);
    if (sub->on_ok) sub->on_ok(*result);
  } else {
    const bool full = absl::IsResourceExhausted(result.status()) || absl::IsUnavailable(result.status());
    if (!full) spdlog::error("intake: spool append for route {} failed: {}", sub->route, result.status().ToString());
    m.IntakeRecords(full ? IntakeResult::kSpoolFull : IntakeResult::kSpoolError, count);
    if (sub->on_error) sub->on_error(result.status());
  }
  Recount(sub->pending.get());  // the callbacks answered into it
  sub->pending->outstanding--;
  TryReply();
}

void Session::TryReply() {
  if (closed_ || detached_) return;
  while (!pending_.empty() && pending_.front()->outstanding == 0) {
    auto p = pending_.front();
    pending_.pop_front();
    pending_reply_bytes_ -= p->counted;
    out_next_ += p->reply;
    if (p->send_ok) absl::StrAppend(&out_next_, "ok ", p->last_line, "\n");
    inflight_bytes_ -= p->bytes;
  }
  SyncReservation();
  DoWrite();
  DoRead();
  MaybeClose();
}

void Session::DoWrite() {
  if (writing_ || out_next_.empty() || closed_) return;
  out_.swap(out_next_);
  out_next_.clear();
  writing_ = true;
  write_started_ = Clock::now();
  asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
    self->writing_ = false;
    if (self->Gone()) return;
    self->out_.clear();
    if (self->closed_) return;
    if (ec) {
      spdlog::debug("intake: connection {} write failed: {}", self->id_, ec.message());
      self->CloseNow();
      return;
    }
    self->last_activity_ = Clock::now();
    self->SyncReservation();
    self->DoWrite();
    self->DoRead();  // replies drained: the credit window may have reopened
    self->MaybeClose();
  });
}

void Session::MaybeClose() {
  spdlog::trace("intake: connection {} maybe close: read_closed {} reading {} writing {} pending {} out {}", id_,
                read_closed_, reading_, writing_, pending_.size(), out_next_.size());
  if (closed_ || !read_closed_ || writing_ || !pending_.empty() || !out_next_.empty()) return;
  CloseNow();
}

// Closes the socket now; spool appends still running complete into the
// void (the session object lives until they do).
void Session::CloseNow() {
  if (closed_ || detached_) return;
  read_closed_ = true;
  if (waiting_) {
    waiting_ = false;
    server_->ForgetWaiter(id_);
  }
  DropUnfinished();
  out_next_.clear();
  closed_ = true;
  boost::system::error_code ec;
  socket_.shutdown(stream_protocol::socket::shutdown_both, ec);
  socket_.close(ec);  // cancels a readiness wait or a write in flight
  SyncReservation();   // closed: holds nothing
  server_->Closed(id_);
}

}  // namespace

absl::StatusOr<std::unique_ptr<IntakeServer>> StartIntakeServer(asio::io_context& loop, const IntakeOptions& options,
                                                                std::shared_ptr<const IntakeRouteTable> routes,
                                                                Spool& spool, Metrics& metrics) {
  auto server = std::make_unique<Server>(loop, options, std::move(routes), spool, metrics);
  if (absl::Status s = server->Listen(); !s.ok()) return s;
  return std::unique_ptr<IntakeServer>(std::move(server));
}

}  // namespace zb
