// JSON records converted by a Unity Catalog table's column types
// (schema/uc_convert.h): every type of tests/data/uc/every_type.json round
// trips through the table's descriptor, with the edge cases of time zones,
// fractions, leap days, decimals that do not fit, nulls for nullable and
// NOT NULL columns, and hostile input, each refusal naming the field.

#include "schema/uc_convert.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

using ::testing::HasSubstr;
namespace pb = google::protobuf;

std::string DataFile(const std::string& name) {
  return zb::testing::ReadFileOrEmpty(std::string(ZEROBUSD_SOURCE_DIR) + "/tests/data/uc/" + name);
}

// The every_type table's converter, and a decoder for what it makes.
class UcConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto table = ParseUcTable(DataFile("every_type.json"));
    ASSERT_TRUE(table.ok()) << table.status();
    auto converter = MakeTableRecordConverter(*table, 64);
    ASSERT_TRUE(converter.ok()) << converter.status();
    converter_ = std::move(*converter);
    pb::FileDescriptorProto file;
    file.set_name("t.proto");
    ASSERT_TRUE(file.add_message_type()->ParseFromString(converter_->descriptor_proto()));
    root_ = pool_.BuildFile(file)->message_type(0);
  }

  // The record decoded; fails the test when it was refused.
  std::unique_ptr<pb::Message> Decode(const std::string& json) {
    auto bytes = converter_->Convert(json);
    EXPECT_TRUE(bytes.ok()) << bytes.status() << "\n" << json;
    std::unique_ptr<pb::Message> m(factory_.GetPrototype(root_)->New());
    if (bytes.ok()) {
      EXPECT_TRUE(m->ParseFromString(*bytes));
    }
    return m;
  }

  // Why the record was refused ("" when it was not).
  std::string Refusal(const std::string& json) {
    auto bytes = converter_->Convert(json);
    return bytes.ok() ? "" : std::string(bytes.status().message());
  }

  // A record with the NOT NULL columns and `more`.
  static std::string With(const std::string& more) {
    return absl::StrCat(R"({"id":1,"count":2,"name":"n","ts":0)", more.empty() ? "" : ",", more, "}");
  }

  const pb::FieldDescriptor* F(const std::string& name) { return root_->FindFieldByName(name); }

  std::unique_ptr<TableRecordConverter> converter_;
  pb::DescriptorPool pool_;
  const pb::Descriptor* root_ = nullptr;
  pb::DynamicMessageFactory factory_;
};

TEST_F(UcConvertTest, ARecordOfEveryTypeRoundTrips) {
  auto m = Decode(R"({"id":7,"tiny":-128,"small":32767,"count":2147483647,"ratio":1.5,"value":-2.25,
      "price":12.3,"name":"n","code":"abc","ok":true,"blob":"AAEC","day":"2024-02-29",
      "ts":"2026-12-01T10:00:00.123456Z","local_ts":"2026-12-01T10:00:00.5",
      "extra":{"a":[1,2.50,"x"],"big":123456789012345678901234,"n":null},
      "tags":["a","b"],"readings":[{"at":5,"v":1.0},{"v":2.0}],"attributes":{"k":"v","k2":""},
      "limits":{"3":{"lo":1,"hi":2}},"device_info":{"vendor":"acme","firmware":{"major":1},"ids":[1,2]}})");
  const pb::Reflection* r = m->GetReflection();
  EXPECT_EQ(r->GetInt64(*m, F("id")), 7);
  EXPECT_EQ(r->GetInt32(*m, F("tiny")), -128);
  EXPECT_EQ(r->GetInt32(*m, F("small")), 32767);
  EXPECT_EQ(r->GetInt32(*m, F("count")), 2147483647);
  EXPECT_EQ(r->GetFloat(*m, F("ratio")), 1.5f);
  EXPECT_EQ(r->GetDouble(*m, F("value")), -2.25);
  EXPECT_EQ(r->GetString(*m, F("price")), "12.30") << "exactly the scale's fraction digits";
  EXPECT_EQ(r->GetString(*m, F("code")), "abc");
  EXPECT_TRUE(r->GetBool(*m, F("ok")));
  EXPECT_EQ(r->GetString(*m, F("blob")), std::string("\x00\x01\x02", 3));
  EXPECT_EQ(r->GetInt32(*m, F("day")), 19782) << "2024-02-29, a leap day, in days since 1970-01-01";
  EXPECT_EQ(r->GetInt64(*m, F("ts")), 1796119200123456) << "microseconds, UTC";
  EXPECT_EQ(r->GetInt64(*m, F("local_ts")), 1796119200500000) << "the wall clock as if UTC";
  EXPECT_EQ(r->GetString(*m, F("extra")), R"({"a":[1,2.50,"x"],"big":123456789012345678901234,"n":null})")
      << "VARIANT: the JSON text, numbers as written";
  EXPECT_EQ(r->FieldSize(*m, F("tags")), 2);
  EXPECT_EQ(r->FieldSize(*m, F("readings")), 2);
  EXPECT_EQ(r->FieldSize(*m, F("attributes")), 2);
  EXPECT_EQ(r->FieldSize(*m, F("limits")), 1);
  const pb::Message& limit = r->GetRepeatedMessage(*m, F("limits"), 0);
  EXPECT_EQ(limit.GetReflection()->GetInt32(limit, limit.GetDescriptor()->field(0)), 3) << "an INT key from text";
  const pb::Message& device = r->GetMessage(*m, F("device_info"));
  EXPECT_EQ(device.ShortDebugString(), R"(vendor: "acme" firmware { major: 1 } ids: 1 ids: 2)");
}

TEST_F(UcConvertTest, TimesTakeOffsetsFractionsAndTheEpochsOtherSide) {
  auto ts = [&](const std::string& text) {
    auto m = Decode(absl::StrCat(R"({"id":1,"count":2,"name":"n","ts":)", text, "}"));
    return m->GetReflection()->GetInt64(*m, F("ts"));
  };
  EXPECT_EQ(ts(R"("2026-12-01T11:00:00+01:00")"), ts(R"("2026-12-01T10:00:00Z")")) << "the offset is applied";
  EXPECT_EQ(ts(R"("2026-12-01T05:30:00-04:30")"), ts(R"("2026-12-01T10:00:00Z")"));
  EXPECT_EQ(ts(R"("1970-01-01T00:00:00.1234567Z")"), 123456) << "finer than a microsecond: truncated";
  EXPECT_EQ(ts(R"("1969-12-31T23:59:59.999999Z")"), -1);
  EXPECT_EQ(ts("-5"), -5) << "integer microseconds as they are";
  EXPECT_THAT(Refusal(With(R"("local_ts":"2026-12-01T10:00:00Z")")),
              HasSubstr("field local_ts: expected a wall-clock time"));
  EXPECT_THAT(Refusal(R"({"id":1,"count":2,"name":"n","ts":"2026-12-01T10:00:00"})"),
              HasSubstr("field ts: expected an RFC 3339 time with its offset"));
  EXPECT_THAT(Refusal(R"({"id":1,"count":2,"name":"n","ts":"yesterday"})"), HasSubstr("\"yesterday\""));
  EXPECT_THAT(Refusal(R"({"id":1,"count":2,"name":"n","ts":1.5})"), HasSubstr("field ts"));
}

TEST_F(UcConvertTest, DatesAreRealDaysAsTextOrIntegers) {
  auto day = [&](const std::string& text) {
    auto m = Decode(With(absl::StrCat(R"("day":)", text)));
    return m->GetReflection()->GetInt32(*m, F("day"));
  };
  EXPECT_EQ(day(R"("1970-01-01")"), 0);
  EXPECT_EQ(day(R"("1969-12-31")"), -1);
  EXPECT_EQ(day(R"("2000-02-29")"), 11016);
  EXPECT_EQ(day("-3"), -3);
  for (const char* bad : {R"("2023-02-29")", R"("2024-13-01")", R"("2024-2-3")", R"("2024-02-03T00:00")",
                          "2147483648", "true"}) {
    EXPECT_THAT(Refusal(With(absl::StrCat(R"("day":)", bad))), HasSubstr("field day:")) << bad;
  }
}

TEST_F(UcConvertTest, DecimalsAreExactOrRefusedNeverRounded) {
  auto price = [&](const std::string& text) {
    auto m = Decode(With(absl::StrCat(R"("price":)", text)));
    return m->GetReflection()->GetString(*m, F("price"));
  };
  EXPECT_EQ(price("12"), "12.00");
  EXPECT_EQ(price(R"("-0.5")"), "-0.50");
  EXPECT_EQ(price("1e3"), "1000.00");
  EXPECT_EQ(price("12.340"), "12.34") << "trailing zeros are not digits it needs";
  EXPECT_EQ(price("99999999.99"), "99999999.99") << "DECIMAL(10,2) at its limit";
  EXPECT_EQ(price("-99999999.99"), "-99999999.99");
  EXPECT_EQ(price(R"("-0")"), "0.00");
  EXPECT_EQ(price(R"("0.000")"), "0.00");
  EXPECT_EQ(price("5E-2"), "0.05");
  EXPECT_THAT(Refusal(With(R"("price":12.345)")), HasSubstr("more than 2 fraction digits"));
  EXPECT_THAT(Refusal(With(R"("price":123456789.1)")), HasSubstr("does not fit DECIMAL(10,2)"));
  EXPECT_THAT(Refusal(With(R"("price":"100000000")")), HasSubstr("at most 8 digits before the point"));
  for (const char* bad : {R"("abc")", R"("1.2.3")", R"("")", "true", R"("1e99999")", R"("--1")"}) {
    EXPECT_THAT(Refusal(With(absl::StrCat(R"("price":)", bad))), HasSubstr("field price")) << bad;
  }
}

TEST_F(UcConvertTest, NullsAreAbsentForNullableColumnsAndRefusedForNotNullOnes) {
  auto m = Decode(With(R"("tiny":null,"device_info":null,"tags":null)"));
  EXPECT_FALSE(m->GetReflection()->HasField(*m, F("tiny")));
  EXPECT_FALSE(m->GetReflection()->HasField(*m, F("device_info")));
  EXPECT_THAT(Refusal(R"({"id":null,"count":2,"name":"n","ts":0})"),
              HasSubstr("field id: the column is NOT NULL but the record has null"));
  EXPECT_THAT(Refusal(R"({"id":1,"name":"n","ts":0})"),
              HasSubstr("field count: the column is NOT NULL but the record has no value"));
  EXPECT_THAT(Refusal(With(R"("device_info":{"model":"m"})")), HasSubstr("field device_info.vendor: the column is NOT NULL"));
}

TEST_F(UcConvertTest, HostileRecordsAreRefusedWithTheFieldAndTheReason) {
  EXPECT_THAT(Refusal(With(R"("nope":1)")), HasSubstr("field nope: the table has no such column"));
  EXPECT_THAT(Refusal(With(R"("device_info":{"vendor":"v","x":1})")), HasSubstr("field device_info.x: the table has no"));
  EXPECT_THAT(Refusal(With(R"("tiny":128)")), HasSubstr("field tiny: expected an integer in [-128, 127] (TINYINT), got 128"));
  EXPECT_THAT(Refusal(With(R"("small":-32769)")), HasSubstr("SMALLINT"));
  EXPECT_THAT(Refusal(R"({"id":1,"count":"2","name":"n","ts":0})"), HasSubstr("field count: expected an integer"));
  EXPECT_THAT(Refusal(R"({"id":9223372036854775808,"count":2,"name":"n","ts":0})"), HasSubstr("field id"));
  EXPECT_THAT(Refusal(With(R"("ratio":1e39)")), HasSubstr("FLOAT's range"));
  EXPECT_THAT(Refusal(With(R"("tags":["a",null])")), HasSubstr("field tags[1]: an ARRAY cannot carry null"));
  EXPECT_THAT(Refusal(With(R"("tags":"a")")), HasSubstr("field tags: expected an array"));
  EXPECT_THAT(Refusal(With(R"("attributes":{"k":null})")), HasSubstr("field attributes[\"k\"]: a MAP cannot carry null"));
  EXPECT_THAT(Refusal(With(R"("limits":{"x":{"lo":1}})")), HasSubstr("the key is not an integer"));
  EXPECT_THAT(Refusal(With(R"("blob":"not base64!")")), HasSubstr("field blob: expected base64"));
  EXPECT_THAT(Refusal(With(R"("code":"0123456789abcdefg")")), HasSubstr("longer than VARCHAR(16): 17 characters"));
  EXPECT_EQ(Refusal(With(R"("code":"ééééééééééééééé")")), "") << "VARCHAR counts characters, not bytes";
  EXPECT_THAT(Refusal(With(R"("readings":[{"at":"x"}])")), HasSubstr("field readings[0].at"));
  EXPECT_THAT(Refusal(With(R"("ok":1)")), HasSubstr("field ok: expected true or false"));
  EXPECT_FALSE(Refusal("[1]").empty());
  EXPECT_FALSE(Refusal(With("") + " trailing").empty());
  EXPECT_FALSE(Refusal("").empty());
  std::string deep = "1";
  for (int i = 0; i < 70; ++i) deep = "[" + deep + "]";
  EXPECT_FALSE(Refusal(With(absl::StrCat(R"("extra":)", deep))).empty()) << "deeper than the route allows";
}

// intake.max_json_depth (64 here) holds for a table's records too: a VARIANT
// nested to exactly the limit is taken whole, one level more is refused
// before anything walks it.
TEST_F(UcConvertTest, NestingAtTheDepthLimitIsTakenOneMoreIsRefused) {
  auto nested = [](int arrays) {
    std::string v = "1";
    for (int i = 0; i < arrays; ++i) v = "[" + v + "]";
    return v;
  };
  // The record's object is level 1: 63 arrays inside it make 64 levels.
  auto m = Decode(With(absl::StrCat(R"("extra":)", nested(63))));
  EXPECT_EQ(m->GetReflection()->GetString(*m, F("extra")), nested(63));
  EXPECT_THAT(Refusal(With(absl::StrCat(R"("extra":)", nested(64)))), HasSubstr("deep"));
}

// A from_table route's codec: JSON is converted as above; a framed record
// already in wire form must be the table's message, NOT NULL columns set.
TEST_F(UcConvertTest, TheTableCodecConvertsJsonAndChecksWireRecords) {
  auto table = ParseUcTable(DataFile("every_type.json"));
  ASSERT_TRUE(table.ok());
  auto codec = MakeTableCodec(*table, 64);
  ASSERT_TRUE(codec.ok()) << codec.status();
  EXPECT_TRUE((*codec)->is_proto());
  EXPECT_EQ((*codec)->descriptor_proto(), converter_->descriptor_proto());
  auto from_json = (*codec)->FromJson(With(R"("day":"2024-02-29")"));
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  EXPECT_EQ(*from_json, *converter_->Convert(With(R"("day":"2024-02-29")")));
  EXPECT_THAT((*codec)->FromJson(With(R"("nope":1)")).status().message(), HasSubstr("field nope"));

  auto wire = (*codec)->FromWire(*from_json);
  ASSERT_TRUE(wire.ok()) << wire.status();
  EXPECT_EQ(*wire, *from_json);
  EXPECT_THAT((*codec)->FromWire("\xff\xff\xff").status().message(), HasSubstr("not a valid serialized every_type"));
  // A message with id only: count, name and ts are NOT NULL.
  std::unique_ptr<pb::Message> m(factory_.GetPrototype(root_)->New());
  m->GetReflection()->SetInt64(m.get(), F("id"), 7);
  const std::string partial = m->SerializePartialAsString();
  EXPECT_THAT((*codec)->FromWire(partial).status().message(),
              HasSubstr("NOT NULL column(s) of main.edge.every_type missing"));
  // Encoded for another version of the table: a field number it does not
  // have, at the top or inside a STRUCT, is refused, never sent half-read.
  std::unique_ptr<pb::Message> other(m->New());
  ASSERT_TRUE(other->ParseFromString(*from_json));
  other->GetReflection()->MutableUnknownFields(other.get())->AddVarint(99, 1);
  EXPECT_THAT((*codec)->FromWire(other->SerializeAsString()).status().message(),
              HasSubstr("field number 99 is not a column of main.edge.every_type"));
  auto with_device = converter_->Convert(With(R"("device_info":{"vendor":"v"})"));
  ASSERT_TRUE(with_device.ok());
  other->Clear();
  ASSERT_TRUE(other->ParseFromString(*with_device));
  pb::Message* device = other->GetReflection()->MutableMessage(other.get(), F("device_info"));
  device->GetReflection()->MutableUnknownFields(device)->AddLengthDelimited(9, "x");
  EXPECT_THAT((*codec)->FromWire(other->SerializeAsString()).status().message(),
              HasSubstr("field number device_info.9 is not a column"));

  // Both forms tell the hook when a record names what the table lacks.
  int told = 0;
  auto hooked = MakeTableCodec(*table, 64, [&told] { ++told; });
  ASSERT_TRUE(hooked.ok());
  EXPECT_FALSE((*hooked)->FromWire(other->SerializeAsString()).ok());
  EXPECT_FALSE((*hooked)->FromJson(With(R"("nope":1)")).ok());
  EXPECT_EQ(told, 2);
  EXPECT_FALSE((*hooked)->FromJson(With(R"("tiny":1000)")).ok());
  EXPECT_EQ(told, 2) << "other refusals say nothing";
}

TEST(RefusingCodecTest, RefusesEveryRecordRetryably) {
  auto codec = MakeRefusingCodec(absl::UnavailableError("route t takes no records yet"));
  EXPECT_TRUE(absl::IsUnavailable(codec->FromJson("{}").status()));
  EXPECT_TRUE(absl::IsUnavailable(codec->FromWire("x").status()));
  EXPECT_EQ(codec->FromJson("{}").status().message(), "route t takes no records yet");
}

}  // namespace
}  // namespace zb
