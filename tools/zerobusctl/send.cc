// `zerobusctl send`: streams NDJSON to the daemon in line mode and reads the
// daemon's "ok N" / "error N reason" answers on a second thread, so sending
// never waits for fsyncs (the daemon's credit window bounds what is in flight).

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tools/zerobusctl/commands.h"

namespace zb::ctl {
namespace {

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// What the daemon counts as a record line: not blank, not an "@" directive.
bool IsRecordLine(const char* begin, const char* end) {
  while (begin < end && (*begin == ' ' || *begin == '\t' || *begin == '\r')) ++begin;
  return begin < end && *begin != '@';
}

struct Replies {
  uint64_t ok_up_to = 0;                         // daemon line numbers
  std::map<uint64_t, std::string> rejections;    // daemon line -> reason
  bool protocol_error = false;
};

void ReadReplies(int fd, Replies* out) {
  std::string buf;
  char chunk[65536];
  while (true) {
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t pos = 0;
    for (size_t nl; (nl = buf.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      const std::string line = buf.substr(pos, nl - pos);
      if (line.rfind("ok ", 0) == 0) {
        out->ok_up_to = std::stoull(line.substr(3));
      } else if (line.rfind("error ", 0) == 0) {
        const size_t sp = line.find(' ', 6);
        const uint64_t at = std::stoull(line.substr(6, sp - 6));
        out->rejections[at] = sp == std::string::npos ? "" : line.substr(sp + 1);
      } else {
        out->protocol_error = true;
      }
    }
    buf.erase(0, pos);
  }
}

}  // namespace

int Send(const std::vector<std::string>& args) {
  std::string socket_path, route, input = "-";
  bool quiet = false;
  for (size_t i = 0; i < args.size(); ++i) {
    auto value = [&](const char* flag) -> const std::string* {
      if (i + 1 >= args.size()) {
        std::fprintf(stderr, "zerobusctl send: %s needs a value\n", flag);
        return nullptr;
      }
      return &args[++i];
    };
    if (args[i] == "--socket") {
      const std::string* v = value("--socket");
      if (!v) return 2;
      socket_path = *v;
    } else if (args[i] == "--route") {
      const std::string* v = value("--route");
      if (!v) return 2;
      route = *v;
    } else if (args[i] == "--quiet") {
      quiet = true;
    } else if (args[i].rfind("--", 0) == 0) {
      std::fprintf(stderr, "zerobusctl send: unknown option %s\n", args[i].c_str());
      return 2;
    } else {
      input = args[i];
    }
  }
  if (socket_path.empty()) {
    std::fprintf(stderr, "zerobusctl send: --socket PATH is required\n");
    return 2;
  }
  FILE* in = input == "-" ? stdin : std::fopen(input.c_str(), "rb");
  if (in == nullptr) {
    std::fprintf(stderr, "zerobusctl send: cannot open %s: %s\n", input.c_str(), std::strerror(errno));
    return 2;
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    std::fprintf(stderr, "zerobusctl send: socket path too long: %s\n", socket_path.c_str());
    return 2;
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::fprintf(stderr, "zerobusctl send: cannot connect to %s: %s\n", socket_path.c_str(), std::strerror(errno));
    return 1;
  }

  Replies replies;
  std::thread reader([fd, &replies] { ReadReplies(fd, &replies); });

  // Daemon line numbers run one ahead of file lines when "@route" is sent.
  const uint64_t line_offset = route.empty() ? 0 : 1;
  bool send_ok = true;
  if (!route.empty()) {
    const std::string directive = "@route " + route + "\n";
    send_ok = WriteAll(fd, directive.data(), directive.size());
  }
  uint64_t file_lines = 0, records = 0;
  std::vector<bool> is_record;  // per file line, to count what an early end left durable
  std::vector<char> buf(1 << 20);
  std::string carry;  // partial last line of the previous chunk (for counting)
  while (send_ok) {
    size_t n = std::fread(buf.data(), 1, buf.size(), in);
    if (n == 0) break;
    send_ok = WriteAll(fd, buf.data(), n);
    const char* p = buf.data();
    const char* end = p + n;
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      if (nl == nullptr) {
        carry.append(p, static_cast<size_t>(end - p));
        break;
      }
      ++file_lines;
      bool record = false;
      if (carry.empty()) {
        record = IsRecordLine(p, nl);
      } else {
        carry.append(p, static_cast<size_t>(nl - p));
        record = IsRecordLine(carry.data(), carry.data() + carry.size());
        carry.clear();
      }
      records += record;
      is_record.push_back(record);
      p = nl + 1;
    }
  }
  if (!carry.empty()) {
    ++file_lines;
    const bool record = IsRecordLine(carry.data(), carry.data() + carry.size());
    records += record;
    is_record.push_back(record);
  }
  if (in != stdin) std::fclose(in);
  ::shutdown(fd, SHUT_WR);
  reader.join();
  ::close(fd);

  const uint64_t expected_last = file_lines + line_offset;
  uint64_t rejected = 0;
  for (const auto& [daemon_line, reason] : replies.rejections) {
    if (daemon_line <= line_offset) {
      std::fprintf(stderr, "route %s: %s\n", route.c_str(), reason.c_str());
      continue;
    }
    ++rejected;
    if (!quiet) std::fprintf(stderr, "line %llu: %s\n", static_cast<unsigned long long>(daemon_line - line_offset),
                             reason.c_str());
  }
  const bool route_refused = line_offset == 1 && replies.rejections.count(1) > 0;
  const bool complete = replies.ok_up_to >= expected_last;
  uint64_t accepted = 0;
  if (complete) {
    accepted = records >= rejected ? records - rejected : 0;
  } else {
    // Only record lines up to ok_up_to (and not rejected) are known durable.
    for (uint64_t line = 1; line <= is_record.size() && line + line_offset <= replies.ok_up_to; ++line) {
      if (is_record[line - 1] && replies.rejections.count(line + line_offset) == 0) ++accepted;
    }
  }
  std::printf("accepted %llu rejected %llu\n", static_cast<unsigned long long>(accepted),
              static_cast<unsigned long long>(rejected));
  if (!send_ok || !complete || replies.protocol_error) {
    std::fprintf(stderr,
                 "zerobusctl send: the connection ended before every record was acknowledged "
                 "(durable through line %llu of %llu); resend the rest\n",
                 static_cast<unsigned long long>(replies.ok_up_to > line_offset ? replies.ok_up_to - line_offset : 0),
                 static_cast<unsigned long long>(file_lines));
    return 1;
  }
  return (rejected == 0 && !route_refused) ? 0 : 1;
}

}  // namespace zb::ctl
