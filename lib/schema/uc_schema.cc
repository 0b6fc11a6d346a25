#include "schema/uc_schema.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "schema/descriptor_names.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"

namespace zb {
namespace {

namespace pb = google::protobuf;

// ---- the REST answer ------------------------------------------------------

std::optional<std::string> StringMember(const rapidjson::Value& obj, const char* key) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

// ---- type_text --------------------------------------------------------------

// Recursive descent over a Spark type string. The depth is bounded by
// kMaxUcTypeDepth; the text comes from Unity Catalog or the operator, never
// from producers.
class TypeParser {
 public:
  explicit TypeParser(absl::string_view text) : text_(text) {}

  absl::StatusOr<UcType> ParseAll() {
    absl::StatusOr<UcType> type = Type(0);
    if (!type.ok()) return type;
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the type");
    return type;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("bad type \"", text_, "\" at character ", pos_ + 1, ": ", what));
  }

  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  bool Peek(char c) {
    SkipSpace();
    return pos_ < text_.size() && text_[pos_] == c;
  }

  bool Take(char c) {
    if (!Peek(c)) return false;
    ++pos_;
    return true;
  }

  // [A-Za-z_][A-Za-z0-9_]*, or "" when none is here.
  std::string Ident() {
    SkipSpace();
    const size_t start = pos_;
    while (pos_ < text_.size() &&
           (absl::ascii_isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) {
      ++pos_;
    }
    return std::string(text_.substr(start, pos_ - start));
  }

  // A struct field name: an identifier-like run up to ':' or a `quoted` one.
  absl::StatusOr<std::string> FieldName() {
    SkipSpace();
    if (Take('`')) {
      std::string name;
      while (pos_ < text_.size()) {
        if (text_[pos_] == '`') {
          if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '`') {  // `` is a backquote
            name += '`';
            pos_ += 2;
            continue;
          }
          ++pos_;
          return name;
        }
        name += text_[pos_++];
      }
      return Error("unterminated `quoted` field name");
    }
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] != ':' && text_[pos_] != ',' && text_[pos_] != '>' &&
           !absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
    if (pos_ == start) return Error("a struct field needs a name");
    return std::string(text_.substr(start, pos_ - start));
  }

  // Integers in parentheses after a type name: "(10,2)".
  absl::StatusOr<std::vector<int>> Args() {
    std::vector<int> args;
    if (!Take('(')) return args;
    do {
      SkipSpace();
      const size_t start = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      if (pos_ == start || pos_ - start > 6) return Error("expected a number");
      args.push_back(std::stoi(std::string(text_.substr(start, pos_ - start))));
    } while (Take(','));
    if (!Take(')')) return Error("expected ')'");
    return args;
  }

  // Skips what follows an unsupported type's name up to the next ',' or
  // '>' outside parentheses and angle brackets ("interval day to second",
  // "geography(4326)", "array<...>" inside a kind we do not take).
  void SkipRest() {
    int depth = 0;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if ((c == ',' || c == '>') && depth == 0) return;
      if (c == '(' || c == '<') ++depth;
      if (c == ')' || c == '>') --depth;
      // "not null" and "comment" after a struct field's type end it.
      if (depth == 0 && absl::ascii_isspace(static_cast<unsigned char>(c))) {
        const absl::string_view rest = text_.substr(pos_ + 1);
        if (absl::StartsWithIgnoreCase(rest, "not null") || absl::StartsWithIgnoreCase(rest, "comment")) return;
      }
      ++pos_;
    }
  }

  absl::StatusOr<UcType> Type(int depth) {
    if (depth >= kMaxUcTypeDepth) return Error(absl::StrCat("nested more than ", kMaxUcTypeDepth, " deep"));
    SkipSpace();
    const size_t start = pos_;
    const std::string name = absl::AsciiStrToLower(Ident());
    if (name.empty()) return Error("expected a type name");
    UcType t;
    using K = UcType::Kind;
    static const std::map<std::string, K> kSimple = {
        {"tinyint", K::kByte},     {"byte", K::kByte},          {"smallint", K::kShort},
        {"short", K::kShort},      {"int", K::kInt},            {"integer", K::kInt},
        {"bigint", K::kLong},      {"long", K::kLong},          {"float", K::kFloat},
        {"real", K::kFloat},       {"double", K::kDouble},      {"string", K::kString},
        {"varchar", K::kString},   {"boolean", K::kBoolean},    {"bool", K::kBoolean},
        {"binary", K::kBinary},    {"date", K::kDate},          {"timestamp", K::kTimestamp},
        {"timestamp_ltz", K::kTimestamp}, {"timestamp_ntz", K::kTimestampNtz}, {"variant", K::kVariant},
        {"decimal", K::kDecimal},  {"dec", K::kDecimal},        {"numeric", K::kDecimal},
    };
    if (name == "array") {
      if (!Take('<')) return Error("expected '<' after array");
      absl::StatusOr<UcType> element = Type(depth + 1);
      if (!element.ok()) return element.status();
      if (!Take('>')) return Error("expected '>' to end array<...>");
      t.kind = K::kArray;
      t.element = std::make_unique<UcType>(std::move(*element));
    } else if (name == "map") {
      if (!Take('<')) return Error("expected '<' after map");
      absl::StatusOr<UcType> key = Type(depth + 1);
      if (!key.ok()) return key.status();
      if (!Take(',')) return Error("expected ',' between a map's key and value types");
      absl::StatusOr<UcType> value = Type(depth + 1);
      if (!value.ok()) return value.status();
      if (!Take('>')) return Error("expected '>' to end map<...>");
      t.kind = K::kMap;
      t.key = std::make_unique<UcType>(std::move(*key));
      t.value = std::make_unique<UcType>(std::move(*value));
    } else if (name == "struct") {
      if (!Take('<')) return Error("expected '<' after struct");
      t.kind = K::kStruct;
      if (!Take('>')) {
        do {
          UcType::Field field;
          absl::StatusOr<std::string> field_name = FieldName();
          if (!field_name.ok()) return field_name.status();
          field.name = std::move(*field_name);
          if (!Take(':')) return Error(absl::StrCat("expected ':' after struct field \"", field.name, "\""));
          absl::StatusOr<UcType> type = Type(depth + 1);
          if (!type.ok()) return type.status();
          field.type = std::move(*type);
          FieldSuffixes(&field.nullable);
          t.fields.push_back(std::move(field));
        } while (Take(','));
        if (!Take('>')) return Error("expected '>' to end struct<...>");
      }
    } else if (auto it = kSimple.find(name); it != kSimple.end()) {
      absl::StatusOr<std::vector<int>> args = Args();
      if (!args.ok()) return args.status();
      t.kind = it->second;
      if (t.kind == K::kDecimal) {
        if (args->size() > 2) return Error("DECIMAL takes at most (precision, scale)");
        if (!args->empty()) t.precision = (*args)[0];
        t.scale = args->size() == 2 ? (*args)[1] : 0;
        if (t.precision < 1 || t.precision > 38 || t.scale > t.precision) {
          return Error("DECIMAL(p,s) needs 1 <= p <= 38 and s <= p");
        }
      } else if (name == "varchar") {
        if (args->size() > 1) return Error("VARCHAR takes one length");
        if (args->size() == 1) t.max_length = (*args)[0];
      } else if (!args->empty()) {
        return Error(absl::StrCat(absl::AsciiStrToUpper(name), " takes no arguments"));
      }
    } else {
      t.kind = K::kUnsupported;
      SkipRest();
    }
    t.text = std::string(absl::StripAsciiWhitespace(text_.substr(start, pos_ - start)));
    return t;
  }

  // " NOT NULL" and " COMMENT '...'" after a struct field's type.
  void FieldSuffixes(bool* nullable) {
    for (;;) {
      SkipSpace();
      const absl::string_view rest = text_.substr(pos_);
      if (absl::StartsWithIgnoreCase(rest, "not null")) {
        pos_ += 8;
        *nullable = false;
      } else if (absl::StartsWithIgnoreCase(rest, "comment")) {
        pos_ += 7;
        SkipSpace();
        if (pos_ < text_.size() && (text_[pos_] == '\'' || text_[pos_] == '"')) {
          const char quote = text_[pos_++];
          while (pos_ < text_.size() && text_[pos_] != quote) pos_ += text_[pos_] == '\\' ? 2 : 1;
          pos_ = std::min(pos_ + 1, text_.size());
        }
      } else {
        return;
      }
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

// ---- the message ------------------------------------------------------------

// Names proto does not allow as field names (the tools refuse them too).
const std::set<std::string>& ProtoKeywords() {
  static const std::set<std::string> k = {
      "syntax",  "import",   "option",   "package", "message", "enum",     "service",  "rpc",
      "returns", "reserved", "to",       "max",     "optional", "required", "repeated", "group",
      "oneof",   "map",      "extend",   "extensions", "stream", "weak",   "public",   "double",
      "float",   "int32",    "int64",    "uint32",  "uint64",  "sint32",   "sint64",   "fixed32",
      "fixed64", "sfixed32", "sfixed64", "bool",    "string",  "bytes",    "true",     "false"};
  return k;
}

bool IsProtoIdentifier(absl::string_view name) {
  if (name.empty() || absl::ascii_isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// "device_info" -> "DeviceInfo".
std::string PascalCase(absl::string_view name) {
  std::string out;
  bool upper = true;
  for (char c : name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out += upper ? absl::ascii_toupper(static_cast<unsigned char>(c)) : c;
    upper = false;
  }
  return out;
}

// Field numbers in column order, skipping the range proto reserves.
int FieldNumber(size_t index) {
  const int n = static_cast<int>(index) + 1;
  return n >= 19000 ? n + 1000 : n;
}

// What the wire carries for a scalar column, and a word for the comment.
struct ScalarMapping {
  pb::FieldDescriptorProto::Type type;
  const char* note;  // the encoding contract, "" when obvious
};

std::optional<ScalarMapping> Scalar(const UcType& t) {
  using K = UcType::Kind;
  using F = pb::FieldDescriptorProto;
  switch (t.kind) {
    case K::kByte:
    case K::kShort:
    case K::kInt: return ScalarMapping{F::TYPE_INT32, ""};
    case K::kLong: return ScalarMapping{F::TYPE_INT64, ""};
    case K::kFloat: return ScalarMapping{F::TYPE_FLOAT, ""};
    case K::kDouble: return ScalarMapping{F::TYPE_DOUBLE, ""};
    case K::kDecimal: return ScalarMapping{F::TYPE_STRING, "decimal text with exactly the scale's fraction digits"};
    case K::kString: return ScalarMapping{F::TYPE_STRING, ""};
    case K::kBoolean: return ScalarMapping{F::TYPE_BOOL, ""};
    case K::kBinary: return ScalarMapping{F::TYPE_BYTES, ""};
    case K::kDate: return ScalarMapping{F::TYPE_INT32, "days since 1970-01-01"};
    case K::kTimestamp: return ScalarMapping{F::TYPE_INT64, "microseconds since the epoch, UTC"};
    case K::kTimestampNtz: return ScalarMapping{F::TYPE_INT64, "microseconds since the epoch, wall clock"};
    case K::kVariant: return ScalarMapping{F::TYPE_STRING, "the value as JSON text"};
    default: return std::nullopt;
  }
}

// Builds one message from columns or struct fields, collecting every
// problem instead of stopping at the first.
class MessageBuilder {
 public:
  MessageBuilder(std::vector<std::string>* problems, pb::SourceCodeInfo* comments)
      : problems_(problems), comments_(comments) {}

  struct Member {
    const std::string& name;
    const UcType& type;
    bool nullable;
  };

  // Fills `msg` (full name `full_name`, at `path` in the file for
  // comments) from `members`; `where` prefixes problem paths.
  void Build(pb::DescriptorProto* msg, const std::string& full_name, const std::vector<int>& path,
             const std::vector<Member>& members, const std::string& where) {
    std::set<std::string> nested_names;
    // MAP entry messages go after the STRUCT ones, where protoc puts them
    // when it reads the printed .proto: either way, the same descriptor.
    std::vector<pb::DescriptorProto> entries;
    for (size_t i = 0; i < members.size(); ++i) {
      const Member& m = members[i];
      const std::string at = where.empty() ? m.name : absl::StrCat(where, ".", m.name);
      if (!IsProtoIdentifier(m.name) || ProtoKeywords().count(absl::AsciiStrToLower(m.name)) > 0) {
        problems_->push_back(absl::StrCat(
            at, ": the name is not a proto field name (letters, digits and _, not first a digit, not a keyword)"));
        continue;
      }
      pb::FieldDescriptorProto* f = msg->add_field();
      f->set_name(m.name);
      f->set_number(FieldNumber(i));
      f->set_label(m.nullable ? pb::FieldDescriptorProto::LABEL_OPTIONAL : pb::FieldDescriptorProto::LABEL_REQUIRED);
      std::vector<int> field_path = path;
      field_path.insert(field_path.end(), {pb::DescriptorProto::kFieldFieldNumber, msg->field_size() - 1});
      std::string note;
      if (!Fill(msg, full_name, f, m.name, m.type, at, path, &nested_names, &entries, &note)) {
        msg->mutable_field()->RemoveLast();
        continue;
      }
      Comment(field_path, absl::StrCat(" ", m.type.text, note.empty() ? "" : ": ", note));
    }
    for (pb::DescriptorProto& entry : entries) *msg->add_nested_type() = std::move(entry);
  }

 private:
  // Sets f's type (and label for ARRAY and MAP); false when the column
  // cannot be sent (the problem is recorded).
  bool Fill(pb::DescriptorProto* msg, const std::string& full_name, pb::FieldDescriptorProto* f,
            const std::string& name, const UcType& t, const std::string& at, const std::vector<int>& msg_path,
            std::set<std::string>* nested_names, std::vector<pb::DescriptorProto>* entries, std::string* note) {
    using K = UcType::Kind;
    if (std::optional<ScalarMapping> s = Scalar(t)) {
      f->set_type(s->type);
      *note = s->note;
      return true;
    }
    switch (t.kind) {
      case K::kStruct:
        f->set_type(pb::FieldDescriptorProto::TYPE_MESSAGE);
        f->set_type_name(Nested(msg, full_name, msg_path, name, t, at, nested_names));
        return true;
      case K::kArray: {
        const UcType& e = *t.element;
        if (e.kind == K::kArray || e.kind == K::kMap) {
          problems_->push_back(absl::StrCat(at, " (", t.text, "): an ARRAY of ", e.kind == K::kArray ? "ARRAY" : "MAP",
                                            " has no proto form (wrap the inner type in a STRUCT)"));
          return false;
        }
        f->set_label(pb::FieldDescriptorProto::LABEL_REPEATED);
        return Fill(msg, full_name, f, name, e, at, msg_path, nested_names, entries, note);
      }
      case K::kMap: {
        const UcType& k = *t.key;
        const UcType& v = *t.value;
        std::optional<ScalarMapping> key = Scalar(k);
        const bool key_ok = key && key->type != pb::FieldDescriptorProto::TYPE_FLOAT &&
                            key->type != pb::FieldDescriptorProto::TYPE_DOUBLE &&
                            key->type != pb::FieldDescriptorProto::TYPE_BYTES;
        if (!key_ok) {
          problems_->push_back(absl::StrCat(at, " (", t.text, "): a MAP key must be an integer, BOOLEAN, STRING, "
                                            "DATE, TIMESTAMP or DECIMAL, not ", k.text));
          return false;
        }
        if (v.kind == K::kArray || v.kind == K::kMap) {
          problems_->push_back(absl::StrCat(at, " (", t.text, "): a MAP of ", v.kind == K::kArray ? "ARRAY" : "MAP",
                                            " has no proto form (wrap the value in a STRUCT)"));
          return false;
        }
        if (v.kind == K::kUnsupported) {
          problems_->push_back(absl::StrCat(at, " (", t.text, "): ", v.text, " is not a type Zerobus takes"));
          return false;
        }
        // map<K, V> is a repeated nested entry message (what protoc makes).
        const std::string entry_name = Unique(PascalCase(name) + "Entry", nested_names);
        pb::DescriptorProto* entry = &entries->emplace_back();
        entry->set_name(entry_name);
        entry->mutable_options()->set_map_entry(true);
        const std::string entry_full = absl::StrCat(full_name, ".", entry_name);
        pb::FieldDescriptorProto* kf = entry->add_field();
        kf->set_name("key");
        kf->set_number(1);
        kf->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);
        kf->set_type(key->type);
        pb::FieldDescriptorProto* vf = entry->add_field();
        vf->set_name("value");
        vf->set_number(2);
        vf->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);
        if (std::optional<ScalarMapping> value = Scalar(v)) {
          vf->set_type(value->type);
        } else {
          // A STRUCT value is declared beside the entry (an entry holds
          // only its key and value).
          vf->set_type(pb::FieldDescriptorProto::TYPE_MESSAGE);
          vf->set_type_name(Nested(msg, full_name, msg_path, name + "_value", v, at + ".value", nested_names));
        }
        f->set_label(pb::FieldDescriptorProto::LABEL_REPEATED);
        f->set_type(pb::FieldDescriptorProto::TYPE_MESSAGE);
        f->set_type_name(entry_full);
        return true;
      }
      default:
        problems_->push_back(absl::StrCat(at, " (", t.text, "): ", absl::AsciiStrToUpper(t.text),
                                          " is not a type Zerobus takes"));
        return false;
    }
  }

  // Declares STRUCT `t` as a message nested in `msg`; returns its full name.
  std::string Nested(pb::DescriptorProto* msg, const std::string& full_name, const std::vector<int>& msg_path,
                     const std::string& name, const UcType& t, const std::string& at,
                     std::set<std::string>* nested_names) {
    std::string type_name = PascalCase(name);
    if (type_name.empty() || !IsProtoIdentifier(type_name)) type_name = absl::StrCat("Struct", nested_names->size() + 1);
    type_name = Unique(type_name, nested_names);
    const int index = msg->nested_type_size();
    pb::DescriptorProto* nested = msg->add_nested_type();
    nested->set_name(type_name);
    const std::string nested_full = absl::StrCat(full_name, ".", type_name);
    std::vector<Member> members;
    for (const UcType::Field& field : t.fields) members.push_back(Member{field.name, field.type, field.nullable});
    std::vector<int> path = msg_path;
    path.insert(path.end(), {pb::DescriptorProto::kNestedTypeFieldNumber, index});
    Build(nested, nested_full, path, members, at);
    return nested_full;
  }

  static std::string Unique(const std::string& name, std::set<std::string>* taken) {
    std::string candidate = name;
    for (int n = 2; taken->count(candidate) > 0; ++n) candidate = absl::StrCat(name, n);
    taken->insert(candidate);
    return candidate;
  }

  void Comment(const std::vector<int>& path, const std::string& text) {
    pb::SourceCodeInfo::Location* loc = comments_->add_location();
    for (int p : path) loc->add_path(p);
    for (int s : {0, 0, 0}) loc->add_span(s);
    loc->set_leading_comments(text);
  }

  std::vector<std::string>* problems_;
  pb::SourceCodeInfo* comments_;
};

// The nested message `type_name` names inside `root` (names relative to
// the root message, with or without a leading '.').
const pb::DescriptorProto* Resolve(const pb::DescriptorProto& root, absl::string_view type_name) {
  absl::ConsumePrefix(&type_name, ".");
  std::vector<std::string> parts = absl::StrSplit(type_name, '.');
  if (parts.empty() || parts[0] != root.name()) return nullptr;
  const pb::DescriptorProto* at = &root;
  for (size_t i = 1; i < parts.size() && at != nullptr; ++i) {
    const pb::DescriptorProto* next = nullptr;
    for (const auto& nested : at->nested_type()) {
      if (nested.name() == parts[i]) next = &nested;
    }
    at = next;
  }
  return at;
}

const char* TypeWord(const pb::FieldDescriptorProto& f) {
  if (f.type() == pb::FieldDescriptorProto::TYPE_MESSAGE) return "message";
  return pb::FieldDescriptor::TypeName(static_cast<pb::FieldDescriptor::Type>(f.type()));
}

// Whether `got` (in `got_root`) has the shape `want` (in `want_root`):
// the same type and repeatedness, and for messages the same fields.
bool SameShape(const pb::FieldDescriptorProto& got, const pb::DescriptorProto& got_root,
               const pb::FieldDescriptorProto& want, const pb::DescriptorProto& want_root, int depth) {
  if (got.type() != want.type() ||
      (got.label() == pb::FieldDescriptorProto::LABEL_REPEATED) !=
          (want.label() == pb::FieldDescriptorProto::LABEL_REPEATED)) {
    return false;
  }
  if (want.type() != pb::FieldDescriptorProto::TYPE_MESSAGE) return true;
  if (depth > kMaxUcTypeDepth) return false;
  const pb::DescriptorProto* g = Resolve(got_root, got.type_name());
  const pb::DescriptorProto* w = Resolve(want_root, want.type_name());
  if (g == nullptr || w == nullptr || g->field_size() != w->field_size()) return false;
  for (int i = 0; i < w->field_size(); ++i) {
    if (g->field(i).name() != w->field(i).name() ||
        !SameShape(g->field(i), got_root, w->field(i), want_root, depth + 1)) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<SchemaMismatch> CheckMessageAgainstTable(const UcTable& table, const std::string& descriptor_proto) {
  pb::DescriptorProto got;
  if (!got.ParseFromString(descriptor_proto)) {
    return SchemaMismatch{"TYPE_INCOMPATIBLE", "descriptor_proto is not a DescriptorProto"};
  }
  absl::StatusOr<TableProto> expected = TableToProto(table, got.name().empty() ? "" : got.name());
  if (!expected.ok()) return std::nullopt;
  pb::DescriptorProto want;
  if (!want.ParseFromString(expected->descriptor_proto)) return std::nullopt;
  std::map<std::string, int> column_index;
  for (int i = 0; i < want.field_size(); ++i) column_index[want.field(i).name()] = i;
  std::set<std::string> present;
  int last = -1;
  for (const auto& f : got.field()) {
    auto it = column_index.find(f.name());
    if (it == column_index.end()) {
      return SchemaMismatch{"FIELD_NOT_IN_TABLE",
                            absl::StrCat("field ", f.name(), " has no column in table ", table.full_name)};
    }
    if (it->second < last) {
      return SchemaMismatch{"FIELD_OUT_OF_ORDER", absl::StrCat("field ", f.name(), " comes after column ",
                                                               want.field(last).name(), " in the message but before "
                                                               "it in table ", table.full_name)};
    }
    last = it->second;
    present.insert(f.name());
    const pb::FieldDescriptorProto& w = want.field(it->second);
    const std::string& type_text = table.columns[static_cast<size_t>(it->second)].type_text;
    if (!SameShape(f, got, w, want, 0)) {
      return SchemaMismatch{"TYPE_INCOMPATIBLE",
                            absl::StrCat("field ", f.name(), " (", TypeWord(f),
                                         f.label() == pb::FieldDescriptorProto::LABEL_REPEATED ? ", repeated" : "",
                                         ") cannot carry column ", f.name(), " (", type_text, "), which needs ",
                                         TypeWord(w),
                                         w.label() == pb::FieldDescriptorProto::LABEL_REPEATED ? ", repeated" : "")};
    }
    if (w.label() == pb::FieldDescriptorProto::LABEL_REQUIRED && f.label() != pb::FieldDescriptorProto::LABEL_REQUIRED) {
      return SchemaMismatch{"TYPE_INCOMPATIBLE", absl::StrCat("column ", f.name(),
                                                              " is NOT NULL: its field must be required")};
    }
  }
  for (const auto& w : want.field()) {
    if (w.label() == pb::FieldDescriptorProto::LABEL_REQUIRED && present.count(w.name()) == 0) {
      return SchemaMismatch{"MISSING_REQUIRED_COLUMN", absl::StrCat("column ", w.name(), " of table ",
                                                                    table.full_name, " is NOT NULL and has no field")};
    }
  }
  return std::nullopt;
}

absl::StatusOr<UcTable> ParseUcTable(absl::string_view json) {
  if (json.size() > kMaxUcTableJsonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the table's description is ", json.size(), " bytes, more than the ", kMaxUcTableJsonBytes,
                     " it may be"));
  }
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError()) {
    return absl::InvalidArgumentError(absl::StrCat("the table's description is not JSON: ",
                                                   rapidjson::GetParseError_En(doc.GetParseError()), " at byte ",
                                                   doc.GetErrorOffset()));
  }
  if (!doc.IsObject()) return absl::InvalidArgumentError("the table's description is not a JSON object");
  UcTable table;
  if (auto full = StringMember(doc, "full_name")) {
    table.full_name = *full;
  } else {
    auto catalog = StringMember(doc, "catalog_name");
    auto schema = StringMember(doc, "schema_name");
    auto name = StringMember(doc, "name");
    if (!catalog || !schema || !name) {
      return absl::InvalidArgumentError("full_name: missing (and no catalog_name, schema_name and name either)");
    }
    table.full_name = absl::StrCat(*catalog, ".", *schema, ".", *name);
  }
  auto columns = doc.FindMember("columns");
  if (columns == doc.MemberEnd() || !columns->value.IsArray()) {
    return absl::InvalidArgumentError("columns: missing or not an array");
  }
  struct Positioned {
    int64_t position;
    UcColumn column;
  };
  std::vector<Positioned> read;
  bool all_positioned = true;
  for (rapidjson::SizeType i = 0; i < columns->value.Size(); ++i) {
    const rapidjson::Value& c = columns->value[i];
    const std::string at = absl::StrCat("columns[", i, "]");
    if (!c.IsObject()) return absl::InvalidArgumentError(absl::StrCat(at, ": not an object"));
    UcColumn column;
    auto name = StringMember(c, "name");
    if (!name || name->empty()) return absl::InvalidArgumentError(absl::StrCat(at, ".name: missing"));
    column.name = *name;
    auto type_text = StringMember(c, "type_text");
    if (!type_text || type_text->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".type_text: missing (column ", column.name, ")"));
    }
    column.type_text = *type_text;
    auto nullable = c.FindMember("nullable");
    if (nullable != c.MemberEnd()) {
      if (!nullable->value.IsBool()) return absl::InvalidArgumentError(absl::StrCat(at, ".nullable: not a boolean"));
      column.nullable = nullable->value.GetBool();
    }
    auto position = c.FindMember("position");
    int64_t pos = static_cast<int64_t>(i);
    if (position != c.MemberEnd() && position->value.IsInt64()) {
      pos = position->value.GetInt64();
    } else {
      all_positioned = false;
    }
    read.push_back(Positioned{pos, std::move(column)});
  }
  // Column order is the table's: by position when every column has one.
  if (all_positioned) {
    std::stable_sort(read.begin(), read.end(),
                     [](const Positioned& a, const Positioned& b) { return a.position < b.position; });
  }
  for (auto& p : read) table.columns.push_back(std::move(p.column));
  if (table.columns.empty()) return absl::InvalidArgumentError("columns: the table has none");
  return table;
}

absl::StatusOr<UcType> ParseUcType(absl::string_view type_text) { return TypeParser(type_text).ParseAll(); }

absl::StatusOr<TableProto> TableToProto(const UcTable& table, const std::string& message_name) {
  TableProto out;
  out.message_name = message_name;
  if (out.message_name.empty()) {
    const size_t dot = table.full_name.rfind('.');
    out.message_name = table.full_name.substr(dot == std::string::npos ? 0 : dot + 1);
  }
  if (!IsProtoIdentifier(out.message_name)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", out.message_name,
                                                   "\" is not a proto message name; choose one with --message"));
  }
  std::vector<std::string> problems;
  // Parsed first, all of them, so that every bad column is listed.
  std::vector<std::optional<UcType>> types;
  types.reserve(table.columns.size());
  for (const UcColumn& c : table.columns) {
    absl::StatusOr<UcType> t = ParseUcType(c.type_text);
    if (!t.ok()) {
      problems.push_back(absl::StrCat(c.name, ": ", t.status().message()));
      types.emplace_back();
      continue;
    }
    types.emplace_back(std::move(*t));
  }
  pb::FileDescriptorProto file;
  file.set_name(out.message_name + ".proto");
  file.set_syntax("proto2");
  pb::DescriptorProto* msg = file.add_message_type();
  msg->set_name(out.message_name);
  // A column whose type did not parse is listed already; with one, the
  // answer is an error anyway, so the others' numbers do not matter.
  std::vector<MessageBuilder::Member> members;
  for (size_t i = 0; i < table.columns.size(); ++i) {
    if (types[i]) members.push_back(MessageBuilder::Member{table.columns[i].name, *types[i], table.columns[i].nullable});
  }
  MessageBuilder builder(&problems, file.mutable_source_code_info());
  builder.Build(msg, "." + out.message_name, {pb::FileDescriptorProto::kMessageTypeFieldNumber, 0}, members, "");
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("table ", table.full_name, ": ", problems.size(),
                                                   problems.size() == 1 ? " column" : " columns",
                                                   " cannot be sent to Zerobus:\n  ", absl::StrJoin(problems, "\n  ")));
  }
  // The library checks what was built and prints it.
  pb::DescriptorPool pool;
  const pb::FileDescriptor* built = pool.BuildFile(file);
  if (built == nullptr) {
    return absl::InternalError(absl::StrCat("table ", table.full_name, ": the generated message does not build"));
  }
  pb::DebugStringOptions options;
  options.include_comments = true;
  out.proto_text = absl::StrCat(
      "// The Zerobus record of Unity Catalog table ", table.full_name, ", written by\n",
      "// `zerobusctl gen-proto`: proto2, one self-contained message, fields in column\n",
      "// order. Each field's comment is its column's type and how it goes on the wire.\n",
      built->DebugStringWithOptions(options));
  pb::DescriptorProto descriptor;
  built->message_type(0)->CopyTo(&descriptor);
  StripPackage(&descriptor, "");
  out.descriptor_proto = descriptor.SerializeAsString();
  return out;
}

}  // namespace zb
