#pragma once
// The dev server's fault script: what goes wrong, per table and per stream
// ordinal, so tests can make every Zerobus failure happen on cue. The script
// is JSON (docs/devserver.md has the full reference):
//
//   {"tables": {"main.edge.readings": {
//       "streams": [{"create_error": "UNAVAILABLE"},            // 1st create of the table
//                   {"abort_after_requests": 3},                // 2nd
//                   {"close_after_ms": 500, "close_grace_ms": 200}],
//       "then": {},                                             // every later stream
//       "poison": "POISON"}},                                   // records containing it fail
//    "default": {...},                                          // tables not listed
//    "token": {"responses": [{"status": 503}, {"status": 429},
//                            {"body": "<html>"}, {"body_bytes": 104857600}],
//              "then": {"status": 200}}}
//
// A table's stream cursor counts every create_stream the table receives, so
// it persists across the client's reconnects. Stream faults are fixed when a
// stream is created; the poison applies to every request from the moment a
// script names it. Thread-safe.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"

namespace zb::devserver {

// Faults of one EphemeralStream call. Zero or empty means "no such fault".
struct StreamFaults {
  // Creation.
  std::optional<grpc::StatusCode> create_error;
  std::string create_message;
  int create_delay_ms = 0;          // answer create_stream this late
  // Abort: end the call with `abort_code` after N ingest requests or T ms.
  int abort_after_requests = 0;
  int abort_after_ms = 0;
  grpc::StatusCode abort_code = grpc::StatusCode::UNAVAILABLE;
  std::string abort_message;
  bool keep_unacked = false;        // rows of unacked requests stay stored (duplicates follow)
  // ACKs.
  bool withhold_acks = false;       // never send an ACK (rows are still stored)
  int withhold_acks_ms = 0;         // ... only during the stream's first T ms
  int ack_delay_ms = 0;             // send each ACK this late
  int ack_interval_ms = -1;         // override --ack-interval-ms (0: every request)
  bool duplicate_acks = false;      // send every ACK twice
  int regress_ack_after = 0;        // after N ACKs, send one below the last
  int overshoot_ack_after = 0;      // after N ACKs, send one far beyond anything a client has sent
  int missing_ack_field_after = 0;  // after N ACKs, send an ACK without its offset
  int unexpected_payload_after = 0; // after N requests, send a second create_stream_response
  // Rotation: CloseStreamSignal after N requests or T ms, then close.
  int close_after_requests = 0;
  int close_after_ms = 0;
  int close_grace_ms = 1000;
  grpc::StatusCode close_code = grpc::StatusCode::UNAVAILABLE;  // OK: a clean close
};

struct TokenFault {
  int status = 200;    // HTTP status to answer (200: issue a token as usual)
  int delay_ms = 0;
  int ttl_s = -1;      // -1: --token-ttl-s
  // Answer `status` with a body that echoes the request (its Authorization
  // header, the credential it decodes to, the form body), as a careless
  // proxy or server might; with status 200 the body is not JSON.
  bool echo_request = false;
  // Answer `status` with exactly this body instead of a token (the request
  // is not checked, no token is issued).
  std::optional<std::string> body;
  // > 0: answer `status` with a body of this many bytes instead of a token:
  // `body` (if set) padded with spaces, generated and written in pieces as the
  // client reads, never held whole. Parse() ensures it is at least body's size.
  int64_t body_bytes = 0;
  // Whether the answer is a scripted body (`body` or `body_bytes`).
  bool scripted_body() const { return body.has_value() || body_bytes > 0; }
};

class FaultScript {
 public:
  // Parses and validates `json`; unknown keys and bad values are errors that
  // name their path, e.g. `tables["a.b.c"].streams[1].abort_code: unknown
  // status code "NOPE"`.
  static absl::StatusOr<std::unique_ptr<FaultScript>> Parse(const std::string& json);

  FaultScript() = default;
  FaultScript(const FaultScript&) = delete;
  FaultScript& operator=(const FaultScript&) = delete;

  // Faults for the next create_stream of `table` (advances its cursor).
  StreamFaults NextStream(const std::string& table);
  // The poison substring of `table` ("" for none).
  std::string Poison(const std::string& table);
  // Answer for the next token request (advances the token cursor).
  TokenFault NextToken();
  std::string source() const { return source_; }

 private:
  struct TableScript {
    std::vector<StreamFaults> streams;
    StreamFaults then;
    std::string poison;
  };
  const TableScript* Find(const std::string& table) const;

  std::mutex mu_;
  std::string source_;
  std::map<std::string, TableScript> tables_;
  std::optional<TableScript> default_;
  std::vector<TokenFault> token_responses_;
  TokenFault token_then_;
  std::map<std::string, size_t> stream_cursor_;  // guarded by mu_
  size_t token_cursor_ = 0;                      // guarded by mu_
};

// "UNAVAILABLE" -> grpc::StatusCode::UNAVAILABLE.
std::optional<grpc::StatusCode> StatusCodeFromName(const std::string& name);

}  // namespace zb::devserver
