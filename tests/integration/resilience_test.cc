// Every Zerobus fault the dev server can inject, against the real daemon:
// each test sends records through `zerobusctl send` while the fault plays
// out, and asserts that every accepted record arrives (duplicates allowed,
// bounded), the spool empties and the daemon recovered the way the protocol
// notes ask.

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "route_fixture.h"

namespace zb::testing {
namespace {

constexpr char kTable[] = "main.edge.readings";
constexpr int kRecords = 3000;

// Short timers so the faults play out in seconds.
constexpr char kFastDrain[] =
    "drain:\n"
    "  backoff_initial_ms: 20\n"
    "  backoff_max_ms: 200\n"
    "  ack_timeout_ms: 1000\n"
    "  create_timeout_ms: 2000\n"
    "  max_batch_records: 100\n"
    "  max_inflight_requests: 8\n"
    "  max_close_grace_ms: 2000\n"
    "  rotation_drain_ms: 200\n"
    "  parked_retry_ms: 600000\n";

class ResilienceTest : public RouteTest {
 protected:
  // Starts the dev server with `faults` (a fault script, or "") and the
  // daemon against it.
  void Start(const std::string& faults, std::vector<std::string> server_flags = {},
             const std::string& drain_yaml = kFastDrain) {
    StartBoth(faults, std::move(server_flags), DaemonOptions{.extra_yaml = drain_yaml});
  }
};

TEST_F(ResilienceTest, StreamCreationFailsSeveralTimesThenSucceeds) {
  Start(R"({"default":{"streams":[{"create_error":"UNAVAILABLE"},{"create_error":"INTERNAL"},
                                  {"create_error":"UNAVAILABLE"},{"create_delay_ms":300}]}})");
  Send("c", kRecords);
  ExpectAllDelivered("c", kRecords, /*max_duplicates=*/0);
  EXPECT_EQ(Failures("UNAVAILABLE"), 2);
  EXPECT_EQ(Failures("INTERNAL"), 1);
}

TEST_F(ResilienceTest, AStreamAbortedMidwayLosesItsUnackedRequestsOnTheServerNotHere) {
  // Acks are held back (1 s), so the abort after 5 requests throws away
  // stored-but-unacked rows: the daemon must send them again.
  Start(R"({"default":{"streams":[{"abort_after_requests":5,"ack_interval_ms":1000},
                                  {"abort_after_ms":400,"ack_interval_ms":1000,"abort_code":"ABORTED"}]}})");
  Send("a", kRecords);
  ExpectAllDelivered("a", kRecords, /*max_duplicates=*/0);
  EXPECT_GE(server_->Stat("rows_discarded"), 1);
  EXPECT_GE(Metric("zerobusd_resent_records_total", "route=\"readings\""), 1);
  EXPECT_EQ(Failures("UNAVAILABLE"), 1);
}

TEST_F(ResilienceTest, AnAbortAfterStoringButBeforeAckingDuplicatesBoundedByTheWindow) {
  Start(R"({"default":{"streams":[{"abort_after_requests":6,"keep_unacked":true,"ack_interval_ms":60000}]}})");
  Send("k", kRecords);
  // The first stream stored 6 requests of up to 100 records it never acked.
  ExpectAllDelivered("k", kRecords, /*max_duplicates=*/6 * 100);
}

TEST_F(ResilienceTest, WithheldAcksTripTheLackOfAckWatchdog) {
  Start(R"({"default":{"streams":[{"withhold_acks":true}]}})");
  Send("w", kRecords);
  ExpectAllDelivered("w", kRecords, /*max_duplicates=*/8 * 100);
  EXPECT_EQ(Failures("DEADLINE_EXCEEDED"), 1) << "the 1 s ack timeout fired once";
}

TEST_F(ResilienceTest, AcksWithheldForAWhileThenResumingNeedNoReconnect) {
  Start(R"({"default":{"then":{"withhold_acks_ms":600}}})");
  Send("h", kRecords);
  ExpectAllDelivered("h", kRecords, /*max_duplicates=*/0);
  EXPECT_EQ(Metric("zerobusd_stream_opens_total", "route=\"readings\""), 1);
}

TEST_F(ResilienceTest, DelayedCoalescedAndDuplicatedAcksAreTakenInStride) {
  Start(R"({"default":{"then":{"ack_delay_ms":150,"ack_interval_ms":400,"duplicate_acks":true}}})");
  Send("d", kRecords);
  ExpectAllDelivered("d", kRecords, /*max_duplicates=*/0);
  EXPECT_EQ(Metric("zerobusd_stream_opens_total", "route=\"readings\""), 1) << "no reconnect was needed";
}

TEST_F(ResilienceTest, InvalidAcksAreProtocolErrorsThatReopenTheStream) {
  Start(R"({"default":{"streams":[{"regress_ack_after":2,"ack_interval_ms":0},
                                  {"overshoot_ack_after":2,"ack_interval_ms":0},
                                  {"missing_ack_field_after":2,"ack_interval_ms":0},
                                  {"unexpected_payload_after":2}]}})");
  Send("v", kRecords);
  ExpectAllDelivered("v", kRecords, /*max_duplicates=*/4 * 8 * 100);
  EXPECT_EQ(Failures("INTERNAL"), 4) << daemon_->log().substr(0, 4000);
  EXPECT_EQ(Metric("zerobusd_acked_records_total", "route=\"readings\""), kRecords)
      << "a bad ACK released nothing";
}

TEST_F(ResilienceTest, CloseStreamSignalRotatesWithoutCountingAFailure) {
  Start(R"({"default":{"streams":[{"close_after_requests":4,"close_grace_ms":500},
                                  {"close_after_ms":300,"close_grace_ms":300,"close_code":"OK"}]}})");
  Send("r", kRecords);
  ExpectAllDelivered("r", kRecords, /*max_duplicates=*/0);
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_stream_rotations_total", "route=\"readings\"") == 2; },
                      std::chrono::seconds(10)));
  EXPECT_EQ(Failures("UNAVAILABLE"), 0);
  EXPECT_EQ(Failures("OK"), 0);
  EXPECT_EQ(server_->Stat("close_signals_sent"), 2);
}

TEST_F(ResilienceTest, ResourceExhaustedThrottlingIsRetried) {
  Start(R"({"default":{"streams":[{"create_error":"RESOURCE_EXHAUSTED","create_message":"Too many streams"},
                                  {"abort_after_requests":3,"abort_code":"RESOURCE_EXHAUSTED"},
                                  {"create_error":"RESOURCE_EXHAUSTED"}]}})");
  Send("t", kRecords);
  ExpectAllDelivered("t", kRecords, /*max_duplicates=*/3 * 100);
  EXPECT_EQ(Failures("RESOURCE_EXHAUSTED"), 3);
}

TEST_F(ResilienceTest, ShortLivedTokensAreRefreshedBeforeTheyExpire) {
  // Tokens live 2 s; every stream ends 300 ms after it opens, so records
  // sent over a few seconds need several streams, and later ones a fresh
  // token: the cache renews it before expiry, so none is ever refused.
  Start(R"({"default":{"then":{"close_after_ms":300,"close_grace_ms":100,"close_code":"OK"}}})",
        {"--token-ttl-s", "2"});
  int rounds = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string prefix = absl::StrCat("e", rounds++);
        Send(prefix, 50);
        ExpectAllDelivered(prefix, 50, 0);
        return server_->Stat("tokens_issued") >= 3;
      },
      std::chrono::seconds(40)))
      << daemon_->log().substr(0, 4000);
  EXPECT_EQ(Failures("UNAUTHENTICATED"), 0) << "an expired token was used";
  EXPECT_EQ(Metric("zerobusd_lane_parked", "route=\"readings\""), 0);
}

TEST_F(ResilienceTest, TokenEndpointOutagesAreRetriedAndARefusalParksUntilSighup) {
  Start(R"({"token":{"responses":[{"status":503},{"status":429},{"status":500},{"status":401}]}})");
  Send("o", kRecords);
  // 503, 429 and 500 are retried; 401 is the operator's business.
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_lane_parked", "route=\"readings\"") == 1; },
                      std::chrono::seconds(20)))
      << daemon_->log().substr(0, 4000);
  EXPECT_EQ(Metric("zerobusd_token_fetch_failures_total", "route=\"readings\",table=\"main.edge.readings\""), 4);
  EXPECT_NE(daemon_->log().find("parked: the OAuth token endpoint refused"), std::string::npos);
  EXPECT_EQ(Metric("zerobusd_spool_records", "route=\"readings\""), kRecords) << "a parked route keeps its records";
  // The operator fixes the credentials and reloads.
  ASSERT_TRUE(server_->SetFaults("{}"));
  daemon_->process()->Signal(SIGHUP);
  ExpectAllDelivered("o", kRecords, /*max_duplicates=*/0);
  EXPECT_EQ(Metric("zerobusd_lane_parked", "route=\"readings\""), 0);
}

TEST_F(ResilienceTest, AnExpiredOrRevokedTokenGetsOneFreshRetryThenParks) {
  // The second stream ends (a clean rotation) once its records are in, so
  // the next records need a new stream.
  Start(R"({"default":{"streams":[{"create_error":"UNAUTHENTICATED"},
                                  {"close_after_ms":300,"close_grace_ms":100,"close_code":"OK"},
                                  {"create_error":"PERMISSION_DENIED"},{"create_error":"PERMISSION_DENIED"}]}})");
  Send("u1", 100);
  ExpectAllDelivered("u1", 100, 0);  // one refusal, one fresh token: fine
  EXPECT_EQ(Failures("UNAUTHENTICATED"), 1);
  ASSERT_TRUE(WaitFor([&] { return daemon_->Control(R"({"cmd":"status"})").find("\"state\":\"idle\"") !=
                                   std::string::npos; },
                      std::chrono::seconds(10)));
  // Now the service principal loses its grant: two refusals in a row park.
  Send("u2", 100);
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_lane_parked", "route=\"readings\"") == 1; },
                      std::chrono::seconds(20)))
      << daemon_->log().substr(0, 4000);
  const std::string status = daemon_->Control(R"({"cmd":"status"})");
  EXPECT_NE(status.find("\"state\":\"parked\""), std::string::npos) << status;
  EXPECT_NE(status.find("MODIFY grants"), std::string::npos) << status;
  EXPECT_NE(daemon_->Control(R"({"cmd":"resume"})").find("\"resumed\":1"), std::string::npos);
  ExpectAllDelivered("u2", 100, 0);
}

TEST_F(ResilienceTest, TableLevelRefusalParksTheRouteAndOtherRoutesKeepFlowing) {
  DaemonOptions o;
  o.extra_yaml = kFastDrain;
  o.routes_yaml =
      "routes:\n  - name: readings\n    table: main.edge.readings\n"
      "  - name: gone\n    table: main.edge.gone\n";
  ASSERT_NO_FATAL_FAILURE(StartBoth(R"({"tables":{"main.edge.gone":{"then":{"create_error":"NOT_FOUND",
      "create_message":"Table main.edge.gone does not exist"}}}})",
                                    {}, std::move(o)));
  Send("g", 500, "gone");
  Send("ok", kRecords);
  ExpectAllDelivered("ok", kRecords);
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_lane_parked", "route=\"gone\"") == 1; },
                      std::chrono::seconds(20)));
  EXPECT_EQ(Metric("zerobusd_spool_records", "route=\"gone\""), 500);
  EXPECT_NE(daemon_->log().find("check that the table exists"), std::string::npos);
}

TEST_F(ResilienceTest, APoisonRecordIsDeadLetteredTheRestFlowsAndReplayDeliversItOnceFixed) {
  Start(R"({"default":{"poison":"POISON"}})");
  // Records p-1234 and p-2000 carry the poison.
  const Delivery d = SendWithPoisonAndWait("p", kRecords, {1234, 2000});
  ASSERT_EQ(d.missing, 2);
  EXPECT_EQ(d.first_missing, "p-1234");
  EXPECT_EQ(Metric("zerobusd_dead_letter_records_total", "route=\"readings\""), 2);
  EXPECT_EQ(Metric("zerobusd_dead_letter_store_records"), 2);

  RunResult list = daemon_->Ctl({"dlq", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("INVALID_ARGUMENT"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("2 dead letters shown"), std::string::npos) << list.output;
  RunResult page = daemon_->Ctl({"dlq", "list", "--limit", "1"});
  EXPECT_NE(page.output.find("more with --from-id 2"), std::string::npos) << page.output;

  // The operator decides p-2000 is garbage.
  RunResult purge = daemon_->Ctl({"dlq", "purge", "--id", "2"});
  ASSERT_EQ(purge.exit_code, 0) << purge.output;
  EXPECT_NE(purge.output.find("purged 1 records"), std::string::npos) << purge.output;
  RunResult show = daemon_->Ctl({"dlq", "show", "1"});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("\"id\":\"p-1234\""), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("injected poison record"), std::string::npos) << show.output;
  // The server's structured reason (google.rpc.ErrorInfo) reached the dead
  // letter, so the operator sees which check failed.
  EXPECT_NE(show.output.find("reason:         SCHEMA_VALIDATION_FAILED (causes: TYPE_INCOMPATIBLE, error_code: 4000)"),
            std::string::npos)
      << show.output;
  EXPECT_NE(show.output.find("table:          main.edge.readings"), std::string::npos) << show.output;

  // The table is fixed; the operator replays the dead letter.
  ASSERT_TRUE(server_->SetFaults("{}"));
  RunResult replay = daemon_->Ctl({"dlq", "replay", "--route", "readings"});
  ASSERT_EQ(replay.exit_code, 0) << replay.output;
  EXPECT_NE(replay.output.find("replayed 1 records"), std::string::npos) << replay.output;
  ASSERT_TRUE(WaitFor([&] { return RowIds(server_->Rows(kTable)).count("p-1234") == 1; }, std::chrono::seconds(30)));
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_spool_records", "route=\"readings\"") == 0; },
                      std::chrono::seconds(30)));
  const Delivery after = CheckDelivery(*server_, kTable, "p", kRecords);
  EXPECT_EQ(after.missing, 1);
  EXPECT_EQ(after.first_missing, "p-2000") << "purged for good";
  EXPECT_EQ(after.duplicates, 0);
  EXPECT_EQ(Metric("zerobusd_dead_letter_store_records"), 0);
  EXPECT_EQ(daemon_->Ctl({"dlq", "purge"}).exit_code, 2) << "purge never acts on everything by default";
}

}  // namespace
}  // namespace zb::testing
