// Fuzzes what producers send to a route whose schema is its table
// (schema: {from_table: true}): records as JSON through the table codec
// (zb::MakeTableCodec of a table with every column type: times, dates,
// decimals, VARIANT, BINARY, nested STRUCT, ARRAY, MAP), and, with a last
// byte of 0x01, as wire bytes (framed mode). Nothing may crash or recurse
// without bound; a refusal says why; an accepted JSON record is bytes the
// codec also accepts in wire form (what the spool holds and is sent).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz/fuzz_check.h"
#include "schema/uc_convert.h"

namespace {

// tests/data/uc/every_type.json, its columns only.
constexpr char kTable[] = R"json({"full_name":"main.edge.every_type","columns":[{"name":"id","type_text":"bigint","nullable":false},{"name":"tiny","type_text":"tinyint","nullable":true},{"name":"small","type_text":"smallint","nullable":true},{"name":"count","type_text":"int","nullable":false},{"name":"ratio","type_text":"float","nullable":true},{"name":"value","type_text":"double","nullable":true},{"name":"price","type_text":"decimal(10,2)","nullable":true},{"name":"name","type_text":"string","nullable":false},{"name":"code","type_text":"varchar(16)","nullable":true},{"name":"ok","type_text":"boolean","nullable":true},{"name":"blob","type_text":"binary","nullable":true},{"name":"day","type_text":"date","nullable":true},{"name":"ts","type_text":"timestamp","nullable":false},{"name":"local_ts","type_text":"timestamp_ntz","nullable":true},{"name":"extra","type_text":"variant","nullable":true},{"name":"tags","type_text":"array<string>","nullable":true},{"name":"readings","type_text":"array<struct<at:timestamp,v:double>>","nullable":true},{"name":"attributes","type_text":"map<string,string>","nullable":true},{"name":"limits","type_text":"map<int,struct<lo:double,hi:double>>","nullable":true},{"name":"device_info","type_text":"struct<vendor:string not null,model:string,firmware:struct<major:int,minor:int>,ids:array<bigint>>","nullable":true}]})json";

const zb::RecordCodec& Codec() {
  static const std::unique_ptr<zb::RecordCodec> codec = [] {
    absl::StatusOr<zb::UcTable> table = zb::ParseUcTable(kTable);
    ZB_FUZZ_CHECK(table.ok(), "the table does not parse");
    absl::StatusOr<std::unique_ptr<zb::RecordCodec>> made = zb::MakeTableCodec(*table, 64);
    ZB_FUZZ_CHECK(made.ok(), "the table does not map");
    return std::move(*made);
  }();
  return *codec;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string input(reinterpret_cast<const char*>(data), size - 1);
  const zb::RecordCodec& codec = Codec();
  if (data[size - 1] == 0x01) {
    absl::StatusOr<std::string> wire = codec.FromWire(input);
    ZB_FUZZ_CHECK(wire.ok() ? *wire == input : !wire.status().message().empty(), "wire bytes changed or no words");
    return 0;
  }
  absl::StatusOr<std::string> record = codec.FromJson(input);
  if (!record.ok()) {
    ZB_FUZZ_CHECK(!record.status().message().empty(), "an error without words");
    return 0;
  }
  absl::StatusOr<std::string> again = codec.FromWire(*record);
  ZB_FUZZ_CHECK(again.ok(), "an accepted record is not the table's message: %s",
                std::string(again.status().message()).c_str());
  return 0;
}
