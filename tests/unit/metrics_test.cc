// The metrics registry (contract names) and its HTTP endpoint.

#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

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
  m->TokenFetchFailure();
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
  EXPECT_EQ(MetricValue(text, "zerobusd_token_fetch_failures_total").value_or(-1), 1);
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

}  // namespace
}  // namespace zb
