// The per-stream quota end to end: the dev server as the service (ACKs
// 150 ms after each request, a rows-per-second quota per stream that ends
// the stream with RESOURCE_EXHAUSTED) and the daemon pacing its stream
// under zerobus.stream_quota.

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

constexpr char kTable[] = "main.edge.readings";

class QuotaTest : public ::testing::Test {
 protected:
  // Starts the dev server with `server_rows_per_second` per stream and the
  // daemon with zerobus.stream_quota.rows_per_second `daemon_rows_per_second`,
  // sends `records` records (ids `prefix`-N) and waits until every one is
  // acked.
  void SendUnderQuotas(int server_rows_per_second, int daemon_rows_per_second, const std::string& prefix,
                       int records) {
    server_ = std::make_unique<DevServer>(
        dir_.path(), 0, 0,
        std::vector<std::string>{"--ack-latency-ms", "150", "--stream-quota-rows",
                                 std::to_string(server_rows_per_second)});
    ASSERT_TRUE(server_->Start()) << server_->log();
    daemon_ = std::make_unique<Daemon>(
        dir_.path(), DaemonOptions{.grpc_port = server_->grpc_port(),
                                   .http_port = server_->http_port(),
                                   .zerobus_yaml = absl::StrCat("  stream_quota: {rows_per_second: ",
                                                                daemon_rows_per_second, "}\n")});
    ASSERT_TRUE(daemon_->Start()) << daemon_->log();
    const std::string input = dir_.Sub("records.ndjson");
    WriteRecords(input, prefix, records);
    RunResult sent = SendFile(daemon_->socket(), "readings", input);
    ASSERT_EQ(sent.exit_code, 0) << sent.output;
    ASSERT_TRUE(WaitFor(
        [&] { return daemon_->Metric("zerobusd_acked_records_total", "route=\"readings\"").value_or(-1) == records; },
        std::chrono::seconds(180)))
        << daemon_->log();
  }

  TempDir dir_;
  std::unique_ptr<DevServer> server_;
  std::unique_ptr<Daemon> daemon_;
};

// Under a quota below the server's, the stream never trips it (measured at
// the server), and the lane says it waited.
TEST_F(QuotaTest, APacedStreamNeverTripsTheServersQuota) {
  constexpr int kRecords = 8000;  // 1,000 at once, then 3.5 s of pace
  ASSERT_NO_FATAL_FAILURE(SendUnderQuotas(/*server=*/3000, /*daemon=*/2000, "q", kRecords));
  EXPECT_EQ(server_->TableStat(kTable, "quota_trips"), 0) << server_->log();
  EXPECT_GT(daemon_->Metric("zerobusd_paced_seconds_total", "route=\"readings\"").value_or(0), 1.0);
  const Delivery d = CheckDelivery(*server_, kTable, "q", kRecords);
  EXPECT_EQ(d.missing, 0) << d.first_missing;
  EXPECT_EQ(d.duplicates, 0);
}

// Configured above the server's real quota, the stream trips it; each trip
// halves the pace, and every record still lands.
TEST_F(QuotaTest, AQuotaSetTooHighTripsThenThePaceComesDownAndNothingIsLost) {
  constexpr int kRecords = 12000;
  ASSERT_NO_FATAL_FAILURE(SendUnderQuotas(/*server=*/1500, /*daemon=*/6000, "t", kRecords));
  EXPECT_GE(server_->TableStat(kTable, "quota_trips"), 1);
  EXPECT_GE(daemon_->Metric("zerobusd_stream_failures_total", "code=\"RESOURCE_EXHAUSTED\",route=\"readings\"")
                .value_or(0),
            1);
  EXPECT_NE(daemon_->log().find("pacing it at 50%"), std::string::npos) << daemon_->log();
  const Delivery d = CheckDelivery(*server_, kTable, "t", kRecords);
  EXPECT_EQ(d.missing, 0) << d.first_missing;
}

}  // namespace
}  // namespace zb::testing
