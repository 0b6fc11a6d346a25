#pragma once
// A TCP proxy on 127.0.0.1 for tests of dead connections. It forwards every
// connection to a target port on 127.0.0.1. FreezeExisting() makes the
// connections open at that moment stop forwarding in both directions while
// staying open (no FIN, no RST), as when a NAT mapping expires or a
// middlebox is suspended; connections made later work normally.
//
// Threads: one accept thread, two forwarding threads per connection; every
// public method may be called from any thread. The destructor closes
// everything and joins.

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace zb::testing {

class TcpProxy {
 public:
  explicit TcpProxy(int target_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  // Binds an ephemeral port on 127.0.0.1 and starts accepting.
  bool Start();
  int port() const { return port_; }
  // Every connection open now stops forwarding, for good.
  void FreezeExisting();
  int connections_accepted() const { return accepted_.load(); }

 private:
  struct Connection;
  void AcceptLoop();
  static void Forward(const std::shared_ptr<Connection>& c, int from, int to);

  const int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::shared_ptr<Connection>> connections_;  // guarded by mu_
  std::vector<std::thread> forwarders_;                  // guarded by mu_
};

}  // namespace zb::testing
