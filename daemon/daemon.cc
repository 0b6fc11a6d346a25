#include "daemon/daemon.h"

#include <systemd/sd-daemon.h>

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "auth/token_source.h"
#include "common/endpoint.h"
#include "common/status.h"
#include "drain/drain_lane.h"
#include "intake/intake_server.h"
#include "metrics/metrics.h"
#include "schema/record_codec.h"
#include "spdlog/spdlog.h"
#include "spool/spool.h"
#include "zerobus/ingest_stream.h"

namespace zb {
namespace {

namespace asio = boost::asio;

absl::StatusOr<std::map<std::string, std::shared_ptr<const RecordCodec>>> MakeCodecs(const DaemonConfig& config) {
  std::map<std::string, std::shared_ptr<const RecordCodec>> codecs;
  std::vector<std::string> problems;
  for (size_t i = 0; i < config.routes.size(); ++i) {
    const RouteConfig& r = config.routes[i];
    if (r.format == RecordFormat::kJson) {
      codecs[r.name] = MakeJsonCodec();
      continue;
    }
    auto codec = MakeProtoCodec(r.proto_file, r.message);
    if (!codec.ok()) {
      problems.push_back(absl::StrCat("routes[", i, "].schema: ", codec.status().message()));
      continue;
    }
    codecs[r.name] = std::move(*codec);
  }
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "\n"));
  return codecs;
}

// Everything the running daemon owns. Loop-thread state lives here; the
// members are declared in construction order and destroyed in reverse.
class Daemon {
 public:
  explicit Daemon(const DaemonConfig& config)
      : config_(config), loop_ptr_(std::make_shared<asio::io_context>()), loop_(*loop_ptr_), signals_(loop_), tick_(loop_) {}

  absl::Status Run() {
    ZB_ASSIGN_OR_RETURN(auto codecs, MakeCodecs(config_));
    ZB_ASSIGN_OR_RETURN(auto endpoint, ParseEndpoint(config_.zerobus.endpoint));
    if (!config_.zerobus.tls) {
      spdlog::warn("zerobus.tls is false: talking plaintext to {} (only for a local dev server)", endpoint.Target());
    }

    SpoolOptions spool_options;
    spool_options.path = config_.spool.path;
    spool_options.sync = config_.spool.sync == SyncPolicy::kAlways;
    if (!spool_options.sync) {
      spdlog::warn("spool.sync is none: producers are acknowledged before fsync; a power loss can lose them");
    }
    ZB_ASSIGN_OR_RETURN(spool_, OpenRocksDbSpool(spool_options));
    metrics_ = MakePrometheusMetrics();
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
    oauth.workspace_id = config_.zerobus.workspace_id.empty() ? WorkspaceIdFromHost(endpoint.host)
                                                              : config_.zerobus.workspace_id;
    oauth.client_id = config_.zerobus.client_id;
    oauth.client_secret = config_.zerobus.client_secret;
    oauth.ca_file = config_.zerobus.ca_file;
    oauth.user_agent = absl::StrCat("zerobusd/", ZEROBUSD_VERSION);
    tokens_ = MakeOAuthTokenSource(oauth);

    // gRPC threads may finish a cancelled call after the daemon is gone; they
    // then find no loop and drop the event.
    std::weak_ptr<asio::io_context> weak_loop = loop_ptr_;
    auto post = [weak_loop](std::function<void()> fn) {
      if (auto loop = weak_loop.lock()) asio::post(*loop, std::move(fn));
    };
    auto routes = std::make_shared<IntakeRouteTable>();
    for (const auto& r : config_.routes) {
      GrpcTargetOptions target;
      target.target = endpoint.Target();
      target.tls = config_.zerobus.tls;
      target.ca_file = config_.zerobus.ca_file;
      target.sdk_id = absl::StrCat("zerobusd/", ZEROBUSD_VERSION);
      factories_[r.name] = MakeGrpcStreamFactory(target, post);

      DrainLaneOptions lane;
      lane.route = r.name;
      lane.table = r.table;
      lane.proto = r.format == RecordFormat::kProto;
      lane.descriptor_proto = codecs[r.name]->descriptor_proto();
      lane.max_inflight_requests = r.drain.max_inflight_requests;
      lane.max_batch_records = r.drain.max_batch_records;
      lane.max_batch_bytes = r.drain.max_batch_bytes;
      lane.linger = std::chrono::milliseconds(r.drain.linger_ms);
      lane.ack_timeout = std::chrono::milliseconds(r.drain.ack_timeout_ms);
      lane.create_timeout = std::chrono::milliseconds(r.drain.create_timeout_ms);
      lane.backoff.initial = std::chrono::milliseconds(r.drain.backoff_initial_ms);
      lane.backoff.max = std::chrono::milliseconds(r.drain.backoff_max_ms);
      lanes_[r.name] =
          std::make_shared<DrainLane>(loop_, lane, *spool_, *factories_[r.name], *tokens_, *metrics_);

      IntakeRoute ir;
      ir.name = r.name;
      ir.codec = codecs[r.name];
      ir.allow_uids = r.allow_uids;
      ir.allow_gids = r.allow_gids;
      (*routes)[r.name] = std::move(ir);
    }
    for (const std::string& lane : spool_->Lanes()) {
      if (lanes_.count(lane) == 0 && spool_->Stats(lane).records > 0) {
        spdlog::warn("spool holds {} records of route \"{}\", which is not configured; they stay spooled",
                     spool_->Stats(lane).records, lane);
      }
    }

    IntakeOptions intake;
    intake.socket_path = config_.intake.socket;
    intake.socket_mode = config_.intake.socket_mode;
    intake.max_record_bytes = config_.intake.max_record_bytes;
    intake.max_inflight_bytes = config_.intake.max_inflight_bytes;
    intake.max_connections = config_.intake.max_connections;
    ZB_ASSIGN_OR_RETURN(intake_, StartIntakeServer(loop_, intake, routes, *spool_, *metrics_,
                                                   [this](const std::string& route, const AppendResult& r) {
                                                     auto it = lanes_.find(route);
                                                     if (it != lanes_.end()) it->second->OnAppended(r.last_seq);
                                                   }));

    for (auto& [name, lane] : lanes_) lane->Start();
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGHUP);
    WaitSignal();
    Tick();
    ready_ = true;
    sd_notify(0, "READY=1");
    spdlog::info("zerobusd {} ready: socket {}, spool {}, {} route(s)", ZEROBUSD_VERSION, config_.intake.socket,
                 config_.spool.path, config_.routes.size());
    loop_.run();
    spdlog::info("zerobusd stopped");
    return absl::OkStatus();
  }

  ~Daemon() {
    // Order: stop producing events, then free their consumers.
    intake_.reset();
    lanes_.clear();
    // gRPC may still be unwinding a call that just ended (its internal
    // threads drop their last references after OnDone); tearing down the
    // channel now races with that. The process is about to exit, so the
    // channels are left to the OS instead.
    for (auto& [name, factory] : factories_) (void)factory.release();
    tokens_.reset();
    metrics_server_.reset();  // no scrape (and refresh) runs past here
    if (metrics_) metrics_->SetRefreshHook(nullptr);
    spool_.reset();
  }

 private:
  void WaitSignal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        spdlog::warn("SIGHUP: configuration reload is not supported yet; restart to apply changes");
        WaitSignal();
        return;
      }
      spdlog::info("{} received: stopping intake, waiting up to {} ms for in-flight ACKs",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT", config_.shutdown_timeout_ms);
      Shutdown();
      WaitSignal();  // a second signal during shutdown is absorbed
    });
  }

  void Shutdown() {
    if (stopping_) {
      return;
    }
    stopping_ = true;
    ready_ = false;
    sd_notify(0, "STOPPING=1");
    // Intake stops accepting and reading; producers already connected still
    // get answers for what was read. Meanwhile the lanes stop sending, wait
    // for in-flight ACKs and half-close. Both run until done or the
    // deadline; a producer that never reads its replies cannot make the
    // lanes give up their ACKs early.
    intake_->StopAccepting();
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
    const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    for (const std::string& lane : spool_->Lanes()) {
      const LaneStats s = spool_->Stats(lane);
      metrics_->SpoolDepth(lane, s.records);
      const int64_t oldest = s.records > 0 ? spool_->OldestAppendTimeUs(lane) : 0;
      metrics_->OldestRecordAge(lane, oldest > 0 ? static_cast<double>(now_us - oldest) / 1e6 : 0.0);
    }
    metrics_->SpoolTotalBytes(spool_->TotalBytes());
  }

  const DaemonConfig& config_;
  std::shared_ptr<asio::io_context> loop_ptr_;
  asio::io_context& loop_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<TokenSource> tokens_;
  std::map<std::string, std::unique_ptr<IngestStreamFactory>> factories_;
  std::map<std::string, std::shared_ptr<DrainLane>> lanes_;
  std::unique_ptr<IntakeServer> intake_;
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

absl::Status CheckRuntimeConfig(const DaemonConfig& config) { return MakeCodecs(config).status(); }

absl::Status RunDaemon(const DaemonConfig& config, const std::string& config_path) {
  Daemon daemon(config);
  return daemon.Run();
}

}  // namespace zb
