// zerobus-devserver: a local Zerobus-compatible server for development and
// tests. gRPC EphemeralStream + the OAuth token endpoint; rows are written per
// table as JSON lines under --output-dir.

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"
#include "tools/devserver/dev_state.h"
#include "tools/devserver/http_endpoint.h"
#include "tools/devserver/ingest_service.h"

namespace {

using zb::devserver::DevOptions;

struct Flag {
  const char* help;
  std::function<bool(const std::string&)> set;  // false: bad value
  bool takes_value = true;
  std::string default_text;
};

bool ParseInt(const std::string& v, int* out) {
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < 0 || n > 1'000'000'000) return false;
  *out = static_cast<int>(n);
  return true;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  DevOptions o;
  std::map<std::string, Flag> flags;
  auto str = [](std::string* dst) { return [dst](const std::string& v) { *dst = v; return true; }; };
  auto num = [](int* dst) { return [dst](const std::string& v) { return ParseInt(v, dst); }; };
  auto on = [](bool* dst, bool value) { return [dst, value](const std::string&) { *dst = value; return true; }; };
  flags["--grpc-listen"] = {"host:port of the Zerobus gRPC service (port 0: any free port)", str(&o.grpc_listen), true, o.grpc_listen};
  flags["--http-listen"] = {"host:port of the OAuth token endpoint and /stats", str(&o.http_listen), true, o.http_listen};
  flags["--output-dir"] = {"rows land in DIR/<table>.jsonl", str(&o.output_dir), true, o.output_dir};
  flags["--ack-interval-ms"] = {"coalesce ACKs on this timer; 0 acks every request", num(&o.ack_interval_ms), true, "200"};
  flags["--ack-latency-ms"] = {"ack each request this long after it came, pipelined (as the service; replaces --ack-interval-ms)",
                              num(&o.ack_latency_ms), true, "0"};
  flags["--stream-quota-rows"] = {"rows per second per stream; past it RESOURCE_EXHAUSTED (0: no quota)",
                                  num(&o.stream_quota_rows), true, "0"};
  flags["--stream-quota-bytes"] = {"request bytes per second per stream; past it RESOURCE_EXHAUSTED (0: no quota)",
                                   num(&o.stream_quota_bytes), true, "0"};
  flags["--stream-lifetime-ms"] = {"send CloseStreamSignal after this long; 0 never", num(&o.stream_lifetime_ms), true, "900000"};
  flags["--close-grace-ms"] = {"CloseStreamSignal duration before the hard close", num(&o.close_grace_ms), true, "5000"};
  flags["--close-with-ok"] = {"end rotated streams with OK instead of UNAVAILABLE 6002", on(&o.close_with_ok, true), false, ""};
  flags["--no-strict-offsets"] = {"accept wire offsets that are not 0,1,2,...", on(&o.strict_offsets, false), false, ""};
  flags["--accept-any-token"] = {"skip the bearer token check", on(&o.accept_any_token, true), false, ""};
  flags["--client-id"] = {"OAuth client id accepted by the token endpoint", str(&o.client_id), true, o.client_id};
  flags["--client-secret"] = {"OAuth client secret accepted by the token endpoint", str(&o.client_secret), true, o.client_secret};
  flags["--workspace-id"] = {"workspace id the token resource must name (empty: any)", str(&o.workspace_id), true, ""};
  flags["--token-ttl-s"] = {"expires_in of issued tokens", num(&o.token_ttl_s), true, "3600"};
  flags["--tls-cert"] = {"PEM certificate: serve gRPC over TLS", str(&o.tls_cert), true, ""};
  flags["--tls-key"] = {"PEM private key for --tls-cert", str(&o.tls_key), true, ""};
  flags["--log-level"] = {"trace|debug|info|warn|error", str(&o.log_level), true, o.log_level};
  flags["--tables"] = {"serve GET /api/2.1/unity-catalog/tables/NAME from DIR/NAME.json (metadata tokens only)",
                       str(&o.tables_dir), true, ""};
  flags["--faults"] = {"fault script: a JSON file, or inline JSON starting with '{' (docs/devserver.md)",
                       str(&o.faults), true, ""};

  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf("usage: zerobus-devserver [flags]\n\n");
      for (const auto& [name, f] : flags) {
        std::printf("  %-22s %s%s\n", (name + (f.takes_value ? " V" : "")).c_str(), f.help,
                    f.default_text.empty() ? "" : (" (default " + f.default_text + ")").c_str());
      }
      return 0;
    }
    std::string value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    auto it = flags.find(arg);
    if (it == flags.end()) {
      std::fprintf(stderr, "zerobus-devserver: unknown flag %s (see --help)\n", arg.c_str());
      return 2;
    }
    if (it->second.takes_value && eq == std::string::npos) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "zerobus-devserver: %s needs a value\n", arg.c_str());
        return 2;
      }
      value = argv[++i];
    }
    if (!it->second.set(value)) {
      std::fprintf(stderr, "zerobus-devserver: bad value \"%s\" for %s\n", value.c_str(), arg.c_str());
      return 2;
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    std::fprintf(stderr, "zerobus-devserver: --tls-cert and --tls-key go together\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(o.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e devserver %l %v");

  // SIGTERM/SIGINT are taken by sigwait below, not by default handlers.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // A bad fault script is refused before anything is created (the rows'
  // folder included).
  std::shared_ptr<zb::devserver::FaultScript> faults;
  if (!o.faults.empty()) {
    const std::string text = o.faults[0] == '{' ? o.faults : ReadFile(o.faults);
    auto script = zb::devserver::FaultScript::Parse(text);
    if (!script.ok()) {
      std::fprintf(stderr, "zerobus-devserver: --faults %s: %s\n", o.faults[0] == '{' ? "(inline)" : o.faults.c_str(),
                   std::string(script.status().message()).c_str());
      return 2;
    }
    faults = std::move(*script);
  }
  zb::devserver::DevState state(o);
  if (faults) state.SetFaults(std::move(faults));
  zb::devserver::IngestService service(state);
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!o.tls_cert.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({ReadFile(o.tls_key), ReadFile(o.tls_cert)});
    creds = grpc::SslServerCredentials(ssl);
  }
  int grpc_port = 0;
  builder.AddListeningPort(o.grpc_listen, creds, &grpc_port);
  // Above the 10 MiB request limit (checked by the service itself, as the
  // real one does), so an oversized request gets its INVALID_ARGUMENT.
  builder.SetMaxReceiveMessageSize(16 << 20);
  // Clients may keep connections alive with PINGs as often as every second,
  // also while idle, without being told off with GOAWAY (tests use
  // second-long keepalives to find dead connections quickly).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    std::fprintf(stderr, "zerobus-devserver: cannot listen on %s\n", o.grpc_listen.c_str());
    return 1;
  }
  auto http = zb::devserver::StartHttpEndpoint(o.http_listen, state);
  if (!http.ok()) {
    std::fprintf(stderr, "zerobus-devserver: %s\n", std::string(http.status().message()).c_str());
    return 1;
  }
  const std::string host = o.grpc_listen.substr(0, o.grpc_listen.rfind(':'));
  const std::string http_host = o.http_listen.substr(0, o.http_listen.rfind(':'));
  std::printf("zerobus-devserver listening grpc=%s:%d http=%s:%d\n", host.c_str(), grpc_port, http_host.c_str(),
              (*http)->port());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("signal {}: shutting down", sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  return 0;
}
