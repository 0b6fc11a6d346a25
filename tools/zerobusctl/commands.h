#pragma once
// zerobusctl verbs. Each returns the process exit code.

#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace zb::ctl {

// send --socket PATH [--route NAME] [FILE|-]: NDJSON in, "accepted N rejected M"
// out; 0 only when every record was durably accepted.
int Send(const std::vector<std::string>& args);
// status / spool: read the daemon's /metrics and /readyz; status also asks
// the control socket (when reachable) for each route's failures in words.
int Status(const std::vector<std::string>& args, bool spool_only);
// The daemon's config file (for --config FILE), or nullopt after printing
// every problem with it.
// `credentials_required` false: the config's paths are what is wanted (the
// daemon's secret usually comes from systemd, which zerobusctl does not have).
std::optional<DaemonConfig> LoadDaemonConfig(const std::string& path, bool credentials_required = false);
// The control socket the daemon listens on by default (control.socket).
inline constexpr char kDefaultControl[] = "/run/zerobusd/control.sock";
// Sends one request line to the control socket; returns the reply line, or
// "" with `error` set.
std::string ControlCall(const std::string& socket_path, const std::string& request, std::string* error);
// resume [--route NAME]: parked routes try again, failing or stuck ones
// reconnect at once on a new connection (the control socket's resume).
int Resume(const std::vector<std::string>& args);
// dlq list|show|replay|purge: the dead-letter store via the control socket.
int Dlq(const std::vector<std::string>& args);
// gen-proto --from-json FILE | --config FILE TABLE [--message NAME]: the
// .proto of a Unity Catalog table's Zerobus record, on stdout; 1 (every bad
// column named) when the table cannot be sent or cannot be read.
int GenProto(const std::vector<std::string>& args);
// spool verify --path DIR: checks a spool offline (read-only; safe while
// the daemon runs); 0 when sound.
int SpoolVerify(const std::vector<std::string>& args);

}  // namespace zb::ctl
