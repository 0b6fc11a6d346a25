// Several streams per table (routes[].max_streams), end to end against the
// dev server: a lane opens streams when one stream's pace cannot carry its
// backlog, each stream's ACKs delete exactly its spans, and faults on one
// stream (aborts, rotations, token expiry, refused records) lose nothing
// while the others go on. One saturated table does not hold back another.

#include <csignal>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "route_fixture.h"

namespace zb::testing {
namespace {

constexpr char kTable[] = "main.edge.readings";

// Short timers so faults play out in seconds; extra streams close after
// half a second with nothing in flight.
constexpr char kFastDrain[] =
    "drain:\n"
    "  backoff_initial_ms: 20\n"
    "  backoff_max_ms: 200\n"
    "  ack_timeout_ms: 2000\n"
    "  create_timeout_ms: 2000\n"
    "  max_batch_records: 100\n"
    "  max_inflight_requests: 8\n"
    "  max_close_grace_ms: 2000\n"
    "  rotation_drain_ms: 200\n"
    "  stream_idle_close_ms: 500\n";

class StreamsTest : public RouteTest {
 protected:
  // The dev server with `server_flags` (and a fault script unless empty);
  // the daemon's "readings" route with `max_streams`, paced at
  // `rows_per_second` per stream.
  void Start(const std::string& faults, std::vector<std::string> server_flags = {}, int max_streams = 4,
             int rows_per_second = 1000) {
    DaemonOptions o;
    o.extra_yaml = kFastDrain;
    o.zerobus_yaml = absl::StrCat("  stream_quota: {rows_per_second: ", rows_per_second, "}\n");
    o.routes_yaml = absl::StrCat("routes:\n  - name: readings\n    table: ", kTable, "\n    max_streams: ", max_streams,
                                 "\n");
    StartBoth(faults, std::move(server_flags), std::move(o));
  }
};

// The service's timing (ACKs 150 ms after each request) and a quota per
// stream above the daemon's pace: the backlog opens more streams, none
// trips the quota, every stream carries rows, and once the backlog is gone
// the extra streams close.
TEST_F(StreamsTest, ABacklogOpensStreamsThatStayUnderTheQuotaAndCloseWhenIdle) {
  ASSERT_NO_FATAL_FAILURE(
      Start("", {"--ack-latency-ms", "150", "--stream-quota-rows", "1500"}, /*max_streams=*/4, /*rows=*/1000));
  constexpr int kRecords = 12000;  // 12 s on one stream
  Send("m", kRecords);
  ExpectAllDelivered("m", kRecords, /*max_duplicates=*/0);
  EXPECT_EQ(server_->TableStat(kTable, "quota_trips"), 0);
  EXPECT_EQ(Metric("zerobusd_quota_trips_total", "route=\"readings\""), 0);
  EXPECT_GE(server_->TableStat(kTable, "max_open_streams"), 3) << daemon_->log().substr(0, 4000);
  EXPECT_LE(server_->TableStat(kTable, "max_open_streams"), 4);
  for (const char* stream : {"0", "1", "2"}) {
    EXPECT_GT(Metric("zerobusd_stream_acked_records_total", absl::StrCat("route=\"readings\",stream=\"", stream, "\"")),
              0)
        << "stream " << stream;
  }
  ASSERT_TRUE(WaitFor([&] { return server_->TableStat(kTable, "open_streams") == 1; }, std::chrono::seconds(10)))
      << "the extra streams close once idle";
  EXPECT_TRUE(WaitFor([&] { return Metric("zerobusd_open_streams", "route=\"readings\"") == 1; },
                      std::chrono::seconds(5)));
  // zerobusctl status asks the daemon: a table, one line per lane...
  const RunResult status = daemon_->Ctl({"status"});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("LANE      ROUTE     TABLE"), std::string::npos) << status.output;
  std::string row;
  for (size_t at = status.output.find("\nreadings "); at != std::string::npos;) {
    row = status.output.substr(at + 1, status.output.find('\n', at + 1) - at - 1);
    break;
  }
  EXPECT_NE(row.find(" 1/4 "), std::string::npos) << "open of max_streams\n" << status.output;
  EXPECT_NE(row.find(" 0 "), std::string::npos) << "nothing spooled\n" << status.output;
  // ... and --json, the daemon's answer as is.
  const RunResult json = daemon_->Ctl({"status", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.output;
  EXPECT_EQ(json.output.rfind("{\"ok\":true,", 0), 0u) << json.output;
  EXPECT_NE(json.output.find("\"open_streams\":1,\"max_streams\":4"), std::string::npos) << json.output;
  EXPECT_NE(json.output.find("\"oldest_age_seconds\":"), std::string::npos) << json.output;
}

// max_streams: 1 keeps one stream, in seq order, whatever the backlog.
TEST_F(StreamsTest, MaxStreamsOneKeepsOneOrderedStream) {
  ASSERT_NO_FATAL_FAILURE(
      Start("", {"--ack-latency-ms", "150", "--stream-quota-rows", "3000"}, /*max_streams=*/1, /*rows=*/2000));
  constexpr int kRecords = 4000;
  Send("o", kRecords);
  ExpectAllDelivered("o", kRecords, /*max_duplicates=*/0);
  EXPECT_EQ(server_->TableStat(kTable, "max_open_streams"), 1);
  const std::vector<std::string> rows = server_->Rows(kTable);
  ASSERT_EQ(rows.size(), static_cast<size_t>(kRecords));
  for (int i = 0; i < kRecords; ++i) {
    ASSERT_NE(rows[i].find(absl::StrCat("\"o-", i, "\"")), std::string::npos) << "row " << i << ": " << rows[i];
  }
}

// A reload that changes max_streams mid-drain replaces the lane: what was
// in flight on its streams is sent again by the new one, nothing is lost.
TEST_F(StreamsTest, AReloadThatChangesMaxStreamsMidDrainLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(Start("", {"--ack-latency-ms", "150"}, /*max_streams=*/4, /*rows=*/1000));
  constexpr int kRecords = 8000;
  Send("h", kRecords);
  ASSERT_TRUE(WaitFor([&] { return server_->TableStat(kTable, "open_streams") >= 2; }, std::chrono::seconds(20)));
  daemon_->SetRoutes(absl::StrCat("routes:\n  - name: readings\n    table: ", kTable, "\n    max_streams: 1\n"));
  daemon_->process()->Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return daemon_->log().find("configuration reloaded") != std::string::npos; },
                      std::chrono::seconds(10)));
  ExpectAllDelivered("h", kRecords);
  EXPECT_EQ(Metric("zerobusd_open_streams", "route=\"readings\""), 1);
  const std::string status = daemon_->Control(R"({"cmd":"status"})");
  EXPECT_NE(status.find("\"max_streams\":1"), std::string::npos) << status;
}

// Streams aborted midway, one with rows stored but never acked: their spans
// go back to the lane and the other streams resend them.
TEST_F(StreamsTest, AbortedStreamsGiveTheirSpansBackAndNothingIsLost) {
  ASSERT_NO_FATAL_FAILURE(Start(R"({"default":{"streams":[{},
      {"abort_after_requests":3,"keep_unacked":true,"ack_interval_ms":60000},
      {},{"abort_after_ms":500,"abort_code":"ABORTED"}]}})"));
  constexpr int kRecords = 6000;
  Send("a", kRecords);
  // Only the requests the server kept and never acked come twice.
  ExpectAllDelivered("a", kRecords, /*max_duplicates=*/3 * 100);
  EXPECT_GE(Metric("zerobusd_resent_records_total", "route=\"readings\""), 1);
  EXPECT_GE(Failures("UNAVAILABLE") + Failures("ABORTED"), 1);
  EXPECT_GE(server_->TableStat(kTable, "max_open_streams"), 2);
}

// Every stream rotates after 400 ms: routine, on each stream by itself.
TEST_F(StreamsTest, EachStreamRotatesByItselfWithoutAFailureOrADuplicate) {
  ASSERT_NO_FATAL_FAILURE(Start(R"({"default":{"then":{"close_after_ms":400,"close_grace_ms":300,"close_code":"OK"}}})"));
  constexpr int kRecords = 6000;
  Send("r", kRecords);
  ExpectAllDelivered("r", kRecords, /*max_duplicates=*/0);
  EXPECT_GE(Metric("zerobusd_stream_rotations_total", "route=\"readings\""), 3);
  EXPECT_EQ(Failures("UNAVAILABLE"), 0);
  EXPECT_EQ(Failures("OK"), 0);
  EXPECT_GE(server_->TableStat(kTable, "max_open_streams"), 2);
}

// Tokens live 2 s and streams rotate: later streams need fresh tokens, and
// one stream's token is refused once (every stream reconnects with a fresh
// one).
TEST_F(StreamsTest, TokensExpireAndAreRefusedWhileSeveralStreamsRun) {
  ASSERT_NO_FATAL_FAILURE(Start(R"({"default":{"streams":[{},{"create_error":"UNAUTHENTICATED"}],
      "then":{"close_after_ms":700,"close_grace_ms":200,"close_code":"OK"}}})",
                                {"--token-ttl-s", "2"}));
  constexpr int kRecords = 12000;  // 3 s on four streams: past a token's 2 s
  Send("t", kRecords);
  ExpectAllDelivered("t", kRecords, /*max_duplicates=*/-1);
  EXPECT_GE(server_->Stat("tokens_issued"), 3) << "the first, the fresh one after the refusal, one after expiry";
  EXPECT_EQ(Failures("UNAUTHENTICATED"), 1) << daemon_->log().substr(0, 4000);
  EXPECT_EQ(Metric("zerobusd_lane_parked", "route=\"readings\""), 0);
  EXPECT_GE(server_->TableStat(kTable, "max_open_streams"), 2);
}

// Refused records among several streams: every stream ends, one finds the
// records, and exactly those go to the dead-letter store.
TEST_F(StreamsTest, RefusedRecordsAreFoundAndDeadLetteredWhileSeveralStreamsRun) {
  ASSERT_NO_FATAL_FAILURE(Start(R"({"default":{"poison":"POISON"}})"));
  const Delivery d = SendWithPoisonAndWait("p", 6000, {4500, 5800});
  ASSERT_EQ(d.missing, 2);
  EXPECT_EQ(Metric("zerobusd_dead_letter_records_total", "route=\"readings\""), 2);
  EXPECT_EQ(d.first_missing, "p-4500");
  EXPECT_EQ(RowIds(server_->Rows(kTable)).count("p-5800"), 0u);
  for (const char* id : {"1", "2"}) {
    const RunResult shown = daemon_->Ctl({"dlq", "show", id});
    EXPECT_NE(shown.output.find("POISON"), std::string::npos) << shown.output;
  }
  EXPECT_GE(server_->TableStat(kTable, "max_open_streams"), 2);
}

// peers.md #11: one producer floods a table faster than it drains (its
// streams saturated at their pace) while another sends to a second table
// through the same intake, writer, spool reader and event loop: the second
// table's records land while the flood is still arriving and far from
// drained, and the flood keeps its pace.
TEST_F(StreamsTest, AFloodedTableAtItsQuotaDoesNotHoldBackAnother) {
  DaemonOptions o;
  o.extra_yaml = kFastDrain;
  o.routes_yaml =
      "routes:\n"
      "  - name: flood\n    table: main.edge.flood\n    max_streams: 2\n"
      "    stream_quota: {rows_per_second: 5000}\n"
      "  - name: readings\n    table: main.edge.readings\n";
  ASSERT_NO_FATAL_FAILURE(StartBoth("", {}, std::move(o)));
  constexpr int kFlood = 300000;  // 30 s at the flood's pace
  const std::string flood_file = dir_.Sub("flood.ndjson");
  WriteRecords(flood_file, "f", kFlood);
  Process flood({BinDir() + "/zerobusctl", "send", "--socket", daemon_->socket(), "--route", "flood", flood_file},
                dir_.Sub("flood.log"));
  // The flood is arriving and its streams are held by their pace.
  ASSERT_TRUE(WaitFor(
      [&] {
        return Metric("zerobusd_intake_records_total", "result=\"accepted\",route=\"flood\"") > 20000 &&
               Metric("zerobusd_paced_seconds_total", "route=\"flood\"") > 0;
      },
      std::chrono::seconds(30)))
      << daemon_->log().substr(0, 4000);
  Send("b", 2000, "readings");
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(*server_, kTable, "b", 2000).missing == 0; },
                      std::chrono::seconds(60)));
  const double flood_acked = Metric("zerobusd_acked_records_total", "route=\"flood\"");
  const double flood_accepted = Metric("zerobusd_intake_records_total", "result=\"accepted\",route=\"flood\"");
  std::printf("fairness: the second table's 2000 records landed with the flood at %.0f accepted, %.0f acked\n",
              flood_accepted, flood_acked);
  EXPECT_LT(flood_acked, kFlood / 2) << "the second table did not wait for the flood to drain";
  EXPECT_TRUE(WaitFor([&] { return Metric("zerobusd_acked_records_total", "route=\"flood\"") > flood_acked + 2000; },
                      std::chrono::seconds(10)))
      << "and the flood keeps its pace";
  EXPECT_EQ(server_->TableStat("main.edge.flood", "max_open_streams"), 2);
  EXPECT_EQ(server_->TableStat("main.edge.flood", "quota_trips"), 0);
  flood.Kill();
}

}  // namespace
}  // namespace zb::testing
