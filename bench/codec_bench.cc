// What converting a record at intake costs, per route kind, on the intake
// thread (the event loop): a JSON route only validates; a .proto route parses
// with protobuf's JSON mapping; schema.column_types adds the table
// converter for the named fields; a from_table route converts every column
// by its Unity Catalog type. bench/codecs.sh prints each as a ratio of the
// JSON route measured in the same run.

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "schema/record_codec.h"
#include "schema/uc_convert.h"

namespace {

// One record as a sensor sends it, and the same fields as the table has them.
constexpr char kRecord[] =
    R"({"device":"sensor-0042","ts":"2026-12-01T10:00:00.123456Z","day":"2026-12-01","temp":21.5,)"
    R"("price":"12.30","ok":true,"count":17,"tags":["a","b","c"],"extra":{"fw":"1.2.3","rssi":-71}})";
constexpr char kJsonForProto[] =
    R"({"device":"sensor-0042","ts":"1796119200123456","day":20788,"temp":21.5,)"
    R"("price":"12.30","ok":true,"count":17,"tags":["a","b","c"],"extra":"{\"fw\":\"1.2.3\",\"rssi\":-71}"})";
constexpr char kTable[] =
    R"j({"full_name":"main.edge.bench","columns":[{"name":"device","type_text":"string","nullable":false},)j"
    R"j({"name":"ts","type_text":"timestamp","nullable":false},{"name":"day","type_text":"date"},)j"
    R"j({"name":"temp","type_text":"double"},{"name":"price","type_text":"decimal(10,2)"},)j"
    R"j({"name":"ok","type_text":"boolean"},{"name":"count","type_text":"int"},)j"
    R"j({"name":"tags","type_text":"array<string>"},{"name":"extra","type_text":"variant"}]})j";
constexpr char kProto[] = R"(syntax = "proto2";
message Bench {
  required string device = 1;
  required int64 ts = 2;
  optional int32 day = 3;
  optional double temp = 4;
  optional string price = 5;
  optional bool ok = 6;
  optional int32 count = 7;
  repeated string tags = 8;
  optional string extra = 9;
}
)";

std::string ProtoFile() {
  static const std::string path = [] {
    char dir[] = "/tmp/zerobusd-codec-bench.XXXXXX";
    if (mkdtemp(dir) == nullptr) std::abort();
    const std::string p = std::string(dir) + "/bench.proto";
    std::ofstream(p) << kProto;
    return p;
  }();
  return path;
}

void Run(benchmark::State& state, const zb::RecordCodec& codec, const char* record) {
  size_t bytes = 0;
  for (auto _ : state) {
    auto out = codec.FromJson(record);
    if (!out.ok()) {
      state.SkipWithError(std::string(out.status().message()).c_str());
      return;
    }
    bytes += out->size();
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["spooled_bytes"] = static_cast<double>(bytes) / static_cast<double>(state.iterations());
}

void BM_JsonRoute(benchmark::State& state) { Run(state, *zb::MakeJsonCodec(), kRecord); }

void BM_ProtoRoute(benchmark::State& state) {
  auto codec = zb::MakeProtoCodec(ProtoFile(), "Bench");
  if (!codec.ok()) std::abort();
  Run(state, **codec, kJsonForProto);
}

void BM_ProtoRouteWithColumnTypes(benchmark::State& state) {
  auto codec = zb::MakeProtoCodec(ProtoFile(), "Bench", zb::kDefaultMaxJsonDepth,
                                  {{"ts", "timestamp"}, {"day", "date"}, {"price", "decimal(10,2)"},
                                   {"extra", "variant"}});
  if (!codec.ok()) std::abort();
  Run(state, **codec, kRecord);
}

void BM_FromTableRoute(benchmark::State& state) {
  auto table = zb::ParseUcTable(kTable);
  if (!table.ok()) std::abort();
  auto codec = zb::MakeTableCodec(*table, zb::kDefaultMaxJsonDepth);
  if (!codec.ok()) std::abort();
  Run(state, **codec, kRecord);
}

BENCHMARK(BM_JsonRoute);
BENCHMARK(BM_ProtoRoute);
BENCHMARK(BM_ProtoRouteWithColumnTypes);
BENCHMARK(BM_FromTableRoute);

}  // namespace

BENCHMARK_MAIN();
