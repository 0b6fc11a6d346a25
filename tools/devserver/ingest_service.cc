#include "tools/devserver/ingest_service.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "spdlog/spdlog.h"

namespace zb::devserver {
namespace {

namespace pb = ::databricks::zerobus;
using Clock = std::chrono::steady_clock;
constexpr size_t kMaxRequestBytes = 10 * 1024 * 1024;

std::string NewUuid() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const uint64_t a = rng(), b = rng();
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>(((b >> 48) & 0x3fff) | 0x8000),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

std::string Header(const grpc::CallbackServerContext* ctx, const std::string& key) {
  auto range = ctx->client_metadata().equal_range(key);
  if (range.first == range.second) return "";
  return std::string(range.first->second.data(), range.first->second.size());
}

bool ThreePartName(const std::string& name) {
  int dots = 0;
  size_t last = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      if (i == last) return false;
      if (i < name.size()) ++dots;
      last = i + 1;
    }
  }
  return dots == 2;
}

// Per-stream decoder for proto records.
struct ProtoSchema {
  google::protobuf::DescriptorPool pool;
  const google::protobuf::Descriptor* descriptor = nullptr;
  google::protobuf::DynamicMessageFactory factory;
};

}  // namespace

// One EphemeralStream call. gRPC reactions and the service's ticker thread
// both touch it, under mu_. Deleted in OnDone, after the ticker forgot it.
class StreamReactor final
    : public grpc::ServerBidiReactor<pb::EphemeralStreamRequest, pb::EphemeralStreamResponse> {
 public:
  StreamReactor(IngestService::Impl* service, DevState& state, grpc::CallbackServerContext* ctx);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;
  void OnCancel() override {}

  // Ticker thread: coalesced ACKs, rotation.
  void Tick(Clock::time_point now);

 private:
  void HandleCreate(const pb::EphemeralStreamRequest& req);
  void HandleIngest(const pb::EphemeralStreamRequest& req);
  void Fail(grpc::StatusCode code, const std::string& message, bool violation);
  void QueueAck();
  void Queue(pb::EphemeralStreamResponse resp);
  void PumpWrites();
  void FinishNow(grpc::Status status);

  IngestService::Impl* service_;
  DevState& state_;
  grpc::CallbackServerContext* ctx_;
  std::mutex mu_;
  pb::EphemeralStreamRequest request_;
  pb::EphemeralStreamResponse writing_;
  std::deque<pb::EphemeralStreamResponse> queue_;
  bool write_in_flight_ = false;
  bool created_ = false;
  bool finishing_ = false;      // no more reads or writes are started
  bool finished_ = false;       // Finish() was called
  grpc::Status final_status_;
  bool half_closed_ = false;
  std::string table_;
  std::string stream_id_;
  bool proto_ = false;
  std::unique_ptr<ProtoSchema> schema_;
  int64_t next_offset_ = 0;      // expected wire offset
  int64_t stored_offset_ = -1;   // highest offset whose rows are stored
  int64_t acked_offset_ = -1;    // highest offset acked
  Clock::time_point created_at_;
  Clock::time_point last_ack_;
  bool signalled_ = false;
  Clock::time_point close_at_;
};

struct IngestService::Impl {
  explicit Impl(DevState& s) : state(s) {
    ticker = std::thread([this] { Run(); });
  }
  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    ticker.join();
  }
  void Add(StreamReactor* r) {
    std::lock_guard<std::mutex> lock(mu);
    live.insert(r);
  }
  void Remove(StreamReactor* r) {
    std::lock_guard<std::mutex> lock(mu);
    live.erase(r);
  }
  void Run() {
    std::unique_lock<std::mutex> lock(mu);
    while (!stop) {
      cv.wait_for(lock, std::chrono::milliseconds(5));
      const auto now = Clock::now();
      for (StreamReactor* r : live) r->Tick(now);
    }
  }
  DevState& state;
  std::mutex mu;
  std::condition_variable cv;
  std::set<StreamReactor*> live;
  bool stop = false;
  std::thread ticker;
};

StreamReactor::StreamReactor(IngestService::Impl* service, DevState& state, grpc::CallbackServerContext* ctx)
    : service_(service), state_(state), ctx_(ctx) {
  state_.StreamOpened();
  // Headers go out before the first message is read: tonic-based clients
  // wait for them before sending create_stream.
  StartSendInitialMetadata();
  StartRead(&request_);
  service_->Add(this);
}

void StreamReactor::OnReadDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finishing_) return;
  if (!ok) {
    // Client half-close (or cancel): ack everything stored, then end OK.
    half_closed_ = true;
    if (stored_offset_ > acked_offset_) QueueAck();
    finishing_ = true;
    final_status_ = grpc::Status::OK;
    PumpWrites();
    return;
  }
  if (!created_) {
    HandleCreate(request_);
  } else {
    HandleIngest(request_);
  }
  if (!finishing_) StartRead(&request_);
}

void StreamReactor::HandleCreate(const pb::EphemeralStreamRequest& req) {
  if (!req.has_create_stream()) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT, "first message must be CreateStream", true);
    return;
  }
  const auto& c = req.create_stream();
  const std::string header_table = Header(ctx_, "x-databricks-zerobus-table-name");
  if (!ThreePartName(c.table_name())) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT,
         "table_name must be catalog.schema.table, got \"" + c.table_name() + "\"", true);
    return;
  }
  if (header_table != c.table_name()) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT,
         "x-databricks-zerobus-table-name \"" + header_table + "\" does not match table_name \"" + c.table_name() +
             "\"",
         true);
    return;
  }
  const std::string auth = Header(ctx_, "authorization");
  if (auth.rfind("Bearer ", 0) != 0 || auth.size() <= 7) {
    Fail(grpc::StatusCode::UNAUTHENTICATED, "missing authorization: Bearer <token>", true);
    return;
  }
  if (!state_.options().accept_any_token) {
    const std::string why = state_.CheckToken(auth.substr(7), c.table_name());
    if (why == "unknown token" || why == "token expired") {
      Fail(grpc::StatusCode::UNAUTHENTICATED, why, false);
      return;
    }
    if (!why.empty()) {
      Fail(grpc::StatusCode::PERMISSION_DENIED, why, false);
      return;
    }
  }
  // A missing record_type means PROTO (backward compatibility); an explicit
  // UNSPECIFIED fails.
  if (c.has_record_type() && c.record_type() == pb::RECORD_TYPE_UNSPECIFIED) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT, "record_type RECORD_TYPE_UNSPECIFIED is not allowed", true);
    return;
  }
  proto_ = !c.has_record_type() || c.record_type() == pb::PROTO;
  if (proto_) {
    if (!c.has_descriptor_proto()) {
      Fail(grpc::StatusCode::INVALID_ARGUMENT, "PROTO streams need descriptor_proto", true);
      return;
    }
    google::protobuf::DescriptorProto dp;
    if (!dp.ParseFromString(c.descriptor_proto())) {
      Fail(grpc::StatusCode::INVALID_ARGUMENT, "descriptor_proto is not a serialized DescriptorProto", true);
      return;
    }
    google::protobuf::FileDescriptorProto file;
    file.set_name("zerobus_stream.proto");
    file.set_syntax("proto2");
    *file.add_message_type() = dp;
    schema_ = std::make_unique<ProtoSchema>();
    const google::protobuf::FileDescriptor* fd = schema_->pool.BuildFile(file);
    if (fd == nullptr || fd->message_type_count() != 1) {
      Fail(grpc::StatusCode::INVALID_ARGUMENT,
           "descriptor_proto does not build a self-contained message (nested types only, no imports)", true);
      return;
    }
    schema_->descriptor = fd->message_type(0);
  }
  table_ = c.table_name();
  stream_id_ = NewUuid();
  created_ = true;
  created_at_ = Clock::now();
  last_ack_ = created_at_;
  state_.StreamCreated(table_, stream_id_, Header(ctx_, "x-zerobus-sdk"));
  pb::EphemeralStreamResponse resp;
  resp.mutable_create_stream_response()->set_stream_id(stream_id_);
  Queue(std::move(resp));
}

void StreamReactor::HandleIngest(const pb::EphemeralStreamRequest& req) {
  state_.Request();
  int64_t offset = 0;
  std::vector<const std::string*> records;
  bool json = false;
  if (req.has_ingest_record()) {
    const auto& r = req.ingest_record();
    offset = r.offset_id();
    if (r.has_json_record()) {
      json = true;
      records.push_back(&r.json_record());
    } else if (r.has_proto_encoded_record()) {
      records.push_back(&r.proto_encoded_record());
    } else {
      Fail(grpc::StatusCode::INVALID_ARGUMENT, "ingest_record without a record", true);
      return;
    }
  } else if (req.has_ingest_record_batch()) {
    const auto& b = req.ingest_record_batch();
    offset = b.offset_id();
    if (b.has_json_batch()) {
      json = true;
      for (const auto& r : b.json_batch().records()) records.push_back(&r);
    } else if (b.has_proto_encoded_batch()) {
      for (const auto& r : b.proto_encoded_batch().records()) records.push_back(&r);
    } else {
      Fail(grpc::StatusCode::INVALID_ARGUMENT, "ingest_record_batch without a batch", true);
      return;
    }
  } else if (req.has_create_stream()) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT, "second create_stream on one stream", true);
    return;
  } else {
    Fail(grpc::StatusCode::INVALID_ARGUMENT, "empty EphemeralStreamRequest", true);
    return;
  }
  if (state_.options().strict_offsets && offset != next_offset_) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT,
         "Non-incremental offset: expected " + std::to_string(next_offset_) + ", actual " + std::to_string(offset),
         true);
    return;
  }
  next_offset_ = offset + 1;
  size_t bytes = 0;
  for (const auto* r : records) bytes += r->size();
  if (bytes > kMaxRequestBytes) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT, "Batch size exceeds maximum allowed size", true);
    return;
  }
  if (json == proto_) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT,
         std::string(json ? "JSON" : "proto") + " record on a " + (proto_ ? "PROTO" : "JSON") + " stream", true);
    return;
  }
  std::vector<std::string> rows;
  rows.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string& rec = *records[i];
    if (json) {
      rapidjson::Document d;
      d.Parse(rec.data(), rec.size());
      if (d.HasParseError() || !d.IsObject()) {
        Fail(grpc::StatusCode::INVALID_ARGUMENT, "record " + std::to_string(i) + " is not a JSON object", true);
        return;
      }
      rapidjson::StringBuffer buf;
      rapidjson::Writer<rapidjson::StringBuffer> w(buf);
      d.Accept(w);
      rows.emplace_back(buf.GetString(), buf.GetSize());
    } else {
      std::unique_ptr<google::protobuf::Message> msg(schema_->factory.GetPrototype(schema_->descriptor)->New());
      if (!msg->ParseFromString(rec)) {
        Fail(grpc::StatusCode::INVALID_ARGUMENT,
             "record " + std::to_string(i) + " does not parse as " + schema_->descriptor->name(), true);
        return;
      }
      std::string row;
      google::protobuf::util::JsonPrintOptions opts;
      opts.preserve_proto_field_names = true;
      (void)google::protobuf::util::MessageToJsonString(*msg, &row, opts);
      rows.push_back(std::move(row));
    }
  }
  std::string error;
  if (!state_.StoreRows(table_, rows, &error)) {
    Fail(grpc::StatusCode::INTERNAL, error, false);
    return;
  }
  stored_offset_ = offset;
  if (state_.options().ack_interval_ms == 0) QueueAck();
}

void StreamReactor::Tick(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!created_ || finished_) return;
  const auto& o = state_.options();
  if (!finishing_ && stored_offset_ > acked_offset_ &&
      now - last_ack_ >= std::chrono::milliseconds(o.ack_interval_ms)) {
    QueueAck();
  }
  if (!finishing_ && !signalled_ && o.stream_lifetime_ms > 0 &&
      now - created_at_ >= std::chrono::milliseconds(o.stream_lifetime_ms)) {
    signalled_ = true;
    close_at_ = now + std::chrono::milliseconds(o.close_grace_ms);
    pb::EphemeralStreamResponse resp;
    auto* d = resp.mutable_close_stream_signal()->mutable_duration();
    d->set_seconds(o.close_grace_ms / 1000);
    d->set_nanos((o.close_grace_ms % 1000) * 1'000'000);
    state_.CloseSignalSent();
    Queue(std::move(resp));
  }
  if (!finishing_ && signalled_ && now >= close_at_) {
    if (stored_offset_ > acked_offset_) QueueAck();
    finishing_ = true;
    final_status_ = o.close_with_ok
                        ? grpc::Status::OK
                        : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                       "Stream timeout reached. Closing the stream (ID: " + stream_id_ +
                                           "). Error Code: 6002, Error State: 0.");
    PumpWrites();
  }
}

void StreamReactor::QueueAck() {
  pb::EphemeralStreamResponse resp;
  resp.mutable_ingest_record_response()->set_durability_ack_up_to_offset(stored_offset_);
  acked_offset_ = stored_offset_;
  last_ack_ = Clock::now();
  state_.AckSent();
  Queue(std::move(resp));
}

void StreamReactor::Queue(pb::EphemeralStreamResponse resp) {
  queue_.push_back(std::move(resp));
  PumpWrites();
}

void StreamReactor::PumpWrites() {
  if (write_in_flight_ || finished_) return;
  if (!queue_.empty()) {
    writing_ = std::move(queue_.front());
    queue_.pop_front();
    write_in_flight_ = true;
    StartWrite(&writing_);
    return;
  }
  if (finishing_) FinishNow(final_status_);
}

void StreamReactor::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  write_in_flight_ = false;
  if (!ok) {
    queue_.clear();
    finishing_ = true;
    if (final_status_.ok()) final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
  }
  PumpWrites();
}

void StreamReactor::Fail(grpc::StatusCode code, const std::string& message, bool violation) {
  if (violation) state_.Violation(message);
  spdlog::info("stream {} on {}: ending with {}: {}", stream_id_.empty() ? "(not created)" : stream_id_, table_,
               static_cast<int>(code), message);
  finishing_ = true;
  queue_.clear();  // nothing more after an error, not even pending ACKs
  final_status_ = grpc::Status(code, message);
  PumpWrites();
}

void StreamReactor::FinishNow(grpc::Status status) {
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

void StreamReactor::OnDone() {
  service_->Remove(this);
  delete this;
}

IngestService::IngestService(DevState& state) : impl_(std::make_unique<Impl>(state)) {}
IngestService::~IngestService() = default;

grpc::ServerBidiReactor<pb::EphemeralStreamRequest, pb::EphemeralStreamResponse>* IngestService::EphemeralStream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(impl_.get(), impl_->state, context);
}

}  // namespace zb::devserver
