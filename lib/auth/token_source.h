#pragma once
// OAuth machine-to-machine tokens for Zerobus (client credentials), one per
// table because authorization_details name the table.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "common/post_fn.h"
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
//
// Threading rule (Spool's): given the caller's executor (`on`, a Post that
// queues a task there, e.g. onto the daemon's event loop), the answer always
// runs on it, never inline and never on the worker, and the caller never
// hops threads itself; without one (tests, tools), it runs on the worker
// thread, or inline on the caller's thread when it is known at once (a
// fresh cached token, invalid options or table name, a source shutting
// down).
class TokenSource {
 public:
  // Receives the bare access token (no "Bearer "), or an error whose code
  // says what the caller should do about it:
  //  - absl::UnavailableError: a fault of the network or of the token service
  //    (or a proxy in front of it), which may pass; retry with backoff, never
  //    blame the credentials. Connect, DNS, TLS and transfer errors, timeouts;
  //    HTTP 408, 429, 5xx (and any status above 599); and a 2xx whose body is
  //    unusable: not a JSON object, too large (see below), no access_token,
  //    access_token not a string or not a valid header value (empty, control,
  //    space or non-ASCII characters), expires_in neither a number nor a
  //    quoted number.
  //  - absl::UnauthenticatedError: HTTP 400 or 401, the statuses OAuth's
  //    invalid_client and invalid_grant come with (RFC 6749 5.2): the client
  //    id or secret is wrong, or the request was refused as a whole.
  //  - absl::PermissionDeniedError: HTTP 403: the credentials are valid but
  //    lack the grants (USE CATALOG, USE SCHEMA, table-level SELECT + MODIFY).
  //    These two are the only codes that point at credentials or grants.
  //  - absl::FailedPreconditionError: any other HTTP status (1xx, 3xx,
  //    404, 405 and the other 4xx): the URL does not lead to a token endpoint
  //    (redirects are never followed); the message says to check
  //    zerobus.workspace_url.
  //  - absl::InvalidArgumentError: invalid options (see OAuthOptions) or
  //    table name (below), or a request libcurl will not make as configured
  //    (unsupported protocol, malformed URL, feature not built in, unreadable
  //    CA bundle or certificate): fixed only by a config change.
  // Every reply is read up to 64 KiB of body, whatever its status: a longer
  // one is not a token response, and its transfer is stopped there (the
  // connection is closed, nothing more is downloaded) and classified by its
  // status line as above. No error is cached (see GetToken).
  // Messages from a reply name the URL, the table, the HTTP status and an
  // excerpt of the body: redacted first, then cut to 200 bytes, noting the
  // body's full length when cut, or, for a body the transfer stopped, that
  // reading stopped (and the Content-Length the server announced, if any).
  // A 2xx body that may hold a token in a shape the redaction does not know
  // is not quoted, only its size is.
  // Every error message has passed through OAuthRedactor(options) extended
  // with the tokens this source holds and the last 16 it fetched: it holds
  // neither the client secret (in any encoding, nor as the Basic credential)
  // nor such a token, even when the token endpoint echoes our request.
  // Callers may log it and show it (a lane's parked reason) as is.
  // Also InvalidArgumentError for a table name that is not exactly three
  // non-empty dot-separated parts (no HTTP is made), and CancelledError when
  // the source is destroyed first (see ~TokenSource).
  // Called exactly once per GetToken, where the class comment says, with no
  // lock of the source held: it may call GetToken or Invalidate again, but
  // must not destroy the source, block or throw.
  using Callback = std::function<void(absl::StatusOr<std::string> token)>;
  // Queues a task on the caller's executor; never runs it inline.
  using Post = PostFn;

  // Destroying the OAuth source aborts in-flight fetches at once (it does not
  // wait for the HTTP timeout), completes every pending callback with
  // absl::CancelledError on the worker thread, then joins that thread; so no
  // callback runs after the destructor returns, except those given an
  // executor: their answer is queued there before it returns and runs
  // there later (or is dropped with the executor). Must not be called from
  // a callback, nor concurrently with GetToken/Invalidate.
  virtual ~TokenSource() = default;

  // Returns the cached token for `table` if still fresh, else fetches one.
  // Concurrent requests for one table share one fetch (single-flight).
  // A token is fresh until expires_in - min(refresh_before_expiry,
  // expires_in / 5), counted on MonotonicClock (common/clock.h; tests move
  // it) from when its request was sent. Failures are not cached: the next
  // GetToken tries again (the caller owns the backoff). If a refresh fails
  // with UnavailableError while the previous token has not yet expired, that
  // previous token is delivered instead of the error.
  // Fetches for different tables may run concurrently.
  virtual void GetToken(const std::string& table, Callback done) = 0;
  // GetToken answering on the caller's executor `on` (see the class
  // comment); as above when `on` is empty. The task queued there holds the
  // only reference to what `done` captured, so that is released on the
  // executor too, not on the worker.
  void GetToken(const std::string& table, Callback done, const Post& on) {
    GetToken(table, DeliverVia(on, std::move(done)));
  }

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
