// zerobus-devserver, as a process, against a plain gRPC client: it must hold
// clients to the Zerobus v1 rules exactly (headers first, create_stream
// validation, strict offsets, 10 MiB, cumulative monotone ACKs, the OAuth
// token endpoint) and inject the faults its script asks for.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "rpc_status.pb.h"
#include "zerobus_service.grpc.pb.h"

namespace zb::testing {
namespace {

namespace pb = ::databricks::zerobus;
constexpr char kTable[] = "main.edge.readings";

// The token endpoint's form for `table`, as the OAuth spec of Zerobus has it.
std::string TokenForm(const std::string& table, const std::string& workspace = "1234567890") {
  const std::string catalog = table.substr(0, table.find('.'));
  const std::string schema = table.substr(0, table.rfind('.'));
  const std::string details = absl::StrCat(
      R"([{"type":"unity_catalog_privileges","privileges":["USE CATALOG"],"object_type":"CATALOG","object_full_path":")",
      catalog,
      R"("},{"type":"unity_catalog_privileges","privileges":["USE SCHEMA"],"object_type":"SCHEMA","object_full_path":")",
      schema,
      R"("},{"type":"unity_catalog_privileges","privileges":["SELECT","MODIFY"],"object_type":"TABLE","object_full_path":")",
      table, R"("}])");
  std::string encoded;
  for (char c : details) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      encoded += c;
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
      encoded += buf;
    }
  }
  return absl::StrCat("grant_type=client_credentials&scope=all-apis&resource=api%3A%2F%2Fdatabricks%2Fworkspaces%2F",
                      workspace, "%2FzerobusDirectWriteApi&authorization_details=", encoded);
}

const std::vector<std::string> kGoodTokenHeaders = {
    "Authorization: Basic " + absl::Base64Escape("dev-client:dev-secret"),
    "Content-Type: application/x-www-form-urlencoded"};

class DevServerTest : public ::testing::Test {
 protected:
  void StartServer(std::vector<std::string> flags = {}) {
    server_ = std::make_unique<DevServer>(dir_.path(), 0, 0, std::move(flags));
    ASSERT_TRUE(server_->Start()) << server_->log();
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = pb::Zerobus::NewStub(channel_);
  }

  std::string Token(const std::string& table = kTable) {
    auto r = HttpRequest(server_->http_port(), "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(table));
    EXPECT_TRUE(r.ok());
    if (!r.ok() || r->status != 200) return "";
    const std::string key = "\"access_token\":\"";
    const size_t at = r->body.find(key);
    return r->body.substr(at + key.size(), r->body.find('"', at + key.size()) - at - key.size());
  }

  // One EphemeralStream call with the Zerobus headers.
  struct Call {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<pb::EphemeralStreamRequest, pb::EphemeralStreamResponse>> rw;
  };
  std::unique_ptr<Call> Open(const std::string& token, const std::string& header_table = kTable) {
    auto call = std::make_unique<Call>();
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!token.empty()) call->ctx.AddMetadata("authorization", "Bearer " + token);
    call->ctx.AddMetadata("x-databricks-zerobus-table-name", header_table);
    call->ctx.AddMetadata("x-zerobus-sdk", "zerobusd-test/1");
    call->rw = stub_->EphemeralStream(&call->ctx);
    return call;
  }

  static pb::EphemeralStreamRequest CreateJson(const std::string& table = kTable) {
    pb::EphemeralStreamRequest req;
    req.mutable_create_stream()->set_table_name(table);
    req.mutable_create_stream()->set_record_type(pb::JSON);
    return req;
  }

  static pb::EphemeralStreamRequest Batch(int64_t offset, const std::vector<std::string>& records) {
    pb::EphemeralStreamRequest req;
    if (records.size() == 1) {
      req.mutable_ingest_record()->set_offset_id(offset);
      req.mutable_ingest_record()->set_json_record(records[0]);
    } else {
      req.mutable_ingest_record_batch()->set_offset_id(offset);
      for (const auto& r : records) req.mutable_ingest_record_batch()->mutable_json_batch()->add_records(r);
    }
    return req;
  }

  // Sends create_stream; returns the final status if the server refused it.
  absl::StatusOr<std::string> Create(Call* call, const pb::EphemeralStreamRequest& create) {
    if (!call->rw->Write(create)) return Finish(call);
    pb::EphemeralStreamResponse resp;
    if (!call->rw->Read(&resp)) return Finish(call);
    if (!resp.has_create_stream_response()) return absl::InternalError("first reply is not create_stream_response");
    return resp.create_stream_response().stream_id();
  }

  static absl::Status Finish(Call* call) {
    call->rw->WritesDone();
    pb::EphemeralStreamResponse ignored;
    while (call->rw->Read(&ignored)) {
    }
    grpc::Status s = call->rw->Finish();
    // A google.rpc.ErrorInfo in the details is appended as
    // " [REASON causes=... error_code=...]", for the tests to read.
    std::string message = s.error_message();
    zerobusd::rpc::Status details;
    if (!s.error_details().empty() && details.ParseFromString(s.error_details())) {
      for (const auto& any : details.details()) {
        zerobusd::rpc::ErrorInfo info;
        if (!absl::EndsWith(any.type_url(), "/google.rpc.ErrorInfo") || !info.ParseFromString(any.value())) continue;
        std::map<std::string, std::string> sorted(info.metadata().begin(), info.metadata().end());
        absl::StrAppend(&message, " [", info.reason());
        for (const auto& [k, v] : sorted) absl::StrAppend(&message, " ", k, "=", v);
        absl::StrAppend(&message, "]");
      }
    }
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), message);
  }

  // Reads until an ACK of `offset` arrives; returns every ACK value seen.
  static std::vector<int64_t> ReadAcksUpTo(Call* call, int64_t offset) {
    std::vector<int64_t> acks;
    pb::EphemeralStreamResponse resp;
    while (call->rw->Read(&resp)) {
      if (!resp.has_ingest_record_response()) continue;
      acks.push_back(resp.ingest_record_response().durability_ack_up_to_offset());
      if (acks.back() >= offset) break;
    }
    return acks;
  }

  uint64_t Stat(const std::string& key) {
    auto stats = server_->Stats();
    if (!stats.ok()) return ~0ull;
    const std::string k = absl::StrCat("\"", key, "\":");
    const size_t at = stats->find(k);
    return at == std::string::npos ? ~0ull : std::stoull(stats->substr(at + k.size()));
  }

  TempDir dir_;
  std::unique_ptr<DevServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Zerobus::Stub> stub_;
};

TEST_F(DevServerTest, ResponseHeadersArriveBeforeTheClientSendsAnything) {
  StartServer();
  auto call = std::make_unique<Call>();
  call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  call->ctx.AddMetadata("authorization", "Bearer " + Token());
  call->ctx.AddMetadata("x-databricks-zerobus-table-name", kTable);
  call->rw = stub_->EphemeralStream(&call->ctx);
  // Blocks until the deadline kills the call if the server waits for
  // create_stream before sending headers; then Create below fails.
  call->rw->WaitForInitialMetadata();
  auto id = Create(call.get(), CreateJson());
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->size(), 36u) << "a UUID";
  EXPECT_TRUE(Finish(call.get()).ok());
}

TEST_F(DevServerTest, CreateStreamIsValidatedLikeTheService) {
  StartServer();
  const std::string token = Token();
  struct Case {
    const char* what;
    std::function<pb::EphemeralStreamRequest()> create;
    std::string token;
    std::string header_table;
    absl::StatusCode code;
    const char* message;
  };
  pb::EphemeralStreamRequest not_create = Batch(0, {"{}"});
  pb::EphemeralStreamRequest two_part = CreateJson("edge.readings");
  pb::EphemeralStreamRequest unspecified = CreateJson();
  unspecified.mutable_create_stream()->set_record_type(pb::RECORD_TYPE_UNSPECIFIED);
  pb::EphemeralStreamRequest proto_no_descriptor = CreateJson();
  proto_no_descriptor.mutable_create_stream()->set_record_type(pb::PROTO);
  pb::EphemeralStreamRequest bad_descriptor = proto_no_descriptor;
  bad_descriptor.mutable_create_stream()->set_descriptor_proto("\xff\xff not a descriptor");
  pb::EphemeralStreamRequest missing_type = CreateJson();  // absent record_type means PROTO
  missing_type.mutable_create_stream()->clear_record_type();
  const std::vector<Case> cases = {
      {"first message", [&] { return not_create; }, token, kTable, absl::StatusCode::kInvalidArgument,
       "first message must be CreateStream"},
      {"table name", [&] { return two_part; }, token, "edge.readings", absl::StatusCode::kInvalidArgument,
       "catalog.schema.table"},
      {"header", [&] { return CreateJson(); }, token, "main.edge.other", absl::StatusCode::kInvalidArgument,
       "does not match"},
      {"unspecified", [&] { return unspecified; }, token, kTable, absl::StatusCode::kInvalidArgument,
       "RECORD_TYPE_UNSPECIFIED"},
      {"proto without descriptor", [&] { return proto_no_descriptor; }, token, kTable,
       absl::StatusCode::kInvalidArgument, "descriptor_proto"},
      {"absent record_type is proto", [&] { return missing_type; }, token, kTable,
       absl::StatusCode::kInvalidArgument, "descriptor_proto"},
      {"bad descriptor", [&] { return bad_descriptor; }, token, kTable, absl::StatusCode::kInvalidArgument,
       "not a serialized DescriptorProto"},
      {"no token", [&] { return CreateJson(); }, "", kTable, absl::StatusCode::kUnauthenticated, "Bearer"},
      {"unknown token", [&] { return CreateJson(); }, "made-up", kTable, absl::StatusCode::kUnauthenticated,
       "unknown token"},
      {"token of another table", [&] { return CreateJson("main.edge.other"); }, token, "main.edge.other",
       absl::StatusCode::kPermissionDenied, "minted for table main.edge.readings"},
  };
  // A metadata token (no resource: what the schema tools mint for Unity
  // Catalog) cannot write, as the service.
  auto metadata = HttpRequest(server_->http_port(), "POST", "/oidc/v1/token", kGoodTokenHeaders,
                              "grant_type=client_credentials&scope=all-apis");
  ASSERT_TRUE(metadata.ok());
  ASSERT_EQ(metadata->status, 200) << metadata->body;
  const std::string key = "\"access_token\":\"";
  const size_t at = metadata->body.find(key) + key.size();
  const std::string metadata_token = metadata->body.substr(at, metadata->body.find('"', at) - at);
  auto with_metadata = Open(metadata_token);
  auto refused = Create(with_metadata.get(), CreateJson());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_NE(refused.status().message().find("metadata token"), std::string::npos) << refused.status();
  for (const Case& c : cases) {
    auto call = Open(c.token, c.header_table);
    auto r = Create(call.get(), c.create());
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.status().code(), c.code) << c.what << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.message), std::string::npos) << c.what << ": " << r.status();
  }
}

// With --tables, a PROTO stream's message must fit the table, as the
// service checks it at create_stream: refused with INVALID_ARGUMENT and a
// google.rpc.ErrorInfo (SCHEMA_VALIDATION_FAILED and its cause).
TEST_F(DevServerTest, AProtoStreamsMessageMustFitTheTable) {
  ASSERT_EQ(std::system(("mkdir -p " + dir_.Sub("tables")).c_str()), 0);
  WriteFile(dir_.Sub(absl::StrCat("tables/", kTable, ".json")),
            absl::StrCat(R"({"full_name":")", kTable, R"(","columns":[
                {"name":"ts","type_text":"timestamp","nullable":false},
                {"name":"device","type_text":"string","nullable":true},
                {"name":"tags","type_text":"array<string>","nullable":true}]})"));
  StartServer({"--tables", dir_.Sub("tables")});
  const std::string token = Token();
  // Builds a descriptor: fields (name, type, label) in order.
  using F = google::protobuf::FieldDescriptorProto;
  auto descriptor = [](std::vector<std::tuple<std::string, F::Type, F::Label>> fields) {
    google::protobuf::DescriptorProto d;
    d.set_name("Reading");
    int n = 1;
    for (const auto& [name, type, label] : fields) {
      F* f = d.add_field();
      f->set_name(name);
      f->set_number(n++);
      f->set_type(type);
      f->set_label(label);
    }
    return d.SerializeAsString();
  };
  auto create = [&](const std::string& d) {
    pb::EphemeralStreamRequest req = CreateJson();
    req.mutable_create_stream()->set_record_type(pb::PROTO);
    req.mutable_create_stream()->set_descriptor_proto(d);
    auto call = Open(token);
    return Create(call.get(), req);
  };
  const auto kReq = F::LABEL_REQUIRED, kOpt = F::LABEL_OPTIONAL, kRep = F::LABEL_REPEATED;
  EXPECT_TRUE(create(descriptor({{"ts", F::TYPE_INT64, kReq}, {"device", F::TYPE_STRING, kOpt},
                                 {"tags", F::TYPE_STRING, kRep}})).ok());
  EXPECT_TRUE(create(descriptor({{"ts", F::TYPE_INT64, kReq}})).ok()) << "nullable columns may be left out";
  struct Case {
    const char* what;
    std::string descriptor;
    const char* cause;
    const char* words;
  };
  const std::vector<Case> cases = {
      {"unknown field", descriptor({{"ts", F::TYPE_INT64, kReq}, {"color", F::TYPE_STRING, kOpt}}),
       "FIELD_NOT_IN_TABLE", "field color has no column"},
      {"order", descriptor({{"device", F::TYPE_STRING, kOpt}, {"ts", F::TYPE_INT64, kReq}}), "FIELD_OUT_OF_ORDER",
       "field ts comes after column device"},
      {"type", descriptor({{"ts", F::TYPE_STRING, kReq}}), "TYPE_INCOMPATIBLE", "cannot carry column ts (timestamp)"},
      {"not repeated", descriptor({{"ts", F::TYPE_INT64, kReq}, {"tags", F::TYPE_STRING, kOpt}}), "TYPE_INCOMPATIBLE",
       "which needs string, repeated"},
      {"NOT NULL optional", descriptor({{"ts", F::TYPE_INT64, kOpt}}), "TYPE_INCOMPATIBLE",
       "column ts is NOT NULL: its field must be required"},
      {"NOT NULL missing", descriptor({{"device", F::TYPE_STRING, kOpt}}), "MISSING_REQUIRED_COLUMN",
       "column ts of table main.edge.readings is NOT NULL and has no field"},
  };
  for (const Case& c : cases) {
    auto r = create(c.descriptor);
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    const std::string m(r.status().message());
    EXPECT_NE(m.find(c.words), std::string::npos) << c.what << ": " << m;
    EXPECT_NE(m.find(absl::StrCat("[SCHEMA_VALIDATION_FAILED causes=", c.cause, " error_code=8001]")),
              std::string::npos)
        << c.what << ": " << m;
  }
  EXPECT_EQ(server_->Stat("violations"), 0) << "a schema refusal is the table's verdict, not a protocol violation";
}

TEST_F(DevServerTest, WireOffsetsMustRunFromZeroOnEveryCall) {
  StartServer({"--ack-interval-ms", "0"});
  const std::string token = Token();
  for (int round = 0; round < 2; ++round) {
    auto call = Open(token);
    ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
    ASSERT_TRUE(call->rw->Write(Batch(0, {R"({"id":"a"})"})));
    ASSERT_TRUE(call->rw->Write(Batch(1, {R"({"id":"b"})", R"({"id":"c"})"})));
    EXPECT_EQ(ReadAcksUpTo(call.get(), 1).back(), 1);
    if (round == 0) {
      EXPECT_TRUE(Finish(call.get()).ok());
      continue;
    }
    call->rw->Write(Batch(3, {R"({"id":"gap"})"}));
    absl::Status s = Finish(call.get());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("Non-incremental offset: expected 2, actual 3"), std::string::npos) << s;
  }
  EXPECT_EQ(server_->Rows(kTable).size(), 6u);
  EXPECT_EQ(Stat("violations"), 1u);
}

TEST_F(DevServerTest, JsonAndProtoRecordsLandAsRows) {
  StartServer({"--ack-interval-ms", "0"});
  auto json = Open(Token());
  ASSERT_TRUE(Create(json.get(), CreateJson()).ok());
  ASSERT_TRUE(json->rw->Write(Batch(0, {R"({"id": "j1", "temp": 21.5})"})));
  EXPECT_EQ(ReadAcksUpTo(json.get(), 0).back(), 0);
  EXPECT_TRUE(Finish(json.get()).ok());

  google::protobuf::DescriptorProto d;
  d.set_name("Reading");
  auto* id = d.add_field();
  id->set_name("id");
  id->set_number(1);
  id->set_type(google::protobuf::FieldDescriptorProto::TYPE_STRING);
  id->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
  auto* temp = d.add_field();
  temp->set_name("temp");
  temp->set_number(2);
  temp->set_type(google::protobuf::FieldDescriptorProto::TYPE_DOUBLE);
  temp->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
  const std::string table = "main.edge.protos";
  auto proto = Open(Token(table), table);
  pb::EphemeralStreamRequest create = CreateJson(table);
  create.mutable_create_stream()->set_record_type(pb::PROTO);
  create.mutable_create_stream()->set_descriptor_proto(d.SerializeAsString());
  ASSERT_TRUE(Create(proto.get(), create).ok());
  // Reading{id: "p1", temp: 2.5}: field 1 (string), field 2 (double).
  std::string record = std::string("\x0a\x02p1\x11", 5);
  const double t = 2.5;
  record.append(reinterpret_cast<const char*>(&t), 8);
  pb::EphemeralStreamRequest req;
  req.mutable_ingest_record()->set_offset_id(0);
  req.mutable_ingest_record()->set_proto_encoded_record(record);
  ASSERT_TRUE(proto->rw->Write(req));
  EXPECT_EQ(ReadAcksUpTo(proto.get(), 0).back(), 0);
  EXPECT_TRUE(Finish(proto.get()).ok());

  EXPECT_EQ(server_->Rows(kTable), (std::vector<std::string>{R"({"id":"j1","temp":21.5})"}));
  EXPECT_EQ(server_->Rows(table), (std::vector<std::string>{R"({"id":"p1","temp":2.5})"}));
}

// A row is compact JSON on one line: a record written over several lines
// lands on one; a compact one lands as it came.
TEST_F(DevServerTest, EveryRowIsOneLineOfCompactJson) {
  StartServer({"--ack-interval-ms", "0"});
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  ASSERT_TRUE(call->rw->Write(
      Batch(0, {"{\n  \"id\": \"a b\",\r\n\t\"n\": [1, 2]\n}", R"({"id":"c\u0064","n":{"x":null}})"})));
  EXPECT_EQ(ReadAcksUpTo(call.get(), 0).back(), 0);
  EXPECT_TRUE(Finish(call.get()).ok());
  EXPECT_EQ(server_->Rows(kTable),
            (std::vector<std::string>{R"({"id":"a b","n":[1,2]})", R"({"id":"c\u0064","n":{"x":null}})"}));
}

// --ack-latency-ms models the service's durability latency: each request is
// acked that long after it came, whatever came after it (pipelined: a
// timer that coalesced ACKs would cover the second request in the first).
TEST_F(DevServerTest, AckLatencyHoldsEachRequestsAckForItsOwnLatency) {
  StartServer({"--ack-latency-ms", "500"});
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  const auto first_sent = std::chrono::steady_clock::now();
  ASSERT_TRUE(call->rw->Write(Batch(0, {R"({"id":"l0"})"})));
  // The second request, a second later: due half a second after the first's.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const auto second_sent = std::chrono::steady_clock::now();
  ASSERT_TRUE(call->rw->Write(Batch(1, {R"({"id":"l1"})"})));
  const std::vector<int64_t> first = ReadAcksUpTo(call.get(), 0);
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first.front(), 0) << "the first request was acked on its own";
  EXPECT_EQ(ReadAcksUpTo(call.get(), 1).back(), 1);
  const auto now = std::chrono::steady_clock::now();
  EXPECT_GE(now - second_sent, std::chrono::milliseconds(500));
  EXPECT_GE(now - first_sent, std::chrono::milliseconds(1500));
  EXPECT_TRUE(Finish(call.get()).ok());
  EXPECT_EQ(server_->Rows(kTable).size(), 2u);
}

// --stream-quota-rows / --stream-quota-bytes model the per-stream quota: one
// second's worth may go at once, more ends the stream with
// RESOURCE_EXHAUSTED; what was acked stays, the rest is dropped (the client
// sends it again), and the trip is counted for the table.
TEST_F(DevServerTest, AStreamPastItsQuotaEndsWithResourceExhausted) {
  StartServer({"--ack-interval-ms", "0", "--stream-quota-rows", "10", "--stream-quota-bytes", "100000"});
  const auto rows = [](const std::string& prefix, int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) out.push_back(absl::StrCat(R"({"id":")", prefix, i, R"("})"));
    return out;
  };
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  ASSERT_TRUE(call->rw->Write(Batch(0, rows("a", 10))));  // the whole second's worth
  EXPECT_EQ(ReadAcksUpTo(call.get(), 0).back(), 0);
  call->rw->Write(Batch(1, rows("b", 10)));  // refilled only after a second
  absl::Status s = Finish(call.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("at most 10 rows"), std::string::npos) << s;
  EXPECT_EQ(server_->Rows(kTable).size(), 10u) << "the acked request stays; the other was dropped";
  EXPECT_EQ(server_->TableStat(kTable, "quota_trips"), 1);

  // More than a second's worth in one request never fits, rows or bytes.
  call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  call->rw->Write(Batch(0, rows("c", 11)));
  EXPECT_EQ(Finish(call.get()).code(), absl::StatusCode::kResourceExhausted);
  call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  call->rw->Write(Batch(0, {absl::StrCat(R"({"p":")", std::string(100000, 'x'), R"("})")}));
  EXPECT_EQ(Finish(call.get()).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(server_->TableStat(kTable, "quota_trips"), 3);
  EXPECT_EQ(Stat("quota_trips"), 3u);
}

// A record without a blank lands as sent, so the check alone stands
// between a compact but bad record and a row: each of these ends its stream
// with INVALID_ARGUMENT and lands nothing. And the model's flags refuse
// values that are not whole numbers.
TEST_F(DevServerTest, CompactButBadRecordsAreRefusedAndTheFlagsCheckTheirValues) {
  StartServer({"--ack-interval-ms", "0"});
  const std::vector<std::string> bad_records = {R"({"a":1}x)", R"({"a":1}{"b":2})", R"([1,2])", R"("text")",
                                                R"({"a":})", "{\"a\":\"\x01\"}", R"({"a":1)", "{", ""};
  for (const std::string& bad : bad_records) {
    SCOPED_TRACE(bad);
    auto call = Open(Token());
    ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
    call->rw->Write(Batch(0, {bad}));
    absl::Status s = Finish(call.get());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("record 0 is not a JSON object"), std::string::npos) << s;
  }
  EXPECT_TRUE(server_->Rows(kTable).empty());
  for (const char* flag : {"--ack-latency-ms", "--stream-quota-rows", "--stream-quota-bytes"}) {
    for (const char* value : {"-1", "ten", "99999999999"}) {
      RunResult r = RunCommand({BinDir() + "/zerobus-devserver", flag, value}, std::chrono::seconds(20));
      EXPECT_EQ(r.exit_code, 2) << flag << " " << value;
      EXPECT_NE(r.output.find(absl::StrCat("bad value \"", value, "\" for ", flag)), std::string::npos) << r.output;
    }
  }
}

// The stats say how many streams each table has open now and had at most.
TEST_F(DevServerTest, StatsCountOpenStreamsPerTable) {
  StartServer();
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(Open(Token()));
    ASSERT_TRUE(Create(calls.back().get(), CreateJson()).ok());
  }
  EXPECT_EQ(server_->TableStat(kTable, "open_streams"), 3);
  EXPECT_EQ(server_->TableStat(kTable, "max_open_streams"), 3);
  EXPECT_EQ(server_->TableStat(kTable, "records"), 0) << "a table with streams and no rows is listed";
  for (auto& call : calls) EXPECT_TRUE(Finish(call.get()).ok());
  EXPECT_TRUE(zb::testing::WaitFor([&] { return server_->TableStat(kTable, "open_streams") == 0; }, std::chrono::seconds(30)));
  EXPECT_EQ(server_->TableStat(kTable, "max_open_streams"), 3);
  EXPECT_EQ(server_->TableStat(kTable, "streams"), 3);
}

TEST_F(DevServerTest, RequestsOverTenMebibytesAreRefused) {
  StartServer();
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  const std::string big = absl::StrCat(R"({"p":")", std::string(6 << 20, 'x'), R"("})");
  call->rw->Write(Batch(0, {big, big}));
  absl::Status s = Finish(call.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Batch size exceeds maximum allowed size"), std::string::npos) << s;
  EXPECT_TRUE(server_->Rows(kTable).empty());
}

TEST_F(DevServerTest, TheLimitCountsTheRequestAsEncodedNotJustItsRecordBytes) {
  StartServer();
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  // 103,500 records of 100 bytes: 10,350,000 record bytes (under 10 MiB),
  // but 3 bytes of framing each put the request at about 10.66 MB.
  const std::string record = absl::StrCat(R"({"p":")", std::string(92, 'x'), R"("})");
  ASSERT_EQ(record.size(), 100u);
  call->rw->Write(Batch(0, std::vector<std::string>(103'500, record)));
  absl::Status s = Finish(call.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("as encoded"), std::string::npos) << s;
  EXPECT_TRUE(server_->Rows(kTable).empty());
  EXPECT_GT(Stat("largest_request_bytes"), 10u << 20);
}

TEST_F(DevServerTest, AcksAreCumulativeMonotoneAndCoalesced) {
  StartServer({"--ack-interval-ms", "300"});
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(call->rw->Write(Batch(i, {absl::StrCat(R"({"id":)", i, "}")})));
  const std::vector<int64_t> acks = ReadAcksUpTo(call.get(), 19);
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back(), 19);
  for (size_t i = 1; i < acks.size(); ++i) EXPECT_GT(acks[i], acks[i - 1]) << "cumulative and monotone";
  EXPECT_LT(acks.size(), 20u) << "coalesced on the timer, not one per request";
  EXPECT_TRUE(Finish(call.get()).ok());
  EXPECT_EQ(server_->Rows(kTable).size(), 20u);
}

TEST_F(DevServerTest, HalfCloseAcksEverythingAndEndsOk) {
  StartServer({"--ack-interval-ms", "60000"});
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  ASSERT_TRUE(call->rw->Write(Batch(0, {R"({"id":1})", R"({"id":2})"})));
  call->rw->WritesDone();
  EXPECT_EQ(ReadAcksUpTo(call.get(), 0), (std::vector<int64_t>{0}));
  EXPECT_TRUE(call->rw->Finish().ok());
  EXPECT_EQ(server_->Rows(kTable).size(), 2u);
}

TEST_F(DevServerTest, TokenEndpointChecksEveryPartOfTheRequest) {
  StartServer({"--workspace-id", "1234567890", "--token-ttl-s", "120"});
  const int port = server_->http_port();
  auto good = HttpRequest(port, "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(kTable));
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good->status, 200) << good->body;
  EXPECT_NE(good->body.find("\"access_token\":\"dev-"), std::string::npos) << good->body;
  EXPECT_NE(good->body.find("\"expires_in\":120"), std::string::npos) << good->body;

  const std::string form = TokenForm(kTable);
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string f = form;
    f.replace(f.find(from), from.size(), to);
    return f;
  };
  struct Case {
    const char* what;
    std::vector<std::string> headers;
    std::string body;
    int status;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"no Basic auth", {"Content-Type: application/x-www-form-urlencoded"}, form, 401, "Basic"},
      {"wrong secret",
       {"Authorization: Basic " + absl::Base64Escape("dev-client:nope"),
        "Content-Type: application/x-www-form-urlencoded"},
       form, 401, "client authentication failed"},
      {"grant type", kGoodTokenHeaders, replace("client_credentials", "password"), 400, "grant_type"},
      {"scope", kGoodTokenHeaders, replace("all-apis", "sql"), 400, "scope"},
      {"resource", kGoodTokenHeaders, replace("zerobusDirectWriteApi", "other"), 400, "resource"},
      {"workspace", kGoodTokenHeaders, replace("1234567890", "999"), 400, "expected 1234567890"},
      {"authorization_details", kGoodTokenHeaders, form.substr(0, form.find("&authorization_details")), 400,
       "authorization_details"},
      {"privileges", kGoodTokenHeaders, replace("MODIFY", "ALL"), 400, "privileges"},
  };
  for (const Case& c : cases) {
    auto r = HttpRequest(port, "POST", "/oidc/v1/token", c.headers, c.body);
    ASSERT_TRUE(r.ok()) << c.what;
    EXPECT_EQ(r->status, c.status) << c.what << ": " << r->body;
    EXPECT_NE(r->body.find(c.message), std::string::npos) << c.what << ": " << r->body;
  }
}

TEST_F(DevServerTest, ExpiredTokensAreRefusedAtCreate) {
  StartServer({"--token-ttl-s", "1"});
  const std::string token = Token();
  ASSERT_FALSE(token.empty());
  absl::Status refused;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto call = Open(token);
        auto r = Create(call.get(), CreateJson());
        if (r.ok()) {
          (void)Finish(call.get());
          return false;
        }
        refused = r.status();
        return true;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(refused.message().find("token expired"), std::string::npos) << refused;
}

TEST_F(DevServerTest, DeeplyNestedJsonIsRefusedAndTheServerServesOn) {
  StartServer({"--ack-interval-ms", "0"});
  const std::string token = Token();
  // `depth` levels in all: an object holding nested arrays.
  auto nested = [](int depth) {
    return absl::StrCat(R"({"deep":)", std::string(depth - 1, '['), std::string(depth - 1, ']'), "}");
  };
  // 200,000 levels: once a stack overflow in a recursive parser, now a bad
  // record like any other.
  auto deep = Open(token);
  ASSERT_TRUE(Create(deep.get(), CreateJson()).ok());
  deep->rw->Write(Batch(0, {std::string(200'000, '[') + std::string(200'000, ']')}));
  absl::Status s = Finish(deep.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("record 0 is not a JSON object (nesting deeper than 128 levels)"), std::string::npos)
      << s;

  // Still serving: a record at the limit lands; one level more does not.
  auto next = Open(token);
  ASSERT_TRUE(Create(next.get(), CreateJson()).ok()) << server_->log();
  ASSERT_TRUE(next->rw->Write(Batch(0, {nested(128)})));
  const std::vector<int64_t> acks = ReadAcksUpTo(next.get(), 0);
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back(), 0);
  next->rw->Write(Batch(1, {nested(129)}));
  s = Finish(next.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("nesting deeper than 128 levels"), std::string::npos) << s;
  EXPECT_EQ(server_->Rows(kTable), (std::vector<std::string>{nested(128)}));

  // The HTTP side parses JSON from clients too.
  auto faults = HttpRequest(server_->http_port(), "POST", "/faults", {},
                            std::string(200'000, '[') + std::string(200'000, ']'));
  ASSERT_TRUE(faults.ok()) << faults.status();
  EXPECT_EQ(faults->status, 400);
  EXPECT_NE(faults->body.find("nesting deeper than 128 levels"), std::string::npos) << faults->body;
  auto healthz = HttpRequest(server_->http_port(), "GET", "/healthz");
  ASSERT_TRUE(healthz.ok()) << healthz.status();
  EXPECT_EQ(healthz->status, 200);
  auto last = Open(token);
  EXPECT_TRUE(Create(last.get(), CreateJson()).ok());
  EXPECT_TRUE(Finish(last.get()).ok());
}

// ------------------------------------------------------------------ faults

TEST_F(DevServerTest, FaultScriptErrorsNameTheirPath) {
  TempDir dir;
  RunResult r = RunCommand({BinDir() + "/zerobus-devserver", "--output-dir", dir.Sub("rows"), "--faults",
                     R"({"tables":{"a.b.c":{"streams":[{},{"abort_code":"NOPE","sometimes":1}]}}})"},
                    std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("rows"))) << "refused before anything was created";
  EXPECT_NE(r.output.find(R"(tables["a.b.c"].streams[1].abort_code: must be a gRPC status code name)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(R"(tables["a.b.c"].streams[1].sometimes: unknown key)"), std::string::npos) << r.output;
  StartServer();
  auto bad = HttpRequest(server_->http_port(), "POST", "/faults", {}, R"({"tables": 3})");
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("tables: must be an object"), std::string::npos) << bad->body;
}

TEST_F(DevServerTest, StreamFaultsFollowTheTablesCursorAcrossCalls) {
  StartServer({"--ack-interval-ms", "0", "--faults",
               R"({"tables":{"main.edge.readings":{"streams":[
                     {"create_error":"RESOURCE_EXHAUSTED","create_message":"slow down"},
                     {"abort_after_requests":2,"abort_code":"UNAVAILABLE"},
                     {"abort_after_requests":1,"keep_unacked":true,"ack_interval_ms":60000}]}}})"});
  const std::string token = Token();
  auto first = Open(token);
  auto refused = Create(first.get(), CreateJson());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.status().message(), "slow down");

  auto second = Open(token);
  ASSERT_TRUE(Create(second.get(), CreateJson()).ok());
  ASSERT_TRUE(second->rw->Write(Batch(0, {R"({"id":"acked"})"})));
  EXPECT_EQ(ReadAcksUpTo(second.get(), 0).back(), 0);
  second->rw->Write(Batch(1, {R"({"id":"lost"})"}));
  EXPECT_EQ(Finish(second.get()).code(), absl::StatusCode::kUnavailable);

  auto third = Open(token);
  ASSERT_TRUE(Create(third.get(), CreateJson()).ok());
  third->rw->Write(Batch(0, {R"({"id":"stored-not-acked"})"}));
  EXPECT_EQ(Finish(third.get()).code(), absl::StatusCode::kUnavailable);

  auto fourth = Open(token);  // past the script: no fault
  ASSERT_TRUE(Create(fourth.get(), CreateJson()).ok());
  EXPECT_TRUE(Finish(fourth.get()).ok());

  const auto ids = RowIds(server_->Rows(kTable));
  EXPECT_EQ(ids, (std::multiset<std::string>{"acked", "stored-not-acked"}))
      << "an abort loses unacked rows unless keep_unacked";
  EXPECT_EQ(Stat("rows_discarded"), 1u);
  EXPECT_EQ(Stat("violations"), 0u);
}

TEST_F(DevServerTest, AckFaultsBreakTheRulesOnPurpose) {
  StartServer({"--ack-interval-ms", "0", "--faults",
               R"({"default":{"streams":[{"regress_ack_after":2},{"overshoot_ack_after":1},
                                         {"missing_ack_field_after":1},{"duplicate_acks":true}]}})"});
  const std::string token = Token();
  auto acks_of = [&](int requests) {
    auto call = Open(token);
    EXPECT_TRUE(Create(call.get(), CreateJson()).ok());
    std::vector<std::string> seen;
    for (int i = 0; i < requests; ++i) {
      call->rw->Write(Batch(i, {R"({"id":1})"}));
      pb::EphemeralStreamResponse resp;
      while (call->rw->Read(&resp)) {
        if (!resp.has_ingest_record_response()) continue;
        seen.push_back(resp.ingest_record_response().has_durability_ack_up_to_offset()
                           ? std::to_string(resp.ingest_record_response().durability_ack_up_to_offset())
                           : "unset");
        if (seen.size() >= static_cast<size_t>(i + 1)) break;
      }
    }
    (void)Finish(call.get());
    return seen;
  };
  EXPECT_EQ(acks_of(3), (std::vector<std::string>{"0", "1", "0"}));
  EXPECT_EQ(acks_of(2), (std::vector<std::string>{"0", "1000001"}));
  EXPECT_EQ(acks_of(2), (std::vector<std::string>{"0", "unset"}));
  EXPECT_EQ(acks_of(2), (std::vector<std::string>{"0", "0"}));
}

TEST_F(DevServerTest, CloseSignalThenTheStreamTimeoutClose) {
  StartServer({"--ack-interval-ms", "0", "--faults",
               R"({"default":{"streams":[{"close_after_requests":1,"close_grace_ms":300}]}})"});
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  ASSERT_TRUE(call->rw->Write(Batch(0, {R"({"id":1})"})));
  bool signalled = false;
  pb::EphemeralStreamResponse resp;
  while (call->rw->Read(&resp)) {
    if (resp.has_close_stream_signal()) {
      signalled = true;
      EXPECT_EQ(resp.close_stream_signal().duration().nanos(), 300'000'000);
    }
  }
  EXPECT_TRUE(signalled);
  grpc::Status s = call->rw->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.error_message().find("Stream timeout reached"), std::string::npos);
  EXPECT_NE(s.error_message().find("Error Code: 6002"), std::string::npos);
}

TEST_F(DevServerTest, PoisonRecordFailsItsRequestAfterAckingWhatCameBefore) {
  StartServer({"--ack-interval-ms", "60000", "--faults", R"({"default":{"poison":"POISON"}})"});
  auto call = Open(Token());
  ASSERT_TRUE(Create(call.get(), CreateJson()).ok());
  ASSERT_TRUE(call->rw->Write(Batch(0, {R"({"id":"fine"})"})));
  call->rw->Write(Batch(1, {R"({"id":"ok-too"})", R"({"id":"POISON"})"}));
  EXPECT_EQ(ReadAcksUpTo(call.get(), 0), (std::vector<int64_t>{0}));
  absl::Status s = Finish(call.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Record 1 of request 1"), std::string::npos) << s;
  EXPECT_EQ(RowIds(server_->Rows(kTable)), (std::multiset<std::string>{"fine"}));
}

TEST_F(DevServerTest, TokenEndpointFaultsAnswerInOrder) {
  StartServer({"--faults", R"({"token":{"responses":[{"status":503},{"status":429},{"status":401}]}})"});
  std::vector<int> statuses;
  for (int i = 0; i < 4; ++i) {
    auto r = HttpRequest(server_->http_port(), "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(kTable));
    ASSERT_TRUE(r.ok());
    statuses.push_back(r->status);
  }
  EXPECT_EQ(statuses, (std::vector<int>{503, 429, 401, 200}));
}

// A status that carries no body used to make Beast throw (and the server
// die) on the error body every refusal has.
TEST_F(DevServerTest, TokenFaultWithABodylessStatusServesOn) {
  StartServer({"--faults", R"({"token":{"responses":[{"status":204},{"status":304}]}})"});
  for (int want : {204, 304}) {
    auto r = HttpRequest(server_->http_port(), "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(kTable));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, want);
    EXPECT_EQ(r->body, "");
  }
  EXPECT_FALSE(Token().empty());
}

TEST_F(DevServerTest, TokenBodyFaultsAreValidated) {
  StartServer();
  const int port = server_->http_port();
  auto bad = HttpRequest(port, "POST", "/faults", {}, R"({"token":{"responses":[
      {"body":3},
      {"body_bytes":-1},
      {"body_bytes":"5"},
      {"body":"abcdef","body_bytes":3},
      {"body":"x","echo_request":true},
      {"body":"x","ttl_s":5},
      {"status":204,"body":"x"},
      {"bodyy":"x"}],
      "then":{"body_bytes":1.5}}})");
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 400);
  for (const char* want : {
           "token.responses[0].body: must be a string",
           "token.responses[1].body_bytes: must be an integer >= 0",
           "token.responses[2].body_bytes: must be an integer >= 0",
           "token.responses[3].body_bytes: must be at least the length of body (6 bytes)",
           "token.responses[4].echo_request: cannot be combined with body or body_bytes",
           "token.responses[5].ttl_s: applies to issued tokens only",
           "token.responses[6].status: a 204 reply has no body",
           "token.responses[7].bodyy: unknown key (known: body, body_bytes, ",
           "token.then.body_bytes: must be an integer >= 0",
       }) {
    EXPECT_NE(bad->body.find(want), std::string::npos) << want << " in " << bad->body;
  }
  // Refused at startup too.
  RunResult r = RunCommand({BinDir() + "/zerobus-devserver", "--faults", R"({"token":{"then":{"body":false}}})"},
                           std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("token.then.body: must be a string"), std::string::npos) << r.output;

  auto good = HttpRequest(port, "POST", "/faults", {}, R"({"token":{"responses":[
      {"body":""},{"status":503,"body":"x","body_bytes":10},{"status":204,"body":""},
      {"body_bytes":0}],"then":{"body_bytes":1,"delay_ms":1}}})");
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good->status, 200) << good->body;
}

TEST_F(DevServerTest, TokenBodyIsServedAsGiven) {
  StartServer({"--faults", R"({"token":{"responses":[
      {"body":"{\"access_token\": oops"},
      {"status":503,"body":"<html>busy</html>"},
      {"body":""},
      {"status":401,"body":"{\"error\":\"invalid_client\"}"}]}})"});
  const int port = server_->http_port();
  // A scripted body does not look at the request: not even its credentials.
  auto first = HttpRequest(port, "POST", "/oidc/v1/token", {}, "");
  auto second = HttpRequest(port, "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(kTable));
  auto third = HttpRequest(port, "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(kTable));
  auto fourth = HttpRequest(port, "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(kTable));
  ASSERT_TRUE(first.ok() && second.ok() && third.ok() && fourth.ok());
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->body, R"({"access_token": oops)");
  EXPECT_EQ(second->status, 503);
  EXPECT_EQ(second->body, "<html>busy</html>");
  EXPECT_EQ(third->status, 200);
  EXPECT_EQ(third->body, "");
  EXPECT_EQ(fourth->status, 401);
  EXPECT_EQ(fourth->body, R"({"error":"invalid_client"})");
  // Past the script: a real token again.
  EXPECT_FALSE(Token().empty());
  EXPECT_EQ(Stat("token_bodies_scripted"), 4u);
  EXPECT_EQ(Stat("token_body_bytes_written"), first->body.size() + second->body.size() + fourth->body.size());
  EXPECT_EQ(Stat("token_bodies_abandoned"), 0u);
  EXPECT_EQ(Stat("token_requests_rejected"), 2u);  // the 503 and the 401
  EXPECT_EQ(Stat("tokens_issued"), 1u);
}

TEST_F(DevServerTest, TokenBodyBytesHasThatLength) {
  const std::string prefix = R"({"access_token":"tok","expires_in":3600})";
  StartServer({"--faults", absl::StrCat(R"({"token":{"responses":[{"body_bytes":70000},{"body":")",
                                        absl::CEscape(prefix), R"(","body_bytes":5000000}]}})")});
  const int port = server_->http_port();
  auto spaces = HttpRequest(port, "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(kTable));
  auto padded = HttpRequest(port, "POST", "/oidc/v1/token", kGoodTokenHeaders, TokenForm(kTable));
  ASSERT_TRUE(spaces.ok() && padded.ok());
  EXPECT_EQ(spaces->status, 200);
  EXPECT_EQ(spaces->body.size(), 70000u);
  EXPECT_EQ(spaces->body.find_first_not_of(' '), std::string::npos);
  EXPECT_EQ(padded->status, 200);
  ASSERT_EQ(padded->body.size(), 5000000u);
  EXPECT_EQ(padded->body.substr(0, prefix.size()), prefix);
  EXPECT_EQ(padded->body.find_first_not_of(' ', prefix.size()), std::string::npos);
  EXPECT_EQ(Stat("token_body_bytes_written"), 5070000u);
  EXPECT_EQ(Stat("token_bodies_abandoned"), 0u);
}

// What the daemon's tests rely on: a client that reads a little of a huge
// body and hangs up is seen to have done so, and to have read little.
TEST_F(DevServerTest, TokenBodyBytesStopsWhenTheClientHangsUp) {
  constexpr uint64_t kHuge = 100ull * 1024 * 1024;
  StartServer({"--faults", absl::StrCat(R"({"token":{"responses":[{"body_bytes":)", kHuge, "}]}}")});
  {
    namespace asio = boost::asio;
    asio::io_context io;
    asio::ip::tcp::socket socket(io);
    socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server_->http_port())});
    const std::string form = TokenForm(kTable);
    std::string request = "POST /oidc/v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (const auto& h : kGoodTokenHeaders) absl::StrAppend(&request, h, "\r\n");
    absl::StrAppend(&request, "Content-Length: ", form.size(), "\r\n\r\n", form);
    asio::write(socket, asio::buffer(request));
    std::string got;
    char buf[16384];
    while (got.size() < 65536) got.append(buf, socket.read_some(asio::buffer(buf)));
    EXPECT_NE(got.find(absl::StrCat("Content-Length: ", kHuge)), std::string::npos) << got.substr(0, 200);
  }  // closed with unread data: the server's next write fails
  ASSERT_TRUE(WaitFor([&] { return Stat("token_bodies_abandoned") == 1; }, std::chrono::seconds(20)));
  EXPECT_LT(Stat("token_body_bytes_written"), 4u * 1024 * 1024);
  EXPECT_FALSE(Token().empty());  // and serves on
}

}  // namespace
}  // namespace zb::testing
