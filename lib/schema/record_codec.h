#pragma once
// What a route accepts and what it spools. A JSON route spools each JSON
// object as text; a proto route spools each record serialized with the
// route's message (JSON input is converted). The codec also yields what
// create_stream needs: the record type and, for proto, one self-contained
// DescriptorProto.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace zb {

// Thread-safe and immutable once made.
class RecordCodec {
 public:
  virtual ~RecordCodec() = default;

  virtual bool is_proto() const = 0;

  // A JSON object as text (line mode, or framed mode on a JSON route). Returns
  // the bytes to spool, or InvalidArgumentError saying what is wrong.
  virtual absl::StatusOr<std::string> FromJson(absl::string_view json) const = 0;
  // A record in the route's wire form (framed mode): JSON text for JSON
  // routes, serialized message bytes for proto routes.
  virtual absl::StatusOr<std::string> FromWire(absl::string_view bytes) const = 0;

  // Serialized google.protobuf.DescriptorProto for create_stream (proto
  // routes), empty for JSON routes.
  virtual const std::string& descriptor_proto() const = 0;
};

// Nesting a record may have (intake.max_json_depth): objects and arrays
// inside the top-level object each add a level; `{}` is depth 1. Deeper
// records are refused before anything walks them, and no parser here
// recurses on input, so a producer never controls the daemon's stack depth.
inline constexpr int kDefaultMaxJsonDepth = 64;
inline constexpr int kMaxJsonDepthLimit = 1000;  // the most the config accepts

// Accepts JSON objects and spools them unchanged.
std::unique_ptr<RecordCodec> MakeJsonCodec(int max_json_depth = kDefaultMaxJsonDepth);

// Loads `proto_file` at run time (no protoc needed; imports are resolved
// relative to the file's folder) and uses `message` (a simple or
// package-qualified name). The message must be self-contained: it may use
// scalars, enums and messages nested inside it, but no other top-level types.
//
// `column_types` (schema.column_types): fields whose JSON values are
// converted by a Unity Catalog column type (uc_convert.h: TIMESTAMP from
// RFC 3339, DECIMAL as exact text, ...), e.g. {"ts", "timestamp"}; each
// must name a top-level field of the type gen-proto makes of it. Other
// fields take protobuf's JSON mapping.
absl::StatusOr<std::unique_ptr<RecordCodec>> MakeProtoCodec(
    const std::string& proto_file, const std::string& message, int max_json_depth = kDefaultMaxJsonDepth,
    const std::vector<std::pair<std::string, std::string>>& column_types = {});

// Refuses every record with `why` (an UnavailableError): a route that
// cannot judge records yet, such as one whose table was never read.
std::unique_ptr<RecordCodec> MakeRefusingCodec(absl::Status why);

// Checks `json` is exactly one JSON object (no trailing data, no NUL byte,
// valid UTF-8) nested at most `max_depth` levels. Iterative: safe on any input.
absl::Status ValidateJsonObject(absl::string_view json, int max_depth = kDefaultMaxJsonDepth);

}  // namespace zb
