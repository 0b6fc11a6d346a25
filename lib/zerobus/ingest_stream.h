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
};

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
};

using StreamEventFn = std::function<void(StreamEvent)>;

class IngestStreamFactory {
 public:
  virtual ~IngestStreamFactory() = default;
  // Starts the call: sends metadata and create_stream at once. `on_event`
  // runs on the loop for every event of this stream.
  virtual std::unique_ptr<IngestStream> Open(const StreamOpenParams& params, StreamEventFn on_event) = 0;
};

struct GrpcTargetOptions {
  std::string target;   // host:port
  bool tls = true;
  std::string ca_file;  // PEM; empty: system roots
  std::string sdk_id;   // x-zerobus-sdk value
};

// `post` hands a closure to the event loop (asio::post). One channel (one
// HTTP/2 connection) per factory; the daemon makes one factory per route.
std::unique_ptr<IngestStreamFactory> MakeGrpcStreamFactory(const GrpcTargetOptions& options,
                                                           std::function<void(std::function<void()>)> post);

// gRPC status code name, e.g. "UNAVAILABLE".
std::string StatusCodeName(absl::StatusCode code);
// The SDK's classification: INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
// OUT_OF_RANGE, UNIMPLEMENTED and UNAUTHENTICATED are non-retryable;
// everything else (OK included) is retryable.
bool IsRetryable(absl::StatusCode code);

}  // namespace zb
