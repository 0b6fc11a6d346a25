#include "daemon/logging.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "spdlog/pattern_formatter.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

int SyslogPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug: return 7;  // LOG_DEBUG
    case spdlog::level::info: return 6;   // LOG_INFO
    case spdlog::level::warn: return 4;   // LOG_WARNING
    case spdlog::level::err: return 3;    // LOG_ERR
    case spdlog::level::critical: return 2;  // LOG_CRIT
    default: return 6;
  }
}

// %*: "<N>", the line's syslog priority, which journald takes from the
// start of a line (SyslogLevelPrefix=, on by default).
class PriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    char prefix[8];
    const int n = std::snprintf(prefix, sizeof(prefix), "<%d>", SyslogPriority(msg.level));
    dest.append(prefix, prefix + n);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<PriorityFlag>(); }
};

// %j: the message as JSON string contents.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string escaped = JsonEscape(std::string(msg.payload.data(), msg.payload.size()));
    dest.append(escaped.data(), escaped.data() + escaped.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JsonMessageFlag>(); }
};

// The length of the UTF-8 sequence at s[i] (1-4), or 0 when it is not one.
size_t Utf8Length(const std::string& s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  size_t n = 0;
  uint32_t min = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  uint32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

bool LogStreamIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr || *stream == '\0') return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(1, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

void ConfigureLogging(LogFormat format, bool journal) {
  // JSON times are UTC ("Z"); text keeps the host's local time, as before.
  auto formatter = std::make_unique<spdlog::pattern_formatter>(
      format == LogFormat::kJson ? spdlog::pattern_time_type::utc : spdlog::pattern_time_type::local);
  formatter->add_flag<PriorityFlag>('*');
  formatter->add_flag<JsonMessageFlag>('j');
  const std::string prefix = journal ? "%*" : "";
  if (format == LogFormat::kJson) {
    formatter->set_pattern(prefix + R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","message":"%j"})");
  } else if (journal) {
    formatter->set_pattern(prefix + "%l %v");  // the journal stamps each line
  } else {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  spdlog::set_formatter(std::move(formatter));
}

std::string JsonEscape(const std::string& message) {
  std::string out;
  out.reserve(message.size() + 8);
  for (size_t i = 0; i < message.size();) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    const size_t n = Utf8Length(message, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(message, i, n);
      i += n;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  return out;
}

}  // namespace zb
