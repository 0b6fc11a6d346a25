#pragma once
// One Zerobus EphemeralStream call, behind an interface so the drain can be
// tested with fakes and the transport can change (style.md §3, §14).
//
// Threading: Open/Write/WritesDone/Cancel are called on the event loop thread.
// Events are delivered by posting `on_event` to that loop; gRPC reactions do
// no work of their own.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace zb {

struct StreamEvent {
  enum class Kind {
    kCreated,      // create_stream_response; `text` = stream_id
    kAck,          // durability_ack_up_to_offset = `offset` (not validated here)
    kCloseSignal,  // CloseStreamSignal; `grace` = its duration (0 if absent)
    kProtocolError,// an unexpected or malformed server message; `text` says what
    kWriteDone,    // the oldest outstanding Write left; `ok` false: stream broken
    kReadClosed,   // internal: the server side ended; the handle releases its hold
    kDone,         // the call ended with `status`; last event of a stream
  };
  Kind kind = Kind::kDone;
  std::string text;
  int64_t offset = -1;
  std::chrono::milliseconds grace{0};
  bool ok = true;
  absl::Status status;
  // kDone: what the failure says about the connection beneath the call.
  enum class Link {
    kWorked,       // the connection carried the call; the stream itself ended
    kConnectFailed,// no connection could be made, or it died (reset, keepalive timeout)
    kTlsFailed,    // the TLS handshake failed (`status` has the library's words)
  };
  Link link = Link::kWorked;
};

// The service refuses an ingest request message larger than this
// (zerobus-protocol.md §6: 10 MiB per request).
inline constexpr uint64_t kMaxIngestRequestBytes = 10 * 1024 * 1024;
// What one record adds to a request beyond its payload, at most: the
// repeated field's tag (1 byte) and length varint (4 bytes covers records
// below 256 MiB; records are capped far lower).
inline constexpr uint64_t kRecordFramingBytes = 5;
// The request around its records, at most: the payload oneof's tag and
// length (1 + 4), offset_id (1 + 10), the json/proto batch's tag and length
// (1 + 4).
inline constexpr uint64_t kRequestEnvelopeBytes = 21;
// So a request of records r1..rn never encodes to more than
// kRequestEnvelopeBytes + sum(|ri| + kRecordFramingBytes) bytes; the drain
// budgets its batches with this bound.

struct StreamOpenParams {
  std::string table;             // catalog.schema.table
  std::string token;             // OAuth access token
  bool proto = false;            // record_type PROTO (else JSON)
  std::string descriptor_proto;  // serialized DescriptorProto for PROTO
};

// One call. Destroying it cancels the call if still open; no event of it is
// delivered after destruction starts.
class IngestStream {
 public:
  virtual ~IngestStream() = default;
  // Queues one ingest request with wire offset `offset` (1 record:
  // ingest_record, more: ingest_record_batch). Requests go out in order,
  // one write in flight at a time.
  virtual void Write(int64_t offset, std::vector<std::string> records) = 0;
  // Half-close after the queued writes.
  virtual void WritesDone() = 0;
  // Aborts the call; kDone (CANCELLED or the real status) follows.
  virtual void Cancel() = 0;
  // Requests queued locally and not yet handed to gRPC.
  virtual size_t queued_writes() const = 0;
  // Whether the server's response headers arrived: false while a call
  // waits on a connection that never answers.
  virtual bool response_started() const = 0;
};

using StreamEventFn = std::function<void(StreamEvent)>;

class IngestStreamFactory {
 public:
  virtual ~IngestStreamFactory() = default;
  // Starts the call: sends metadata and create_stream at once. `on_event`
  // runs on the loop for every event of this stream.
  virtual std::unique_ptr<IngestStream> Open(const StreamOpenParams& params, StreamEventFn on_event) = 0;
  // Gives up the current connection: the next Open dials a new one. For a
  // connection that failed or went silent (a NAT mapping that expired
  // freezes it both ways, and nothing else would ever replace it). Calls
  // already open on the old connection go on until they end.
  virtual void ResetConnection() = 0;
};

struct GrpcTargetOptions {
  std::string target;   // host:port
  bool tls = true;
  std::string ca_file;  // PEM; empty: system roots
  std::string sdk_id;   // x-zerobus-sdk value
  // HTTP/2 keepalive: a PING after this long without one, also while no
  // call is open; no answer within keepalive_timeout ends the connection
  // (its calls fail UNAVAILABLE). A server that finds the pings too
  // frequent says so with GOAWAY, and gRPC doubles the interval itself.
  std::chrono::milliseconds keepalive_time{30'000};
  std::chrono::milliseconds keepalive_timeout{10'000};
};

// `post` hands a closure to the event loop (asio::post). One channel (one
// HTTP/2 connection) per factory at a time; the daemon makes one factory per
// lane. The channel dials only when a call needs it and does not redial by
// itself between the caller's attempts (the drain's backoff paces them).
std::unique_ptr<IngestStreamFactory> MakeGrpcStreamFactory(const GrpcTargetOptions& options,
                                                           std::function<void(std::function<void()>)> post);

// The payload key under which a stream's final status carries the server's
// google.rpc.ErrorInfo (serialized), when the server gave one.
inline constexpr char kErrorInfoPayload[] = "type.googleapis.com/google.rpc.ErrorInfo";
// The server's structured reason in words, "" when it gave none:
// "SCHEMA_VALIDATION_FAILED (causes: FIELD_NOT_IN_TABLE, error_code: 8001)".
std::string ServerErrorReason(const absl::Status& status);

// gRPC status code name, e.g. "UNAVAILABLE".
std::string StatusCodeName(absl::StatusCode code);
// The SDK's classification: INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
// OUT_OF_RANGE, UNIMPLEMENTED and UNAUTHENTICATED are non-retryable;
// everything else (OK included) is retryable.
bool IsRetryable(absl::StatusCode code);

}  // namespace zb
