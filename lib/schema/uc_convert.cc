#include "schema/uc_convert.h"

#include <cfloat>
#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/message.h"
#include "google/protobuf/unknown_field_set.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/type_resolver_util.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "schema/record_codec.h"

namespace zb {
namespace {

namespace pb = google::protobuf;
using Value = rapidjson::Value;
using Scalar = std::variant<int32_t, int64_t, float, double, bool, std::string>;

// A column or struct field, with the JSON that holds its value twice: as
// parsed (kinds, strings, doubles) and with numbers kept as their text (for
// DECIMAL and VARIANT, which must not lose digits).
struct Member {
  const std::string* name;
  const UcType* type;
  bool nullable;
};

absl::Status FieldError(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("field ", path, ": ", what));
}

// What the producer sent, in a word, for messages.
const char* Kind(const Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsBool()) return "a boolean";
  if (v.IsString()) return "a string";
  if (v.IsNumber()) return v.IsInt64() || v.IsUint64() ? "an integer" : "a number";
  if (v.IsArray()) return "an array";
  return "an object";
}

absl::string_view Text(const Value& v) { return absl::string_view(v.GetString(), v.GetStringLength()); }

// Decimal text with exactly `scale` fraction digits and at most
// `precision` digits in all, from "-12.5", "1e3", "0.120": never rounded.
absl::StatusOr<std::string> DecimalText(absl::string_view in, int precision, int scale) {
  absl::string_view s = in;
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  std::string digits;
  int point = -1;  // digits before the point
  size_t i = 0;
  for (; i < s.size() && (absl::ascii_isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.'); ++i) {
    if (s[i] == '.') {
      if (point >= 0) return absl::InvalidArgumentError("two decimal points");
      point = static_cast<int>(digits.size());
    } else {
      digits += s[i];
    }
  }
  if (digits.empty()) return absl::InvalidArgumentError("no digits");
  if (point < 0) point = static_cast<int>(digits.size());
  if (i < s.size()) {
    if (s[i] != 'e' && s[i] != 'E') return absl::InvalidArgumentError("not a decimal number");
    int exponent = 0;
    absl::string_view e = s.substr(i + 1);
    if (!e.empty() && e[0] == '+') e.remove_prefix(1);
    if (e.empty() || e.size() > 6 || !absl::SimpleAtoi(e, &exponent) || exponent < -1000 || exponent > 1000) {
      return absl::InvalidArgumentError("a bad exponent");
    }
    point += exponent;
  }
  // Shift the point into the digits: leading or trailing zeros as needed.
  if (point < 0) {
    digits.insert(0, static_cast<size_t>(-point), '0');
    point = 0;
  }
  if (point > static_cast<int>(digits.size())) digits.append(static_cast<size_t>(point) - digits.size(), '0');
  std::string whole = digits.substr(0, static_cast<size_t>(point));
  std::string fraction = digits.substr(static_cast<size_t>(point));
  while (fraction.size() > static_cast<size_t>(scale)) {
    if (fraction.back() != '0') {
      return absl::InvalidArgumentError(absl::StrCat("has more than ", scale, " fraction digits (DECIMAL(", precision,
                                                     ",", scale, ") is never rounded)"));
    }
    fraction.pop_back();
  }
  fraction.append(static_cast<size_t>(scale) - fraction.size(), '0');
  const size_t first = whole.find_first_not_of('0');
  whole = first == std::string::npos ? "" : whole.substr(first);
  if (static_cast<int>(whole.size()) > precision - scale) {
    return absl::InvalidArgumentError(absl::StrCat("does not fit DECIMAL(", precision, ",", scale, "): at most ",
                                                   precision - scale, " digits before the point"));
  }
  const bool zero = whole.empty() && fraction.find_first_not_of('0') == std::string::npos;
  return absl::StrCat(negative && !zero ? "-" : "", whole.empty() ? "0" : whole, scale > 0 ? "." : "", fraction);
}

// A record parsed twice (as values, and with numbers as their text) into
// memory on the caller's stack: rapidjson's default first chunk is 64 KiB
// of heap per document, whose allocation and page faults cost more than the
// conversion itself. A larger record takes more 8 KiB chunks from the heap.
struct RecordDocuments {
  static constexpr size_t kChunk = 8 << 10;
  char doc_buffer[kChunk];
  char raw_buffer[kChunk];
  rapidjson::MemoryPoolAllocator<> doc_allocator{doc_buffer, sizeof(doc_buffer), kChunk};
  rapidjson::MemoryPoolAllocator<> raw_allocator{raw_buffer, sizeof(raw_buffer), kChunk};
  rapidjson::Document doc{&doc_allocator};
  rapidjson::Document raw{&raw_allocator};

  absl::Status Parse(absl::string_view json) {
    doc.Parse(json.data(), json.size());
    raw.Parse<rapidjson::kParseNumbersAsStringsFlag>(json.data(), json.size());
    if (doc.HasParseError() || raw.HasParseError() || !doc.IsObject()) {
      return absl::InvalidArgumentError("not a JSON object");
    }
    return absl::OkStatus();
  }
};

// VARIANT: the value as JSON text, numbers as the producer wrote them.
void VariantText(const Value& v, const Value& raw, rapidjson::Writer<rapidjson::StringBuffer>* w) {
  if (v.IsObject()) {
    w->StartObject();
    for (auto it = v.MemberBegin(), r = raw.MemberBegin(); it != v.MemberEnd(); ++it, ++r) {
      w->Key(it->name.GetString(), it->name.GetStringLength());
      VariantText(it->value, r->value, w);
    }
    w->EndObject();
  } else if (v.IsArray()) {
    w->StartArray();
    for (rapidjson::SizeType i = 0; i < v.Size(); ++i) VariantText(v[i], raw[i], w);
    w->EndArray();
  } else if (v.IsNumber()) {
    w->RawValue(raw.GetString(), raw.GetStringLength(), rapidjson::kNumberType);
  } else {
    v.Accept(*w);
  }
}

class Converter final : public TableRecordConverter {
 public:
  Converter(UcTable table, std::vector<UcType> types, TableProto proto, int max_json_depth)
      : table_(std::move(table)), types_(std::move(types)), proto_(std::move(proto)), max_depth_(max_json_depth) {}

  absl::Status Init() {
    pb::FileDescriptorProto file;
    file.set_name("table.proto");
    if (!file.add_message_type()->ParseFromString(proto_.descriptor_proto)) {
      return absl::InternalError("the table's descriptor does not parse");
    }
    const pb::FileDescriptor* built = pool_.BuildFile(file);
    if (built == nullptr) return absl::InternalError("the table's descriptor does not build");
    root_ = built->message_type(0);
    factory_.GetPrototype(root_);  // made now: Convert only reads it
    for (size_t i = 0; i < table_.columns.size(); ++i) {
      members_.push_back(Member{&table_.columns[i].name, &types_[i], table_.columns[i].nullable});
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Convert(absl::string_view json) const override {
    if (absl::Status s = ValidateJsonObject(json, max_depth_); !s.ok()) return s;
    RecordDocuments docs;
    if (absl::Status s = docs.Parse(json); !s.ok()) return s;
    const rapidjson::Document& doc = docs.doc;
    const rapidjson::Document& raw = docs.raw;
    std::unique_ptr<pb::Message> msg(factory_.GetPrototype(root_)->New());
    if (absl::Status s = Fill(msg.get(), members_, doc, raw, ""); !s.ok()) return s;
    // Partial: a .proto route's message may have required fields inside a
    // STRUCT its column types call nullable; its codec checks the whole.
    return msg->SerializePartialAsString();
  }

  const std::string& descriptor_proto() const override { return proto_.descriptor_proto; }

  // Bytes a producer encoded itself: they must be the table's message.
  absl::Status CheckWire(absl::string_view bytes) const {
    std::unique_ptr<pb::Message> msg(factory_.GetPrototype(root_)->New());
    if (!msg->ParsePartialFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::InvalidArgumentError(absl::StrCat("not a valid serialized ", root_->name(), " (the message of ",
                                                     table_.full_name, ")"));
    }
    if (!msg->IsInitialized()) {
      return absl::InvalidArgumentError(absl::StrCat("NOT NULL column(s) of ", table_.full_name,
                                                     " missing: ", msg->InitializationErrorString()));
    }
    // Fields the table's message does not have: the producer encoded for
    // another version of the table (its numbers may mean other columns
    // here), so the record is refused rather than sent half-read.
    if (const std::string unknown = UnknownFieldPath(*msg, ""); !unknown.empty()) {
      absl::Status s = absl::InvalidArgumentError(absl::StrCat(
          "field number ", unknown, " is not a column of ", table_.full_name,
          " as last read (encoded for another version of the table?)"));
      s.SetPayload(kUnknownColumnPayload, absl::Cord(unknown));
      return s;
    }
    return absl::OkStatus();
  }

  // Where `m` (or a message inside it) carries a field its type does not
  // declare: "7" or "device_info.4"; "" when nowhere. Recursion is bounded
  // by the table's nesting, not by the input.
  static std::string UnknownFieldPath(const pb::Message& m, const std::string& path) {
    const pb::Reflection* r = m.GetReflection();
    const pb::UnknownFieldSet& unknown = r->GetUnknownFields(m);
    if (!unknown.empty()) return absl::StrCat(path, path.empty() ? "" : ".", unknown.field(0).number());
    std::vector<const pb::FieldDescriptor*> fields;
    r->ListFields(m, &fields);
    for (const pb::FieldDescriptor* f : fields) {
      if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) continue;
      const std::string at = absl::StrCat(path, path.empty() ? "" : ".", f->name());
      const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
      for (int i = 0; i < n; ++i) {
        const pb::Message& sub = f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f);
        if (std::string found = UnknownFieldPath(sub, at); !found.empty()) return found;
      }
    }
    return "";
  }

 private:
  absl::Status Fill(pb::Message* m, const std::vector<Member>& members, const Value& obj, const Value& raw,
                    const std::string& path) const {
    if (!obj.IsObject()) return FieldError(path, absl::StrCat("expected an object (STRUCT), got ", Kind(obj)));
    std::map<absl::string_view, size_t> index;
    for (size_t i = 0; i < members.size(); ++i) index[*members[i].name] = i;
    std::vector<std::pair<const Value*, const Value*>> values(members.size(), {nullptr, nullptr});
    for (auto it = obj.MemberBegin(), r = raw.MemberBegin(); it != obj.MemberEnd(); ++it, ++r) {
      auto found = index.find(Text(it->name));
      const std::string at = path.empty() ? std::string(Text(it->name)) : absl::StrCat(path, ".", Text(it->name));
      if (found == index.end()) {
        absl::Status s = FieldError(at, "the table has no such column");
        s.SetPayload(kUnknownColumnPayload, absl::Cord(at));
        return s;
      }
      values[found->second] = {&it->value, &r->value};
    }
    const pb::Descriptor* d = m->GetDescriptor();
    for (size_t i = 0; i < members.size(); ++i) {
      const Member& member = members[i];
      const std::string at = path.empty() ? *member.name : absl::StrCat(path, ".", *member.name);
      const auto [v, rv] = values[i];
      if (v == nullptr || v->IsNull()) {
        if (!member.nullable) {
          return FieldError(at, absl::StrCat("the column is NOT NULL but the record has ",
                                             v == nullptr ? "no value" : "null"));
        }
        continue;
      }
      const pb::FieldDescriptor* f = d->FindFieldByName(*member.name);
      if (f == nullptr) return FieldError(at, "no such field in the table's message");
      if (absl::Status s = Set(m, f, *member.type, *v, *rv, at); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Sets (or adds, on a repeated field) one value of column type `t`.
  absl::Status Set(pb::Message* m, const pb::FieldDescriptor* f, const UcType& t, const Value& v, const Value& raw,
                   const std::string& at) const {
    const pb::Reflection* r = m->GetReflection();
    switch (t.kind) {
      case UcType::Kind::kStruct: {
        if (!v.IsObject()) return FieldError(at, absl::StrCat("expected an object (STRUCT), got ", Kind(v)));
        pb::Message* sub = f->is_repeated() ? r->AddMessage(m, f) : r->MutableMessage(m, f);
        std::vector<Member> members;
        for (const UcType::Field& field : t.fields) members.push_back(Member{&field.name, &field.type, field.nullable});
        return Fill(sub, members, v, raw, at);
      }
      case UcType::Kind::kArray: {
        if (!v.IsArray()) return FieldError(at, absl::StrCat("expected an array (ARRAY), got ", Kind(v)));
        for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
          const std::string item = absl::StrCat(at, "[", i, "]");
          if (v[i].IsNull()) return FieldError(item, "an ARRAY cannot carry null elements to Zerobus");
          if (absl::Status s = Set(m, f, *t.element, v[i], raw[i], item); !s.ok()) return s;
        }
        return absl::OkStatus();
      }
      case UcType::Kind::kMap: {
        if (!v.IsObject()) return FieldError(at, absl::StrCat("expected an object (MAP), got ", Kind(v)));
        const pb::Descriptor* entry_type = f->message_type();
        for (auto it = v.MemberBegin(), rit = raw.MemberBegin(); it != v.MemberEnd(); ++it, ++rit) {
          const std::string item = absl::StrCat(at, "[\"", Text(it->name), "\"]");
          if (it->value.IsNull()) return FieldError(item, "a MAP cannot carry null values to Zerobus");
          pb::Message* entry = r->AddMessage(m, f);
          absl::StatusOr<Scalar> key = KeyFromText(*t.key, Text(it->name), item);
          if (!key.ok()) return key.status();
          Put(entry, entry_type->field(0), std::move(*key));
          if (absl::Status s = Set(entry, entry_type->field(1), *t.value, it->value, rit->value, item); !s.ok()) {
            return s;
          }
        }
        return absl::OkStatus();
      }
      default: {
        absl::StatusOr<Scalar> s = ScalarOf(t, v, raw, at);
        if (!s.ok()) return s.status();
        Put(m, f, std::move(*s));
        return absl::OkStatus();
      }
    }
  }

  // A MAP key arrives as a JSON object's member name: text.
  absl::StatusOr<Scalar> KeyFromText(const UcType& t, absl::string_view text, const std::string& at) const {
    Value as_string(rapidjson::StringRef(text.data(), text.size()));
    switch (t.kind) {
      case UcType::Kind::kByte:
      case UcType::Kind::kShort:
      case UcType::Kind::kInt:
      case UcType::Kind::kLong: {
        int64_t n = 0;
        if (!absl::SimpleAtoi(text, &n)) return FieldError(at, "the key is not an integer");
        Value number(n);
        return ScalarOf(t, number, as_string, at);
      }
      case UcType::Kind::kBoolean:
        if (text != "true" && text != "false") return FieldError(at, "the key is not true or false");
        return Scalar(text == "true");
      case UcType::Kind::kDecimal:
        return ScalarOf(t, as_string, as_string, at);
      default:
        return ScalarOf(t, as_string, as_string, at);
    }
  }

  static void Put(pb::Message* m, const pb::FieldDescriptor* f, Scalar value) {
    const pb::Reflection* r = m->GetReflection();
    const bool rep = f->is_repeated();
    std::visit(
        [&](auto&& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, int32_t>) {
            rep ? r->AddInt32(m, f, x) : r->SetInt32(m, f, x);
          } else if constexpr (std::is_same_v<T, int64_t>) {
            rep ? r->AddInt64(m, f, x) : r->SetInt64(m, f, x);
          } else if constexpr (std::is_same_v<T, float>) {
            rep ? r->AddFloat(m, f, x) : r->SetFloat(m, f, x);
          } else if constexpr (std::is_same_v<T, double>) {
            rep ? r->AddDouble(m, f, x) : r->SetDouble(m, f, x);
          } else if constexpr (std::is_same_v<T, bool>) {
            rep ? r->AddBool(m, f, x) : r->SetBool(m, f, x);
          } else {
            rep ? r->AddString(m, f, std::move(x)) : r->SetString(m, f, std::move(x));
          }
        },
        std::move(value));
  }

  absl::StatusOr<Scalar> ScalarOf(const UcType& t, const Value& v, const Value& raw, const std::string& at) const {
    using K = UcType::Kind;
    auto integer = [&](int64_t lo, int64_t hi, const char* type) -> absl::StatusOr<int64_t> {
      if (!v.IsInt64() || v.GetInt64() < lo || v.GetInt64() > hi) {
        return FieldError(at, absl::StrCat("expected an integer in [", lo, ", ", hi, "] (", type, "), got ",
                                           v.IsNumber() ? absl::StrCat(Text(raw)) : Kind(v)));
      }
      return v.GetInt64();
    };
    switch (t.kind) {
      case K::kByte: {
        auto n = integer(-128, 127, "TINYINT");
        if (!n.ok()) return n.status();
        return Scalar(static_cast<int32_t>(*n));
      }
      case K::kShort: {
        auto n = integer(-32768, 32767, "SMALLINT");
        if (!n.ok()) return n.status();
        return Scalar(static_cast<int32_t>(*n));
      }
      case K::kInt: {
        auto n = integer(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), "INT");
        if (!n.ok()) return n.status();
        return Scalar(static_cast<int32_t>(*n));
      }
      case K::kLong: {
        auto n = integer(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), "BIGINT");
        if (!n.ok()) return n.status();
        return Scalar(*n);
      }
      case K::kFloat:
        if (!v.IsNumber() || v.GetDouble() > FLT_MAX || v.GetDouble() < -FLT_MAX) {
          return FieldError(at, absl::StrCat("expected a number within FLOAT's range, got ", Kind(v)));
        }
        return Scalar(static_cast<float>(v.GetDouble()));
      case K::kDouble:
        if (!v.IsNumber()) return FieldError(at, absl::StrCat("expected a number (DOUBLE), got ", Kind(v)));
        return Scalar(v.GetDouble());
      case K::kBoolean:
        if (!v.IsBool()) return FieldError(at, absl::StrCat("expected true or false (BOOLEAN), got ", Kind(v)));
        return Scalar(v.GetBool());
      case K::kString: {
        if (!v.IsString()) return FieldError(at, absl::StrCat("expected a string, got ", Kind(v)));
        if (t.max_length > 0) {
          size_t chars = 0;
          for (char c : Text(v)) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
          if (chars > static_cast<size_t>(t.max_length)) {
            return FieldError(at, absl::StrCat("longer than VARCHAR(", t.max_length, "): ", chars, " characters"));
          }
        }
        return Scalar(std::string(Text(v)));
      }
      case K::kBinary: {
        std::string bytes;
        if (!v.IsString() || !absl::Base64Unescape(Text(v), &bytes)) {
          return FieldError(at, absl::StrCat("expected base64 text (BINARY), got ", Kind(v)));
        }
        return Scalar(std::move(bytes));
      }
      case K::kDate: {
        if (v.IsInt64()) {
          auto n = integer(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), "DATE days");
          if (!n.ok()) return n.status();
          return Scalar(static_cast<int32_t>(*n));
        }
        absl::CivilDay day;
        if (!v.IsString() || Text(v).size() != 10 || !absl::ParseCivilTime(Text(v), &day) ||
            absl::FormatCivilTime(day) != Text(v)) {
          return FieldError(at, absl::StrCat("expected a date as YYYY-MM-DD or integer days since 1970-01-01, got ",
                                             v.IsString() ? absl::StrCat("\"", Text(v), "\"") : Kind(v)));
        }
        return Scalar(static_cast<int32_t>(day - absl::CivilDay(1970, 1, 1)));
      }
      case K::kTimestamp:
      case K::kTimestampNtz: {
        if (v.IsInt64()) return Scalar(v.GetInt64());
        const bool ntz = t.kind == K::kTimestampNtz;
        absl::Time time;
        std::string error;
        const bool parsed =
            v.IsString() && (ntz ? absl::ParseTime("%Y-%m-%d%ET%H:%M:%E*S", Text(v), absl::UTCTimeZone(), &time, &error)
                                 : absl::ParseTime(absl::RFC3339_full, Text(v), &time, &error));
        if (!parsed) {
          return FieldError(at, absl::StrCat(
                                    ntz ? "expected a wall-clock time as YYYY-MM-DDTHH:MM:SS[.ffffff] (no offset: "
                                          "TIMESTAMP_NTZ) or integer microseconds, got "
                                        : "expected an RFC 3339 time with its offset (2026-12-01T10:00:00Z) or "
                                          "integer microseconds since the epoch (TIMESTAMP), got ",
                                    v.IsString() ? absl::StrCat("\"", Text(v), "\"") : Kind(v)));
        }
        return Scalar(absl::ToUnixMicros(time));
      }
      case K::kDecimal: {
        if (!v.IsNumber() && !v.IsString()) {
          return FieldError(at, absl::StrCat("expected a number or a decimal string, got ", Kind(v)));
        }
        absl::StatusOr<std::string> text = DecimalText(Text(raw), t.precision, t.scale);
        if (!text.ok()) return FieldError(at, absl::StrCat("\"", Text(raw), "\" ", text.status().message()));
        return Scalar(std::move(*text));
      }
      case K::kVariant: {
        rapidjson::StringBuffer buf;
        rapidjson::Writer<rapidjson::StringBuffer> w(buf);
        VariantText(v, raw, &w);
        return Scalar(std::string(buf.GetString(), buf.GetSize()));
      }
      default:
        return FieldError(at, absl::StrCat(t.text, " cannot be sent"));
    }
  }

  UcTable table_;
  std::vector<UcType> types_;
  TableProto proto_;
  int max_depth_;
  pb::DescriptorPool pool_;
  const pb::Descriptor* root_ = nullptr;
  // Thread-safe once the prototype exists (made in Make).
  mutable pb::DynamicMessageFactory factory_{&pool_};
  std::vector<Member> members_;
};

class TableCodec final : public RecordCodec {
 public:
  TableCodec(std::unique_ptr<Converter> converter, std::function<void()> on_unknown_column)
      : converter_(std::move(converter)), on_unknown_column_(std::move(on_unknown_column)) {}
  bool is_proto() const override { return true; }
  absl::StatusOr<std::string> FromJson(absl::string_view json) const override {
    absl::StatusOr<std::string> record = converter_->Convert(json);
    if (!record.ok() && on_unknown_column_ && record.status().GetPayload(kUnknownColumnPayload)) on_unknown_column_();
    return record;
  }
  absl::StatusOr<std::string> FromWire(absl::string_view bytes) const override {
    if (absl::Status s = converter_->CheckWire(bytes); !s.ok()) {
      if (on_unknown_column_ && s.GetPayload(kUnknownColumnPayload)) on_unknown_column_();
      return s;
    }
    return std::string(bytes);
  }
  const std::string& descriptor_proto() const override { return converter_->descriptor_proto(); }

 private:
  std::unique_ptr<Converter> converter_;
  const std::function<void()> on_unknown_column_;
};

// `message` (optional): the serialized DescriptorProto to fill instead of
// TableToProto's; its fields must have the shapes TableToProto gives the
// columns (CheckMessageAgainstTable), since values are set by field name
// and C++ type. A route's own message keeps its own field numbers.
absl::StatusOr<std::unique_ptr<Converter>> MakeConverter(const UcTable& table, int max_json_depth,
                                                       const std::string* message = nullptr) {
  absl::StatusOr<TableProto> proto = TableToProto(table);
  if (!proto.ok()) return proto.status();
  if (message != nullptr) proto->descriptor_proto = *message;
  std::vector<UcType> types;
  for (const UcColumn& c : table.columns) {
    absl::StatusOr<UcType> t = ParseUcType(c.type_text);
    if (!t.ok()) return t.status();
    types.push_back(std::move(*t));
  }
  auto converter = std::make_unique<Converter>(table, std::move(types), std::move(*proto), max_json_depth);
  if (absl::Status s = converter->Init(); !s.ok()) return s;
  return converter;
}

class Rewriter final : public ColumnTypeRewriter {
 public:
  Rewriter(std::unique_ptr<Converter> converter, std::set<std::string> names, const pb::DescriptorProto& relaxed,
           std::string message_name, const std::string& syntax)
      : converter_(std::move(converter)), names_(std::move(names)), message_name_(std::move(message_name)) {
    pb::FileDescriptorProto file;
    file.set_name("relaxed.proto");
    if (!syntax.empty()) file.set_syntax(syntax);
    *file.add_message_type() = relaxed;
    ok_ = pool_.BuildFile(file) != nullptr;
    resolver_.reset(pb::util::NewTypeResolverForDescriptorPool(kTypeUrlPrefix, &pool_));
    type_url_ = absl::StrCat(kTypeUrlPrefix, "/", relaxed.name());
  }
  bool ok() const { return ok_; }

  absl::StatusOr<std::string> Rewrite(absl::string_view json) const override {
    RecordDocuments docs;
    if (absl::Status s = docs.Parse(json); !s.ok()) return s;
    const rapidjson::Document& doc = docs.doc;
    const rapidjson::Document& raw = docs.raw;
    // The named fields to the table converter, the rest to protobuf's JSON
    // mapping, each as written.
    rapidjson::StringBuffer typed, rest;
    rapidjson::Writer<rapidjson::StringBuffer> typed_writer(typed), rest_writer(rest);
    typed_writer.StartObject();
    rest_writer.StartObject();
    for (auto it = doc.MemberBegin(), r = raw.MemberBegin(); it != doc.MemberEnd(); ++it, ++r) {
      auto& w = names_.count(std::string(Text(it->name))) > 0 ? typed_writer : rest_writer;
      w.Key(it->name.GetString(), it->name.GetStringLength());
      VariantText(it->value, r->value, &w);
    }
    typed_writer.EndObject();
    rest_writer.EndObject();
    absl::StatusOr<std::string> bytes = converter_->Convert(absl::string_view(typed.GetString(), typed.GetSize()));
    if (!bytes.ok()) return bytes.status();
    // The rest parsed with the named fields optional (they are not in it),
    // then the converted ones appended: serialized messages concatenate.
    pb::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    std::string out;
    auto status = pb::util::JsonToBinaryString(resolver_.get(), type_url_,
                                               pb::StringPiece(rest.GetString(), rest.GetSize()), &out, options);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("does not match ", message_name_, ": ",
                                                     absl::StripPrefix(std::string(status.message()), ": ")));
    }
    out += *bytes;
    return out;
  }

 private:
  static constexpr char kTypeUrlPrefix[] = "type.googleapis.com";
  std::unique_ptr<Converter> converter_;  // fills the route's message (its field numbers)
  const std::set<std::string> names_;
  const std::string message_name_;  // for messages
  pb::DescriptorPool pool_;  // the route's message, the named fields optional
  bool ok_ = false;
  std::unique_ptr<pb::util::TypeResolver> resolver_;  // thread-safe: reads pool_
  std::string type_url_;
};

}  // namespace

namespace {

// Drops proto3's optional markers and every oneof, here and in nested types.
void AsPlainProto2(pb::DescriptorProto* m) {
  for (pb::FieldDescriptorProto& f : *m->mutable_field()) {
    f.clear_proto3_optional();
    f.clear_oneof_index();
  }
  m->clear_oneof_decl();
  for (pb::DescriptorProto& nested : *m->mutable_nested_type()) AsPlainProto2(&nested);
}

// Removes the fields named in `names` (top level), and the oneofs left
// without a field (proto3 optional ones), renumbering the others.
void RemoveFields(pb::DescriptorProto* m, const std::set<std::string>& names) {
  pb::DescriptorProto kept = *m;
  kept.clear_field();
  for (const pb::FieldDescriptorProto& f : m->field()) {
    if (names.count(f.name()) == 0) *kept.add_field() = f;
  }
  std::vector<int> new_index(static_cast<size_t>(m->oneof_decl_size()), -1);
  kept.clear_oneof_decl();
  for (int i = 0; i < m->oneof_decl_size(); ++i) {
    const bool used = std::any_of(kept.field().begin(), kept.field().end(), [i](const pb::FieldDescriptorProto& f) {
      return f.has_oneof_index() && f.oneof_index() == i;
    });
    if (!used) continue;
    new_index[static_cast<size_t>(i)] = kept.oneof_decl_size();
    *kept.add_oneof_decl() = m->oneof_decl(i);
  }
  for (pb::FieldDescriptorProto& f : *kept.mutable_field()) {
    if (f.has_oneof_index()) f.set_oneof_index(new_index[static_cast<size_t>(f.oneof_index())]);
  }
  *m = std::move(kept);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ColumnTypeRewriter>> MakeColumnTypeRewriter(
    const std::string& descriptor_proto, const std::vector<std::pair<std::string, std::string>>& column_types,
    int max_json_depth, const std::string& message_name, const std::string& syntax) {
  pb::DescriptorProto message;
  if (!message.ParseFromString(descriptor_proto)) return absl::InvalidArgumentError("not a DescriptorProto");
  std::map<std::string, std::string> wanted;
  std::vector<std::string> problems;
  for (const auto& [name, type_text] : column_types) {
    if (!wanted.emplace(name, type_text).second) problems.push_back(absl::StrCat(name, ": named twice"));
  }
  // The named fields, in the message's order, as columns of a table...
  UcTable table;
  table.full_name = message.name();
  pb::DescriptorProto named = message;
  named.clear_field();
  for (const pb::FieldDescriptorProto& f : message.field()) {
    auto it = wanted.find(f.name());
    if (it == wanted.end()) continue;
    absl::StatusOr<UcType> type = ParseUcType(it->second);
    if (!type.ok()) {
      problems.push_back(absl::StrCat(f.name(), ": ", type.status().message()));
    } else if (type->kind == UcType::Kind::kUnsupported) {
      problems.push_back(absl::StrCat(f.name(), ": ", it->second, " is not a type Zerobus takes"));
    }
    if (f.has_oneof_index() && !f.proto3_optional()) {
      problems.push_back(absl::StrCat(f.name(), ": a member of oneof ", message.oneof_decl(f.oneof_index()).name(),
                                      " cannot take a column type"));
    }
    table.columns.push_back(UcColumn{f.name(), it->second, f.label() != pb::FieldDescriptorProto::LABEL_REQUIRED});
    *named.add_field() = f;
    wanted.erase(it);
  }
  for (const auto& [name, type_text] : wanted) {
    problems.push_back(absl::StrCat(name, ": message ", message.name(), " has no field of that name"));
  }
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
  // ... whose fields must be what gen-proto makes of those columns. (The
  // copy is built as proto2, as gen-proto's are: proto3's optional and
  // oneofs are left out; the wire form is the same.)
  AsPlainProto2(&named);
  if (std::optional<SchemaMismatch> mismatch = CheckMessageAgainstTable(table, named.SerializeAsString())) {
    return absl::InvalidArgumentError(absl::StrCat(mismatch->message, " (", mismatch->cause, ")"));
  }
  const std::string named_message = named.SerializeAsString();
  absl::StatusOr<std::unique_ptr<Converter>> converter = MakeConverter(table, max_json_depth, &named_message);
  if (!converter.ok()) return converter.status();
  std::set<std::string> names;
  for (const UcColumn& c : table.columns) names.insert(c.name);
  // The rest is parsed with a copy of the message without the named fields:
  // they are not in it, and a named field spelled otherwise (its JSON
  // lowerCamelCase name) must be refused, never parsed unconverted.
  pb::DescriptorProto relaxed = message;
  RemoveFields(&relaxed, names);
  auto rewriter = std::make_unique<Rewriter>(std::move(*converter), std::move(names), relaxed,
                                             message_name.empty() ? message.name() : message_name, syntax);
  if (!rewriter->ok()) return absl::InternalError("the route's message does not build on its own");
  return std::unique_ptr<ColumnTypeRewriter>(std::move(rewriter));
}

absl::StatusOr<std::unique_ptr<RecordCodec>> MakeTableCodec(const UcTable& table, int max_json_depth,
                                                            std::function<void()> on_unknown_column) {
  absl::StatusOr<std::unique_ptr<Converter>> converter = MakeConverter(table, max_json_depth);
  if (!converter.ok()) return converter.status();
  return std::unique_ptr<RecordCodec>(std::make_unique<TableCodec>(std::move(*converter), std::move(on_unknown_column)));
}

absl::StatusOr<std::unique_ptr<TableRecordConverter>> MakeTableRecordConverter(const UcTable& table,
                                                                              int max_json_depth) {
  absl::StatusOr<std::unique_ptr<Converter>> converter = MakeConverter(table, max_json_depth);
  if (!converter.ok()) return converter.status();
  return std::unique_ptr<TableRecordConverter>(std::move(*converter));
}

}  // namespace zb
