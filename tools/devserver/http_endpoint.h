#pragma once
// The dev server's HTTP side (Boost.Beast, one thread): the OAuth token
// endpoint exactly as Databricks' (POST /oidc/v1/token, client credentials,
// Basic auth, authorization_details naming one table), GET /stats for tests
// and GET /healthz.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tools/devserver/dev_state.h"

namespace zb::devserver {

class HttpEndpoint {
 public:
  virtual ~HttpEndpoint() = default;
  virtual int port() const = 0;
};

// Listens on `listen` (host:port, port 0 allowed) and serves on its own
// thread until destroyed. `state` must outlive it.
absl::StatusOr<std::unique_ptr<HttpEndpoint>> StartHttpEndpoint(const std::string& listen, DevState& state);

// Checks one token request; returns {HTTP status, JSON body}. Exposed for tests.
std::pair<int, std::string> HandleTokenRequest(DevState& state, const std::string& authorization,
                                               const std::string& content_type, const std::string& body);

}  // namespace zb::devserver
