#pragma once
// Zerobus endpoint and workspace URL parsing, shared by config, auth and the
// gRPC client.

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace zb {

struct Endpoint {
  std::string scheme;  // "https", "http", or "" when none was given
  std::string host;
  uint16_t port = 0;   // 443 for https without a port, 80 for http
  // "host:port", the gRPC target.
  std::string Target() const;
};

// Accepts "https://host[:port][/]", "http://host[:port][/]" and "host:port".
absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view text);

// The SDK's rule: the workspace id is the endpoint host's first DNS label
// ("1234.zerobus.us-west-2.cloud.databricks.com" -> "1234").
std::string WorkspaceIdFromHost(absl::string_view host);

// True for loopback hosts (localhost, 127.0.0.0/8, ::1); only these may be
// used without TLS.
bool IsLoopbackHost(absl::string_view host);

}  // namespace zb
