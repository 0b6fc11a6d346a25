#pragma once
// Process-level harness: the real zerobus-devserver and zerobusd binaries,
// started as child processes on loopback ports and Unix sockets in a temp dir.

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "testutil.h"

namespace zb::testing {

class DevServer {
 public:
  // `grpc_port`/`http_port` 0: pick free ports. Extra flags are appended.
  DevServer(const std::string& dir, int grpc_port = 0, int http_port = 0, std::vector<std::string> extra = {});
  ~DevServer();
  bool Start();  // waits for the "listening" line
  void Kill();
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  std::string output_dir() const { return dir_ + "/rows"; }
  // Rows written for `table`, as JSON lines.
  std::vector<std::string> Rows(const std::string& table) const;
  absl::StatusOr<std::string> Stats() const;
  // A counter of GET /stats, e.g. "violations"; -1 when unreadable.
  int64_t Stat(const std::string& key) const;
  // A counter of one table in GET /stats ("tables": {"<table>": {...}}),
  // e.g. "quota_trips"; -1 when unreadable or the table is not listed.
  int64_t TableStat(const std::string& table, const std::string& key) const;
  // Replaces the fault script (POST /faults); false if refused.
  bool SetFaults(const std::string& json) const;
  std::string log() const;

 private:
  std::string dir_;
  int grpc_port_, http_port_;
  std::vector<std::string> extra_;
  std::unique_ptr<Process> process_;
};

struct DaemonOptions {
  int grpc_port = 0;
  int http_port = 0;
  std::string extra_yaml;        // appended at top level (e.g. "drain:\n  linger_ms: 1\n")
  std::string routes_yaml;       // replaces the default single "readings" route
  std::string spool_yaml;        // more lines of the spool: section ("  max_bytes: 1MiB\n")
  std::vector<std::string> wrapper;  // argv prefix the daemon runs under (e.g. unshare)
  int shutdown_timeout_ms = 5000;
  std::string spool_path;  // default: <dir>/spool
  std::string intake_yaml;  // more lines of the intake: section ("  max_connections: 8\n")
  std::string socket_path;  // default: <dir>/zerobusd.sock
  std::string endpoint;     // zerobus.endpoint; default: http://127.0.0.1:<grpc_port>
  bool tls = false;         // zerobus.tls
  std::string zerobus_yaml; // more lines of the zerobus: section ("  ca_file: /x/ca.pem\n")
};

class Daemon {
 public:
  Daemon(const std::string& dir, DaemonOptions options);
  ~Daemon();
  void WriteConfig();
  bool Start();  // waits until /readyz answers 200
  // Starts the process without waiting for anything.
  void Launch();
  // Rewrites the config file with `routes_yaml` (and the same everything
  // else); for SIGHUP tests.
  void SetRoutes(const std::string& routes_yaml);
  void Kill();   // SIGKILL
  int Terminate(std::chrono::milliseconds timeout);  // SIGTERM, returns the exit code
  std::string socket() const { return options_.socket_path.empty() ? dir_ + "/zerobusd.sock" : options_.socket_path; }
  std::string control_socket() const { return dir_ + "/control.sock"; }
  std::string config_path() const { return dir_ + "/zerobusd.yaml"; }
  int metrics_port() const { return metrics_port_; }
  absl::StatusOr<double> Metric(const std::string& name, const std::string& labels = "") const;
  std::string log() const;
  Process* process() { return process_.get(); }
  // One control-socket request; returns the reply line ("" when the daemon
  // cannot be reached).
  std::string Control(const std::string& request_json) const;
  // Runs zerobusctl with `args` plus --control of this daemon.
  RunResult Ctl(std::vector<std::string> args) const;

 private:
  std::string dir_;
  DaemonOptions options_;
  int metrics_port_;
  std::unique_ptr<Process> process_;
};

// Writes `n` JSON records {"id": "<prefix>-<i>", "payload": ...} of about
// `size` bytes to `path`.
void WriteRecords(const std::string& path, const std::string& prefix, int n, int size = 200);

// Runs `zerobusctl send`; returns {exit code, output}.
RunResult SendFile(const std::string& socket, const std::string& route, const std::string& path);

// The "id" field of each JSON row.
std::multiset<std::string> RowIds(const std::vector<std::string>& rows);

// How the rows of `table` cover the ids <prefix>-0 .. <prefix>-(n-1).
struct Delivery {
  int missing = 0;     // ids that never arrived
  int duplicates = 0;  // extra copies of ids that did
  std::string first_missing;
};
Delivery CheckDelivery(const DevServer& server, const std::string& table, const std::string& prefix, int n);

}  // namespace zb::testing
