// Records accepted while Zerobus is unreachable stay spooled across a daemon
// crash (SIGKILL) and a clean stop (SIGTERM), and are all delivered once the
// server comes up.

#include <signal.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

bool AllIds(const DevServer& server, const std::string& prefix, int n) {
  auto ids = RowIds(server.Rows("main.edge.readings"));
  for (int i = 0; i < n; ++i) {
    if (ids.count(absl::StrCat(prefix, "-", i)) == 0) return false;
  }
  return true;
}

TEST(RestartTest, RecordsAcceptedWhileTheServerIsDownSurviveCrashAndRestartAndAreDelivered) {
  constexpr int kRecords = 5000;
  TempDir dir;
  const int grpc_port = FreePort();
  const int http_port = FreePort();
  Daemon daemon(dir.path(), {.grpc_port = grpc_port, .http_port = http_port});
  ASSERT_TRUE(daemon.Start()) << daemon.log();

  WriteRecords(dir.Sub("r.ndjson"), "down", kRecords);
  RunResult sent = SendFile(daemon.socket(), "readings", dir.Sub("r.ndjson"));
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_spool_records", "route=\"readings\"").value_or(-1) ==
                                   kRecords; },
                      std::chrono::seconds(10)));
  // The lane keeps retrying: token fetches fail while the server is down.
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_token_fetch_failures_total", "route=\"readings\",table=\"main.edge.readings\"").value_or(0) >= 1; },
                      std::chrono::seconds(10)));

  daemon.Kill();  // crash: no shutdown path runs
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_spool_records", "route=\"readings\"").value_or(-1) ==
                                   kRecords; },
                      std::chrono::seconds(10)))
      << "the spool must come back with every accepted record";

  // A clean stop while the server is down exits promptly and deletes nothing.
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0) << daemon.log();
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  EXPECT_EQ(daemon.Metric("zerobusd_spool_records", "route=\"readings\"").value_or(-1), kRecords);

  DevServer server(dir.path(), grpc_port, http_port);
  ASSERT_TRUE(server.Start()) << server.log();
  ASSERT_TRUE(WaitFor([&] { return AllIds(server, "down", kRecords); }, std::chrono::seconds(60)))
      << "rows: " << server.Rows("main.edge.readings").size() << "\n" << daemon.log().substr(0, 4000);
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_spool_records", "route=\"readings\"").value_or(-1) == 0; },
                      std::chrono::seconds(30)));
  auto stats = server.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_NE(stats->find("\"violations\":0"), std::string::npos) << *stats;
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

TEST(RestartTest, ServerRestartMidStreamLosesNothing) {
  constexpr int kRecords = 20000;
  TempDir dir;
  DevServer server(dir.path());
  ASSERT_TRUE(server.Start()) << server.log();
  const int grpc_port = server.grpc_port(), http_port = server.http_port();
  Daemon daemon(dir.path(), {.grpc_port = grpc_port, .http_port = http_port});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  WriteRecords(dir.Sub("a.ndjson"), "a", kRecords);
  ASSERT_EQ(SendFile(daemon.socket(), "readings", dir.Sub("a.ndjson")).exit_code, 0);
  server.Kill();  // whatever was in flight is lost by the server, not by us
  WriteRecords(dir.Sub("b.ndjson"), "b", kRecords);
  ASSERT_EQ(SendFile(daemon.socket(), "readings", dir.Sub("b.ndjson")).exit_code, 0);
  DevServer again(dir.path(), grpc_port, http_port);
  ASSERT_TRUE(again.Start()) << again.log();
  ASSERT_TRUE(WaitFor([&] { return AllIds(again, "a", kRecords) && AllIds(again, "b", kRecords); },
                      std::chrono::seconds(90)))
      << daemon.log() << again.log();
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_spool_records", "route=\"readings\"").value_or(-1) == 0; },
                      std::chrono::seconds(30)));
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

}  // namespace
}  // namespace zb::testing
