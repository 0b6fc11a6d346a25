#pragma once
// OAuth machine-to-machine tokens for Zerobus (client credentials), one per
// table because authorization_details name the table.

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace zb {

struct OAuthOptions {
  std::string workspace_url;  // POST {workspace_url}/oidc/v1/token
  std::string workspace_id;   // for resource=api://databricks/workspaces/{id}/zerobusDirectWriteApi
  std::string client_id;
  std::string client_secret;
  std::string ca_file;        // optional PEM bundle for https
  // A cached token is refreshed this long before it expires (scaled down to a
  // fifth of the lifetime for short-lived tokens).
  std::chrono::seconds refresh_before_expiry{300};
  std::chrono::milliseconds http_timeout{10'000};
  std::string user_agent = "zerobusd";
};

// Thread-safe. Fetches run on the source's own worker thread, never on the
// caller's (the daemon's event loop must not block on HTTP).
class TokenSource {
 public:
  // Receives the bare access token (no "Bearer "), or an error:
  //  - absl::UnavailableError: retryable (network error, timeout, HTTP 5xx, 429);
  //  - absl::UnauthenticatedError / PermissionDeniedError / InvalidArgumentError:
  //    fatal until the operator fixes credentials or grants (other HTTP 4xx,
  //    body without access_token). The message names the HTTP status and body.
  // Called on the worker thread, or inline on the caller's thread when a valid
  // cached token exists. Must not block.
  using Callback = std::function<void(absl::StatusOr<std::string> token)>;

  virtual ~TokenSource() = default;

  // Returns the cached token for `table` if still fresh, else fetches one.
  // Concurrent requests for one table share one fetch (single-flight).
  virtual void GetToken(const std::string& table, Callback done) = 0;

  // Drops the cached token of `table` (the server answered UNAUTHENTICATED or
  // PERMISSION_DENIED); the next GetToken fetches a fresh one.
  virtual void Invalidate(const std::string& table) = 0;
};

// A libcurl-backed source. Construction does no I/O and cannot fail.
std::unique_ptr<TokenSource> MakeOAuthTokenSource(const OAuthOptions& options);

}  // namespace zb
