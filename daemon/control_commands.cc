#include "daemon/control_commands.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "schema/record_codec.h"

namespace zb {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void Str(Writer& w, const char* key, const std::string& value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

void U64(Writer& w, const char* key, uint64_t value) {
  w.Key(key);
  w.Uint64(value);
}

void I64(Writer& w, const char* key, int64_t value) {
  w.Key(key);
  w.Int64(value);
}

}  // namespace

absl::StatusOr<ControlCommand> ParseControlCommand(const std::string& line) {
  // Requests are shallow; bounding the depth first keeps rapidjson's
  // recursive DOM (and its destructor) safe from any input.
  constexpr int kMaxRequestDepth = 8;
  if (absl::Status s = ValidateJsonObject(line, kMaxRequestDepth); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("request is not a JSON object: ", s.message()));
  }
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(line.c_str(), line.size());
  if (d.HasParseError()) {
    return absl::InvalidArgumentError(absl::StrCat("request is not JSON (byte ", d.GetErrorOffset(), ": ",
                                                   rapidjson::GetParseError_En(d.GetParseError()), ")"));
  }
  if (!d.IsObject() || !d.HasMember("cmd") || !d["cmd"].IsString()) {
    return absl::InvalidArgumentError("request must be an object with a \"cmd\" string");
  }
  ControlCommand c;
  const std::string cmd = d["cmd"].GetString();
  if (cmd == "status") {
    c.kind = ControlCommand::Kind::kStatus;
  } else if (cmd == "dlq.list") {
    c.kind = ControlCommand::Kind::kDlqList;
  } else if (cmd == "dlq.replay") {
    c.kind = ControlCommand::Kind::kDlqReplay;
  } else if (cmd == "dlq.purge") {
    c.kind = ControlCommand::Kind::kDlqPurge;
  } else if (cmd == "resume") {
    c.kind = ControlCommand::Kind::kResume;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown cmd \"", cmd,
                                                   "\" (known: status, dlq.list, dlq.replay, dlq.purge, resume)"));
  }
  bool all = false;
  for (auto it = d.MemberBegin(); it != d.MemberEnd(); ++it) {
    const std::string key = it->name.GetString();
    const rapidjson::Value& v = it->value;
    if (key == "cmd") continue;
    if (key == "route" && v.IsString()) {
      c.filter.lane = v.GetString();
    } else if (key == "ids" && v.IsArray()) {
      for (const auto& id : v.GetArray()) {
        if (!id.IsUint64()) return absl::InvalidArgumentError("ids must be a list of dead-letter ids");
        c.filter.ids.push_back(id.GetUint64());
      }
      if (c.filter.ids.empty()) return absl::InvalidArgumentError("ids is empty");
    } else if (key == "from_id" && v.IsUint64()) {
      c.from_id = v.GetUint64();
    } else if (key == "limit" && v.IsUint64() && v.GetUint64() > 0) {
      c.limit = static_cast<size_t>(v.GetUint64());
    } else if (key == "payloads" && v.IsBool()) {
      c.payloads = v.GetBool();
    } else if (key == "all" && v.IsBool()) {
      all = v.GetBool();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown or mistyped field \"", key, "\""));
    }
  }
  const bool changes = c.kind == ControlCommand::Kind::kDlqReplay || c.kind == ControlCommand::Kind::kDlqPurge;
  if (changes && !all && c.filter.lane.empty() && c.filter.ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(cmd, " needs \"route\", \"ids\" or \"all\": true (it never acts on everything by default)"));
  }
  return c;
}

std::string ControlError(const std::string& message) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("ok");
  w.Bool(false);
  Str(w, "error", message);
  w.EndObject();
  return buf.GetString();
}

std::string RenderDeadLetters(const std::vector<DeadLetter>& entries, bool payloads, uint64_t next_id) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("ok");
  w.Bool(true);
  w.Key("entries");
  w.StartArray();
  for (const auto& e : entries) {
    w.StartObject();
    U64(w, "id", e.id);
    Str(w, "route", e.lane);
    U64(w, "seq", e.seq);
    Str(w, "table", e.info.table);
    Str(w, "code", e.info.code);
    Str(w, "message", e.info.message);
    if (!e.info.reason.empty()) Str(w, "reason", e.info.reason);
    U64(w, "attempts", e.info.attempts);
    I64(w, "append_time_us", e.append_time_us);
    I64(w, "first_failure_us", e.info.first_failure_us);
    I64(w, "dead_lettered_us", e.dead_lettered_us);
    U64(w, "bytes", e.payload.size());
    if (payloads) Str(w, "payload", e.payload);
    w.EndObject();
  }
  w.EndArray();
  U64(w, "next_id", next_id);
  w.EndObject();
  return buf.GetString();
}

std::string RenderStatus(const DaemonStatus& status) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("ok");
  w.Bool(true);
  w.Key("ready");
  w.Bool(status.ready);
  w.Key("lanes");
  w.StartArray();
  for (const auto& l : status.lanes) {
    w.StartObject();
    Str(w, "lane", l.lane);
    Str(w, "route", l.route);
    Str(w, "table", l.table);
    Str(w, "state", l.state);
    if (!l.parked_reason.empty()) Str(w, "parked_reason", l.parked_reason);
    w.Key("configured");
    w.Bool(l.configured);
    U64(w, "spooled", l.spooled);
    U64(w, "bytes", l.bytes);
    U64(w, "inflight_requests", l.inflight_requests);
    U64(w, "open_streams", l.open_streams);
    U64(w, "max_streams", l.max_streams);
    U64(w, "failing_attempts", l.failing_attempts);
    w.Key("oldest_age_seconds");
    w.Double(l.oldest_age_seconds);
    // The most recent failure of any kind, for a one-line view.
    const LaneFailure* last = nullptr;
    for (const LaneFailure& f : l.failures) {
      if (last == nullptr || f.last_unix_us > last->last_unix_us) last = &f;
    }
    if (last != nullptr) {
      Str(w, "last_error", last->explanation.empty() ? last->last_message : last->explanation);
      Str(w, "last_error_time",
          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(last->last_unix_us), absl::UTCTimeZone()));
    }
    // {"connect":{"count":N,"last_time":"2026-...Z","last_message":"..."}, ...}
    w.Key("failures");
    w.StartObject();
    for (const LaneFailure& f : l.failures) {
      w.Key(f.kind.c_str());
      w.StartObject();
      U64(w, "count", f.count);
      Str(w, "last_time",
          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(f.last_unix_us), absl::UTCTimeZone()));
      Str(w, "last_message", f.last_message);
      if (!f.explanation.empty()) Str(w, "explanation", f.explanation);
      w.EndObject();
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
  // {"route":..., "table":..., "reason":...}: from_table routes whose
  // table's columns were never read (they refuse records).
  w.Key("waiting_routes");
  w.StartArray();
  for (const auto& r : status.waiting_routes) {
    w.StartObject();
    Str(w, "route", r.route);
    Str(w, "table", r.table);
    Str(w, "reason", r.reason);
    w.EndObject();
  }
  w.EndArray();
  w.Key("spool");
  w.StartObject();
  U64(w, "bytes", status.spool_bytes);
  U64(w, "max_bytes", status.spool_max_bytes);
  w.Key("full");
  w.Bool(status.spool_full);
  w.EndObject();
  w.Key("dead_letters");
  w.StartObject();
  U64(w, "records", status.dead_letters.records);
  U64(w, "bytes", status.dead_letters.bytes);
  w.EndObject();
  w.EndObject();
  return buf.GetString();
}

std::string RenderCount(const std::string& key, uint64_t n, const std::string& note) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("ok");
  w.Bool(true);
  U64(w, key.c_str(), n);
  if (!note.empty()) Str(w, "note", note);
  w.EndObject();
  return buf.GetString();
}

}  // namespace zb
