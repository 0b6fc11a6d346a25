// Unity Catalog tables to Zerobus proto2 messages (zerobus-protocol.md §7):
// the REST answer, type_text, the mapping of every type, the labels and the
// numbering, and every column that cannot be sent named in one error.

#include "schema/uc_schema.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "gtest/gtest.h"
#include "schema/record_codec.h"
#include "testutil.h"

namespace zb {
namespace {

using ::testing::HasSubstr;
namespace pb = google::protobuf;

std::string DataFile(const std::string& name) {
  return zb::testing::ReadFileOrEmpty(std::string(ZEROBUSD_SOURCE_DIR) + "/tests/data/uc/" + name);
}

UcTable Table(std::vector<UcColumn> columns) {
  UcTable t;
  t.full_name = "main.edge.t";
  t.columns = std::move(columns);
  return t;
}

pb::DescriptorProto Descriptor(const TableProto& p) {
  pb::DescriptorProto d;
  EXPECT_TRUE(d.ParseFromString(p.descriptor_proto));
  return d;
}

// The golden file is what `zerobusctl gen-proto` prints for a table with
// every type the service takes (tests/data/uc/every_type.json).
TEST(UcSchemaTest, EveryTypeMapsAsTheGoldenProtoSays) {
  auto table = ParseUcTable(DataFile("every_type.json"));
  ASSERT_TRUE(table.ok()) << table.status();
  auto proto = TableToProto(*table);
  ASSERT_TRUE(proto.ok()) << proto.status();
  EXPECT_EQ(proto->proto_text, DataFile("every_type.proto"));
  const pb::DescriptorProto d = Descriptor(*proto);
  EXPECT_EQ(d.name(), "every_type");
  ASSERT_EQ(d.field_size(), 20);
  // Column order and numbering, NOT NULL as required.
  EXPECT_EQ(d.field(0).name(), "id");
  EXPECT_EQ(d.field(0).label(), pb::FieldDescriptorProto::LABEL_REQUIRED);
  EXPECT_EQ(d.field(0).type(), pb::FieldDescriptorProto::TYPE_INT64);
  EXPECT_EQ(d.field(1).label(), pb::FieldDescriptorProto::LABEL_OPTIONAL);
  EXPECT_EQ(d.field(1).type(), pb::FieldDescriptorProto::TYPE_INT32) << "TINYINT";
  EXPECT_EQ(d.field(6).type(), pb::FieldDescriptorProto::TYPE_STRING) << "DECIMAL as decimal text";
  EXPECT_EQ(d.field(8).type(), pb::FieldDescriptorProto::TYPE_STRING) << "VARCHAR(n)";
  EXPECT_EQ(d.field(11).type(), pb::FieldDescriptorProto::TYPE_INT32) << "DATE: days";
  EXPECT_EQ(d.field(12).type(), pb::FieldDescriptorProto::TYPE_INT64) << "TIMESTAMP: microseconds";
  EXPECT_EQ(d.field(13).type(), pb::FieldDescriptorProto::TYPE_INT64) << "TIMESTAMP_NTZ";
  EXPECT_EQ(d.field(14).type(), pb::FieldDescriptorProto::TYPE_STRING) << "VARIANT as JSON text";
  EXPECT_EQ(d.field(15).label(), pb::FieldDescriptorProto::LABEL_REPEATED) << "ARRAY";
  for (int i = 0; i < d.field_size(); ++i) EXPECT_EQ(d.field(i).number(), i + 1);
  // Self-contained: nested types only, fully qualified inside the message.
  EXPECT_EQ(d.field(16).type_name(), "every_type.Readings") << "relative, as a loaded .proto's";
  bool map_entry_found = false;
  for (const auto& nested : d.nested_type()) map_entry_found |= nested.options().map_entry();
  EXPECT_TRUE(map_entry_found) << "MAP as map<K, V>";
}

// What gen-proto prints is what a proto route loads: the same descriptor
// goes to create_stream either way.
TEST(UcSchemaTest, TheGeneratedProtoLoadsAsARouteSchemaWithTheSameDescriptor) {
  auto proto = TableToProto(*ParseUcTable(DataFile("every_type.json")), "Reading");
  ASSERT_TRUE(proto.ok()) << proto.status();
  zb::testing::TempDir dir;
  const std::string path = dir.Sub("reading.proto");
  zb::testing::WriteFile(path, proto->proto_text);
  auto codec = MakeProtoCodec(path, "Reading");
  ASSERT_TRUE(codec.ok()) << codec.status();
  pb::DescriptorProto loaded, generated;
  ASSERT_TRUE(loaded.ParseFromString((*codec)->descriptor_proto()));
  ASSERT_TRUE(generated.ParseFromString(proto->descriptor_proto));
  EXPECT_EQ(loaded.DebugString(), generated.DebugString());
}

TEST(UcSchemaTest, EveryColumnThatCannotBeSentIsNamedInOneError) {
  auto table = ParseUcTable(DataFile("unsupported.json"));
  ASSERT_TRUE(table.ok()) << table.status();
  auto proto = TableToProto(*table);
  ASSERT_FALSE(proto.ok());
  const std::string m(proto.status().message());
  EXPECT_THAT(m, HasSubstr("table main.edge.odd: 9 columns cannot be sent to Zerobus"));
  EXPECT_THAT(m, HasSubstr("span (interval day to second): INTERVAL DAY TO SECOND is not a type Zerobus takes"));
  EXPECT_THAT(m, HasSubstr("grid (array<array<int>>): an ARRAY of ARRAY"));
  EXPECT_THAT(m, HasSubstr("lookup (map<string,array<int>>): a MAP of ARRAY"));
  EXPECT_THAT(m, HasSubstr("bad key: the name is not a proto field name"));
  EXPECT_THAT(m, HasSubstr("place (geography(4326))"));
  EXPECT_THAT(m, HasSubstr("letter (char(1))"));
  EXPECT_THAT(m, HasSubstr("weights (map<double,int>): a MAP key must be"));
  EXPECT_THAT(m, HasSubstr("message: the name is not a proto field name"));
  EXPECT_THAT(m, HasSubstr("inner.when (interval year to month)"));
  EXPECT_THAT(m, ::testing::Not(HasSubstr("ok (")));
  EXPECT_THAT(m, ::testing::Not(HasSubstr("fine")));
}

TEST(UcSchemaTest, FieldNumbersSkipTheRangeProtoReserves) {
  std::vector<UcColumn> columns;
  for (int i = 0; i < 19002; ++i) columns.push_back(UcColumn{absl::StrCat("c", i), "int", true});
  auto proto = TableToProto(Table(std::move(columns)));
  ASSERT_TRUE(proto.ok()) << proto.status();
  const pb::DescriptorProto d = Descriptor(*proto);
  EXPECT_EQ(d.field(18997).number(), 18998);
  EXPECT_EQ(d.field(18998).number(), 18999) << "the last before the reserved range";
  EXPECT_EQ(d.field(18999).number(), 20000) << "19000-19999 skipped";
  EXPECT_EQ(d.field(19001).number(), 20002);
}

TEST(UcSchemaTest, TypeTextIsParsedCaseInsensitivelyWithItsDetails) {
  auto t = ParseUcType("ARRAY<STRUCT<`a b`:INT NOT NULL COMMENT 'x, y>', c:Decimal, d:decimal( 5 , 3 )>>");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->kind, UcType::Kind::kArray);
  const UcType& s = *t->element;
  ASSERT_EQ(s.kind, UcType::Kind::kStruct);
  ASSERT_EQ(s.fields.size(), 3u);
  EXPECT_EQ(s.fields[0].name, "a b");
  EXPECT_FALSE(s.fields[0].nullable);
  EXPECT_EQ(s.fields[1].type.precision, 10) << "DECIMAL alone is DECIMAL(10,0)";
  EXPECT_EQ(s.fields[1].type.scale, 0);
  EXPECT_EQ(s.fields[2].type.precision, 5);
  EXPECT_EQ(s.fields[2].type.scale, 3);
  EXPECT_TRUE(s.fields[2].nullable);
  auto m = ParseUcType("map<string, timestamp_ntz>");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->value->kind, UcType::Kind::kTimestampNtz);
  auto interval = ParseUcType("interval day to second");
  ASSERT_TRUE(interval.ok());
  EXPECT_EQ(interval->kind, UcType::Kind::kUnsupported);
  EXPECT_EQ(interval->text, "interval day to second");
}

TEST(UcSchemaTest, TextThatIsNoTypeIsAnErrorThatSaysWhere) {
  for (const char* bad : {"", "array<int", "map<int>", "decimal(40,2)", "decimal(5,6)", "struct<:int>",
                          "struct<a int>", "int(3)", "array<>", "int junk", "struct<`a:int>"}) {
    auto t = ParseUcType(bad);
    EXPECT_FALSE(t.ok()) << bad;
    if (!t.ok()) {
      EXPECT_THAT(std::string(t.status().message()), HasSubstr("bad type")) << bad;
    }
  }
  // At the depth limit, and one past it.
  std::string deep = "int";
  for (int i = 1; i < kMaxUcTypeDepth; ++i) deep = "array<" + deep + ">";
  EXPECT_TRUE(ParseUcType(deep).ok());
  auto too_deep = ParseUcType("array<" + deep + ">");
  ASSERT_FALSE(too_deep.ok());
  EXPECT_THAT(std::string(too_deep.status().message()), HasSubstr("nested more than 100 deep"));
}

TEST(UcSchemaTest, TheRestAnswerIsCheckedAndSaysWhatIsWrong) {
  auto error = [](const std::string& json) {
    auto t = ParseUcTable(json);
    return t.ok() ? std::string("ok") : std::string(t.status().message());
  };
  EXPECT_THAT(error("not json"), HasSubstr("is not JSON"));
  EXPECT_THAT(error("[1]"), HasSubstr("not a JSON object"));
  EXPECT_THAT(error(R"({"columns":[]})"), HasSubstr("full_name: missing"));
  EXPECT_THAT(error(R"({"full_name":"a.b.c"})"), HasSubstr("columns: missing"));
  EXPECT_THAT(error(R"({"full_name":"a.b.c","columns":[]})"), HasSubstr("the table has none"));
  EXPECT_THAT(error(R"({"full_name":"a.b.c","columns":[{"name":"x"}]})"),
              HasSubstr("columns[0].type_text: missing (column x)"));
  EXPECT_THAT(error(R"({"full_name":"a.b.c","columns":[{"type_text":"int"}]})"), HasSubstr("columns[0].name"));
  EXPECT_THAT(error(R"({"full_name":"a.b.c","columns":[{"name":"x","type_text":"int","nullable":"no"}]})"),
              HasSubstr("columns[0].nullable: not a boolean"));
  EXPECT_THAT(error(std::string(kMaxUcTableJsonBytes + 1, ' ')), HasSubstr("more than the"));
  // The name from its parts, and the columns in position order.
  auto t = ParseUcTable(R"({"catalog_name":"c","schema_name":"s","name":"t","columns":[
      {"name":"b","type_text":"int","position":1},{"name":"a","type_text":"int","position":0,"nullable":false}]})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->full_name, "c.s.t");
  ASSERT_EQ(t->columns.size(), 2u);
  EXPECT_EQ(t->columns[0].name, "a");
  EXPECT_FALSE(t->columns[0].nullable);
  EXPECT_TRUE(t->columns[1].nullable) << "nullable when not said";
}

// What the service checks at create_stream: the generated message fits its
// table, nested shapes included; a STRUCT field of another type does not.
TEST(UcSchemaTest, TheGeneratedMessageFitsItsTableAndAChangedNestedFieldDoesNot) {
  auto table = ParseUcTable(DataFile("every_type.json"));
  ASSERT_TRUE(table.ok()) << table.status();
  auto proto = TableToProto(*table, "Reading");
  ASSERT_TRUE(proto.ok()) << proto.status();
  EXPECT_FALSE(CheckMessageAgainstTable(*table, proto->descriptor_proto).has_value());
  pb::DescriptorProto d = Descriptor(*proto);
  for (auto& nested : *d.mutable_nested_type()) {
    if (nested.name() != "DeviceInfo") continue;
    for (auto& nested2 : *nested.mutable_nested_type()) {
      nested2.mutable_field(0)->set_type(pb::FieldDescriptorProto::TYPE_INT64);  // firmware.major: int32 -> int64
    }
  }
  auto mismatch = CheckMessageAgainstTable(*table, d.SerializeAsString());
  ASSERT_TRUE(mismatch.has_value());
  EXPECT_EQ(mismatch->cause, "TYPE_INCOMPATIBLE");
  EXPECT_THAT(mismatch->message, HasSubstr("cannot carry column device_info"));
  EXPECT_TRUE(CheckMessageAgainstTable(*table, "\xff not a descriptor").has_value());
}

TEST(UcSchemaTest, AMessageNameMustBeAProtoName) {
  auto t = Table({UcColumn{"a", "int", true}});
  EXPECT_TRUE(TableToProto(t, "Good_Name1").ok());
  auto bad = TableToProto(t, "1bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("choose one with --message"));
  t.full_name = "main.edge.my-table";
  EXPECT_FALSE(TableToProto(t).ok()) << "a table name proto does not allow needs --message";
}

}  // namespace
}  // namespace zb
