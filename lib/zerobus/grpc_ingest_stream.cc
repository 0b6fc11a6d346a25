#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <optional>
#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/redact.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"
#include "zerobus/ingest_stream.h"
#include "rpc_status.pb.h"
#include "zerobus_service.grpc.pb.h"

namespace zb {
namespace {

// The google.rpc.ErrorInfo of a call's status details (the
// grpc-status-details-bin trailer), kept on `status` as a payload.
void AttachErrorInfo(const std::string& details, absl::Status* status) {
  if (details.empty() || status->ok()) return;
  zerobusd::rpc::Status parsed;
  if (!parsed.ParseFromString(details)) return;
  for (const auto& any : parsed.details()) {
    if (absl::EndsWith(any.type_url(), "/google.rpc.ErrorInfo")) {
      status->SetPayload(kErrorInfoPayload, absl::Cord(any.value()));
      return;
    }
  }
}

namespace pb = ::databricks::zerobus;
using Post = std::function<void(std::function<void()>)>;

// What a call's final status says about its connection. gRPC reports a
// connection that could not be made, or that died under the call, as
// UNAVAILABLE with the transport's words; the server's own UNAVAILABLE (a
// rotation's 6002, an overloaded server) has none of them. (Whether
// response headers came does not tell: a server's quick refusal is
// trailers-only, which gRPC reports as no headers.) A GOAWAY is the server
// closing a connection that worked, e.g. "too_many_pings" for keepalive
// PINGs more frequent than it allows: gRPC then doubles the interval for
// that connection's successors, which a new channel would forget.
StreamEvent::Link LinkOf(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kUnavailable) return StreamEvent::Link::kWorked;
  const std::string text = absl::AsciiStrToLower(status.message());
  const auto says = [&text](std::initializer_list<const char*> words) {
    return std::any_of(words.begin(), words.end(), [&text](const char* w) { return absl::StrContains(text, w); });
  };
  if (says({"goaway", "too_many_pings"})) return StreamEvent::Link::kWorked;
  if (says({"ssl", "tls", "handshake", "certificate"})) return StreamEvent::Link::kTlsFailed;
  if (says({"failed to connect", "connection refused", "connection reset", "socket closed", "keepalive",
            "dns resolution", "broken pipe", "endpoint read failed", "endpoint write failed", "connection timed out",
            "no route to host", "network is unreachable", "connect failed"})) {
    return StreamEvent::Link::kConnectFailed;
  }
  return StreamEvent::Link::kWorked;
}

// The gRPC callback reactor. Reactions copy what they got and post it to the
// loop. It deletes itself in OnDone; a hold taken before StartCall keeps
// OnDone away until the loop side releases it (Release), so outside calls on
// a live hold are safe.
class Reactor final : public grpc::ClientBidiReactor<pb::EphemeralStreamRequest, pb::EphemeralStreamResponse> {
 public:
  // `redactor` masks the stream's token (and any credential-shaped value)
  // in the server's final status message, which becomes log lines, parked
  // reasons and dead-letter reasons.
  Reactor(Post post, StreamEventFn on_event, Redactor redactor)
      : post_(std::move(post)), on_event_(std::move(on_event)), redactor_(std::move(redactor)) {}

  grpc::ClientContext& context() { return context_; }

  void Begin(pb::Zerobus::Stub* stub) {
    stub->async()->EphemeralStream(&context_, this);
    AddHold();
    StartRead(&response_);
    StartCall();
  }

  // Loop thread, while the hold is held.
  void Send(pb::EphemeralStreamRequest request) {
    write_ = std::move(request);
    StartWrite(&write_);
  }
  void HalfClose() { StartWritesDone(); }
  void Release() { RemoveHold(); }
  void Abort() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The call is over. OnDone (with the real status) waits for our hold,
      // so tell the loop side to release it.
      StreamEvent ev;
      ev.kind = StreamEvent::Kind::kReadClosed;
      Deliver(std::move(ev));
      return;
    }
    StreamEvent ev;
    switch (response_.payload_case()) {
      case pb::EphemeralStreamResponse::kCreateStreamResponse:
        if (!response_.create_stream_response().has_stream_id()) {
          ev.kind = StreamEvent::Kind::kProtocolError;
          ev.text = "create_stream_response without stream_id";
        } else {
          ev.kind = StreamEvent::Kind::kCreated;
          ev.text = response_.create_stream_response().stream_id();
        }
        break;
      case pb::EphemeralStreamResponse::kIngestRecordResponse:
        if (!response_.ingest_record_response().has_durability_ack_up_to_offset()) {
          ev.kind = StreamEvent::Kind::kProtocolError;
          ev.text = "ack without durability_ack_up_to_offset";
        } else {
          ev.kind = StreamEvent::Kind::kAck;
          ev.offset = response_.ingest_record_response().durability_ack_up_to_offset();
        }
        break;
      case pb::EphemeralStreamResponse::kCloseStreamSignal: {
        ev.kind = StreamEvent::Kind::kCloseSignal;
        const auto& d = response_.close_stream_signal().duration();
        ev.grace = std::chrono::milliseconds(d.seconds() * 1000 + d.nanos() / 1'000'000);
        break;
      }
      default:
        ev.kind = StreamEvent::Kind::kProtocolError;
        ev.text = "server message with no payload";
    }
    Deliver(std::move(ev));
    StartRead(&response_);
  }

  void OnReadInitialMetadataDone(bool ok) override { response_started_.store(ok, std::memory_order_release); }
  bool response_started() const { return response_started_.load(std::memory_order_acquire); }

  void OnWriteDone(bool ok) override {
    StreamEvent ev;
    ev.kind = StreamEvent::Kind::kWriteDone;
    ev.ok = ok;
    Deliver(std::move(ev));
  }

  void OnDone(const grpc::Status& status) override {
    StreamEvent ev;
    ev.kind = StreamEvent::Kind::kDone;
    ev.status = redactor_.RedactStatus(
        absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message()));
    AttachErrorInfo(status.error_details(), &ev.status);
    ev.link = LinkOf(ev.status);
    Deliver(std::move(ev));
    delete this;
  }

 private:
  void Deliver(StreamEvent ev) {
    auto fn = on_event_;
    post_([fn = std::move(fn), ev = std::move(ev)]() mutable { fn(std::move(ev)); });
  }

  Post post_;
  StreamEventFn on_event_;
  const Redactor redactor_;
  grpc::ClientContext context_;
  pb::EphemeralStreamResponse response_;
  pb::EphemeralStreamRequest write_;
  std::atomic<bool> response_started_{false};
};

// Loop-side handle. All members are touched on the loop thread only.
class GrpcIngestStream final : public IngestStream {
 public:
  GrpcIngestStream(Reactor* reactor, bool proto, std::shared_ptr<bool> alive)
      : reactor_(reactor), proto_(proto), alive_(std::move(alive)) {}

  ~GrpcIngestStream() override {
    *alive_ = false;  // events already posted are dropped
    Cancel();
  }

  void Write(int64_t offset, std::vector<std::string> records) override {
    if (released_ || half_close_) return;
    pb::EphemeralStreamRequest req;
    if (records.size() == 1) {
      auto* r = req.mutable_ingest_record();
      r->set_offset_id(offset);
      if (proto_) r->set_proto_encoded_record(std::move(records[0]));
      else r->set_json_record(std::move(records[0]));
    } else {
      auto* b = req.mutable_ingest_record_batch();
      b->set_offset_id(offset);
      if (proto_) {
        auto* batch = b->mutable_proto_encoded_batch();
        for (auto& rec : records) batch->add_records(std::move(rec));
      } else {
        auto* batch = b->mutable_json_batch();
        for (auto& rec : records) batch->add_records(std::move(rec));
      }
    }
    // The drain budgets requests with kRecordFramingBytes and
    // kRequestEnvelopeBytes; a request past the service's limit would be
    // refused as a whole (and misread as a refused record), so a wrong
    // bound must show.
    if (const size_t size = req.ByteSizeLong(); size > kMaxIngestRequestBytes) {
      spdlog::error("internal: ingest request of {} bytes exceeds the service's limit of {} bytes", size,
                    kMaxIngestRequestBytes);
    }
    queue_.push_back(std::move(req));
    Flush();
  }

  void WritesDone() override {
    if (released_) return;
    half_close_ = true;
    Flush();
  }

  void Cancel() override {
    if (released_) return;
    reactor_->Abort();
    released_ = true;
    reactor_->Release();
  }

  size_t queued_writes() const override { return queue_.size(); }
  bool response_started() const override { return !released_ && reactor_->response_started(); }

  // The server ended the call: stop writing and let OnDone run.
  void OnReadClosed() {
    queue_.clear();
    if (released_) return;
    released_ = true;
    reactor_->Release();
  }

  // Called by the event router on kWriteDone.
  void OnWriteDone(bool ok) {
    writing_ = false;
    if (!ok) {
      queue_.clear();
      return;
    }
    Flush();
  }

  // Sends create_stream first.
  void SendFirst(pb::EphemeralStreamRequest create) {
    queue_.push_front(std::move(create));
    Flush();
  }

 private:
  void Flush() {
    if (released_ || writing_) return;
    if (!queue_.empty()) {
      writing_ = true;
      reactor_->Send(std::move(queue_.front()));
      queue_.pop_front();
      return;
    }
    if (half_close_ && !half_closed_) {
      // END_STREAM, but keep the hold: the call may still need a Cancel
      // (a rotation drain that runs out, the shutdown deadline); the hold
      // goes when the server ends the call (OnReadClosed) or on Cancel.
      half_closed_ = true;
      reactor_->HalfClose();
    }
  }

  Reactor* reactor_;  // valid until released_
  bool proto_;
  std::shared_ptr<bool> alive_;
  std::deque<pb::EphemeralStreamRequest> queue_;
  bool writing_ = false;
  bool half_close_ = false;   // WritesDone was asked for
  bool half_closed_ = false;  // ... and sent
  bool released_ = false;
};

// Debian's (and Ubuntu's) bundle of the host's trusted CAs.
constexpr char kSystemCaBundle[] = "/etc/ssl/certs/ca-certificates.crt";

class GrpcStreamFactory final : public IngestStreamFactory {
 public:
  GrpcStreamFactory(const GrpcTargetOptions& options, Post post) : options_(options), post_(std::move(post)) {
    if (options.tls) {
      grpc::SslCredentialsOptions ssl;
      // Without a ca_file, the host's CA store (as the SDK, libcurl and the
      // connection probe use), not the roots bundled with gRPC: a CA the
      // operator added to the host must count here too.
      const std::string& bundle = options.ca_file.empty() ? std::string(kSystemCaBundle) : options.ca_file;
      std::ifstream in(bundle);
      std::stringstream ss;
      ss << in.rdbuf();
      ssl.pem_root_certs = ss.str();  // empty (no such file): gRPC's default roots
      creds_ = grpc::SslCredentials(ssl);
    } else {
      creds_ = grpc::InsecureChannelCredentials();
    }
    args_.SetMaxReceiveMessageSize(-1);
    args_.SetMaxSendMessageSize(-1);
    // A connection of its own per lane (one HTTP/2 connection caps
    // throughput), and a new one after ResetConnection: with the global
    // subchannel pool a new channel would get the old connection back.
    args_.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    // Dead connections: a connection that stops forwarding both ways (an
    // expired NAT mapping) shows nothing until a PING goes unanswered. Also
    // while idle, and without a cap on PINGs between data frames.
    args_.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(options.keepalive_time.count()));
    args_.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(options.keepalive_timeout.count()));
    args_.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args_.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    // The drain paces reconnects (its backoff) and replaces a failed
    // connection with a new channel; the library's own redial loop would
    // only add handshakes (and log lines) between those attempts.
    // (A channel redials by itself only after a failed attempt, and by then
    // the drain has replaced it; this keeps retired channels quiet.)
    args_.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20'000);
    args_.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20'000);
    args_.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 120'000);
    args_.SetString(GRPC_ARG_PRIMARY_USER_AGENT_STRING, options.sdk_id);
    ResetConnection();
  }

  void ResetConnection() override {
    // The old channel is kept a while before it is let go: gRPC 1.51 may
    // still be failing its connection (a TLS handshake) on its own threads,
    // and releasing the channel's last reference in the middle of that
    // tripped its refcount assertion. Half a minute later its attempt is
    // long over. Calls on a retired channel hold it too (their
    // ClientContext keeps a reference) until they end.
    const auto now = std::chrono::steady_clock::now();
    while (!retired_.empty() &&
           (now - retired_.front().since > kRetiredFor || retired_.size() >= kMaxRetiredChannels)) {
      retired_.pop_front();
    }
    if (channel_ != nullptr) retired_.push_back(Retired{std::move(channel_), now});
    channel_ = grpc::CreateCustomChannel(options_.target, creds_, args_);
    stub_ = pb::Zerobus::NewStub(channel_);
  }

  std::unique_ptr<IngestStream> Open(const StreamOpenParams& params, StreamEventFn on_event) override {
    auto alive = std::make_shared<bool>(true);
    // Route write completions to the handle, and drop events once the handle
    // is gone. `handle` is filled right below, before any event can run (they
    // run on the loop, which is this thread).
    auto handle_slot = std::make_shared<GrpcIngestStream*>(nullptr);
    StreamEventFn routed = [alive, handle_slot, on_event = std::move(on_event)](StreamEvent ev) {
      if (!*alive) return;
      if (ev.kind == StreamEvent::Kind::kWriteDone && *handle_slot != nullptr) (*handle_slot)->OnWriteDone(ev.ok);
      if (ev.kind == StreamEvent::Kind::kReadClosed) {
        if (*handle_slot != nullptr) (*handle_slot)->OnReadClosed();
        return;
      }
      if (!*alive) return;
      on_event(std::move(ev));
    };
    auto* reactor = new Reactor(post_, std::move(routed), Redactor({params.token}));
    auto& ctx = reactor->context();
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", params.token));
    ctx.AddMetadata("x-databricks-zerobus-table-name", params.table);
    ctx.AddMetadata("x-zerobus-sdk", options_.sdk_id);
    auto stream = std::make_unique<GrpcIngestStream>(reactor, params.proto, alive);
    *handle_slot = stream.get();
    pb::EphemeralStreamRequest create;
    auto* c = create.mutable_create_stream();
    c->set_table_name(params.table);
    c->set_record_type(params.proto ? pb::PROTO : pb::JSON);
    if (params.proto) c->set_descriptor_proto(params.descriptor_proto);
    reactor->Begin(stub_.get());
    stream->SendFirst(std::move(create));
    return stream;
  }

 private:
  GrpcTargetOptions options_;
  Post post_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  grpc::ChannelArguments args_;
  struct Retired {
    std::shared_ptr<grpc::Channel> channel;
    std::chrono::steady_clock::time_point since;
  };
  static constexpr auto kRetiredFor = std::chrono::seconds(30);
  // Resets come at most once per drain attempt (backoff paced); this only
  // bounds a storm of them.
  static constexpr size_t kMaxRetiredChannels = 64;
  std::shared_ptr<grpc::Channel> channel_;
  std::deque<Retired> retired_;  // oldest first
  std::unique_ptr<pb::Zerobus::Stub> stub_;
};

}  // namespace

std::unique_ptr<IngestStreamFactory> MakeGrpcStreamFactory(const GrpcTargetOptions& options, Post post) {
  return std::make_unique<GrpcStreamFactory>(options, std::move(post));
}

std::string ServerErrorReason(const absl::Status& status) {
  const auto payload = status.GetPayload(kErrorInfoPayload);
  if (!payload) return "";
  zerobusd::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload)) || info.reason().empty()) return "";
  // Metadata in key order, so the words are the same every time.
  std::map<std::string, std::string> sorted(info.metadata().begin(), info.metadata().end());
  std::string words = info.reason();
  if (!sorted.empty()) {
    words += " (";
    bool first = true;
    for (const auto& [k, v] : sorted) {
      absl::StrAppend(&words, first ? "" : ", ", k, ": ", v);
      first = false;
    }
    words += ")";
  }
  return words;
}

std::string StatusCodeName(absl::StatusCode code) {
  std::string name = absl::StatusCodeToString(code);
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

bool IsRetryable(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kUnauthenticated:
      return false;
    default:
      return true;
  }
}

}  // namespace zb
