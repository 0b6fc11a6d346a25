// SIGTERM and SIGHUP against the real daemon: a bounded, clean stop that
// deletes nothing unacked, even mid-flight or mid-start-up; reloads that are
// validated first, applied atomically, refused whole when they cannot be
// applied, and that never orphan or misdirect the records of a renamed,
// removed or re-pointed route.

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "rapidjson/document.h"

namespace zb::testing {
namespace {

constexpr char kFastDrain[] = "drain:\n  backoff_initial_ms: 20\n  backoff_max_ms: 200\n";

double Metric(const Daemon& d, const std::string& name, const std::string& labels = "") {
  return d.Metric(name, labels).value_or(-1);
}

RunResult Send(const Daemon& d, const TempDir& dir, const std::string& route, const std::string& prefix, int n) {
  WriteRecords(dir.Sub(prefix + ".ndjson"), prefix, n);
  return SendFile(d.socket(), route, dir.Sub(prefix + ".ndjson"));
}

TEST(LifecycleTest, SigtermWithRequestsInFlightExitsWithinTheDeadlineAndDeletesNothingUnacked) {
  TempDir dir;
  DevServer server(dir.path(), 0, 0, {"--faults", R"({"default":{"streams":[{"withhold_acks":true}]}})"});
  ASSERT_TRUE(server.Start()) << server.log();
  DaemonOptions o;
  o.grpc_port = server.grpc_port();
  o.http_port = server.http_port();
  o.extra_yaml = absl::StrCat(kFastDrain, "  ack_timeout_ms: 60000\n");
  o.shutdown_timeout_ms = 1000;
  Daemon daemon(dir.path(), o);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  ASSERT_EQ(Send(daemon, dir, "readings", "f", 2000).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return Metric(daemon, "zerobusd_inflight_requests", "route=\"readings\"") > 0; },
                      std::chrono::seconds(10)));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0) << daemon.log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5)) << "bounded by shutdown_timeout_ms";
  EXPECT_NE(daemon.log().find("shutdown deadline reached"), std::string::npos);

  // Nothing unacked was deleted: the server (now acking) gets everything.
  ASSERT_TRUE(server.SetFaults("{}"));
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  EXPECT_EQ(Metric(daemon, "zerobusd_spool_records", "route=\"readings\""), 2000);
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(server, "main.edge.readings", "f", 2000).missing == 0; },
                      std::chrono::seconds(30)));
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

TEST(LifecycleTest, SigtermDuringStartUpRecoveryIsHonouredAndTheSpoolStaysIntact) {
  TempDir dir;
  DaemonOptions o;
  o.grpc_port = FreePort();  // no server: everything stays spooled
  o.http_port = FreePort();
  o.extra_yaml = kFastDrain;
  Daemon daemon(dir.path(), o);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  ASSERT_EQ(Send(daemon, dir, "readings", "s", 50000).exit_code, 0);
  daemon.Kill();  // the next start replays the write-ahead log
  const size_t log_start = daemon.log().size();
  daemon.Launch();
  // SIGTERM as soon as it says it is opening the spool: mid-recovery.
  ASSERT_TRUE(WaitFor([&] { return daemon.log().find("starting: opening the spool", log_start) != std::string::npos; },
                      std::chrono::seconds(20)));
  daemon.process()->Signal(SIGTERM);
  EXPECT_EQ(daemon.process()->Wait(std::chrono::seconds(30)), 0) << daemon.log();
  const std::string log = daemon.log().substr(log_start);
  EXPECT_TRUE(log.find("stop requested during start-up") != std::string::npos ||
              log.find("SIGTERM received") != std::string::npos)
      << log;
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  EXPECT_EQ(Metric(daemon, "zerobusd_spool_records", "route=\"readings\""), 50000);
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

TEST(LifecycleTest, SighupRefusesABadConfigWholeAndKeepsRunning) {
  TempDir dir;
  DaemonOptions o;
  o.grpc_port = FreePort();
  o.http_port = FreePort();
  o.extra_yaml = kFastDrain;
  Daemon daemon(dir.path(), o);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  const std::string good = ReadFileOrEmpty(daemon.config_path());

  // A typo: refused, named, and the old routes keep working.
  WriteFile(daemon.config_path(), good + "  - name: extra\n    tabel: main.edge.extra\n");
  daemon.process()->Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return daemon.log().find("configuration") != std::string::npos &&
                                   daemon.log().find("refused") != std::string::npos; },
                      std::chrono::seconds(10)));
  EXPECT_NE(daemon.log().find("routes[1].tabel: unknown key"), std::string::npos) << daemon.log();
  EXPECT_EQ(Send(daemon, dir, "readings", "k1", 10).exit_code, 0);
  EXPECT_EQ(Send(daemon, dir, "extra", "k2", 1).exit_code, 1) << "the bad config applied nothing";

  // A section that needs a restart: refused whole too, even with a valid
  // route change beside it.
  std::string respool = good;
  respool.replace(respool.find("spool:\n"), 7, "spool:\n  max_bytes: 5MiB\n");
  WriteFile(daemon.config_path(), respool + "  - name: extra\n    table: main.edge.extra\n");
  daemon.process()->Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return daemon.log().find("take effect only on restart") != std::string::npos; },
                      std::chrono::seconds(10)));
  EXPECT_EQ(Send(daemon, dir, "extra", "k3", 1).exit_code, 1);
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

TEST(LifecycleTest, SighupRepointsRenamesAndRemovesRoutesWithoutOrphaningOrMisdirectingRecords) {
  TempDir dir;
  const int grpc_port = FreePort(), http_port = FreePort();
  DaemonOptions o;
  o.grpc_port = grpc_port;
  o.http_port = http_port;
  o.extra_yaml = kFastDrain;
  o.routes_yaml =
      "routes:\n"
      "  - name: readings\n    table: main.edge.readings\n"
      "  - name: events\n    table: main.edge.events\n"
      "  - name: legacy\n    table: main.edge.legacy\n";
  Daemon daemon(dir.path(), o);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  // The server is down: everything stays spooled.
  ASSERT_EQ(Send(daemon, dir, "events", "e", 500).exit_code, 0);
  ASSERT_EQ(Send(daemon, dir, "legacy", "l", 300).exit_code, 0);

  // Pointing a route that holds records at another table: its records
  // already accepted still go to the old table, new ones to the new table.
  daemon.SetRoutes(
      "routes:\n"
      "  - name: readings\n    table: main.edge.readings\n"
      "  - name: events\n    table: main.edge.other\n"
      "  - name: legacy\n    table: main.edge.legacy\n");
  daemon.process()->Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return daemon.log().find("changed [events]") != std::string::npos; },
                      std::chrono::seconds(10)))
      << daemon.log();
  ASSERT_EQ(Send(daemon, dir, "events", "o", 100).exit_code, 0);
  EXPECT_NE(daemon.Control(R"({"cmd":"status"})").find("\"lane\":\"events@2\",\"route\":\"events\",\"table\":"
                                                       "\"main.edge.other\""),
            std::string::npos);

  // Rename "events" to "events2" and drop "legacy": accepted. The old
  // lanes keep draining what they hold to their tables.
  daemon.SetRoutes(
      "routes:\n"
      "  - name: readings\n    table: main.edge.readings\n"
      "  - name: events2\n    table: main.edge.events\n");
  const size_t before = daemon.log().size();
  daemon.process()->Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return daemon.log().find("configuration reloaded", before) != std::string::npos; },
                      std::chrono::seconds(10)))
      << daemon.log();
  EXPECT_NE(daemon.log().find("added [events2], removed [events, legacy]", before), std::string::npos)
      << daemon.log();
  RunResult old_name = Send(daemon, dir, "events", "x", 1);
  EXPECT_EQ(old_name.exit_code, 1);
  EXPECT_NE(old_name.output.find("unknown route \"events\""), std::string::npos) << old_name.output;
  ASSERT_EQ(Send(daemon, dir, "events2", "n", 200).exit_code, 0);

  // A restart with the new config: the removed route's records still drain
  // to where they were accepted for.
  daemon.Kill();
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  EXPECT_NE(daemon.log().find("\"legacy\" is no longer configured: draining its 300 spooled records"),
            std::string::npos)
      << daemon.log();
  DevServer server(dir.path(), grpc_port, http_port);
  ASSERT_TRUE(server.Start()) << server.log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return CheckDelivery(server, "main.edge.events", "e", 500).missing == 0 &&
               CheckDelivery(server, "main.edge.events", "n", 200).missing == 0 &&
               CheckDelivery(server, "main.edge.other", "o", 100).missing == 0 &&
               CheckDelivery(server, "main.edge.legacy", "l", 300).missing == 0;
      },
      std::chrono::seconds(60)))
      << daemon.log().substr(0, 5000);
  ASSERT_TRUE(WaitFor([&] { return Metric(daemon, "zerobusd_spool_bytes") == 0; }, std::chrono::seconds(30)));
  const std::string status = daemon.Control(R"({"cmd":"status"})");
  EXPECT_NE(status.find("\"lane\":\"legacy\",\"route\":\"legacy\",\"table\":\"main.edge.legacy\""), std::string::npos)
      << status;
  EXPECT_EQ(RowIds(server.Rows("main.edge.other")).size(), 100u) << "no old record went to the new table";
  EXPECT_NE(status.find("\"configured\":false"), std::string::npos) << status;
}

// Under systemd stdout is the journal's stream ($JOURNAL_STREAM names it):
// every line starts with its syslog priority, so `journalctl -p warning`
// works; with log_format: json each line after it is one JSON object.
TEST(LifecycleTest, UnderTheJournalLinesCarryPrioritiesAndJsonLinesParse) {
  TempDir dir;
  DevServer server(dir.path());
  ASSERT_TRUE(server.Start()) << server.log();
  DaemonOptions o;
  o.grpc_port = server.grpc_port();
  o.http_port = server.http_port();
  o.extra_yaml = absl::StrCat(kFastDrain, "log_format: json\n");
  Daemon daemon(dir.path(), o);
  // The daemon's output file, made first so its device and inode are known.
  WriteFile(dir.Sub("zerobusd.log"), "");
  struct stat st {};
  ASSERT_EQ(stat(dir.Sub("zerobusd.log").c_str(), &st), 0);
  setenv("JOURNAL_STREAM", absl::StrCat(st.st_dev, ":", st.st_ino).c_str(), 1);
  const bool started = daemon.Start();
  unsetenv("JOURNAL_STREAM");
  ASSERT_TRUE(started) << daemon.log();
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
  int lines = 0, ready = 0, warnings = 0;
  std::istringstream in(daemon.log());
  for (std::string line; std::getline(in, line);) {
    ++lines;
    ASSERT_GE(line.size(), 4u) << line;
    ASSERT_EQ(line[0], '<') << line;
    const char priority = line[1];
    ASSERT_EQ(line[2], '>') << line;
    rapidjson::Document d;
    d.Parse(line.c_str() + 3);
    ASSERT_FALSE(d.HasParseError()) << line;
    ASSERT_TRUE(d.HasMember("time") && d.HasMember("level") && d.HasMember("message")) << line;
    const std::string level = d["level"].GetString();
    if (level == "info") {
      EXPECT_EQ(priority, '6') << line;
    }
    if (level == "warning") {
      EXPECT_EQ(priority, '4') << line;
      ++warnings;
    }
    if (std::string(d["message"].GetString()).find(" ready: socket ") != std::string::npos) ++ready;
  }
  EXPECT_GT(lines, 3);
  EXPECT_EQ(ready, 1) << daemon.log();
  EXPECT_GE(warnings, 1) << "zerobus.tls: false is a warning\n" << daemon.log();
}

}  // namespace
}  // namespace zb::testing
