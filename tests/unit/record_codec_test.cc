// Intake record validation and conversion: every rejection says what is wrong.

#include "schema/record_codec.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

TEST(JsonCodecTest, AcceptsObjectsUnchanged) {
  auto codec = MakeJsonCodec();
  auto r = codec->FromJson(R"({"id": 1, "s": "x", "nested": {"a": [1, 2]}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R"({"id": 1, "s": "x", "nested": {"a": [1, 2]}})");
  EXPECT_FALSE(codec->is_proto());
  EXPECT_TRUE(codec->descriptor_proto().empty());
}

TEST(JsonCodecTest, RejectsInvalidJsonWithPosition) {
  auto r = MakeJsonCodec()->FromJson(R"({"id": 1,)");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("invalid JSON at byte"), std::string::npos) << r.status();
}

TEST(JsonCodecTest, RejectsNonObjectsNamingWhatWasSent) {
  const std::pair<const char*, const char*> cases[] = {
      {"[1,2]", "got an array"}, {"42", "got a number"}, {"-1.5", "got a number"}, {"\"s\"", "got a string"},
      {"null", "got null"},      {"true", "got a boolean"}};
  for (const auto& [text, got] : cases) {
    auto r = MakeJsonCodec()->FromJson(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.status().message().find(absl::StrCat("not a JSON object: ", got)), std::string::npos)
        << text << ": " << r.status();
  }
}

TEST(JsonCodecTest, RejectsInvalidUtf8AndTrailingData) {
  for (const std::string& text : {std::string("{\"s\":\"\xff\xfe\"}"), std::string("{\"a\":1} {\"b\":2}"),
                                 std::string("{\"a\":1}x")}) {
    auto r = MakeJsonCodec()->FromJson(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.status().message().find("invalid JSON at byte"), std::string::npos) << r.status();
  }
}

TEST(JsonCodecTest, AcceptsValidJsonTheFastParserRefuses) {
  // Integers beyond 64 bits are valid JSON (simdjson's DOM refuses them).
  auto r = MakeJsonCodec()->FromJson(R"({"big": 123456789012345678901234567890, "ok": true})");
  ASSERT_TRUE(r.ok()) << r.status();
}

TEST(JsonCodecTest, TextThatIsNotJsonIsReportedAsInvalidJson) {
  for (const char* text : {"this is not json", "{oops}", "[1,2"}) {
    auto r = MakeJsonCodec()->FromJson(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.status().message().find("invalid JSON at byte"), std::string::npos) << text << ": " << r.status();
  }
}

TEST(JsonCodecTest, RejectsTrailingDataAndEmpty) {
  EXPECT_FALSE(MakeJsonCodec()->FromJson(R"({"a":1} {"b":2})").ok());
  auto empty = MakeJsonCodec()->FromJson("   ");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);
}

TEST(JsonCodecTest, RejectsInvalidUtf8) {
  EXPECT_FALSE(MakeJsonCodec()->FromJson("{\"a\":\"\xff\xfe\"}").ok());
}

// {"a":[[...]]}: the object is level 1, each array one more.
std::string NestedRecord(int depth) {
  std::string s = "{\"a\":";
  s += std::string(depth - 1, '[');
  s += "1";
  s += std::string(depth - 1, ']');
  s += "}";
  return s;
}

TEST(JsonCodecTest, NestingAtTheLimitIsAcceptedOneMoreIsRefused) {
  for (int limit : {1, 2, 8, kDefaultMaxJsonDepth}) {
    auto codec = MakeJsonCodec(limit);
    auto at = codec->FromJson(NestedRecord(limit));
    EXPECT_TRUE(at.ok()) << "limit " << limit << ": " << at.status();
    auto over = codec->FromJson(NestedRecord(limit + 1));
    ASSERT_FALSE(over.ok()) << "limit " << limit;
    EXPECT_NE(over.status().message().find(absl::StrCat("nested deeper than ", limit, " levels")), std::string::npos)
        << over.status();
    EXPECT_NE(over.status().message().find("intake.max_json_depth"), std::string::npos) << over.status();
  }
}

TEST(JsonCodecTest, EmptyContainersCountAsLevels) {
  for (const char* text : {R"({"a":{}})", R"({"a":[]})", R"({"a":1,"b":[{}]})"}) {
    auto r = MakeJsonCodec(1)->FromJson(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.status().message().find("nested deeper than"), std::string::npos) << r.status();
  }
  EXPECT_TRUE(MakeJsonCodec(2)->FromJson(R"({"a":{}})").ok());
  EXPECT_TRUE(MakeJsonCodec(1)->FromJson(R"({"a":"[[{{"})").ok());  // brackets inside strings do not count
}

TEST(JsonCodecTest, HostileDepthIsRefusedWithoutRecursion) {
  // 200,000 nested arrays (400 KB): once a stack overflow in the fallback
  // parser. Also unbalanced (never closed) and mixed with broken text, so
  // each parser path meets it.
  const std::string deep = "{\"a\":" + std::string(200000, '[') + std::string(200000, ']') + "}";
  const std::string unclosed = "{\"a\":" + std::string(200000, '[');
  std::string mixed = "{\"a\":";
  for (int i = 0; i < 100000; ++i) mixed += "{\"b\":[";
  for (const std::string* text : std::vector<const std::string*>{&deep, &unclosed, &mixed}) {
    for (int limit : {kDefaultMaxJsonDepth, kMaxJsonDepthLimit}) {
      auto r = MakeJsonCodec(limit)->FromJson(*text);
      ASSERT_FALSE(r.ok());
      EXPECT_NE(r.status().message().find("nested deeper than"), std::string::npos) << r.status();
    }
  }
}

TEST(JsonCodecTest, RejectsNulBytes) {
  for (const std::string& text : {std::string("{\"a\":1}\0", 8), std::string("{\"a\":\"x\0y\"}", 11),
                                 std::string("\0{\"a\":1}", 8)}) {
    auto r = MakeJsonCodec()->FromJson(text);
    ASSERT_FALSE(r.ok()) << text.size();
    EXPECT_NE(r.status().message().find("NUL byte"), std::string::npos) << r.status();
  }
}

class ProtoCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    zb::testing::WriteFile(dir_.Sub("reading.proto"), R"(
syntax = "proto2";
package edge;
message Reading {
  required string sensor = 1;
  optional double value = 2;
  optional int64 ts = 3;
  message Tag { optional string k = 1; optional string v = 2; }
  repeated Tag tags = 4;
}
message Other { optional Reading r = 1; }
message Node { optional Node child = 1; optional int32 v = 2; }
)");
  }
  zb::testing::TempDir dir_;
};

TEST_F(ProtoCodecTest, ConvertsJsonToProtoAndBuildsSelfContainedDescriptor) {
  auto codec = MakeProtoCodec(dir_.Sub("reading.proto"), "Reading");
  ASSERT_TRUE(codec.ok()) << codec.status();
  EXPECT_TRUE((*codec)->is_proto());
  auto bytes = (*codec)->FromJson(R"({"sensor":"s1","value":1.5,"ts":"17","tags":[{"k":"a","v":"b"}]})");
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_FALSE(bytes->empty());
  // The wire form round-trips.
  EXPECT_TRUE((*codec)->FromWire(*bytes).ok());
  // The descriptor names no package, so a package-less wrapper resolves it.
  EXPECT_EQ((*codec)->descriptor_proto().find("edge."), std::string::npos);
  EXPECT_NE((*codec)->descriptor_proto().find("Reading"), std::string::npos);
}

TEST_F(ProtoCodecTest, RejectsJsonThatDoesNotMatchTheMessage) {
  auto codec = MakeProtoCodec(dir_.Sub("reading.proto"), "edge.Reading");
  ASSERT_TRUE(codec.ok()) << codec.status();
  auto unknown = (*codec)->FromJson(R"({"sensor":"s1","colour":"red"})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("edge.Reading"), std::string::npos) << unknown.status();
  auto missing = (*codec)->FromJson(R"({"value":2})");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("sensor"), std::string::npos) << missing.status();
  EXPECT_FALSE((*codec)->FromWire("\xff\xff\xff").ok());
}

TEST_F(ProtoCodecTest, HostileDepthIsRefusedInBothForms) {
  auto codec = MakeProtoCodec(dir_.Sub("reading.proto"), "Node", /*max_json_depth=*/16);
  ASSERT_TRUE(codec.ok()) << codec.status();
  // JSON: bounded before protobuf's recursive JSON parser sees it.
  std::string json;
  for (int i = 0; i < 200000; ++i) json += "{\"child\":";
  json += "{}" + std::string(200000, '}');
  auto from_json = (*codec)->FromJson(json);
  ASSERT_FALSE(from_json.ok());
  EXPECT_NE(from_json.status().message().find("nested deeper than 16"), std::string::npos) << from_json.status();
  // Wire: 200,000 nested length-delimited children; protobuf's own
  // recursion limit refuses it.
  auto varint = [](uint64_t n) {
    std::string v;
    for (; n >= 0x80; n >>= 7) v += static_cast<char>((n & 0x7f) | 0x80);
    return v + static_cast<char>(n);
  };
  constexpr int kLevels = 200000;
  std::vector<uint64_t> inner(kLevels + 1, 0);  // inner[k]: bytes inside level k
  for (int k = 1; k <= kLevels; ++k) inner[k] = 1 + varint(inner[k - 1]).size() + inner[k - 1];
  std::string wire;
  for (int k = kLevels; k >= 1; --k) wire += "\x0a" + varint(inner[k - 1]);
  auto from_wire = (*codec)->FromWire(wire);
  ASSERT_FALSE(from_wire.ok());
  EXPECT_NE(from_wire.status().message().find("not a valid serialized"), std::string::npos) << from_wire.status();
}

TEST_F(ProtoCodecTest, ExplainsLoadErrors) {
  auto missing_file = MakeProtoCodec(dir_.Sub("nope.proto"), "Reading");
  ASSERT_FALSE(missing_file.ok());
  EXPECT_NE(missing_file.status().message().find("nope.proto"), std::string::npos);
  auto missing_message = MakeProtoCodec(dir_.Sub("reading.proto"), "Nope");
  ASSERT_FALSE(missing_message.ok());
  EXPECT_NE(missing_message.status().message().find("Nope not found"), std::string::npos);
  auto not_self_contained = MakeProtoCodec(dir_.Sub("reading.proto"), "Other");
  ASSERT_FALSE(not_self_contained.ok());
  EXPECT_NE(not_self_contained.status().message().find("self-contained"), std::string::npos)
      << not_self_contained.status();
  zb::testing::WriteFile(dir_.Sub("broken.proto"), "syntax = \"proto2\";\nmessage X { optional strin a = 1; }\n");
  auto broken = MakeProtoCodec(dir_.Sub("broken.proto"), "X");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("broken.proto:2"), std::string::npos) << broken.status();
}

// schema.column_types: a .proto route's named fields are converted by their
// Unity Catalog column types (times, days, exact decimals, JSON text), the
// rest by protobuf's JSON mapping, as written.
class ColumnTypesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    zb::testing::WriteFile(dir_.Sub("typed.proto"), R"(
syntax = "proto2";
package edge;
message Typed {
  required string id = 1;
  optional int64 ts = 2;
  optional int32 day = 3;
  optional string price = 4;
  optional string extra = 5;
  optional int64 big = 6;
  optional double ratio = 7;
  repeated int64 seen = 8;
  optional bytes blob = 9;
}
)");
  }
  absl::StatusOr<std::unique_ptr<RecordCodec>> Make(std::vector<std::pair<std::string, std::string>> types) {
    return MakeProtoCodec(dir_.Sub("typed.proto"), "edge.Typed", 64, types);
  }
  // The record decoded as protobuf's text format ("" when refused).
  std::string Decoded(const RecordCodec& codec, const std::string& json, std::string* refusal = nullptr,
                      const char* syntax = "proto2") {
    auto bytes = codec.FromJson(json);
    if (!bytes.ok()) {
      if (refusal) *refusal = std::string(bytes.status().message());
      return "";
    }
    google::protobuf::DescriptorPool pool;
    google::protobuf::FileDescriptorProto file;
    file.set_name("t.proto");
    file.set_syntax(syntax);
    file.add_message_type()->ParseFromString(codec.descriptor_proto());
    const google::protobuf::Descriptor* d = pool.BuildFile(file)->message_type(0);
    google::protobuf::DynamicMessageFactory factory(&pool);
    std::unique_ptr<google::protobuf::Message> m(factory.GetPrototype(d)->New());
    EXPECT_TRUE(m->ParseFromString(*bytes));
    return m->ShortDebugString();
  }
  zb::testing::TempDir dir_;
};

TEST_F(ColumnTypesTest, NamedFieldsTakeTheirColumnTypeTheRestProtobufJson) {
  auto codec = Make({{"ts", "timestamp"}, {"day", "date"}, {"price", "decimal(10,2)"}, {"extra", "variant"},
                     {"seen", "array<timestamp>"}, {"blob", "binary"}});
  ASSERT_TRUE(codec.ok()) << codec.status();
  EXPECT_EQ(Decoded(**codec, R"({"id":"a","ts":"2026-12-01T11:00:00.5+01:00","day":"2024-02-29","price":-0.5,)"
                             R"("extra":{"n":1.10},"big":"9223372036854775807","ratio":1e-3,)"
                             R"("seen":[0,"1970-01-01T00:00:01Z"],"blob":"AAEC"})"),
            R"(id: "a" ts: 1796119200500000 day: 19782 price: "-0.50" extra: "{\"n\":1.10}" )"
            R"(big: 9223372036854775807 ratio: 0.001 seen: 0 seen: 1000000 blob: "\000\001\002")");
  // Without the named fields, or with null in them: nothing is set.
  EXPECT_EQ(Decoded(**codec, R"({"id":"b","ts":null,"big":5})"), R"(id: "b" big: 5)");
  // Each refusal names the field; the rest still goes through protobuf's
  // JSON rules (and its messages).
  std::string why;
  EXPECT_EQ(Decoded(**codec, R"({"id":"c","day":"2023-02-29"})", &why), "");
  EXPECT_NE(why.find("field day"), std::string::npos) << why;
  EXPECT_EQ(Decoded(**codec, R"({"id":"c","price":"123456789.1"})", &why), "");
  EXPECT_NE(why.find("field price"), std::string::npos) << why;
  EXPECT_EQ(Decoded(**codec, R"({"id":"c","colour":"red"})", &why), "");
  EXPECT_NE(why.find("does not match edge.Typed"), std::string::npos) << why;
  EXPECT_EQ(Decoded(**codec, R"({"ts":0})", &why), "");
  EXPECT_NE(why.find("id"), std::string::npos) << why;
}

// A named field in its other JSON spelling (lowerCamelCase) is refused, not
// parsed unconverted; proto3 messages with optional fields and oneofs work,
// and a oneof member cannot be named.
TEST_F(ColumnTypesTest, OtherSpellingsOneofsAndProto3) {
  zb::testing::WriteFile(dir_.Sub("p3.proto"), R"(
syntax = "proto3";
message Event {
  string source = 1;
  optional int64 event_time = 2;
  oneof detail { string text = 3; int64 at = 4; }
  message Inner { optional string note = 1; }
  Inner inner = 5;
  int32 day = 6;
}
)");
  auto codec = MakeProtoCodec(dir_.Sub("p3.proto"), "Event", 64, {{"event_time", "timestamp"}, {"day", "date"}});
  ASSERT_TRUE(codec.ok()) << codec.status();
  EXPECT_EQ(Decoded(**codec, R"({"source":"s","event_time":"1970-01-01T00:00:01Z","text":"t","inner":{"note":"n"},)"
                             R"("day":"1970-01-03"})",
                    nullptr, "proto3"),
            R"(source: "s" event_time: 1000000 text: "t" inner { note: "n" } day: 2)");
  std::string why;
  EXPECT_EQ(Decoded(**codec, R"({"source":"s","eventTime":"1970-01-01T00:00:01Z"})", &why, "proto3"), "");
  EXPECT_NE(why.find("does not match Event"), std::string::npos) << why;
  EXPECT_EQ(Decoded(**codec, R"({"text":"t","at":"1"})", &why, "proto3"), "") << "the oneof still holds one member";

  auto oneof = MakeProtoCodec(dir_.Sub("p3.proto"), "Event", 64, {{"at", "timestamp"}});
  ASSERT_FALSE(oneof.ok());
  EXPECT_NE(oneof.status().message().find("at: a member of oneof detail cannot take a column type"),
            std::string::npos)
      << oneof.status();
}

TEST_F(ColumnTypesTest, EveryNameAndTypeMustFitTheMessage) {
  auto codec = Make({{"ts", "date"}, {"nope", "string"}, {"price", "interval day"}, {"day", "not a type("}});
  ASSERT_FALSE(codec.ok());
  const std::string why(codec.status().message());
  EXPECT_NE(why.find("column_types: "), std::string::npos) << why;
  EXPECT_NE(why.find("nope: message Typed has no field of that name"), std::string::npos) << why;
  EXPECT_NE(why.find("price: interval day is not a type Zerobus takes"), std::string::npos) << why;
  EXPECT_NE(why.find("day: "), std::string::npos) << why;
  auto mismatch = Make({{"ts", "date"}});
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("field ts"), std::string::npos) << mismatch.status();
  EXPECT_NE(mismatch.status().message().find("TYPE_INCOMPATIBLE"), std::string::npos) << mismatch.status();
  auto twice = Make({{"ts", "timestamp"}, {"ts", "timestamp"}});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("ts: named twice"), std::string::npos) << twice.status();
}

}  // namespace
}  // namespace zb
