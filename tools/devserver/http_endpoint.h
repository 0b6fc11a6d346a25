#pragma once
// The dev server's HTTP side (Boost.Beast, one thread): the OAuth token
// endpoint exactly as Databricks' (POST /oidc/v1/token, client credentials,
// Basic auth, authorization_details naming one table), GET /stats for tests
// and GET /healthz.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

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

// The answer to one token request.
struct TokenAnswer {
  int status = 200;
  std::string body;  // JSON (a token or an error), or a scripted body's prefix
  // A scripted body (token faults `body`, `body_bytes`): `body` padded with
  // spaces to body_bytes bytes in all, sent with that Content-Length and
  // generated while it is written, so it is never held whole.
  bool scripted = false;
  uint64_t body_bytes = 0;
};

// Checks one token request (or applies the token fault in force). Exposed
// for tests.
TokenAnswer HandleTokenRequest(DevState& state, const std::string& authorization, const std::string& content_type,
                               const std::string& body);

// GET /api/2.1/unity-catalog/tables/<name>, as Unity Catalog answers it:
// the status and the body (the table from DevOptions::tables_dir, or
// {"error_code", "message"}). Only a metadata token may read it.
inline constexpr char kUcTablesPath[] = "/api/2.1/unity-catalog/tables/";
std::pair<int, std::string> HandleTableRequest(DevState& state, const std::string& name,
                                               const std::string& authorization);

}  // namespace zb::devserver
