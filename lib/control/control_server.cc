#include "control/control_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/unix_socket.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

namespace asio = boost::asio;
using asio::local::stream_protocol;

class Server;

// One operator connection: read a line, hand it over, write the reply,
// repeat. Owned by shared_ptr; the server keeps weak references.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(stream_protocol::socket socket, const ControlOptions& options, const ControlServer::Handler& handler,
             std::shared_ptr<bool> server_alive)
      : socket_(std::move(socket)),
        handler_(handler),
        server_alive_(std::move(server_alive)),
        in_(options.max_request_bytes) {}

  void Start() { ReadRequest(); }
  void Close() {
    boost::system::error_code ec;
    socket_.close(ec);
  }

 private:
  void ReadRequest() {
    asio::async_read_until(socket_, in_, '\n', [self = shared_from_this()](boost::system::error_code ec, size_t n) {
      if (!*self->server_alive_) return;
      if (ec) {
        if (ec == asio::error::not_found) self->Write("{\"ok\":false,\"error\":\"request too large\"}", true);
        return;
      }
      std::string line(asio::buffers_begin(self->in_.data()), asio::buffers_begin(self->in_.data()) + n - 1);
      self->in_.consume(n);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      // The reply keeps the connection alive until it is written (it may
      // come later, after asynchronous work).
      self->handler_(line, [self](std::string response) { self->Write(std::move(response), false); });
    });
  }

  void Write(std::string response, bool close_after) {
    out_ = std::move(response);
    out_ += '\n';
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this(), close_after](boost::system::error_code ec, size_t) {
                        if (ec || close_after || !*self->server_alive_) return;
                        self->ReadRequest();
                      });
  }

  stream_protocol::socket socket_;
  const ControlServer::Handler& handler_;
  std::shared_ptr<bool> server_alive_;
  asio::streambuf in_;
  std::string out_;
};

class Server final : public ControlServer {
 public:
  Server(asio::io_context& loop, ControlOptions options, Handler handler)
      : options_(std::move(options)), handler_(std::move(handler)), acceptor_(loop) {}

  ~Server() override {
    *alive_ = false;
    boost::system::error_code ec;
    acceptor_.close(ec);
    for (auto& weak : connections_) {
      if (auto c = weak.lock()) c->Close();
    }
    std::error_code fec;
    std::filesystem::remove(options_.socket_path, fec);
  }

  absl::Status Listen() {
    if (absl::Status s = ListenOnUnixSocket(acceptor_, options_.socket_path, options_.socket_mode, "control.socket"); !s.ok()) {
      return s;
    }
    Accept();
    return absl::OkStatus();
  }

 private:
  void Accept() {
    acceptor_.async_accept([this, alive = alive_](boost::system::error_code ec, stream_protocol::socket socket) {
      if (!*alive) return;
      if (ec) {
        if (ec != asio::error::operation_aborted) Accept();
        return;
      }
      struct ucred cred{};
      socklen_t len = sizeof(cred);
      const bool known = getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
      // The file mode is the first guard; this is the second.
      if (!known || (cred.uid != 0 && cred.uid != geteuid())) {
        spdlog::warn("control: refusing uid {} (only root and the daemon's user may use the control socket)",
                     cred.uid);
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        std::erase_if(connections_, [](const std::weak_ptr<Connection>& w) { return w.expired(); });
        if (connections_.size() >= options_.max_connections) {
          boost::system::error_code ignored;
          socket.close(ignored);
        } else {
          auto conn = std::make_shared<Connection>(std::move(socket), options_, handler_, alive_);
          connections_.push_back(conn);
          conn->Start();
        }
      }
      Accept();
    });
  }

  const ControlOptions options_;
  const Handler handler_;
  stream_protocol::acceptor acceptor_;
  std::vector<std::weak_ptr<Connection>> connections_;
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
