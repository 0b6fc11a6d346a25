// Prometheus for real: Debian's prometheus binary scrapes the daemon, with
// the shipped alert rules loaded, and its HTTP API answers with the daemon's
// series; `promtool check metrics` finds nothing to say about the
// exposition.

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "rapidjson/document.h"

namespace zb::testing {
namespace {

std::string Curl(const std::string& url) {
  return RunCommand({"/usr/bin/curl", "-s", "--max-time", "5", url}, std::chrono::seconds(10)).output;
}

// The value of the first result of an instant query, or -1.
double QueryValue(int port, const std::string& query) {
  const std::string body =
      Curl(absl::StrCat("http://127.0.0.1:", port, "/api/v1/query?query=", query));
  rapidjson::Document d;
  d.Parse(body.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("data") || !d["data"].HasMember("result")) return -1;
  const auto& result = d["data"]["result"];
  if (!result.IsArray() || result.Empty() || !result[0].HasMember("value")) return -1;
  return std::atof(result[0]["value"][1].GetString());
}

TEST(PrometheusTest, ARealPrometheusScrapesTheDaemonWithTheShippedRules) {
  TempDir dir;
  DevServer server(dir.path());
  ASSERT_TRUE(server.Start()) << server.log();
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(), .http_port = server.http_port()});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  WriteRecords(dir.Sub("r.ndjson"), "r", 500);
  ASSERT_EQ(SendFile(daemon.socket(), "readings", dir.Sub("r.ndjson")).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_acked_records_total", "route=\"readings\"").value_or(0) == 500; },
                      std::chrono::seconds(30)));

  // promtool's linter on the exposition as scraped.
  WriteFile(dir.Sub("metrics.txt"), Curl(absl::StrCat("http://127.0.0.1:", daemon.metrics_port(), "/metrics")));
  const RunResult lint = RunCommand({"/usr/bin/promtool", "check", "metrics"}, std::chrono::seconds(30),
                                    dir.Sub("metrics.txt"));
  EXPECT_EQ(lint.exit_code, 0) << lint.output;
  EXPECT_EQ(lint.output, "") << "promtool has remarks";

  const int port = FreePort();
  WriteFile(dir.Sub("prometheus.yml"),
            absl::StrCat("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                         "rule_files:\n  - ", ZEROBUSD_SOURCE_DIR, "/packaging/prometheus/zerobusd-alerts.yml\n"
                         "scrape_configs:\n  - job_name: zerobusd\n    static_configs:\n"
                         "      - targets: ['127.0.0.1:", daemon.metrics_port(), "']\n"));
  Process prometheus({"/usr/bin/prometheus", "--config.file=" + dir.Sub("prometheus.yml"),
                      "--storage.tsdb.path=" + dir.Sub("tsdb"), absl::StrCat("--web.listen-address=127.0.0.1:", port),
                      "--log.level=warn"},
                     dir.Sub("prometheus.log"));
  ASSERT_TRUE(WaitFor([&] { return QueryValue(port, "zerobusd_acked_records_total%7Broute%3D%22readings%22%7D") == 500; },
                      std::chrono::seconds(60)))
      << ReadFileOrEmpty(dir.Sub("prometheus.log"));
  EXPECT_EQ(QueryValue(port, "up%7Bjob%3D%22zerobusd%22%7D"), 1);
  EXPECT_EQ(QueryValue(port, "zerobusd_spool_records_at_start%7Broute%3D%22readings%22%7D"), 0);
  EXPECT_GT(QueryValue(port, "zerobusd_spool_max_bytes"), 0);
  // The rules loaded and evaluate against these series without error.
  ASSERT_TRUE(WaitFor([&] {
    const std::string rules = Curl(absl::StrCat("http://127.0.0.1:", port, "/api/v1/rules"));
    return rules.find("ZerobusdSpoolNearlyFull") != std::string::npos &&
           rules.find("\"lastEvaluation\":\"0001") == std::string::npos;
  }, std::chrono::seconds(30)));
  const std::string rules = Curl(absl::StrCat("http://127.0.0.1:", port, "/api/v1/rules"));
  EXPECT_EQ(rules.find("\"health\":\"err\""), std::string::npos) << rules;
  EXPECT_EQ(rules.find("\"state\":\"firing\""), std::string::npos) << "a healthy daemon fires nothing\n" << rules;
  prometheus.Signal(SIGTERM);
  EXPECT_EQ(prometheus.Wait(std::chrono::seconds(30)), 0) << ReadFileOrEmpty(dir.Sub("prometheus.log"));
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

}  // namespace
}  // namespace zb::testing
