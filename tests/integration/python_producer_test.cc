// The Python producer library (python/zerobusd.py, standard library only)
// against the real daemon and dev server: batches acknowledged once durable
// and every record landed, a refused record named by its index with nothing
// of its batch spooled, a route that does not exist, the line-mode helper,
// and SPOOL_FULL retried with backoff until the spool drains (and given up
// after retry_timeout).

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "rapidjson/document.h"

namespace zb::testing {
namespace {

std::string Script() { return std::string(ZEROBUSD_SOURCE_DIR) + "/tests/python/producer_scenarios.py"; }

// The scenario's JSON answer (its last line).
rapidjson::Document RunScenario(std::vector<std::string> args) {
  args.insert(args.begin(), {"/usr/bin/python3", Script()});
  const RunResult r = RunCommand(args, std::chrono::seconds(120));
  rapidjson::Document d;
  const std::string& out = r.output;
  const size_t start = out.rfind('\n', out.size() >= 2 ? out.size() - 2 : 0);
  const std::string last = out.substr(start == std::string::npos ? 0 : start + 1);
  d.Parse(last.c_str());
  EXPECT_EQ(r.exit_code, 0) << out;
  EXPECT_FALSE(d.HasParseError()) << out;
  if (d.HasParseError()) d.SetObject();
  return d;
}

class PythonProducerTest : public ::testing::Test {
 protected:
  void Start(const std::string& spool_yaml = "") {
    server_ = std::make_unique<DevServer>(dir_.path());
    ASSERT_TRUE(server_->Start()) << server_->log();
    grpc_port_ = server_->grpc_port();
    http_port_ = server_->http_port();
    DaemonOptions o;
    o.grpc_port = server_->grpc_port();
    o.http_port = server_->http_port();
    o.spool_yaml = spool_yaml;
    daemon_ = std::make_unique<Daemon>(dir_.path(), o);
    ASSERT_TRUE(daemon_->Start()) << daemon_->log();
  }
  TempDir dir_;
  int grpc_port_ = 0, http_port_ = 0;
  std::unique_ptr<DevServer> server_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(PythonProducerTest, BatchesAreAcknowledgedAndEveryRecordLands) {
  Start();
  const rapidjson::Document d = RunScenario({"send", daemon_->socket(), "readings", "2500", "py"});
  ASSERT_TRUE(d.HasMember("accepted")) << daemon_->log();
  EXPECT_EQ(d["accepted"].GetInt(), 2500);
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(*server_, "main.edge.readings", "py", 2500).missing == 0; },
                      std::chrono::seconds(60)));
  EXPECT_EQ(daemon_->Metric("zerobusd_intake_records_total", "result=\"accepted\",route=\"readings\"").value_or(0),
            2500);
}

TEST_F(PythonProducerTest, RefusalsNameTheRecordAndTheReason) {
  Start();
  rapidjson::Document d = RunScenario({"refused", daemon_->socket(), "readings"});
  ASSERT_TRUE(d.HasMember("refused") && d["refused"].GetBool());
  EXPECT_STREQ(d["reason"].GetString(), "INVALID_RECORD");
  EXPECT_EQ(d["index"].GetInt(), 3) << "the fourth record given to send()";
  EXPECT_EQ(d["accepted"].GetInt(), 2) << "the first batch (two records) was durable";
  EXPECT_NE(std::string(d["message"].GetString()).find("invalid JSON"), std::string::npos) << d["message"].GetString();
  // Nothing of the refused batch (ok-2 and the bad record) was spooled.
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(*server_, "main.edge.readings", "ok", 2).missing == 0; },
                      std::chrono::seconds(30)));
  EXPECT_EQ(RowIds(server_->Rows("main.edge.readings")).count("ok-2"), 0u);

  d = RunScenario({"refused", daemon_->socket(), "nope"});
  EXPECT_STREQ(d["reason"].GetString(), "UNKNOWN_ROUTE");
  EXPECT_TRUE(d["index"].IsNull());
  EXPECT_EQ(d["accepted"].GetInt(), 0);

  d = RunScenario({"lines", daemon_->socket(), "readings"});
  EXPECT_EQ(d["accepted"].GetInt(), 2);
  ASSERT_EQ(d["errors"].Size(), 1u);
  EXPECT_EQ(d["errors"][0][0].GetInt(), 2) << "the second record";
  EXPECT_NE(std::string(d["errors"][0][1].GetString()).find("invalid JSON"), std::string::npos);
}

TEST_F(PythonProducerTest, AFullSpoolIsRetriedUntilItDrainsOrTheRetryTimeout) {
  Start("  when_full: reject\n  max_bytes: 200KiB\n");
  server_->Kill();  // nothing drains
  // Records of 10 KiB in batches of 5: the spool is full after about 20
  // records; a short retry_timeout gives up, saying how many were durable.
  rapidjson::Document d = RunScenario({"send", daemon_->socket(), "readings", "100", "full", "10240", "1", "5"});
  ASSERT_TRUE(d.HasMember("timeout")) << daemon_->log();
  EXPECT_NE(std::string(d["timeout"].GetString()).find("SPOOL_FULL"), std::string::npos) << d["timeout"].GetString();
  const int durable = d["accepted"].GetInt();
  EXPECT_GT(durable, 0);
  EXPECT_LT(durable, 100);

  // A patient producer waits (backing off) while the spool is full, and
  // finishes once the server is back and the spool drains.
  const double refused_before =
      daemon_->Metric("zerobusd_intake_records_total", "result=\"spool_full\",route=\"readings\"").value_or(0);
  Process patient(
      {"/usr/bin/python3", Script(), "send", daemon_->socket(), "readings", "100", "late", "10240", "120", "5"},
      dir_.Sub("patient.log"));
  // It is being refused (and retrying) before the server comes back.
  ASSERT_TRUE(WaitFor([&] {
    return daemon_->Metric("zerobusd_intake_records_total", "result=\"spool_full\",route=\"readings\"").value_or(0) >=
           refused_before + 10;
  }, std::chrono::seconds(30))) << ReadFileOrEmpty(dir_.Sub("patient.log"));
  server_ = std::make_unique<DevServer>(dir_.path(), grpc_port_, http_port_);  // back where the daemon sends
  ASSERT_TRUE(server_->Start()) << server_->log();
  EXPECT_EQ(patient.Wait(std::chrono::seconds(90)), 0) << ReadFileOrEmpty(dir_.Sub("patient.log"));
  EXPECT_NE(ReadFileOrEmpty(dir_.Sub("patient.log")).find("\"accepted\": 100"), std::string::npos)
      << ReadFileOrEmpty(dir_.Sub("patient.log"));
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(*server_, "main.edge.readings", "late", 100).missing == 0; },
                      std::chrono::seconds(60)));
}

}  // namespace
}  // namespace zb::testing
