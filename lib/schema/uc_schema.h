#pragma once
// A Unity Catalog table's columns, as the UC REST API answers
// `GET /api/2.1/unity-catalog/tables/{full_name}`, and the proto2 message a
// Zerobus stream of that table takes (zerobus-protocol.md §7): one
// self-contained message (nested types declared inside it, no imports),
// fields in column order numbered 1..N skipping 19000-19999, NOT NULL
// columns `required`, ARRAY `repeated`, MAP `map`, STRUCT a nested
// message. Pure: no I/O. Thread-safe (no shared state).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace zb {

// The most the UC answer may be (the SDK caps it the same way).
inline constexpr size_t kMaxUcTableJsonBytes = 8u << 20;
// The deepest a column type may nest (ARRAY, MAP, STRUCT), as the tools.
inline constexpr int kMaxUcTypeDepth = 100;

struct UcColumn {
  std::string name;
  std::string type_text;  // e.g. "array<struct<a:int,b:decimal(10,2)>>"
  bool nullable = true;
};

struct UcTable {
  std::string full_name;  // catalog.schema.table
  std::vector<UcColumn> columns;
};

// Parses the REST answer. An error says what is wrong and where
// ("columns[3].type_text: missing").
absl::StatusOr<UcTable> ParseUcTable(absl::string_view json);

// A column's type, parsed from its type_text (case-insensitive).
struct UcType {
  enum class Kind {
    kByte,       // TINYINT, BYTE
    kShort,      // SMALLINT, SHORT
    kInt,        // INT, INTEGER
    kLong,       // BIGINT, LONG
    kFloat,
    kDouble,
    kDecimal,    // DECIMAL(precision, scale)
    kString,     // STRING, VARCHAR(n)
    kBoolean,
    kBinary,
    kDate,
    kTimestamp,
    kTimestampNtz,
    kVariant,
    kArray,      // element
    kMap,        // key, value
    kStruct,     // fields
    kUnsupported,  // text says which
  };
  struct Field;
  Kind kind = Kind::kUnsupported;
  int precision = 10, scale = 0;  // kDecimal
  int max_length = 0;             // kString from VARCHAR(n): n (0: none)
  std::unique_ptr<UcType> element, key, value;
  std::vector<Field> fields;
  std::string text;  // as written, for messages

  UcType() = default;
  UcType(UcType&&) = default;
  UcType& operator=(UcType&&) = default;
};
struct UcType::Field {
  std::string name;
  UcType type;
  bool nullable = true;  // "NOT NULL" in the type text makes it false
};

// Parses a type_text such as "map<string,array<struct<a:int not null>>>".
// A type the service does not take (INTERVAL, CHAR, GEOGRAPHY, ...) is
// kUnsupported, not an error; text that is not a type at all is.
absl::StatusOr<UcType> ParseUcType(absl::string_view type_text);

struct TableProto {
  std::string message_name;
  std::string descriptor_proto;  // serialized google.protobuf.DescriptorProto
  std::string proto_text;        // the .proto file, for people and protoc
};

// The message for `table`, named `message_name` (empty: the table's last
// name part). Every column that cannot be sent (an unsupported type, a
// name proto does not allow, MAP keys that are not scalars, ARRAY of ARRAY
// or MAP, ...) is listed by name in one InvalidArgumentError.
absl::StatusOr<TableProto> TableToProto(const UcTable& table, const std::string& message_name = "");

// Why a stream's record message does not fit its table, as the service
// says it (ErrorInfo SCHEMA_VALIDATION_FAILED): `cause` is one of
// FIELD_NOT_IN_TABLE, MISSING_REQUIRED_COLUMN, FIELD_OUT_OF_ORDER,
// TYPE_INCOMPATIBLE.
struct SchemaMismatch {
  std::string cause;
  std::string message;
};

// Checks a create_stream descriptor against `table` the way the service
// does: every field names a column, in the table's column order; every NOT
// NULL column is there, as a required field; each field's type (and
// ARRAY, MAP, STRUCT shape) is what TableToProto makes of its column.
// Nullable columns may be left out. nullopt: it fits (or the table has
// columns no message can carry, so there is nothing to compare with).
std::optional<SchemaMismatch> CheckMessageAgainstTable(const UcTable& table, const std::string& descriptor_proto);

}  // namespace zb
