// The official Zerobus SDK's native core (a client we did not write, see
// scripts/setup-sdk.sh) against the dev server, plain and with the
// service's timing and quota: it creates a stream, its records land once
// each, its ACKs come when the server says, and a quota trip is something
// it recovers from. What the SDK accepts keeps the dev server honest, and
// so the tests that use the dev server as the service.

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

constexpr char kTable[] = "main.edge.sdk";

class SdkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("ZEROBUS_SDK_DIR");
    module_ = dir != nullptr ? dir : std::string(ZEROBUSD_SOURCE_DIR) + "/.cache/zerobus-sdk/package";
    if (access((module_ + "/package.json").c_str(), R_OK) != 0) {
      GTEST_SKIP() << "the official SDK's native core is not at " << module_
                   << " (scripts/setup-sdk.sh fetches it; it needs the network)";
    }
    const RunResult node = RunCommand({"/usr/bin/env", "node", "--version"}, std::chrono::seconds(20));
    if (node.exit_code != 0) GTEST_SKIP() << "no node to run the SDK with: " << node.output;
    setenv("ZEROBUS_SDK_MODULE", module_.c_str(), 1);
  }

  // Starts the dev server with `flags` and has the SDK send `records`
  // records (ids <prefix>-N) in requests of `batch`; returns its summary
  // line.
  RunResult RunSdk(std::vector<std::string> flags, int records, int batch, const std::string& prefix) {
    server_ = std::make_unique<DevServer>(dir_.path(), 0, 0, std::move(flags));
    if (!server_->Start()) return RunResult{-1, "the dev server did not start: " + server_->log()};
    return RunCommand({"/usr/bin/env", "node", std::string(ZEROBUSD_SOURCE_DIR) + "/tests/devserver/sdk_client.js",
                       absl::StrCat("http://127.0.0.1:", server_->grpc_port()),
                       absl::StrCat("http://127.0.0.1:", server_->http_port()), kTable, std::to_string(records),
                       std::to_string(batch), prefix},
                      std::chrono::seconds(120));
  }

  // The number after "key": in the client's summary line.
  static int64_t Field(const std::string& summary, const std::string& key) {
    const std::string k = absl::StrCat("\"", key, "\":");
    const size_t at = summary.find(k);
    return at == std::string::npos ? -1 : std::stoll(summary.substr(at + k.size()));
  }

  void ExpectEveryRecordOnce(const std::string& prefix, int records, bool duplicates_allowed) {
    const Delivery d = CheckDelivery(*server_, kTable, prefix, records);
    EXPECT_EQ(d.missing, 0) << "e.g. " << d.first_missing;
    if (!duplicates_allowed) EXPECT_EQ(d.duplicates, 0);
    EXPECT_EQ(server_->Stat("violations"), 0) << *server_->Stats();
  }

  TempDir dir_;
  std::string module_;
  std::unique_ptr<DevServer> server_;
};

TEST_F(SdkTest, ThePlainDevServerTakesTheSdksStream) {
  const RunResult run = RunSdk({}, 2000, 100, "p");
  ASSERT_EQ(run.exit_code, 0) << run.output << "\n" << server_->log();
  ExpectEveryRecordOnce("p", 2000, /*duplicates_allowed=*/false);
  EXPECT_EQ(server_->TableStat(kTable, "streams"), 1);
  const std::string stats = *server_->Stats();
  EXPECT_NE(stats.find("zerobus-sdk-ts/"), std::string::npos) << "the SDK said who it is: " << stats;
}

// ACKs 150 ms after each request, as the service's P50: the SDK waits for
// them and all its requests land.
TEST_F(SdkTest, TheSdkWaitsForAcksThatComeAfterTheServicesLatency) {
  const RunResult run = RunSdk({"--ack-latency-ms", "150"}, 2000, 100, "l");
  ASSERT_EQ(run.exit_code, 0) << run.output << "\n" << server_->log();
  EXPECT_GE(Field(run.output, "first_ack_ms"), 150) << run.output;
  ExpectEveryRecordOnce("l", 2000, /*duplicates_allowed=*/false);
}

// The service's latency and a quota of 500 rows a second per stream: the
// SDK's unpaced burst trips it, the stream ends with RESOURCE_EXHAUSTED
// (what came before the refused request stored and acked), which the SDK
// takes as retryable, and it recovers on new streams until every record
// is in.
TEST_F(SdkTest, TheSdkRecoversFromAQuotaTripOnANewStream) {
  const RunResult run = RunSdk({"--ack-latency-ms", "150", "--stream-quota-rows", "500"}, 1500, 100, "q");
  ASSERT_EQ(run.exit_code, 0) << run.output << "\n" << server_->log();
  EXPECT_GE(Field(run.output, "first_ack_ms"), 150) << run.output;
  EXPECT_GE(server_->TableStat(kTable, "quota_trips"), 1);
  EXPECT_GE(server_->TableStat(kTable, "streams"), 2);
  ExpectEveryRecordOnce("q", 1500, /*duplicates_allowed=*/true);
}

}  // namespace
}  // namespace zb::testing
