// A hostile network and service, against the real daemon process: dead
// connections, requests at the service's size limit, bad token replies,
// broken TLS, and the operator's view of it all.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "tcp_proxy.h"
#include "test_certs.h"

namespace zb::testing {
namespace {

constexpr char kTable[] = "main.edge.readings";

// Lines of `log` that contain `needle`.
int CountLines(const std::string& log, const std::string& needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) n += absl::StrContains(line, needle) ? 1 : 0;
  return n;
}

class NetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<DevServer>(dir_.Sub("dev"));
    std::filesystem::create_directories(dir_.Sub("dev"));
    ASSERT_TRUE(server_->Start()) << server_->log();
  }

  DaemonOptions Options() const {
    DaemonOptions o;
    o.grpc_port = server_->grpc_port();
    o.http_port = server_->http_port();
    return o;
  }

  void Send(const std::string& prefix, int n, int size = 200) {
    const std::string file = dir_.Sub(prefix + ".ndjson");
    WriteRecords(file, prefix, n, size);
    const RunResult sent = SendFile(daemon_->socket(), "readings", file);
    ASSERT_EQ(sent.exit_code, 0) << sent.output;
  }

  // Waits until every record of `prefix` landed (or the deadline passes).
  Delivery WaitDelivered(const std::string& prefix, int n, std::chrono::seconds deadline) {
    Delivery d;
    WaitFor([&] {
      d = CheckDelivery(*server_, kTable, prefix, n);
      return d.missing == 0;
    }, deadline);
    return d;
  }

  // Starts the daemon (in <dir>/d) with `o`.
  void StartDaemon(const DaemonOptions& o) {
    std::filesystem::create_directories(dir_.Sub("d"));
    daemon_ = std::make_unique<Daemon>(dir_.Sub("d"), o);
    ASSERT_TRUE(daemon_->Start()) << daemon_->log();
  }

  // Starts the daemon talking to the server through `proxy`, with more
  // zerobus: lines and drain: lines.
  void StartBehindProxy(TcpProxy& proxy, const std::string& zerobus_yaml, const std::string& drain_yaml) {
    ASSERT_TRUE(proxy.Start());
    DaemonOptions o = Options();
    o.grpc_port = proxy.port();
    o.zerobus_yaml = zerobus_yaml;
    o.extra_yaml = "drain:\n  backoff_initial_ms: 50\n  backoff_max_ms: 500\n" + drain_yaml;
    StartDaemon(o);
  }

  double Metric(const std::string& name, const std::string& labels) const {
    return daemon_->Metric(name, labels).value_or(-1);
  }

  TempDir dir_;
  std::unique_ptr<DevServer> server_;
  std::unique_ptr<Daemon> daemon_;
};

// ------------------------------------------------------------ dead connections

// A NAT mapping that expires freezes the connection both ways while new
// connections work. Keepalive PINGs find it (within keepalive_time +
// keepalive_timeout, here 2 s) and the lane reconnects on a new connection.
TEST_F(NetworkTest, AFrozenConnectionIsFoundByKeepaliveAndReplacedByANewOne) {
  TcpProxy proxy(server_->grpc_port());
  // The ACK timeout is far away: only keepalive can find the dead connection.
  StartBehindProxy(proxy, "  keepalive_time_ms: 1000\n  keepalive_timeout_ms: 1000\n", "  ack_timeout_ms: 600000\n");
  Send("before", 200);
  ASSERT_EQ(WaitDelivered("before", 200, std::chrono::seconds(20)).missing, 0) << daemon_->log();

  // Frozen while idle: found without any request in flight (the idle lane
  // then waits for records before it connects again).
  proxy.FreezeExisting();
  ASSERT_TRUE(WaitFor([&] { return daemon_->log().find("keepalive watchdog timeout") != std::string::npos; },
                      std::chrono::seconds(15)))
      << "the frozen connection was not noticed:\n" << daemon_->log();
  EXPECT_GE(Metric("zerobusd_route_failures_total", "kind=\"connect\",route=\"readings\""), 1);
  // Delivered: through a new connection, since the old one forwards nothing.
  Send("after-idle", 200);
  EXPECT_EQ(WaitDelivered("after-idle", 200, std::chrono::seconds(15)).missing, 0) << daemon_->log();

  // Frozen with requests in flight: they are sent again on a new connection.
  proxy.FreezeExisting();
  Send("in-flight", 500);
  EXPECT_EQ(WaitDelivered("in-flight", 500, std::chrono::seconds(15)).missing, 0) << daemon_->log();
  EXPECT_GE(Metric("zerobusd_route_failures_total", "kind=\"connect\",route=\"readings\""), 1);
  EXPECT_EQ(server_->Stat("violations"), 0);
  // Said, but not over and over.
  EXPECT_LE(CountLines(daemon_->log(), "route readings: connect failure"), 6) << daemon_->log();
}

// With keepalive too slow to help, the operator's `resume` (or SIGHUP)
// rebuilds a route whose requests the server stopped answering.
TEST_F(NetworkTest, ResumeRebuildsARouteStuckOnAFrozenConnection) {
  TcpProxy proxy(server_->grpc_port());
  StartBehindProxy(proxy, "  keepalive_time_ms: 3600000\n", "  ack_timeout_ms: 600000\n");
  Send("before", 100);
  ASSERT_EQ(WaitDelivered("before", 100, std::chrono::seconds(20)).missing, 0) << daemon_->log();
  proxy.FreezeExisting();
  Send("stuck", 100);
  // `resume` counts the routes it rebuilt; a route that answered within
  // the last 5 s is not stuck yet, so ask until it is.
  ASSERT_TRUE(WaitFor([&] { return daemon_->Ctl({"resume", "--route", "readings"}).output.find("resumed 1 route") !=
                                   std::string::npos; },
                      std::chrono::seconds(20)))
      << daemon_->log();
  EXPECT_EQ(WaitDelivered("stuck", 100, std::chrono::seconds(15)).missing, 0) << daemon_->log();
  EXPECT_NE(daemon_->log().find("and reconnecting them now on a new connection"), std::string::npos);

  // SIGHUP does the same.
  proxy.FreezeExisting();
  Send("stuck2", 100);
  auto last_hup = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor(
      [&] {
        if (std::chrono::steady_clock::now() - last_hup > std::chrono::seconds(1)) {
          daemon_->process()->Signal(SIGHUP);
          last_hup = std::chrono::steady_clock::now();
        }
        return CheckDelivery(*server_, kTable, "stuck2", 100).missing == 0;
      },
      std::chrono::seconds(30)))
      << daemon_->log();
}

// A create_stream that never gets an answer (the connection died before the
// call) is given up after create_timeout, and the next attempt dials anew.
TEST_F(NetworkTest, ACreateThatNeverGetsAnAnswerIsRetriedOnANewConnection) {
  TcpProxy proxy(server_->grpc_port());
  StartBehindProxy(proxy, "  keepalive_time_ms: 3600000\n", "  create_timeout_ms: 1500\n");
  // Rotations make the lane open a new stream on the (frozen) connection.
  ASSERT_TRUE(server_->SetFaults(R"({"default":{"then":{"close_after_requests":1,"close_grace_ms":100}}})"));
  Send("a", 50);
  ASSERT_EQ(WaitDelivered("a", 50, std::chrono::seconds(20)).missing, 0) << daemon_->log();
  ASSERT_TRUE(server_->SetFaults("{}"));
  proxy.FreezeExisting();
  Send("b", 50);
  EXPECT_EQ(WaitDelivered("b", 50, std::chrono::seconds(20)).missing, 0) << daemon_->log();
  EXPECT_NE(daemon_->log().find("the connection looks dead"), std::string::npos) << daemon_->log();
}

// ------------------------------------------------------------ request size

// Writes `n` records of exactly `size` bytes each ({"id":"<prefix>-<i>","p":"xxx..."}).
void WriteExactRecords(const std::string& path, const std::string& prefix, int n, size_t size) {
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < n; ++i) {
    const std::string head = absl::StrCat("{\"id\":\"", prefix, "-", i, "\",\"p\":\"");
    out << head << std::string(size - head.size() - 2, 'x') << "\"}\n";
  }
}

class RequestSizeTest : public NetworkTest {
 protected:
  // Spools every record while the endpoint is unreachable, then starts the
  // daemon against the server: the lane finds a full backlog and sends the
  // largest requests its settings allow.
  void SpoolThenDrain(const std::string& prefix, int n, size_t size) {
    const std::string file = dir_.Sub(prefix + ".ndjson");
    WriteExactRecords(file, prefix, n, size);
    DaemonOptions o = Options();
    o.intake_yaml = "  max_record_bytes: 10420224\n  max_inflight_bytes: 32MiB\n";
    o.extra_yaml =
        "drain:\n  backoff_initial_ms: 50\n  backoff_max_ms: 500\n"
        "  max_batch_bytes: 10420224\n  max_batch_records: 1000000\n";
    o.grpc_port = FreePort();  // nothing listens there
    std::filesystem::create_directories(dir_.Sub("d"));
    daemon_ = std::make_unique<Daemon>(dir_.Sub("d"), o);
    ASSERT_TRUE(daemon_->Start()) << daemon_->log();
    const RunResult sent = SendFile(daemon_->socket(), "readings", file);
    ASSERT_EQ(sent.exit_code, 0) << sent.output;
    ASSERT_EQ(daemon_->Terminate(std::chrono::seconds(20)), 0) << daemon_->log();
    o.grpc_port = server_->grpc_port();
    daemon_ = std::make_unique<Daemon>(dir_.Sub("d"), o);
    ASSERT_TRUE(daemon_->Start()) << daemon_->log();
    const Delivery d = WaitDelivered(prefix, n, std::chrono::seconds(120));
    EXPECT_EQ(d.missing, 0) << d.first_missing << "\n" << daemon_->log();
    EXPECT_EQ(d.duplicates, 0);
    EXPECT_EQ(Metric("zerobusd_stream_failures_total", "code=\"INVALID_ARGUMENT\",route=\"readings\""), -1)
        << "the server refused a request:\n" << daemon_->log();
    EXPECT_EQ(Metric("zerobusd_dead_letter_records_total", "route=\"readings\""), 0);
    EXPECT_EQ(server_->Stat("violations"), 0) << server_->Stats().value_or("");
  }
  int64_t Largest() const { return server_->Stat("largest_request_bytes"); }
};

constexpr int64_t kServiceLimit = 10 * 1024 * 1024;
constexpr int64_t kMaxBatchBytes = 10420224;

TEST_F(RequestSizeTest, ManyTinyRecordsFillARequestToItsLimitAndNoFurther) {
  // 32-byte records: framing is an eighth of the request. 400,000 of them
  // are more than one full request.
  SpoolThenDrain("tiny", 400'000, 32);
  EXPECT_LE(Largest(), kMaxBatchBytes);
  EXPECT_GT(Largest(), kMaxBatchBytes * 9 / 10) << "requests should be nearly full";
}

TEST_F(RequestSizeTest, OneMebibyteRecordsGoNineToARequest) {
  SpoolThenDrain("mib", 30, 1 << 20);
  EXPECT_LE(Largest(), kMaxBatchBytes);
  EXPECT_GT(Largest(), 9 << 20);
}

TEST_F(RequestSizeTest, ARecordOfTheLargestAllowedSizeGoesThrough) {
  SpoolThenDrain("max", 3, kMaxBatchBytes);
  EXPECT_LE(Largest(), kServiceLimit);
  EXPECT_GT(Largest(), kMaxBatchBytes);
}


// ------------------------------------------------------------ token replies

// A token endpoint (or a proxy before it) that answers 200 with garbage, or
// with 100 MB, is a passing fault of the service: retried with backoff,
// never read past 64 KiB, and the route is not parked with a hint about
// credentials.
TEST_F(NetworkTest, UnusableTokenRepliesAreRetriedUntilAGoodOneComes) {
  ASSERT_TRUE(server_->SetFaults(R"({"token":{"responses":[
      {"body":"{\"access_token\": oops"},
      {"body":"{\"access_token\":\"tok\",\"expires_in\":3600}","body_bytes":104857600},
      {"status":200,"body":"{\"token_type\":\"Bearer\"}"},
      {"status":502,"body":"<html>Bad Gateway</html>"}],"then":{"status":200}}})"));
  StartDaemon(Options());
  Send("t", 100);
  EXPECT_EQ(WaitDelivered("t", 100, std::chrono::seconds(30)).missing, 0) << daemon_->log();
  EXPECT_EQ(Metric("zerobusd_token_fetch_failures_total", "route=\"readings\",table=\"main.edge.readings\""), 4);
  EXPECT_EQ(Metric("zerobusd_route_failures_total", "kind=\"token\",route=\"readings\""), 4);
  EXPECT_EQ(Metric("zerobusd_lane_parked", "route=\"readings\""), 0);
  EXPECT_LT(server_->Stat("token_body_bytes_written"), 4 << 20) << "the 100 MB body was read";
  const std::string log = daemon_->log();
  EXPECT_EQ(log.find("parked"), std::string::npos) << log;
  EXPECT_EQ(log.find("client_secret"), std::string::npos) << "no hint about credentials:\n" << log;
  // What the operator sees: the token failures, their count and the last.
  const std::string status = daemon_->Control(R"({"cmd":"status"})");
  EXPECT_NE(status.find("\"token\":{\"count\":4,"), std::string::npos) << status;
  EXPECT_NE(status.find("Bad Gateway"), std::string::npos) << status;
}

// ------------------------------------------------------------ TLS

// An expired certificate, then one for another host: each reason is said
// once (with what to check), gRPC's own lines are rate-limited, a heartbeat
// line keeps coming at the configured interval, and the route recovers when
// the certificate is fixed.
TEST_F(NetworkTest, TlsFailuresAreExplainedOncePerReasonAndTheRouteRecoversWhenFixed) {
  auto certs = MakeTestCertificates(dir_.Sub("certs"));
  ASSERT_TRUE(certs.ok()) << certs.status();
  // Each server in turn takes the same ports (and issues the tokens it
  // accepts).
  const int grpc_port = FreePort();
  const int http_port = FreePort();
  auto tls_server = [&](const CertKeyPair& pair, const std::string& sub) {
    std::filesystem::create_directories(dir_.Sub(sub));
    return std::make_unique<DevServer>(dir_.Sub(sub), grpc_port, http_port,
                                       std::vector<std::string>{"--tls-cert", pair.cert, "--tls-key", pair.key});
  };
  auto expired = tls_server(certs->expired, "expired");
  ASSERT_TRUE(expired->Start()) << expired->log();
  DaemonOptions o = Options();
  o.http_port = http_port;
  o.tls = true;
  // 127.0.0.1, not localhost: the server listens on IPv4 only, and a
  // refused ::1 would mix connect failures in.
  o.endpoint = absl::StrCat("127.0.0.1:", grpc_port);
  o.zerobus_yaml = absl::StrCat("  ca_file: ", certs->ca, "\n");
  o.extra_yaml = "drain:\n  backoff_initial_ms: 100\n  backoff_max_ms: 300\n  failure_log_interval_ms: 1000\n";
  StartDaemon(o);
  Send("tls", 50);
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_route_failures_total", "kind=\"tls\",route=\"readings\"") >= 10; },
                      std::chrono::seconds(30)))
      << daemon_->log();
  ASSERT_TRUE(WaitFor([&] { return daemon_->log().find("still failing") != std::string::npos; },
                      std::chrono::seconds(10)))
      << daemon_->log();
  std::string log = daemon_->log();
  // Said once as an error; the heartbeats repeat the reason as warnings.
  EXPECT_EQ(CountLines(log, "route readings: cannot connect"), 1) << log;
  EXPECT_NE(log.find("certificate has expired"), std::string::npos) << log;
  EXPECT_LE(CountLines(log, "grpc:"), 8) << "gRPC's own lines are rate-limited:\n" << log;
  std::string status = daemon_->Control(R"({"cmd":"status"})");
  EXPECT_NE(status.find("\"tls\":{\"count\":"), std::string::npos) << status;
  EXPECT_NE(status.find("has expired"), std::string::npos) << status;
  const RunResult ctl = RunCommand({BinDir() + "/zerobusctl", "status", "--config", daemon_->config_path()},
                                   std::chrono::seconds(20));
  EXPECT_NE(ctl.output.find("tls"), std::string::npos) << ctl.output;
  EXPECT_NE(ctl.output.find("expired"), std::string::npos) << ctl.output;

  // The server now shows a certificate for another host.
  expired.reset();
  auto wrong = tls_server(certs->wrong_host, "wrong");
  ASSERT_TRUE(wrong->Start()) << wrong->log();
  // (Between the two servers the port may refuse for a moment: that is a
  // reason of its own, said once too.)
  ASSERT_TRUE(WaitFor([&] { return CountLines(daemon_->log(), "cannot connect") >= 2 &&
                                   daemon_->log().find("names DNS:wrong.example") != std::string::npos; },
                      std::chrono::seconds(20)))
      << daemon_->log();
  log = daemon_->log();
  EXPECT_LE(CountLines(log, "route readings: cannot connect"), 3) << log;

  // Fixed: the route recovers and delivers.
  wrong.reset();
  auto valid = tls_server(certs->valid, "valid");
  ASSERT_TRUE(valid->Start()) << valid->log();
  Delivery d;
  ASSERT_TRUE(WaitFor([&] {
    d = CheckDelivery(*valid, kTable, "tls", 50);
    return d.missing == 0;
  }, std::chrono::seconds(30))) << daemon_->log();
  // (Rows land before the daemon has taken their ACK.)
  EXPECT_TRUE(WaitFor([&] { return daemon_->log().find("route readings: recovered after") != std::string::npos; },
                      std::chrono::seconds(10)))
      << daemon_->log();
  // Heartbeats came at about the interval, not per attempt.
  const double attempts = Metric("zerobusd_route_failures_total", "kind=\"tls\",route=\"readings\"");
  EXPECT_LT(CountLines(daemon_->log(), "still failing"), attempts / 2) << daemon_->log();
}

// ------------------------------------------------------------ control socket

// ConnectUnix with a 10 s receive timeout (a lost reply fails, not hangs).
int ConnectUnixSocket(const std::string& path) {
  const int fd = ConnectUnix(path);
  const timeval tv{10, 0};
  if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// A flood of control clients: every one that asks gets an answer (its reply
// or "busy"), the operator still gets through, and the log stays short.
TEST_F(NetworkTest, AControlSocketFloodGetsAnswersAndTheOperatorStillGetsThrough) {
  StartDaemon(Options());
  // 200 connections that never say anything, held open.
  std::vector<int> idle;
  for (int i = 0; i < 200; ++i) {
    const int fd = ConnectUnixSocket(daemon_->control_socket());
    if (fd >= 0) idle.push_back(fd);
  }
  // 40 clients asking at once, each reads one line.
  std::atomic<int> answered{0}, silent{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 40; ++i) {
    clients.emplace_back([&] {
      const int fd = ConnectUnixSocket(daemon_->control_socket());
      if (fd < 0) {
        ++silent;
        return;
      }
      const std::string req = "{\"cmd\":\"status\"}\n";
      (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
      std::string line;
      char c;
      while (::recv(fd, &c, 1, 0) == 1 && c != '\n') line += c;
      ::close(fd);
      (line.find("\"ok\":true") != std::string::npos || line.find("busy") != std::string::npos ? answered : silent)++;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(answered.load(), 40);
  EXPECT_EQ(silent.load(), 0);
  EXPECT_NE(daemon_->Control(R"({"cmd":"status"})").find("\"ok\":true"), std::string::npos);
  for (int fd : idle) ::close(fd);
  EXPECT_LE(CountLines(daemon_->log(), "control:"), 6) << daemon_->log();
}

}  // namespace
}  // namespace zb::testing
