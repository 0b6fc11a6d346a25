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

// A refusal for a key the table has no column for carries this payload (the
// field's path): the table may have gained the column since it was read.
inline constexpr char kUnknownColumnPayload[] = "type.zerobusd/schema.UnknownColumn";

// The codec of a route whose schema is its table (schema.from_table): JSON
// records are converted as above; records in wire form (framed mode) must
// parse as the table's message with every NOT NULL column set.
// `on_unknown_column` (optional) is called, on the converting thread, when
// a record is refused for a key the table has no column for; it must be
// cheap and thread-safe.
absl::StatusOr<std::unique_ptr<RecordCodec>> MakeTableCodec(const UcTable& table, int max_json_depth,
                                                            std::function<void()> on_unknown_column = nullptr);

}  // namespace zb
