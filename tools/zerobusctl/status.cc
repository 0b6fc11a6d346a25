// `zerobusctl status` and `zerobusctl spool`: a readable summary of the
// daemon's /metrics and /readyz.

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <ctime>

#include "common/endpoint.h"
#include "config/config.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tools/zerobusctl/commands.h"

namespace zb::ctl {
namespace {

namespace asio = boost::asio;

// Returns {status code, body}; code 0 when the daemon cannot be reached.
std::pair<int, std::string> Get(const Endpoint& ep, const std::string& path) {
  try {
    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    asio::ip::tcp::socket socket(io);
    asio::connect(socket, resolver.resolve(ep.host, std::to_string(ep.port)));
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + ep.host + "\r\nConnection: close\r\n\r\n";
    asio::write(socket, asio::buffer(req));
    std::string resp;
    char buf[65536];
    boost::system::error_code ec;
    while (true) {
      size_t n = socket.read_some(asio::buffer(buf), ec);
      resp.append(buf, n);
      if (ec) break;
    }
    const size_t sp = resp.find(' ');
    const size_t body = resp.find("\r\n\r\n");
    if (sp == std::string::npos || body == std::string::npos) return {0, ""};
    return {std::stoi(resp.substr(sp + 1, 3)), resp.substr(body + 4)};
  } catch (const std::exception&) {
    return {0, ""};
  }
}

// name -> (labels text -> value)
using Samples = std::map<std::string, std::map<std::string, double>>;

Samples Parse(const std::string& text) {
  Samples out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t brace = line.find('{');
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    std::string name, labels;
    if (brace != std::string::npos && brace < space) {
      name = line.substr(0, brace);
      labels = line.substr(brace + 1, line.rfind('}') - brace - 1);
    } else {
      name = line.substr(0, space);
    }
    try {
      out[name][labels] = std::stod(line.substr(space + 1));
    } catch (...) {
    }
  }
  return out;
}

std::string Label(const std::string& labels, const std::string& key) {
  const std::string k = key + "=\"";
  const size_t p = labels.find(k);
  if (p == std::string::npos) return "";
  const size_t e = labels.find('"', p + k.size());
  return labels.substr(p + k.size(), e - p - k.size());
}

// The control socket's status reply, by lane; empty when unreachable (the
// metrics alone still tell the counts).
std::map<std::string, const rapidjson::Value*> LanesOf(const rapidjson::Document& doc) {
  std::map<std::string, const rapidjson::Value*> lanes;
  if (!doc.IsObject() || !doc.HasMember("lanes") || !doc["lanes"].IsArray()) return lanes;
  for (const auto& l : doc["lanes"].GetArray()) {
    if (l.IsObject() && l.HasMember("lane") && l["lane"].IsString()) lanes[l["lane"].GetString()] = &l;
  }
  return lanes;
}

// from_table routes waiting for their table's columns: route -> "TABLE (why)".
std::map<std::string, std::string> WaitingOf(const rapidjson::Document& doc) {
  std::map<std::string, std::string> waiting;
  if (!doc.IsObject() || !doc.HasMember("waiting_routes") || !doc["waiting_routes"].IsArray()) return waiting;
  for (const auto& w : doc["waiting_routes"].GetArray()) {
    if (!w.IsObject() || !w.HasMember("route") || !w["route"].IsString()) continue;
    std::string text = w.HasMember("table") && w["table"].IsString() ? w["table"].GetString() : "";
    if (w.HasMember("reason") && w["reason"].IsString() && w["reason"].GetStringLength() > 0) {
      text += std::string(" (") + w["reason"].GetString() + ")";
    }
    waiting[w["route"].GetString()] = text;
  }
  return waiting;
}

std::string StringOf(const rapidjson::Value& v, const char* key) {
  return v.HasMember(key) && v[key].IsString() ? v[key].GetString() : "";
}

// The failures a lane has seen, one line per kind, and why it is parked.
void PrintLaneDetail(const rapidjson::Value& lane) {
  if (lane.HasMember("max_streams") && lane["max_streams"].IsUint64() && lane.HasMember("open_streams") &&
      lane["open_streams"].IsUint64()) {
    std::printf("  streams: %llu open of at most %llu (routes[].max_streams), lane %s\n",
                static_cast<unsigned long long>(lane["open_streams"].GetUint64()),
                static_cast<unsigned long long>(lane["max_streams"].GetUint64()), StringOf(lane, "state").c_str());
  }
  if (lane.HasMember("failing_attempts") && lane["failing_attempts"].IsUint64() &&
      lane["failing_attempts"].GetUint64() > 0) {
    std::printf("  FAILING: %llu attempts in a row\n",
                static_cast<unsigned long long>(lane["failing_attempts"].GetUint64()));
  }
  if (lane.HasMember("failures") && lane["failures"].IsObject()) {
    for (const auto& [kind, f] : lane["failures"].GetObject()) {
      if (!f.IsObject()) continue;
      const std::string explanation = StringOf(f, "explanation");
      std::printf("  %s failures: %llu, last at %s: %s\n", kind.GetString(),
                  static_cast<unsigned long long>(f.HasMember("count") && f["count"].IsUint64() ? f["count"].GetUint64() : 0),
                  StringOf(f, "last_time").c_str(),
                  (explanation.empty() ? StringOf(f, "last_message") : explanation).c_str());
    }
  }
  const std::string parked = StringOf(lane, "parked_reason");
  if (!parked.empty()) std::printf("  PARKED: %s\n", parked.c_str());
}

}  // namespace

std::optional<DaemonConfig> LoadDaemonConfig(const std::string& path, bool credentials_required) {
  LoadOptions options;
  options.credentials_required = credentials_required;
  auto config = LoadConfigFile(path, options);
  if (!config.ok()) {
    std::fprintf(stderr, "zerobusctl: %s\n", std::string(config.status().message()).c_str());
    return std::nullopt;
  }
  return std::move(*config);
}

namespace {

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

std::string Age(double seconds) {
  if (seconds <= 0) return "-";
  char buf[32];
  if (seconds < 120) {
    std::snprintf(buf, sizeof(buf), "%.1fs", seconds);
  } else if (seconds < 7200) {
    std::snprintf(buf, sizeof(buf), "%.0fm", seconds / 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1fh", seconds / 3600);
  }
  return buf;
}

uint64_t U64Of(const rapidjson::Value& v, const char* key) {
  return v.HasMember(key) && v[key].IsUint64() ? v[key].GetUint64() : 0;
}

// The daemon's status, asked over the control socket: one line per lane as
// a table, the details of lanes that fail or are parked below it.
int StatusFromControl(const std::vector<std::string>& args) {
  std::string control = kDefaultControl;
  bool json = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--control" && i + 1 < args.size()) {
      control = args[++i];
    } else if (args[i] == "--config" && i + 1 < args.size()) {
      auto config = LoadDaemonConfig(args[++i]);
      if (!config) return 2;
      control = config->control.socket;
    } else if (args[i] == "--json") {
      json = true;
    } else if (args[i] == "--metrics" && i + 1 < args.size()) {
      ++i;  // accepted for old scripts: status now asks the daemon itself
    } else {
      std::fprintf(stderr, "zerobusctl status: unknown option %s (use --control PATH or --config FILE, and --json)\n",
                   args[i].c_str());
      return 2;
    }
  }
  std::string error;
  const std::string reply = ControlCall(control, "{\"cmd\":\"status\"}", &error);
  rapidjson::Document doc;
  if (!reply.empty()) doc.Parse(reply.c_str());
  if (reply.empty() || doc.HasParseError() || !doc.IsObject() || !doc.HasMember("lanes") || !doc["lanes"].IsArray()) {
    std::fprintf(stderr, "zerobusctl status: %s\n",
                 error.empty() ? ("the daemon at " + control + " answered something that is not a status").c_str()
                               : error.c_str());
    return 1;
  }
  if (json) {
    std::printf("%s\n", reply.c_str());
    return 0;
  }
  const bool ready = doc.HasMember("ready") && doc["ready"].IsBool() && doc["ready"].GetBool();
  std::printf("zerobusd: %s\n", ready ? "ready" : "not ready");
  if (doc.HasMember("spool") && doc["spool"].IsObject()) {
    const auto& sp = doc["spool"];
    const bool full = sp.HasMember("full") && sp["full"].IsBool() && sp["full"].GetBool();
    std::printf("spool: %s of %s%s", Bytes(static_cast<double>(U64Of(sp, "bytes"))).c_str(),
                Bytes(static_cast<double>(U64Of(sp, "max_bytes"))).c_str(), full ? " (FULL)" : "");
  }
  if (doc.HasMember("dead_letters") && doc["dead_letters"].IsObject()) {
    const auto& dl = doc["dead_letters"];
    std::printf("; dead letters: %llu (%s)", static_cast<unsigned long long>(U64Of(dl, "records")),
                Bytes(static_cast<double>(U64Of(dl, "bytes"))).c_str());
  }
  std::printf("\n");
  std::vector<std::vector<std::string>> rows = {
      {"LANE", "ROUTE", "TABLE", "STATE", "STREAMS", "SPOOLED", "BYTES", "OLDEST", "LAST ERROR"}};
  for (const auto& l : doc["lanes"].GetArray()) {
    if (!l.IsObject()) continue;
    std::string state = StringOf(l, "state");
    if (l.HasMember("configured") && l["configured"].IsBool() && !l["configured"].GetBool()) state += " (old)";
    std::string last = StringOf(l, "last_error");
    if (!last.empty()) last = StringOf(l, "last_error_time") + " " + last;
    if (last.size() > 100) last = last.substr(0, 97) + "...";
    rows.push_back({StringOf(l, "lane"), StringOf(l, "route"), StringOf(l, "table"), state,
                    std::to_string(U64Of(l, "open_streams")) + "/" + std::to_string(U64Of(l, "max_streams")),
                    std::to_string(U64Of(l, "spooled")), Bytes(static_cast<double>(U64Of(l, "bytes"))),
                    Age(l.HasMember("oldest_age_seconds") && l["oldest_age_seconds"].IsNumber()
                            ? l["oldest_age_seconds"].GetDouble()
                            : 0),
                    last.empty() ? "-" : last});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
  // Details: what fails, and why a lane is parked.
  for (const auto& l : doc["lanes"].GetArray()) {
    if (!l.IsObject()) continue;
    const bool failing = U64Of(l, "failing_attempts") > 0 || !StringOf(l, "parked_reason").empty() ||
                         (l.HasMember("failures") && l["failures"].IsObject() && l["failures"].MemberCount() > 0);
    if (!failing) continue;
    std::printf("lane %s:\n", StringOf(l, "lane").c_str());
    PrintLaneDetail(l);
  }
  for (const auto& [route, what] : WaitingOf(doc)) {
    std::printf("route %s: WAITING for the columns of its table: %s\n", route.c_str(), what.c_str());
  }
  return 0;
}

}  // namespace

int Status(const std::vector<std::string>& args, bool spool_only) {
  if (!spool_only) return StatusFromControl(args);
  std::string listen = "127.0.0.1:9464";
  std::string control = kDefaultControl;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--metrics" && i + 1 < args.size()) {
      listen = args[++i];
    } else if (args[i] == "--control" && i + 1 < args.size()) {
      control = args[++i];
    } else if (args[i] == "--config" && i + 1 < args.size()) {
      auto config = LoadDaemonConfig(args[++i]);
      if (!config) return 2;
      listen = config->metrics.listen;
      control = config->control.socket;
    } else {
      std::fprintf(stderr,
                   "zerobusctl: unknown option %s (use --metrics HOST:PORT, --control PATH or --config FILE)\n",
                   args[i].c_str());
      return 2;
    }
  }
  auto ep = ParseEndpoint(listen);
  if (!ep.ok()) {
    std::fprintf(stderr, "zerobusctl: bad metrics address %s\n", listen.c_str());
    return 2;
  }
  auto [code, body] = Get(*ep, "/metrics");
  if (code != 200) {
    std::fprintf(stderr, "zerobusctl: zerobusd is not answering on http://%s/metrics\n", listen.c_str());
    return 1;
  }
  const Samples s = Parse(body);
  auto value = [&](const std::string& name, const std::string& labels) {
    auto it = s.find(name);
    if (it == s.end()) return 0.0;
    auto jt = it->second.find(labels);
    return jt == it->second.end() ? 0.0 : jt->second;
  };
  std::vector<std::string> routes;
  if (auto it = s.find("zerobusd_spool_records"); it != s.end()) {
    for (const auto& [labels, _] : it->second) routes.push_back(Label(labels, "route"));
  }
  rapidjson::Document control_status;
  std::map<std::string, const rapidjson::Value*> lanes;
  std::map<std::string, std::string> waiting;
  if (!spool_only) {
    auto [ready_code, ready_body] = Get(*ep, "/readyz");
    std::printf("zerobusd: %s\n", ready_code == 200 ? "ready" : "not ready");
    // Reasons in words come from the control socket (the operator's user
    // or root); without it the counts from the metrics still show.
    std::string error;
    const std::string reply = ControlCall(control, "{\"cmd\":\"status\"}", &error);
    if (!reply.empty()) control_status.Parse(reply.c_str());
    lanes = LanesOf(control_status);
    waiting = WaitingOf(control_status);
    if (lanes.empty() && waiting.empty()) std::printf("(no failure details: %s)\n", error.empty() ? "unexpected reply" : error.c_str());
  }
  std::printf("spool: %.0f bytes%s; dead letters: %.0f\n", value("zerobusd_spool_bytes", ""),
              value("zerobusd_spool_full", "") > 0 ? " (FULL)" : "", value("zerobusd_dead_letter_store_records", ""));
  for (const auto& r : routes) {
    const std::string l = "route=\"" + r + "\"";
    std::printf("route %s: spooled %.0f, oldest %.1fs", r.c_str(), value("zerobusd_spool_records", l),
                value("zerobusd_oldest_record_age_seconds", l));
    if (!spool_only) {
      double failures = 0;
      if (auto it = s.find("zerobusd_stream_failures_total"); it != s.end()) {
        for (const auto& [labels, v] : it->second) if (Label(labels, "route") == r) failures += v;
      }
      std::printf(", accepted %.0f, acked %.0f, in flight %.0f requests, streams open %.0f, streams opened %.0f, "
                  "streams failed %.0f",
                  value("zerobusd_intake_records_total", "result=\"accepted\"," + l),
                  value("zerobusd_acked_records_total", l), value("zerobusd_inflight_requests", l),
                  value("zerobusd_open_streams", l), value("zerobusd_stream_opens_total", l), failures);
      if (const double trips = value("zerobusd_quota_trips_total", l); trips > 0) {
        std::printf(", quota trips %.0f", trips);
      }
      // Failed attempts by kind, with how long ago the last one was.
      std::string by_kind;
      for (const char* kind : {"token", "connect", "tls", "stream"}) {
        const std::string kl = std::string("kind=\"") + kind + "\"," + l;
        const double n = value("zerobusd_route_failures_total", kl);
        if (n <= 0) continue;
        const double ago = static_cast<double>(std::time(nullptr)) -
                           value("zerobusd_route_last_failure_timestamp_seconds", kl);
        char part[128];
        std::snprintf(part, sizeof(part), "%s%s %.0f (last %.0fs ago)", by_kind.empty() ? "" : ", ", kind, n,
                      ago < 0 ? 0 : ago);
        by_kind += part;
      }
      if (!by_kind.empty()) std::printf(", failed attempts: %s", by_kind.c_str());
      if (value("zerobusd_lane_parked", l) > 0) std::printf(", PARKED");
    }
    std::printf("\n");
    if (auto it = lanes.find(r); it != lanes.end()) PrintLaneDetail(*it->second);
    if (auto it = waiting.find(r); it != waiting.end()) {
      std::printf("  WAITING for the columns of its table: %s\n", it->second.c_str());
    }
  }
  return 0;
}

int Resume(const std::vector<std::string>& args) {
  std::string control = kDefaultControl;
  std::string route;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--control" && i + 1 < args.size()) {
      control = args[++i];
    } else if (args[i] == "--config" && i + 1 < args.size()) {
      auto config = LoadDaemonConfig(args[++i]);
      if (!config) return 2;
      control = config->control.socket;
    } else if (args[i] == "--route" && i + 1 < args.size()) {
      route = args[++i];
    } else {
      std::fprintf(stderr, "zerobusctl resume: unknown option %s (use --route NAME, --control PATH or --config FILE)\n",
                   args[i].c_str());
      return 2;
    }
  }
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("cmd");
  w.String("resume");
  if (!route.empty()) {
    w.Key("route");
    w.String(route.c_str(), static_cast<rapidjson::SizeType>(route.size()));
  }
  w.EndObject();
  std::string error;
  const std::string reply = ControlCall(control, buf.GetString(), &error);
  if (reply.empty()) {
    std::fprintf(stderr, "zerobusctl resume: %s\n", error.c_str());
    return 1;
  }
  rapidjson::Document doc;
  doc.Parse(reply.c_str());
  if (!doc.IsObject() || !doc.HasMember("ok") || !doc["ok"].IsBool() || !doc["ok"].GetBool()) {
    std::fprintf(stderr, "zerobusctl resume: %s\n",
                 doc.IsObject() && doc.HasMember("error") && doc["error"].IsString() ? doc["error"].GetString()
                                                                                     : reply.c_str());
    return 1;
  }
  const uint64_t n = doc.HasMember("resumed") && doc["resumed"].IsUint64() ? doc["resumed"].GetUint64() : 0;
  std::printf("resumed %llu route(s) (parked, failing or stuck ones; working ones are left alone)\n",
              static_cast<unsigned long long>(n));
  return 0;
}

}  // namespace zb::ctl
