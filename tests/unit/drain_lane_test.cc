// The drain lane against a real RocksDB spool and a scripted fake stream:
// ACK -> delete, rewind and resend after failures, ACK validation, rotation.

#include "drain/drain_lane.h"

#include <boost/asio/post.hpp>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <type_traits>

#include "../fakes/fakes.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rpc_status.pb.h"
#include "spool/dead_letters.h"
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

  static constexpr std::chrono::seconds kAckTimeout{60};

  // Lets MakeLane's ACK timeout pass on the lane's clock.
  void PassAckTimeout() {
    MonotonicClock::AdvanceForTest(kAckTimeout + std::chrono::seconds(1));
    WakeTimersForTest(loop_);
  }

  void MakeLane(uint32_t max_inflight = 4, uint32_t max_batch = 3,
                const std::function<void(DrainLaneOptions&)>& tweak = nullptr) {
    DrainLaneOptions o;
    o.route = "r";
    o.table = "main.edge.t";
    o.max_inflight_requests = max_inflight;
    o.max_batch_records = max_batch;
    o.backoff.initial = std::chrono::milliseconds(1);
    o.backoff.max = std::chrono::milliseconds(5);
    o.backoff.min_delay = std::chrono::milliseconds(1);
    // On the lane's clock: a test that wants it to pass moves the clock
    // (PassAckTimeout); a slow machine never makes it pass by itself.
    o.ack_timeout = kAckTimeout;
    o.rotation_drain = std::chrono::milliseconds(100);
    if (tweak) tweak(o);
    lane_ = std::make_shared<DrainLane>(loop_, o, *spool_, streams_, tokens_, *metrics_);
  }

  void Append(int n, const std::set<int>& poison = {}) {
    std::vector<std::string> recs;
    for (int i = 0; i < n; ++i) {
      const int id = next_++;
      recs.push_back(poison.count(id) ? "{\"i\":" + std::to_string(id) + ",\"poison\":true}"
                                      : "{\"i\":" + std::to_string(id) + "}");
    }
    auto r = spool_->Append("r", recs);
    ASSERT_TRUE(r.ok());
    // The spool queued its notification on the loop before answering the
    // append: the lane hears of the records now.
    loop_.restart();
    loop_.poll();
  }

  // Runs `f` on the loop and returns what it returns. The loop runs on this
  // thread, a step at a time; the lane's methods and the events a stream
  // delivers to it must run inside it (ZB_CHECK_ON_LOOP), not between steps.
  // Handlers already due run first, as they would in the daemon. Never call
  // it from a handler (the loop does not nest).
  template <typename F>
  auto OnLoop(F f) {
    using R = std::invoke_result_t<F&>;
    bool done = false;
    if constexpr (std::is_void_v<R>) {
      boost::asio::post(loop_, [&] {
        f();
        done = true;
      });
      loop_.restart();
      while (!done) loop_.run_one();
    } else {
      std::optional<R> result;
      boost::asio::post(loop_, [&] {
        result.emplace(f());
        done = true;
      });
      loop_.restart();
      while (!done) loop_.run_one();
      return std::move(*result);
    }
  }

  // Runs the loop until `cond` holds (deadline-bounded); `cond` runs on the
  // loop, so it may read the lane.
  bool RunUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!OnLoop(cond)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      loop_.restart();
      loop_.run_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  // The lane's reads, taken on the loop.
  LaneState State() { return OnLoop([&] { return lane_->state(); }); }
  std::string ParkedReason() { return OnLoop([&] { return lane_->parked_reason(); }); }
  RouteHealth Health() { return OnLoop([&] { return lane_->health(); }); }

  std::shared_ptr<FakeCall> call(size_t i) { return streams_.calls.at(i); }

  // Delivers `ev` as the stream would: on the loop.
  void Deliver(const std::shared_ptr<FakeCall>& c, const StreamEvent& ev) {
    OnLoop([&] { c->emit(ev); });
  }

  void Emit(const std::shared_ptr<FakeCall>& c, StreamEvent::Kind kind, int64_t offset = -1) {
    StreamEvent ev;
    ev.kind = kind;
    ev.offset = offset;
    ev.text = "stream-x";
    Deliver(c, ev);
  }

  void EmitDone(const std::shared_ptr<FakeCall>& c, absl::Status s) {
    StreamEvent ev;
    ev.kind = StreamEvent::Kind::kDone;
    ev.status = std::move(s);
    Deliver(c, ev);
  }

  // Spool reads are asynchronous: runs the loop until the lane has sent
  // everything it will send without a new event.
  bool Settle() { return RunUntil([&] { return !lane_->busy_for_test(); }); }

  // Plays a server that refuses any request holding a "poison" record with
  // INVALID_ARGUMENT (ending the stream) and acks every other request, until
  // `done` holds. Returns the records it acked, in order.
  std::vector<std::string> Serve(const std::function<bool()>& done) {
    std::vector<std::string> delivered;
    auto& handled = served_;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!OnLoop(done) && std::chrono::steady_clock::now() < deadline) {
      RunUntil([] { return true; });
      loop_.restart();
      loop_.run_for(std::chrono::milliseconds(2));
      if (streams_.calls.empty()) continue;
      auto c = streams_.calls.back();
      if (c->cancelled || c->destroyed || c->writes_done) continue;
      if (handled.count(c.get()) == 0) {
        handled[c.get()] = 0;
        Emit(c, StreamEvent::Kind::kCreated);
        continue;
      }
      size_t& next = handled[c.get()];
      while (next < c->writes.size()) {
        const auto& [offset, records] = c->writes[next++];
        bool poison = false;
        for (const auto& r : records) poison |= r.find("poison") != std::string::npos;
        if (poison) {
          EmitDone(c, absl::InvalidArgumentError("record failed schema validation. Error Code: 4000"));
          break;
        }
        for (const auto& r : records) delivered.push_back(r);
        Emit(c, StreamEvent::Kind::kAck, offset);
      }
    }
    return delivered;
  }

  double Metric(const std::string& name, const std::string& labels = "route=\"r\"") {
    return zb::testing::MetricValue(metrics_->Exposition(), name, labels).value_or(-1);
  }

  size_t TotalWritten(const std::shared_ptr<FakeCall>& c) {
    size_t n = 0;
    for (auto& w : c->writes) n += w.second.size();
    return n;
  }

  zb::testing::TempDir dir_;
  boost::asio::io_context loop_;  // outlives spool_: its reader thread's callbacks post here
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<Metrics> metrics_;
  FakeStreamFactory streams_;
  FakeTokenSource tokens_;
  std::shared_ptr<DrainLane> lane_;
  int next_ = 0;
  std::map<FakeCall*, size_t> served_;  // Serve(): requests answered per call
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
  EXPECT_EQ(OnLoop([&] { return lane_->inflight_requests(); }), 0u);
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
  EXPECT_EQ(OnLoop([&] { return lane_->inflight_requests(); }), 2u);
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
  ASSERT_TRUE(Settle());  // the request is out and its ACK timer runs
  PassAckTimeout();
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
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
  Deliver(call(0), sig);
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
  OnLoop([&] { lane_->Start(); });
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(TotalWritten(call(1)), 5u);
}

TEST_F(DrainLaneTest, PartialBatchesLingerWhileRequestsAreInFlight) {
  // The linger is on the lane's clock: it ends when the test moves it, not
  // when a slow machine takes longer than it between two appends.
  constexpr std::chrono::seconds kLinger{10};
  MakeLane(/*max_inflight=*/4, /*max_batch=*/4, [&](DrainLaneOptions& o) { o.linger = kLinger; });
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(0)->writes.size(), 1u) << "an idle lane sends a lone record at once";
  Append(1);
  Append(1);
  EXPECT_TRUE(OnLoop([&] { return lane_->busy_for_test(); }))
      << "a partial batch waits while a request is in flight";
  EXPECT_EQ(call(0)->writes.size(), 1u);
  MonotonicClock::AdvanceForTest(kLinger);
  WakeTimersForTest(loop_);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(0)->writes.size(), 2u);
  EXPECT_EQ(call(0)->writes[1].second.size(), 2u) << "records that came during the linger go as one request";
  Append(5);  // a full batch does not wait
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes.size() == 3; }));
  EXPECT_EQ(call(0)->writes[2].second.size(), 4u);
}

// Memory is bounded by configuration, not by how far the transport falls
// behind: requests gRPC has not taken yet are not read while
// kMaxQueuedRequests of them wait, however many more the window allows.
TEST_F(DrainLaneTest, HoldsNoMoreThanAFewRequestsTheTransportHasNotTaken) {
  MakeLane(/*max_inflight=*/16, /*max_batch=*/1);
  Append(6);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  call(0)->queue_writes = true;  // the transport takes nothing: requests pile up
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  EXPECT_EQ(call(0)->writes.size(), kMaxQueuedRequests);
  // One write ends: the lane reads and hands over one more.
  call(0)->queued -= 1;
  Emit(call(0), StreamEvent::Kind::kWriteDone);
  ASSERT_TRUE(Settle());
  EXPECT_EQ(call(0)->writes.size(), kMaxQueuedRequests + 1);
  // A failed write sends nothing more (kDone follows).
  call(0)->queued -= 1;
  StreamEvent failed;
  failed.kind = StreamEvent::Kind::kWriteDone;
  failed.ok = false;
  Deliver(call(0), failed);
  ASSERT_TRUE(Settle());
  EXPECT_EQ(call(0)->writes.size(), kMaxQueuedRequests + 1);
  // The transport keeps up again: the rest goes, each in its own request.
  call(0)->queue_writes = false;
  call(0)->queued = 0;
  Emit(call(0), StreamEvent::Kind::kWriteDone);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes.size() == 6; }));
  EXPECT_EQ(call(0)->writes[5].first, 5);
}

// Under zerobus.stream_quota the lane sends half a second's worth at once,
// then at the quota's pace, on its clock, in requests no larger than that;
// a RESOURCE_EXHAUSTED halves the pace for the next stream, which starts
// with empty buckets and smaller requests.
TEST_F(DrainLaneTest, RequestsArePacedUnderTheStreamQuota) {
  MakeLane(/*max_inflight=*/16, /*max_batch=*/8, [](DrainLaneOptions& o) {
    o.stream_quota = StreamQuota{.rows_per_second = 10, .bytes_per_second = 1'000'000};
  });
  const auto paced = [&] { return OnLoop([&] { return lane_->paced_for_test(); }); };
  Append(30);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(RunUntil(paced));
  ASSERT_EQ(call(0)->writes.size(), 1u) << "5 rows: half a second's worth at once";
  EXPECT_EQ(call(0)->writes[0].second.size(), 5u) << "max_batch 8, but no more than the buckets hold";
  // The next waits half a second, less what the buckets refilled in real
  // time since (the pace runs on the steady clock).
  EXPECT_LE(Metric("zerobusd_paced_seconds_total"), 0.5 + 1e-6);
  EXPECT_GT(Metric("zerobusd_paced_seconds_total"), 0.4);
  MonotonicClock::AdvanceForTest(std::chrono::milliseconds(500));
  WakeTimersForTest(loop_);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes.size() == 2; }));
  ASSERT_TRUE(RunUntil(paced));

  EmitDone(call(0), absl::ResourceExhaustedError("Stream quota exceeded"));
  EXPECT_EQ(Metric("zerobusd_stream_failures_total", "code=\"RESOURCE_EXHAUSTED\",route=\"r\""), 1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  const double paced_before = Metric("zerobusd_paced_seconds_total");
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(RunUntil(paced));
  EXPECT_TRUE(call(1)->writes.empty()) << "empty buckets: even the first request waits";
  // Half the pace: 2 rows a request (what its buckets hold), 0.4 s each
  // (less what refilled since the trip; the full pace would wait 0.2 s).
  EXPECT_LE(Metric("zerobusd_paced_seconds_total") - paced_before, 0.4 + 1e-6);
  EXPECT_GT(Metric("zerobusd_paced_seconds_total") - paced_before, 0.3);
  MonotonicClock::AdvanceForTest(std::chrono::milliseconds(400));
  WakeTimersForTest(loop_);
  ASSERT_TRUE(RunUntil([&] { return call(1)->writes.size() == 1; }));
  EXPECT_EQ(call(1)->writes[0].second.size(), 2u);
  EXPECT_EQ(call(1)->writes[0].first, 0) << "a new stream starts at wire offset 0";
  EXPECT_EQ(call(1)->writes[0].second.front(), "{\"i\":0}") << "from the first unacked record";
}

// At the byte quota's limit: a record larger than what the pace's buckets
// hold still goes, alone, once they are full, and the next waits for the
// debt it left.
TEST_F(DrainLaneTest, ARecordLargerThanThePacesBucketsGoesAloneOnceTheyAreFull) {
  MakeLane(/*max_inflight=*/16, /*max_batch=*/8, [](DrainLaneOptions& o) {
    o.stream_quota = StreamQuota{.rows_per_second = 1000, .bytes_per_second = 1024};  // buckets: 512 bytes
  });
  const std::string big = absl::StrCat(R"({"p":")", std::string(600, 'x'), R"("})");
  ASSERT_TRUE(spool_->Append("r", std::vector<std::string>{big, big}).ok());
  loop_.restart();
  loop_.poll();
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  const auto paced = [&] { return OnLoop([&] { return lane_->paced_for_test(); }); };
  ASSERT_TRUE(RunUntil(paced));
  ASSERT_EQ(call(0)->writes.size(), 1u);
  EXPECT_EQ(call(0)->writes[0].second.size(), 1u) << "alone";
  // The debt (the request as encoded, 634 bytes, less the 512 it found)
  // and a full bucket again: 634 bytes at 1,024 a second.
  EXPECT_LE(Metric("zerobusd_paced_seconds_total"), 0.62 + 1e-3);
  EXPECT_GT(Metric("zerobusd_paced_seconds_total"), 0.5);
  MonotonicClock::AdvanceForTest(std::chrono::seconds(1));
  WakeTimersForTest(loop_);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes.size() == 2; }));
  EXPECT_EQ(call(0)->writes[1].second.size(), 1u);
}

// Several streams: a lane whose first stream is held by its pace, with more
// records waiting than it carries, opens another. The pace here is one
// byte a second, so every request is one record and the next waits for
// about half a minute on the lane's clock: only the test moves it on
// (Step), however slow the machine.
class MultiStreamLaneTest : public DrainLaneTest {
 protected:
  static constexpr std::chrono::seconds kPaceStep{40};

  // 30 records, at most two streams. Leaves stream 0 with seq 1 in flight
  // and seq 2 held for the pace, stream 1 with seq 3 in flight (and seq 4
  // held once its read is back).
  void OpenTwoStreams() {
    MakeLane(/*max_inflight=*/16, /*max_batch=*/8, [&](DrainLaneOptions& o) {
      o.stream_quota = StreamQuota{.rows_per_second = 1'000'000, .bytes_per_second = 1};
      o.max_streams = 2;
      o.stream_idle_close = std::chrono::seconds(10);
      o.ack_timeout = std::chrono::hours(1);
      o.create_timeout = std::chrono::hours(1);
    });
    Append(30);
    ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
    Emit(call(0), StreamEvent::Kind::kCreated);
    // Held by its pace with 28 records waiting, more than it carries: a
    // second stream opens.
    ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
    ASSERT_EQ(call(0)->writes.size(), 1u);
    EXPECT_EQ(call(0)->writes[0].second, std::vector<std::string>{"{\"i\":0}"});
    Emit(call(1), StreamEvent::Kind::kCreated);
    ASSERT_TRUE(RunUntil([&] { return call(1)->writes.size() == 1; }));
    EXPECT_EQ(call(1)->writes[0].first, 0) << "each stream has its own wire offsets";
    EXPECT_EQ(call(1)->writes[0].second, std::vector<std::string>{"{\"i\":2}"}) << "seq 2 is held by stream 0";
    EXPECT_EQ(OnLoop([&] { return lane_->open_streams(); }), 2u);
  }

  // Lets one pace step pass on the lane's clock.
  void Step() {
    MonotonicClock::AdvanceForTest(kPaceStep);
    WakeTimersForTest(loop_);
  }

  bool SpoolHolds(uint64_t records, SeqNo deleted_up_to) {
    return RunUntil([&] {
      const LaneStats st = spool_->Stats("r");
      return st.records == records && st.deleted_up_to == deleted_up_to;
    });
  }

  std::vector<std::string> Ids(const std::shared_ptr<FakeCall>& c) {
    std::vector<std::string> all;
    for (const auto& w : c->writes) all.insert(all.end(), w.second.begin(), w.second.end());
    return all;
  }
};

TEST_F(MultiStreamLaneTest, EachStreamsAckDeletesExactlyItsSpanInWhateverOrderTheAcksCome) {
  ASSERT_NO_FATAL_FAILURE(OpenTwoStreams());
  EXPECT_EQ(Metric("zerobusd_open_streams"), 2);
  EXPECT_EQ(streams_.calls.size(), 2u) << "max_streams: 2";
  Emit(call(1), StreamEvent::Kind::kAck, 0);  // seq 3, before seq 1
  ASSERT_TRUE(SpoolHolds(29, 0)) << spool_->Stats("r").records;
  EXPECT_EQ(OnLoop([&] { return lane_->acked_seq(); }), 0u) << "seq 1 and 2 are not acked yet";
  Emit(call(0), StreamEvent::Kind::kAck, 0);  // seq 1: the lowest gap closes up to it
  ASSERT_TRUE(SpoolHolds(28, 1)) << spool_->Stats("r").deleted_up_to;
  EXPECT_EQ(OnLoop([&] { return lane_->acked_seq(); }), 1u);
  EXPECT_EQ(Metric("zerobusd_stream_acked_records_total", "route=\"r\",stream=\"0\""), 1);
  EXPECT_EQ(Metric("zerobusd_stream_acked_records_total", "route=\"r\",stream=\"1\""), 1);
  EXPECT_EQ(Metric("zerobusd_acked_records_total"), 2);
}

TEST_F(MultiStreamLaneTest, AFailedStreamsSpansGoBackAndAnotherStreamResendsThemFirst) {
  ASSERT_NO_FATAL_FAILURE(OpenTwoStreams());
  // Stream 1 fails with seq 3 in flight (and seq 4 held, or on its way).
  EmitDone(call(1), absl::UnavailableError("connection reset"));
  EXPECT_EQ(Metric("zerobusd_resent_records_total"), 1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 3; }));  // it reconnects (never created here)
  EXPECT_EQ(State(), LaneState::kStreaming) << "the other stream goes on";
  // Stream 0 sends its held seq 2, then what stream 1 gave back, lowest
  // first, then fresh records.
  for (size_t writes = 2; writes <= 5; ++writes) {
    Step();
    ASSERT_TRUE(RunUntil([&] { return call(0)->writes.size() == writes; })) << writes;
  }
  EXPECT_EQ(Ids(call(0)), (std::vector<std::string>{"{\"i\":0}", "{\"i\":1}", "{\"i\":2}", "{\"i\":3}", "{\"i\":4}"}));
  Emit(call(0), StreamEvent::Kind::kAck, 4);
  ASSERT_TRUE(SpoolHolds(25, 5));
}

TEST_F(MultiStreamLaneTest, AcksOutOfOrderSurviveARestartAndOnlyUnackedSpansAreSentAgain) {
  ASSERT_NO_FATAL_FAILURE(OpenTwoStreams());
  Emit(call(1), StreamEvent::Kind::kAck, 0);  // seq 3 acked; 1 and 2 not
  ASSERT_TRUE(SpoolHolds(29, 0));
  OnLoop([&] { lane_.reset(); });  // the daemon died
  MakeLane(/*max_inflight=*/4, /*max_batch=*/100);  // one stream, no quota
  OnLoop([&] { lane_->Start(); });
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 3; }));
  Emit(call(2), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  const std::vector<std::string> sent = Ids(call(2));
  ASSERT_EQ(sent.size(), 29u);
  EXPECT_EQ(sent[1], "{\"i\":1}");
  EXPECT_EQ(sent[2], "{\"i\":3}") << "seq 3 was acked before the crash: not sent again";
  Emit(call(2), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(SpoolHolds(0, 30));
}

TEST_F(MultiStreamLaneTest, AnIdleExtraStreamClosesWithoutAFailureAndTheOtherStaysOpen) {
  ASSERT_NO_FATAL_FAILURE(OpenTwoStreams());
  // Everything goes out, a record per stream per step, and is acked.
  for (int i = 0; i < 40 && TotalWritten(call(0)) + TotalWritten(call(1)) < 30; ++i) {
    Step();
    const size_t before = TotalWritten(call(0)) + TotalWritten(call(1));
    RunUntil([&] { return TotalWritten(call(0)) + TotalWritten(call(1)) > before; });
  }
  ASSERT_EQ(TotalWritten(call(0)) + TotalWritten(call(1)), 30u);
  Emit(call(0), StreamEvent::Kind::kAck, static_cast<int64_t>(call(0)->writes.size()) - 1);
  Emit(call(1), StreamEvent::Kind::kAck, static_cast<int64_t>(call(1)->writes.size()) - 1);
  ASSERT_TRUE(SpoolHolds(0, 30));
  EXPECT_FALSE(call(0)->writes_done || call(1)->writes_done) << "not idle long enough yet";
  MonotonicClock::AdvanceForTest(std::chrono::seconds(11));
  WakeTimersForTest(loop_);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes_done || call(1)->writes_done; }));
  const auto closing = call(0)->writes_done ? call(0) : call(1);
  const auto staying = call(0)->writes_done ? call(1) : call(0);
  EXPECT_FALSE(staying->writes_done) << "the last open stream stays";
  EmitDone(closing, absl::OkStatus());
  EXPECT_EQ(OnLoop([&] { return lane_->open_streams(); }), 1u);
  EXPECT_EQ(Metric("zerobusd_open_streams"), 1);
  EXPECT_FALSE(Health().failing());
  EXPECT_EQ(Metric("zerobusd_stream_failures_total", "code=\"OK\",route=\"r\""), -1) << "no failure counted";
  EXPECT_EQ(State(), LaneState::kStreaming);
  Step();  // the pace has room again
  Append(1);  // a new record goes on the open stream
  ASSERT_TRUE(RunUntil([&] { return Ids(staying).back() == "{\"i\":30}"; }));
}

TEST_F(MultiStreamLaneTest, AnExtraStreamWhoseServerNeverEndsItsCloseIsDroppedAfterTheGrace) {
  ASSERT_NO_FATAL_FAILURE(OpenTwoStreams());
  for (int i = 0; i < 40 && TotalWritten(call(0)) + TotalWritten(call(1)) < 30; ++i) {
    Step();
    const size_t before = TotalWritten(call(0)) + TotalWritten(call(1));
    RunUntil([&] { return TotalWritten(call(0)) + TotalWritten(call(1)) > before; });
  }
  Emit(call(0), StreamEvent::Kind::kAck, static_cast<int64_t>(call(0)->writes.size()) - 1);
  Emit(call(1), StreamEvent::Kind::kAck, static_cast<int64_t>(call(1)->writes.size()) - 1);
  MonotonicClock::AdvanceForTest(std::chrono::seconds(11));
  WakeTimersForTest(loop_);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes_done || call(1)->writes_done; }));
  const auto closing = call(0)->writes_done ? call(0) : call(1);
  // The server never ends the half-closed call: after max_close_grace it is
  // cancelled, and records that come go to a stream all the same.
  MonotonicClock::AdvanceForTest(std::chrono::seconds(11));
  WakeTimersForTest(loop_);
  ASSERT_TRUE(RunUntil([&] { return closing->cancelled; }));
  EXPECT_EQ(OnLoop([&] { return lane_->open_streams(); }), 1u);
  EXPECT_FALSE(Health().failing());
}

TEST_F(MultiStreamLaneTest, ResumeRebuildsOnlyTheStuckStreamAndLeavesTheWorkingOneAlone) {
  ASSERT_NO_FATAL_FAILURE(OpenTwoStreams());
  EmitDone(call(1), absl::UnavailableError("connection reset"));
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 3; }));  // reconnecting, never answered
  MonotonicClock::AdvanceForTest(std::chrono::seconds(6));  // 6 s connecting: stuck
  WakeTimersForTest(loop_);
  Emit(call(0), StreamEvent::Kind::kAck, 0);  // stream 0 works
  const int resets = streams_.connection_resets;
  EXPECT_TRUE(OnLoop([&] { return lane_->Resume(); }));
  EXPECT_GT(streams_.connection_resets, resets) << "a new connection for the rebuilt stream";
  EXPECT_TRUE(call(2)->cancelled);
  EXPECT_FALSE(call(0)->cancelled) << "the working stream is left alone";
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 4; }));
  EXPECT_EQ(Metric("zerobusd_resent_records_total"), 1) << "only the failed stream's record";
}

TEST_F(MultiStreamLaneTest, ACloseSignalWhileStoppingDoesNotHoldTheStopUp) {
  ASSERT_NO_FATAL_FAILURE(OpenTwoStreams());
  bool stopped = false;
  OnLoop([&] { lane_->Stop([&] { stopped = true; }); });
  StreamEvent close;
  close.kind = StreamEvent::Kind::kCloseSignal;
  close.grace = std::chrono::milliseconds(1);
  Deliver(call(0), close);
  Deliver(call(1), close);
  MonotonicClock::AdvanceForTest(std::chrono::seconds(1));
  WakeTimersForTest(loop_);
  Emit(call(0), StreamEvent::Kind::kAck, 0);
  Emit(call(1), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes_done && call(1)->writes_done; }));
  EmitDone(call(0), absl::OkStatus());
  EmitDone(call(1), absl::UnavailableError("Stream timeout reached. Error Code: 6002"));
  EXPECT_TRUE(stopped);
  EXPECT_EQ(streams_.calls.size(), 2u) << "no stream reopens while stopping";
}

TEST_F(MultiStreamLaneTest, StopWaitsForEveryStreamsAcks) {
  ASSERT_NO_FATAL_FAILURE(OpenTwoStreams());
  bool stopped = false;
  OnLoop([&] { lane_->Stop([&] { stopped = true; }); });
  EXPECT_FALSE(stopped);
  Emit(call(0), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes_done; }));
  EXPECT_FALSE(call(1)->writes_done) << "stream 1 still waits for its ACK";
  EmitDone(call(0), absl::OkStatus());
  EXPECT_FALSE(stopped);
  Emit(call(1), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(RunUntil([&] { return call(1)->writes_done; }));
  EmitDone(call(1), absl::OkStatus());
  EXPECT_TRUE(stopped);
  Step();
  loop_.restart();
  loop_.poll();
  EXPECT_EQ(call(0)->writes.size(), 1u) << "nothing held for the pace was sent";
  ASSERT_TRUE(SpoolHolds(28, 1));
}

// Records that leave the spool under the lane (drop_oldest) before it reads
// them: the read finds nothing, the lane counts them done and does not read
// again and again.
TEST_F(DrainLaneTest, RecordsDroppedBeforeTheLaneReadsThemAreSkippedWithoutSpinning) {
  MakeLane(4, 10);
  Append(10);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  ASSERT_TRUE(spool_->DeleteUpTo("r", 10).ok());  // gone before the stream is open
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle()) << "no read loop";
  EXPECT_TRUE(call(0)->writes.empty());
  EXPECT_EQ(OnLoop([&] { return lane_->acked_seq(); }), 10u);
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes.size() == 1; }));
  EXPECT_EQ(call(0)->writes[0].second, std::vector<std::string>{"{\"i\":10}"});
}

TEST_F(DrainLaneTest, StopWaitsForInflightAcksThenHalfCloses) {
  MakeLane(4, 1);
  Append(2);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  bool stopped = false;
  OnLoop([&] { lane_->Stop([&] { stopped = true; }); });
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

TEST_F(DrainLaneTest, AuthRefusalRetriesOnceAtOnceWithAFreshTokenThenParks) {
  MakeLane(4, 1, [](DrainLaneOptions& o) { o.backoff.initial = o.backoff.max = std::chrono::seconds(60); });
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  EmitDone(call(0), absl::UnauthenticatedError("token expired"));
  EXPECT_EQ(tokens_.invalidated, (std::vector<std::string>{"main.edge.t"}));
  // The retry does not wait for the (here 60 s) backoff.
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }, std::chrono::seconds(5)));
  EmitDone(call(1), absl::PermissionDeniedError("missing MODIFY privilege"));
  ASSERT_TRUE(RunUntil([&] { return lane_->state() == LaneState::kParked; }));
  EXPECT_NE(ParkedReason().find("MODIFY"), std::string::npos) << ParkedReason();
  EXPECT_NE(ParkedReason().find("grants"), std::string::npos) << ParkedReason();
  EXPECT_EQ(Metric("zerobusd_lane_parked"), 1);
  EXPECT_EQ(spool_->Stats("r").records, 1u) << "a parked lane keeps its records";
  OnLoop([&] { lane_->Resume(); });  // SIGHUP
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 3; }));
  EXPECT_EQ(Metric("zerobusd_lane_parked"), 0);
  Emit(call(2), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  Emit(call(2), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(RunUntil([&] { return spool_->Stats("r").records == 0; }));
}

TEST_F(DrainLaneTest, TableLevelRefusalParksWithoutRetryingUntilResumed) {
  MakeLane();
  Append(2);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  EmitDone(call(0), absl::NotFoundError("table main.edge.t does not exist"));
  ASSERT_TRUE(RunUntil([&] { return lane_->state() == LaneState::kParked; }));
  EXPECT_NE(ParkedReason().find("table exists"), std::string::npos) << ParkedReason();
  Append(1);  // new records are spooled, not sent
  EXPECT_EQ(State(), LaneState::kParked);
  EXPECT_EQ(streams_.calls.size(), 1u);
  OnLoop([&] { lane_->Resume(); });
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
}

// A refusal with the server's structured reason (google.rpc.ErrorInfo):
// the park reason says which check failed.
TEST_F(DrainLaneTest, AParkReasonCarriesTheServersStructuredReason) {
  MakeLane();
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  zerobusd::rpc::ErrorInfo info;
  info.set_reason("SCHEMA_VALIDATION_FAILED");
  (*info.mutable_metadata())["causes"] = "FIELD_NOT_IN_TABLE";
  (*info.mutable_metadata())["error_code"] = "8001";
  absl::Status refusal = absl::InvalidArgumentError("descriptor does not match the table");
  refusal.SetPayload(kErrorInfoPayload, absl::Cord(info.SerializeAsString()));
  EmitDone(call(0), refusal);  // at create: about the table
  ASSERT_TRUE(RunUntil([&] { return lane_->state() == LaneState::kParked; }));
  EXPECT_NE(ParkedReason().find("[SCHEMA_VALIDATION_FAILED (causes: FIELD_NOT_IN_TABLE, error_code: 8001)]"),
            std::string::npos)
      << ParkedReason();
  EXPECT_EQ(ServerErrorReason(absl::InvalidArgumentError("plain")), "") << "no reason without ErrorInfo";
}

TEST_F(DrainLaneTest, TokenEndpointRefusalParksTheLane) {
  MakeLane();
  tokens_.next_error = absl::PermissionDeniedError("HTTP 401 invalid_client");
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return lane_->state() == LaneState::kParked; }));
  EXPECT_NE(ParkedReason().find("OAuth token endpoint refused"), std::string::npos);
  EXPECT_TRUE(streams_.calls.empty());
}

TEST_F(DrainLaneTest, ARefusedRecordIsIsolatedAndDeadLetteredAndTheRestDelivered) {
  MakeLane(/*max_inflight=*/4, /*max_batch=*/8);
  Append(40, /*poison=*/{13});
  const auto delivered = Serve([&] { return spool_->Stats("r").records == 0; });
  ASSERT_EQ(spool_->Stats("r").records, 0u);
  std::set<std::string> unique(delivered.begin(), delivered.end());
  EXPECT_EQ(unique.size(), 39u) << "every other record was delivered";
  EXPECT_EQ(unique.count("{\"i\":13,\"poison\":true}"), 0u);
  auto dead = spool_->dead_letters().List({});
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ(dead->front().payload, "{\"i\":13,\"poison\":true}");
  EXPECT_EQ(dead->front().info.code, "INVALID_ARGUMENT");
  EXPECT_NE(dead->front().info.message.find("Error Code: 4000"), std::string::npos);
  EXPECT_EQ(dead->front().info.table, "main.edge.t");
  EXPECT_GE(dead->front().info.attempts, 1u);
  EXPECT_EQ(Metric("zerobusd_dead_letter_records_total"), 1);
  EXPECT_NE(Metric("zerobusd_lane_parked"), 1);
  // Isolation is over: requests are full-sized again.
  Append(16);
  Serve([&] { return spool_->Stats("r").records == 0; });
  EXPECT_EQ(streams_.calls.back()->writes.back().second.size(), 8u);
}

TEST_F(DrainLaneTest, ManyRefusalsInARowParkTheLaneInsteadOfEmptyingItIntoTheStore) {
  MakeLane(4, 4, [](DrainLaneOptions& o) { o.max_consecutive_dead_letters = 3; });
  std::set<int> all;
  for (int i = 0; i < 10; ++i) all.insert(i);
  Append(10, all);
  Serve([&] { return lane_->state() == LaneState::kParked; });
  ASSERT_EQ(State(), LaneState::kParked);
  EXPECT_NE(ParkedReason().find("3 records in a row"), std::string::npos) << ParkedReason();
  EXPECT_EQ(spool_->dead_letters().Totals().records, 3u);
  EXPECT_EQ(spool_->Stats("r").records, 7u);
}

TEST_F(DrainLaneTest, RotationHalfClosesTakesLateAcksThenReopensWithoutAFailure) {
  MakeLane(4, 1, [](DrainLaneOptions& o) { o.max_close_grace = std::chrono::milliseconds(50); });
  Append(3);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(0)->writes.size(), 3u);
  StreamEvent sig;
  sig.kind = StreamEvent::Kind::kCloseSignal;
  sig.grace = std::chrono::seconds(30);  // capped at 50 ms by max_close_grace
  Deliver(call(0), sig);
  ASSERT_TRUE(RunUntil([&] { return call(0)->writes_done; })) << "half-closed after the grace";
  EXPECT_EQ(State(), LaneState::kDraining);
  Emit(call(0), StreamEvent::Kind::kAck, 1);  // a late ACK still counts
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  ASSERT_EQ(call(1)->writes.size(), 1u) << "only the record the late ACK did not cover is resent";
  EXPECT_EQ(call(1)->writes[0].second[0], "{\"i\":2}");
  EXPECT_EQ(Metric("zerobusd_resent_records_total"), 1);
  EXPECT_FALSE(zb::testing::MetricValue(metrics_->Exposition(), "zerobusd_stream_failures_total",
                                        "code=\"UNAVAILABLE\",route=\"r\"").ok());
}

TEST_F(DrainLaneTest, TheServersCloseDuringARotationIsNotAFailure) {
  MakeLane(4, 1);
  Append(2);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  StreamEvent sig;
  sig.kind = StreamEvent::Kind::kCloseSignal;
  sig.grace = std::chrono::seconds(5);
  Deliver(call(0), sig);
  EmitDone(call(0), absl::UnavailableError("Stream timeout reached. Error Code: 6002"));
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  EXPECT_FALSE(zb::testing::MetricValue(metrics_->Exposition(), "zerobusd_stream_failures_total",
                                        "code=\"UNAVAILABLE\",route=\"r\"").ok());
  EXPECT_EQ(Metric("zerobusd_stream_rotations_total"), 1);
}


// The bound the drain budgets with: what the request encodes to at most.
uint64_t EncodedBound(const std::vector<std::string>& records) {
  uint64_t n = kRequestEnvelopeBytes;
  for (const auto& r : records) n += r.size() + kRecordFramingBytes;
  return n;
}

TEST_F(DrainLaneTest, RequestsCountTheirFramingAgainstMaxBatchBytes) {
  // Records of 7-8 bytes: framing is about 40% of such a request, so
  // counting payload alone would overshoot by as much.
  constexpr uint64_t kMaxBatchBytes = 1024;
  MakeLane(/*max_inflight=*/64, /*max_batch=*/100000, [](DrainLaneOptions& o) {
    o.max_batch_bytes = kMaxBatchBytes;
    o.linger = std::chrono::milliseconds(0);
  });
  Append(1000);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(RunUntil([&] { return TotalWritten(call(0)) == 1000; }));
  const auto& writes = call(0)->writes;
  for (size_t i = 0; i < writes.size(); ++i) {
    const auto& records = writes[i].second;
    EXPECT_LE(EncodedBound(records), kMaxBatchBytes) << "request " << i;
    if (i + 1 < writes.size()) {
      // Full: the next record would not have fit.
      std::vector<std::string> more = records;
      more.push_back(writes[i + 1].second.front());
      EXPECT_GT(EncodedBound(more), kMaxBatchBytes) << "request " << i << " was cut short";
    }
  }
}

TEST_F(DrainLaneTest, ARecordLargerThanMaxBatchBytesGoesAlone) {
  MakeLane(4, 1000, [](DrainLaneOptions& o) { o.max_batch_bytes = 1024; });
  auto r = spool_->Append("r", {"{\"a\":1}", "{\"big\":\"" + std::string(5000, 'x') + "\"}", "{\"b\":2}"});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(RunUntil([&] { return TotalWritten(call(0)) == 3; }));
  ASSERT_EQ(call(0)->writes.size(), 3u);
  EXPECT_EQ(call(0)->writes[1].second.size(), 1u);
}

TEST_F(DrainLaneTest, ACreateTimeoutWithNoAnswerReplacesTheConnectionAndCountsAConnectFailure) {
  MakeLane(4, 1, [](DrainLaneOptions& o) { o.create_timeout = std::chrono::milliseconds(100); });
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  call(0)->response_started = false;  // a frozen connection: nothing comes back
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  EXPECT_TRUE(call(0)->cancelled);
  EXPECT_EQ(streams_.connection_resets, 1) << "the next attempt must not reuse the dead connection";
  EXPECT_EQ(Health().tally(FailureKind::kConnect).count, 1u);
  EXPECT_NE(Health().tally(FailureKind::kConnect).last_message.find("looks dead"), std::string::npos);
  EXPECT_EQ(Metric("zerobusd_route_failures_total", "kind=\"connect\",route=\"r\""), 1);
  EXPECT_GT(Metric("zerobusd_route_last_failure_timestamp_seconds", "kind=\"connect\",route=\"r\""), 1.6e9);
  // A stream opens on the new connection: not yet the end of the outage.
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  EXPECT_TRUE(Health().failing());
  // Records are delivered: now it is.
  ASSERT_EQ(call(1)->writes.size(), 1u);
  Emit(call(1), StreamEvent::Kind::kAck, 0);
  ASSERT_TRUE(RunUntil([&] { return !lane_->health().failing(); }));
}

// The daemon's own timeout (a minute, as MakeLane sets it), on the lane's
// clock: nothing fires before it has passed; once it has, the connection is
// replaced and one stream failure counted, without the test waiting.
TEST_F(DrainLaneTest, AnAckTimeoutReplacesTheConnectionOnceAMinutePassesOnTheLanesClock) {
  ASSERT_EQ(DrainLaneOptions{}.ack_timeout, kAckTimeout);
  MakeLane(4, 1);
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  MonotonicClock::AdvanceForTest(std::chrono::seconds(59));
  WakeTimersForTest(loop_);
  ASSERT_FALSE(RunUntil([&] { return streams_.calls.size() == 2; }, std::chrono::milliseconds(100)))
      << "59 s: not yet";
  MonotonicClock::AdvanceForTest(std::chrono::seconds(2));
  WakeTimersForTest(loop_);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  EXPECT_EQ(streams_.connection_resets, 1);
  EXPECT_EQ(Health().tally(FailureKind::kStream).count, 1u);
}

TEST_F(DrainLaneTest, ConnectAndTlsFailuresAreKeptApartAndReplaceTheConnection) {
  MakeLane(4, 1);
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  StreamEvent ev;
  ev.kind = StreamEvent::Kind::kDone;
  ev.status = absl::UnavailableError("failed to connect to all addresses; Ssl handshake failed");
  ev.link = StreamEvent::Link::kTlsFailed;
  Deliver(call(0), ev);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  ev.status = absl::UnavailableError("failed to connect to all addresses; Connection refused");
  ev.link = StreamEvent::Link::kConnectFailed;
  Deliver(call(1), ev);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 3; }));
  // A server-side UNAVAILABLE on a working connection keeps it.
  ev.status = absl::UnavailableError("server busy");
  ev.link = StreamEvent::Link::kWorked;
  Emit(call(2), StreamEvent::Kind::kCreated);
  Deliver(call(2), ev);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 4; }));
  EXPECT_EQ(Health().tally(FailureKind::kTls).count, 1u);
  EXPECT_EQ(Health().tally(FailureKind::kConnect).count, 1u);
  EXPECT_EQ(Health().tally(FailureKind::kStream).count, 1u);
  EXPECT_EQ(streams_.connection_resets, 2);
}

TEST_F(DrainLaneTest, AConnectFailureIsExplainedOncePerChangeNotPerAttempt) {
  int explained = 0;
  MakeLane(4, 1, [&explained](DrainLaneOptions& o) {
    o.explain_connect_failure = [&explained](const PostFn& on, std::function<void(ConnectExplanation)> done) {
      ++explained;
      // As the daemon's prober does: answered on a thread of its own, through
      // the lane's executor.
      std::thread([&on, &done] {
        on([done] { done({"tls/60/10", "the server's certificate has expired"}); });
      }).join();
    };
  });
  Append(1);
  StreamEvent ev;
  ev.kind = StreamEvent::Kind::kDone;
  ev.status = absl::UnavailableError("Ssl handshake failed");
  ev.link = StreamEvent::Link::kTlsFailed;
  for (size_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == i + 1; }));
    Deliver(call(i), ev);
  }
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 6; }));
  EXPECT_EQ(explained, 1);
  EXPECT_EQ(Health().tally(FailureKind::kTls).count, 5u);
  EXPECT_EQ(Health().tally(FailureKind::kTls).explanation, "the server's certificate has expired");
  // A different failure is a change: explained again.
  ev.status = absl::UnavailableError("Connection refused");
  ev.link = StreamEvent::Link::kConnectFailed;
  Deliver(call(5), ev);
  ASSERT_TRUE(RunUntil([&] { return explained == 2; }));
}

TEST_F(DrainLaneTest, ResumeReconnectsAFailingLaneAtOnceOnANewConnection) {
  MakeLane(4, 1, [](DrainLaneOptions& o) {
    o.backoff.initial = std::chrono::seconds(60);
    o.backoff.max = std::chrono::seconds(60);
    o.backoff.min_delay = std::chrono::seconds(30);
  });
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  EmitDone(call(0), absl::UnavailableError("Connection reset"));
  ASSERT_TRUE(RunUntil([&] { return lane_->state() == LaneState::kBackoff; }));
  const int resets = streams_.connection_resets;
  OnLoop([&] { lane_->Resume(); });
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }, std::chrono::seconds(2)))
      << "not after the 30 s backoff";
  EXPECT_EQ(streams_.connection_resets, resets + 1);
  // A lane that works is left alone.
  Emit(call(1), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  OnLoop([&] { lane_->Resume(); });
  ASSERT_TRUE(Settle());
  EXPECT_EQ(streams_.calls.size(), 2u);
  EXPECT_FALSE(call(1)->cancelled);
}

TEST_F(DrainLaneTest, AStreamWhoseServerFellSilentIsRebuiltOnResume) {
  MakeLane(4, 1, [](DrainLaneOptions& o) { o.ack_timeout = std::chrono::seconds(600); });
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  Emit(call(0), StreamEvent::Kind::kCreated);
  ASSERT_TRUE(Settle());
  OnLoop([&] { lane_->Resume(); });  // answered a moment ago: not stuck
  ASSERT_TRUE(Settle());
  EXPECT_EQ(streams_.calls.size(), 1u);
  // Six silent seconds with a request in flight: stuck (the lane's clock
  // moves; nobody waits for them).
  MonotonicClock::AdvanceForTest(std::chrono::seconds(6));
  OnLoop([&] { lane_->Resume(); });
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 2; }));
  EXPECT_TRUE(call(0)->cancelled);
}

// The token source answers on its own thread (the OAuth worker); the lane
// hands it its loop, so the answer reaches the lane there (OnToken checks
// it), and the lane posts nothing itself.
TEST_F(DrainLaneTest, ATokenAnsweredOnTheSourcesThreadReachesTheLaneOnItsLoop) {
  tokens_.answer_on_worker = true;
  tokens_.next_error = absl::UnavailableError("token endpoint 503");
  MakeLane();
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return lane_->health().tally(FailureKind::kToken).count >= 1; }));
  EXPECT_TRUE(streams_.calls.empty());
  tokens_.next_error = absl::OkStatus();
  ASSERT_TRUE(RunUntil([&] { return streams_.calls.size() == 1; }));
  EXPECT_EQ(call(0)->params.token, "tok-main.edge.t");
}

TEST_F(DrainLaneTest, AnUnusableTokenReplyIsRetriedAndOnlyARefusalParks) {
  MakeLane();
  tokens_.next_error = absl::UnavailableError("HTTP 200: response is not a JSON object");
  Append(1);
  ASSERT_TRUE(RunUntil([&] { return lane_->health().tally(FailureKind::kToken).count >= 3; }));
  EXPECT_NE(State(), LaneState::kParked);
  EXPECT_EQ(Metric("zerobusd_token_fetch_failures_total", "route=\"r\",table=\"main.edge.t\""),
            static_cast<double>(Health().tally(FailureKind::kToken).count));
  // A wrong workspace URL parks, and the hint says so (not the secret).
  tokens_.next_error = absl::FailedPreconditionError("HTTP 404: not found");
  ASSERT_TRUE(RunUntil([&] { return lane_->state() == LaneState::kParked; }));
  EXPECT_NE(ParkedReason().find("workspace_url"), std::string::npos) << ParkedReason();
  EXPECT_EQ(ParkedReason().find("client_secret"), std::string::npos) << ParkedReason();
}

TEST(RouteHealthTest, SaysTheFirstFailuresAndEachChangeThenAHeartbeatPerInterval) {
  using Report = RouteHealth::Report;
  RouteHealth health(std::chrono::minutes(2));
  auto t = RouteHealth::Clock::time_point() + std::chrono::hours(1);
  EXPECT_EQ(health.Failed(FailureKind::kConnect, "refused", t, 1), Report::kLoud);
  EXPECT_EQ(health.Failed(FailureKind::kConnect, "refused", t, 2), Report::kLoud);
  EXPECT_EQ(health.Failed(FailureKind::kConnect, "refused", t, 3), Report::kLoud);
  t += std::chrono::seconds(30);
  EXPECT_EQ(health.Failed(FailureKind::kConnect, "refused", t, 4), Report::kQuiet);
  EXPECT_EQ(health.Failed(FailureKind::kTls, "expired", t, 5), Report::kLoud) << "a new kind is said at once";
  t += std::chrono::seconds(119);
  EXPECT_EQ(health.Failed(FailureKind::kTls, "expired", t, 6), Report::kQuiet);
  t += std::chrono::seconds(1);
  EXPECT_EQ(health.Failed(FailureKind::kTls, "expired", t, 7), Report::kHeartbeat);
  EXPECT_EQ(health.Failed(FailureKind::kTls, "expired", t, 8), Report::kQuiet);
  t += std::chrono::minutes(2);
  EXPECT_EQ(health.Failed(FailureKind::kTls, "expired", t, 9), Report::kHeartbeat) << "never goes quiet";
  EXPECT_EQ(health.outage_failures(), 9u);
  EXPECT_EQ(health.tally(FailureKind::kConnect).count, 4u);
  EXPECT_EQ(health.tally(FailureKind::kTls).count, 5u);
  EXPECT_EQ(health.tally(FailureKind::kTls).last_unix_us, 9);
  EXPECT_TRUE(health.Succeeded());
  EXPECT_FALSE(health.Succeeded());
  EXPECT_EQ(health.Failed(FailureKind::kStream, "reset", t, 10), Report::kLoud) << "a new outage is new";
  EXPECT_EQ(health.tally(FailureKind::kTls).count, 5u) << "counts are kept for status";
}

}  // namespace
}  // namespace zb
