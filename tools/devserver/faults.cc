#include "tools/devserver/faults.h"

#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rapidjson/document.h"
#include "tools/devserver/bounded_json.h"

namespace zb::devserver {
namespace {

using Value = rapidjson::Value;

const std::map<std::string, grpc::StatusCode>& CodeNames() {
  static const auto* names = new std::map<std::string, grpc::StatusCode>{
      {"OK", grpc::StatusCode::OK},
      {"CANCELLED", grpc::StatusCode::CANCELLED},
      {"UNKNOWN", grpc::StatusCode::UNKNOWN},
      {"INVALID_ARGUMENT", grpc::StatusCode::INVALID_ARGUMENT},
      {"DEADLINE_EXCEEDED", grpc::StatusCode::DEADLINE_EXCEEDED},
      {"NOT_FOUND", grpc::StatusCode::NOT_FOUND},
      {"ALREADY_EXISTS", grpc::StatusCode::ALREADY_EXISTS},
      {"PERMISSION_DENIED", grpc::StatusCode::PERMISSION_DENIED},
      {"RESOURCE_EXHAUSTED", grpc::StatusCode::RESOURCE_EXHAUSTED},
      {"FAILED_PRECONDITION", grpc::StatusCode::FAILED_PRECONDITION},
      {"ABORTED", grpc::StatusCode::ABORTED},
      {"OUT_OF_RANGE", grpc::StatusCode::OUT_OF_RANGE},
      {"UNIMPLEMENTED", grpc::StatusCode::UNIMPLEMENTED},
      {"INTERNAL", grpc::StatusCode::INTERNAL},
      {"UNAVAILABLE", grpc::StatusCode::UNAVAILABLE},
      {"DATA_LOSS", grpc::StatusCode::DATA_LOSS},
      {"UNAUTHENTICATED", grpc::StatusCode::UNAUTHENTICATED},
  };
  return *names;
}

// Reads the members of one JSON object into typed fields, collecting every
// problem with its path.
class ObjectReader {
 public:
  ObjectReader(const Value& v, std::string path, std::vector<std::string>* problems)
      : v_(v), path_(std::move(path)), problems_(problems) {
    if (!v.IsObject()) Problem(path_, "must be an object");
  }

  // Call after reading every known key: reports the others.
  void Finish() {
    if (!v_.IsObject()) return;
    for (auto it = v_.MemberBegin(); it != v_.MemberEnd(); ++it) {
      const std::string key = it->name.GetString();
      if (known_.count(key) == 0) {
        Problem(Path(key), absl::StrCat("unknown key (known: ", absl::StrJoin(known_, ", "), ")"));
      }
    }
  }

  const Value* Get(const std::string& key) {
    known_.insert(key);
    if (!v_.IsObject()) return nullptr;
    auto it = v_.FindMember(key.c_str());
    return it == v_.MemberEnd() ? nullptr : &it->value;
  }

  void Int(const std::string& key, int* out, int min = 0) {
    const Value* v = Get(key);
    if (v == nullptr) return;
    if (!v->IsInt() || v->GetInt() < min) {
      Problem(Path(key), absl::StrCat("must be an integer >= ", min));
      return;
    }
    *out = v->GetInt();
  }

  void Int64(const std::string& key, int64_t* out, int64_t min = 0) {
    const Value* v = Get(key);
    if (v == nullptr) return;
    if (!v->IsInt64() || v->GetInt64() < min) {
      Problem(Path(key), absl::StrCat("must be an integer >= ", min));
      return;
    }
    *out = v->GetInt64();
  }

  void Bool(const std::string& key, bool* out) {
    const Value* v = Get(key);
    if (v == nullptr) return;
    if (!v->IsBool()) {
      Problem(Path(key), "must be true or false");
      return;
    }
    *out = v->GetBool();
  }

  void String(const std::string& key, std::string* out) {
    const Value* v = Get(key);
    if (v == nullptr) return;
    if (!v->IsString()) {
      Problem(Path(key), "must be a string");
      return;
    }
    *out = v->GetString();
  }

  // Every byte of the string, NUL included.
  void OptionalBytes(const std::string& key, std::optional<std::string>* out) {
    const Value* v = Get(key);
    if (v == nullptr) return;
    if (!v->IsString()) {
      Problem(Path(key), "must be a string");
      return;
    }
    *out = std::string(v->GetString(), v->GetStringLength());
  }

  void Code(const std::string& key, grpc::StatusCode* out) {
    std::optional<grpc::StatusCode> code;
    OptionalCode(key, &code);
    if (code) *out = *code;
  }

  void OptionalCode(const std::string& key, std::optional<grpc::StatusCode>* out) {
    const Value* v = Get(key);
    if (v == nullptr) return;
    auto code = v->IsString() ? StatusCodeFromName(v->GetString()) : std::nullopt;
    if (!code) {
      Problem(Path(key), absl::StrCat("must be a gRPC status code name such as \"UNAVAILABLE\", got ",
                                      v->IsString() ? absl::StrCat("\"", v->GetString(), "\"") : "a non-string"));
      return;
    }
    *out = code;
  }

  std::string Path(const std::string& key) const { return absl::StrCat(path_, path_.empty() ? "" : ".", key); }
  void Problem(const std::string& path, const std::string& what) { problems_->push_back(absl::StrCat(path, ": ", what)); }

 private:
  const Value& v_;
  std::string path_;
  std::vector<std::string>* problems_;
  std::set<std::string> known_;
};

StreamFaults ReadStream(const Value& v, const std::string& path, std::vector<std::string>* problems) {
  StreamFaults f;
  ObjectReader r(v, path, problems);
  r.OptionalCode("create_error", &f.create_error);
  r.String("create_message", &f.create_message);
  r.Int("create_delay_ms", &f.create_delay_ms);
  r.Int("abort_after_requests", &f.abort_after_requests);
  r.Int("abort_after_ms", &f.abort_after_ms);
  r.Code("abort_code", &f.abort_code);
  r.String("abort_message", &f.abort_message);
  r.Bool("keep_unacked", &f.keep_unacked);
  r.Bool("withhold_acks", &f.withhold_acks);
  r.Int("withhold_acks_ms", &f.withhold_acks_ms);
  r.Int("ack_delay_ms", &f.ack_delay_ms);
  r.Int("ack_interval_ms", &f.ack_interval_ms, -1);
  r.Bool("duplicate_acks", &f.duplicate_acks);
  r.Int("regress_ack_after", &f.regress_ack_after);
  r.Int("overshoot_ack_after", &f.overshoot_ack_after);
  r.Int("missing_ack_field_after", &f.missing_ack_field_after);
  r.Int("unexpected_payload_after", &f.unexpected_payload_after);
  r.Int("close_after_requests", &f.close_after_requests);
  r.Int("close_after_ms", &f.close_after_ms);
  r.Int("close_grace_ms", &f.close_grace_ms);
  r.Code("close_code", &f.close_code);
  r.Finish();
  if (f.create_error && *f.create_error == grpc::StatusCode::OK) {
    problems->push_back(absl::StrCat(path, ".create_error: OK is not an error"));
  }
  return f;
}

TokenFault ReadToken(const Value& v, const std::string& path, std::vector<std::string>* problems) {
  TokenFault t;
  ObjectReader r(v, path, problems);
  r.Int("status", &t.status, 100);
  r.Int("delay_ms", &t.delay_ms);
  r.Int("ttl_s", &t.ttl_s, 1);
  r.Bool("echo_request", &t.echo_request);
  r.OptionalBytes("body", &t.body);
  r.Int64("body_bytes", &t.body_bytes);
  r.Finish();
  auto problem = [&](const std::string& key, const std::string& what) {
    problems->push_back(absl::StrCat(path, ".", key, ": ", what));
  };
  if (t.status > 599) problem("status", "must be an HTTP status (100-599)");
  if (t.scripted_body()) {
    const size_t prefix = t.body ? t.body->size() : 0;
    if (t.body_bytes > 0 && static_cast<uint64_t>(t.body_bytes) < prefix) {
      problem("body_bytes", absl::StrCat("must be at least the length of body (", prefix, " bytes)"));
    }
    if ((t.body_bytes > 0 || prefix > 0) && (t.status < 200 || t.status == 204 || t.status == 304)) {
      problem("status", absl::StrCat("a ", t.status, " reply has no body; body and body_bytes need another"));
    }
    if (t.echo_request) problem("echo_request", "cannot be combined with body or body_bytes");
    if (t.ttl_s != -1) problem("ttl_s", "applies to issued tokens only, not to body or body_bytes");
  }
  return t;
}

}  // namespace

std::optional<grpc::StatusCode> StatusCodeFromName(const std::string& name) {
  auto it = CodeNames().find(name);
  if (it == CodeNames().end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::unique_ptr<FaultScript>> FaultScript::Parse(const std::string& json) {
  rapidjson::Document d;
  if (const std::string refused = ParseBoundedJson(json, &d); !refused.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("fault script: ", refused));
  }
  auto script = std::make_unique<FaultScript>();
  script->source_ = json;
  std::vector<std::string> problems;
  auto read_table = [&](const Value& v, const std::string& path) {
    TableScript t;
    ObjectReader r(v, path, &problems);
    if (const Value* streams = r.Get("streams")) {
      if (!streams->IsArray()) {
        r.Problem(r.Path("streams"), "must be an array of stream faults");
      } else {
        for (rapidjson::SizeType i = 0; i < streams->Size(); ++i) {
          t.streams.push_back(ReadStream((*streams)[i], absl::StrCat(path, ".streams[", i, "]"), &problems));
        }
      }
    }
    if (const Value* then = r.Get("then")) t.then = ReadStream(*then, r.Path("then"), &problems);
    r.String("poison", &t.poison);
    r.Finish();
    return t;
  };
  ObjectReader top(d, "", &problems);
  if (const Value* tables = top.Get("tables")) {
    if (!tables->IsObject()) {
      top.Problem("tables", "must be an object keyed by catalog.schema.table");
    } else {
      for (auto it = tables->MemberBegin(); it != tables->MemberEnd(); ++it) {
        const std::string name = it->name.GetString();
        script->tables_[name] = read_table(it->value, absl::StrCat("tables[\"", name, "\"]"));
      }
    }
  }
  if (const Value* def = top.Get("default")) script->default_ = read_table(*def, "default");
  if (const Value* token = top.Get("token")) {
    ObjectReader tr(*token, "token", &problems);
    if (const Value* responses = tr.Get("responses")) {
      if (!responses->IsArray()) {
        tr.Problem("token.responses", "must be an array");
      } else {
        for (rapidjson::SizeType i = 0; i < responses->Size(); ++i) {
          script->token_responses_.push_back(
              ReadToken((*responses)[i], absl::StrCat("token.responses[", i, "]"), &problems));
        }
      }
    }
    if (const Value* then = tr.Get("then")) script->token_then_ = ReadToken(*then, "token.then", &problems);
    tr.Finish();
  }
  top.Finish();
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("fault script: ", absl::StrJoin(problems, "; ")));
  }
  return script;
}

const FaultScript::TableScript* FaultScript::Find(const std::string& table) const {
  auto it = tables_.find(table);
  if (it != tables_.end()) return &it->second;
  return default_ ? &*default_ : nullptr;
}

StreamFaults FaultScript::NextStream(const std::string& table) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t ordinal = stream_cursor_[table]++;
  const TableScript* t = Find(table);
  if (t == nullptr) return StreamFaults{};
  return ordinal < t->streams.size() ? t->streams[ordinal] : t->then;
}

std::string FaultScript::Poison(const std::string& table) {
  std::lock_guard<std::mutex> lock(mu_);
  const TableScript* t = Find(table);
  return t == nullptr ? "" : t->poison;
}

TokenFault FaultScript::NextToken() {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t ordinal = token_cursor_++;
  return ordinal < token_responses_.size() ? token_responses_[ordinal] : token_then_;
}

}  // namespace zb::devserver
