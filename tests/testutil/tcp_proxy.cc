#include "tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>

namespace zb::testing {

struct TcpProxy::Connection {
  int client = -1;
  int upstream = -1;
  std::mutex mu;
  std::condition_variable cv;
  bool frozen = false;
  bool closed = false;

  // Shuts both sockets down (wakes the forwarders); the descriptors are
  // closed by the destructor, after the forwarders are joined.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu);
      closed = true;
    }
    cv.notify_all();
    ::shutdown(client, SHUT_RDWR);
    ::shutdown(upstream, SHUT_RDWR);
  }
  ~Connection() {
    ::close(client);
    ::close(upstream);
  }
};

TcpProxy::TcpProxy(int target_port) : target_port_(target_port) {}

TcpProxy::~TcpProxy() {
  stopping_ = true;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : connections_) c->Close();
    threads.swap(forwarders_);
  }
  for (auto& t : threads) t.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

bool TcpProxy::Start() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return false;
  if (::listen(listen_fd_, 64) != 0) return false;
  socklen_t len = sizeof(addr);
  if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return false;
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return true;
}

void TcpProxy::FreezeExisting() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : connections_) {
    std::lock_guard<std::mutex> clock(c->mu);
    c->frozen = true;
  }
}

void TcpProxy::AcceptLoop() {
  while (!stopping_) {
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (stopping_) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // shut down
    }
    const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (upstream < 0 || ::connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(client);
      if (upstream >= 0) ::close(upstream);
      continue;
    }
    const int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_shared<Connection>();
    c->client = client;
    c->upstream = upstream;
    ++accepted_;
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      c->Close();
      continue;
    }
    connections_.push_back(c);
    forwarders_.emplace_back([c] { Forward(c, c->client, c->upstream); });
    forwarders_.emplace_back([c] { Forward(c, c->upstream, c->client); });
  }
}

// Copies `from` to `to` until either side ends. Once frozen, what was read
// is held back and nothing more is read: both peers see a connection that
// has gone silent, not one that closed.
void TcpProxy::Forward(const std::shared_ptr<Connection>& c, int from, int to) {
  char buf[16384];
  while (true) {
    const ssize_t n = ::read(from, buf, sizeof(buf));
    if (n <= 0) break;
    {
      std::unique_lock<std::mutex> lock(c->mu);
      if (c->frozen) {
        c->cv.wait(lock, [&c] { return c->closed; });
        return;
      }
    }
    ssize_t off = 0;
    while (off < n) {
      // MSG_NOSIGNAL: a peer that closed must not kill the test with SIGPIPE.
      const ssize_t w = ::send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
      if (w <= 0) {
        c->Close();
        return;
      }
      off += w;
    }
  }
  // One side ended: pass the end on (unless frozen: then stay silent).
  std::unique_lock<std::mutex> lock(c->mu);
  if (c->frozen) {
    c->cv.wait(lock, [&c] { return c->closed; });
    return;
  }
  lock.unlock();
  ::shutdown(to, SHUT_WR);
}

}  // namespace zb::testing
