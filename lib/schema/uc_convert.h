#pragma once
// JSON records converted by a Unity Catalog table's column types into the
// table's Zerobus proto record (uc_schema.h), as a producer means them:
//  - TIMESTAMP: integer microseconds since the epoch, or an RFC 3339 string
//    with its offset ("2026-12-01T10:00:00.5+01:00"); finer fractions are
//    truncated to the microsecond;
//  - TIMESTAMP_NTZ: integer microseconds, or a wall-clock string without an
//    offset ("2026-12-01T10:00:00.5");
//  - DATE: integer days since 1970-01-01, or "YYYY-MM-DD";
//  - DECIMAL(p,s): a JSON number or string, sent as decimal text with
//    exactly s fraction digits; refused when it needs more fraction digits
//    or more than p digits in all (never rounded);
//  - VARIANT: any JSON value, sent as its JSON text;
//  - BINARY: base64;
//  - integers range-checked by their column type, VARCHAR(n) by length;
//  - STRUCT, ARRAY and MAP nested as the table says.
// A NOT NULL column missing or null, a key no column has, or a value of
// the wrong kind is refused with the field's path and the reason.
//
// Immutable once made; Convert is thread-safe.

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "schema/record_codec.h"
#include "schema/uc_schema.h"

namespace zb {

class TableRecordConverter {
 public:
  virtual ~TableRecordConverter() = default;
  // The serialized record (the message of descriptor_proto()), or
  // InvalidArgumentError("field a.b[2]: ...").
  virtual absl::StatusOr<std::string> Convert(absl::string_view json) const = 0;
  // What create_stream sends (TableToProto's descriptor).
  virtual const std::string& descriptor_proto() const = 0;
};

// For `table` (every column must map: TableToProto's error otherwise).
// Records nested deeper than `max_json_depth` are refused before they are
// walked.
absl::StatusOr<std::unique_ptr<TableRecordConverter>> MakeTableRecordConverter(const UcTable& table,
                                                                              int max_json_depth);

// A refusal for a key (or, in wire form, a field number) the table has no
// column for carries this payload (the field's path): the table may have
// gained the column since it was read.
inline constexpr char kUnknownColumnPayload[] = "type.zerobusd/schema.UnknownColumn";

// The codec of a route whose schema is its table (schema.from_table): JSON
// records are converted as above; records in wire form (framed mode) must
// parse as the table's message with every NOT NULL column set.
// `on_unknown_column` (optional) is called, on the converting thread, when
// a record is refused for a key or field number the table has no column
// for; it must be cheap and thread-safe.
absl::StatusOr<std::unique_ptr<RecordCodec>> MakeTableCodec(const UcTable& table, int max_json_depth,
                                                            std::function<void()> on_unknown_column = nullptr);

// A .proto route whose config names some fields' column types
// (schema.column_types): a JSON record's named fields are converted as
// above, straight into the route's message; the rest is left as written,
// for protobuf's JSON mapping. Immutable; thread-safe.
class ColumnTypeRewriter {
 public:
  virtual ~ColumnTypeRewriter() = default;
  // The record as the route's message, serialized (required fields may
  // still be missing: the caller checks), or the refusal naming the field.
  // `json` must have passed ValidateJsonObject.
  virtual absl::StatusOr<std::string> Rewrite(absl::string_view json) const = 0;
};

// `descriptor_proto`: the route's message, self-contained (what its codec
// sends). `column_types`: field name and Unity Catalog type text, e.g.
// {"ts", "timestamp"}. Each must name a top-level field whose type is what
// gen-proto makes of that column type (TIMESTAMP: int64, DATE: int32,
// DECIMAL and VARIANT: string, ...); every mismatch is an error naming it.
// A oneof member cannot be named. `message_name`: how refusals name the
// message (default: its own name); `syntax`: its file's ("proto2" or
// "proto3"; default proto2).
absl::StatusOr<std::unique_ptr<ColumnTypeRewriter>> MakeColumnTypeRewriter(
    const std::string& descriptor_proto, const std::vector<std::pair<std::string, std::string>>& column_types,
    int max_json_depth, const std::string& message_name = "", const std::string& syntax = "");

}  // namespace zb
