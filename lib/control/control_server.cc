#include "control/control_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/accept_errors.h"
#include "common/log_limiter.h"
#include "common/loop_thread.h"
#include "common/unix_socket.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

namespace asio = boost::asio;
using asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;

constexpr auto kAcceptBackoffInitial = std::chrono::milliseconds(100);
constexpr auto kAcceptBackoffMax = std::chrono::seconds(1);
constexpr auto kLogInterval = std::chrono::seconds(5);

// One operator connection: read a line, hand it over, write the reply,
// repeat. Owned by shared_ptr; the server keeps weak references. Loop
// thread only: the handler is called from its read's completion and the
// reply checks it is given there.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(asio::io_context& loop, stream_protocol::socket socket, const ControlOptions& options,
             const ControlServer::Handler& handler, std::shared_ptr<bool> server_alive)
      : loop_(loop),
        socket_(std::move(socket)),
        handler_(handler),
        server_alive_(std::move(server_alive)),
        timeout_(options.read_timeout_ms),
        deadline_(socket_.get_executor()),
        in_(options.max_request_bytes) {}

  void Start() { ReadRequest(); }
  void Close() {
    closed_ = true;
    waiting_for_request_ = false;
    Disarm();
    boost::system::error_code ec;
    socket_.close(ec);
  }
  bool closed() const { return closed_; }
  // Waiting for the client's next request line (not for a handler's reply,
  // nor for a reply to be written), since idle_since(), with nothing of it
  // received yet: a client whose request is on its way is not idle (closing
  // it would drop its request unanswered).
  bool idle() const {
    if (!waiting_for_request_ || closed_ || in_.size() > 0) return false;
    boost::system::error_code ec;
    return socket_.available(ec) == 0 && !ec;
  }
  Clock::time_point idle_since() const { return idle_since_; }

 private:
  void ReadRequest() {
    if (closed_) return;
    waiting_for_request_ = true;
    idle_since_ = Clock::now();
    Arm("a request line");
    asio::async_read_until(socket_, in_, '\n', [self = shared_from_this()](boost::system::error_code ec, size_t n) {
      ZB_CHECK_ON_LOOP(self->loop_);  // the handler below runs on the loop
      self->waiting_for_request_ = false;
      self->Disarm();
      if (!*self->server_alive_ || self->closed_) return;
      if (ec) {
        if (ec == asio::error::not_found) self->Write("{\"ok\":false,\"error\":\"request too large\"}", true);
        return;
      }
      std::string line(asio::buffers_begin(self->in_.data()), asio::buffers_begin(self->in_.data()) + n - 1);
      self->in_.consume(n);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      // The reply keeps the connection alive until it is written (it may
      // come later, after asynchronous work).
      self->handler_(line, [self](std::string response) {
        ZB_CHECK_ON_LOOP(self->loop_);  // the owner's answer, possibly after asynchronous work
        self->Write(std::move(response), false);
      });
    });
  }

  void Write(std::string response, bool close_after) {
    if (closed_) return;
    out_ = std::move(response);
    out_ += '\n';
    Arm("its reply to be read");
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this(), close_after](boost::system::error_code ec, size_t) {
                        self->Disarm();
                        if (ec || close_after || !*self->server_alive_ || self->closed_) return;
                        self->ReadRequest();
                      });
  }

  // Closes the connection unless the operation started now completes within
  // the timeout. A generation number makes a timer that fired just as the
  // operation completed harmless.
  void Arm(const char* waiting_for) {
    if (timeout_.count() == 0) return;
    const uint64_t generation = ++generation_;
    deadline_.expires_after(timeout_);
    deadline_.async_wait([weak = weak_from_this(), generation, waiting_for](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || self == nullptr || self->generation_ != generation || self->closed_ || !*self->server_alive_) return;
      spdlog::debug("control: closing a connection that waited {} ms for {}", self->timeout_.count(), waiting_for);
      self->Close();
    });
  }
  void Disarm() {
    ++generation_;
    deadline_.cancel();
  }

  asio::io_context& loop_;  // outlives the server and its connections
  stream_protocol::socket socket_;
  const ControlServer::Handler& handler_;
  std::shared_ptr<bool> server_alive_;
  const std::chrono::milliseconds timeout_;
  asio::steady_timer deadline_;
  uint64_t generation_ = 0;
  bool closed_ = false;
  bool waiting_for_request_ = false;
  Clock::time_point idle_since_ = Clock::now();
  asio::streambuf in_;
  std::string out_;
};

class Server final : public ControlServer {
 public:
  Server(asio::io_context& loop, ControlOptions options, Handler handler)
      : loop_(loop), options_(std::move(options)), handler_(std::move(handler)), acceptor_(loop), retry_timer_(loop) {}

  ~Server() override {
    *alive_ = false;
    boost::system::error_code ec;
    acceptor_.close(ec);
    retry_timer_.cancel();
    for (auto& weak : connections_) {
      if (auto c = weak.lock()) c->Close();
    }
    RemoveOwnedSocket(owned_);  // only if the path still names our socket
  }

  absl::Status Listen() {
    auto owned = ListenOnUnixSocket(acceptor_, options_.socket_path, options_.socket_mode, /*gid=*/-1,
                                    "control.socket");
    if (!owned.ok()) return owned.status();
    owned_ = *std::move(owned);
    Accept();
    return absl::OkStatus();
  }

 private:
  void Accept() {
    acceptor_.async_accept([this, alive = alive_](boost::system::error_code ec, stream_protocol::socket socket) {
      if (!*alive || ec == asio::error::operation_aborted) return;
      ZB_CHECK_ON_LOOP(loop_);  // on_accept_error below runs on the loop
      if (ec) {
        OnAcceptError(ec);
        return;
      }
      // Failures not reported as a recovery yet add up until one is.
      if (failed_accepts_ > 0 && recovery_log_.ShouldLog(std::chrono::steady_clock::now(), nullptr)) {
        spdlog::info("control: accepting connections again after {} failed accept(s)", failed_accepts_);
        failed_accepts_ = 0;
      }
      backoff_ = kAcceptBackoffInitial;
      struct ucred cred{};
      socklen_t len = sizeof(cred);
      const bool known = getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
      // The file mode is the first guard; this is the second.
      if (!known || (cred.uid != 0 && cred.uid != geteuid())) {
        uint64_t suppressed = 0;
        if (refused_log_.ShouldLog(Clock::now(), &suppressed)) {
          spdlog::warn(
              "control: refusing uid {} (only root and the daemon's user may use the control socket; {} more "
              "refused since the last report)",
              cred.uid, suppressed);
        }
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        Admit(std::move(socket));
      }
      Accept();
    });
  }

  // Never stops accepting: the operator must get in as soon as the host has
  // a descriptor to spare.
  void OnAcceptError(const boost::system::error_code& ec) {
    ++failed_accepts_;
    if (options_.on_accept_error) options_.on_accept_error(AcceptErrorName(ec));
    uint64_t suppressed = 0;
    if (accept_log_.ShouldLog(Clock::now(), &suppressed)) {
      spdlog::warn("control: accept failed: {}{} ({} more failure(s) since the last report); still accepting",
                   ec.message(), IsResourceExhaustion(ec) ? " (out of descriptors or memory)" : "", suppressed);
    }
    if (IsPerConnection(ec)) {
      Accept();
      return;
    }
    // Out of descriptors or memory (or an error we do not know): the
    // pending connection stays in the backlog, so wait before trying again.
    retry_timer_.expires_after(backoff_);
    backoff_ = std::min<Clock::duration>(backoff_ * 2, kAcceptBackoffMax);
    retry_timer_.async_wait([this, alive = alive_](boost::system::error_code wait_ec) {
      if (*alive && !wait_ec) Accept();
    });
  }

  // At max_connections, the connection idle the longest makes room; when
  // every one is busy with a request, the new one gets a busy reply and is
  // closed (RefuseBusy).
  void Admit(stream_protocol::socket socket) {
    std::erase_if(connections_, [](const std::weak_ptr<Connection>& w) {
      auto c = w.lock();
      return c == nullptr || c->closed();
    });
    if (connections_.size() >= options_.max_connections) {
      auto longest = connections_.end();
      for (auto it = connections_.begin(); it != connections_.end(); ++it) {
        auto c = it->lock();
        if (c && c->idle() && (longest == connections_.end() || c->idle_since() < longest->lock()->idle_since())) {
          longest = it;
        }
      }
      if (longest == connections_.end()) {
        RefuseBusy(std::move(socket));
        return;
      }
      uint64_t suppressed = 0;
      if (full_log_.ShouldLog(Clock::now(), &suppressed)) {
        spdlog::warn("control: {} connections open; closed the one idle the longest ({} more since the last report)",
                     connections_.size(), suppressed);
      }
      if (auto c = longest->lock()) c->Close();
      connections_.erase(longest);
    }
    auto conn = std::make_shared<Connection>(loop_, std::move(socket), options_, handler_, alive_);
    connections_.push_back(conn);
    conn->Start();
  }

  // Every slot is busy with a request: the newcomer is told so in the
  // protocol's error shape and closed, instead of meeting a silent close.
  // The line is written at once, without waiting: a deadline of zero. A
  // just-accepted Unix socket has its whole send buffer free, so the one
  // short line always fits; and a flood of refused clients must not hold a
  // descriptor each for a deadline while the operator needs them. If the
  // write cannot complete (the client vanished), the close is the answer.
  // What the client may have sent is read and dropped first, so the close
  // is an orderly end of stream rather than a reset (Linux resets a Unix
  // stream whose closing end left input unread).
  void RefuseBusy(stream_protocol::socket socket) {
    const std::string line = absl::StrCat(
        "{\"ok\":false,\"error\":\"busy: all ", options_.max_connections,
        " control connections are busy with requests; try again shortly\"}\n");
    const int fd = socket.native_handle();
    const ssize_t sent = ::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    DropPendingInput(fd);
    boost::system::error_code ignored;
    socket.close(ignored);
    uint64_t suppressed = 0;
    if (busy_log_.ShouldLog(Clock::now(), &suppressed)) {
      spdlog::warn(
          "control: all {} connections busy with requests; refused a new one with a busy reply{} ({} refused since "
          "the last report)",
          connections_.size(), sent == static_cast<ssize_t>(line.size()) ? "" : " (the reply could not be written)",
          suppressed + 1);
    }
  }

  // Reads without blocking whatever input is already queued, at most a few
  // KiB (a request line is the most a refused client has reason to send).
  static void DropPendingInput(int fd) {
    char buf[4096];
    for (int i = 0; i < 4; ++i) {
      if (::recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0) return;
    }
  }

  asio::io_context& loop_;
  const ControlOptions options_;
  const Handler handler_;
  stream_protocol::acceptor acceptor_;
  asio::steady_timer retry_timer_;
  Clock::duration backoff_ = kAcceptBackoffInitial;
  uint64_t failed_accepts_ = 0;
  RateLimitedLog accept_log_{kLogInterval};
  RateLimitedLog recovery_log_{kLogInterval};
  RateLimitedLog refused_log_{kLogInterval};
  RateLimitedLog full_log_{kLogInterval};
  RateLimitedLog busy_log_{kLogInterval};
  std::vector<std::weak_ptr<Connection>> connections_;
  OwnedSocketPath owned_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

absl::StatusOr<std::unique_ptr<ControlServer>> StartControlServer(asio::io_context& loop,
                                                                  const ControlOptions& options,
                                                                  ControlServer::Handler handler) {
  auto server = std::make_unique<Server>(loop, options, std::move(handler));
  if (absl::Status s = server->Listen(); !s.ok()) return s;
  return std::unique_ptr<ControlServer>(std::move(server));
}

}  // namespace zb
