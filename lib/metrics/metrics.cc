#include "metrics/metrics.h"

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/endpoint.h"
#include "common/accept_errors.h"
#include "common/log_limiter.h"
#include "common/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

const char* ResultLabel(IntakeResult r) {
  switch (r) {
    case IntakeResult::kAccepted: return "accepted";
    case IntakeResult::kInvalid: return "invalid";
    case IntakeResult::kUnknownRoute: return "unknown_route";
    case IntakeResult::kTooLarge: return "too_large";
    case IntakeResult::kNotAllowed: return "not_allowed";
    case IntakeResult::kSpoolFull: return "spool_full";
    case IntakeResult::kSpoolError: return "spool_error";
    case IntakeResult::kSchemaUnknown: return "schema_unknown";
  }
  return "unknown";
}

class PrometheusRouteMetrics final : public RouteMetrics {
 public:
  PrometheusRouteMetrics(const std::string& route, prometheus::Family<prometheus::Counter>& intake_records,
                         prometheus::Counter& intake_bytes, prometheus::Counter& acked, prometheus::Gauge& inflight,
                         prometheus::Counter& resent, prometheus::Counter& paced,
                         prometheus::Family<prometheus::Counter>& stream_acked)
      : route_(route),
        intake_records_(intake_records),
        intake_bytes_(intake_bytes),
        acked_(acked),
        inflight_(inflight),
        resent_(resent),
        paced_(paced),
        stream_acked_(stream_acked) {}

  void IntakeRecords(IntakeResult result, uint64_t n) override {
    std::atomic<prometheus::Counter*>& slot = by_result_[static_cast<size_t>(result)];
    prometheus::Counter* counter = slot.load(std::memory_order_acquire);
    if (counter == nullptr) {  // first use: the family's lock, once per result
      counter = &intake_records_.Add({{"route", route_}, {"result", ResultLabel(result)}});
      slot.store(counter, std::memory_order_release);
    }
    counter->Increment(static_cast<double>(n));
  }
  void IntakeBytes(uint64_t bytes) override { intake_bytes_.Increment(static_cast<double>(bytes)); }
  void AckedRecords(uint64_t n) override { acked_.Increment(static_cast<double>(n)); }
  void InflightRequests(uint64_t n) override { inflight_.Set(static_cast<double>(n)); }
  void ResentRecords(uint64_t n) override { resent_.Increment(static_cast<double>(n)); }
  void PacedSeconds(double seconds) override { paced_.Increment(seconds); }
  void StreamAckedRecords(uint32_t stream, uint64_t n) override {
    stream = std::min(stream, kMaxStreamLabels - 1);
    std::atomic<prometheus::Counter*>& slot = by_stream_[stream];
    prometheus::Counter* counter = slot.load(std::memory_order_acquire);
    if (counter == nullptr) {  // first use: the family's lock, once per stream
      counter = &stream_acked_.Add({{"route", route_}, {"stream", std::to_string(stream)}});
      slot.store(counter, std::memory_order_release);
    }
    counter->Increment(static_cast<double>(n));
  }

 private:
  const std::string route_;
  prometheus::Family<prometheus::Counter>& intake_records_;
  std::array<std::atomic<prometheus::Counter*>, static_cast<size_t>(IntakeResult::kSchemaUnknown) + 1> by_result_{};
  prometheus::Counter& intake_bytes_;
  prometheus::Counter& acked_;
  prometheus::Gauge& inflight_;
  prometheus::Counter& resent_;
  prometheus::Counter& paced_;
  prometheus::Family<prometheus::Counter>& stream_acked_;
  std::array<std::atomic<prometheus::Counter*>, kMaxStreamLabels> by_stream_{};
};

class PrometheusMetrics final : public Metrics {
 public:
  PrometheusMetrics()
      : registry_(std::make_shared<prometheus::Registry>()),
        intake_records_(prometheus::BuildCounter()
                            .Name("zerobusd_intake_records_total")
                            .Help("Records received from producers, by route and result")
                            .Register(*registry_)),
        intake_bytes_(prometheus::BuildCounter()
                          .Name("zerobusd_intake_bytes_total")
                          .Help("Bytes of records accepted into the spool, by route")
                          .Register(*registry_)),
        spool_records_(prometheus::BuildGauge()
                           .Name("zerobusd_spool_records")
                           .Help("Records in the spool not yet acknowledged by Zerobus, by route")
                           .Register(*registry_)),
        spool_at_start_(prometheus::BuildGauge()
                            .Name("zerobusd_spool_records_at_start")
                            .Help("Records the lane held when the spool opened (at rest, per route: at start + "
                                  "accepted = acked + spooled + dead-lettered + dropped)")
                            .Register(*registry_)),
        spool_bytes_(prometheus::BuildGauge()
                         .Name("zerobusd_spool_bytes")
                         .Help("Payload bytes in the spool, all routes")
                         .Register(*registry_)
                         .Add({})),
        spool_max_bytes_(prometheus::BuildGauge()
                             .Name("zerobusd_spool_max_bytes")
                             .Help("spool.max_bytes: what zerobusd_spool_bytes may reach")
                             .Register(*registry_)
                             .Add({})),
        oldest_age_(prometheus::BuildGauge()
                        .Name("zerobusd_oldest_record_age_seconds")
                        .Help("Age of the oldest unacknowledged record, by route (0 when empty)")
                        .Register(*registry_)),
        acked_(prometheus::BuildCounter()
                   .Name("zerobusd_acked_records_total")
                   .Help("Records covered by a Zerobus durability ACK and removed from the spool")
                   .Register(*registry_)),
        ack_latency_(prometheus::BuildHistogram()
                         .Name("zerobusd_ack_latency_seconds")
                         .Help("Time from spool append to the durability ACK that covers the record")
                         .Register(*registry_)
                         .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                                           2.5, 5, 10, 30, 60, 300, 3600})),
        stream_opens_(prometheus::BuildCounter()
                          .Name("zerobusd_stream_opens_total")
                          .Help("Zerobus streams opened (create_stream answered), by route")
                          .Register(*registry_)),
        stream_failures_(prometheus::BuildCounter()
                             .Name("zerobusd_stream_failures_total")
                             .Help("Zerobus streams that failed, by route and gRPC code")
                             .Register(*registry_)),
        rotations_(prometheus::BuildCounter()
                       .Name("zerobusd_stream_rotations_total")
                       .Help("Server-initiated stream rotations (CloseStreamSignal), by route")
                       .Register(*registry_)),
        inflight_(prometheus::BuildGauge()
                      .Name("zerobusd_inflight_requests")
                      .Help("Ingest requests sent and not yet acknowledged, by route")
                      .Register(*registry_)),
        dead_letters_(prometheus::BuildCounter()
                          .Name("zerobusd_dead_letter_records_total")
                          .Help("Records moved to the dead-letter store, by route")
                          .Register(*registry_)),
        token_failures_(prometheus::BuildCounter()
                            .Name("zerobusd_token_fetch_failures_total")
                            .Help("Failed OAuth token fetches, by route and table")
                            .Register(*registry_)),
        route_failures_(prometheus::BuildCounter()
                            .Name("zerobusd_route_failures_total")
                            .Help("Failed delivery attempts, by route and kind (token, connect, tls, stream)")
                            .Register(*registry_)),
        route_last_failure_(prometheus::BuildGauge()
                                .Name("zerobusd_route_last_failure_timestamp_seconds")
                                .Help("When the route last failed, by route and kind (Unix time; 0: never)")
                                .Register(*registry_)),
        parked_(prometheus::BuildGauge()
                    .Name("zerobusd_lane_parked")
                    .Help("1 while a route's drain is parked on an error the operator must fix, by route")
                    .Register(*registry_)),
        resent_(prometheus::BuildCounter()
                    .Name("zerobusd_resent_records_total")
                    .Help("Records sent again after a stream failure or rotation (possible duplicates), by route")
                    .Register(*registry_)),
        paced_(prometheus::BuildCounter()
                   .Name("zerobusd_paced_seconds_total")
                   .Help("Seconds requests waited to stay under the service's per-stream quota, by route")
                   .Register(*registry_)),
        stream_acked_(prometheus::BuildCounter()
                          .Name("zerobusd_stream_acked_records_total")
                          .Help("Records acked, by route and stream (the lane's stream number, 0 up to "
                                "routes[].max_streams - 1): rate() is each stream's rows per second")
                          .Register(*registry_)),
        open_streams_(prometheus::BuildGauge()
                          .Name("zerobusd_open_streams")
                          .Help("Streams a route's lane holds open to its table now, by route")
                          .Register(*registry_)),
        quota_trips_(prometheus::BuildCounter()
                         .Name("zerobusd_quota_trips_total")
                         .Help("Streams the service ended for its per-stream quota (RESOURCE_EXHAUSTED), by route")
                         .Register(*registry_)),
        dropped_(prometheus::BuildCounter()
                     .Name("zerobusd_dropped_records_total")
                     .Help("Records removed without an ACK by an explicit policy, by route and reason")
                     .Register(*registry_)),
        dlq_records_(prometheus::BuildGauge()
                         .Name("zerobusd_dead_letter_store_records")
                         .Help("Records in the dead-letter store, all routes")
                         .Register(*registry_)
                         .Add({})),
        dlq_bytes_(prometheus::BuildGauge()
                       .Name("zerobusd_dead_letter_store_bytes")
                       .Help("Payload bytes in the dead-letter store, all routes")
                       .Register(*registry_)
                       .Add({})),
        accept_errors_(prometheus::BuildCounter()
                           .Name("zerobusd_accept_errors_total")
                           .Help("Failed accepts on a listening socket, by listener (intake, control, metrics) "
                                 "and error (EMFILE: out of descriptors, ...)")
                           .Register(*registry_)),
        spool_full_(prometheus::BuildGauge()
                        .Name("zerobusd_spool_full")
                        .Help("1 while appends are refused or held: spool.max_bytes reached or the filesystem "
                              "below spool.min_free_bytes")
                        .Register(*registry_)
                        .Add({})),
        writer_seconds_(prometheus::BuildCounter()
                            .Name("zerobusd_spool_writer_seconds_total")
                            .Help("Where the spool's writer thread spent its time, by phase (idle, building, "
                                  "logging, syncing, memtable, stalled, answering)")
                            .Register(*registry_)),
        spool_commits_(prometheus::BuildCounter()
                           .Name("zerobusd_spool_commits_total")
                           .Help("Writes the spool made to RocksDB (group commits and single operations)")
                           .Register(*registry_)
                           .Add({})) {
    prometheus::BuildGauge()
        .Name("zerobusd_build_info")
        .Help("Build information")
        .Register(*registry_)
        .Add({{"version", ZEROBUSD_VERSION}})
        .Set(1);
  }

  RouteMetrics& Route(const std::string& route) override {
    std::lock_guard<std::mutex> lock(routes_mu_);
    std::unique_ptr<PrometheusRouteMetrics>& slot = routes_[route];
    if (!slot) {
      slot = std::make_unique<PrometheusRouteMetrics>(
          route, intake_records_, Get(intake_bytes_, {{"route", route}}), Get(acked_, {{"route", route}}),
          Get(inflight_, {{"route", route}}), Get(resent_, {{"route", route}}), Get(paced_, {{"route", route}}),
          stream_acked_);
    }
    return *slot;
  }

  void IntakeRecords(const std::string& route, IntakeResult result, uint64_t n) override {
    Route(route).IntakeRecords(result, n);
  }
  void IntakeBytes(const std::string& route, uint64_t bytes) override { Route(route).IntakeBytes(bytes); }
  void SpoolDepth(const std::string& route, uint64_t records) override {
    Get(spool_records_, {{"route", route}}).Set(static_cast<double>(records));
  }
  void SpoolRecordsAtStart(const std::string& route, uint64_t records) override {
    Get(spool_at_start_, {{"route", route}}).Set(static_cast<double>(records));
  }
  void SpoolTotalBytes(uint64_t bytes) override { spool_bytes_.Set(static_cast<double>(bytes)); }
  void SpoolMaxBytes(uint64_t bytes) override { spool_max_bytes_.Set(static_cast<double>(bytes)); }
  void OldestRecordAge(const std::string& route, double seconds) override {
    Get(oldest_age_, {{"route", route}}).Set(seconds);
  }
  void AckedRecords(const std::string& route, uint64_t n) override { Route(route).AckedRecords(n); }
  void AckLatency(double seconds) override { ack_latency_.Observe(seconds); }
  void StreamOpened(const std::string& route) override { Get(stream_opens_, {{"route", route}}).Increment(); }
  void StreamFailure(const std::string& route, const std::string& code) override {
    Get(stream_failures_, {{"route", route}, {"code", code}}).Increment();
  }
  void StreamRotation(const std::string& route) override { Get(rotations_, {{"route", route}}).Increment(); }
  void OpenStreams(const std::string& route, uint64_t n) override {
    Get(open_streams_, {{"route", route}}).Set(static_cast<double>(n));
  }
  void QuotaTrip(const std::string& route) override { Get(quota_trips_, {{"route", route}}).Increment(); }
  void InflightRequests(const std::string& route, uint64_t n) override { Route(route).InflightRequests(n); }
  void DeadLetterRecords(const std::string& route, uint64_t n) override {
    Get(dead_letters_, {{"route", route}}).Increment(static_cast<double>(n));
  }
  void TokenFetchFailure(const std::string& route, const std::string& table) override {
    Get(token_failures_, {{"route", route}, {"table", table}}).Increment();
  }
  void RouteFailure(const std::string& route, const std::string& kind, double unix_seconds) override {
    Get(route_failures_, {{"route", route}, {"kind", kind}}).Increment();
    Get(route_last_failure_, {{"route", route}, {"kind", kind}}).Set(unix_seconds);
  }
  void LaneParked(const std::string& route, bool parked) override {
    Get(parked_, {{"route", route}}).Set(parked ? 1 : 0);
  }
  void ResentRecords(const std::string& route, uint64_t n) override { Route(route).ResentRecords(n); }
  void DroppedRecords(const std::string& route, const std::string& reason, uint64_t n) override {
    Get(dropped_, {{"route", route}, {"reason", reason}}).Increment(static_cast<double>(n));
  }
  void DeadLetterStore(uint64_t records, uint64_t bytes) override {
    dlq_records_.Set(static_cast<double>(records));
    dlq_bytes_.Set(static_cast<double>(bytes));
  }
  void SpoolFull(bool full) override { spool_full_.Set(full ? 1 : 0); }
  void SpoolWriterSeconds(const std::string& phase, double total_seconds) override {
    prometheus::Counter& c = Get(writer_seconds_, {{"phase", phase}});
    if (total_seconds > c.Value()) c.Increment(total_seconds - c.Value());
  }
  void SpoolCommits(uint64_t total) override {
    if (static_cast<double>(total) > spool_commits_.Value()) {
      spool_commits_.Increment(static_cast<double>(total) - spool_commits_.Value());
    }
  }
  void AcceptError(const std::string& listener, const std::string& error) override {
    Get(accept_errors_, {{"listener", listener}, {"error", error}}).Increment();
  }
  void DeclareRoute(const std::string& route) override {
    Get(intake_records_, {{"route", route}, {"result", "accepted"}});
    Get(intake_bytes_, {{"route", route}});
    Get(spool_records_, {{"route", route}});
    Get(spool_at_start_, {{"route", route}});  // 0 unless the spool held some at start
    Get(oldest_age_, {{"route", route}});
    Get(acked_, {{"route", route}});
    Get(stream_opens_, {{"route", route}});
    Get(inflight_, {{"route", route}});
    Get(dead_letters_, {{"route", route}});
    Get(parked_, {{"route", route}});
    Get(resent_, {{"route", route}});
    Get(paced_, {{"route", route}});
    Get(open_streams_, {{"route", route}});
    Get(quota_trips_, {{"route", route}});
    Get(rotations_, {{"route", route}});
    Get(dropped_, {{"route", route}, {"reason", "drop_oldest"}});  // the one policy that drops
    for (const char* kind : {"token", "connect", "tls", "stream"}) {
      Get(route_failures_, {{"route", route}, {"kind", kind}});
      Get(route_last_failure_, {{"route", route}, {"kind", kind}});
    }
  }

  void SetRefreshHook(std::function<void()> refresh) override {
    std::lock_guard<std::mutex> lock(refresh_mu_);
    refresh_ = std::move(refresh);
  }

  std::string Exposition() override {
    {
      std::lock_guard<std::mutex> lock(refresh_mu_);
      if (refresh_) refresh_();
    }
    prometheus::TextSerializer serializer;
    return serializer.Serialize(registry_->Collect());
  }

 private:
  // Family::Add is itself thread-safe and returns the existing series for
  // known labels, so no extra cache is needed.
  template <typename T>
  static T& Get(prometheus::Family<T>& family, const std::map<std::string, std::string>& labels) {
    return family.Add(labels);
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::mutex routes_mu_;
  std::map<std::string, std::unique_ptr<PrometheusRouteMetrics>> routes_;  // guarded by routes_mu_
  std::mutex refresh_mu_;  // serializes refreshes; guards refresh_
  std::function<void()> refresh_;
  prometheus::Family<prometheus::Counter>& intake_records_;
  prometheus::Family<prometheus::Counter>& intake_bytes_;
  prometheus::Family<prometheus::Gauge>& spool_records_;
  prometheus::Family<prometheus::Gauge>& spool_at_start_;
  prometheus::Gauge& spool_bytes_;
  prometheus::Gauge& spool_max_bytes_;
  prometheus::Family<prometheus::Gauge>& oldest_age_;
  prometheus::Family<prometheus::Counter>& acked_;
  prometheus::Histogram& ack_latency_;
  prometheus::Family<prometheus::Counter>& stream_opens_;
  prometheus::Family<prometheus::Counter>& stream_failures_;
  prometheus::Family<prometheus::Counter>& rotations_;
  prometheus::Family<prometheus::Gauge>& inflight_;
  prometheus::Family<prometheus::Counter>& dead_letters_;
  prometheus::Family<prometheus::Counter>& token_failures_;
  prometheus::Family<prometheus::Counter>& route_failures_;
  prometheus::Family<prometheus::Gauge>& route_last_failure_;
  prometheus::Family<prometheus::Gauge>& parked_;
  prometheus::Family<prometheus::Counter>& resent_;
  prometheus::Family<prometheus::Counter>& paced_;
  prometheus::Family<prometheus::Counter>& stream_acked_;
  prometheus::Family<prometheus::Gauge>& open_streams_;
  prometheus::Family<prometheus::Counter>& quota_trips_;
  prometheus::Family<prometheus::Counter>& dropped_;
  prometheus::Gauge& dlq_records_;
  prometheus::Gauge& dlq_bytes_;
  prometheus::Family<prometheus::Counter>& accept_errors_;
  prometheus::Gauge& spool_full_;
  prometheus::Family<prometheus::Counter>& writer_seconds_;
  prometheus::Counter& spool_commits_;
};

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// A scrape (or a stalled client) gets this long for its whole exchange.
constexpr auto kConnectionDeadline = std::chrono::seconds(5);
// Past this many open connections, the oldest is closed for the new one.
constexpr size_t kMaxConnections = 64;
// Accept retries after running out of descriptors or memory.
constexpr auto kAcceptBackoffInitial = std::chrono::milliseconds(100);
constexpr auto kAcceptBackoffMax = std::chrono::seconds(1);
constexpr auto kAcceptLogInterval = std::chrono::seconds(5);


// One request per connection, served asynchronously on the server's own
// thread; each connection has a deadline, so a slow or silent client never
// holds up other scrapes. Only GET and HEAD are answered; other methods get
// 405.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(asio::ip::tcp::socket socket, Metrics* metrics, const std::function<bool()>& ready)
      : stream_(std::move(socket)), metrics_(metrics), ready_(ready) {}

  void Start() {
    stream_.expires_after(kConnectionDeadline);
    http::async_read(stream_, buffer_, req_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (!ec && !self->closed_) self->Respond();
    });
  }

  // Closes the connection now (the server needs the slot); the pending
  // operation completes with an error and the session goes away.
  void Close() {
    closed_ = true;
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }
  bool closed() const { return closed_; }

 private:
  void Respond() {
    res_.version(req_.version());
    res_.keep_alive(false);
    const bool head = req_.method() == http::verb::head;
    if (req_.method() != http::verb::get && !head) {
      res_.result(http::status::method_not_allowed);
      res_.set(http::field::allow, "GET, HEAD");
      res_.body() = "method not allowed: use GET or HEAD\n";
    } else {
      const std::string target(req_.target());
      const std::string path = target.substr(0, target.find('?'));
      if (path == "/metrics") {
        res_.result(http::status::ok);
        res_.set(http::field::content_type, "text/plain; version=0.0.4");
        res_.body() = metrics_->Exposition();
      } else if (path == "/healthz") {
        res_.result(http::status::ok);
        res_.body() = "ok\n";
      } else if (path == "/readyz") {
        const bool ready = ready_();
        res_.result(ready ? http::status::ok : http::status::service_unavailable);
        res_.body() = ready ? "ready\n" : "not ready\n";
      } else {
        res_.result(http::status::not_found);
        res_.body() = "not found: try /metrics, /healthz or /readyz\n";
      }
    }
    res_.prepare_payload();
    if (head) {
      // The headers of the GET answer (Content-Length included), no body.
      const size_t length = res_.body().size();
      res_.body().clear();
      res_.content_length(length);
    }
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
      self->closed_ = true;
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  Metrics* metrics_;
  const std::function<bool()>& ready_;  // owned by the server, which outlives its io_context's handlers
  bool closed_ = false;
};

class BeastMetricsServer final : public MetricsServer {
 public:
  BeastMetricsServer(Metrics* metrics, std::function<bool()> ready)
      : metrics_(metrics), ready_(std::move(ready)), acceptor_(io_), retry_timer_(io_) {}

  ~BeastMetricsServer() override {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Start(const Endpoint& ep) {
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(ep.host == "localhost" ? "127.0.0.1" : ep.host, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("metrics.listen: bad address \"", ep.host, "\""));
    asio::ip::tcp::endpoint endpoint(address, ep.port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("metrics.listen: cannot listen on ", ep.Target(), ": ", ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { io_.run(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }

 private:
  // Server thread only, from here on.
  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, asio::ip::tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;  // shutting down
      if (ec) {
        OnAcceptError(ec);
        return;
      }
      // Failures not reported as a recovery yet add up until one is.
      if (failed_accepts_ > 0 && recovery_log_.ShouldLog(std::chrono::steady_clock::now(), nullptr)) {
        spdlog::info("metrics: accepting connections again after {} failed accept(s)", failed_accepts_);
        failed_accepts_ = 0;
      }
      backoff_ = kAcceptBackoffInitial;
      MakeRoom();
      auto session = std::make_shared<HttpSession>(std::move(socket), metrics_, ready_);
      sessions_.push_back(session);
      session->Start();
      Accept();
    });
  }

  // Never stops accepting: /healthz must answer again as soon as the host
  // has a descriptor to spare.
  void OnAcceptError(const boost::system::error_code& ec) {
    ++failed_accepts_;
    metrics_->AcceptError("metrics", AcceptErrorName(ec));
    uint64_t suppressed = 0;
    if (accept_log_.ShouldLog(std::chrono::steady_clock::now(), &suppressed)) {
      spdlog::warn("metrics: accept failed: {}{} ({} more failure(s) since the last report); still accepting",
                   ec.message(), IsResourceExhaustion(ec) ? " (out of descriptors or memory)" : "", suppressed);
    }
    if (IsPerConnection(ec)) {
      Accept();
      return;
    }
    // Out of descriptors or memory (or an error we do not know): the
    // pending connection stays in the backlog, so wait before trying again.
    retry_timer_.expires_after(backoff_);
    backoff_ = std::min<std::chrono::steady_clock::duration>(backoff_ * 2, kAcceptBackoffMax);
    retry_timer_.async_wait([this](boost::system::error_code wait_ec) {
      if (wait_ec != asio::error::operation_aborted) Accept();
    });
  }

  // Keeps at most kMaxConnections - 1 open before a new one is added: the
  // oldest goes first (each lives at most kConnectionDeadline anyway, so the
  // oldest is the one that has waited the longest for its request).
  void MakeRoom() {
    std::erase_if(sessions_, [](const std::weak_ptr<HttpSession>& w) {
      auto s = w.lock();
      return s == nullptr || s->closed();
    });
    while (sessions_.size() >= kMaxConnections) {
      if (auto oldest = sessions_.front().lock()) oldest->Close();
      sessions_.pop_front();
      uint64_t suppressed = 0;
      if (evict_log_.ShouldLog(std::chrono::steady_clock::now(), &suppressed)) {
        spdlog::warn("metrics: {} connections open; closed the oldest for a new one ({} more since the last report)",
                     kMaxConnections, suppressed);
      }
    }
  }

  Metrics* metrics_;
  std::function<bool()> ready_;
  std::deque<std::weak_ptr<HttpSession>> sessions_;  // accept order
  std::chrono::steady_clock::duration backoff_ = kAcceptBackoffInitial;
  uint64_t failed_accepts_ = 0;
  RateLimitedLog accept_log_{kAcceptLogInterval};
  RateLimitedLog recovery_log_{kAcceptLogInterval};
  RateLimitedLog evict_log_{kAcceptLogInterval};
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer retry_timer_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace

std::unique_ptr<Metrics> MakePrometheusMetrics() { return std::make_unique<PrometheusMetrics>(); }

absl::StatusOr<std::unique_ptr<MetricsServer>> StartMetricsServer(const std::string& listen, Metrics* metrics,
                                                                  std::function<bool()> ready) {
  auto ep = ParseEndpoint(listen);
  if (!ep.ok()) return absl::InvalidArgumentError(absl::StrCat("metrics.listen: ", ep.status().message()));
  auto server = std::make_unique<BeastMetricsServer>(metrics, std::move(ready));
  ZB_RETURN_IF_ERROR(server->Start(*ep));
  return std::unique_ptr<MetricsServer>(std::move(server));
}

}  // namespace zb
