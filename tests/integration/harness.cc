#include "harness.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <fstream>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"

namespace zb::testing {

DevServer::DevServer(const std::string& dir, int grpc_port, int http_port, std::vector<std::string> extra)
    : dir_(dir), grpc_port_(grpc_port), http_port_(http_port), extra_(std::move(extra)) {}

DevServer::~DevServer() { Kill(); }

bool DevServer::Start() {
  std::vector<std::string> argv = {BinDir() + "/zerobus-devserver",
                                   "--grpc-listen", absl::StrCat("127.0.0.1:", grpc_port_),
                                   "--http-listen", absl::StrCat("127.0.0.1:", http_port_),
                                   "--output-dir", output_dir(),
                                   "--ack-interval-ms", "50"};
  for (auto& e : extra_) argv.push_back(e);
  const std::string log_path = dir_ + "/devserver.log";
  const size_t log_start = ReadFileOrEmpty(log_path).size();
  process_ = std::make_unique<Process>(argv, log_path);
  const std::regex re(R"(listening grpc=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+))");
  return WaitFor(
      [&] {
        const std::string text = ReadFileOrEmpty(log_path).substr(log_start);
        std::smatch m;
        if (!std::regex_search(text, m, re)) return false;
        grpc_port_ = std::stoi(m[1]);
        http_port_ = std::stoi(m[2]);
        return true;
      },
      std::chrono::seconds(20));
}

void DevServer::Kill() {
  if (process_) process_->Kill();
  process_.reset();
}

std::vector<std::string> DevServer::Rows(const std::string& table) const {
  return ReadLines(output_dir() + "/" + table + ".jsonl");
}

absl::StatusOr<std::string> DevServer::Stats() const { return HttpGet(http_port_, "/stats"); }

std::string DevServer::log() const { return ReadFileOrEmpty(dir_ + "/devserver.log"); }

int64_t DevServer::Stat(const std::string& key) const {
  auto stats = Stats();
  if (!stats.ok()) return -1;
  const std::string k = absl::StrCat("\"", key, "\":");
  const size_t at = stats->find(k);
  if (at == std::string::npos) return -1;
  return std::stoll(stats->substr(at + k.size()));
}

int64_t DevServer::TableStat(const std::string& table, const std::string& key) const {
  auto stats = Stats();
  if (!stats.ok()) return -1;
  const size_t table_at = stats->find(absl::StrCat("\"", table, "\":{"));
  if (table_at == std::string::npos) return -1;
  const std::string k = absl::StrCat("\"", key, "\":");
  const size_t at = stats->find(k, table_at);
  if (at == std::string::npos) return -1;
  return std::stoll(stats->substr(at + k.size()));
}

bool DevServer::SetFaults(const std::string& json) const {
  auto r = HttpRequest(http_port_, "POST", "/faults", {"Content-Type: application/json"}, json);
  return r.ok() && r->status == 200;
}

Daemon::Daemon(const std::string& dir, DaemonOptions options)
    : dir_(dir), options_(std::move(options)), metrics_port_(FreePort()) {}

Daemon::~Daemon() { Kill(); }

void Daemon::WriteConfig() {
  std::string routes = options_.routes_yaml.empty()
                           ? "routes:\n  - name: readings\n    table: main.edge.readings\n    format: json\n"
                           : options_.routes_yaml;
  WriteFile(config_path(),
            absl::StrCat("zerobus:\n"
                         "  endpoint: \"",
                         options_.endpoint.empty() ? absl::StrCat("http://127.0.0.1:", options_.grpc_port)
                                                   : options_.endpoint,
                         "\"\n",
                         "  workspace_url: \"http://127.0.0.1:", options_.http_port, "\"\n",
                         "  workspace_id: \"1234567890\"\n"
                         "  tls: ", options_.tls ? "true" : "false", "\n",
                         "  client_id: dev-client\n"
                         "  client_secret: dev-secret\n",
                         // The dev server has no quota unless a test gives it one:
                         // neither has the daemon, unless the test sets its own.
                         absl::StrContains(options_.zerobus_yaml, "stream_quota")
                             ? ""
                             : "  stream_quota: {rows_per_second: 1000000000, bytes_per_second: 1TiB}\n",
                         options_.zerobus_yaml,
                         "spool:\n"
                         "  path: ", options_.spool_path.empty() ? dir_ + "/spool" : options_.spool_path, "\n",
                         options_.spool_yaml,
                         "intake:\n"
                         "  socket: ", socket(), "\n",
                         options_.intake_yaml,
                         "control:\n"
                         "  socket: ", control_socket(), "\n"
                         "metrics:\n"
                         "  listen: \"127.0.0.1:", metrics_port_, "\"\n"
                         "shutdown_timeout_ms: ", options_.shutdown_timeout_ms, "\n",
                         options_.extra_yaml.empty()
                             ? "drain:\n  backoff_initial_ms: 50\n  backoff_max_ms: 500\n"
                             : options_.extra_yaml,
                         routes));
}

void Daemon::Launch() {
  WriteConfig();
  std::vector<std::string> argv = options_.wrapper;
  argv.push_back(BinDir() + "/zerobusd");
  argv.push_back("--config");
  argv.push_back(config_path());
  argv.push_back("--log-level");
  // ZB_DAEMON_LOG_LEVEL=trace when debugging a test.
  argv.push_back(getenv("ZB_DAEMON_LOG_LEVEL") ? getenv("ZB_DAEMON_LOG_LEVEL") : "info");
  process_ = std::make_unique<Process>(argv, dir_ + "/zerobusd.log");
}

bool Daemon::Start() {
  Launch();
  bool exited = false;
  const bool done = WaitFor(
      [&] {
        if (!process_->Running()) {
          exited = true;  // it failed to start: no point waiting
          return true;
        }
        return HttpGet(metrics_port_, "/readyz").ok();
      },
      std::chrono::seconds(20));
  return done && !exited;
}

void Daemon::SetRoutes(const std::string& routes_yaml) {
  options_.routes_yaml = routes_yaml;
  WriteConfig();
}

void Daemon::Kill() {
  if (process_) process_->Kill();
  process_.reset();
}

int Daemon::Terminate(std::chrono::milliseconds timeout) {
  if (!process_) return -1;
  process_->Signal(SIGTERM);
  const int code = process_->Wait(timeout);
  process_.reset();
  return code;
}

absl::StatusOr<double> Daemon::Metric(const std::string& name, const std::string& labels) const {
  auto body = HttpGet(metrics_port_, "/metrics");
  if (!body.ok()) return body.status();
  return MetricValue(*body, name, labels);
}

std::string Daemon::log() const { return ReadFileOrEmpty(dir_ + "/zerobusd.log"); }

std::string Daemon::Control(const std::string& request_json) const {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = control_socket();
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const timeval timeout{20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  const std::string line = request_json + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    ::close(fd);
    return "";
  }
  std::string reply;
  char buf[65536];
  ssize_t n;
  while (reply.find('\n') == std::string::npos && (n = ::recv(fd, buf, sizeof(buf), 0)) > 0) reply.append(buf, n);
  ::close(fd);
  return reply.substr(0, reply.find('\n'));
}

RunResult Daemon::Ctl(std::vector<std::string> args) const {
  std::vector<std::string> argv = {BinDir() + "/zerobusctl"};
  for (auto& a : args) argv.push_back(std::move(a));
  argv.push_back("--control");
  argv.push_back(control_socket());
  return RunCommand(argv, std::chrono::seconds(60));
}

void WriteRecords(const std::string& path, const std::string& prefix, int n, int size) {
  std::ofstream out(path, std::ios::trunc);
  const std::string filler(std::max(0, size - 60), 'x');
  for (int i = 0; i < n; ++i) {
    out << "{\"id\":\"" << prefix << "-" << i << "\",\"seq\":" << i << ",\"payload\":\"" << filler << "\"}\n";
  }
}

RunResult SendFile(const std::string& socket, const std::string& route, const std::string& path) {
  return RunCommand({BinDir() + "/zerobusctl", "send", "--socket", socket, "--route", route, path},
             std::chrono::seconds(300));
}

Delivery CheckDelivery(const DevServer& server, const std::string& table, const std::string& prefix, int n) {
  const auto ids = RowIds(server.Rows(table));
  Delivery d;
  for (int i = 0; i < n; ++i) {
    const size_t copies = ids.count(absl::StrCat(prefix, "-", i));
    if (copies == 0) {
      if (d.missing++ == 0) d.first_missing = absl::StrCat(prefix, "-", i);
    } else {
      d.duplicates += static_cast<int>(copies) - 1;
    }
  }
  return d;
}

std::multiset<std::string> RowIds(const std::vector<std::string>& rows) {
  std::multiset<std::string> ids;
  for (const auto& row : rows) {
    rapidjson::Document d;
    d.Parse(row.c_str());
    if (!d.HasParseError() && d.IsObject() && d.HasMember("id") && d["id"].IsString()) ids.insert(d["id"].GetString());
  }
  return ids;
}

}  // namespace zb::testing
