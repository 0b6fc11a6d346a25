// The drain lane against a real RocksDB spool and a scripted fake stream:
// ACK -> delete, rewind and resend after failures, ACK validation, rotation.

#include "drain/drain_lane.h"

#include "../fakes/fakes.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

using zb::testing::FakeCall;
using zb::testing::FakeStreamFactory;
using zb::testing::FakeTokenSource;

class DrainLaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SpoolOptions so;
    so.path = dir_.Sub("spool");
    spool_ = std::move(OpenRocksDbSpool(so)).value();
    metrics_ = MakePrometheusMetrics();
  }

  void MakeLane(uint32_t max_inflight = 4, uint32_t max_batch = 3) {
    DrainLaneOptions o;
    o.route = "r";
    o.table = "main.edge.t";
    o.max_inflight_requests = max_inflight;
    o.max_batch_records = max_batch;
    o.backoff.initial = std::chrono::milliseconds(1);
    o.backoff.max = std::chrono::milliseconds(5);
    o.backoff.min_delay = std::chrono::milliseconds(1);
    o.ack_timeout = std::chrono::milliseconds(200);
    lane_ = std::make_shared<DrainLane>(loop_, o, *spool_, streams_, tokens_, *metrics_);
  }

  void Append(int n) {
    std::vector<std::string> recs;
    for (int i = 0; i < n; ++i) recs.push_back("{\"i\":" + std::to_string(next_++) + "}");
    auto r = spool_->Append("r", recs);
    ASSERT_TRUE(r.ok());
    lane_->OnAppended(r->last_seq);
  }

  // Runs the loop until `cond` holds (deadline-bounded).
  bool RunUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      loop_.restart();
      loop_.run_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  std::shared_ptr<FakeCall> call(size_t i) { return streams_.calls.at(i); }

  void Emit(const std::shared_ptr<FakeCall>& c, StreamEvent::Kind kind, int64_t offset = -1) {
    StreamEvent ev;
    ev.kind = kind;
    ev.offset = offset;
    ev.text = "stream-x";
    c->emit(ev);
  }

  void EmitDone(const std::shared_ptr<FakeCall>& c, absl::Status s) {
    StreamEvent ev;
    ev.kind = StreamEvent::Kind::kDone;
    ev.status = std::move(s);
    c->emit(ev);
  }

  // Spool reads are asynchronous: runs the loop until the lane has sent
  // everything it will send without a new event.
  bool Settle() { return RunUntil([&] { return !lane_->busy_for_test(); }); }

  size_t TotalWritten(const std::shared_ptr<FakeCall>& c) {
    size_t n = 0;
    for (auto& w : c->writes) n += w.second.size();
    return n;
  }

  zb::testing::TempDir dir_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<Metrics> metrics_;
  boost::asio::io_context loop_;
  FakeStreamFactory streams_;
  FakeTokenSource tokens_;
  std::shared_ptr<DrainLane> lane_;
  int next_ = 0;
};

TEST_F(DrainLaneTest, SendsBatchesWithWireOffsetsFromZeroAndDeletesOnlyWhatAnAckCovers) {
  MakeLane(/*max_inflight=*/4, /*max_batch=*/3);
  Append(7);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  EXPECT_EQ(call(0)->params.table, "main.edge.t");
  EXPECT_EQ(call(0)->params.token, "tok-main.edge.t");
  EXPECT_TRUE(call(0)->writes.empty()) << "nothing is sent before create_stream_response";
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(0)->writes.size(), 3u);  // 3 + 3 + 1 records
  EXPECT_EQ(call(0)->writes[0].first, 0);
  EXPECT_EQ(call(0)->writes[2].first, 2);
  EXPECT_EQ(call(0)->writes[2].second.size(), 1u);
  Emit(call(0), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(RunUntil([&] { return spool_->Stats("r").records == 4; }));
  EXPECT_EQ(spool_->Stats("r").deleted_up_to, 3u);
  Emit(call(0), StreamEvent::Kind::kAck, 2);
  ASSERT_TRUE(RunUntil([&] { return spool_->Stats("r").records == 0; }));
  EXPECT_EQ(lane_->inflight_requests(), 0u);
  EXPECT_EQ(zb::testing::MetricValue(metrics_->Exposition(), "zerobusd_inflight_requests", "route=\"r\"").value_or(-1), 0)
      << "the gauge follows the window down to zero";
}

TEST_F(DrainLaneTest, WindowBoundsRequestsInFlight) {
  MakeLane(/*max_inflight=*/2, /*max_batch=*/1);
  Append(5);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  EXPECT_EQ(call(0)->writes.size(), 2u);
  Emit(call(0), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(Settle());
  EXPECT_EQ(call(0)->writes.size(), 3u);
  EXPECT_EQ(lane_->inflight_requests(), 2u);
}

TEST_F(DrainLaneTest, StreamFailureRewindsToLowestUnackedAndResendsWithFreshOffsets) {
  MakeLane(4, 2);
  Append(6);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(0)->writes.size(), 3u);
  Emit(call(0), StreamEvent::Kind::kAck, 0);  // records 1-2 durable
  EmitDone(call(0), absl::UnavailableError("connection reset"));
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(1)->writes.size(), 2u);
  EXPECT_EQ(call(1)->writes[0].first, 0);
  EXPECT_EQ(call(1)->writes[0].second[0], "{\"i\":2}") << "resumes at the first unacked record";
  EXPECT_EQ(spool_->Stats("r").records, 4u);
  auto exposition = metrics_->Exposition();
  EXPECT_EQ(zb::testing::MetricValue(exposition, "zerobusd_stream_failures_total",
                                     "code=\"UNAVAILABLE\",route=\"r\"").value_or(-1), 1);
}

TEST_F(DrainLaneTest, InvalidAckIsAProtocolErrorThatReopensTheStream) {
  MakeLane(4, 1);
  Append(2);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  Emit(call(0), StreamEvent::Kind::kAck, 5);  // beyond what was sent
  EXPECT_TRUE(call(0)->cancelled);
  EXPECT_EQ(spool_->Stats("r").records, 2u) << "a bad ack deletes nothing";
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  Emit(call(1), StreamEvent::Kind::kAck, 1);
  ASSERT_TRUE(RunUntil([&] { return spool_->Stats("r").records == 0; }));
}

TEST_F(DrainLaneTest, AckTimeoutWhileRequestsAreInFlightReopens) {
  MakeLane(4, 1);
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));  // after the 200 ms ack timeout
  EXPECT_TRUE(call(0)->cancelled);
  auto exposition = metrics_->Exposition();
  EXPECT_EQ(zb::testing::MetricValue(exposition, "zerobusd_stream_failures_total",
                                     "code=\"DEADLINE_EXCEEDED\",route=\"r\"").value_or(-1), 1);
}

TEST_F(DrainLaneTest, CloseSignalStopsSendingDrainsAcksThenRotatesWithoutCountingAFailure) {
  MakeLane(2, 1);
  Append(4);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(0)->writes.size(), 2u);
  StreamEvent sig;
  sig.kind = StreamEvent::Kind::kCloseSignal;
  sig.grace = std::chrono::seconds(30);
  call(0)->emit(sig);
  Emit(call(0), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(Settle());
  EXPECT_EQ(call(0)->writes.size(), 2u) << "no new requests after CloseStreamSignal";
  Emit(call(0), StreamEvent::Kind::kAck, 1);
  EXPECT_TRUE(call(0)->writes_done);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(1)->writes.size(), 2u);
  EXPECT_EQ(call(1)->writes[0].second[0], "{\"i\":2}");
  auto exposition = metrics_->Exposition();
  EXPECT_FALSE(zb::testing::MetricValue(exposition, "zerobusd_stream_failures_total",
                                        "code=\"OK\",route=\"r\"").ok());
  EXPECT_EQ(zb::testing::MetricValue(exposition, "zerobusd_stream_rotations_total", "route=\"r\"").value_or(-1), 1);
}

TEST_F(DrainLaneTest, TokenFailureBacksOffAndRetries) {
  MakeLane();
  tokens_.next_error = absl::UnavailableError("token endpoint 503");
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return tokens_.requests.size() >= 3; }));
  EXPECT_TRUE(streams_.calls.empty());
  tokens_.next_error = absl::OkStatus();
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
}

TEST_F(DrainLaneTest, ResumesFromTheSpoolAfterRestart) {
  MakeLane(4, 10);
  Append(5);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  lane_.reset();  // the daemon died: nothing was acked
  MakeLane(4, 10);
  lane_->Start();
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(TotalWritten(call(1)), 5u);
}

TEST_F(DrainLaneTest, PartialBatchesLingerWhileRequestsAreInFlight) {
  MakeLane(/*max_inflight=*/4, /*max_batch=*/4);
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(0)->writes.size(), 1u) << "an idle lane sends a lone record at once";
  Append(1);
  Append(1);
  EXPECT_TRUE(lane_->busy_for_test()) << "a partial batch waits while a request is in flight";
  EXPECT_EQ(call(0)->writes.size(), 1u);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(0)->writes.size(), 2u);
  EXPECT_EQ(call(0)->writes[1].second.size(), 2u) << "records that came during the linger go as one request";
  Append(5);  // a full batch does not wait
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes.size() == 3; }));
  EXPECT_EQ(call(0)->writes[2].second.size(), 4u);
}

TEST_F(DrainLaneTest, StopWaitsForInflightAcksThenHalfCloses) {
  MakeLane(4, 1);
  Append(2);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  bool stopped = false;
  lane_->Stop([&] { stopped = true; });
  Append(1);  // appended during stop: stays spooled, not sent
  ASSERT_TRUE(Settle());
  EXPECT_EQ(call(0)->writes.size(), 2u);
  EXPECT_FALSE(call(0)->writes_done);
  Emit(call(0), StreamEvent::Kind::kAck, 1);
  EXPECT_TRUE(call(0)->writes_done);
  EmitDone(call(0), absl::OkStatus());
  EXPECT_TRUE(stopped);
  ASSERT_TRUE(RunUntil([&] { return spool_->Stats("r").records == 1; }));
}

}  // namespace
}  // namespace zb
