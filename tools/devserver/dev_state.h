#pragma once
// State shared by the dev server's gRPC service and HTTP endpoint: issued
// tokens, stored rows and the counters tests read from GET /stats.
// Thread-safe: every member function takes the one mutex.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tools/devserver/faults.h"

namespace zb::devserver {

struct DevOptions {
  std::string grpc_listen = "127.0.0.1:50051";
  std::string http_listen = "127.0.0.1:50052";
  std::string output_dir = "zerobus-rows";
  int ack_interval_ms = 200;          // 0: ack after every request
  // As the service: each request is acked this long after it came, while
  // later ones keep coming (pipelined; ack_interval_ms is then unused).
  int ack_latency_ms = 0;
  // Per stream, as the service's quota: past these rows (bytes as encoded)
  // per second the stream ends with RESOURCE_EXHAUSTED. A token bucket
  // holding one second's worth. 0: no quota.
  int stream_quota_rows = 0;
  int stream_quota_bytes = 0;
  int stream_lifetime_ms = 900'000;   // then CloseStreamSignal; 0: never
  int close_grace_ms = 5'000;         // CloseStreamSignal duration, then the hard close
  bool close_with_ok = false;         // end rotated streams with OK instead of UNAVAILABLE 6002
  bool strict_offsets = true;
  bool accept_any_token = false;
  std::string client_id = "dev-client";
  std::string client_secret = "dev-secret";
  std::string workspace_id;           // empty: any
  int token_ttl_s = 3600;
  std::string tls_cert, tls_key;
  std::string log_level = "info";
  std::string faults;                 // fault script: a file, or inline JSON starting with '{'
  // Unity Catalog tables served at GET /api/2.1/unity-catalog/tables/<name>:
  // DIR/<name>.json is the answer. Empty: none.
  std::string tables_dir;
};

class DevState {
 public:
  explicit DevState(DevOptions options);
  ~DevState();
  const DevOptions& options() const { return options_; }

  // Tokens.
  // An ingest token for `table`, or (table "") a metadata token for the
  // Unity Catalog API; each is good for only its own use, as the service's.
  std::string IssueToken(const std::string& table, int ttl_s);
  // "" when `token` may write to `table`, else the reason.
  std::string CheckToken(const std::string& token, const std::string& table);
  // "" when `token` may read Unity Catalog, else the reason.
  std::string CheckMetadataToken(const std::string& token);
  void TokenRejected();
  // A token request answered with a scripted body (fault `body`/`body_bytes`);
  // bytes of such bodies the client's socket accepted (counted as they go, so
  // a client that stops reading early shows how far it got); and such a body
  // whose writing failed before its end (the client closed the connection).
  void TokenBodyScripted();
  void TokenBodyBytesWritten(uint64_t n);
  void TokenBodyAbandoned();

  // The fault script in force (never null; empty: no faults). Replacing it
  // resets every cursor; streams already open keep their faults.
  std::shared_ptr<FaultScript> faults();
  void SetFaults(std::shared_ptr<FaultScript> faults);

  // Appends rows (JSON text, one per line) for `table` and flushes them to
  // the OS before returning, so an ACK sent afterwards covers stored rows.
  bool StoreRows(const std::string& table, const std::vector<std::string>& rows, std::string* error);

  // Counters.
  void StreamOpened();
  // `sdk`: the x-zerobus-sdk header; `user_agent`: the user-agent header
  // (some SDKs name themselves only there).
  void StreamCreated(const std::string& table, const std::string& stream_id, const std::string& sdk,
                     const std::string& user_agent);
  // A created stream of `table` ended.
  void StreamEnded(const std::string& table);
  // A stream of `table` went past its quota.
  void QuotaExceeded(const std::string& table);
  void Violation(const std::string& what);
  // One ingest request of `bytes` as encoded (the gRPC message).
  void Request(uint64_t bytes);
  void AckSent();
  void CloseSignalSent();
  void FaultInjected(const std::string& what);
  void RowsDiscarded(uint64_t n);
  std::string StatsJson();

 private:
  DevOptions options_;
  std::mutex mu_;
  struct TokenInfo {
    std::string table;
    std::chrono::steady_clock::time_point expires;
  };
  std::map<std::string, TokenInfo> tokens_;
  std::shared_ptr<FaultScript> faults_ = std::make_shared<FaultScript>();
  std::map<std::string, FILE*> files_;
  std::map<std::string, uint64_t> table_records_, table_streams_, table_open_streams_, table_max_open_streams_,
      table_quota_trips_;
  std::deque<std::string> last_violations_;
  struct RecentStream {
    std::string stream_id, sdk, user_agent;
  };
  std::deque<RecentStream> recent_streams_;
  uint64_t largest_request_bytes_ = 0;
  uint64_t streams_opened_ = 0, streams_created_ = 0, violations_ = 0, records_ = 0, requests_ = 0,
           acks_ = 0, close_signals_ = 0, tokens_issued_ = 0, tokens_rejected_ = 0,
           token_bodies_scripted_ = 0, token_body_bytes_written_ = 0, token_bodies_abandoned_ = 0,
           faults_injected_ = 0, rows_discarded_ = 0, quota_trips_ = 0;
};

}  // namespace zb::devserver
