// The operator's control socket against a hostile or careless local client:
// idle and trickling clients time out, the connection cap makes room by
// closing the one idle the longest (never one busy with a request), a client
// past the cap is told "busy" (and a flood of them is logged in summary),
// and the accept loop survives running out of descriptors.

#include "control/control_server.h"

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "testutil.h"

namespace zb {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using zb::testing::WaitFor;

sockaddr_un AddressOf(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return addr;
}

// A blocking Unix stream socket connected to `path`, or -1.
int ConnectTo(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  const sockaddr_un addr = AddressOf(path);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  return send(fd, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
}

// One reply line (without '\n'), or "" when the connection closed or
// `timeout` passed first.
std::string ReadLine(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string line;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return "";
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char c;
    if (recv(fd, &c, 1, 0) != 1) return "";
    if (c == '\n') return line;
    line += c;
  }
}

struct ReadResult {
  std::string data;        // everything read
  bool clean_eof = false;  // the server closed with an orderly end of stream (no reset, no timeout)
};
// Reads until the server closes the connection or `timeout` passes.
ReadResult ReadToEnd(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  ReadResult result;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return result;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[512];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) return result;
    if (n == 0) {
      result.clean_eof = true;
      return result;
    }
    result.data.append(buf, static_cast<size_t>(n));
  }
}

// Whether the server has closed `fd`'s connection (without blocking).
bool PeerClosed(int fd) {
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

// Whether the server has closed `fd`'s connection, whatever it left unread
// there (without blocking or reading).
bool HungUp(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP)) != 0;
}

class ControlServerTest : public ::testing::Test {
 protected:
  // Starts the server (socket in a temp dir) and the loop thread. A request
  // "hold" is answered only by Release(); any other gets its echo.
  void Start(ControlOptions options) {
    options.socket_path = path_;
    auto server = StartControlServer(loop_, options, [this](const std::string& line, ControlServer::Reply reply) {
      if (line == "hold") {
        std::lock_guard<std::mutex> lock(mu_);
        held_.push_back(std::move(reply));
        return;
      }
      reply("echo " + line);
    });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    thread_ = std::thread([this] { loop_.run(); });
  }

  void TearDown() override {
    // The server lives on the loop thread; it goes away after the loop.
    work_.reset();
    loop_.stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
    held_.clear();
    for (int fd : fds_) close(fd);
  }

  size_t Held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }

  // Answers every held request (on the loop thread, as Reply requires).
  void Release() {
    std::promise<void> done;
    asio::post(loop_, [&] {
      std::vector<ControlServer::Reply> replies;
      {
        std::lock_guard<std::mutex> lock(mu_);
        replies.swap(held_);
      }
      for (auto& reply : replies) reply("released");
      done.set_value();
    });
    done.get_future().wait();
  }

  int Connect() {
    const int fd = ConnectTo(path_);
    if (fd >= 0) fds_.push_back(fd);
    return fd;
  }

  zb::testing::TempDir dir_;
  const std::string path_ = dir_.Sub("control.sock");
  asio::io_context loop_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(loop_);
  std::mutex mu_;
  std::vector<ControlServer::Reply> held_;  // guarded by mu_; destroyed before loop_
  std::unique_ptr<ControlServer> server_;
  std::thread thread_;
  std::vector<int> fds_;
};

TEST_F(ControlServerTest, AnswersEveryRequestLineInOrder) {
  Start({});
  const int fd = Connect();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, "one\ntwo\r\n"));
  EXPECT_EQ(ReadLine(fd, std::chrono::seconds(10)), "echo one");
  EXPECT_EQ(ReadLine(fd, std::chrono::seconds(10)), "echo two");
}

// The handler runs on the loop; a reply given anywhere else (an owner that
// answered from another thread after asynchronous work) would race the
// connection, so it aborts, in a child process here.
using ControlServerDeathTest = ControlServerTest;
TEST_F(ControlServerDeathTest, AReplyGivenOffTheLoopAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Start({});
        const int fd = Connect();
        if (fd < 0 || !SendAll(fd, "hold\n") || !WaitFor([&] { return Held() == 1; }, std::chrono::seconds(10))) {
          std::fprintf(stderr, "setup failed\n");
          std::_Exit(0);  // not the death expected: the test fails
        }
        ControlServer::Reply reply;
        {
          std::lock_guard<std::mutex> lock(mu_);
          reply = held_.front();
        }
        reply("from the wrong thread");
      },
      "must run on the event loop thread");
}

TEST_F(ControlServerTest, SilentAndTricklingClientsAreClosedAtTheReadDeadline) {
  Start({.read_timeout_ms = 300});
  const int silent = Connect();
  const int trickling = Connect();
  const int served = Connect();
  ASSERT_GE(silent, 0);
  ASSERT_GE(trickling, 0);
  ASSERT_GE(served, 0);
  ASSERT_TRUE(SendAll(trickling, "half a req"));
  ASSERT_TRUE(SendAll(served, "ping\n"));
  EXPECT_EQ(ReadLine(served, std::chrono::seconds(10)), "echo ping");
  EXPECT_TRUE(WaitFor([&] { return PeerClosed(silent) && PeerClosed(trickling); }, std::chrono::seconds(10)));
  // A client that keeps asking is served, one request after another.
  const int again = Connect();
  ASSERT_GE(again, 0);
  ASSERT_TRUE(SendAll(again, "a\n"));
  EXPECT_EQ(ReadLine(again, std::chrono::seconds(10)), "echo a");
  ASSERT_TRUE(SendAll(again, "b\n"));
  EXPECT_EQ(ReadLine(again, std::chrono::seconds(10)), "echo b");
}

TEST_F(ControlServerTest, AtTheCapTheConnectionIdleTheLongestMakesRoom) {
  // A deadline far beyond the test: only the cap closes anything here.
  Start({.max_connections = 4, .read_timeout_ms = 600'000});
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    const int fd = Connect();
    ASSERT_GE(fd, 0);
    // One exchange each, in order, so they became idle in this order.
    ASSERT_TRUE(SendAll(fd, "hi\n"));
    ASSERT_EQ(ReadLine(fd, std::chrono::seconds(10)), "echo hi");
    idle.push_back(fd);
  }
  const int operator_fd = Connect();
  ASSERT_GE(operator_fd, 0);
  ASSERT_TRUE(SendAll(operator_fd, "status\n"));
  EXPECT_EQ(ReadLine(operator_fd, std::chrono::seconds(10)), "echo status");
  EXPECT_TRUE(WaitFor([&] { return PeerClosed(idle[0]); }, std::chrono::seconds(10)));
  for (int i = 1; i < 4; ++i) {
    EXPECT_FALSE(PeerClosed(idle[i])) << i;
    ASSERT_TRUE(SendAll(idle[i], "still\n"));
    EXPECT_EQ(ReadLine(idle[i], std::chrono::seconds(10)), "echo still") << i;
  }
}

TEST_F(ControlServerTest, ConnectionsBusyWithARequestAreNotDisplaced) {
  Start({.max_connections = 2, .read_timeout_ms = 600'000});
  std::vector<int> busy;
  for (int i = 0; i < 2; ++i) {
    const int fd = Connect();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, "hold\n"));
    busy.push_back(fd);
  }
  ASSERT_TRUE(WaitFor([&] { return Held() == 2; }, std::chrono::seconds(10)));
  // Every slot is busy: the newcomer is refused, nothing in flight is lost.
  const int late = Connect();
  ASSERT_GE(late, 0);
  const ReadResult got = ReadToEnd(late, std::chrono::seconds(10));
  EXPECT_TRUE(got.clean_eof);
  EXPECT_EQ(got.data.rfind("{\"ok\":false,\"error\":\"busy: ", 0), 0u) << got.data;
  Release();
  for (int fd : busy) EXPECT_EQ(ReadLine(fd, std::chrono::seconds(10)), "released");
}

// Log lines from spdlog's default logger while it lives (a test sink beside
// the console one).
class CapturedLog {
 public:
  CapturedLog() { spdlog::default_logger()->sinks().push_back(sink_); }
  ~CapturedLog() { Stop(); }
  void Stop() {
    auto& sinks = spdlog::default_logger()->sinks();
    std::erase(sinks, sink_);
  }
  std::vector<std::string> Matching(const std::string& text) const {
    std::vector<std::string> lines;
    for (const auto& line : sink_->last_formatted()) {
      if (line.find(text) != std::string::npos) lines.push_back(line);
    }
    return lines;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_ =
      std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(100'000);
};

constexpr char kBusyReply[] =
    "{\"ok\":false,\"error\":\"busy: all 16 control connections are busy with requests; try again "
    "shortly\"}\n";
constexpr char kBusyLog[] = "busy with requests; refused a new one with a busy reply";

TEST_F(ControlServerTest, BeyondTheCapABusyClientIsToldSoAndAFloodIsLoggedInSummary) {
  CapturedLog log;
  // Defaults: 16 connections; a deadline far beyond the test.
  Start({.read_timeout_ms = 600'000});
  std::vector<int> busy;
  for (int i = 0; i < 16; ++i) {
    const int fd = Connect();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, "hold\n"));
    busy.push_back(fd);
  }
  // Every one is busy (its reply held back), so none can be displaced.
  ASSERT_TRUE(WaitFor([&] { return Held() == 16; }, std::chrono::seconds(10)));

  // The 17th asks something and is answered: busy, in the protocol's error
  // shape, then an orderly close.
  const int seventeenth = Connect();
  ASSERT_GE(seventeenth, 0);
  (void)SendAll(seventeenth, "status\n");  // may find the busy reply and the close already there
  const ReadResult got = ReadToEnd(seventeenth, std::chrono::seconds(10));
  EXPECT_EQ(got.data, kBusyReply);
  EXPECT_TRUE(got.clean_eof);
  ASSERT_TRUE(WaitFor([&] { return log.Matching(kBusyLog).size() == 1; }, std::chrono::seconds(10)));
  EXPECT_NE(log.Matching(kBusyLog)[0].find("(1 refused since the last report)"), std::string::npos)
      << log.Matching(kBusyLog)[0];

  // A flood: 200 more at once. Every one that reads gets the same line and
  // the close; every fourth never reads (nor writes) and only sees the close.
  std::vector<int> flood;
  for (int i = 0; i < 200; ++i) {
    const int fd = Connect();
    ASSERT_GE(fd, 0) << i << ": " << std::strerror(errno);
    if (i % 2 == 0) {
      // The busy reply (and the close) may already be there: then the send
      // fails, and the reply is still there to read.
      (void)SendAll(fd, "status\n");
    }
    flood.push_back(fd);
  }
  for (size_t i = 0; i < flood.size(); ++i) {
    if (i % 4 == 3) {
      EXPECT_TRUE(WaitFor([&] { return HungUp(flood[i]); }, std::chrono::seconds(10))) << i;
      continue;
    }
    const ReadResult r = ReadToEnd(flood[i], std::chrono::seconds(10));
    EXPECT_EQ(r.data, kBusyReply) << i;
    EXPECT_TRUE(r.clean_eof) << i;
  }

  // Nothing in flight was lost, and the slots serve again once free.
  Release();
  for (int fd : busy) EXPECT_EQ(ReadLine(fd, std::chrono::seconds(10)), "released");
  const int after = Connect();
  ASSERT_GE(after, 0);
  ASSERT_TRUE(SendAll(after, "status\n"));
  EXPECT_EQ(ReadLine(after, std::chrono::seconds(10)), "echo status");

  // 201 refusals well within one 5 s interval: one line, or two when the
  // machine is slow enough to cross an interval; never one per refusal.
  // Each line counts the refusals since the one before.
  log.Stop();
  const auto lines = log.Matching(kBusyLog);
  EXPECT_GE(lines.size(), 1u);
  EXPECT_LE(lines.size(), 2u);
  for (const auto& line : lines) EXPECT_NE(line.find(" refused since the last report)"), std::string::npos) << line;
}

TEST_F(ControlServerTest, AcceptSurvivesRunningOutOfDescriptors) {
  std::atomic<int> emfile{0};
  Start({.on_accept_error = [&](const std::string& error) {
    if (error == "EMFILE") ++emfile;
  }});
  // The client's socket exists before the descriptors run out; connect()
  // needs none, the server's accept does.
  const int client = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  fds_.push_back(client);
  zb::testing::DescriptorExhaustion exhaustion;
  ASSERT_TRUE(exhaustion.Exhaust());
  const sockaddr_un addr = AddressOf(path_);
  ASSERT_EQ(connect(client, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  ASSERT_TRUE(SendAll(client, "status\n"));
  // The server fails to accept it, and keeps trying (with a backoff).
  EXPECT_TRUE(WaitFor([&] { return emfile.load() >= 2; }, std::chrono::seconds(10))) << emfile.load();
  exhaustion.Release();
  EXPECT_EQ(ReadLine(client, std::chrono::seconds(10)), "echo status");
  const int fresh = Connect();
  ASSERT_GE(fresh, 0);
  ASSERT_TRUE(SendAll(fresh, "again\n"));
  EXPECT_EQ(ReadLine(fresh, std::chrono::seconds(10)), "echo again");
}

}  // namespace
}  // namespace zb
