// Hostile producers and a hostile host, against the real daemon process:
// nothing a local process does can crash, starve or read it.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

int ConnectTcp(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `input`, half-closes, reads the answer to EOF (bounded).
std::string Exchange(const std::string& socket, const std::string& input) {
  int fd = ConnectUnix(socket);
  if (fd < 0) return "<connect failed>";
  const timeval tv{20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  size_t sent = 0;
  while (sent < input.size()) {
    const ssize_t n = ::send(fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_.Sub("dev"));
    ASSERT_TRUE(server_.Start()) << server_.log();
  }
  DaemonOptions Options() const {
    DaemonOptions o;
    o.grpc_port = server_.grpc_port();
    o.http_port = server_.http_port();
    return o;
  }
  TempDir dir_;
  DevServer server_{dir_.Sub("dev")};
};

TEST_F(HostileTest, DeeplyNestedJsonIsRefusedAndTheDaemonServesOn) {
  std::filesystem::create_directories(dir_.Sub("d"));
  Daemon daemon(dir_.Sub("d"), Options());
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  const std::string deep = "{\"a\":" + std::string(200000, '[') + std::string(200000, ']') + "}";
  const std::string reply = Exchange(daemon.socket(), deep + "\n{\"id\":\"ok-0\"}\n");
  EXPECT_NE(reply.find("error 1 JSON nested deeper than 64 levels"), std::string::npos) << reply.substr(0, 300);
  EXPECT_NE(reply.find("ok 2"), std::string::npos) << reply.substr(0, 300);
  ASSERT_TRUE(daemon.process()->Running()) << daemon.log();
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(server_, "main.edge.readings", "ok", 1).missing == 0; },
                      std::chrono::seconds(30)));
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

TEST_F(HostileTest, IdleAndSlowConnectionsAtTheLimitDoNotLockOutRealProducers) {
  std::filesystem::create_directories(dir_.Sub("d"));
  DaemonOptions o = Options();
  o.intake_yaml = "  max_connections: 16\n  read_timeout_ms: 1000\n";
  Daemon daemon(dir_.Sub("d"), o);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  // 8 idle connections and 8 that trickle one byte of a record at a time.
  std::vector<int> hostile;
  for (int i = 0; i < 16; ++i) {
    const int fd = ConnectUnix(daemon.socket());
    ASSERT_GE(fd, 0);
    if (i % 2 == 1) ::send(fd, "{", 1, MSG_NOSIGNAL);
    hostile.push_back(fd);
  }
  for (int round = 0; round < 3; ++round) {
    WriteRecords(dir_.Sub("r.ndjson"), absl::StrCat("r", round), 100);
    const RunResult sent = SendFile(daemon.socket(), "readings", dir_.Sub("r.ndjson"));
    EXPECT_EQ(sent.exit_code, 0) << sent.output;
    for (size_t i = 1; i < hostile.size(); i += 2) ::send(hostile[i], "\"", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(WaitFor([&] { return CheckDelivery(server_, "main.edge.readings", absl::StrCat("r", round), 100).missing == 0; },
                        std::chrono::seconds(30)));
  }
  // The trickling ones are closed at their record deadline, and the log
  // says so.
  ASSERT_TRUE(WaitFor([&] { return daemon.log().find("not complete in time") != std::string::npos; },
                      std::chrono::seconds(10)));
  for (int fd : hostile) ::close(fd);
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

// Resident memory of a process, from /proc (bytes; -1 when unreadable).
int64_t ResidentBytes(pid_t pid) {
  const std::string status = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/status"));
  const size_t at = status.find("VmRSS:");
  if (at == std::string::npos) return -1;
  return std::stoll(status.substr(at + 6)) * 1024;
}

TEST_F(HostileTest, AlmostCompleteFramesCannotGrowTheDaemonPastItsIntakeBudget) {
  // 64 framed connections each push as much of a 15 MiB frame as the
  // daemon will take, never the last byte. Before the budget this grew the
  // daemon by about 1 GiB.
  std::filesystem::create_directories(dir_.Sub("d"));
  DaemonOptions o = Options();
  o.intake_yaml = "  max_buffered_bytes: 32MiB\n  read_timeout_ms: 60000\n";
  Daemon daemon(dir_.Sub("d"), o);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  const pid_t pid = daemon.process()->pid();
  const int64_t before = ResidentBytes(pid);
  ASSERT_GT(before, 0);
  constexpr uint32_t kFrame = 15u << 20;
  struct Conn {
    int fd;
    size_t sent = 0;
  };
  std::vector<Conn> conns;
  for (int i = 0; i < 64; ++i) {
    Conn c{ConnectUnix(daemon.socket())};
    ASSERT_GE(c.fd, 0);
    const uint32_t len = htonl(kFrame);
    // An empty frame first (4 zero bytes: framed mode, an empty Hello
    // answered BAD_FRAME), then the big frame's header.
    const std::string head = std::string(4, '\0') + std::string(reinterpret_cast<const char*>(&len), 4);
    ASSERT_EQ(::send(c.fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    conns.push_back(c);
  }
  const std::string chunk(256 << 10, 'z');
  int64_t peak = before;
  auto last_progress = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - last_progress < std::chrono::milliseconds(1500)) {
    for (Conn& c : conns) {
      const size_t room = kFrame - 1 - c.sent;
      if (room == 0) continue;
      const ssize_t n = ::send(c.fd, chunk.data(), std::min(room, chunk.size()), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.sent += static_cast<size_t>(n);
        last_progress = std::chrono::steady_clock::now();
      }
    }
    peak = std::max(peak, ResidentBytes(pid));
    pollfd p{-1, 0, 0};
    ::poll(&p, 0, 5);
  }
  size_t total = 0;
  for (const Conn& c : conns) total += c.sent;
  EXPECT_GT(total, 2 * (kFrame - 1)) << "the admitted frames were read";
  EXPECT_LT(peak - before, 96ll << 20) << "grew from " << before << " to " << peak << " bytes";
  std::printf("[   INFO   ] 64 connections pushed %zu bytes of unfinished frames; the daemon grew by %lld KiB\n",
              total, static_cast<long long>((peak - before) >> 10));
  EXPECT_TRUE(daemon.process()->Running());
  for (const Conn& c : conns) ::close(c.fd);
  // A real producer is served once the hostile ones are gone.
  EXPECT_EQ(Exchange(daemon.socket(), "{\"id\":\"m-0\"}\n"), "ok 1\n");
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

TEST_F(HostileTest, IdleMetricsConnectionsCannotSilenceHealthChecks) {
  std::filesystem::create_directories(dir_.Sub("d"));
  Daemon daemon(dir_.Sub("d"), Options());
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  std::vector<int> idle;
  for (int i = 0; i < 300; ++i) {
    const int fd = ConnectTcp(daemon.metrics_port());
    if (fd >= 0) idle.push_back(fd);
  }
  EXPECT_TRUE(WaitFor([&] { return HttpGet(daemon.metrics_port(), "/healthz").ok(); }, std::chrono::seconds(15)));
  EXPECT_TRUE(HttpGet(daemon.metrics_port(), "/readyz").ok());
  for (int fd : idle) ::close(fd);
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

TEST_F(HostileTest, ASecondDaemonNeverTakesOverALiveSocket) {
  std::filesystem::create_directories(dir_.Sub("a"));
  std::filesystem::create_directories(dir_.Sub("b"));
  Daemon first(dir_.Sub("a"), Options());
  ASSERT_TRUE(first.Start()) << first.log();
  DaemonOptions o = Options();
  o.socket_path = first.socket();  // same intake socket, its own spool
  Daemon second(dir_.Sub("b"), o);
  second.Launch();
  ASSERT_EQ(second.process()->Wait(std::chrono::seconds(20)), 1) << second.log();
  EXPECT_NE(second.log().find("is in use"), std::string::npos) << second.log();
  // The first daemon still owns and serves its socket.
  EXPECT_EQ(Exchange(first.socket(), "{\"id\":\"s-0\"}\n"), "ok 1\n");
  EXPECT_EQ(first.Terminate(std::chrono::seconds(10)), 0);
  EXPECT_FALSE(std::filesystem::exists(first.socket())) << "a clean stop removes its own socket";
}

TEST_F(HostileTest, CheckCatchesWhatWouldFailAtStart) {
  std::filesystem::create_directories(dir_.Sub("d"));
  DaemonOptions o = Options();
  o.spool_path = dir_.Sub("d/spool-is-a-file");
  WriteFile(o.spool_path, "x");
  Daemon daemon(dir_.Sub("d"), o);
  daemon.WriteConfig();
  WriteFile(daemon.socket(), "a regular file where the socket goes");
  // The metrics port is taken by another process.
  const int taken = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(daemon.metrics_port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(taken, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(taken, 1), 0);
  const RunResult check = RunCommand({BinDir() + "/zerobusd", "--config", daemon.config_path(), "--check"},
                                     std::chrono::seconds(30));
  ::close(taken);
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_NE(check.output.find("spool.path: " + o.spool_path + " exists and is not a directory"), std::string::npos)
      << check.output;
  EXPECT_NE(check.output.find("intake.socket: " + daemon.socket() + " exists and is not a socket"), std::string::npos)
      << check.output;
  EXPECT_NE(check.output.find("metrics.listen: cannot listen on"), std::string::npos) << check.output;

  // A descriptor limit that leaves intake.max_connections (1024) less than
  // the 512 the daemon keeps for itself.
  const RunResult low = RunCommand({"/bin/sh", "-c", "ulimit -n 1535 && exec \"$0\" --config \"$1\" --check",
                                    BinDir() + "/zerobusd", daemon.config_path()},
                                   std::chrono::seconds(30));
  EXPECT_NE(low.output.find("intake.max_connections: 1024 connections plus the 512 descriptors"), std::string::npos)
      << low.output;
  const RunResult enough = RunCommand({"/bin/sh", "-c", "ulimit -n 1536 && exec \"$0\" --config \"$1\" --check",
                                       BinDir() + "/zerobusd", daemon.config_path()},
                                      std::chrono::seconds(30));
  EXPECT_EQ(enough.output.find("descriptor limit"), std::string::npos) << enough.output;

  // The same socket for intake and control.
  const std::string same = dir_.Sub("same.yaml");
  WriteFile(same, ReadFileOrEmpty(daemon.config_path()) + "");
  std::string text = ReadFileOrEmpty(daemon.config_path());
  const std::string control_line = "  socket: " + daemon.control_socket();
  text.replace(text.find(control_line), control_line.size(), "  socket: " + daemon.socket());
  WriteFile(same, text);
  const RunResult same_check = RunCommand({BinDir() + "/zerobusd", "--config", same, "--check"},
                                          std::chrono::seconds(30));
  EXPECT_EQ(same_check.exit_code, 1) << same_check.output;
  EXPECT_NE(same_check.output.find("control.socket: must differ from intake.socket"), std::string::npos)
      << same_check.output;
}

TEST_F(HostileTest, WhatTheDaemonCreatesIsPrivateWhateverTheUmask) {
  std::filesystem::create_directories(dir_.Sub("d"));
  const mode_t old = umask(0);  // the daemon inherits the loosest umask
  Daemon daemon(dir_.Sub("d"), Options());
  const bool started = daemon.Start();
  umask(old);
  ASSERT_TRUE(started) << daemon.log();
  WriteRecords(dir_.Sub("p.ndjson"), "p", 10);
  ASSERT_EQ(SendFile(daemon.socket(), "readings", dir_.Sub("p.ndjson")).exit_code, 0);
  struct stat st{};
  ASSERT_EQ(stat(dir_.Sub("d/spool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_.Sub("d/spool"))) {
    ASSERT_EQ(lstat(e.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0077, 0u) << e.path() << " is open to group or others: " << std::oct << (st.st_mode & 0777);
  }
  // No producers' group configured: only the daemon's user may connect.
  ASSERT_EQ(lstat(daemon.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(lstat(daemon.control_socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

TEST_F(HostileTest, ResumeOfAnUnknownRouteIsAnError) {
  std::filesystem::create_directories(dir_.Sub("d"));
  Daemon daemon(dir_.Sub("d"), Options());
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  const std::string unknown = daemon.Control(R"({"cmd":"resume","route":"nope"})");
  EXPECT_NE(unknown.find("\"ok\":false"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("unknown route \\\"nope\\\" (known: readings)"), std::string::npos) << unknown;
  const std::string known = daemon.Control(R"({"cmd":"resume","route":"readings"})");
  EXPECT_NE(known.find("\"ok\":true"), std::string::npos) << known;
  const std::string deep = daemon.Control("{\"cmd\":" + std::string(100000, '[') + "}");
  EXPECT_NE(deep.find("\"ok\":false"), std::string::npos) << deep.substr(0, 200);
  EXPECT_TRUE(daemon.process()->Running());
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

TEST_F(HostileTest, SecretsNeverLeaveTheProcessEvenWhenTheTokenEndpointEchoesThem) {
  // The token endpoint answers with the request it got: the Basic header,
  // the decoded credential and the form body.
  ASSERT_TRUE(server_.SetFaults(
      R"({"token":{"responses":[{"status":200,"echo_request":true},{"status":500,"echo_request":true}],)"
      R"("then":{"status":401,"echo_request":true}}})"));
  std::filesystem::create_directories(dir_.Sub("d"));
  DaemonOptions o = Options();
  o.extra_yaml = "drain:\n  backoff_initial_ms: 20\n  backoff_max_ms: 100\n";
  Daemon daemon(dir_.Sub("d"), o);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  WriteRecords(dir_.Sub("s.ndjson"), "s", 5);
  ASSERT_EQ(SendFile(daemon.socket(), "readings", dir_.Sub("s.ndjson")).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_lane_parked", "route=\"readings\"").value_or(0) == 1; },
                      std::chrono::seconds(30)))
      << daemon.log();
  const RunResult status = RunCommand({BinDir() + "/zerobusctl", "status", "--config", daemon.config_path()},
                                      std::chrono::seconds(30));
  const std::string control = daemon.Control(R"({"cmd":"status"})");
  const std::string metrics = HttpGet(daemon.metrics_port(), "/metrics").value_or("");
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
  const std::string log = daemon.log();
  // The harness's credential (client_id dev-client, client_secret dev-secret).
  const std::vector<std::string> forms = {
      "dev-secret",
      "ZGV2LWNsaWVudDpkZXYtc2VjcmV0",  // base64("dev-client:dev-secret"), std and url-safe alike
      "ZGV2LXNlY3JldA",                // base64("dev-secret") without padding
  };
  for (const auto& [what, text] : std::vector<std::pair<std::string, std::string>>{
           {"log", log}, {"zerobusctl status", status.output}, {"control status", control}, {"metrics", metrics}}) {
    for (const std::string& form : forms) {
      EXPECT_EQ(text.find(form), std::string::npos) << what << " carries " << form << ":\n" << text;
    }
  }
  // And the operator still learns what happened.
  EXPECT_NE(log.find("[REDACTED]"), std::string::npos) << log;
  EXPECT_NE(status.output.find("PARKED"), std::string::npos) << status.output;
  EXPECT_NE(control.find("\"parked_reason\":\"the OAuth token endpoint refused"), std::string::npos) << control;
}

}  // namespace
}  // namespace zb::testing
