#include "schema/record_codec.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "common/json_depth.h"
#include "google/protobuf/compiler/importer.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "schema/descriptor_names.h"
#include "schema/uc_convert.h"
#include "simdjson.h"

namespace zb {
namespace {

class JsonCodec final : public RecordCodec {
 public:
  explicit JsonCodec(int max_json_depth) : max_json_depth_(max_json_depth) {}
  bool is_proto() const override { return false; }
  absl::StatusOr<std::string> FromJson(absl::string_view json) const override {
    if (auto s = ValidateJsonObject(json, max_json_depth_); !s.ok()) return s;
    return std::string(json);
  }
  absl::StatusOr<std::string> FromWire(absl::string_view bytes) const override { return FromJson(bytes); }
  const std::string& descriptor_proto() const override { return empty_; }

 private:
  const int max_json_depth_;
  std::string empty_;
};

class CollectingErrors final : public google::protobuf::compiler::MultiFileErrorCollector {
 public:
  void AddError(const std::string& filename, int line, int column, const std::string& message) override {
    absl::StrAppend(&text_, text_.empty() ? "" : "; ", filename, ":", line + 1, ":", column + 1, ": ", message);
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

absl::Status CheckSelfContained(const google::protobuf::Descriptor* root, const google::protobuf::Descriptor* d) {
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    const google::protobuf::Descriptor* type = f->message_type();
    const google::protobuf::EnumDescriptor* enum_type = f->enum_type();
    auto inside = [&](const google::protobuf::Descriptor* c) {
      for (; c != nullptr; c = c->containing_type()) if (c == root) return true;
      return false;
    };
    if (type != nullptr && !inside(type)) {
      return absl::InvalidArgumentError(absl::StrCat("field ", f->full_name(), " uses ", type->full_name(),
                                                     ", which is not nested inside ", root->full_name(),
                                                     " (the descriptor sent to Zerobus must be self-contained)"));
    }
    if (enum_type != nullptr && !inside(enum_type->containing_type())) {
      return absl::InvalidArgumentError(absl::StrCat("field ", f->full_name(), " uses enum ", enum_type->full_name(),
                                                     ", which is not nested inside ", root->full_name()));
    }
  }
  // Walk the nesting tree, not the field graph: nested types that use each
  // other (a map<string, Node> inside Node) form cycles in the latter.
  for (int i = 0; i < d->nested_type_count(); ++i) {
    if (auto s = CheckSelfContained(root, d->nested_type(i)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

class RefusingCodec final : public RecordCodec {
 public:
  explicit RefusingCodec(absl::Status why) : why_(std::move(why)) {}
  bool is_proto() const override { return true; }
  absl::StatusOr<std::string> FromJson(absl::string_view) const override { return why_; }
  absl::StatusOr<std::string> FromWire(absl::string_view) const override { return why_; }
  const std::string& descriptor_proto() const override { return empty_; }

 private:
  const absl::Status why_;
  const std::string empty_;
};

class ProtoCodec final : public RecordCodec {
 public:
  ProtoCodec(std::unique_ptr<google::protobuf::compiler::DiskSourceTree> tree,
             std::unique_ptr<CollectingErrors> errors,
             std::unique_ptr<google::protobuf::compiler::Importer> importer,
             const google::protobuf::Descriptor* descriptor, std::string descriptor_proto, int max_json_depth)
      : max_json_depth_(max_json_depth),
        tree_(std::move(tree)),
        errors_(std::move(errors)),
        importer_(std::move(importer)),
        descriptor_(descriptor),
        prototype_(factory_.GetPrototype(descriptor)),
        descriptor_proto_(std::move(descriptor_proto)) {}

  bool is_proto() const override { return true; }

  absl::StatusOr<std::string> FromJson(absl::string_view json) const override {
    // Bounds the depth before protobuf's (recursive) JSON parser sees it.
    if (auto s = ValidateJsonObject(json, max_json_depth_); !s.ok()) return s;
    std::unique_ptr<google::protobuf::Message> msg(prototype_->New());
    if (column_types_ != nullptr) {
      absl::StatusOr<std::string> bytes = column_types_->Rewrite(json);
      if (!bytes.ok()) return bytes.status();
      if (!msg->ParsePartialFromString(*bytes)) {
        return absl::InternalError(absl::StrCat("the record does not parse back as ", descriptor_->full_name()));
      }
    } else {
      google::protobuf::util::JsonParseOptions options;
      options.ignore_unknown_fields = false;
      auto status = google::protobuf::util::JsonStringToMessage(std::string(json), msg.get(), options);
      if (!status.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("does not match ", descriptor_->full_name(), ": ",
                                                       absl::StripPrefix(std::string(status.message()), ": ")));
      }
    }
    if (!msg->IsInitialized()) {
      return absl::InvalidArgumentError(absl::StrCat("missing required field(s) of ", descriptor_->full_name(), ": ",
                                                     msg->InitializationErrorString()));
    }
    return msg->SerializeAsString();
  }

  absl::StatusOr<std::string> FromWire(absl::string_view bytes) const override {
    std::unique_ptr<google::protobuf::Message> msg(prototype_->New());
    if (!msg->ParsePartialFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::InvalidArgumentError(absl::StrCat("not a valid serialized ", descriptor_->full_name()));
    }
    if (!msg->IsInitialized()) {
      return absl::InvalidArgumentError(absl::StrCat("missing required field(s) of ", descriptor_->full_name(), ": ",
                                                     msg->InitializationErrorString()));
    }
    return std::string(bytes);
  }

  const std::string& descriptor_proto() const override { return descriptor_proto_; }

  void set_column_types(std::unique_ptr<ColumnTypeRewriter> rewriter) { column_types_ = std::move(rewriter); }

 private:
  const int max_json_depth_;
  std::unique_ptr<ColumnTypeRewriter> column_types_;  // null: no schema.column_types
  std::unique_ptr<google::protobuf::compiler::DiskSourceTree> tree_;
  std::unique_ptr<CollectingErrors> errors_;
  std::unique_ptr<google::protobuf::compiler::Importer> importer_;
  const google::protobuf::Descriptor* descriptor_;
  mutable google::protobuf::DynamicMessageFactory factory_;
  const google::protobuf::Message* prototype_;
  std::string descriptor_proto_;
};

}  // namespace

namespace {

// Counts nesting while rapidjson parses; stops the parse past the limit.
class DepthLimitHandler : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, DepthLimitHandler> {
 public:
  explicit DepthLimitHandler(int max_depth) : max_depth_(max_depth) {}
  bool StartObject() { return Enter(); }
  bool EndObject(rapidjson::SizeType) { return Leave(); }
  bool StartArray() { return Enter(); }
  bool EndArray(rapidjson::SizeType) { return Leave(); }
  bool too_deep() const { return too_deep_; }

 private:
  bool Enter() {
    if (++depth_ > max_depth_) too_deep_ = true;
    return !too_deep_;
  }
  bool Leave() {
    --depth_;
    return true;
  }
  const int max_depth_;
  int depth_ = 0;
  bool too_deep_ = false;
};

// The precise, position-naming verdict (rapidjson, iterative parsing: its
// default parser recurses once per nesting level, and a producer picks the
// level). Only the slow path: it runs when simdjson found a problem, so the
// producer hears exactly where.
absl::Status ExplainJson(absl::string_view json, int max_depth) {
  rapidjson::MemoryStream stream(json.data(), json.size());
  rapidjson::Reader reader;
  DepthLimitHandler handler(max_depth);
  const rapidjson::ParseResult result =
      reader.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(stream, handler);
  if (handler.too_deep()) {
    return absl::InvalidArgumentError(absl::StrCat("JSON nested deeper than ", max_depth, " levels at byte ",
                                                   result.Offset(), " (intake.max_json_depth)"));
  }
  if (result.IsError()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON at byte ", result.Offset(), ": ",
                                                   rapidjson::GetParseError_En(result.Code())));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateJsonObject(absl::string_view json, int max_depth) {
  size_t i = 0;
  while (i < json.size() && (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r')) ++i;
  if (i == json.size()) return absl::InvalidArgumentError("empty record");
  // JSON has no raw NUL anywhere (inside strings it must be escaped), but
  // both parsers may take one for the end of the text.
  if (const void* nul = std::memchr(json.data(), '\0', json.size()); nul != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON at byte ",
                                                   static_cast<const char*>(nul) - json.data(),
                                                   ": NUL byte (not allowed in JSON)"));
  }
  // The exact nesting first (one pass over the bytes): simdjson's own limit
  // does not count an empty container as a level.
  if (JsonNestsDeeperThan(json, static_cast<size_t>(max_depth))) {
    absl::Status s = ExplainJson(json, max_depth);
    if (!s.ok()) return s;
    return absl::InvalidArgumentError(
        absl::StrCat("JSON nested deeper than ", max_depth, " levels (intake.max_json_depth)"));
  }
  // Fast path: simdjson validates structure and UTF-8 with SIMD (several
  // times rapidjson's speed; this runs for every record on the intake
  // thread) without recursion, and refuses nesting past its max_depth. One
  // parser per thread: a parser is not thread-safe and keeps its buffers.
  // simdjson counts the document root as a level, hence the + 1.
  thread_local simdjson::dom::parser parser;
  const size_t simdjson_depth = static_cast<size_t>(max_depth) + 1;
  if (parser.max_depth() != simdjson_depth || parser.capacity() < json.size()) {
    if (parser.allocate(std::max(json.size(), parser.capacity()), simdjson_depth) != simdjson::SUCCESS) {
      return absl::ResourceExhaustedError("cannot allocate the JSON parser");
    }
  }
  simdjson::dom::element root;
  const simdjson::error_code error = parser.parse(json.data(), json.size(), /*realloc_if_needed=*/true).get(root);
  if (error != simdjson::SUCCESS) {
    // Parse first, so text that is not JSON at all is reported as such
    // rather than as "not an object". simdjson refuses some valid JSON
    // (integers beyond 64 bits); rapidjson decides those, with the same
    // depth limit.
    if (auto s = ExplainJson(json, max_depth); !s.ok()) return s;
  }
  if (json[i] != '{') {
    const char* got = json[i] == '[' ? "an array" : json[i] == '"' ? "a string" : json[i] == 'n' ? "null"
                      : (json[i] == 't' || json[i] == 'f') ? "a boolean" : "a number";
    return absl::InvalidArgumentError(absl::StrCat("not a JSON object: got ", got, " (a record must be {...})"));
  }
  return absl::OkStatus();
}

std::unique_ptr<RecordCodec> MakeJsonCodec(int max_json_depth) { return std::make_unique<JsonCodec>(max_json_depth); }

absl::StatusOr<std::unique_ptr<RecordCodec>> MakeProtoCodec(
    const std::string& proto_file, const std::string& message, int max_json_depth,
    const std::vector<std::pair<std::string, std::string>>& column_types) {
  namespace fs = std::filesystem;
  const fs::path path(proto_file);
  auto tree = std::make_unique<google::protobuf::compiler::DiskSourceTree>();
  tree->MapPath("", path.parent_path().empty() ? "." : path.parent_path().string());
  auto errors = std::make_unique<CollectingErrors>();
  auto importer = std::make_unique<google::protobuf::compiler::Importer>(tree.get(), errors.get());
  const google::protobuf::FileDescriptor* file = importer->Import(path.filename().string());
  if (file == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load ", proto_file, ": ",
                                                   errors->text().empty() ? "file not found" : errors->text()));
  }
  const google::protobuf::Descriptor* d = importer->pool()->FindMessageTypeByName(message);
  if (d == nullptr && !file->package().empty()) {
    d = importer->pool()->FindMessageTypeByName(absl::StrCat(file->package(), ".", message));
  }
  if (d == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("message ", message, " not found in ", proto_file));
  }
  if (auto s = CheckSelfContained(d, d); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(proto_file, ": ", s.message()));
  }
  google::protobuf::DescriptorProto dp;
  d->CopyTo(&dp);
  StripPackage(&dp, file->package());
  std::string serialized = dp.SerializeAsString();
  std::unique_ptr<ColumnTypeRewriter> rewriter;
  if (!column_types.empty()) {
    absl::StatusOr<std::unique_ptr<ColumnTypeRewriter>> made =
        MakeColumnTypeRewriter(serialized, column_types, max_json_depth, d->full_name(),
                               d->file()->syntax() == google::protobuf::FileDescriptor::SYNTAX_PROTO3 ? "proto3" : "proto2");
    if (!made.ok()) return absl::InvalidArgumentError(absl::StrCat("column_types: ", made.status().message()));
    rewriter = std::move(*made);
  }
  auto codec = std::make_unique<ProtoCodec>(std::move(tree), std::move(errors), std::move(importer), d,
                                            std::move(serialized), max_json_depth);
  codec->set_column_types(std::move(rewriter));
  return std::unique_ptr<RecordCodec>(std::move(codec));
}

std::unique_ptr<RecordCodec> MakeRefusingCodec(absl::Status why) {
  return std::make_unique<RefusingCodec>(std::move(why));
}

}  // namespace zb
