#include "common/endpoint.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace zb {

std::string Endpoint::Target() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view text) {
  Endpoint ep;
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "https://")) {
    ep.scheme = "https";
  } else if (absl::ConsumePrefix(&rest, "http://")) {
    ep.scheme = "http";
  } else if (absl::StrContains(rest, "://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported scheme in \"", text, "\" (use https://, http:// or host:port)"));
  }
  absl::ConsumeSuffix(&rest, "/");
  if (rest.empty() || absl::StrContains(rest, "/")) {
    return absl::InvalidArgumentError(absl::StrCat("expected scheme://host[:port], got \"", text, "\""));
  }
  absl::string_view host = rest;
  absl::string_view port_text;
  if (absl::StartsWith(rest, "[")) {  // [v6]:port
    const size_t close = rest.find(']');
    if (close == absl::string_view::npos) return absl::InvalidArgumentError(absl::StrCat("bad IPv6 host in \"", text, "\""));
    host = rest.substr(1, close - 1);
    absl::string_view after = rest.substr(close + 1);
    if (absl::ConsumePrefix(&after, ":")) port_text = after;
  } else if (const size_t colon = rest.rfind(':'); colon != absl::string_view::npos) {
    host = rest.substr(0, colon);
    port_text = rest.substr(colon + 1);
  }
  if (host.empty()) return absl::InvalidArgumentError(absl::StrCat("missing host in \"", text, "\""));
  ep.host = std::string(host);
  if (!port_text.empty()) {
    uint32_t port = 0;
    if (!absl::SimpleAtoi(port_text, &port) || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("bad port \"", port_text, "\" in \"", text, "\""));
    }
    ep.port = static_cast<uint16_t>(port);
  } else if (ep.scheme == "https") {
    ep.port = 443;
  } else if (ep.scheme == "http") {
    ep.port = 80;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("missing port in \"", text, "\" (use host:port or https://host)"));
  }
  return ep;
}

std::string WorkspaceIdFromHost(absl::string_view host) {
  const size_t dot = host.find('.');
  return std::string(dot == absl::string_view::npos ? host : host.substr(0, dot));
}

bool IsLoopbackHost(absl::string_view host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

}  // namespace zb
