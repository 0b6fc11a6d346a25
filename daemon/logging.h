#pragma once
// How the daemon's log lines look (spdlog's default logger, on stdout):
//  - text: "2026-12-01T10:00:00.123 info message";
//  - json: one object per line, {"time":"...Z","level":"info","message":"..."},
//    for log shippers (log_format: json);
// and, under systemd (stdout is the journal's stream: $JOURNAL_STREAM names
// its device and inode), each line starts with its syslog priority ("<6>",
// "<4>", "<3>" ...) so `journalctl -p warning` works, and text lines carry
// no timestamp of their own (the journal has one).
//
// Call before other threads log (start) or from the thread that owns the
// config (reload): spdlog's formatter is swapped, not locked against use.

#include <string>

namespace zb {

enum class LogFormat { kText, kJson };

// Whether stdout, where the log goes, is the journal's stream
// ($JOURNAL_STREAM matches it).
bool LogStreamIsJournal();

void ConfigureLogging(LogFormat format, bool journal);

// `message` as a JSON string's contents: quotes, backslashes and control
// characters escaped, bytes that are not UTF-8 replaced by U+FFFD, so every
// line stays valid JSON whatever a message quotes.
std::string JsonEscape(const std::string& message);

}  // namespace zb
