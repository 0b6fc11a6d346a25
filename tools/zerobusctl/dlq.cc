// `zerobusctl dlq list|show|replay|purge`: the dead-letter store, through the
// daemon's control socket (JSON lines, see daemon/control_commands.h).

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/json_depth.h"
#include "config/config.h"
#include "spool/spool.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tools/zerobusctl/commands.h"

namespace zb::ctl {

std::string ControlCall(const std::string& socket_path, const std::string& request, std::string* error) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    *error = "control socket path too long: " + socket_path;
    ::close(fd);
    return "";
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    *error = "cannot reach zerobusd at " + socket_path + ": " + std::strerror(errno) +
             " (is it running? is this the control.socket of its config? are you its user or root?)";
    ::close(fd);
    return "";
  }
  const std::string line = request + "\n";
  for (size_t off = 0; off < line.size();) {
    const ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      *error = std::string("sending to zerobusd failed: ") + std::strerror(errno);
      ::close(fd);
      return "";
    }
    off += static_cast<size_t>(n);
  }
  std::string reply;
  char buf[65536];
  while (reply.find('\n') == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (reply.find('\n') == std::string::npos) {
    *error = "zerobusd closed the control connection without a reply";
    return "";
  }
  return reply.substr(0, reply.find('\n'));
}

namespace {

std::string Call(const std::string& socket_path, const std::string& request, std::string* error) {
  return ControlCall(socket_path, request, error);
}

std::string FormatTime(int64_t us) {
  if (us <= 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(us), absl::UTCTimeZone());
}

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: zerobusctl dlq list    [--route NAME] [--limit N] [--from-id ID] [--json]\n"
               "       zerobusctl dlq show    ID\n"
               "       zerobusctl dlq replay  (--route NAME | --id ID ... | --all)\n"
               "       zerobusctl dlq purge   (--route NAME | --id ID ... | --all)\n"
               "  common: --control PATH (default %s) or --config FILE (its control.socket)\n"
               "  replay puts records back at the tail of their route, to be sent again;\n"
               "  purge deletes them for good.\n",
               kDefaultControl);
}

}  // namespace

int Dlq(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    Usage(args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string action = args[0];
  if (action != "list" && action != "show" && action != "replay" && action != "purge") {
    std::fprintf(stderr, "zerobusctl dlq: unknown action \"%s\"\n", action.c_str());
    Usage(stderr);
    return 2;
  }
  std::string control = kDefaultControl;
  std::string route;
  std::vector<uint64_t> ids;
  uint64_t limit = 100, from_id = 0;
  bool all = false, json = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string* {
      if (i + 1 >= args.size()) {
        std::fprintf(stderr, "zerobusctl dlq: %s needs a value\n", a.c_str());
        return nullptr;
      }
      return &args[++i];
    };
    auto number = [&](const std::string& text, uint64_t* out) {
      char* end = nullptr;
      errno = 0;
      *out = std::strtoull(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno != 0) {
        std::fprintf(stderr, "zerobusctl dlq: %s is not a number\n", text.c_str());
        return false;
      }
      return true;
    };
    if (a == "--control") {
      const std::string* v = value();
      if (!v) return 2;
      control = *v;
    } else if (a == "--config") {
      const std::string* v = value();
      if (!v) return 2;
      auto config = LoadDaemonConfig(*v);
      if (!config) return 2;
      control = config->control.socket;
    } else if (a == "--route") {
      const std::string* v = value();
      if (!v) return 2;
      route = *v;
    } else if (a == "--id") {
      const std::string* v = value();
      uint64_t id = 0;
      if (!v || !number(*v, &id)) return 2;
      ids.push_back(id);
    } else if (a == "--limit") {
      const std::string* v = value();
      if (!v || !number(*v, &limit) || limit == 0) return 2;
    } else if (a == "--from-id") {
      const std::string* v = value();
      if (!v || !number(*v, &from_id)) return 2;
    } else if (a == "--all") {
      all = true;
    } else if (a == "--json") {
      json = true;
    } else if (action == "show" && ids.empty() && !a.empty() && a[0] != '-') {
      uint64_t id = 0;
      if (!number(a, &id)) return 2;
      ids.push_back(id);
    } else {
      std::fprintf(stderr, "zerobusctl dlq %s: unknown option %s\n", action.c_str(), a.c_str());
      Usage(stderr);
      return 2;
    }
  }
  if (action == "show" && ids.size() != 1) {
    std::fprintf(stderr, "zerobusctl dlq show: give one dead-letter ID (see `zerobusctl dlq list`)\n");
    return 2;
  }
  if ((action == "replay" || action == "purge") && route.empty() && ids.empty() && !all) {
    std::fprintf(stderr, "zerobusctl dlq %s: say what: --route NAME, --id ID or --all\n", action.c_str());
    return 2;
  }

  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("cmd");
  w.String(action == "show" ? "dlq.list" : ("dlq." + action).c_str());
  if (!route.empty()) {
    w.Key("route");
    w.String(route.c_str());
  }
  if (action == "show") {
    w.Key("from_id");
    w.Uint64(ids[0]);
    w.Key("limit");
    w.Uint64(1);
    w.Key("payloads");
    w.Bool(true);
  } else if (action == "list") {
    w.Key("from_id");
    w.Uint64(from_id);
    w.Key("limit");
    w.Uint64(limit);
  } else {
    if (!ids.empty()) {
      w.Key("ids");
      w.StartArray();
      for (uint64_t id : ids) w.Uint64(id);
      w.EndArray();
    }
    if (all) {
      w.Key("all");
      w.Bool(true);
    }
  }
  w.EndObject();

  std::string error;
  const std::string reply = Call(control, buf.GetString(), &error);
  if (reply.empty()) {
    std::fprintf(stderr, "zerobusctl: %s\n", error.c_str());
    return 1;
  }
  // Dead letters quote producers' records: bound the depth before
  // rapidjson's recursive DOM sees the reply.
  constexpr size_t kMaxReplyDepth = 1100;
  rapidjson::Document d;
  const bool too_deep = JsonNestsDeeperThan(reply, kMaxReplyDepth);
  if (!too_deep) d.Parse<rapidjson::kParseIterativeFlag>(reply.c_str(), reply.size());
  if (too_deep || d.HasParseError() || !d.IsObject() || !d.HasMember("ok")) {
    std::fprintf(stderr, "zerobusctl: unexpected reply from zerobusd: %s\n", reply.c_str());
    return 1;
  }
  if (!d["ok"].GetBool()) {
    std::fprintf(stderr, "zerobusctl: zerobusd refused: %s\n", d["error"].GetString());
    return 1;
  }
  if (json) {
    std::printf("%s\n", reply.c_str());
    return 0;
  }
  if (action == "replay") {
    std::printf("replayed %llu records\n", static_cast<unsigned long long>(d["replayed"].GetUint64()));
    if (d.HasMember("note")) std::printf("note: %s\n", d["note"].GetString());
    return 0;
  }
  if (action == "purge") {
    std::printf("purged %llu records\n", static_cast<unsigned long long>(d["purged"].GetUint64()));
    return 0;
  }
  const auto& entries = d["entries"];
  if (action == "show") {
    if (entries.Empty() || entries[0]["id"].GetUint64() != ids[0]) {
      std::fprintf(stderr, "zerobusctl: no dead letter %llu\n", static_cast<unsigned long long>(ids[0]));
      return 1;
    }
    const auto& e = entries[0];
    std::printf("id:             %llu\n", static_cast<unsigned long long>(e["id"].GetUint64()));
    std::printf("route:          %s (seq %llu)\n", e["route"].GetString(),
                static_cast<unsigned long long>(e["seq"].GetUint64()));
    std::printf("table:          %s\n", e["table"].GetString());
    std::printf("refused with:   %s: %s\n", e["code"].GetString(), e["message"].GetString());
    if (e.HasMember("reason") && e["reason"].IsString()) {
      std::printf("reason:         %s\n", e["reason"].GetString());  // the server's ErrorInfo
    }
    std::printf("attempts:       %llu\n", static_cast<unsigned long long>(e["attempts"].GetUint64()));
    std::printf("spooled at:     %s\n", FormatTime(e["append_time_us"].GetInt64()).c_str());
    std::printf("first failure:  %s\n", FormatTime(e["first_failure_us"].GetInt64()).c_str());
    std::printf("dead-lettered:  %s\n", FormatTime(e["dead_lettered_us"].GetInt64()).c_str());
    std::printf("record (%llu bytes):\n%s\n", static_cast<unsigned long long>(e["bytes"].GetUint64()),
                e["payload"].GetString());
    return 0;
  }
  std::printf("%-8s %-16s %-10s %-18s %-8s %-21s %-8s %s\n", "ID", "ROUTE", "SEQ", "CODE", "ATTEMPTS",
              "DEAD-LETTERED (UTC)", "BYTES", "MESSAGE");
  for (const auto& e : entries.GetArray()) {
    std::string message = e["message"].GetString();
    if (message.size() > 80) message = message.substr(0, 77) + "...";
    std::printf("%-8llu %-16s %-10llu %-18s %-8llu %-21s %-8llu %s\n",
                static_cast<unsigned long long>(e["id"].GetUint64()), e["route"].GetString(),
                static_cast<unsigned long long>(e["seq"].GetUint64()), e["code"].GetString(),
                static_cast<unsigned long long>(e["attempts"].GetUint64()),
                FormatTime(e["dead_lettered_us"].GetInt64()).c_str(),
                static_cast<unsigned long long>(e["bytes"].GetUint64()), message.c_str());
  }
  std::printf("%u dead letter%s shown", entries.Size(), entries.Size() == 1 ? "" : "s");
  if (d["next_id"].GetUint64() > 0) {
    std::printf("; more with --from-id %llu", static_cast<unsigned long long>(d["next_id"].GetUint64()));
  }
  std::printf("\n");
  return 0;
}

int SpoolVerify(const std::vector<std::string>& args) {
  std::string path;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--path" && i + 1 < args.size()) {
      path = args[++i];
    } else if (args[i] == "--config" && i + 1 < args.size()) {
      auto config = LoadDaemonConfig(args[++i]);
      if (!config) return 2;
      path = config->spool.path;
    } else {
      std::fprintf(stderr, "usage: zerobusctl spool verify (--path DIR | --config FILE)\n");
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: zerobusctl spool verify (--path DIR | --config FILE)\n");
    return 2;
  }
  auto report = VerifyRocksDbSpool(path);
  if (!report.ok()) {
    std::fprintf(stderr, "zerobusctl: spool %s: %s\n", path.c_str(), std::string(report.status().message()).c_str());
    return 1;
  }
  for (const auto& lane : report->lanes) {
    std::printf("lane %s: %llu records, %llu bytes (next seq %llu, deleted up to %llu)\n", lane.name.c_str(),
                static_cast<unsigned long long>(lane.records), static_cast<unsigned long long>(lane.bytes),
                static_cast<unsigned long long>(lane.meta.next_seq),
                static_cast<unsigned long long>(lane.meta.deleted_up_to));
  }
  std::printf("dead letters: %llu\n", static_cast<unsigned long long>(report->dead_letters));
  if (report->problems.empty()) {
    std::printf("spool %s: OK (every checksum verified)\n", path.c_str());
    return 0;
  }
  for (const auto& p : report->problems) std::printf("PROBLEM: %s\n", p.c_str());
  std::printf("spool %s: DAMAGED (%zu problem%s)\n", path.c_str(), report->problems.size(),
              report->problems.size() == 1 ? "" : "s");
  return 1;
}

}  // namespace zb::ctl
