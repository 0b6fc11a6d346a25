// The per-stream quota end to end: the dev server as the service (ACKs
// 150 ms after each request, a rows-per-second quota per stream that ends
// the stream with RESOURCE_EXHAUSTED) and the daemon pacing its stream
// under zerobus.stream_quota.

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

constexpr char kTable[] = "main.edge.readings";

// A table's counter in the dev server's /stats.
int64_t TableStat(const DevServer& server, const std::string& key) {
  auto stats = server.Stats();
  if (!stats.ok()) return -1;
  const size_t table = stats->find(absl::StrCat("\"", kTable, "\":{"));
  if (table == std::string::npos) return -1;
  const std::string k = absl::StrCat("\"", key, "\":");
  const size_t at = stats->find(k, table);
  return at == std::string::npos ? -1 : std::stoll(stats->substr(at + k.size()));
}

// Under a quota below the server's, the stream never trips it (measured at
// the server), and the lane says it waited.
TEST(QuotaTest, APacedStreamNeverTripsTheServersQuota) {
  TempDir dir;
  DevServer server(dir.path(), 0, 0, {"--ack-latency-ms", "150", "--stream-quota-rows", "3000"});
  ASSERT_TRUE(server.Start()) << server.log();
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(),
                             .http_port = server.http_port(),
                             .zerobus_yaml = "  stream_quota: {rows_per_second: 2000}\n"});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  constexpr int kRecords = 8000;  // 2,000 at once, then 3 s of pace
  const std::string input = dir.Sub("records.ndjson");
  WriteRecords(input, "q", kRecords);
  RunResult sent = SendFile(daemon.socket(), "readings", input);
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_acked_records_total", "route=\"readings\"").value_or(-1) == kRecords; },
                      std::chrono::seconds(120)))
      << daemon.log();
  EXPECT_EQ(TableStat(server, "quota_trips"), 0) << server.log();
  EXPECT_GT(daemon.Metric("zerobusd_paced_seconds_total", "route=\"readings\"").value_or(0), 1.0);
  const Delivery d = CheckDelivery(server, kTable, "q", kRecords);
  EXPECT_EQ(d.missing, 0) << d.first_missing;
  EXPECT_EQ(d.duplicates, 0);
}

// Configured above the server's real quota, the stream trips it; each trip
// halves the pace, and every record still lands.
TEST(QuotaTest, AQuotaSetTooHighTripsThenThePaceComesDownAndNothingIsLost) {
  TempDir dir;
  DevServer server(dir.path(), 0, 0, {"--ack-latency-ms", "150", "--stream-quota-rows", "1500"});
  ASSERT_TRUE(server.Start()) << server.log();
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(),
                             .http_port = server.http_port(),
                             .zerobus_yaml = "  stream_quota: {rows_per_second: 6000}\n"});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  constexpr int kRecords = 12000;
  const std::string input = dir.Sub("records.ndjson");
  WriteRecords(input, "t", kRecords);
  RunResult sent = SendFile(daemon.socket(), "readings", input);
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_acked_records_total", "route=\"readings\"").value_or(-1) == kRecords; },
                      std::chrono::seconds(180)))
      << daemon.log();
  EXPECT_GE(TableStat(server, "quota_trips"), 1);
  EXPECT_GE(daemon.Metric("zerobusd_stream_failures_total", "code=\"RESOURCE_EXHAUSTED\",route=\"readings\"")
                .value_or(0),
            1);
  EXPECT_NE(daemon.log().find("pacing at 50%"), std::string::npos) << daemon.log();
  const Delivery d = CheckDelivery(server, kTable, "t", kRecords);
  EXPECT_EQ(d.missing, 0) << d.first_missing;
}

}  // namespace
}  // namespace zb::testing
