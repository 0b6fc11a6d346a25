// Fuzzes the JSON route codec: zb::MakeJsonCodec(depth)->FromJson / FromWire
// and zb::ValidateJsonObject. Nothing may crash, whatever the bytes and the
// depth limit; what is accepted must be exactly one JSON object nested at
// most `depth` levels (checked against an independent strict parser,
// fuzz/json_oracle.h), spooled unchanged; and a plain valid object within
// the limit must be accepted.
//
// Input layout: the record from the front; the last byte picks the depth
// limit (1..63, the default 64, or the most the config allows).

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz/fuzz_check.h"
#include "fuzz/json_oracle.h"
#include "schema/record_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t pick = data[size - 1];
  int depth;
  if (pick < 64) depth = pick == 0 ? 1 : pick;
  else if (pick < 250) depth = zb::kDefaultMaxJsonDepth;
  else depth = zb::kMaxJsonDepthLimit;
  const std::string json(reinterpret_cast<const char*>(data), size - 1);

  // Codecs are immutable and cheap; one per depth is what a route holds.
  const std::unique_ptr<zb::RecordCodec> codec = zb::MakeJsonCodec(depth);
  const absl::StatusOr<std::string> spooled = codec->FromJson(json);
  const absl::Status valid = zb::ValidateJsonObject(json, depth);
  ZB_FUZZ_CHECK(spooled.ok() == valid.ok(), "FromJson and ValidateJsonObject disagree: %s / %s",
                spooled.status().ToString().c_str(), valid.ToString().c_str());
  const absl::StatusOr<std::string> wire = codec->FromWire(json);
  ZB_FUZZ_CHECK(wire.ok() == spooled.ok(), "FromWire and FromJson disagree on a JSON route");
  if (!spooled.ok()) {
    ZB_FUZZ_CHECK(!spooled.status().message().empty(), "a refusal without a reason");
  }

  const zb::fuzz::JsonVerdict verdict = zb::fuzz::CheckJson(json);
  if (spooled.ok()) {
    ZB_FUZZ_CHECK(*spooled == json, "a JSON route must spool the record unchanged");
    ZB_FUZZ_CHECK(verdict.valid, "accepted text that is not JSON");
    ZB_FUZZ_CHECK(verdict.object, "accepted JSON that is not an object");
    ZB_FUZZ_CHECK(verdict.depth <= depth, "accepted JSON nested %d levels, limit %d", verdict.depth, depth);
  } else if (verdict.valid && verdict.object && verdict.depth <= depth && !verdict.edgy) {
    ZB_FUZZ_CHECK(false, "refused a valid object nested %d levels (limit %d): %s", verdict.depth, depth,
                  spooled.status().ToString().c_str());
  }
  return 0;
}
