#include "daemon/daemon.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#ifdef ZEROBUSD_LEAK_CHECK_AT_EXIT
#include <sanitizer/lsan_interface.h>
#endif

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "auth/token_source.h"
#include "auth/uc_tables.h"
#include "common/endpoint.h"
#include "common/loop_post.h"
#include "common/loop_thread.h"
#include "common/status.h"
#include "common/unix_socket.h"
#include "control/control_server.h"
#include "daemon/control_commands.h"
#include "daemon/logging.h"
#include "diag/connection_probe.h"
#include "drain/drain_lane.h"
#include "intake/intake_server.h"
#include "metrics/metrics.h"
#include "schema/record_codec.h"
#include "schema/table_schema_reader.h"
#include "spdlog/spdlog.h"
#include "spool.pb.h"
#include "spool/dead_letters.h"
#include "spool/spool.h"
#include "zerobus/grpc_log.h"
#include "zerobus/ingest_stream.h"

namespace zb {
namespace {

namespace asio = boost::asio;
using Codecs = std::map<std::string, std::shared_ptr<const RecordCodec>>;

// A table of from_table routes, as last read from Unity Catalog (or, at a
// start without it, as the spool last recorded it).
struct KnownTable {
  std::shared_ptr<const TableSchema> schema;
  int64_t read_unix_us = 0;
};
using KnownTables = std::map<std::string, KnownTable>;  // by table, as the routes name it

// The codec of a from_table route: its table's, or one that refuses every
// record (retryably) while the table was never read.
std::shared_ptr<const RecordCodec> TableRouteCodec(const RouteConfig& r, const KnownTables& tables,
                                                   const absl::Status& last_error) {
  if (auto t = tables.find(r.table); t != tables.end()) return t->second.schema->codec;
  return MakeRefusingCodec(absl::UnavailableError(absl::StrCat(
      "route ", r.name, " takes no records yet: the columns of ", r.table, " have not been read from Unity Catalog",
      last_error.ok() ? std::string() : absl::StrCat(" (", last_error.message(), ")"), "; zerobusd keeps trying")));
}

absl::StatusOr<Codecs> MakeCodecs(const DaemonConfig& config, const KnownTables& tables = {}) {
  Codecs codecs;
  std::vector<std::string> problems;
  for (size_t i = 0; i < config.routes.size(); ++i) {
    const RouteConfig& r = config.routes[i];
    if (r.schema_from_table) {
      codecs[r.name] = TableRouteCodec(r, tables, absl::OkStatus());
      continue;
    }
    if (r.format == RecordFormat::kJson) {
      codecs[r.name] = MakeJsonCodec(static_cast<int>(config.intake.max_json_depth));
      continue;
    }
    auto codec =
        MakeProtoCodec(r.proto_file, r.message, static_cast<int>(config.intake.max_json_depth), r.column_types);
    if (!codec.ok()) {
      problems.push_back(absl::StrCat("routes[", i, "].schema: ", codec.status().message()));
      continue;
    }
    codecs[r.name] = std::move(*codec);
  }
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "\n"));
  return codecs;
}

// Where a lane sends its records: what the spool keeps per lane. A lane is
// its table, record type and message (descriptor): the bytes it holds were
// encoded for exactly that message, and are only ever sent with it.
struct Destination {
  std::string table;
  bool proto = false;
  std::string descriptor_proto;
  // from_table routes: the table description the message was made from and
  // when it was read (not part of what the lane is).
  std::string uc_table_json;
  int64_t uc_table_read_unix_us = 0;

  bool operator==(const Destination& o) const {
    return table == o.table && proto == o.proto && descriptor_proto == o.descriptor_proto;
  }
  std::string Encode() const {
    ::zerobusd::spool::LaneDestination d;
    d.set_table(table);
    d.set_proto(proto);
    d.set_descriptor_proto(descriptor_proto);
    d.set_uc_table_json(uc_table_json);
    d.set_uc_table_read_unix_us(uc_table_read_unix_us);
    return d.SerializeAsString();
  }
  static std::optional<Destination> Decode(const std::string& bytes) {
    ::zerobusd::spool::LaneDestination d;
    if (bytes.empty() || !d.ParseFromString(bytes) || d.table().empty()) return std::nullopt;
    return Destination{d.table(), d.proto(), d.descriptor_proto(), d.uc_table_json(), d.uc_table_read_unix_us()};
  }
  std::string Describe() const { return absl::StrCat(table, " (", proto ? "proto" : "json", ")"); }
};

// None: a from_table route whose table was never read (it has no lane yet).
std::optional<Destination> DestinationOf(const RouteConfig& r, const RecordCodec& codec, const KnownTables& tables) {
  if (!r.schema_from_table) {
    return Destination{r.table, r.format == RecordFormat::kProto, codec.descriptor_proto(), "", 0};
  }
  auto t = tables.find(r.table);
  if (t == tables.end()) return std::nullopt;
  return Destination{r.table, true, t->second.schema->codec->descriptor_proto(), t->second.schema->table_json,
                     t->second.read_unix_us};
}

bool SameColumns(const UcTable& a, const UcTable& b) {
  return a.columns.size() == b.columns.size() &&
         std::equal(a.columns.begin(), a.columns.end(), b.columns.begin(), [](const UcColumn& x, const UcColumn& y) {
           return x.name == y.name && x.type_text == y.type_text && x.nullable == y.nullable;
         });
}

// Config keys a SIGHUP cannot change in a running daemon.
std::vector<std::string> RestartOnlyChanges(const DaemonConfig& a, const DaemonConfig& b) {
  std::vector<std::string> changed;
  // The stream quota reaches the lanes through their routes (reloadable).
  ZerobusConfig za = a.zerobus, zb = b.zerobus;
  za.stream_quota = zb.stream_quota = StreamQuotaConfig{};
  if (!(za == zb)) changed.push_back("zerobus");
  if (!(a.spool == b.spool)) changed.push_back("spool");
  if (!(a.intake == b.intake)) changed.push_back("intake");
  if (!(a.metrics == b.metrics)) changed.push_back("metrics");
  if (!(a.control == b.control)) changed.push_back("control");
  return changed;
}

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Everything the running daemon owns. Loop-thread state lives here; the
// members are declared in construction order and destroyed in reverse.
// Run() builds the modules before the loop runs, then runs it; from
// StartServing() on, every entry point (signals, control commands, lane and
// spool callbacks) runs on the loop and checks it (ZB_CHECK_ON_LOOP).
// What a lane drains with: a change of any of it replaces the lane on reload.
struct LaneSettings {
  DrainConfig drain;
  StreamQuotaConfig quota;
  uint32_t max_streams = RouteConfig{}.max_streams;

  bool operator==(const LaneSettings&) const = default;
};
static_assert(kMaxStreamsPerRoute <= kMaxStreamLabels, "every stream of a lane has its own metric series");

LaneSettings SettingsOf(const RouteConfig& r) { return LaneSettings{r.drain, r.stream_quota, r.max_streams}; }

class Daemon {
 public:
  Daemon(const DaemonConfig& config, std::string config_path)
      : config_(config),
        config_path_(std::move(config_path)),
        loop_ptr_(std::make_shared<asio::io_context>()),
        loop_(*loop_ptr_),
        signals_(loop_),
        tick_(loop_) {}

  absl::Status Run() {
    // Signals first: a SIGTERM that arrives while the spool is recovered is
    // held and honoured as soon as the open returns.
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGHUP);
    WaitSignal();
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_UNBLOCK, &mask, nullptr);  // main() blocked them until now

    ZB_ASSIGN_OR_RETURN(codecs_, MakeCodecs(config_));
    ZB_ASSIGN_OR_RETURN(endpoint_, ParseEndpoint(config_.zerobus.endpoint));
    if (!config_.zerobus.tls) {
      spdlog::warn("zerobus.tls is false: talking plaintext to {} (only for a local dev server)", endpoint_.Target());
    }

    metrics_ = MakePrometheusMetrics();
    spdlog::info("zerobusd {} starting: opening the spool at {}", ZEROBUSD_VERSION, config_.spool.path);
    ZB_RETURN_IF_ERROR(OpenSpool());
    for (const std::string& lane : spool_->Lanes()) metrics_->SpoolRecordsAtStart(lane, spool_->Stats(lane).records);
    metrics_->SpoolMaxBytes(config_.spool.max_bytes);
    loop_.poll();  // delivers a signal that came during the open
    if (stopping_) {
      spdlog::info("stop requested during start-up: exiting before serving; the spool is intact");
      return absl::OkStatus();
    }
    UcFetchOptions uc;
    uc.workspace_url = config_.zerobus.workspace_url;
    uc.client_id = config_.zerobus.client_id;
    uc.client_secret = config_.zerobus.client_secret;
    uc.ca_file = config_.zerobus.ca_file;
    uc.timeout = std::chrono::seconds(10);
    uc.user_agent = absl::StrCat("zerobusd/", ZEROBUSD_VERSION);
    // A record naming a column the table did not have when it was read:
    // perhaps ALTER TABLE added it, so the table is read again (at most
    // every 10 s, whatever producers send), without waiting for a stream
    // open. Called where records are converted; the read starts on the loop.
    struct NextAllowed {
      std::mutex mu;
      std::map<std::string, std::chrono::steady_clock::time_point> by_table;  // guarded by mu
    };
    auto next_allowed = std::make_shared<NextAllowed>();
    std::weak_ptr<asio::io_context> weak_loop = loop_ptr_;
    unknown_column_hook_ = [weak_loop, next_allowed, this](const std::string& table) {
      const auto now = std::chrono::steady_clock::now();
      {
        std::lock_guard<std::mutex> lock(next_allowed->mu);
        auto& next = next_allowed->by_table[table];
        if (now < next) return;
        next = now + std::chrono::seconds(10);
      }
      if (auto loop = weak_loop.lock()) {
        asio::post(*loop, [this, table] {
          if (stopping_ || FirstRouteOf(table) == nullptr) return;
          spdlog::info("table {}: a record names a column it did not have when read; reading it again", table);
          ReadTableSoon(table);
        });
      }
    };
    table_reader_ = std::make_unique<TableSchemaReader>(
        [uc](const std::string& table) { return FetchUcTableJson(uc, table); },
        static_cast<int>(config_.intake.max_json_depth), unknown_column_hook_);
    ReadTablesAtStart();
    loop_.poll();  // a signal that came during the reads
    if (stopping_) {
      spdlog::info("stop requested during start-up: exiting before serving; the spool is intact");
      return absl::OkStatus();
    }
    ZB_ASSIGN_OR_RETURN(codecs_, MakeCodecs(config_, known_tables_));
    UpdateTableRouteCodecs();
    for (const auto& r : config_.routes) metrics_->DeclareRoute(r.name);
    // Spool gauges are computed at scrape time, on the scraping thread.
    metrics_->SetRefreshHook([this] { PublishSpoolGauges(); });
    if (!config_.metrics.listen.empty()) {
      ZB_ASSIGN_OR_RETURN(metrics_server_,
                          StartMetricsServer(config_.metrics.listen, metrics_.get(), [this] { return ready_.load(); }));
      spdlog::info("metrics on http://{}:{}/metrics", ParseEndpoint(config_.metrics.listen)->host,
                   metrics_server_->port());
    }

    OAuthOptions oauth;
    oauth.workspace_url = config_.zerobus.workspace_url;
    oauth.workspace_id = config_.zerobus.workspace_id.empty() ? WorkspaceIdFromHost(endpoint_.host)
                                                              : config_.zerobus.workspace_id;
    oauth.client_id = config_.zerobus.client_id;
    oauth.client_secret = config_.zerobus.client_secret;
    oauth.ca_file = config_.zerobus.ca_file;
    oauth.user_agent = absl::StrCat("zerobusd/", ZEROBUSD_VERSION);
    tokens_ = MakeOAuthTokenSource(oauth);
    prober_ = MakeConnectionProber();

    for (const auto& r : config_.routes) {
      const std::optional<Destination> dest = DestinationOf(r, *codecs_[r.name], known_tables_);
      if (!dest) continue;  // its table was never read: it gets a lane once it is
      const std::string lane = LaneFor(r.name, *dest);
      if (spool_->LaneDestination(lane) != dest->Encode()) {
        ZB_RETURN_IF_ERROR(spool_->SetLaneDestination(lane, dest->Encode()));
      }
      AddLane(lane, r.name, *dest, SettingsOf(r), /*configured=*/true);
      route_lane_[r.name] = lane;
    }
    AdoptUnconfiguredLanes();

    IntakeOptions intake;
    intake.socket_path = config_.intake.socket;
    intake.socket_mode = config_.intake.socket_mode;
    intake.socket_gid = config_.intake.socket_gid;
    intake.max_record_bytes = config_.intake.max_record_bytes;
    intake.max_inflight_bytes = config_.intake.max_inflight_bytes;
    intake.max_buffered_bytes = config_.intake.max_buffered_bytes;
    intake.max_connections = config_.intake.max_connections;
    intake.read_timeout_ms = config_.intake.read_timeout_ms;
    intake.idle_timeout_ms = config_.intake.idle_timeout_ms;
    intake.block_when_full = config_.spool.when_full == WhenFull::kBlock;
    ZB_ASSIGN_OR_RETURN(intake_, StartIntakeServer(loop_, intake, IntakeRoutes(config_), *spool_, *metrics_));
    ControlOptions control;
    control.socket_path = config_.control.socket;
    control.socket_mode = config_.control.socket_mode;
    control.on_accept_error = [this](const std::string& error) { metrics_->AcceptError("control", error); };
    ZB_ASSIGN_OR_RETURN(control_, StartControlServer(loop_, control, [this](const std::string& line,
                                                                              ControlServer::Reply reply) {
                          HandleControl(line, std::move(reply));
                        }));

    // What was built above is not reached yet (the loop does not run);
    // from here on everything runs on the loop, which this thread now runs.
    asio::post(loop_, [this] { StartServing(); });
    loop_.run();
    spdlog::info("zerobusd stopped");
    return absl::OkStatus();
  }

  ~Daemon() {
    // The loop has stopped: nothing else runs. Order: stop producing events,
    // then free their consumers.
    control_.reset();
    intake_.reset();
    lanes_.clear();
    // gRPC may still be unwinding a call that just ended (its internal
    // threads drop their last references after OnDone); tearing down the
    // channel now races with that (the sanitizer build showed a double free
    // in a gRPC completion-queue thread on about one shutdown in ten). The
    // process is about to exit, so the channels are left to the OS instead.
    for (auto& [name, factory] : factories_) {
      auto* left = factory.release();
#ifdef ZEROBUSD_LEAK_CHECK_AT_EXIT
      // Not a leak: LeakSanitizer (main.cc) skips it and what it holds.
      __lsan_ignore_object(left);
#endif
      (void)left;
    }
    tokens_.reset();
    prober_.reset();  // no explanation is delivered past here (lanes are gone)
    metrics_server_.reset();  // no scrape (and refresh) runs past here
    if (metrics_) metrics_->SetRefreshHook(nullptr);
    spool_.reset();
  }

 private:
  // The lanes start draining and the daemon says it is ready: the first
  // handler of loop_.run().
  void StartServing() {
    ZB_CHECK_ON_LOOP(loop_);
    if (stopping_) return;  // a SIGTERM came first: Shutdown() stops what was built
    for (auto& [name, lane] : lanes_) lane->Start();
    // Tables the start-up read missed (never read, or taken as the spool
    // recorded them) are read again with backoff until a read succeeds.
    for (const auto& r : config_.routes) {
      if (r.schema_from_table && !table_reads_[r.table].last_error.ok()) RetryTableLater(r.table, r.drain);
    }
    Tick();
    ready_ = true;
    sd_notify(0, "READY=1");
    spdlog::info("zerobusd {} ready: socket {}, spool {}, {} route(s)", ZEROBUSD_VERSION, config_.intake.socket,
                 config_.spool.path, config_.routes.size());
  }

  absl::Status OpenSpool() {
    SpoolOptions options;
    options.path = config_.spool.path;
    options.sync = config_.spool.sync == SyncPolicy::kAlways;
    options.max_bytes = config_.spool.max_bytes;
    options.min_free_bytes = config_.spool.min_free_bytes;
    static_assert(kMinMemoryBudget == kMinSpoolMemoryBudget);
    options.memory_budget = config_.spool.memory_budget;
    options.drop_oldest = config_.spool.when_full == WhenFull::kDropOldest;
    std::weak_ptr<asio::io_context> weak_loop = loop_ptr_;
    Metrics* metrics = metrics_.get();
    options.on_drop = [weak_loop, metrics, this](const std::string& lane, uint64_t records, uint64_t bytes) {
      metrics->DroppedRecords(lane, "drop_oldest", records);
      if (auto loop = weak_loop.lock()) {
        asio::post(*loop, [this, lane, records, bytes] { LogDrop(lane, records, bytes); });
      }
    };
    if (!options.sync) {
      spdlog::warn("spool.sync is none: producers are acknowledged before fsync; a power loss can lose them");
    }
    ZB_ASSIGN_OR_RETURN(spool_, OpenRocksDbSpool(options));
    spdlog::info("spool {} open: {} bytes held, {} dead letters", config_.spool.path, spool_->TotalBytes(),
                 spool_->dead_letters().Totals().records);
    return absl::OkStatus();
  }

  // drop_oldest loses data by choice: every drop is counted (metric, at
  // once) and logged, at most every 5 s per route with the running total.
  void LogDrop(const std::string& lane, uint64_t records, uint64_t bytes) {
    ZB_CHECK_ON_LOOP(loop_);
    DropLog& log = drop_log_[lane];
    log.records += records;
    log.bytes += bytes;
    const auto now = std::chrono::steady_clock::now();
    if (now - log.last >= std::chrono::seconds(5)) {
      FlushDropLog(lane);
      return;
    }
    if (log.flush_armed) return;
    // Held back for now; said within 5 s, so no drop goes unlogged.
    log.flush_armed = true;
    auto timer = std::make_shared<asio::steady_timer>(loop_, log.last + std::chrono::seconds(5));
    timer->async_wait([this, timer, lane](const boost::system::error_code&) {
      if (!finished_) FlushDropLog(lane);
    });
  }

  void FlushDropLog(const std::string& lane) {
    DropLog& log = drop_log_[lane];
    log.flush_armed = false;
    if (log.records == 0) return;
    spdlog::warn("route {}: spool full (when_full: drop_oldest): dropped {} of the oldest unacked records ({} "
                 "bytes) to make room; they are lost",
                 lane, log.records, log.bytes);
    log.records = 0;
    log.bytes = 0;
    log.last = std::chrono::steady_clock::now();
  }

  // The spool lane of `route` for `dest`: every destination a route ever
  // had gets a lane of its own ("route", then "route@2", ...), so records
  // accepted for one table can never drain to another, whatever a reload
  // or an edited config does. A lane with this destination is reused.
  std::string LaneFor(const std::string& route, const Destination& dest) {
    std::set<std::string> names;
    for (const auto& [name, info] : lane_info_) names.insert(name);
    for (const std::string& name : spool_->Lanes()) names.insert(name);
    int highest = 0;
    bool base_used = false;
    for (const std::string& name : names) {
      int suffix = 0;
      if (name == route) {
        base_used = true;
        suffix = 1;
      } else if (name.rfind(route + "@", 0) == 0) {
        suffix = std::atoi(name.c_str() + route.size() + 1);
        if (suffix < 2) continue;
      } else {
        continue;
      }
      highest = std::max(highest, suffix);
      auto info = lane_info_.find(name);
      std::optional<Destination> stored =
          info != lane_info_.end() ? std::optional<Destination>(info->second.dest)
                                   : Destination::Decode(spool_->LaneDestination(name));
      // A lane from before destinations were recorded belongs to its route.
      if (!stored && name == route) return name;
      if (stored && *stored == dest) return name;
    }
    if (!base_used) return route;
    return absl::StrCat(route, "@", highest + 1);
  }

  // `name`: the spool lane; `route`: the route it serves (metrics and logs
  // say the lane).
  void AddLane(const std::string& name, const std::string& route, const Destination& dest,
               const LaneSettings& settings, bool configured) {
    const DrainConfig& drain = settings.drain;
    const StreamQuotaConfig& quota = settings.quota;
    auto& factory = factories_[name];
    if (factory == nullptr) {
      GrpcTargetOptions target;
      target.target = endpoint_.Target();
      target.tls = config_.zerobus.tls;
      target.ca_file = config_.zerobus.ca_file;
      target.sdk_id = absl::StrCat("zerobusd/", ZEROBUSD_VERSION);
      target.keepalive_time = std::chrono::milliseconds(config_.zerobus.keepalive_time_ms);
      target.keepalive_timeout = std::chrono::milliseconds(config_.zerobus.keepalive_timeout_ms);
      // gRPC threads may finish a cancelled call after the daemon is gone;
      // they then find no loop and drop the event.
      factory = MakeGrpcStreamFactory(target, PostTo(std::weak_ptr<asio::io_context>(loop_ptr_)));
    }
    DrainLaneOptions lane;
    lane.route = name;
    lane.table = dest.table;
    lane.proto = dest.proto;
    lane.descriptor_proto = dest.descriptor_proto;
    lane.max_inflight_requests = drain.max_inflight_requests;
    lane.max_batch_records = drain.max_batch_records;
    lane.max_batch_bytes = drain.max_batch_bytes;
    lane.linger = std::chrono::milliseconds(drain.linger_ms);
    lane.ack_timeout = std::chrono::milliseconds(drain.ack_timeout_ms);
    lane.create_timeout = std::chrono::milliseconds(drain.create_timeout_ms);
    lane.backoff.initial = std::chrono::milliseconds(drain.backoff_initial_ms);
    lane.backoff.max = std::chrono::milliseconds(drain.backoff_max_ms);
    lane.max_close_grace = std::chrono::milliseconds(drain.max_close_grace_ms);
    lane.rotation_drain = std::chrono::milliseconds(drain.rotation_drain_ms);
    lane.parked_retry = std::chrono::milliseconds(drain.parked_retry_ms);
    lane.max_consecutive_dead_letters = drain.max_consecutive_dead_letters;
    lane.stream_quota = StreamQuota{.rows_per_second = quota.rows_per_second, .bytes_per_second = quota.bytes_per_second};
    lane.failure_log_interval = std::chrono::milliseconds(drain.failure_log_interval_ms);
    lane.max_streams = settings.max_streams;
    lane.stream_idle_close = std::chrono::milliseconds(drain.stream_idle_close_ms);
    lane.endpoint = endpoint_.Target();
    lane.explain_connect_failure = [this](const PostFn& on, std::function<void(ConnectExplanation)> done) {
      ExplainConnectFailure(on, std::move(done));
    };
    lane.on_stream_open = [this, route] { OnStreamOpen(route); };
    metrics_->DeclareRoute(name);
    lanes_[name] = std::make_shared<DrainLane>(loop_, lane, *spool_, *factory, *tokens_, *metrics_);
    lane_info_[name] = LaneInfo{route, dest, settings, configured};
  }

  // ------------------------------------------------- tables (from_table)

  // Reads the tables of from_table routes (concurrently, blocking: before
  // the loop runs). A table Unity Catalog does not answer for is taken as
  // the spool last recorded it; one never recorded leaves its routes
  // refusing records until a later read succeeds (StartServing retries).
  void ReadTablesAtStart() {
    std::set<std::string> tables;
    for (const auto& r : config_.routes) {
      if (r.schema_from_table) tables.insert(r.table);
    }
    if (tables.empty()) return;
    spdlog::info("reading the columns of {} from Unity Catalog at {}", absl::StrJoin(tables, ", "),
                 config_.zerobus.workspace_url);
    for (auto& [table, result] : table_reader_->ReadNow(tables)) {
      table_reads_[table].finished = std::chrono::steady_clock::now();
      if (result.ok()) {
        known_tables_[table] = KnownTable{*result, NextReadStamp()};
        spdlog::info("table {}: {} columns read from Unity Catalog", table, (*result)->table.columns.size());
        continue;
      }
      table_reads_[table].last_error = result.status();
      if (std::optional<KnownTable> stored = StoredTable(table)) {
        known_tables_[table] = *stored;
        spdlog::warn("table {}: cannot read its columns from Unity Catalog ({}); converting records by its {} "
                     "columns as read at {}, until a stream open reads them again",
                     table, result.status().ToString(), stored->schema->table.columns.size(),
                     absl::FormatTime(absl::FromUnixMicros(stored->read_unix_us), absl::UTCTimeZone()));
        continue;
      }
      spdlog::error("table {}: cannot read its columns from Unity Catalog ({}), and the spool has no earlier "
                    "reading: its route(s) refuse records until a read succeeds (retried with backoff)",
                    table, result.status().ToString());
    }
  }

  // When a table was read, for ordering readings across restarts: the
  // wall clock, but always after every reading the spool recorded, so a
  // clock that went back cannot make an older reading look newer.
  int64_t NextReadStamp() {
    if (last_read_stamp_ == 0) {
      for (const auto& [lane, bytes] : spool_->LaneDestinations()) {
        if (auto d = Destination::Decode(bytes)) last_read_stamp_ = std::max(last_read_stamp_, d->uc_table_read_unix_us);
      }
    }
    last_read_stamp_ = std::max(NowUs(), last_read_stamp_ + 1);
    return last_read_stamp_;
  }

  // The table as most recently read, among the lanes the spool recorded.
  std::optional<KnownTable> StoredTable(const std::string& table) {
    std::optional<Destination> newest;
    for (const auto& [lane, bytes] : spool_->LaneDestinations()) {
      std::optional<Destination> d = Destination::Decode(bytes);
      if (!d || d->table != table || d->uc_table_json.empty()) continue;
      if (!newest || d->uc_table_read_unix_us > newest->uc_table_read_unix_us) newest = std::move(d);
    }
    if (!newest) return std::nullopt;
    auto schema = MakeTableSchema(table, newest->uc_table_json, static_cast<int>(config_.intake.max_json_depth),
                                  unknown_column_hook_);
    if (!schema.ok()) {
      spdlog::error("table {}: the description the spool recorded does not build: {}", table,
                    schema.status().ToString());
      return std::nullopt;
    }
    return KnownTable{*schema, newest->uc_table_read_unix_us};
  }

  // The codecs of `config`'s from_table routes whose table was never read
  // say the latest reason.
  void UpdateTableRouteCodecs(const DaemonConfig& config) {
    for (const auto& r : config.routes) {
      if (!r.schema_from_table || known_tables_.count(r.table) > 0) continue;
      auto read = table_reads_.find(r.table);
      codecs_[r.name] = TableRouteCodec(r, known_tables_, read != table_reads_.end() ? read->second.last_error
                                                                                      : absl::OkStatus());
    }
  }
  void UpdateTableRouteCodecs() { UpdateTableRouteCodecs(config_); }

  // A lane of `route` opens a stream: a from_table route reads its table
  // again, so a rotation picks up ALTER TABLE. The open goes on with the
  // lane's own message: the records it holds were encoded for that one.
  void OnStreamOpen(const std::string& route) {
    ZB_CHECK_ON_LOOP(loop_);
    const RouteConfig* r = config_.FindRoute(route);
    if (r == nullptr || !r->schema_from_table) return;
    ReadTableSoon(r->table);
  }

  // Reconnects during an outage come in quick succession: a table is read
  // once a second at most, and every request is followed by a read that
  // starts after it (a read already under way may have started too early).
  void ReadTableSoon(const std::string& table) {
    ZB_CHECK_ON_LOOP(loop_);
    TableRead& read = table_reads_[table];
    if (read.reading) {
      read.again = true;
      return;
    }
    const auto next = read.finished + std::chrono::seconds(1);
    if (std::chrono::steady_clock::now() >= next) {
      ReadTable(table);
      return;
    }
    if (read.read_soon_armed) return;
    read.read_soon_armed = true;
    if (!read.read_soon) read.read_soon = std::make_unique<asio::steady_timer>(loop_);
    read.read_soon->expires_at(next);
    read.read_soon->async_wait([this, table](const boost::system::error_code& ec) {
      if (ec) return;
      table_reads_[table].read_soon_armed = false;
      ReadTable(table);
    });
  }

  void ReadTable(const std::string& table) {
    ZB_CHECK_ON_LOOP(loop_);
    TableRead& read = table_reads_[table];
    if (read.reading || stopping_) return;
    read.reading = true;
    table_reader_->Read(table, PostTo(std::weak_ptr<asio::io_context>(loop_ptr_)),
                        [this, table](absl::StatusOr<std::shared_ptr<const TableSchema>> result) {
                          OnTableRead(table, std::move(result));
                        });
  }

  void OnTableRead(const std::string& table, absl::StatusOr<std::shared_ptr<const TableSchema>> result) {
    ZB_CHECK_ON_LOOP(loop_);
    TableRead& read = table_reads_[table];
    read.reading = false;
    read.finished = std::chrono::steady_clock::now();
    if (stopping_) return;
    if (read.again) {
      read.again = false;
      ReadTableSoon(table);
    }
    auto known = known_tables_.find(table);
    if (!result.ok()) {
      const bool new_reason = result.status() != read.last_error;
      read.last_error = result.status();
      const RouteConfig* r = FirstRouteOf(table);
      if (known != known_tables_.end()) {
        if (new_reason) {
          spdlog::warn("table {}: cannot read its columns from Unity Catalog ({}); records are still converted by "
                       "its columns as read before, and the table is read again until a read succeeds",
                       table, result.status().ToString());
        }
        // Unity Catalog and Zerobus are apart: a stream may have opened
        // while Unity Catalog was away, and no open may come for long.
        if (r != nullptr) RetryTableLater(table, r->drain);
        return;
      }
      if (new_reason) {
        spdlog::error("table {}: cannot read its columns from Unity Catalog ({}); its route(s) refuse records "
                      "until a read succeeds",
                      table, result.status().ToString());
      }
      UpdateTableRouteCodecs();
      intake_->SetRoutes(IntakeRoutes(config_));
      if (r != nullptr) RetryTableLater(table, r->drain);
      return;
    }
    read.last_error = absl::OkStatus();
    read.backoff = nullptr;  // the next failure starts from the initial delay
    if (read.retry) read.retry->cancel();
    if (known != known_tables_.end() && SameColumns(known->second.schema->table, (*result)->table)) return;
    const bool first = known == known_tables_.end();
    known_tables_[table] = KnownTable{*result, NextReadStamp()};
    ApplyTable(table, first);
  }

  const RouteConfig* FirstRouteOf(const std::string& table) const {
    for (const auto& r : config_.routes) {
      if (r.schema_from_table && r.table == table) return &r;
    }
    return nullptr;
  }

  // While reading a table fails: tries again after the route's drain
  // backoff.
  void RetryTableLater(const std::string& table, const DrainConfig& drain) {
    ZB_CHECK_ON_LOOP(loop_);
    TableRead& read = table_reads_[table];
    if (!read.backoff) {
      BackoffOptions options;
      options.initial = std::chrono::milliseconds(drain.backoff_initial_ms);
      options.max = std::chrono::milliseconds(drain.backoff_max_ms);
      read.backoff = std::make_unique<Backoff>(options);
    }
    if (!read.retry) read.retry = std::make_unique<asio::steady_timer>(loop_);
    read.retry->expires_after(read.backoff->Next());
    read.retry->async_wait([this, table](const boost::system::error_code& ec) {
      if (!ec && !stopping_ && !table_reads_[table].last_error.ok()) ReadTable(table);
    });
  }

  // The table's columns changed (or were read for the first time): every
  // from_table route of it converts by the new columns from now on, into a
  // lane of its own for the new message. Lanes of earlier messages keep
  // draining what they hold with the message it was encoded for.
  void ApplyTable(const std::string& table, bool first) {
    ZB_CHECK_ON_LOOP(loop_);
    const KnownTable& known = known_tables_.at(table);
    for (const auto& r : config_.routes) {
      if (!r.schema_from_table || r.table != table) continue;
      const Destination dest = *DestinationOf(r, *known.schema->codec, known_tables_);
      const std::string lane = LaneFor(r.name, dest);
      if (spool_->LaneDestination(lane) != dest.Encode()) {
        // Queued ahead of any append to the lane (intake switches below).
        spool_->SetLaneDestinationAsync(lane, dest.Encode(), [lane](absl::Status st) {
          if (!st.ok()) spdlog::error("lane {}: cannot record its destination: {}", lane, st.ToString());
        });
      }
      auto info = lane_info_.find(lane);
      if (info != lane_info_.end() && info->second.settings == SettingsOf(r)) {
        info->second.configured = true;
        info->second.dest = dest;
      } else {
        if (info != lane_info_.end()) lanes_[lane]->Abort();  // adopted with other settings: replaced
        AddLane(lane, r.name, dest, SettingsOf(r), /*configured=*/true);
        lanes_[lane]->Start();
      }
      codecs_[r.name] = known.schema->codec;
      auto previous = route_lane_.find(r.name);
      if (previous == route_lane_.end()) {
        spdlog::info("route {}: table {} read ({} columns): taking records, into lane {}", r.name, table,
                     known.schema->table.columns.size(), lane);
      } else if (previous->second != lane) {
        lane_info_[previous->second].configured = false;
        spdlog::info("route {}: the columns of {} changed ({} now): new records are converted by them into lane {}; "
                     "the {} records lane {} holds still drain with the message they were encoded for",
                     r.name, table, known.schema->table.columns.size(), lane,
                     spool_->Stats(previous->second).records, previous->second);
      } else if (!first) {
        spdlog::info("route {}: the columns of {} changed, its message did not: records are converted by the new "
                     "columns into the same lane {}",
                     r.name, table, lane);
      }
      route_lane_[r.name] = lane;
    }
    intake_->SetRoutes(IntakeRoutes(config_));
  }

  // Why the endpoint cannot be reached, in plain words (a lane asks once per
  // change of its failure); the probe runs on the prober's thread, and its
  // answer is worded and `done` runs on the asking lane's executor `on`.
  void ExplainConnectFailure(const PostFn& on, std::function<void(ConnectExplanation)> done) {
    ZB_CHECK_ON_LOOP(loop_);
    ProbeTarget target;
    target.host = endpoint_.host;
    target.port = static_cast<uint16_t>(endpoint_.port);
    target.tls = config_.zerobus.tls;
    target.ca_file = config_.zerobus.ca_file;
    target.timeout = std::chrono::seconds(10);
    prober_->Probe(
        target,
        [done = std::move(done)](absl::StatusOr<ProbeResult> result) {
          if (!result.ok()) {
            done({"none", absl::StrCat("(no diagnosis: ", result.status().message(), ")")});
          } else if (result->stage == ProbeStage::kOk) {
            done({"ok", "a new connection and its TLS handshake work now: the failure was passing, or the server "
                        "ended the connection"});
          } else {
            done({absl::StrCat(ProbeStageName(result->stage), "/", result->curl_code, "/", result->verify_result, "/",
                               result->os_errno),
                  absl::StrCat(result->reason, "; ", result->check, " (", result->detail, ")")});
          }
        },
        on);
  }

  // Lanes whose route left the configuration but still hold records keep
  // draining to where those records were accepted for; nothing is orphaned.
  void AdoptUnconfiguredLanes() {
    for (const std::string& name : spool_->Lanes()) {
      if (lanes_.count(name) > 0 || spool_->Stats(name).records == 0) continue;
      auto dest = Destination::Decode(spool_->LaneDestination(name));
      if (!dest) {
        spdlog::warn("spool holds {} records of route \"{}\", which is not configured and has no recorded "
                     "table; they stay spooled until a route of that name returns",
                     spool_->Stats(name).records, name);
        continue;
      }
      spdlog::info("route \"{}\" is no longer configured: draining its {} spooled records to {}", name,
                   spool_->Stats(name).records, dest->Describe());
      LaneSettings settings;
      settings.drain = config_.drain;
      settings.quota = config_.zerobus.stream_quota;
      AddLane(name, name.substr(0, name.find('@')), *dest, settings, /*configured=*/false);
    }
  }

  std::shared_ptr<const IntakeRouteTable> IntakeRoutes(const DaemonConfig& config, const Codecs& codecs) {
    auto routes = std::make_shared<IntakeRouteTable>();
    for (const auto& r : config.routes) {
      IntakeRoute ir;
      ir.name = r.name;
      // A from_table route whose table was never read has no lane; its
      // codec refuses every record.
      if (auto lane = route_lane_.find(r.name); lane != route_lane_.end()) ir.lane = lane->second;
      ir.codec = codecs.at(r.name);
      ir.allow_uids = r.allow_uids;
      ir.allow_gids = r.allow_gids;
      ir.metrics = &metrics_->Route(r.name);
      (*routes)[r.name] = std::move(ir);
    }
    return routes;
  }
  std::shared_ptr<const IntakeRouteTable> IntakeRoutes(const DaemonConfig& config) {
    return IntakeRoutes(config, codecs_);
  }

  // ------------------------------------------------------------- signals

  void WaitSignal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        if (ready_) Reload();
      } else {
        spdlog::info("{} received: stopping intake, waiting up to {} ms for in-flight ACKs",
                     sig == SIGTERM ? "SIGTERM" : "SIGINT", config_.shutdown_timeout_ms);
        Shutdown();
      }
      WaitSignal();  // a second signal during shutdown is absorbed
    });
  }

  // SIGHUP: validate the file, then apply its routes atomically, or refuse
  // it whole and keep running as before. Parked routes try again.
  void Reload() {
    ZB_CHECK_ON_LOOP(loop_);
    if (stopping_) return;
    sd_notify(0, "RELOADING=1");
    absl::Status s = ApplyReload();
    if (s.ok()) {
      sd_notify(0, "READY=1");
    } else {
      spdlog::error("SIGHUP: configuration {} refused, the running configuration stays:\n{}", config_path_,
                    std::string(s.message()));
      sd_notify(0, "READY=1");
    }
    for (auto& [name, lane] : lanes_) lane->Resume();
  }

  absl::Status ApplyReload() {
    auto loaded = LoadConfigFile(config_path_);
    if (!loaded.ok()) return loaded.status();
    DaemonConfig next = std::move(*loaded);
    auto codecs = MakeCodecs(next, known_tables_);
    if (!codecs.ok()) return codecs.status();
    const std::vector<std::string> restart_only = RestartOnlyChanges(config_, next);
    if (!restart_only.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("changed section(s) ", absl::StrJoin(restart_only, ", "),
                                                        " take effect only on restart; nothing was applied"));
    }
    std::swap(codecs_, *codecs);
    UpdateTableRouteCodecs(next);
    // Apply: every check passed.
    std::vector<std::string> added, removed, changed;
    std::set<std::string> current_lanes;
    std::map<std::string, std::string> next_route_lane;
    for (const auto& r : next.routes) {
      const std::optional<Destination> dest = DestinationOf(r, *codecs_[r.name], known_tables_);
      if (!dest) {  // a table never read: the route gets its lane once it is
        if (config_.FindRoute(r.name) == nullptr) added.push_back(r.name);
        continue;
      }
      const Destination& d = *dest;
      const std::string lane = LaneFor(r.name, d);
      next_route_lane[r.name] = lane;
      current_lanes.insert(lane);
      const bool was_route = route_lane_.count(r.name) > 0;
      auto info = lane_info_.find(lane);
      if (info != lane_info_.end() && info->second.settings == SettingsOf(r)) {
        if (!was_route) added.push_back(r.name);
        else if (route_lane_[r.name] != lane) changed.push_back(r.name);
        info->second.configured = true;
        continue;
      }
      if (spool_->LaneDestination(lane) != d.Encode()) {
        // Queued ahead of any append to the new lane (intake switches below).
        spool_->SetLaneDestinationAsync(lane, d.Encode(), [lane](absl::Status st) {
          if (!st.ok()) spdlog::error("lane {}: cannot record its destination: {}", lane, st.ToString());
        });
      }
      if (info != lane_info_.end()) {
        // New drain settings: a fresh lane takes over from the spool; what
        // the old one had in flight is simply sent again.
        lanes_[lane]->Abort();
      }
      (was_route ? changed : added).push_back(r.name);
      AddLane(lane, r.name, d, SettingsOf(r), /*configured=*/true);
      lanes_[lane]->Start();
    }
    for (auto& [name, info] : lane_info_) {
      if (current_lanes.count(name) > 0 || !info.configured) continue;
      info.configured = false;  // keeps draining what it holds; takes nothing new
      if (std::none_of(next.routes.begin(), next.routes.end(), [&route = info.route](const RouteConfig& r) { return r.name == route; })) {
        removed.push_back(info.route);
      }
      if (spool_->Stats(name).records > 0) {
        spdlog::info("lane \"{}\" no longer takes records: its {} spooled records still drain to {}", name,
                     spool_->Stats(name).records, info.dest.Describe());
      }
    }
    route_lane_ = std::move(next_route_lane);
    intake_->SetRoutes(IntakeRoutes(next));
    config_ = std::move(next);
    for (const auto& r : config_.routes) {
      if (r.schema_from_table && known_tables_.count(r.table) == 0) ReadTable(r.table);
    }
    spdlog::set_level(spdlog::level::from_str(config_.log_level));
    ConfigureLogging(config_.log_format == "json" ? LogFormat::kJson : LogFormat::kText, LogStreamIsJournal());
    RouteGrpcLoggingToSpdlog();  // gRPC's verbosity follows the new level
    spdlog::info("SIGHUP: configuration reloaded: {} route(s); added [{}], removed [{}], changed [{}]",
                 config_.routes.size(), absl::StrJoin(added, ", "), absl::StrJoin(removed, ", "),
                 absl::StrJoin(changed, ", "));
    return absl::OkStatus();
  }

  void Shutdown() {
    ZB_CHECK_ON_LOOP(loop_);
    if (stopping_) {
      return;
    }
    stopping_ = true;
    if (!ready_ && intake_ == nullptr) return;  // still starting: Run() checks stopping_
    ready_ = false;
    sd_notify(0, "STOPPING=1");
    // Intake stops accepting and reading; producers already connected still
    // get answers for what was read. Meanwhile the lanes stop sending, wait
    // for in-flight ACKs and half-close. Both run until done or the
    // deadline; a producer that never reads its replies cannot make the
    // lanes give up their ACKs early.
    intake_->StopAccepting();
    // Records waiting for spool room (when_full: block) will not get it now:
    // their producers hear so instead of waiting for the deadline.
    spool_->AbortWaitingAppends("zerobusd is shutting down and the spool is full");
    deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.shutdown_timeout_ms);
    lanes_stopping_ = lanes_.size();
    for (auto& [name, lane] : lanes_) {
      lane->Stop([this] {
        --lanes_stopping_;
        MaybeFinish();
      });
    }
    auto deadline = std::make_shared<asio::steady_timer>(loop_, deadline_);
    deadline->async_wait([this, deadline](const boost::system::error_code&) {
      if (finished_) return;
      spdlog::warn("shutdown deadline reached: cancelling streams; unacked records stay spooled");
      for (auto& [name, lane] : lanes_) lane->Abort();
      Finish();
    });
    MaybeFinish();
  }

  // Finishes once every lane stopped and every producer got its answers.
  void MaybeFinish() {
    ZB_CHECK_ON_LOOP(loop_);
    if (finished_) return;
    if (lanes_stopping_ == 0 && intake_->connection_count() == 0) {
      Finish();
      return;
    }
    if (lanes_stopping_ == 0 && !intake_poll_armed_) {
      // Connections close on their own once answered; look again shortly.
      intake_poll_armed_ = true;
      auto timer = std::make_shared<asio::steady_timer>(loop_, std::chrono::milliseconds(10));
      timer->async_wait([this, timer](const boost::system::error_code&) {
        intake_poll_armed_ = false;
        MaybeFinish();
      });
    }
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    signals_.cancel();
    tick_.cancel();
    loop_.stop();
  }

  void Tick() {
    sd_notify(0, "WATCHDOG=1");
    tick_.expires_after(std::chrono::seconds(1));
    tick_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec && !finished_) Tick();
    });
  }

  // The scraping thread (refresh hook), never the loop: finding the oldest
  // record reads the spool. Spool stats and gauges are thread-safe.
  void PublishSpoolGauges() {
    const int64_t now_us = NowUs();
    for (const std::string& lane : spool_->Lanes()) {
      const LaneStats s = spool_->Stats(lane);
      metrics_->SpoolDepth(lane, s.records);
      const int64_t oldest = s.records > 0 ? spool_->OldestAppendTimeUs(lane) : 0;
      metrics_->OldestRecordAge(lane, oldest > 0 ? static_cast<double>(now_us - oldest) / 1e6 : 0.0);
    }
    metrics_->SpoolTotalBytes(spool_->TotalBytes());
    const DeadLetterStats dead = spool_->dead_letters().Totals();
    metrics_->DeadLetterStore(dead.records, dead.bytes);
    metrics_->SpoolFull(spool_->full());
    const SpoolWriterTimes writer = spool_->WriterTimes();
    for (const auto& [phase, seconds] : std::initializer_list<std::pair<const char*, double>>{
             {"idle", writer.idle},
             {"building", writer.building},
             {"logging", writer.logging},
             {"syncing", writer.syncing},
             {"memtable", writer.memtable},
             {"stalled", writer.stalled},
             {"answering", writer.answering}}) {
      metrics_->SpoolWriterSeconds(phase, seconds);
    }
    metrics_->SpoolCommits(writer.commits);
  }

  // ------------------------------------------------------------- control

  void HandleControl(const std::string& line, ControlServer::Reply reply) {
    ZB_CHECK_ON_LOOP(loop_);
    auto command = ParseControlCommand(line);
    if (!command.ok()) {
      reply(ControlError(std::string(command.status().message())));
      return;
    }
    // The spool answers on the loop.
    const PostFn on_loop = PostTo(std::weak_ptr<asio::io_context>(loop_ptr_));
    switch (command->kind) {
      case ControlCommand::Kind::kStatus: {
        // The oldest record of each lane that holds some is read on the
        // spool's reader thread (never on the loop); the answer goes out
        // when the last read is in.
        auto status = std::make_shared<DaemonStatus>(Status());
        auto pending = std::make_shared<size_t>(0);
        for (const LaneStatus& l : status->lanes) *pending += l.spooled > 0 ? 1 : 0;
        if (*pending == 0) {
          reply(RenderStatus(*status));
          return;
        }
        for (size_t i = 0; i < status->lanes.size(); ++i) {
          if (status->lanes[i].spooled == 0) continue;
          const std::string& lane = status->lanes[i].lane;
          spool_->ReadFromAsync(
              lane, spool_->Stats(lane).deleted_up_to + 1, 1, 1, 0,
              [status, pending, i, reply](absl::StatusOr<std::vector<SpoolRecord>> records) mutable {
                if (records.ok() && !records->empty() && records->front().append_time_us > 0) {
                  status->lanes[i].oldest_age_seconds =
                      static_cast<double>(NowUs() - records->front().append_time_us) / 1e6;
                }
                if (--*pending == 0) reply(RenderStatus(*status));
              },
              on_loop);
        }
        return;
      }
      case ControlCommand::Kind::kResume: {
        // A route name (its current lane) or a lane name; none: every lane.
        const std::string& which = command->filter.lane;
        std::string lane_name = which;
        if (auto it = route_lane_.find(which); it != route_lane_.end()) lane_name = it->second;
        if (!which.empty() && lanes_.count(lane_name) == 0) {
          std::vector<std::string> known;
          for (const auto& [name, lane] : lanes_) known.push_back(name);
          reply(ControlError(absl::StrCat("unknown route \"", which, "\" (known: ", absl::StrJoin(known, ", "), ")")));
          return;
        }
        // Parked lanes try again; failing or stuck ones reconnect now on a
        // new connection; "resumed" counts both.
        uint64_t resumed = 0;
        for (auto& [name, lane] : lanes_) {
          if (!which.empty() && name != lane_name) continue;
          if (lane->Resume()) ++resumed;
        }
        reply(RenderCount("resumed", resumed));
        return;
      }
      case ControlCommand::Kind::kDlqList: {
        const bool payloads = command->payloads;
        const size_t limit = command->limit;
        // One more than asked tells whether there is a next page.
        spool_->dead_letters().ListAsync(
            command->filter, command->from_id, limit + 1,
            [reply, payloads, limit](absl::StatusOr<std::vector<DeadLetter>> entries) mutable {
              if (!entries.ok()) {
                reply(ControlError(std::string(entries.status().message())));
                return;
              }
              uint64_t next_id = 0;
              if (entries->size() > limit) {
                next_id = entries->back().id;
                entries->pop_back();
              }
              reply(RenderDeadLetters(*entries, payloads, next_id));
            },
            on_loop);
        return;
      }
      case ControlCommand::Kind::kDlqReplay:
        spool_->dead_letters().ReplayAsync(
            command->filter,
            [this, reply](absl::StatusOr<std::map<std::string, AppendResult>> appended) mutable {
              ZB_CHECK_ON_LOOP(loop_);  // reads lanes_
              if (!appended.ok()) {
                reply(ControlError(std::string(appended.status().message())));
                return;
              }
              uint64_t n = 0;
              std::vector<std::string> waiting;
              for (const auto& [lane, range] : *appended) {
                n += range.last_seq - range.first_seq + 1;
                if (lanes_.count(lane) == 0) waiting.push_back(lane);  // lanes hear of the rest from the spool
              }
              spdlog::info("control: {} dead letters replayed into their routes", n);
              reply(RenderCount("replayed", n,
                                waiting.empty() ? ""
                                                : absl::StrCat("route(s) ", absl::StrJoin(waiting, ", "),
                                                               " are not configured: their records stay spooled")));
            },
            on_loop);
        return;
      case ControlCommand::Kind::kDlqPurge:
        spool_->dead_letters().PurgeAsync(
            command->filter,
            [reply](absl::StatusOr<uint64_t> purged) mutable {
              if (!purged.ok()) {
                reply(ControlError(std::string(purged.status().message())));
                return;
              }
              spdlog::warn("control: {} dead letters purged", *purged);
              reply(RenderCount("purged", *purged));
            },
            on_loop);
        return;
    }
  }

  DaemonStatus Status() {
    DaemonStatus st;
    st.ready = ready_;
    for (const auto& [name, lane] : lanes_) {
      const LaneStats s = spool_->Stats(name);
      LaneStatus l;
      l.lane = name;
      l.route = lane_info_[name].route;
      l.table = lane_info_[name].dest.table;
      l.state = LaneStateName(lane->state());
      l.parked_reason = lane->parked_reason();
      l.configured = lane_info_[name].configured;
      l.spooled = s.records;
      l.bytes = s.bytes;
      l.inflight_requests = lane->inflight_requests();
      l.open_streams = lane->open_streams();
      l.max_streams = lane_info_[name].settings.max_streams;
      for (FailureKind kind : kFailureKinds) {
        const FailureTally& t = lane->health().tally(kind);
        if (t.count == 0) continue;
        l.failures.push_back(LaneFailure{FailureKindName(kind), t.count, t.last_unix_us, t.last_message, t.explanation});
      }
      l.failing_attempts = lane->health().failing() ? lane->health().outage_failures() : 0;
      st.lanes.push_back(std::move(l));
    }
    for (const auto& r : config_.routes) {
      if (!r.schema_from_table || known_tables_.count(r.table) > 0) continue;
      auto read = table_reads_.find(r.table);
      st.waiting_routes.push_back(WaitingRoute{
          r.name, r.table,
          read == table_reads_.end() || read->second.last_error.ok() ? "" : read->second.last_error.ToString()});
    }
    st.spool_bytes = spool_->TotalBytes();
    st.spool_max_bytes = config_.spool.max_bytes;
    st.spool_full = spool_->full();
    st.dead_letters = spool_->dead_letters().Totals();
    return st;
  }

  struct LaneInfo {
    std::string route;  // the route it serves (or served)
    Destination dest;
    LaneSettings settings;
    bool configured = true;
  };
  // Reading one from_table table (loop state).
  struct TableRead {
    bool reading = false;
    std::chrono::steady_clock::time_point finished;  // the last read's end
    absl::Status last_error;                         // of the last read (OK: it succeeded)
    std::unique_ptr<Backoff> backoff;                // retries while the table was never read
    std::unique_ptr<asio::steady_timer> retry;
    std::unique_ptr<asio::steady_timer> read_soon;   // a stream open's read, held back to the 1 s spacing
    bool read_soon_armed = false;
    bool again = false;  // asked for while a read was under way
  };
  struct DropLog {
    uint64_t records = 0;  // dropped and not yet logged
    uint64_t bytes = 0;
    std::chrono::steady_clock::time_point last;  // last log line
    bool flush_armed = false;
  };

  DaemonConfig config_;
  const std::string config_path_;
  std::shared_ptr<asio::io_context> loop_ptr_;
  asio::io_context& loop_;
  Codecs codecs_;
  Endpoint endpoint_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<TokenSource> tokens_;
  std::unique_ptr<ConnectionProber> prober_;
  UnknownColumnHook unknown_column_hook_;
  std::unique_ptr<TableSchemaReader> table_reader_;
  KnownTables known_tables_;
  int64_t last_read_stamp_ = 0;  // NextReadStamp's last
  std::map<std::string, TableRead> table_reads_;  // by table
  std::map<std::string, std::unique_ptr<IngestStreamFactory>> factories_;
  std::map<std::string, std::shared_ptr<DrainLane>> lanes_;
  std::map<std::string, LaneInfo> lane_info_;         // by lane
  std::map<std::string, std::string> route_lane_;     // configured route -> its current lane
  std::map<std::string, DropLog> drop_log_;
  std::unique_ptr<IntakeServer> intake_;
  std::unique_ptr<ControlServer> control_;
  asio::signal_set signals_;
  asio::steady_timer tick_;
  std::atomic<bool> ready_{false};
  bool stopping_ = false;
  bool finished_ = false;
  size_t lanes_stopping_ = 0;
  bool intake_poll_armed_ = false;
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace

namespace {

// Descriptors kept beside intake's connections: the spool (RocksDB's files
// and WAL), gRPC channels, the metrics and control servers (each capped),
// logs. Intake can never take these: the daemon refuses to start when
// intake.max_connections does not leave them free.
constexpr uint64_t kReservedDescriptors = 512;

absl::Status CheckDescriptors(const DaemonConfig& config) {
  struct rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return absl::OkStatus();
  const uint64_t needed = uint64_t{config.intake.max_connections} + kReservedDescriptors;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "intake.max_connections: ", config.intake.max_connections, " connections plus the ", kReservedDescriptors,
        " descriptors the daemon keeps for its spool and servers need ", needed,
        ", but the descriptor limit is ", limit.rlim_cur,
        " (raise LimitNOFILE / ulimit -n, or lower intake.max_connections)"));
  }
  return absl::OkStatus();
}

absl::Status CheckSocketPath(const std::string& path, const std::string& key, bool allow_live) {
  struct stat st{};
  if (lstat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(key, ": ", path, " exists and is not a socket (the daemon will not replace it)"));
  }
  if (allow_live) return absl::OkStatus();
  auto live = UnixSocketIsLive(path);
  if (!live.ok()) return absl::FailedPreconditionError(absl::StrCat(key, ": ", live.status().message()));
  if (*live) {
    return absl::FailedPreconditionError(
        absl::StrCat(key, ": ", path, " is in use: another process (a running zerobusd?) accepts connections on it"));
  }
  return absl::OkStatus();
}

absl::Status CheckMetricsPort(const std::string& listen) {
  auto ep = ParseEndpoint(listen);
  if (!ep.ok()) return absl::OkStatus();  // the config loader reported it
  boost::system::error_code ec;
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  auto results = resolver.resolve(ep->host, std::to_string(ep->port), ec);
  if (ec || results.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("metrics.listen: cannot resolve ", ep->host, ": ", ec ? ec.message() : "no address"));
  }
  asio::ip::tcp::acceptor probe(io);
  const auto endpoint = results.begin()->endpoint();
  probe.open(endpoint.protocol(), ec);
  if (!ec) probe.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) probe.bind(endpoint, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("metrics.listen: cannot listen on ", listen, ": ", ec.message(),
                                                      ec == asio::error::address_in_use ? " (another process has it)"
                                                                                        : ""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckRuntimeConfig(const DaemonConfig& config, RuntimeCheck mode) {
  std::vector<std::string> problems;
  if (auto codecs = MakeCodecs(config); !codecs.ok()) problems.push_back(std::string(codecs.status().message()));
  struct stat st{};
  if (stat(config.spool.path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    problems.push_back(absl::StrCat("spool.path: ", config.spool.path, " exists and is not a directory"));
  }
  const bool allow_live = mode == RuntimeCheck::kRunning;
  for (const auto& [path, key] : {std::pair{config.intake.socket, "intake.socket"},
                                  std::pair{config.control.socket, "control.socket"}}) {
    if (auto s = CheckSocketPath(path, key, allow_live); !s.ok()) problems.push_back(std::string(s.message()));
  }
  if (mode == RuntimeCheck::kStart && !config.metrics.listen.empty()) {
    if (auto s = CheckMetricsPort(config.metrics.listen); !s.ok()) problems.push_back(std::string(s.message()));
  }
  if (auto s = CheckDescriptors(config); !s.ok()) problems.push_back(std::string(s.message()));
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "\n"));
  return absl::OkStatus();
}

absl::Status RunDaemon(const DaemonConfig& config, const std::string& config_path) {
  Daemon daemon(config, config_path);
  return daemon.Run();
}

}  // namespace zb
