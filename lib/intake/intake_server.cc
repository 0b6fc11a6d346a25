#include "intake/intake_server.h"

#include <endian.h>
#include <sys/socket.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/unix_socket.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "intake.pb.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

namespace asio = boost::asio;
using asio::local::stream_protocol;
namespace intake = ::zerobusd::intake;

constexpr uint32_t kMaxFrameBytes = 16u << 20;

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

std::string KnownRoutes(const IntakeRouteTable& routes) {
  std::vector<std::string> names;
  for (const auto& [name, _] : routes) names.push_back(name);
  return absl::StrJoin(names, ", ");
}

class Server;

// One producer connection. Owned by shared_ptr: pending reads, writes and
// spool completions each hold a reference. Loop thread only.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Server* server, stream_protocol::socket socket, PeerCred peer, uint64_t id);
  void Start() { DoRead(); }
  void Stop();  // stop reading; finish replies; close
  // The server is going away: close the socket and never touch it again.
  void Detach() {
    detached_ = true;
    closed_ = true;
    boost::system::error_code ec;
    socket_.close(ec);
  }

 private:
  enum class Mode { kUnknown, kLine, kFramed };

  // A reply that may be sent once `outstanding` spool appends completed.
  struct Pending {
    int outstanding = 0;
    size_t bytes = 0;         // input bytes this entry holds against the credit window
    std::string reply;        // text (line mode) or frames (framed mode)
    uint64_t last_line = 0;   // line mode: "ok N" once complete
    bool send_ok = false;
  };

  // Records of one route to append as one spool call.
  struct Group {
    std::string route;
    std::string lane;
    std::vector<std::string> payloads;
    std::vector<uint64_t> lines;  // line mode: input line of each payload
    size_t bytes = 0;
  };

  void DoRead();
  void OnRead(const boost::system::error_code& ec, size_t n);
  void ProcessLines(bool at_eof);
  void HandleLine(absl::string_view line);
  void FlushLineChunk();
  void ProcessFrames();
  void HandleFrame(const intake::ClientFrame& frame, size_t frame_bytes);
  void AppendReject(std::string* reply, uint64_t line, absl::string_view reason);
  void Submit(std::shared_ptr<Pending> pending, Group group, std::function<void(const AppendResult&)> on_ok,
              std::function<void(const absl::Status&)> on_error);
  // One submitted group, on its way into the spool.
  struct Submission {
    std::shared_ptr<Pending> pending;
    std::string route;
    std::string lane;
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
  absl::Status CheckRoute(const std::string& route, const IntakeRoute** out);

  Server* server_;
  stream_protocol::socket socket_;
  PeerCred peer_;
  uint64_t id_;
  Mode mode_ = Mode::kUnknown;
  std::string in_;       // unprocessed input
  size_t in_pos_ = 0;    // processed prefix of in_
  std::vector<char> read_buf_;
  bool reading_ = false;
  bool read_closed_ = false;  // EOF, error or Stop()
  bool writing_ = false;
  bool closed_ = false;
  bool detached_ = false;  // the server is gone; handlers that still run do nothing
  size_t inflight_bytes_ = 0;
  std::deque<std::shared_ptr<Pending>> pending_;
  std::string out_;          // being written
  std::string out_next_;     // queued behind the write in flight

  // Line mode state.
  uint64_t line_no_ = 0;
  std::string route_;        // selected by "@route"
  std::string route_error_;  // why the last "@route" failed
  bool discarding_ = false;  // inside an oversize line
  size_t discarded_ = 0;
  std::vector<Group> chunk_groups_;
  std::string chunk_rejects_;
  size_t chunk_bytes_ = 0;
  bool chunk_has_input_ = false;

  // Framed mode state.
  bool no_wait_ = false;
};

class Server final : public IntakeServer {
 public:
  Server(asio::io_context& loop, const IntakeOptions& options, std::shared_ptr<const IntakeRouteTable> routes,
         Spool& spool, Metrics& metrics, AppendedFn on_appended)
      : loop_(loop),
        options_(options),
        routes_(std::move(routes)),
        spool_(spool),
        metrics_(metrics),
        on_appended_(std::move(on_appended)),
        acceptor_(loop) {}

  ~Server() override {
    boost::system::error_code ec;
    acceptor_.close(ec);
    auto sessions = std::move(sessions_);
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) s->Detach();
    }
    std::error_code fec;
    std::filesystem::remove(options_.socket_path, fec);
  }

  absl::Status Listen() {
    if (absl::Status s = ListenOnUnixSocket(acceptor_, options_.socket_path, options_.socket_mode, "intake.socket"); !s.ok()) {
      return s;
    }
    Accept();
    return absl::OkStatus();
  }

  void SetRoutes(std::shared_ptr<const IntakeRouteTable> routes) override { routes_ = std::move(routes); }

  void StopAccepting() override {
    stopping_ = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
    auto sessions = sessions_;  // Stop() may close a session, which erases it
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) s->Stop();
    }
  }

  size_t connection_count() const override { return sessions_.size(); }

  // For sessions.
  const IntakeOptions& options() const { return options_; }
  const IntakeRouteTable& routes() const { return *routes_; }
  Spool& spool() { return spool_; }
  Metrics& metrics() { return metrics_; }
  asio::io_context& loop() { return loop_; }
  void Appended(const std::string& route, const AppendResult& r) { on_appended_(route, r); }
  void Closed(uint64_t id) { sessions_.erase(id); }

 private:
  void Accept() {
    acceptor_.async_accept([this](const boost::system::error_code& ec, stream_protocol::socket socket) {
      if (ec) {
        if (ec != asio::error::operation_aborted) spdlog::warn("intake: accept failed: {}", ec.message());
        if (!stopping_ && ec != asio::error::operation_aborted) Accept();
        return;
      }
      PeerCred peer;
      struct ucred cred{};
      socklen_t len = sizeof(cred);
      if (getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        peer.uid = cred.uid;
        peer.gid = cred.gid;
        peer.pid = cred.pid;
      }
      if (sessions_.size() >= options_.max_connections) {
        spdlog::warn("intake: refusing connection from pid {}: {} connections open (intake.max_connections)",
                     peer.pid, sessions_.size());
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        const uint64_t id = next_id_++;
        auto session = std::make_shared<Session>(this, std::move(socket), peer, id);
        sessions_[id] = session;
        session->Start();
      }
      if (!stopping_) Accept();
    });
  }

  asio::io_context& loop_;
  IntakeOptions options_;
  std::shared_ptr<const IntakeRouteTable> routes_;
  Spool& spool_;
  Metrics& metrics_;
  AppendedFn on_appended_;
  stream_protocol::acceptor acceptor_;
  std::map<uint64_t, std::weak_ptr<Session>> sessions_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
};

Session::Session(Server* server, stream_protocol::socket socket, PeerCred peer, uint64_t id)
    : server_(server),
      socket_(std::move(socket)),
      peer_(peer),
      id_(id),
      read_buf_(server->options().read_chunk_bytes) {}

void Session::Stop() {
  if (detached_) return;
  read_closed_ = true;
  boost::system::error_code ec;
  socket_.shutdown(stream_protocol::socket::shutdown_receive, ec);
  MaybeClose();
}

void Session::DoRead() {
  if (reading_ || read_closed_ || closed_) return;
  // Credit window: input waiting for the spool, and replies the producer
  // has not read yet, both stop reading (resumed by TryReply / DoWrite).
  if (inflight_bytes_ >= server_->options().max_inflight_bytes) return;
  if (out_.size() + out_next_.size() >= server_->options().max_inflight_bytes) return;
  reading_ = true;
  socket_.async_read_some(asio::buffer(read_buf_.data(), read_buf_.size()),
                          [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                            self->OnRead(ec, n);
                          });
}

void Session::OnRead(const boost::system::error_code& ec, size_t n) {
  reading_ = false;
  if (detached_) return;
  spdlog::trace("intake: connection {} read {} bytes ({})", id_, n, ec.message());
  if (n > 0) {
    if (mode_ == Mode::kUnknown) mode_ = read_buf_[0] == '\0' ? Mode::kFramed : Mode::kLine;
    in_.append(read_buf_.data(), n);
  }
  const bool eof = static_cast<bool>(ec);
  if (eof && ec != asio::error::eof && ec != asio::error::operation_aborted) {
    spdlog::debug("intake: connection {} read error: {}", id_, ec.message());
  }
  // Mark the read side closed before processing: processing replies and
  // re-arms reads, and a read issued after EOF never completes (the
  // edge-triggered reactor already delivered the EOF edge).
  if (eof) read_closed_ = true;
  if (mode_ == Mode::kLine) ProcessLines(eof);
  if (mode_ == Mode::kFramed) ProcessFrames();
  if (eof) {
    MaybeClose();
    return;
  }
  DoRead();
}

// ---------------------------------------------------------------- line mode

void Session::AppendReject(std::string* reply, uint64_t line, absl::string_view reason) {
  absl::StrAppend(reply, "error ", line, " ", reason, "\n");
}

absl::Status Session::CheckRoute(const std::string& route, const IntakeRoute** out) {
  const auto& routes = server_->routes();
  auto it = routes.find(route);
  if (it == routes.end()) {
    return absl::NotFoundError(absl::StrCat("unknown route \"", route, "\" (known: ", KnownRoutes(routes), ")"));
  }
  if (!Allowed(it->second, peer_)) {
    return absl::PermissionDeniedError(
        absl::StrCat("not allowed: uid ", peer_.uid, " gid ", peer_.gid, " may not write to route \"", route, "\""));
  }
  *out = &it->second;
  return absl::OkStatus();
}

void Session::ProcessLines(bool at_eof) {
  const size_t max_record = server_->options().max_record_bytes;
  while (in_pos_ < in_.size()) {
    const size_t nl = in_.find('\n', in_pos_);
    if (nl == std::string::npos) {
      const size_t partial = in_.size() - in_pos_;
      if (discarding_ || partial > max_record + 1) {  // +1: a trailing '\r'
        discarding_ = true;
        discarded_ += partial;
        in_pos_ = in_.size();
      }
      break;
    }
    absl::string_view line(in_.data() + in_pos_, nl - in_pos_);
    in_pos_ = nl + 1;
    if (discarding_) {
      ++line_no_;
      chunk_has_input_ = true;
      const size_t size = discarded_ + line.size();
      AppendReject(&chunk_rejects_, line_no_,
                   absl::StrCat("record too large: ", size, " bytes, limit ", max_record, " (intake.max_record_bytes)"));
      server_->metrics().IntakeRecords(route_.empty() ? "_none" : route_, IntakeResult::kTooLarge, 1);
      discarding_ = false;
      discarded_ = 0;
      continue;
    }
    HandleLine(line);
  }
  if (at_eof && in_pos_ < in_.size()) {  // last line without '\n'
    absl::string_view line(in_.data() + in_pos_, in_.size() - in_pos_);
    in_pos_ = in_.size();
    HandleLine(line);
  } else if (at_eof && discarding_) {
    ++line_no_;
    chunk_has_input_ = true;
    AppendReject(&chunk_rejects_, line_no_, absl::StrCat("record too large: ", discarded_, " bytes, limit ", max_record));
    discarding_ = false;
  }
  // Keep memory bounded: drop the processed prefix.
  in_.erase(0, in_pos_);
  in_pos_ = 0;
  FlushLineChunk();
}

void Session::HandleLine(absl::string_view line) {
  ++line_no_;
  chunk_has_input_ = true;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
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
  if (line.size() > server_->options().max_record_bytes) {
    AppendReject(&chunk_rejects_, line_no_,
                 absl::StrCat("record too large: ", line.size(), " bytes, limit ", server_->options().max_record_bytes,
                              " (intake.max_record_bytes)"));
    server_->metrics().IntakeRecords(route_.empty() ? "_none" : route_, IntakeResult::kTooLarge, 1);
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
    server_->metrics().IntakeRecords(route, IntakeResult::kInvalid, 1);
    return;
  }
  const std::string& lane = r->lane.empty() ? r->name : r->lane;
  if (chunk_groups_.empty() || chunk_groups_.back().lane != lane) {
    chunk_groups_.push_back(Group{route, lane, {}, {}, 0});
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

void Session::ProcessFrames() {
  while (!closed_) {
    if (in_.size() - in_pos_ < 4) break;
    uint32_t len_be = 0;
    std::memcpy(&len_be, in_.data() + in_pos_, 4);
    const uint32_t len = be32toh(len_be);
    if (len > kMaxFrameBytes) {
      spdlog::warn("intake: connection {} sent a {}-byte frame (limit {}); closing", id_, len, kMaxFrameBytes);
      intake::ServerFrame reply;
      auto* nack = reply.mutable_nack();
      nack->set_reason(intake::BAD_FRAME);
      nack->set_message(absl::StrCat("frame of ", len, " bytes exceeds the ", kMaxFrameBytes, "-byte limit"));
      nack->set_record_index(-1);
      auto pending = std::make_shared<Pending>();
      AppendFrame(pending.get(), reply);
      pending_.push_back(pending);
      read_closed_ = true;
      in_.clear();
      in_pos_ = 0;
      TryReply();
      return;
    }
    if (in_.size() - in_pos_ < 4 + static_cast<size_t>(len)) break;
    intake::ClientFrame frame;
    const bool parsed = frame.ParseFromArray(in_.data() + in_pos_ + 4, static_cast<int>(len));
    in_pos_ += 4 + len;
    if (!parsed) {
      HandleFrame(intake::ClientFrame(), 0);  // answered as a bad frame
      continue;
    }
    HandleFrame(frame, 4 + len);
  }
  in_.erase(0, in_pos_);
  in_pos_ = 0;
  TryReply();
}

void Session::HandleFrame(const intake::ClientFrame& frame, size_t frame_bytes) {
  auto pending = std::make_shared<Pending>();
  pending_.push_back(pending);
  auto reply_frame = [&pending](const intake::ServerFrame& f) { AppendFrame(pending.get(), f); };
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
  Group group{batch.route(), route->lane.empty() ? route->name : route->lane, {}, {}, 0};
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
    if (!payload.ok()) {
      nack(batch.seq(), intake::INVALID_RECORD, absl::StrCat("record ", i, ": ", payload.status().message()), i);
      server_->metrics().IntakeRecords(batch.route(), IntakeResult::kInvalid, batch.records_size());
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
  auto sub = std::make_shared<Submission>();
  sub->pending = std::move(pending);
  sub->route = group.route;
  sub->lane = group.lane;
  sub->records = std::make_shared<const std::vector<std::string>>(std::move(group.payloads));
  sub->bytes = group.bytes;
  sub->on_ok = std::move(on_ok);
  sub->on_error = std::move(on_error);
  Attempt(std::move(sub));
}

void Session::Attempt(std::shared_ptr<Submission> sub) {
  auto self = shared_from_this();
  // The callback runs on the spool's writer thread, possibly after the
  // server is gone (shutdown): it may touch only the loop, which outlives
  // the spool, never server_.
  asio::io_context& loop = server_->loop();
  const std::string lane = sub->lane;
  Spool::Records records = sub->records;
  auto done = [&loop, self, sub = std::move(sub)](absl::StatusOr<AppendResult> result) mutable {
        // Hop to the loop. Every reference moves into the posted handler, so
        // the session is never released (and destroyed) on this thread.
        asio::post(loop, [self = std::move(self), sub = std::move(sub), result = std::move(result)]() mutable {
          if (self->detached_) return;
          self->Completed(std::move(sub), std::move(result));
        });
      };
  // when_full: block makes the records wait in the spool, in order, and the
  // connection's credit stays taken meanwhile, so the socket is not read.
  if (server_->options().block_when_full && !no_wait_) {
    server_->spool().AppendWhenRoomAsync(lane, std::move(records), std::move(done));
  } else {
    server_->spool().AppendAsync(lane, std::move(records), std::move(done));
  }
}

void Session::Completed(std::shared_ptr<Submission> sub, absl::StatusOr<AppendResult> result) {
  Metrics& m = server_->metrics();
  const size_t count = sub->records->size();
  if (!result.ok() && absl::IsResourceExhausted(result.status()) && server_->options().block_when_full) {
    // Only a producer that asked not to wait gets here under block.
    result = absl::UnavailableError(absl::StrCat("busy: ", result.status().message()));
  }
  if (result.ok()) {
    m.IntakeRecords(sub->route, IntakeResult::kAccepted, count);
    m.IntakeBytes(sub->route, sub->bytes);
    if (sub->on_ok) sub->on_ok(*result);
    server_->Appended(sub->lane, *result);
  } else {
    const bool full = absl::IsResourceExhausted(result.status()) || absl::IsUnavailable(result.status());
    if (!full) spdlog::error("intake: spool append for route {} failed: {}", sub->route, result.status().ToString());
    m.IntakeRecords(sub->route, full ? IntakeResult::kSpoolFull : IntakeResult::kSpoolError, count);
    if (sub->on_error) sub->on_error(result.status());
  }
  sub->pending->outstanding--;
  TryReply();
}

void Session::TryReply() {
  while (!pending_.empty() && pending_.front()->outstanding == 0) {
    auto p = pending_.front();
    pending_.pop_front();
    out_next_ += p->reply;
    if (p->send_ok) absl::StrAppend(&out_next_, "ok ", p->last_line, "\n");
    inflight_bytes_ -= p->bytes;
  }
  DoWrite();
  DoRead();
  MaybeClose();
}

void Session::DoWrite() {
  if (writing_ || out_next_.empty() || closed_) return;
  out_.swap(out_next_);
  out_next_.clear();
  writing_ = true;
  asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
    self->writing_ = false;
    self->out_.clear();
    if (self->detached_) return;
    if (ec) {
      spdlog::debug("intake: connection {} write failed: {}", self->id_, ec.message());
      self->read_closed_ = true;
      self->out_next_.clear();
      boost::system::error_code ignored;
      self->socket_.close(ignored);
      self->closed_ = true;
      self->server_->Closed(self->id_);
      return;
    }
    self->DoWrite();
    self->DoRead();  // replies drained: the credit window may have reopened
    self->MaybeClose();
  });
}

void Session::MaybeClose() {
  spdlog::trace("intake: connection {} maybe close: read_closed {} reading {} writing {} pending {} out {}", id_,
                read_closed_, reading_, writing_, pending_.size(), out_next_.size());
  if (closed_ || !read_closed_ || reading_ || writing_ || !pending_.empty() || !out_next_.empty()) return;
  closed_ = true;
  boost::system::error_code ec;
  socket_.shutdown(stream_protocol::socket::shutdown_both, ec);
  socket_.close(ec);
  server_->Closed(id_);
}

}  // namespace

absl::StatusOr<std::unique_ptr<IntakeServer>> StartIntakeServer(asio::io_context& loop, const IntakeOptions& options,
                                                                std::shared_ptr<const IntakeRouteTable> routes,
                                                                Spool& spool, Metrics& metrics,
                                                                IntakeServer::AppendedFn on_appended) {
  auto server = std::make_unique<Server>(loop, options, std::move(routes), spool, metrics, std::move(on_appended));
  if (absl::Status s = server->Listen(); !s.ok()) return s;
  return std::unique_ptr<IntakeServer>(std::move(server));
}

}  // namespace zb
