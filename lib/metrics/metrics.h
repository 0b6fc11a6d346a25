#pragma once
// The daemon's Prometheus metrics (names are a contract, see architecture.md)
// and its HTTP endpoint: /metrics, /healthz, /readyz. prometheus-cpp and the
// HTTP server appear only in metrics.cc.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace zb {

// Outcome label of zerobusd_intake_records_total{result}.
// kSchemaUnknown: the route's schema is its table, whose columns could not
// be read yet (the record was not judged; the producer may retry).
enum class IntakeResult {
  kAccepted,
  kInvalid,
  kUnknownRoute,
  kTooLarge,
  kNotAllowed,
  kSpoolFull,
  kSpoolError,
  kSchemaUnknown,
};

// One route's hot-path series, resolved once: an update is one atomic add,
// with no label map built and no family lock taken (those happen the first
// time a series is used). Thread-safe.
class RouteMetrics {
 public:
  virtual ~RouteMetrics() = default;
  virtual void IntakeRecords(IntakeResult result, uint64_t n) = 0;
  virtual void IntakeBytes(uint64_t bytes) = 0;
  virtual void AckedRecords(uint64_t n) = 0;
  virtual void InflightRequests(uint64_t n) = 0;
  virtual void ResentRecords(uint64_t n) = 0;
  // Time a request waited for the per-stream quota's pace.
  virtual void PacedSeconds(double seconds) = 0;
  // Records acked on the lane's stream number `stream` (0 .. kMaxStreamLabels
  // - 1; higher numbers count under the last): rate() of it is that
  // stream's rows per second.
  virtual void StreamAckedRecords(uint32_t stream, uint64_t n) = 0;
};

// Streams of one lane that get a series of their own in
// zerobusd_stream_acked_records_total (routes[].max_streams is at most this).
inline constexpr uint32_t kMaxStreamLabels = 64;

// Thread-safe: every method may be called from any thread (counters are
// atomic; per-route series are created on first use under a lock).
class Metrics {
 public:
  virtual ~Metrics() = default;

  // `route`'s hot-path series (made on first use); the reference is valid
  // as long as this object. Hot paths resolve it once per route or lane;
  // the methods below that take a route name look it up on every call.
  virtual RouteMetrics& Route(const std::string& route) = 0;

  virtual void IntakeRecords(const std::string& route, IntakeResult result, uint64_t n) = 0;
  virtual void IntakeBytes(const std::string& route, uint64_t bytes) = 0;
  virtual void SpoolDepth(const std::string& route, uint64_t records) = 0;
  // What a lane held when the spool opened (0 for lanes made since), so that
  // per route, at rest: records_at_start + accepted = acked + spooled now +
  // dead-lettered + dropped, across restarts.
  virtual void SpoolRecordsAtStart(const std::string& route, uint64_t records) = 0;
  virtual void SpoolTotalBytes(uint64_t bytes) = 0;
  virtual void SpoolMaxBytes(uint64_t bytes) = 0;  // spool.max_bytes
  virtual void OldestRecordAge(const std::string& route, double seconds) = 0;
  virtual void AckedRecords(const std::string& route, uint64_t n) = 0;
  virtual void AckLatency(double seconds) = 0;
  virtual void StreamOpened(const std::string& route) = 0;
  // `code`: the gRPC status code name, e.g. "UNAVAILABLE".
  virtual void StreamFailure(const std::string& route, const std::string& code) = 0;
  virtual void StreamRotation(const std::string& route) = 0;
  // Streams the route's lane holds open now (created and not yet ended).
  virtual void OpenStreams(const std::string& route, uint64_t n) = 0;
  // The service ended one of the route's streams for its quota
  // (RESOURCE_EXHAUSTED after the stream was created).
  virtual void QuotaTrip(const std::string& route) = 0;
  virtual void InflightRequests(const std::string& route, uint64_t n) = 0;
  virtual void DeadLetterRecords(const std::string& route, uint64_t n) = 0;
  // A failed OAuth token fetch for `route`'s table.
  virtual void TokenFetchFailure(const std::string& route, const std::string& table) = 0;
  // A failed attempt of `route` to deliver, by `kind` ("token", "connect",
  // "tls", "stream"), at `unix_seconds`: counted, and the time kept as the
  // kind's last failure.
  virtual void RouteFailure(const std::string& route, const std::string& kind, double unix_seconds) = 0;
  // 1 while the lane is parked on a table-level error, else 0.
  virtual void LaneParked(const std::string& route, bool parked) = 0;
  // Records sent again after a stream failure or rotation (possible duplicates).
  virtual void ResentRecords(const std::string& route, uint64_t n) = 0;
  // Records removed without an ACK by an explicit policy (`reason`, e.g. "drop_oldest").
  virtual void DroppedRecords(const std::string& route, const std::string& reason, uint64_t n) = 0;
  // Records and payload bytes now in the dead-letter store, all routes.
  virtual void DeadLetterStore(uint64_t records, uint64_t bytes) = 0;
  // Whether appends are refused now (1) because the spool is at
  // spool.max_bytes or the filesystem below spool.min_free_bytes.
  virtual void SpoolFull(bool full) = 0;
  // The spool writer's time in `phase` since it opened, and its RocksDB
  // writes: totals (sampled at scrape time), published as counters.
  virtual void SpoolWriterSeconds(const std::string& phase, double total_seconds) = 0;
  virtual void SpoolCommits(uint64_t total) = 0;
  // A failed accept on a listening socket: `listener` is "intake", "control"
  // or "metrics"; `error` the errno name ("EMFILE", "ENFILE", "ENOBUFS",
  // "ENOMEM", ...). The listener keeps accepting (with a backoff).
  virtual void AcceptError(const std::string& listener, const std::string& error) = 0;
  // Makes the route's series exist at zero, so dashboards see every route.
  virtual void DeclareRoute(const std::string& route) = 0;

  // `refresh` runs at the start of every Exposition() (on the scraping
  // thread), so gauges sampled from elsewhere (spool depth) are current when
  // scraped. It must be thread-safe and outlive this object's last scrape.
  virtual void SetRefreshHook(std::function<void()> refresh) = 0;
  // The Prometheus text exposition of every metric (for tests and `status`).
  virtual std::string Exposition() = 0;
};

std::unique_ptr<Metrics> MakePrometheusMetrics();

// Serves GET /metrics, /healthz (200 while the process serves) and /readyz
// (200 while `ready()` is true, else 503) on its own thread; HEAD answers
// the same headers without a body, other methods get 405 with `Allow`.
//
// Hostile-host guards: one request per connection, each with a 5 s deadline;
// at most 64 connections, past which the oldest is closed for the new one;
// accept errors (out of descriptors: EMFILE, ENFILE; ENOBUFS, ENOMEM) never
// stop it: it retries with a backoff of 100 ms doubling to 1 s, counts each
// in zerobusd_accept_errors_total{listener="metrics"} and logs a summary at
// most every 5 s.
class MetricsServer {
 public:
  virtual ~MetricsServer() = default;
  virtual int port() const = 0;  // the bound port (useful with port 0)
};

// `listen` is "host:port". `metrics` and `ready` must outlive the server.
absl::StatusOr<std::unique_ptr<MetricsServer>> StartMetricsServer(const std::string& listen,
                                                                  Metrics* metrics,
                                                                  std::function<bool()> ready);

}  // namespace zb
