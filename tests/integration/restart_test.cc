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

// The books balance across a restart: per route, at rest,
//   spooled at start + accepted = acked + spooled now + dead-lettered + dropped
// with a backlog carried over a crash, drop_oldest dropping some of it, and
// a poison record dead-lettered, all in the run that is checked.
TEST(RestartTest, RecordsBalanceAcrossARestartWithABacklogDropsAndAPoisonRecord) {
  TempDir dir;
  const int grpc_port = FreePort();
  const int http_port = FreePort();
  DaemonOptions options{.grpc_port = grpc_port, .http_port = http_port};
  options.spool_yaml = "  when_full: drop_oldest\n  max_bytes: 200KiB\n";
  auto daemon = std::make_unique<Daemon>(dir.path(), options);
  ASSERT_TRUE(daemon->Start()) << daemon->log();
  WriteRecords(dir.Sub("a.ndjson"), "a", 300);
  ASSERT_EQ(SendFile(daemon->socket(), "readings", dir.Sub("a.ndjson")).exit_code, 0);
  daemon->Kill();

  daemon = std::make_unique<Daemon>(dir.path(), options);
  ASSERT_TRUE(daemon->Start()) << daemon->log();
  auto metric = [&](const std::string& name, const std::string& labels) {
    return daemon->Metric(name, labels).value_or(-1);
  };
  EXPECT_EQ(metric("zerobusd_spool_records_at_start", "route=\"readings\""), 300);
  // More than the spool holds (1,500 x ~200 B > 200 KiB): the oldest go.
  WriteRecords(dir.Sub("b.ndjson"), "b", 1500);
  std::string b = ReadFileOrEmpty(dir.Sub("b.ndjson"));
  b += "{\"id\":\"poisoned\",\"payload\":\"POISON\"}\n";
  WriteFile(dir.Sub("b.ndjson"), b);
  ASSERT_EQ(SendFile(daemon->socket(), "readings", dir.Sub("b.ndjson")).exit_code, 0);
  ASSERT_GT(metric("zerobusd_dropped_records_total", "reason=\"drop_oldest\",route=\"readings\""), 0);

  DevServer server(dir.path(), grpc_port, http_port, {"--faults", R"({"default":{"poison":"POISON"}})"});
  ASSERT_TRUE(server.Start()) << server.log();
  ASSERT_TRUE(WaitFor([&] { return metric("zerobusd_spool_records", "route=\"readings\"") == 0 &&
                                   metric("zerobusd_dead_letter_records_total", "route=\"readings\"") == 1; },
                      std::chrono::seconds(60)))
      << daemon->log();
  const double at_start = metric("zerobusd_spool_records_at_start", "route=\"readings\"");
  const double accepted = metric("zerobusd_intake_records_total", "result=\"accepted\",route=\"readings\"");
  const double acked = metric("zerobusd_acked_records_total", "route=\"readings\"");
  const double spooled = metric("zerobusd_spool_records", "route=\"readings\"");
  const double dead = metric("zerobusd_dead_letter_records_total", "route=\"readings\"");
  const double dropped = metric("zerobusd_dropped_records_total", "reason=\"drop_oldest\",route=\"readings\"");
  EXPECT_EQ(accepted, 1501);
  EXPECT_EQ(at_start + accepted, acked + spooled + dead + dropped)
      << "at start " << at_start << ", accepted " << accepted << ", acked " << acked << ", spooled " << spooled
      << ", dead-lettered " << dead << ", dropped " << dropped;
  EXPECT_EQ(daemon->Terminate(std::chrono::seconds(15)), 0);
}

}  // namespace
}  // namespace zb::testing
