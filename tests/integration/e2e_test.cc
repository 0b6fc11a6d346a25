// End to end with real processes: zerobusctl -> zerobusd (Unix socket,
// RocksDB spool, gRPC drain) -> zerobus-devserver (token endpoint, Zerobus
// EphemeralStream, rows on disk).

#include <signal.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "rapidjson/document.h"

namespace zb::testing {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

int64_t StatsField(const std::string& stats, const char* field) {
  rapidjson::Document d;
  d.Parse(stats.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember(field) || !d[field].IsNumber()) return -1;
  return d[field].GetInt64();
}

bool AllIdsArrived(const DevServer& server, const std::string& table, const std::string& prefix, int n,
                   std::multiset<std::string>* ids_out = nullptr) {
  auto ids = RowIds(server.Rows(table));
  for (int i = 0; i < n; ++i) {
    if (ids.count(absl::StrCat(prefix, "-", i)) == 0) return false;
  }
  if (ids_out) *ids_out = std::move(ids);
  return true;
}

TEST(EndToEndTest, EveryRecordSentArrivesOnceTheSpoolDrainsAndNoProtocolViolation) {
  const int n = EnvInt("ZEROBUSD_E2E_RECORDS", 200000);
  TempDir dir;
  DevServer server(dir.path());
  ASSERT_TRUE(server.Start()) << server.log();
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(), .http_port = server.http_port()});
  ASSERT_TRUE(daemon.Start()) << daemon.log();

  const std::string input = dir.Sub("records.ndjson");
  WriteRecords(input, "e2e", n);
  RunResult sent = SendFile(daemon.socket(), "readings", input);
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  EXPECT_NE(sent.output.find(absl::StrCat("accepted ", n, " rejected 0")), std::string::npos) << sent.output;

  std::multiset<std::string> ids;
  ASSERT_TRUE(WaitFor([&] { return AllIdsArrived(server, "main.edge.readings", "e2e", n, &ids); },
                      std::chrono::seconds(180)))
      << "rows: " << server.Rows("main.edge.readings").size() << "\n" << daemon.log().substr(0, 4000);
  // Rows land before the ACK that covers them; the spool gauge follows on
  // the daemon's 1 s tick.
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_acked_records_total", "route=\"readings\"").value_or(-1) == n; },
                      std::chrono::seconds(30)));
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_spool_records", "route=\"readings\"").value_or(-1) == 0 &&
                                   daemon.Metric("zerobusd_spool_bytes").value_or(-1) == 0; },
                      std::chrono::seconds(30)));
  EXPECT_EQ(daemon.Metric("zerobusd_intake_records_total", "result=\"accepted\",route=\"readings\"").value_or(-1), n);
  EXPECT_GE(daemon.Metric("zerobusd_stream_opens_total", "route=\"readings\"").value_or(-1), 1);
  // Nothing failed, so nothing was resent: exactly one row per id.
  EXPECT_EQ(ids.size(), static_cast<size_t>(n));

  auto stats = server.Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(StatsField(*stats, "violations"), 0) << *stats;
  EXPECT_NE(stats->find("zerobusd/"), std::string::npos) << "x-zerobus-sdk header seen: " << *stats;

  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0) << daemon.log();
}

TEST(EndToEndTest, RejectedLinesAreReportedWithLineNumbersAndTheRestDelivered) {
  TempDir dir;
  DevServer server(dir.path());
  ASSERT_TRUE(server.Start()) << server.log();
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(), .http_port = server.http_port()});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  WriteFile(dir.Sub("mixed.ndjson"),
            "{\"id\":\"m-0\"}\n"
            "not json\n"
            "{\"id\":\"m-1\"}\n"
            "[\"array\"]\n");
  RunResult sent = SendFile(daemon.socket(), "readings", dir.Sub("mixed.ndjson"));
  EXPECT_EQ(sent.exit_code, 1) << sent.output;
  EXPECT_NE(sent.output.find("accepted 2 rejected 2"), std::string::npos) << sent.output;
  EXPECT_NE(sent.output.find("line 2: invalid JSON at byte"), std::string::npos) << sent.output;
  EXPECT_NE(sent.output.find("line 4: not a JSON object: got an array"), std::string::npos) << sent.output;
  ASSERT_TRUE(WaitFor([&] { return AllIdsArrived(server, "main.edge.readings", "m", 2); }, std::chrono::seconds(30)));

  RunResult unknown = SendFile(daemon.socket(), "nope", dir.Sub("mixed.ndjson"));
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.output.find("unknown route \"nope\""), std::string::npos) << unknown.output;
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

TEST(EndToEndTest, ProtoRouteConvertsJsonAndTheServerDecodesRows) {
  TempDir dir;
  WriteFile(dir.Sub("reading.proto"),
            "syntax = \"proto2\";\npackage edge;\n"
            "message Reading { required string id = 1; optional double value = 2; optional int64 ts = 3; }\n");
  DevServer server(dir.path());
  ASSERT_TRUE(server.Start()) << server.log();
  DaemonOptions options{server.grpc_port(), server.http_port()};
  options.routes_yaml = absl::StrCat("routes:\n  - name: protos\n    table: main.edge.protos\n    format: proto\n",
                                     "    schema:\n      proto_file: ", dir.Sub("reading.proto"),
                                     "\n      message: Reading\n      column_types: {ts: timestamp}\n");
  Daemon daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  WriteFile(dir.Sub("p.ndjson"), "{\"id\":\"p-0\",\"value\":1.5,\"ts\":17}\n{\"id\":\"p-1\"}\n{\"value\":3}\n"
                                 "{\"id\":\"p-2\",\"ts\":\"2026-12-01T10:00:00Z\"}\n{\"id\":\"p-3\",\"ts\":\"noon\"}\n");
  RunResult sent = SendFile(daemon.socket(), "protos", dir.Sub("p.ndjson"));
  EXPECT_NE(sent.output.find("accepted 3 rejected 2"), std::string::npos) << sent.output;
  EXPECT_NE(sent.output.find("line 3: does not match edge.Reading"), std::string::npos) << sent.output;
  EXPECT_NE(sent.output.find("line 5: field ts: "), std::string::npos) << "column_types: ts is a TIMESTAMP\n"
                                                                       << sent.output;
  ASSERT_TRUE(WaitFor([&] { return AllIdsArrived(server, "main.edge.protos", "p", 3); }, std::chrono::seconds(30)))
      << server.log();
  bool converted = false;
  for (const std::string& row : server.Rows("main.edge.protos")) {
    if (row.find("\"p-2\"") != std::string::npos) converted = row.find("\"ts\":\"1796119200000000\"") != std::string::npos;
  }
  EXPECT_TRUE(converted) << "RFC 3339 converted to microseconds by column_types";
  auto stats = server.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(StatsField(*stats, "violations"), 0) << *stats;
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

TEST(EndToEndTest, ConfigCheckListsEveryProblem) {
  TempDir dir;
  WriteFile(dir.Sub("bad.yaml"),
            "zerobus:\n  endpoint: \"http://127.0.0.1:1\"\n  workspace_url: \"http://127.0.0.1:2\"\n  tls: false\n"
            "  client_id: a\n  client_secret: b\n"
            "spool:\n  when_full: sometimes\n"
            "routes:\n  - name: r\n    table: not-a-table\n    colour: red\n");
  RunResult r = RunCommand({BinDir() + "/zerobusd", "--config", dir.Sub("bad.yaml"), "--check"}, std::chrono::seconds(20));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("spool.when_full"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("routes[0].table"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("routes[0].colour"), std::string::npos) << r.output;

  Daemon daemon(dir.path(), {.grpc_port = 1, .http_port = 2});
  daemon.WriteConfig();
  RunResult ok = RunCommand({BinDir() + "/zerobusd", "--config", daemon.config_path(), "--check"}, std::chrono::seconds(20));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

}  // namespace
}  // namespace zb::testing
