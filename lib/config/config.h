#pragma once
// The daemon's typed configuration. LoadConfig() parses YAML strictly:
// unknown keys and bad values are errors that name the key path, e.g.
// "routes[1].table: must be catalog.schema.table". Every problem found is
// reported, one per line, not just the first. Only config.cc includes yaml-cpp.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace zb {

enum class WhenFull { kBlock, kReject, kDropOldest };
enum class SyncPolicy { kAlways, kNone };  // kNone: no fsync before the producer ack (explicit opt-in)
enum class RecordFormat { kJson, kProto };

// The service's quota per stream (zerobus-protocol.md §6: 15,000 rows/s
// and 100 MB/s unless the workspace's are raised): each stream paces itself
// under it, so a healthy daemon never trips it.
struct StreamQuotaConfig {
  uint64_t rows_per_second = 15'000;
  uint64_t bytes_per_second = 100'000'000;

  bool operator==(const StreamQuotaConfig&) const = default;
};

struct ZerobusConfig {
  std::string endpoint;        // as written: https://host, http://host:port or host:port
  std::string workspace_url;   // OAuth token endpoint base, e.g. https://x.cloud.databricks.com
  std::string workspace_id;    // derived from the endpoint's first label when empty
  bool tls = true;             // false only for loopback servers
  std::string ca_file;         // optional PEM bundle replacing the system roots
  std::string client_id;       // resolved value (from client_id or client_id_file)
  std::string client_secret;   // resolved value (from client_secret, _file or $CREDENTIALS_DIRECTORY)
  // HTTP/2 keepalive on every connection to the endpoint, also while idle:
  // a PING after this long without one; no answer within the timeout ends
  // the connection and the lane reconnects on a new one.
  uint32_t keepalive_time_ms = 30'000;
  uint32_t keepalive_timeout_ms = 10'000;
  StreamQuotaConfig stream_quota;  // every route's, unless it sets its own

  bool operator==(const ZerobusConfig&) const = default;
};

struct SpoolConfig {
  std::string path = "/var/lib/zerobusd/spool";
  uint64_t max_bytes = 10ull << 30;      // total across routes
  uint64_t min_free_bytes = 256ull << 20; // filesystem guard
  uint64_t memory_budget = 32ull << 20;   // RocksDB's write buffers, block cache and group commit (SpoolOptions)
  WhenFull when_full = WhenFull::kBlock;
  SyncPolicy sync = SyncPolicy::kAlways;

  bool operator==(const SpoolConfig&) const = default;
};

struct IntakeConfig {
  std::string socket = "/run/zerobusd/zerobusd.sock";
  // Producers reach the socket through this group (a name or a numeric gid),
  // never through the daemon's own group. Empty: only the daemon's user
  // (and root) may connect.
  std::string socket_group;
  int64_t socket_gid = -1;                // socket_group resolved; -1 when empty
  uint32_t socket_mode = 0600;            // octal in YAML; default 0660 with socket_group, else 0600
  uint64_t max_record_bytes = 1ull << 20; // at most 10 MiB - 64 KiB
  // Per connection, read but not yet durable (unset: at least max_record_bytes).
  // A few group commits' worth keeps a producer at full speed; more only
  // costs memory (each record read is held as an object until it is durable).
  uint64_t max_inflight_bytes = 2ull << 20;
  uint64_t max_buffered_bytes = 128ull << 20;  // all connections together (IntakeOptions)
  uint32_t max_connections = 1024;
  uint32_t max_json_depth = 64;           // nesting levels of a JSON record
  uint32_t read_timeout_ms = 30'000;      // a started record must be complete by then
  uint32_t idle_timeout_ms = 600'000;     // 0: idle connections stay open

  bool operator==(const IntakeConfig&) const = default;
};

// The operator's Unix socket (zerobusctl dlq, status): JSON requests, one
// per line. Only the socket's permissions guard it: keep them tight.
struct ControlConfig {
  std::string socket = "/run/zerobusd/control.sock";
  uint32_t socket_mode = 0600;  // owner bits only: root and the daemon's user

  bool operator==(const ControlConfig&) const = default;
};

struct MetricsConfig {
  std::string listen = "127.0.0.1:9464";  // empty: no exposer

  bool operator==(const MetricsConfig&) const = default;
};

// Drain tuning; `drain:` at top level sets defaults, a route may override.
struct DrainConfig {
  uint32_t max_inflight_requests = 64;     // requests sent and not yet acked
  uint32_t max_batch_records = 1000;       // per request
  uint64_t max_batch_bytes = 2ull << 20;   // per request as encoded, at most 10 MiB - 64 KiB
  uint32_t linger_ms = 5;                  // wait for a fuller batch
  uint32_t ack_timeout_ms = 60'000;        // no server message while requests are in flight
  uint32_t create_timeout_ms = 15'000;     // stream open (token + create reply)
  uint32_t backoff_initial_ms = 200;
  uint32_t backoff_max_ms = 30'000;
  uint32_t max_close_grace_ms = 10'000;    // cap on a CloseStreamSignal's wait for ACKs
  uint32_t rotation_drain_ms = 500;        // late ACKs taken after the rotation's half-close
  uint32_t parked_retry_ms = 600'000;      // a parked lane tries again by itself
  uint32_t max_consecutive_dead_letters = 100;  // then the table is suspect: park
  uint32_t failure_log_interval_ms = 120'000;   // heartbeat line of a route that keeps failing
  uint32_t stream_idle_close_ms = 30'000;  // a lane's extra stream with nothing in flight this long closes

  bool operator==(const DrainConfig&) const = default;
};

struct RouteConfig {
  std::string name;    // [A-Za-z0-9_-]+, what producers name
  std::string table;   // catalog.schema.table
  RecordFormat format = RecordFormat::kJson;
  std::string proto_file;  // proto routes
  std::string message;     // proto routes: message name (may be package-qualified)
  // Proto routes: the table's columns, read from Unity Catalog at start and
  // at every stream open, are the schema (no proto_file or message).
  bool schema_from_table = false;
  // Proto routes with a proto_file: fields whose JSON values are converted
  // by a Unity Catalog column type, as written (field name, type text).
  std::vector<std::pair<std::string, std::string>> column_types;
  std::vector<uint32_t> allow_uids;  // empty and allow_gids empty: everyone who can open the socket
  std::vector<uint32_t> allow_gids;
  DrainConfig drain;
  StreamQuotaConfig stream_quota;  // zerobus.stream_quota, with the route's own keys on top
  uint32_t max_streams = 4;  // streams the lane may hold open to its table at once (1: one ordered stream)

  bool operator==(const RouteConfig&) const = default;
};

struct DaemonConfig {
  ZerobusConfig zerobus;
  SpoolConfig spool;
  IntakeConfig intake;
  MetricsConfig metrics;
  ControlConfig control;
  DrainConfig drain;  // the top-level drain: section (defaults of every route)
  uint32_t shutdown_timeout_ms = 10'000;  // SIGTERM: wait this long for in-flight ACKs
  std::string log_level = "info";
  // text, or json: one JSON object per line for log shippers. Under systemd
  // either carries syslog priority prefixes (daemon/logging.h).
  std::string log_format = "text";
  std::vector<RouteConfig> routes;

  const RouteConfig* FindRoute(const std::string& name) const;
};

// Hard limit of the service for one request (sum of record bytes) minus the
// SDK's safety margin.
inline constexpr uint64_t kMaxRequestBytes = 10 * 1024 * 1024 - 64 * 1024;
// routes[].max_streams is at most this.
inline constexpr uint32_t kMaxStreamsPerRoute = 64;
// The smallest intake.max_buffered_bytes: two of the largest frames (16 MiB).
inline constexpr uint64_t kMinIntakeBufferedBytes = 32ull << 20;
// The deepest intake.max_json_depth.
inline constexpr uint64_t kMaxJsonDepth = 1000;
// The smallest spool.min_free_bytes: RocksDB must never meet a full disk.
inline constexpr uint64_t kMinFreeBytesFloor = 16ull << 20;
// The smallest spool.memory_budget (the spool's kMinSpoolMemoryBudget).
inline constexpr uint64_t kMinMemoryBudget = 8ull << 20;

// Loaded values are resolved: relative paths (spool.path, intake.socket,
// ca_file, proto_file, *_file) are made absolute against the config file's
// directory (LoadConfigString: the working directory); workspace_id is filled
// in from the endpoint when not set; workspace_url has no trailing slash;
// client_id/client_secret hold the credential itself, never a file name.
// Every route's `drain` is the top-level `drain:` section with the route's
// own overrides applied. Errors: InvalidArgument listing every problem, one
// per line as "origin:line: key.path: message"; a config file that cannot be
// read gives the errno's status (e.g. NotFound). Secrets never appear in
// messages. Never throws.
absl::StatusOr<DaemonConfig> LoadConfigFile(const std::string& path);

struct LoadOptions {
  // false: client_id and client_secret may be missing (they are then
  // empty): for tools that only need the config's paths, such as
  // zerobusctl status, run where the daemon's systemd credential is not.
  bool credentials_required = true;
};
absl::StatusOr<DaemonConfig> LoadConfigFile(const std::string& path, const LoadOptions& options);
// `origin` names the source in messages (a file name).
absl::StatusOr<DaemonConfig> LoadConfigString(const std::string& yaml, const std::string& origin);

}  // namespace zb
