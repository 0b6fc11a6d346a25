// Fuzzes the proto route codec: zb::MakeProtoCodec loads two small schemas
// written at start-up into a temporary directory (proto2 with required
// fields, a recursive message, nested messages, enums, maps and a oneof;
// proto3 with the same shapes), and the fuzzer feeds FromWire and FromJson.
// Nothing may crash; what FromWire accepts is spooled unchanged; what
// FromJson accepts passed ValidateJsonObject at the route's depth and is a
// complete, serialized record that FromWire accepts too. The codec's
// descriptor_proto() must build on its own, as the server builds it.
//
// Input layout: the record from the front; the last byte picks the schema,
// the method and the depth limit, and with its top bit set the codec with
// schema.column_types (some fields converted by Unity Catalog column types,
// the rest by protobuf's JSON mapping), at the default depth.

#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "schema/record_codec.h"

namespace {

constexpr char kProto2[] = R"(syntax = "proto2";
package fuzz.edge;

message Reading {
  enum Unit { UNIT_UNSPECIFIED = 0; CELSIUS = 1; KELVIN = 2; }
  message Sample {
    optional int64 at_us = 1;
    repeated double values = 2 [packed = true];
    optional Sample previous = 3;           // recursive, nested
    map<string, Sample> children = 4;
  }
  message Location { required string site = 1; optional float lat = 2; optional float lon = 3; }
  required string device_id = 1;
  optional int64 id = 2;
  optional double temp = 3;
  optional Unit unit = 4 [default = CELSIUS];
  optional bytes raw = 5;
  optional bool ok = 6;
  optional uint64 counter = 7;
  optional sint32 delta = 8;
  optional fixed64 mask = 9;
  optional float ratio = 10;
  repeated string tags = 11;
  repeated Unit units = 12;
  optional Location location = 13;
  repeated Sample samples = 14;
  map<string, int32> labels = 15;
  optional Reading parent = 16;             // recursive, top level
  oneof payload { string text = 17; Sample sample = 18; }
  optional sfixed32 s32 = 19;
  optional uint32 u32 = 20;
}
)";

constexpr char kProto3[] = R"(syntax = "proto3";

message Event {
  enum Level { LEVEL_UNSPECIFIED = 0; INFO = 1; WARN = 2; }
  message Node { string name = 1; repeated Node children = 2; map<int64, string> attrs = 3; }
  string source = 1;
  int64 ts = 2;
  Level level = 3;
  Node tree = 4;
  repeated int32 codes = 5;
  map<string, Node> index = 6;
  optional double score = 7;
  bytes body = 8;
  oneof detail { string message = 9; Node node = 10; }
  Event cause = 11;
}
)";

struct Schema {
  std::unique_ptr<zb::RecordCodec> codecs[3];  // depth 3, the default, the config's maximum
  std::unique_ptr<zb::RecordCodec> typed;      // with column_types, the default depth
  google::protobuf::DescriptorPool pool;
  const google::protobuf::Descriptor* descriptor = nullptr;
  std::unique_ptr<google::protobuf::DynamicMessageFactory> factory;
};

Schema* schemas[2];
constexpr int kDepths[3] = {3, zb::kDefaultMaxJsonDepth, zb::kMaxJsonDepthLimit};

void WriteFile(const std::string& path, const char* text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  ZB_FUZZ_CHECK(out.good(), "cannot write %s", path.c_str());
}

Schema* Load(const std::string& file, const std::string& message,
             const std::vector<std::pair<std::string, std::string>>& column_types) {
  auto* s = new Schema;
  for (int i = 0; i < 3; ++i) {
    auto codec = zb::MakeProtoCodec(file, message, kDepths[i]);
    ZB_FUZZ_CHECK(codec.ok(), "MakeProtoCodec(%s, %s): %s", file.c_str(), message.c_str(),
                  codec.status().ToString().c_str());
    s->codecs[i] = std::move(*codec);
  }
  auto typed = zb::MakeProtoCodec(file, message, zb::kDefaultMaxJsonDepth, column_types);
  ZB_FUZZ_CHECK(typed.ok(), "MakeProtoCodec(%s, %s, column_types): %s", file.c_str(), message.c_str(),
                typed.status().ToString().c_str());
  s->typed = std::move(*typed);
  // What the server does with create_stream's descriptor: wrap the
  // DescriptorProto in a package-less file and build it alone.
  google::protobuf::FileDescriptorProto fdp;
  fdp.set_name("record.proto");
  fdp.set_syntax(message == "Reading" ? "proto2" : "proto3");
  ZB_FUZZ_CHECK(fdp.add_message_type()->ParseFromString(s->codecs[0]->descriptor_proto()),
                "descriptor_proto() does not parse");
  ZB_FUZZ_CHECK(s->pool.BuildFile(fdp) != nullptr, "descriptor_proto() of %s does not build on its own",
                message.c_str());
  s->descriptor = s->pool.FindMessageTypeByName(fdp.message_type(0).name());
  ZB_FUZZ_CHECK(s->descriptor != nullptr, "no %s in the built descriptor", message.c_str());
  s->factory = std::make_unique<google::protobuf::DynamicMessageFactory>(&s->pool);
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char dir[] = "/tmp/zerobusd-fuzz-proto.XXXXXX";
  ZB_FUZZ_CHECK(mkdtemp(dir) != nullptr, "mkdtemp");
  const std::string base = dir;
  WriteFile(base + "/reading.proto", kProto2);
  WriteFile(base + "/event.proto", kProto3);
  schemas[0] = Load(base + "/reading.proto", "Reading",
                    {{"device_id", "varchar(32)"},
                     {"id", "timestamp"},
                     {"raw", "binary"},
                     {"tags", "array<string>"},
                     {"location", "struct<site:string not null,lat:float,lon:float>"},
                     {"labels", "map<string,int>"}});
  schemas[1] = Load(base + "/event.proto", "Event", {{"ts", "timestamp_ntz"}, {"codes", "array<smallint>"},
                                                     {"body", "binary"}, {"source", "variant"}});
  // The codecs hold what they loaded; the files are not needed any more.
  unlink((base + "/reading.proto").c_str());
  unlink((base + "/event.proto").c_str());
  rmdir(base.c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t pick = data[size - 1];
  const Schema& schema = *schemas[pick & 1];
  const bool json = (pick >> 1) & 1;
  const bool typed = (pick & 0x80) != 0;
  const int depth_index = typed ? 1 : (pick >> 2) % 3;
  const zb::RecordCodec& codec = typed ? *schema.typed : *schema.codecs[depth_index];
  const std::string input(reinterpret_cast<const char*>(data), size - 1);

  std::unique_ptr<google::protobuf::Message> msg(schema.factory->GetPrototype(schema.descriptor)->New());
  if (!json) {
    const absl::StatusOr<std::string> spooled = codec.FromWire(input);
    if (!spooled.ok()) return 0;
    ZB_FUZZ_CHECK(*spooled == input, "FromWire must spool the record unchanged");
    ZB_FUZZ_CHECK(msg->ParseFromString(*spooled), "FromWire accepted a record that is not a complete %s",
                  schema.descriptor->full_name().c_str());
    return 0;
  }
  const absl::StatusOr<std::string> spooled = codec.FromJson(input);
  if (!spooled.ok()) {
    ZB_FUZZ_CHECK(!spooled.status().message().empty(), "a refusal without a reason");
    return 0;
  }
  const absl::Status valid = zb::ValidateJsonObject(input, kDepths[depth_index]);
  ZB_FUZZ_CHECK(valid.ok(), "FromJson accepted what ValidateJsonObject refuses: %s", valid.ToString().c_str());
  ZB_FUZZ_CHECK(msg->ParseFromString(*spooled), "FromJson spooled bytes that are not a complete %s",
                schema.descriptor->full_name().c_str());
  const absl::StatusOr<std::string> again = codec.FromWire(*spooled);
  ZB_FUZZ_CHECK(again.ok(), "FromWire refuses what FromJson spooled: %s", again.status().ToString().c_str());
  return 0;
}
