#include "tools/devserver/ingest_service.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <optional>
#include <sstream>
#include <map>
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
#include "rpc_status.pb.h"
#include "schema/uc_schema.h"
#include "tools/devserver/bounded_json.h"

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
//
// Durability model: a request's rows are pending until an ACK covers them;
// they are written to the table file just before that ACK is generated. An
// abort discards pending rows (the client must resend them) unless the fault
// says keep_unacked (stored but never acked: the client will duplicate them).
class StreamReactor final
    : public grpc::ServerBidiReactor<pb::EphemeralStreamRequest, pb::EphemeralStreamResponse> {
 public:
  StreamReactor(IngestService::Impl* service, DevState& state, grpc::CallbackServerContext* ctx);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;
  void OnCancel() override {}

  // Ticker thread: coalesced and delayed ACKs, timed faults, rotation.
  void Tick(Clock::time_point now);

 private:
  void HandleCreate(const pb::EphemeralStreamRequest& req);
  void HandleIngest(const pb::EphemeralStreamRequest& req);
  // `reason` not empty: the status carries a google.rpc.ErrorInfo with it
  // and `metadata` (as the service's schema refusals do).
  // Whether a PROTO stream's message fits `table` as DevOptions::tables_dir
  // describes it.
  std::optional<SchemaMismatch> CheckAgainstTable(const std::string& table, const std::string& descriptor_proto);
  void Fail(grpc::StatusCode code, const std::string& message, bool violation, bool keep_queued = false,
            const std::string& reason = "", const std::map<std::string, std::string>& metadata = {});
  // Stores the pending rows of requests up to `up_to` (all by default) and
  // generates the ACK covering them.
  void CommitAndAck(int64_t up_to = INT64_MAX);
  bool CommitPending(int64_t up_to = INT64_MAX);
  // Takes what a request costs from the quota's buckets; false (nothing
  // taken) when it would go past the quota.
  bool TakeQuota(size_t rows, size_t bytes, Clock::time_point now);
  void DiscardPending();
  void SendAck(int64_t offset);
  void Abort(const std::string& why);
  void StartClose(Clock::time_point now, int grace_ms);
  void Queue(pb::EphemeralStreamResponse resp);
  void PumpWrites();
  void FinishNow(grpc::Status status);
  int AckIntervalMs() const;

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
  std::string table_;
  std::string stream_id_;
  bool proto_ = false;
  std::unique_ptr<ProtoSchema> schema_;
  StreamFaults faults_;
  std::string poison_;
  int64_t next_offset_ = 0;      // expected wire offset
  int64_t received_offset_ = -1; // highest offset received (rows pending or stored)
  int64_t acked_offset_ = -1;    // highest offset an ACK was generated for
  int64_t last_sent_ack_ = -1;   // highest ACK value actually sent
  int acks_sent_ = 0;
  int requests_ = 0;
  bool ack_withheld_ = false;    // an ACK was generated while ACKs were withheld
  struct PendingRequest {
    int64_t offset = 0;
    Clock::time_point received;
    std::vector<std::string> rows;
  };
  std::deque<PendingRequest> pending_;  // rows not yet stored, by offset
  // The per-stream quota's buckets (DevOptions::stream_quota_rows/bytes),
  // filled at that rate up to one second's worth.
  double quota_rows_ = 0, quota_bytes_ = 0;
  Clock::time_point quota_filled_at_;
  std::deque<std::pair<Clock::time_point, pb::EphemeralStreamResponse>> delayed_;  // ack_delay_ms
  Clock::time_point created_at_;
  Clock::time_point last_ack_;
  bool create_reply_due_ = false;  // create_delay_ms
  Clock::time_point create_reply_at_;
  bool signalled_ = false;
  Clock::time_point close_at_;
  grpc::StatusCode close_code_ = grpc::StatusCode::UNAVAILABLE;
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

int StreamReactor::AckIntervalMs() const {
  return faults_.ack_interval_ms >= 0 ? faults_.ack_interval_ms : state_.options().ack_interval_ms;
}

void StreamReactor::OnReadDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finishing_) return;
  if (!ok) {
    if (ctx_->IsCancelled()) {
      // The client went away: nothing pending was made durable.
      DiscardPending();
      finishing_ = true;
      final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
      PumpWrites();
      return;
    }
    // Client half-close: ack everything received, then end OK.
    if (created_ && received_offset_ > acked_offset_) CommitAndAck();
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
  // Every create of the table advances its fault cursor, whatever follows.
  auto script = state_.faults();
  faults_ = script->NextStream(c.table_name());
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
    // As the service: the message must fit the table (--tables), else the
    // stream is refused with the reason, before it is created.
    if (std::optional<SchemaMismatch> mismatch = CheckAgainstTable(c.table_name(), c.descriptor_proto())) {
      Fail(grpc::StatusCode::INVALID_ARGUMENT,
           "The descriptor does not match table " + c.table_name() + ": " + mismatch->message +
               ". Error Code: 8001, Error State: 0.",
           false, false, "SCHEMA_VALIDATION_FAILED", {{"causes", mismatch->cause}, {"error_code", "8001"}});
      return;
    }
  }
  table_ = c.table_name();
  if (faults_.create_error) {
    state_.FaultInjected("create_error on " + table_);
    Fail(*faults_.create_error,
         faults_.create_message.empty() ? "injected fault: stream creation failed" : faults_.create_message, false);
    return;
  }
  stream_id_ = NewUuid();
  created_ = true;
  created_at_ = Clock::now();
  last_ack_ = created_at_;
  state_.StreamCreated(table_, stream_id_, Header(ctx_, "x-zerobus-sdk"), Header(ctx_, "user-agent"));
  if (faults_.create_delay_ms > 0) {
    state_.FaultInjected("create_delay_ms on " + table_);
    create_reply_due_ = true;
    create_reply_at_ = created_at_ + std::chrono::milliseconds(faults_.create_delay_ms);
    return;
  }
  pb::EphemeralStreamResponse resp;
  resp.mutable_create_stream_response()->set_stream_id(stream_id_);
  Queue(std::move(resp));
}

void StreamReactor::HandleIngest(const pb::EphemeralStreamRequest& req) {
  const size_t request_bytes = req.ByteSizeLong();
  state_.Request(request_bytes);
  // The limit holds for the request as sent, framing and all (a client that
  // counts only record bytes overshoots with many small records).
  if (request_bytes > kMaxRequestBytes) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT,
         "Batch size exceeds maximum allowed size: the request is " + std::to_string(request_bytes) +
             " bytes as encoded, the limit " + std::to_string(kMaxRequestBytes),
         true);
    return;
  }
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
  if (create_reply_due_) {
    Fail(grpc::StatusCode::FAILED_PRECONDITION, "ingest request before create_stream_response", true);
    return;
  }
  if (state_.options().strict_offsets && offset != next_offset_) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT,
         "Non-incremental offset: expected " + std::to_string(next_offset_) + ", actual " + std::to_string(offset),
         true);
    return;
  }
  if (offset <= received_offset_) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT,
         "offset " + std::to_string(offset) + " is not above the last received " + std::to_string(received_offset_),
         true);
    return;
  }
  next_offset_ = offset + 1;
  if (json == proto_) {
    Fail(grpc::StatusCode::INVALID_ARGUMENT,
         std::string(json ? "JSON" : "proto") + " record on a " + (proto_ ? "PROTO" : "JSON") + " stream", true);
    return;
  }
  // The table's poison is looked up per request: a script replaced mid-stream
  // (the table was fixed) applies at once.
  poison_ = state_.faults()->Poison(table_);
  std::vector<std::string> rows;
  rows.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string& rec = *records[i];
    if (json) {
      // Iterative and depth-bounded: a record nested 150,000 deep is refused
      // like any other bad record, not a stack overflow.
      bool object = false;
      const std::string refused = CheckBoundedJson(rec, &object);
      if (!refused.empty() || !object) {
        Fail(grpc::StatusCode::INVALID_ARGUMENT,
             "record " + std::to_string(i) + " is not a JSON object" + (refused.empty() ? "" : " (" + refused + ")"),
             true);
        return;
      }
      // A row is compact JSON on one line. A record without a blank is one
      // already and lands as it came; only the others are parsed into a
      // document and written out again (the bench's rows are the first
      // kind: the dev server shares the daemon's cores there).
      const auto has = [&rec](char c) { return std::memchr(rec.data(), c, rec.size()) != nullptr; };
      if (!has(' ') && !has('\n') && !has('\t') && !has('\r')) {
        rows.push_back(rec);
      } else {
        rapidjson::Document d;
        (void)ParseBoundedJson(rec, &d);
        rapidjson::StringBuffer buf;
        rapidjson::Writer<rapidjson::StringBuffer> w(buf);
        d.Accept(w);
        rows.emplace_back(buf.GetString(), buf.GetSize());
      }
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
    if (!poison_.empty() && rows.back().find(poison_) != std::string::npos) {
      // A record the table refuses: what came before it is durable and
      // acked; this whole request fails, and so does the stream.
      state_.FaultInjected("poison record on " + table_);
      if (received_offset_ > acked_offset_) CommitAndAck();
      Fail(grpc::StatusCode::INVALID_ARGUMENT,
           "Record " + std::to_string(i) + " of request " + std::to_string(offset) +
               " failed schema validation: injected poison record. Error Code: 4000, Error State: 0.",
           false, /*keep_queued=*/true, "SCHEMA_VALIDATION_FAILED",
           {{"causes", "TYPE_INCOMPATIBLE"}, {"error_code", "4000"}});
      return;
    }
  }
  const Clock::time_point now = Clock::now();
  const auto& o = state_.options();
  if (!TakeQuota(rows.size(), request_bytes, now)) {
    // The quota limits what is admitted: the requests before this one were
    // within it, so they are stored and acked (at once, latency or not)
    // before the stream ends; this one and any after it are dropped (the
    // client sends them again). A client that resends everything unacked
    // at once still progresses by a quota's worth per stream.
    state_.QuotaExceeded(table_);
    if (received_offset_ > acked_offset_) CommitAndAck();
    Fail(grpc::StatusCode::RESOURCE_EXHAUSTED,
         "Stream quota exceeded: at most " + std::to_string(o.stream_quota_rows) + " rows and " +
             std::to_string(o.stream_quota_bytes) + " bytes per second per stream (request " +
             std::to_string(offset) + ": " + std::to_string(rows.size()) + " rows, " +
             std::to_string(request_bytes) + " bytes)",
         false, /*keep_queued=*/true);  // ACKs of stored rows still go out
    return;
  }
  received_offset_ = offset;
  pending_.push_back(PendingRequest{offset, now, std::move(rows)});
  ++requests_;
  if (faults_.unexpected_payload_after > 0 && requests_ == faults_.unexpected_payload_after) {
    state_.FaultInjected("unexpected_payload on " + table_);
    pb::EphemeralStreamResponse resp;
    resp.mutable_create_stream_response()->set_stream_id(stream_id_);
    Queue(std::move(resp));
  }
  if (faults_.abort_after_requests > 0 && requests_ == faults_.abort_after_requests) {
    Abort("after " + std::to_string(requests_) + " requests");
    return;
  }
  if (faults_.close_after_requests > 0 && requests_ == faults_.close_after_requests && !signalled_) {
    state_.FaultInjected("CloseStreamSignal after " + std::to_string(requests_) + " requests on " + table_);
    close_code_ = faults_.close_code;
    StartClose(Clock::now(), faults_.close_grace_ms);
  }
  if (o.ack_latency_ms == 0 && AckIntervalMs() == 0) CommitAndAck();
}

bool StreamReactor::TakeQuota(size_t rows, size_t bytes, Clock::time_point now) {
  const auto& o = state_.options();
  if (o.stream_quota_rows == 0 && o.stream_quota_bytes == 0) return true;
  if (quota_filled_at_ == Clock::time_point()) {
    quota_rows_ = o.stream_quota_rows;  // a new stream starts with one second's worth
    quota_bytes_ = o.stream_quota_bytes;
  } else {
    const double seconds = std::chrono::duration<double>(now - quota_filled_at_).count();
    quota_rows_ = std::min<double>(o.stream_quota_rows, quota_rows_ + seconds * o.stream_quota_rows);
    quota_bytes_ = std::min<double>(o.stream_quota_bytes, quota_bytes_ + seconds * o.stream_quota_bytes);
  }
  quota_filled_at_ = now;
  const bool rows_fit = o.stream_quota_rows == 0 || rows <= quota_rows_;
  const bool bytes_fit = o.stream_quota_bytes == 0 || bytes <= quota_bytes_;
  if (!rows_fit || !bytes_fit) return false;
  quota_rows_ -= static_cast<double>(rows);
  quota_bytes_ -= static_cast<double>(bytes);
  return true;
}

bool StreamReactor::CommitPending(int64_t up_to) {
  std::vector<std::string> rows;
  while (!pending_.empty() && pending_.front().offset <= up_to) {
    for (auto& row : pending_.front().rows) rows.push_back(std::move(row));
    pending_.pop_front();
  }
  std::string error;
  if (!rows.empty() && !state_.StoreRows(table_, rows, &error)) {
    Fail(grpc::StatusCode::INTERNAL, error, false);
    return false;
  }
  return true;
}

void StreamReactor::DiscardPending() {
  uint64_t n = 0;
  for (const auto& request : pending_) n += request.rows.size();
  pending_.clear();
  if (n > 0) state_.RowsDiscarded(n);
}

void StreamReactor::CommitAndAck(int64_t up_to) {
  if (!CommitPending(up_to)) return;
  acked_offset_ = std::min(up_to, received_offset_);
  last_ack_ = Clock::now();
  SendAck(acked_offset_);
}

void StreamReactor::SendAck(int64_t offset) {
  const auto now = Clock::now();
  if (faults_.withhold_acks ||
      (faults_.withhold_acks_ms > 0 && now - created_at_ < std::chrono::milliseconds(faults_.withhold_acks_ms))) {
    ack_withheld_ = true;  // the rows are stored; only the ACK is kept back
    return;
  }
  pb::EphemeralStreamResponse resp;
  auto* ack = resp.mutable_ingest_record_response();
  const int n = acks_sent_;  // ACKs sent so far
  if (faults_.missing_ack_field_after > 0 && n == faults_.missing_ack_field_after) {
    state_.FaultInjected("ACK without its offset on " + table_);
  } else if (faults_.regress_ack_after > 0 && n == faults_.regress_ack_after) {
    state_.FaultInjected("regressing ACK on " + table_);
    ack->set_durability_ack_up_to_offset(last_sent_ack_ - 1);
  } else if (faults_.overshoot_ack_after > 0 && n == faults_.overshoot_ack_after) {
    state_.FaultInjected("ACK beyond what was received on " + table_);
    ack->set_durability_ack_up_to_offset(received_offset_ + 1'000'000);  // beyond any client window
  } else {
    ack->set_durability_ack_up_to_offset(offset);
    last_sent_ack_ = std::max(last_sent_ack_, offset);
  }
  ++acks_sent_;
  state_.AckSent();
  const int copies = faults_.duplicate_acks ? 2 : 1;
  for (int i = 0; i < copies; ++i) {
    if (faults_.ack_delay_ms > 0) {
      delayed_.emplace_back(now + std::chrono::milliseconds(faults_.ack_delay_ms), resp);
    } else {
      Queue(resp);
    }
  }
}

void StreamReactor::Abort(const std::string& why) {
  state_.FaultInjected("abort " + why + " on " + table_);
  if (faults_.keep_unacked) {
    if (!CommitPending()) return;  // durable, but the client never hears so
  } else {
    DiscardPending();
  }
  Fail(faults_.abort_code,
       faults_.abort_message.empty() ? "injected fault: stream aborted " + why : faults_.abort_message, false);
}

void StreamReactor::StartClose(Clock::time_point now, int grace_ms) {
  signalled_ = true;
  close_at_ = now + std::chrono::milliseconds(grace_ms);
  pb::EphemeralStreamResponse resp;
  auto* d = resp.mutable_close_stream_signal()->mutable_duration();
  d->set_seconds(grace_ms / 1000);
  d->set_nanos((grace_ms % 1000) * 1'000'000);
  state_.CloseSignalSent();
  Queue(std::move(resp));
}

void StreamReactor::Tick(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!created_ || finished_) return;
  const auto& o = state_.options();
  while (!delayed_.empty() && delayed_.front().first <= now && !finishing_) {
    Queue(std::move(delayed_.front().second));
    delayed_.pop_front();
  }
  if (finishing_) return;
  if (create_reply_due_ && now >= create_reply_at_) {
    create_reply_due_ = false;
    pb::EphemeralStreamResponse resp;
    resp.mutable_create_stream_response()->set_stream_id(stream_id_);
    Queue(std::move(resp));
  }
  if (o.ack_latency_ms > 0) {
    // Pipelined: every request whose latency has passed, in one ACK.
    int64_t due = acked_offset_;
    for (const auto& request : pending_) {
      if (now - request.received < std::chrono::milliseconds(o.ack_latency_ms)) break;
      due = request.offset;
    }
    if (due > acked_offset_) {
      CommitAndAck(due);
      if (finishing_) return;
    }
  } else if (received_offset_ > acked_offset_ && now - last_ack_ >= std::chrono::milliseconds(AckIntervalMs())) {
    CommitAndAck();
    if (finishing_) return;
  }
  if (ack_withheld_ && faults_.withhold_acks_ms > 0 && !faults_.withhold_acks &&
      now - created_at_ >= std::chrono::milliseconds(faults_.withhold_acks_ms)) {
    ack_withheld_ = false;  // the withholding window is over: say how far we are
    SendAck(acked_offset_);
  }
  if (faults_.abort_after_ms > 0 && now - created_at_ >= std::chrono::milliseconds(faults_.abort_after_ms)) {
    Abort("after " + std::to_string(faults_.abort_after_ms) + " ms");
    return;
  }
  if (!signalled_) {
    if (faults_.close_after_ms > 0 && now - created_at_ >= std::chrono::milliseconds(faults_.close_after_ms)) {
      state_.FaultInjected("CloseStreamSignal after " + std::to_string(faults_.close_after_ms) + " ms on " + table_);
      close_code_ = faults_.close_code;
      StartClose(now, faults_.close_grace_ms);
    } else if (o.stream_lifetime_ms > 0 && now - created_at_ >= std::chrono::milliseconds(o.stream_lifetime_ms)) {
      close_code_ = o.close_with_ok ? grpc::StatusCode::OK : grpc::StatusCode::UNAVAILABLE;
      StartClose(now, o.close_grace_ms);
    }
  }
  if (signalled_ && now >= close_at_) {
    if (received_offset_ > acked_offset_) CommitAndAck();
    finishing_ = true;
    final_status_ = close_code_ == grpc::StatusCode::OK
                        ? grpc::Status::OK
                        : grpc::Status(close_code_, "Stream timeout reached. Closing the stream (ID: " + stream_id_ +
                                                        "). Error Code: 6002, Error State: 0.");
    PumpWrites();
  }
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

std::optional<SchemaMismatch> StreamReactor::CheckAgainstTable(const std::string& table,
                                                               const std::string& descriptor_proto) {
  const std::string& dir = state_.options().tables_dir;
  if (dir.empty()) return std::nullopt;
  std::ifstream in(dir + "/" + table + ".json", std::ios::binary);
  if (!in) return std::nullopt;  // a table the server does not describe is not checked
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<UcTable> parsed = ParseUcTable(text.str());
  if (!parsed.ok()) {
    spdlog::warn("tables: {}.json: {}", table, parsed.status().ToString());
    return std::nullopt;
  }
  return CheckMessageAgainstTable(*parsed, descriptor_proto);
}

void StreamReactor::Fail(grpc::StatusCode code, const std::string& message, bool violation, bool keep_queued,
                         const std::string& reason, const std::map<std::string, std::string>& metadata) {
  if (violation) state_.Violation(message);
  spdlog::info("stream {} on {}: ending with {}: {}", stream_id_.empty() ? "(not created)" : stream_id_, table_,
               static_cast<int>(code), message);
  finishing_ = true;
  DiscardPending();
  delayed_.clear();
  if (!keep_queued) queue_.clear();  // nothing more after an error, not even pending ACKs
  if (reason.empty()) {
    final_status_ = grpc::Status(code, message);
  } else {
    zerobusd::rpc::ErrorInfo info;
    info.set_reason(reason);
    info.set_domain("zerobus.databricks.com");
    for (const auto& [k, v] : metadata) (*info.mutable_metadata())[k] = v;
    zerobusd::rpc::Status details;
    details.set_code(static_cast<int>(code));
    details.set_message(message);
    google::protobuf::Any* any = details.add_details();
    any->set_type_url("type.googleapis.com/google.rpc.ErrorInfo");
    any->set_value(info.SerializeAsString());
    final_status_ = grpc::Status(code, message, details.SerializeAsString());
  }
  PumpWrites();
}

void StreamReactor::FinishNow(grpc::Status status) {
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

void StreamReactor::OnDone() {
  if (created_) state_.StreamEnded(table_);
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
