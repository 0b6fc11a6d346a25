// The metrics registry (contract names) and its HTTP endpoint.

#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log_limiter.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

using Clock = std::chrono::steady_clock;

// A blocking loopback TCP socket connected to `port`, or -1.
int ConnectTo(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Reads from `fd` until the peer closes or `deadline` passes; returns what
// came (headers included).
std::string ReadUntilClosed(int fd, Clock::time_point deadline) {
  std::string out;
  char buf[4096];
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// One raw HTTP exchange (the whole response, headers included), bounded by
// `timeout`; "" when nothing came back in time.
std::string RawExchange(int port, const std::string& request, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const int fd = ConnectTo(port);
  if (fd < 0) return "";
  std::string out;
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    out = ReadUntilClosed(fd, deadline);
  }
  close(fd);
  return out;
}

// Whether the peer of `fd` has closed the connection (without blocking).
bool PeerClosed(int fd) {
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

TEST(RateLimitedLogTest, LogsTheFirstThenOneSummaryPerInterval) {
  RateLimitedLog log(std::chrono::seconds(5));
  const auto t0 = Clock::now();
  uint64_t suppressed = 99;
  EXPECT_TRUE(log.ShouldLog(t0, &suppressed));
  EXPECT_EQ(suppressed, 0u);
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(log.ShouldLog(t0 + std::chrono::seconds(1), &suppressed));
  EXPECT_FALSE(log.ShouldLog(t0 + std::chrono::milliseconds(4999), &suppressed));
  EXPECT_EQ(suppressed, 0u) << "left alone when not logging";
  EXPECT_EQ(log.suppressed(), 1001u);
  EXPECT_TRUE(log.ShouldLog(t0 + std::chrono::seconds(5), &suppressed));
  EXPECT_EQ(suppressed, 1001u);
  EXPECT_EQ(log.suppressed(), 0u);
  EXPECT_FALSE(log.ShouldLog(t0 + std::chrono::seconds(6), nullptr));
  EXPECT_TRUE(log.ShouldLog(t0 + std::chrono::seconds(11), nullptr));
  EXPECT_EQ(log.total(), 1005u);
}

TEST(MetricsTest, ContractMetricsExistWithRouteLabels) {
  auto m = MakePrometheusMetrics();
  m->DeclareRoute("r");
  m->IntakeRecords("r", IntakeResult::kAccepted, 3);
  m->IntakeRecords("r", IntakeResult::kInvalid, 1);
  m->IntakeBytes("r", 300);
  m->SpoolDepth("r", 2);
  m->SpoolTotalBytes(200);
  m->AckedRecords("r", 1);
  m->AckLatency(0.2);
  m->StreamOpened("r");
  m->StreamFailure("r", "UNAVAILABLE");
  m->OldestRecordAge("r", 1.5);
  m->TokenFetchFailure("r", "main.edge.t");
  m->RouteFailure("r", "tls", 1700000000.5);
  const std::string text = m->Exposition();
  using zb::testing::MetricValue;
  EXPECT_EQ(MetricValue(text, "zerobusd_intake_records_total", "result=\"accepted\",route=\"r\"").value_or(-1), 3);
  EXPECT_EQ(MetricValue(text, "zerobusd_intake_records_total", "result=\"invalid\",route=\"r\"").value_or(-1), 1);
  EXPECT_EQ(MetricValue(text, "zerobusd_intake_bytes_total", "route=\"r\"").value_or(-1), 300);
  EXPECT_EQ(MetricValue(text, "zerobusd_spool_records", "route=\"r\"").value_or(-1), 2);
  EXPECT_EQ(MetricValue(text, "zerobusd_spool_bytes").value_or(-1), 200);
  EXPECT_EQ(MetricValue(text, "zerobusd_acked_records_total", "route=\"r\"").value_or(-1), 1);
  EXPECT_EQ(MetricValue(text, "zerobusd_ack_latency_seconds_count").value_or(-1), 1);
  EXPECT_EQ(MetricValue(text, "zerobusd_stream_opens_total", "route=\"r\"").value_or(-1), 1);
  EXPECT_EQ(MetricValue(text, "zerobusd_stream_failures_total", "code=\"UNAVAILABLE\",route=\"r\"").value_or(-1), 1);
  EXPECT_EQ(MetricValue(text, "zerobusd_oldest_record_age_seconds", "route=\"r\"").value_or(-1), 1.5);
  EXPECT_EQ(MetricValue(text, "zerobusd_dead_letter_records_total", "route=\"r\"").value_or(-1), 0);
  EXPECT_EQ(MetricValue(text, "zerobusd_token_fetch_failures_total", "route=\"r\",table=\"main.edge.t\"").value_or(-1),
            1);
  EXPECT_EQ(MetricValue(text, "zerobusd_route_failures_total", "kind=\"tls\",route=\"r\"").value_or(-1), 1);
  EXPECT_EQ(MetricValue(text, "zerobusd_route_failures_total", "kind=\"token\",route=\"r\"").value_or(-1), 0)
      << "every kind is declared at zero";
  EXPECT_EQ(MetricValue(text, "zerobusd_route_last_failure_timestamp_seconds", "kind=\"tls\",route=\"r\"").value_or(-1),
            1700000000.5);
}

// A route's hot-path series are resolved once and shared with the by-name
// methods; a result's series appears when first used, from many threads.
TEST(MetricsTest, RouteHandlesUpdateTheSameSeriesAsTheByNameMethods) {
  auto m = MakePrometheusMetrics();
  RouteMetrics& r = m->Route("r");
  EXPECT_EQ(&r, &m->Route("r")) << "one handle per route";
  EXPECT_NE(&r, &m->Route("s"));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        r.IntakeRecords(IntakeResult::kAccepted, 1);
        r.IntakeRecords(IntakeResult::kSpoolFull, 2);
      }
    });
  }
  for (auto& t : threads) t.join();
  m->IntakeRecords("r", IntakeResult::kAccepted, 5);
  r.IntakeBytes(100);
  m->IntakeBytes("r", 20);
  r.AckedRecords(7);
  r.ResentRecords(3);
  r.InflightRequests(9);
  const std::string text = m->Exposition();
  using zb::testing::MetricValue;
  EXPECT_EQ(MetricValue(text, "zerobusd_intake_records_total", "result=\"accepted\",route=\"r\"").value_or(-1), 4005);
  EXPECT_EQ(MetricValue(text, "zerobusd_intake_records_total", "result=\"spool_full\",route=\"r\"").value_or(-1),
            8000);
  EXPECT_FALSE(MetricValue(text, "zerobusd_intake_records_total", "result=\"invalid\",route=\"r\"").ok())
      << "a result never seen has no series";
  EXPECT_EQ(MetricValue(text, "zerobusd_intake_bytes_total", "route=\"r\"").value_or(-1), 120);
  EXPECT_EQ(MetricValue(text, "zerobusd_acked_records_total", "route=\"r\"").value_or(-1), 7);
  EXPECT_EQ(MetricValue(text, "zerobusd_resent_records_total", "route=\"r\"").value_or(-1), 3);
  EXPECT_EQ(MetricValue(text, "zerobusd_inflight_requests", "route=\"r\"").value_or(-1), 9);
}

// Streams of a lane: open now and quota trips exist at zero for every
// declared route; each stream number has its own acked series, up to
// kMaxStreamLabels, past which numbers count under the last.
TEST(MetricsTest, StreamSeriesPerRouteAndPerStreamUpToTheLabelCap) {
  auto m = MakePrometheusMetrics();
  m->DeclareRoute("r");
  using zb::testing::MetricValue;
  std::string text = m->Exposition();
  EXPECT_EQ(MetricValue(text, "zerobusd_open_streams", "route=\"r\"").value_or(-1), 0);
  EXPECT_EQ(MetricValue(text, "zerobusd_quota_trips_total", "route=\"r\"").value_or(-1), 0);
  m->OpenStreams("r", 3);
  m->QuotaTrip("r");
  RouteMetrics& route = m->Route("r");
  route.StreamAckedRecords(0, 5);
  route.StreamAckedRecords(kMaxStreamLabels - 1, 1);
  route.StreamAckedRecords(kMaxStreamLabels, 2);  // past the cap
  route.StreamAckedRecords(1'000'000, 4);
  text = m->Exposition();
  EXPECT_EQ(MetricValue(text, "zerobusd_open_streams", "route=\"r\"").value_or(-1), 3);
  EXPECT_EQ(MetricValue(text, "zerobusd_quota_trips_total", "route=\"r\"").value_or(-1), 1);
  EXPECT_EQ(MetricValue(text, "zerobusd_stream_acked_records_total", "route=\"r\",stream=\"0\"").value_or(-1), 5);
  EXPECT_EQ(MetricValue(text, "zerobusd_stream_acked_records_total",
                        "route=\"r\",stream=\"" + std::to_string(kMaxStreamLabels - 1) + "\"")
                .value_or(-1),
            7);
  EXPECT_FALSE(MetricValue(text, "zerobusd_stream_acked_records_total",
                           "route=\"r\",stream=\"" + std::to_string(kMaxStreamLabels) + "\"")
                   .ok());
}

TEST(MetricsTest, RefreshHookRunsBeforeEveryScrape) {
  auto m = MakePrometheusMetrics();
  m->DeclareRoute("r");
  int depth = 0;
  m->SetRefreshHook([&] { m->SpoolDepth("r", ++depth); });
  using zb::testing::MetricValue;
  EXPECT_EQ(MetricValue(m->Exposition(), "zerobusd_spool_records", "route=\"r\"").value_or(-1), 1);
  EXPECT_EQ(MetricValue(m->Exposition(), "zerobusd_spool_records", "route=\"r\"").value_or(-1), 2);
  m->SetRefreshHook(nullptr);
  EXPECT_EQ(MetricValue(m->Exposition(), "zerobusd_spool_records", "route=\"r\"").value_or(-1), 2);
}

TEST(MetricsTest, ServerAnswersMetricsHealthAndReadiness) {
  auto m = MakePrometheusMetrics();
  m->DeclareRoute("r");
  std::atomic<bool> ready{false};
  auto server = StartMetricsServer("127.0.0.1:0", m.get(), [&] { return ready.load(); });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  auto metrics = zb::testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_NE(metrics->find("zerobusd_spool_records{route=\"r\"} 0"), std::string::npos);
  EXPECT_TRUE(zb::testing::HttpGet(port, "/healthz").ok());
  auto not_ready = zb::testing::HttpGet(port, "/readyz");
  ASSERT_FALSE(not_ready.ok());
  EXPECT_NE(not_ready.status().message().find("503"), std::string::npos) << not_ready.status();
  ready = true;
  EXPECT_TRUE(zb::testing::HttpGet(port, "/readyz").ok());
  EXPECT_FALSE(zb::testing::HttpGet(port, "/nope").ok());
}

TEST(MetricsTest, AStalledClientDoesNotBlockOtherScrapes) {
  auto m = MakePrometheusMetrics();
  auto server = StartMetricsServer("127.0.0.1:0", m.get(), [] { return true; });
  ASSERT_TRUE(server.ok()) << server.status();
  // A client that sends half a request and then goes silent.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>((*server)->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string partial = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(send(fd, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
  // The server gives up on it after a couple of seconds and serves others.
  EXPECT_TRUE(zb::testing::WaitFor([&] { return zb::testing::HttpGet((*server)->port(), "/healthz").ok(); },
                                   std::chrono::seconds(15)));
  close(fd);
}

TEST(MetricsTest, BadListenAddressesAreClearErrors) {
  auto m = MakePrometheusMetrics();
  auto bad = StartMetricsServer("not an address", m.get(), [] { return true; });
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("metrics.listen"), std::string::npos);
  auto first = StartMetricsServer("127.0.0.1:0", m.get(), [] { return true; });
  ASSERT_TRUE(first.ok());
  auto taken = StartMetricsServer("127.0.0.1:" + std::to_string((*first)->port()), m.get(), [] { return true; });
  ASSERT_FALSE(taken.ok());
  EXPECT_NE(taken.status().message().find("cannot listen"), std::string::npos) << taken.status();
}

TEST(MetricsTest, OnlyGetAndHeadAreAnswered) {
  auto m = MakePrometheusMetrics();
  auto server = StartMetricsServer("127.0.0.1:0", m.get(), [] { return true; });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  for (const std::string method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
    const std::string body = method == "DELETE" || method == "OPTIONS" ? "" : "x=1";
    const std::string response =
        RawExchange(port,
                    absl::StrCat(method, " /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(),
                                 "\r\n\r\n", body),
                    std::chrono::seconds(10));
    EXPECT_EQ(response.rfind("HTTP/1.1 405 ", 0), 0u) << method << ": " << response;
    EXPECT_NE(response.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos) << method << ": " << response;
  }
  const std::string head = RawExchange(port, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", std::chrono::seconds(10));
  EXPECT_EQ(head.rfind("HTTP/1.1 200 ", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nContent-Length: 3\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.substr(head.find("\r\n\r\n") + 4), "") << "no body for HEAD";
  auto get = zb::testing::HttpGet(port, "/healthz");
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(*get, "ok\n");
}

TEST(MetricsTest, PastTheConnectionCapTheOldestGoesAndHealthzStillAnswers) {
  auto m = MakePrometheusMetrics();
  auto server = StartMetricsServer("127.0.0.1:0", m.get(), [] { return true; });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  // Silent connections: more than the cap of 64, each one a descriptor the
  // server would hold for its whole 5 s deadline.
  constexpr int kIdle = 64 + 8;
  std::vector<int> idle;
  for (int i = 0; i < kIdle; ++i) {
    const int fd = ConnectTo(port);
    ASSERT_GE(fd, 0) << "connection " << i;
    idle.push_back(fd);
  }
  // Well within the idle connections' own deadline: only closing the oldest
  // makes room this fast.
  const auto start = Clock::now();
  const std::string response =
      RawExchange(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", std::chrono::milliseconds(4000));
  EXPECT_EQ(response.rfind("HTTP/1.1 200 ", 0), 0u) << "after " << (Clock::now() - start).count() << " ns: "
                                                     << response;
  // The oldest were the ones closed.
  EXPECT_TRUE(zb::testing::WaitFor(
      [&] {
        for (int i = 0; i < kIdle + 1 - 64; ++i) {
          if (!PeerClosed(idle[i])) return false;
        }
        return true;
      },
      std::chrono::seconds(3)));
  for (int fd : idle) close(fd);
}

TEST(MetricsTest, AcceptSurvivesRunningOutOfDescriptors) {
  auto m = MakePrometheusMetrics();
  auto server = StartMetricsServer("127.0.0.1:0", m.get(), [] { return true; });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  auto emfile_count = [&] {
    return zb::testing::MetricValue(m->Exposition(), "zerobusd_accept_errors_total",
                                    "error=\"EMFILE\",listener=\"metrics\"")
        .value_or(0);
  };
  // The client's socket exists before the descriptors run out; connect()
  // needs none, the server's accept does.
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  zb::testing::DescriptorExhaustion exhaustion;
  ASSERT_TRUE(exhaustion.Exhaust());
  ASSERT_LT(dup(STDERR_FILENO), 0);
  ASSERT_EQ(errno, EMFILE);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(send(client, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  // The server fails to accept it, and keeps trying (with a backoff).
  EXPECT_TRUE(zb::testing::WaitFor([&] { return emfile_count() >= 2; }, std::chrono::seconds(10)))
      << emfile_count();
  // Descriptors free again: the waiting client is served, and new ones too.
  exhaustion.Release();
  const std::string response = ReadUntilClosed(client, Clock::now() + std::chrono::seconds(10));
  close(client);
  EXPECT_EQ(response.rfind("HTTP/1.1 200 ", 0), 0u) << response;
  auto healthz = zb::testing::HttpGet(port, "/healthz");
  EXPECT_TRUE(healthz.ok()) << healthz.status();
}

}  // namespace
}  // namespace zb
