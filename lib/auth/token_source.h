#pragma once
// OAuth machine-to-machine tokens for Zerobus (client credentials), one per
// table because authorization_details name the table.

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/redact.h"

namespace zb {

struct OAuthOptions {
  // POST {workspace_url}/oidc/v1/token. A trailing slash is dropped; without a
  // scheme https:// is assumed (never plaintext by accident: the request
  // carries the client secret). Only http:// and https:// are accepted; the
  // caller (config) decides whether http:// is allowed.
  std::string workspace_url;
  std::string workspace_id;   // for resource=api://databricks/workspaces/{id}/zerobusDirectWriteApi
  std::string client_id;
  std::string client_secret;
  std::string ca_file;        // optional PEM bundle for https
  // A cached token is refreshed this long before it expires (scaled down to a
  // fifth of the lifetime for short-lived tokens).
  std::chrono::seconds refresh_before_expiry{300};
  std::chrono::milliseconds http_timeout{10'000};
  std::string user_agent = "zerobusd";
  // Invalid options (empty workspace_url, workspace_id or client_id, or a
  // workspace_url with another scheme) are not reported at construction; every
  // GetToken answers them with InvalidArgumentError, without any HTTP.
};

// Thread-safe. Fetches run on the source's own worker thread, never on the
// caller's (the daemon's event loop must not block on HTTP).
class TokenSource {
 public:
  // Receives the bare access token (no "Bearer "), or an error:
  //  - absl::UnavailableError: retryable (network error, timeout, HTTP 5xx, 429);
  //  - absl::UnauthenticatedError / PermissionDeniedError / InvalidArgumentError:
  //    fatal until the operator fixes credentials or grants (other HTTP 4xx,
  //    body without access_token). The message names the HTTP status and
  //    quotes the body: redacted first, then cut to 200 bytes, with the
  //    body's full length when cut.
  // Every error message has passed through OAuthRedactor(options) extended
  // with the tokens this source holds and the last 16 it fetched: it holds
  // neither the client secret (in any encoding, nor as the Basic credential)
  // nor such a token, even when the token endpoint echoes our request.
  // Callers may log it and show it (a lane's parked reason) as is.
  // Called on the worker thread, or inline on the caller's thread when a valid
  // cached token exists. Must not block.
  // Also InvalidArgumentError, inline, for a table name that is not exactly
  // three non-empty dot-separated parts (no HTTP is made), and CancelledError
  // when the source is destroyed first (see ~TokenSource).
  // Called exactly once per GetToken, with no lock of the source held: it may
  // call GetToken or Invalidate again, but must not destroy the source and
  // must not throw.
  using Callback = std::function<void(absl::StatusOr<std::string> token)>;

  // Destroying the OAuth source aborts in-flight fetches at once (it does not
  // wait for the HTTP timeout), completes every pending callback with
  // absl::CancelledError on the worker thread, then joins that thread; so no
  // callback runs after the destructor returns. Must not be called from a
  // callback, nor concurrently with GetToken/Invalidate.
  virtual ~TokenSource() = default;

  // Returns the cached token for `table` if still fresh, else fetches one.
  // Concurrent requests for one table share one fetch (single-flight).
  // A token is fresh until expires_in - min(refresh_before_expiry,
  // expires_in / 5), counted from when its request was sent. Failures are not
  // cached: the next GetToken tries again (the caller owns the backoff). If a
  // refresh fails with UnavailableError while the previous token has not yet
  // expired, that previous token is delivered instead of the error.
  // Fetches for different tables may run concurrently.
  virtual void GetToken(const std::string& table, Callback done) = 0;

  // Drops the cached token of `table` (the server answered UNAUTHENTICATED or
  // PERMISSION_DENIED); the next GetToken fetches a fresh one. A fetch already
  // in flight is not cancelled: its (new) token still reaches its waiters, and
  // a GetToken made meanwhile joins it.
  virtual void Invalidate(const std::string& table) = 0;
};

// A libcurl-backed source. Construction does no I/O and cannot fail; it
// starts the source's one worker thread, which runs every fetch (libcurl multi
// interface). Proxies follow libcurl's environment rules (https_proxy,
// no_proxy, ...); redirects are not followed. `options` is copied.
std::unique_ptr<TokenSource> MakeOAuthTokenSource(const OAuthOptions& options);

// Masks the secrets of `options`: the client secret and the Basic credential
// "client_id:client_secret" (see Redactor for every form searched). Other
// modules quoting text that may carry them (config dumps, errors of calls
// that send a token) redact with it too; add the tokens with With().
Redactor OAuthRedactor(const OAuthOptions& options);

}  // namespace zb
